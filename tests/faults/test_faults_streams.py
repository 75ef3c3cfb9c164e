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
