"""RPC: the call table on a task.Clock (no broker), and calls against the real broker —
replies, many calls in flight, timeouts and retries with one correlation id, unroutable
calls, _queue_only with consume_rpc, exclusive reply queues and 3.0.3 servers."""

import json
import time

import pika
import pytest
import pytest_twisted
from twisted.internet import defer, task

from postage import (
    MessageResult,
    MessageResultException,
    RpcCommand,
    RpcHandler,
)
from postage.twisted import GenericProducer, MessageProcessor
from postage.twisted.rpc import RpcCalls

FAST = 5


# ---- the call table, on a Clock --------------------------------------------------------------

class Sends:
    """A ``send()`` that counts its attempts."""

    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1


def test_rpc_call_sends_once_at_once():
    calls, send = RpcCalls(task.Clock()), Sends()
    calls.call("id-1", send, timeout=5, max_retry=4)
    assert send.count == 1
    assert "id-1" in calls


def test_rpc_call_retries_after_each_timeout_then_ends_with_timeout_error():
    clock, send = task.Clock(), Sends()
    calls = RpcCalls(clock)
    d = calls.call("id-1", send, timeout=5, max_retry=2)
    clock.advance(4.9)
    assert send.count == 1
    clock.advance(0.1)
    assert send.count == 2
    clock.advance(5)
    assert send.count == 3
    assert not d.called
    clock.advance(5)
    result = d.result
    assert isinstance(result, MessageResultException)
    assert result.value == "TimeoutError"
    assert send.count == 3
    assert len(calls) == 0
    assert clock.getDelayedCalls() == []


def test_rpc_call_with_max_retry_zero_makes_a_single_attempt():
    clock, send = task.Clock(), Sends()
    d = RpcCalls(clock).call("id-1", send, timeout=1, max_retry=0)
    clock.advance(1)
    assert send.count == 1
    assert d.result.value == "TimeoutError"


def test_rpc_call_defaults_of_the_producer_are_30_seconds_and_4_retries():
    assert GenericProducer.rpc_timeout == 30
    assert GenericProducer.max_retry == 4


def test_rpc_reply_ends_the_call_and_cancels_its_timer():
    clock, send = task.Clock(), Sends()
    calls = RpcCalls(clock)
    d = calls.call("id-1", send, timeout=5, max_retry=4)
    assert calls.reply("id-1", MessageResult(42)) is True
    assert d.result == MessageResult(42)
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert send.count == 1


def test_rpc_first_reply_wins_and_a_later_one_is_dropped():
    clock, send = task.Clock(), Sends()
    calls = RpcCalls(clock)
    d = calls.call("id-1", send, timeout=5, max_retry=4)
    clock.advance(5)  # a second attempt, same correlation id
    assert send.count == 2
    assert calls.reply("id-1", MessageResult("first")) is True
    assert calls.reply("id-1", MessageResult("second")) is False
    assert d.result.value == "first"


def test_rpc_reply_after_the_timeout_is_dropped():
    clock, send = task.Clock(), Sends()
    calls = RpcCalls(clock)
    d = calls.call("id-1", send, timeout=1, max_retry=0)
    clock.advance(1)
    assert calls.reply("id-1", MessageResult("late")) is False
    assert d.result.value == "TimeoutError"


def test_rpc_send_that_raises_ends_the_call_with_that_error_name():
    def send():
        raise ConnectionResetError("gone")

    d = RpcCalls(task.Clock()).call("id-1", send, timeout=1, max_retry=3)
    assert isinstance(d.result, MessageResultException)
    assert (d.result.value, d.result.message) == ("ConnectionResetError", "gone")


def test_rpc_fail_all_ends_every_call_in_flight():
    clock = task.Clock()
    calls = RpcCalls(clock)
    ds = [calls.call(f"id-{i}", Sends(), timeout=5, max_retry=4) for i in range(3)]
    calls.fail_all("BrokerConnectionError", "lost")
    assert [d.result.value for d in ds] == ["BrokerConnectionError"] * 3
    assert clock.getDelayedCalls() == []


