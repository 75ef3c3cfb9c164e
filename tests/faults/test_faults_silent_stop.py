"""Closing while the path to the broker is silent (a half-open link): ``producer.close()``
and ``processor.stop()`` end within a bound (``stop_timeout`` and a few seconds), whatever
the broker does, because a daemon that is told to stop must stop."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import MessageHandler
from postage.twisted import MessageProcessor

pytestmark = pytest.mark.faults

STOP_TIMEOUT = 2.0
BOUND = STOP_TIMEOUT + 8.0


class Idle(MessageProcessor):
    stop_timeout = STOP_TIMEOUT

    @MessageHandler("command", "item")
    def item(self, content) -> None:
        pass


async def _ends_within(d: defer.Deferred, tools) -> float | None:
    """Seconds until ``d`` ended, or None past BOUND (``d`` is left alone: not cancelled)."""
    started = time.monotonic()
    ended = []
    d.addBoth(lambda _: ended.append(time.monotonic() - started))
    try:
        await tools.wait_for(lambda: ended, BOUND, what="the stop to end")
    except AssertionError:
        return None
    return ended[0]


@pytest_twisted.ensureDeferred
async def test_a_producer_closes_in_time_on_a_silent_link(components, names, broker, proxy,
                                                          tools, figures):
    queue = names.queue("q")
    broker.declare_queue(queue)
    producer = components.producer(hup=proxy.hup)
    await tools.within(producer.message_item({"n": 1}, _key=queue), 30)
    proxy.pause()
    seconds = await _ends_within(producer.close(), tools)
    figures.add("producer.close()", seconds=seconds if seconds is not None else f">{BOUND:.0f}",
                bound_seconds=BOUND)
    assert seconds is not None


@pytest_twisted.ensureDeferred
async def test_a_processor_stops_in_time_on_a_silent_link(components, names, proxy, tools,
                                                          figures):
    queue = names.queue("q")
    processor = components.processor(Idle, hup=proxy.hup, eqk=[("", [(queue, queue)])])
    await tools.within(processor.start(), 30)
    proxy.pause()
    seconds = await _ends_within(processor.stop(), tools)
    figures.add("processor.stop()", seconds=seconds if seconds is not None else f">{BOUND:.0f}",
                bound_seconds=BOUND)
    assert seconds is not None
