"""Traces with the blocking facade: a publish from a handler's worker thread continues the
delivery's trace (the facade's answers to ``describe`` are tested in tests/tools)."""

from __future__ import annotations

import queue
import time

import pytest

from postage import messaging, tracing

pytestmark = pytest.mark.blocking

WAIT = 10


def test_a_publish_from_a_facade_handler_thread_continues_the_trace(make, names, admin):
    Exchange = names.exchange_class()  # noqa: N806
    out = admin.declare_bound_queue(names.queue("out"), Exchange.name, "out")
    seen = queue.Queue()

    class Relay(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue("in"), "in")])]

        def __init__(self, *args, **kwds):
            super().__init__(*args, **kwds)
            self.producer = messaging.GenericProducer(eks=[(Exchange, "out")])

        @messaging.MessageHandler("command", "relay")
        def relay(self, content):
            seen.put(tracing.current.get())  # in the worker thread
            self.producer.message_relayed()

    relay = make.processor(Relay)
    producer = make.producer(eks=[(Exchange, "in")])
    root = tracing.new_context()
    token = tracing.current.set(root)
    try:
        producer.message_relay()  # from this thread: its context goes along
    finally:
        tracing.current.reset(token)

    in_handler = seen.get(timeout=WAIT)
    got = None
    deadline = time.monotonic() + WAIT
    while got is None and time.monotonic() < deadline:
        got = admin.get(out)
        time.sleep(0.02)
    relay.producer.close()

    assert got is not None, "the relayed message did not arrive"
    _method, properties, _body = got
    relayed = tracing.parse(properties.headers["traceparent"])
    assert in_handler.trace_id == relayed.trace_id == root.trace_id
    assert len({root.span_id, in_handler.span_id, relayed.span_id}) == 3