# ---- against the broker -----------------------------------------------------------------------

class Echo(MessageProcessor):
    """Answers ``echo`` with its parameters and counts the calls it saw."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.seen = []

    @RpcHandler("command", "echo")
    def rpc_echo(self, content, reply):
        self.seen.append(content["parameters"])
        reply(MessageResult(content["parameters"]))


@pytest.fixture
def service(names):
    """An exchange and the key an Echo-like processor serves on it."""
    return names.exchange_class("rpc"), "rpc.key"


@defer.inlineCallbacks
def start_processor(components, names, service, cls=Echo, **kwds):
    exchange, key = service
    processor = components.processor(cls, eqk=[(exchange, [(
        {"name": names.queue("rpc"), "flags": {"auto_delete": True}}, key)])], **kwds)
    yield processor.start()
    return processor


@pytest_twisted.inlineCallbacks
def test_rpc_gets_the_reply(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_echo({"x": 1}, _timeout=FAST)
    assert isinstance(result, MessageResult)
    assert result.value == {"x": 1}
    assert bool(result)


@pytest_twisted.inlineCallbacks
def test_rpc_keywords_become_parameters(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_echo(a=1, b="two", _timeout=FAST, _max_retry=0)
    assert result.value == {"a": 1, "b": "two"}


@pytest_twisted.inlineCallbacks
def test_rpc_with_a_builder_sends_what_the_builder_built(components, names, service):
    yield start_processor(components, names, service)
    seen = []

    class Builder(GenericProducer):
        def build_rpc_echo(self, *args, **kwds):
            seen.append((args, kwds))
            return RpcCommand("echo", {"built": list(args)})

    producer = components.producer(Builder, eks=[service])
    result = yield producer.rpc_echo(1, 2, _timeout=FAST)
    assert result.value == {"built": [1, 2]}
    assert seen == [((1, 2), {})]


@pytest_twisted.inlineCallbacks
def test_rpc_hundred_calls_in_flight_each_get_their_own_answer(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    yield producer.ready
    calls = [producer.rpc_echo(i, _timeout=10) for i in range(100)]
    results = yield defer.gatherResults(calls)
    assert [result.value for result in results] == list(range(100))


class Silent(MessageProcessor):
    """Takes every request (acked) and never answers; counts the attempts."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.attempts = []

    @RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        self.attempts.append(content)


@pytest_twisted.inlineCallbacks
def test_rpc_timeout_ends_with_timeout_error_after_the_retries(components, names, service,
                                                             tools):
    processor = yield start_processor(components, names, service, Silent)
    producer = components.producer(eks=[service])
    yield producer.ready
    started = time.monotonic()
    result = yield tools.within(producer.rpc_echo(_timeout=0.3, _max_retry=1), FAST)
    assert 0.55 < time.monotonic() - started < 3
    assert isinstance(result, MessageResultException)
    assert result.value == "TimeoutError"
    assert len(processor.attempts) == 2


@pytest_twisted.inlineCallbacks
def test_rpc_timeout_on_a_clock_makes_max_retry_plus_one_attempts(components, names, broker,
                                                                 tools):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    clock = task.Clock()
    producer = components.producer(clock=clock)
    yield producer.ready
    call = producer.rpc_echo(_key=queue, _timeout=30, _max_retry=2)
    for attempts in (1, 2, 3):
        yield tools.wait_for(lambda n=attempts: broker.message_count(queue) == n,
                             what=f"attempt {attempts}")
        assert not call.called
        clock.advance(30)
    result = yield call
    assert result.value == "TimeoutError"
    assert clock.getDelayedCalls() == []  # no attempt is left to make, however long we wait
    assert broker.message_count(queue) == 3


