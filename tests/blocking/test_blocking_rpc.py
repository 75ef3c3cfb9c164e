"""RPC with the blocking facade: ``reply = producer.rpc_NAME(...)`` returns the result message;
``_timeout``, ``_max_retry``, ``_queue_only`` + ``consume_rpc`` as in 3.0.3; unroutable calls
end at once."""

from __future__ import annotations

import time

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking


def echo_processor(names, Exchange):  # noqa: N803
    class Echo(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "echo")])]

        @messaging.RpcHandler("command", "echo")
        def echo(self, content, reply_func):
            reply_func(messaging.MessageResult(content["parameters"]))

        @messaging.RpcHandler("command", "divide")
        def divide(self, content, reply_func):
            reply_func(messaging.MessageResult(content["parameters"]["a"] /
                                               content["parameters"]["b"]))

    return Echo


@pytest.fixture
def echo(make, names):
    """A running echo processor and a producer whose default exchange reaches it."""
    Exchange = names.exchange_class()  # noqa: N806
    make.processor(echo_processor(names, Exchange))

    class EchoProducer(messaging.GenericProducer):
        eks = [(Exchange, "echo")]

    return make.producer(EchoProducer)


@pytest.fixture
def deaf(admin, names):
    """A producer whose default exchange and key reach a queue nobody consumes."""
    queue, exchange = names.queue("deaf"), names.exchange("deaf")
    admin.declare_bound_queue(queue, exchange, "k", expired_to=names.queue("expired"))
    return queue, exchange


def test_rpc_returns_the_result_message(echo):
    reply = echo.rpc_echo("hi")

    assert isinstance(reply, messaging.MessageResult)
    assert reply.value == "hi"
    assert reply.content["type"] == "success"


def test_if_reply_works_on_the_result_of_a_call(echo):
    reply = echo.rpc_echo("hi")
    if reply:
        outcome = "success"
    else:
        outcome = "failure"

    assert outcome == "success"


def test_exception_in_handler_returns_a_false_exception_result(echo):
    reply = echo.rpc_divide(a=1, b=0)

    assert isinstance(reply, messaging.MessageResultException)
    assert not reply
    assert reply.value == "ZeroDivisionError"
    assert "division by zero" in reply.message


def test_rpc_without_handler_returns_an_error_result_at_once(echo):
    start = time.monotonic()
    reply = echo.rpc_nothing_here()

    assert isinstance(reply, messaging.MessageResultError)
    assert not reply
    assert "nothing_here" in reply.message
    assert time.monotonic() - start < 5


def test_rpc_keyword_arguments_are_the_parameters_and_options_are_not(echo):
    reply = echo.rpc_echo(a=1, b=[1, 2], _timeout=5, _max_retry=1)

    assert reply.value == {"a": 1, "b": [1, 2]}


def test_rpc_unanswered_returns_timeout_error_after_timeout(make, deaf):
    _queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])
    start = time.monotonic()

    reply = producer.rpc_echo("hi", _timeout=0.3, _max_retry=0)

    elapsed = time.monotonic() - start
    assert isinstance(reply, messaging.MessageResultException)
    assert reply.value == "TimeoutError"
    assert 0.3 <= elapsed < 3


def test_rpc_max_retry_sends_again_after_each_timeout_with_one_correlation_id(make, deaf,
                                                                              admin, names):
    _queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])
    start = time.monotonic()

    reply = producer.rpc_echo("hi", _timeout=0.3, _max_retry=2)

    elapsed = time.monotonic() - start
    assert reply.value == "TimeoutError"
    assert 0.9 <= elapsed < 4
    # each attempt expired in the deaf queue after its 0.3 s, and was dead-lettered
    expired = names.queue("expired")  # (the same name as deaf's: one per test and label)
    deadline = time.monotonic() + 10
    while admin.message_count(expired) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    requests = [admin.get_message(expired) for _ in range(4)]
    assert requests[3] is None
    assert len({properties.correlation_id for properties, _body in requests[:3]}) == 1


def test_unroutable_rpc_ends_at_once_as_unroutable_error(make, names, admin):
    exchange = names.exchange("nobody-bound")
    admin.declare_exchange(exchange)
    producer = make.producer(eks=[(exchange, "k")])
    start = time.monotonic()

    reply = producer.rpc_echo("hi")  # default: 30 s timeout, 4 retries

    assert isinstance(reply, messaging.MessageResultException)
    assert reply.value == "UnroutableError"
    assert time.monotonic() - start < 3


def test_queue_only_returns_a_queue_that_consume_rpc_reads_the_result_from(echo):
    reply_queue = echo.rpc_echo("hi", _queue_only=True)

    assert isinstance(reply_queue, str)
    results = echo.consume_rpc(reply_queue, timeout=5)
    assert len(results) == 1
    assert isinstance(results[0], messaging.MessageResult)
    assert results[0].value == "hi"


def test_consume_rpc_deletes_the_reply_queue(echo, admin):
    reply_queue = echo.rpc_echo("hi", _queue_only=True)

    echo.consume_rpc(reply_queue, timeout=5)

    assert not admin.queue_exists(reply_queue)


def test_consume_rpc_calls_the_callback_with_each_result(echo):
    seen = []
    reply_queue = echo.rpc_echo("hi", _queue_only=True)

    results = echo.consume_rpc(reply_queue, callback=seen.append, timeout=5)

    assert [result.value for result in results] == ["hi"]
    assert seen == results  # the callback got that very reply, once


def test_consume_rpc_without_reply_returns_timeout_error(make, deaf):
    _queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])
    reply_queue = producer.rpc_echo("hi", _queue_only=True)
    start = time.monotonic()

    results = producer.consume_rpc(reply_queue, timeout=0.3)

    assert len(results) == 1
    assert isinstance(results[0], messaging.MessageResultException)
    assert results[0].value == "TimeoutError"
    assert time.monotonic() - start < 3


def test_handler_may_call_another_component_with_a_blocking_producer(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    make.processor(echo_processor(names, Exchange), label="echo")

    class Relay(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue("relay"), "relay")])]

        def __init__(self, *args, **kwds):
            super().__init__(*args, **kwds)
            self.producer = make.producer(eks=[(Exchange, "echo")], label="relay-producer")

        @messaging.RpcHandler("command", "relay")
        def relay(self, content, reply_func):
            answer = self.producer.rpc_echo(content["parameters"], _timeout=5)
            reply_func(messaging.MessageResult({"relayed": answer.value}))

    make.processor(Relay, label="relay")

    reply = make.producer(eks=[(Exchange, "relay")]).rpc_relay(x=1, _timeout=10)

    assert reply.value == {"relayed": {"x": 1}}


def test_handler_may_make_its_own_producer_and_close_it(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    make.processor(echo_processor(names, Exchange), label="echo")

    class Relay(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue("relay"), "relay")])]

        @messaging.RpcHandler("command", "relay")
        def relay(self, content, reply_func):
            producer = messaging.GenericProducer(eks=[(Exchange, "echo")])
            try:
                answer = producer.rpc_echo("inner", _timeout=5)
            finally:
                producer.close()
            reply_func(messaging.MessageResult(answer.value))

    make.processor(Relay, label="relay")

    reply = make.producer(eks=[(Exchange, "relay")]).rpc_relay(_timeout=10)

    assert reply.value == "inner"
