"""A link that goes half-open (a dead route: the sockets stay open, nothing gets through,
no FIN, no reset; new connections work): a producer with more written than the kernel's
buffers hold must declare it lost within 2 × heartbeat, reconnect and get every publish
confirmed, losing none; a processor must reconnect and handle every message."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import MessageHandler
from postage.twisted import MessageProcessor

pytestmark = pytest.mark.faults

HEARTBEAT = 2  # seconds, asked for in the URL's query
MESSAGES = 1000  # 20 MB in flight at once (the confirm window): more than socket buffers hold
BLOB = "b" * 20_000
SLACK = 24.0  # reconnecting and sending 20 MB again, on a loaded machine


@pytest_twisted.ensureDeferred
async def test_a_half_open_link_with_unsent_data_is_declared_lost_and_nothing_is_lost(
        components, names, broker, proxy, tools, figures, monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"{proxy.url()}?heartbeat={HEARTBEAT}")
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    producer = components.producer(hup=None)  # the URL above
    await tools.within(producer.message_item({"n": -1}, _key=queue), 30)
    links = proxy.accepted
    proxy.pause(also_new=False)  # this connection's route dies; a new one would work
    started = time.monotonic()
    sends = [producer.message_item({"n": n, "blob": BLOB}, _key=queue)
             for n in range(MESSAGES)]
    bound = 2 * HEARTBEAT + SLACK
    outcomes = Counter()
    for d in sends:
        d.addCallbacks(lambda _: outcomes.update(["confirmed"]),
                       lambda failure: outcomes.update([failure.type.__name__]))
    try:  # (polled: a timeout must not cancel the publishes themselves)
        await tools.wait_for(lambda: outcomes["confirmed"] == MESSAGES, bound,
                             what="every publish confirmed")
        seconds = time.monotonic() - started
    except AssertionError:
        seconds = None
    reconnections = proxy.accepted - links
    proxy.cut("rst")  # whatever happened, the old link goes now
    await tools.wait_for(lambda: sum(outcomes.values()) == MESSAGES, 60,
                         what="every publish to end")
    await tools.within(producer.close(), 30)
    arrived = Counter(tools.parameters(body)["n"] for _, body in await tools.drain(queue))
    lost = [n for n in range(MESSAGES) if n not in arrived]
    figures.add("half-open", published=MESSAGES, confirmed=outcomes["confirmed"],
                reconnections=reconnections, lost=len(lost),
                duplicates=sum(count - 1 for count in arrived.values()),
                seconds_to_all_confirmed=seconds if seconds is not None else f">{bound:.0f}",
                bound_seconds=bound)
    assert seconds is not None, f"not all confirmed {bound:.0f}s after the link went half-open"
    assert reconnections >= 1 and not lost


class Counting(MessageProcessor):
    def __init__(self, *args, **kwds) -> None:
        super().__init__(*args, **kwds)
        self.handled: Counter[int] = Counter()

    @MessageHandler("command", "item")
    def item(self, content) -> None:
        self.handled[content["parameters"]["n"]] += 1


CONSUMED = 2000


@pytest_twisted.ensureDeferred
async def test_a_processor_on_a_half_open_link_reconnects_and_handles_everything(
        components, names, broker, proxy, tools, figures, monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"{proxy.url()}?heartbeat={HEARTBEAT}")
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    filler = components.producer(label="filler")  # straight to the broker
    await tools.within(defer.gatherResults(
        [filler.message_item({"n": n}, _key=queue) for n in range(CONSUMED)]), 60)
    processor = components.processor(
        Counting, hup=None, prefetch_count=20,  # the URL above
        eqk=[("", [({"name": queue, "flags": {"durable": True}}, queue)])])
    await tools.within(processor.start(), 30)
    await tools.wait_for(lambda: len(processor.handled) >= CONSUMED // 4, 60,
                         what="some messages handled")
    links = proxy.accepted
    proxy.pause(also_new=False)
    started = time.monotonic()
    bound = 2 * HEARTBEAT + 12
    try:
        await tools.wait_for(lambda: len(processor.handled) == CONSUMED, bound,
                             what="every message handled")
        seconds = time.monotonic() - started
    except AssertionError:
        seconds = None
    reconnections = proxy.accepted - links
    figures.add("half-open processor", published=CONSUMED, handled=len(processor.handled),
                reconnections=reconnections,
                duplicates=sum(count - 1 for count in processor.handled.values()),
                seconds_to_all_handled=seconds if seconds is not None else f">{bound:.0f}",
                bound_seconds=bound)
    assert seconds is not None, f"not all handled {bound:.0f}s after the link went half-open"
    assert reconnections >= 1
