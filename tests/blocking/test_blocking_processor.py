"""Facade processors and their consumer, used from a script: run-time bindings, handlers in
a worker thread one at a time, start / stop that block."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking

WAIT = 5


def listener(names, Exchange, got, key="k"):  # noqa: N803
    class Listener(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), key)])]

        @messaging.MessageHandler("command", "note")
        def msg_note(self, content):
            got.put(content["parameters"])

    return Listener


def test_processor_builds_a_facade_consumer():
    class Processor(messaging.MessageProcessor):
        eqk = []

    processor = Processor()

    assert isinstance(processor.consumer, messaging.GenericConsumer)


def test_queue_bind_at_run_time_consumes_a_new_queue(make, names):
    First, Second = names.exchange_class("first"), names.exchange_class("second")  # noqa: N806
    got = queue.Queue()
    processor = make.processor(listener(names, First, got))

    processor.consumer.queue_bind(Second, names.auto_queue("late"), "late-key")
    make.producer(eks=[(Second, "late-key")]).message_note(n=1)

    assert got.get(timeout=WAIT) == {"n": 1}


def test_queue_bind_at_run_time_adds_a_key_to_a_consumed_queue(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = queue.Queue()
    processor = make.processor(listener(names, Exchange, got))
    consumed = processor.consumer.queues[0]

    processor.consumer.queue_bind(Exchange, consumed, "extra-key")
    make.producer(eks=[(Exchange, "extra-key")]).message_note(n=2)

    assert got.get(timeout=WAIT) == {"n": 2}


def test_queue_unbind_at_run_time_removes_the_binding(make, names):
    Exchange = names.exchange_class(auto_delete=False)  # noqa: N806 - outlives its binding
    got = queue.Queue()
    processor = make.processor(listener(names, Exchange, got))
    producer = make.producer(eks=[(Exchange, "k")])

    processor.consumer.queue_unbind(Exchange, processor.consumer.queues[0], "k")

    with pytest.raises(messaging.UnroutableError):
        producer.message_note(n=3, _mandatory=True)


def test_handlers_run_one_at_a_time_in_arrival_order(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    calls = []
    done = threading.Event()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler("command", "work")
        def msg_work(self, content):
            calls.append(("start", content["parameters"]["n"]))
            time.sleep(0.05)
            calls.append(("end", content["parameters"]["n"]))
            if content["parameters"]["n"] == 4:
                done.set()

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    for n in range(5):
        producer.message_work(n=n)

    assert done.wait(WAIT)
    assert calls == [(step, n) for n in range(5) for step in ("start", "end")]


def test_handler_exception_is_answered_and_the_processor_keeps_going(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "fail")
        def fail(self, content, reply_func):
            raise ValueError("bad value")

        @messaging.RpcHandler("command", "ok")
        def ok(self, content, reply_func):
            reply_func(messaging.MessageResult("fine"))

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    failed = producer.rpc_fail(_timeout=WAIT)
    answered = producer.rpc_ok(_timeout=WAIT)

    assert (failed.value, failed.message) == ("ValueError", "bad value")
    assert answered.value == "fine"


def test_stop_waits_for_a_running_handler(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    started, finished = threading.Event(), threading.Event()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler("command", "slow")
        def msg_slow(self, content):
            started.set()
            time.sleep(0.5)
            finished.set()

    processor = make.processor(Processor)
    make.producer(eks=[(Exchange, "k")]).message_slow()
    assert started.wait(WAIT)

    processor.stop()

    assert finished.is_set()
    assert processor.wait(0)


def test_remote_control_off_ignores_quit(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = queue.Queue()

    class Processor(listener(names, Exchange, got)):
        remote_control = False

    processor = make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")])

    producer.message_quit()
    producer.message_note(n=5)
    assert got.get(timeout=WAIT) == {"n": 5}  # handled after the quit (one at a time)
    # A quit that was obeyed would have stopped consuming by now (its handler ran before the
    # note's): a note sent only now is consumed only by a processor that ignored it.
    producer.message_note(n=6)
    assert got.get(timeout=WAIT) == {"n": 6}
    assert not processor.wait(0)
