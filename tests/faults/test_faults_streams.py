"""Long confirmed streams through a link that is cut again and again: what a producer says
the broker confirmed has arrived (0 lost), and what a processor consumes is handled at least
once (none lost); duplicates are counted and reported, not forbidden (at least once)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import MessageHandler
from postage.twisted import MessageProcessor

pytestmark = pytest.mark.faults

STREAM = 5000  # confirmed publishes per stream
CUT_EVERY = 600  # confirmed (or handled) messages between two cuts
MAX_CUTS = 7
STAIR_FIRST = 16 * 1024  # bytes before the first stairway cut; doubled after each
FAULTS = ["fin", "rst", "stairway"]


def _arm(proxy: Any, fault: str) -> Any:
    """Start the fault; return ``progress()``, to call on every confirmed or handled message
    (it cuts every CUT_EVERY of them, at most MAX_CUTS times, for FIN and RST)."""
    from twisted.internet import reactor  # noqa: PLC0415

    if fault == "stairway":
        proxy.stairway(STAIR_FIRST, factor=2)
        return lambda: None
    count = [0]
    cuts = [0]

    def progress() -> None:
        count[0] += 1
        if count[0] % CUT_EVERY == 0 and cuts[0] < MAX_CUTS:
            cuts[0] += 1
            reactor.callLater(0, proxy.cut, fault)  # not from inside pika's frame handling

    return progress


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_confirmed_stream_through_cuts_loses_nothing(fault, components, names, broker,
                                                            proxy, tools, figures):
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    producer = components.producer(hup=proxy.hup)
    await tools.within(producer.ready, 30)
    started = time.monotonic()
    progress = _arm(proxy, fault)
    outcomes: dict[int, str] = {}

    def confirmed(_: Any, n: int) -> None:
        outcomes[n] = "confirmed"
        progress()

    def failed(failure: Any, n: int) -> None:
        outcomes[n] = f"{failure.type.__name__}: {failure.value}"

    sent = []
    for n in range(STREAM):
        d = producer.message_item({"n": n}, _key=queue)
        sent.append(d.addCallbacks(confirmed, failed, callbackArgs=(n,), errbackArgs=(n,)))
    # every publish's Deferred ends (generously bounded: a loaded 2-core machine)
    await tools.within(defer.gatherResults(sent), 180)
    elapsed = time.monotonic() - started
    proxy.stairway(None)
    await tools.within(producer.close(), 30)
    arrived = Counter(tools.parameters(body)["n"] for _, body in await tools.drain(queue))
    confirmed_ids = [n for n, outcome in outcomes.items() if outcome == "confirmed"]
    lost = [n for n in confirmed_ids if n not in arrived]
    duplicates = sum(count - 1 for count in arrived.values())
    errors = Counter(outcome for outcome in outcomes.values() if outcome != "confirmed")
    figures.add(fault, published=STREAM, confirmed=len(confirmed_ids), failed=sum(errors.values()),
                cuts=proxy.cuts, lost=len(lost), duplicates=duplicates, seconds=elapsed)
    assert len(outcomes) == STREAM
    assert proxy.cuts >= 3, "the stream ended before the faults did anything"
    assert not lost, f"{len(lost)} confirmed but never arrived, e.g. {lost[:10]}"
    # the producer waits through reconnections and sends again: nothing needs to fail
    assert not errors, errors.most_common(5)
    assert set(arrived) <= set(range(STREAM))


class Collector(MessageProcessor):
    """Counts every ``item`` it handles; ``progress()`` is told of each."""

    def __init__(self, *args: Any, progress: Any = None, **kwds: Any) -> None:
        super().__init__(*args, **kwds)
        self.handled: Counter[int] = Counter()
        self.progress = progress or (lambda: None)

    @MessageHandler("command", "item")
    def item(self, content: Any) -> None:
        self.handled[content["parameters"]["n"]] += 1
        self.progress()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_processor_consuming_through_cuts_handles_every_message(
        fault, components, names, broker, proxy, tools, figures):
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    filler = components.producer(label="filler")  # straight to the broker
    await tools.within(defer.gatherResults(
        [filler.message_item({"n": n}, _key=queue) for n in range(STREAM)]), 120)
    await filler.close()
    progress = _arm(proxy, fault)
    processor = components.processor(
        Collector, hup=proxy.hup, progress=progress, prefetch_count=50,
        eqk=[("", [({"name": queue, "flags": {"durable": True}}, queue)])])
    started = time.monotonic()
    await tools.within(processor.start(), 60)
    await tools.wait_for(lambda: len(processor.handled) == STREAM, 180,
                         what=f"all {STREAM} messages handled")
    elapsed = time.monotonic() - started
    proxy.stairway(None)
    # what a late cut put back in the queue is delivered again (and counted as duplicates)
    await tools.wait_for(lambda: broker.message_count(queue) == 0, 60, what="an empty queue")
    await tools.within(processor.stop(), 60)
    left = broker.message_count(queue)  # unacked ones would be back in the queue now
    duplicates = sum(count - 1 for count in processor.handled.values())
    figures.add(fault, published=STREAM, handled=len(processor.handled), cuts=proxy.cuts,
                lost=STREAM - len(processor.handled), duplicates=duplicates, left_in_queue=left,
                seconds=elapsed)
    assert proxy.cuts >= 3, "the stream ended before the faults did anything"
    assert set(processor.handled) == set(range(STREAM))
    assert left == 0, f"{left} messages were handled but never acked"


BAD_EVERY = 250  # one refused publish in so many, in a stream of BAD_STREAM
BAD_STREAM = 2000


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bad", ["missing-exchange", "key-over-255-bytes"])
async def test_refused_publishes_in_a_stream_fail_alone(bad, components, names, broker, tools,
                                                        figures):
    """Each refused publish fails by itself; every other one is confirmed and arrives."""
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    producer = components.producer()
    await tools.within(producer.ready, 30)
    outcomes: dict[int, str] = {}
    sent = []
    for n in range(BAD_STREAM):
        refused = n % BAD_EVERY == BAD_EVERY // 2
        try:
            if not refused:
                d = producer.message_item({"n": n}, _key=queue)
            elif bad == "missing-exchange":
                d = producer.message_item({"n": n}, _eks=[(names.exchange("missing"), "k")])
            else:
                d = producer.message_item({"n": n}, _key="k" * 300)
        except Exception as exc:  # noqa: BLE001 - a raise instead of a failed Deferred
            outcomes[n] = f"raised {type(exc).__name__}"
            continue
        sent.append(d.addCallbacks(
            lambda _, n=n: outcomes.__setitem__(n, "confirmed"),
            lambda failure, n=n: outcomes.__setitem__(n, failure.type.__name__)))
    try:
        await tools.wait_for(lambda: len(outcomes) == BAD_STREAM, 15,
                             what="every publish to end")
    except AssertionError:
        pass  # counted below as never_ended
    never_ended = BAD_STREAM - len(outcomes)
    arrived = Counter(tools.parameters(body)["n"] for _, body in await tools.drain(queue))
    refused = {n for n in range(BAD_STREAM) if n % BAD_EVERY == BAD_EVERY // 2}
    good_failed = [n for n, outcome in outcomes.items()
                   if n not in refused and outcome != "confirmed"]
    bad_confirmed = [n for n in refused if outcomes.get(n) == "confirmed"]
    lost = [n for n, outcome in outcomes.items() if outcome == "confirmed" and n not in arrived]
    figures.add(bad, published=BAD_STREAM, refused=len(refused),
                good_ones_failed=len(good_failed), refused_ones_confirmed=len(bad_confirmed),
                raised=sum(1 for o in outcomes.values() if o.startswith("raised")),
                lost=len(lost), never_ended=never_ended)
    assert not never_ended, f"{never_ended} publishes never ended"
    assert not [o for o in outcomes.values() if o.startswith("raised")], "send() raised"
    assert not good_failed, f"{len(good_failed)} good publishes failed, e.g. {good_failed[:5]}"
    assert not bad_confirmed and not lost
    assert set(arrived) == set(range(BAD_STREAM)) - refused