@pytest_twisted.inlineCallbacks
def test_rpc_attempts_carry_the_same_correlation_id_and_the_first_reply_wins(
        components, names, broker, tools):
    queue = broker.declare_queue(names.queue("by-hand"))
    clock = task.Clock()
    producer = components.producer(clock=clock)
    yield producer.ready
    call = producer.rpc_echo(_key=queue, _timeout=30, _max_retry=3)
    first = yield tools.wait_for(lambda: broker.get(queue), what="attempt 1")
    clock.advance(30)
    second = yield tools.wait_for(lambda: broker.get(queue), what="attempt 2")
    assert first[1].correlation_id == second[1].correlation_id
    assert first[1].correlation_id
    assert first[2] == second[2]
    # answer the *first* attempt, late: it still ends the call
    for value in ("first", "second"):
        broker.publish("", first[1].reply_to, json.dumps(MessageResult(value).body),
                       correlation_id=first[1].correlation_id,
                       content_type="application/json")
    result = yield tools.within(call, FAST)
    assert result.value == "first"


@pytest_twisted.inlineCallbacks
def test_rpc_processor_answering_only_the_second_attempt(components, names, service, tools):
    class SecondTime(Echo):
        @RpcHandler("command", "echo")
        def rpc_echo(self, content, reply):
            self.seen.append(content["parameters"])
            if len(self.seen) >= 2:
                reply(MessageResult(len(self.seen)))

    processor = yield start_processor(components, names, service, SecondTime)
    clock = task.Clock()
    producer = components.producer(eks=[service], clock=clock)
    call = producer.rpc_echo(_timeout=30, _max_retry=4)
    yield tools.wait_for(lambda: len(processor.seen) == 1, what="the first attempt")
    assert not call.called
    clock.advance(30)
    result = yield tools.within(call, FAST)
    assert result.value == 2


