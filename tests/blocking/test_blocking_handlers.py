"""Facade handlers: ``async def`` ones and those returning Deferreds are awaited on the
reactor before the ack; ``handler_threads`` worker threads (several really at once with
N > 1, strictly one at a time in arrival order with 1)."""

from __future__ import annotations

import queue
import threading

import pytest
from twisted.internet import defer, task

from postage import messaging

pytestmark = pytest.mark.blocking

WAIT = 10


def test_async_handler_is_awaited_before_its_message_is_acked(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    events = queue.Queue()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]
        prefetch_count = 1  # the next message comes only once this one is acked

        @messaging.MessageHandler("command", "step")
        async def msg_step(self, content):
            number = content["parameters"]["n"]
            events.put(("start", number))
            await task.deferLater(self.reactor, 0.05, lambda: None)
            events.put(("end", number))

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    for number in range(3):
        producer.message_step(n=number)

    got = [events.get(timeout=WAIT) for _ in range(6)]
    assert got == [(step, n) for n in range(3) for step in ("start", "end")]


def test_async_rpc_handler_replies_after_awaiting(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "later")
        async def later(self, content, reply_func):
            await task.deferLater(self.reactor, 0.05, lambda: None)
            reply_func(messaging.MessageResult(["late", content["parameters"]]))

    make.processor(Processor)

    reply = make.producer(eks=[(Exchange, "k")]).rpc_later(x=1, _timeout=WAIT, _max_retry=0)

    assert reply.value == ["late", {"x": 1}]


def test_async_handler_that_raises_answers_the_caller_and_the_processor_goes_on(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "fail")
        async def fail(self, content, reply_func):
            await task.deferLater(self.reactor, 0.01, lambda: None)
            raise KeyError("missing")

        @messaging.RpcHandler("command", "ok")
        def ok(self, content, reply_func):
            reply_func(messaging.MessageResult("fine"))

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    failed = producer.rpc_fail(_timeout=WAIT, _max_retry=0)

    assert failed.value == "KeyError"
    assert producer.rpc_ok(_timeout=WAIT, _max_retry=0).value == "fine"


def test_handler_returning_a_deferred_is_acked_once_it_fired(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    events = queue.Queue()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]
        prefetch_count = 1

        @messaging.MessageHandler("command", "deferred")
        def msg_deferred(self, content):
            d = defer.Deferred()
            d.addCallback(lambda _: events.put("fired"))
            self.reactor.callFromThread(self.reactor.callLater, 0.05, d.callback, None)
            return d

        @messaging.MessageHandler("command", "after")
        def msg_after(self, content):
            events.put("after")

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    producer.message_deferred()
    producer.message_after()

    assert [events.get(timeout=WAIT) for _ in range(2)] == ["fired", "after"]


def test_handler_threads_runs_that_many_handlers_really_at_once(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    barrier = threading.Barrier(3, timeout=WAIT)  # passes only with 3 handlers running
    passed = queue.Queue()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]
        handler_threads = 3

        @messaging.MessageHandler("command", "meet")
        def msg_meet(self, content):
            barrier.wait()
            passed.put((content["parameters"]["n"], threading.get_ident()))

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    for number in range(30):  # ten rounds of three
        producer.message_meet(n=number)

    got = [passed.get(timeout=WAIT) for _ in range(30)]
    assert sorted(n for n, _ in got) == list(range(30))
    assert len({ident for _, ident in got}) == 3


def test_one_handler_thread_runs_handlers_strictly_one_at_a_time_in_order_under_load(
        make, names):
    Exchange = names.exchange_class()  # noqa: N806
    lock = threading.Lock()
    state = {"running": 0, "most": 0}
    order = []
    done = threading.Event()
    count = 200

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]
        prefetch_count = 50  # many delivered and waiting at once

        @messaging.MessageHandler("command", "work")
        def msg_work(self, content):
            with lock:
                state["running"] += 1
                state["most"] = max(state["most"], state["running"])
            order.append(content["parameters"]["n"])
            sum(range(2000))  # some work, the GIL released now and then
            with lock:
                state["running"] -= 1
            if len(order) == count:
                done.set()

    processor = make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    for number in range(count):
        producer.message_work(n=number)

    assert done.wait(WAIT * 3)
    assert order == list(range(count))
    assert state["most"] == 1
    assert processor.handler_threads == 1


def test_handler_threads_below_one_is_a_clear_error():
    class Processor(messaging.MessageProcessor):
        eqk = []

    with pytest.raises(ValueError, match="handler_threads"):
        Processor(handler_threads=0)