@pytest_twisted.inlineCallbacks
def test_rpc_unroutable_call_ends_at_once_with_unroutable_error(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    producer = components.producer(eks=[(exchange, "nobody")])
    yield producer.ready
    started = time.monotonic()
    result = yield producer.rpc_echo(_timeout=30)
    assert time.monotonic() - started < 2
    assert isinstance(result, MessageResultException)
    assert result.value == "UnroutableError"


@pytest_twisted.inlineCallbacks
def test_rpc_unroutable_call_made_before_the_connection_is_up(components, names):
    """The first call waits for the connection and the exchange's declaration, and is still
    reported unroutable at once."""
    producer = components.producer(eks=[(names.exchange_class(), "nobody")])
    started = time.monotonic()
    result = yield producer.rpc_echo(_timeout=30)
    assert time.monotonic() - started < 2
    assert result.value == "UnroutableError"


@pytest_twisted.inlineCallbacks
def test_rpc_queue_only_then_consume_rpc_reads_the_reply(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    queue = yield producer.rpc_echo("later", _queue_only=True)
    assert isinstance(queue, str) and queue
    results = yield producer.consume_rpc(queue, timeout=FAST)
    assert [result.value for result in results] == ["later"]


@pytest_twisted.inlineCallbacks
def test_consume_rpc_calls_the_callback_for_each_reply(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    queue = yield producer.rpc_echo("cb", _queue_only=True)
    seen = []
    results = yield producer.consume_rpc(queue, callback=seen.append, timeout=FAST)
    assert [result.value for result in results] == ["cb"]
    assert seen == results  # the callback got that very reply, once


@pytest_twisted.inlineCallbacks
def test_consume_rpc_without_a_reply_in_time_returns_a_timeout_error(components, names,
                                                                    broker):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    producer = components.producer()
    reply_queue = yield producer.rpc_echo(_key=queue, _queue_only=True)
    started = time.monotonic()
    results = yield producer.consume_rpc(reply_queue, timeout=0.3)
    assert time.monotonic() - started < 2
    assert len(results) == 1
    assert isinstance(results[0], MessageResultException)
    assert results[0].value == "TimeoutError"


@pytest_twisted.inlineCallbacks
def test_rpc_exclusive_reply_queue_mode_gets_the_reply(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service], rpc_reply_to="exclusive")
    result = yield producer.rpc_echo("exclusive", _timeout=FAST)
    assert result.value == "exclusive"


@pytest_twisted.inlineCallbacks
def test_rpc_exclusive_mode_several_calls_in_flight(components, names, service):
    yield start_processor(components, names, service)
    producer = components.producer(eks=[service], rpc_reply_to="exclusive")
    results = yield defer.gatherResults([producer.rpc_echo(i, _timeout=FAST)
                                         for i in range(10)])
    assert [result.value for result in results] == list(range(10))


@pytest_twisted.inlineCallbacks
def test_rpc_exclusive_mode_unroutable_call_ends_at_once(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    producer = components.producer(eks=[(exchange, "nobody")], rpc_reply_to="exclusive")
    started = time.monotonic()
    result = yield producer.rpc_echo(_timeout=30)
    assert time.monotonic() - started < 2
    assert result.value == "UnroutableError"


def test_rpc_reply_to_knob_accepts_only_direct_or_exclusive():
    with pytest.raises(ValueError):
        GenericProducer(rpc_reply_to="fanout", connect_timeout=1,
                        hup={"host": "127.0.0.1", "port": 1})


# ---- a 3.0.3 server: replies to reply_to without a correlation id --------------------------

@defer.inlineCallbacks
def old_style_server(components, queue):
    """A 3.0.3-style responder in raw pika on Twisted: it replies to ``reply_to`` with a
    version "2" envelope and no correlation id (nor content type)."""
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    connection = TwistedProtocolConnection(pika.ConnectionParameters(
        virtual_host="/", credentials=pika.PlainCredentials("guest", "guest")))
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", 5672), connection)
    yield connection.ready
    components.add(connection.close)
    channel = yield connection.channel()
    yield channel.queue_declare(queue, auto_delete=True)
    deliveries, _tag = yield channel.basic_consume(queue, auto_ack=True)
    answered = []

    def answer(delivery):
        _ch, _method, properties, body = delivery
        request = json.loads(body)
        reply = {"type": "result", "name": "none", "category": "message", "version": "2",
                 "fingerprint": {"name": "old"}, "_reserved": {},
                 "content": {"type": "success", "value": request["content"]["parameters"],
                             "message": ""}}
        answered.append(properties.correlation_id)
        channel.basic_publish("", properties.reply_to, json.dumps(reply))
        serve()

    def serve():
        deliveries.get().addCallbacks(answer, lambda _failure: None)

    serve()
    return answered


@pytest_twisted.inlineCallbacks
def test_rpc_exclusive_mode_talks_to_a_303_server_without_correlation_id(components, names):
    queue = names.queue("old-server")
    answered = yield old_style_server(components, queue)
    producer = components.producer(rpc_reply_to="exclusive")
    result = yield producer.rpc_echo({"old": True}, _key=queue, _timeout=FAST)
    assert isinstance(result, MessageResult)
    assert result.value == {"old": True}
    assert len(answered) == 1


@pytest_twisted.inlineCallbacks
def test_rpc_eks_option_uses_its_first_pair(components, names, service, broker):
    yield start_processor(components, names, service)
    other = broker.declare_exchange(names.exchange("other"))
    producer = components.producer(eks=[(other, "nobody")])
    result = yield producer.rpc_echo("routed", _eks=[service, (other, "nobody")],
                                     _timeout=FAST)
    assert result.value == "routed"


@pytest_twisted.inlineCallbacks
def test_rpc_key_option_uses_the_default_exchange(components, names, service):
    yield start_processor(components, names, service)
    exchange, key = service
    producer = components.producer(eks=[(exchange, "not-this-key")])
    result = yield producer.rpc_echo("keyed", _key=key, _timeout=FAST)
    assert result.value == "keyed"


@pytest_twisted.inlineCallbacks
def test_rpc_encode_error_errbacks_before_anything_is_sent(components, names, broker):
    from postage import EncodeError

    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    with pytest.raises(EncodeError):
        yield producer.rpc_echo(what=object(), _key=queue)
    assert broker.message_count(queue) == 0


@pytest_twisted.inlineCallbacks
def test_rpc_malformed_reply_ends_the_call_with_message_format_error(components, names,
                                                                     broker, tools):
    queue = broker.declare_queue(names.queue("by-hand"))
    producer = components.producer()
    call = producer.rpc_echo(_key=queue, _timeout=FAST)
    _method, properties, _body = yield tools.wait_for(lambda: broker.get(queue),
                                                      what="the request")
    broker.publish("", properties.reply_to, b"[not, an envelope",
                   correlation_id=properties.correlation_id)
    result = yield tools.within(call, FAST)
    assert isinstance(result, MessageResultException)
    assert result.value == "MessageFormatError"


@pytest_twisted.inlineCallbacks
def test_rpc_exclusive_mode_timeout_ends_with_timeout_error(components, names, broker):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    producer = components.producer(rpc_reply_to="exclusive")
    result = yield producer.rpc_echo(_key=queue, _timeout=0.3, _max_retry=0)
    assert result.value == "TimeoutError"


@pytest_twisted.inlineCallbacks
def test_memory_stays_flat_over_many_calls_and_publishes(components, names, service):
    """No per-call bookkeeping is left behind (the aio-pika lesson): after a warm-up, a few
    thousand more RPC calls and confirmed publishes do not grow the heap, and the producer's
    tables are empty."""
    import gc
    import tracemalloc

    yield start_processor(components, names, service)
    producer = components.producer(eks=[service])
    yield producer.ready

    @defer.inlineCallbacks
    def work(rounds):
        for _ in range(rounds):
            yield defer.gatherResults([producer.rpc_echo(i, _timeout=10) for i in range(100)])
            yield defer.gatherResults([producer.message_note(i=i) for i in range(100)])

    yield work(5)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield work(10)  # 1,000 calls and 1,000 publishes
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes kept after 2,000 messages"
    assert len(producer._rpc.calls) == 0
    window = producer._publisher.window
    assert not window.unconfirmed and not window.backlog and not window.returns


@pytest_twisted.inlineCallbacks
def test_rpc_in_flight_survives_a_publish_to_a_missing_exchange(components, names, service):
    """A refused publish closes the publishing channel only; calls in flight on the RPC
    channel still get their replies."""

    class Slow(Echo):
        @RpcHandler("command", "slow")
        def slow(self, content, reply):
            from twisted.internet import reactor

            reactor.callLater(0.3, reply, MessageResult("late but here"))

    yield start_processor(components, names, service, cls=Slow)
    producer = components.producer(eks=[service])
    yield producer.ready
    call = producer.rpc_slow(_timeout=FAST, _max_retry=0)
    with pytest.raises(Exception, match="NOT_FOUND"):
        yield producer.message_ping(_eks=[(names.exchange("missing"), "k")])
    result = yield call
    assert result.value == "late but here"


@pytest_twisted.inlineCallbacks
def test_rpc_through_an_exchange_class_given_per_call_declares_it_first(components, names):
    """The exchange a call names with ``_eks`` is declared before the request goes out, and
    the request is sent once."""
    exchange = names.exchange_class("per-call")
    queue = names.queue("rpc")
    counted = []

    class Counting(Echo):
        @RpcHandler("command", "echo")
        def echo(self, content, reply):
            counted.append(content["parameters"])
            reply(MessageResult(content["parameters"]))

    processor = components.processor(Counting, eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    producer = components.producer()  # no eks: nothing declared when it connects
    result = yield producer.rpc_echo("x", _eks=[(exchange, "k")], _timeout=FAST)
    assert result.value == "x"
    assert counted == ["x"]


@pytest_twisted.inlineCallbacks
def test_rpc_queue_only_unroutable_still_returns_a_queue_and_consume_rpc_says_why(
        components, names):
    producer = components.producer(eks=[(names.exchange_class("nobody"), "none")])
    reply_queue = yield producer.rpc_echo(_queue_only=True)
    assert isinstance(reply_queue, str)
    results = yield producer.consume_rpc(reply_queue, timeout=FAST)
    assert [result.value for result in results] == ["UnroutableError"]
