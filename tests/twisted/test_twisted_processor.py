"""MessageProcessor on Twisted: every handler kind, errors in handlers, bad input that
never stops it, the built-in quit, and replies to 3.0.3 callers."""

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import (
    Handler,
    MessageCommand,
    MessageHandler,
    MessageHandlerFullBody,
    MessageResult,
    MessageResultError,
    MessageResultException,
    MicroThread,
    RpcCommand,
    RpcHandler,
    decode_envelope,
)
from postage.twisted import GenericConsumer, MessageProcessor

FAST = 5


class Kinds(MessageProcessor):
    """One handler of each kind; what they get lands in ``self.got[label]``."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.got = {}

    def record(self, label, value):
        self.got.setdefault(label, []).append(value)

    @MessageHandler("command", "content")
    def on_content(self, content):
        self.record("content", content)

    @MessageHandler("command", "content")
    def on_content_too(self, content):
        self.record("content-too", content)

    @MessageHandlerFullBody("command", "body")
    def on_body(self, body):
        self.record("body", body)

    @RpcHandler("command", "add")
    def add(self, content, reply_func):
        reply_func(MessageResult(sum(content["parameters"]["values"])))

    @RpcHandler("command", "whoami")
    class WhoAmI(Handler):
        def call(self):
            self.reply_func(MessageResult({"processor": self.processor.fingerprint["name"],
                                           "data": self.data}))

    @MessageHandler("command", "klass")
    class Klass(Handler):
        def call(self):
            self.processor.record("klass", (self.data, self.reply_func))

    @MessageHandlerFullBody("command", "klass-body")
    class KlassBody(Handler):
        def call(self):
            self.processor.record("klass-body", self.data)

    @RpcHandler("command", "fail")
    def fail(self, content, reply_func):
        raise ValueError("the value is wrong")

    @RpcHandler("command", "fail-later")
    async def fail_later(self, content, reply_func):
        await defer.succeed(None)
        raise KeyError("missing")

    @MessageHandler("command", "explode")
    def explode(self, content):
        return 1 / 0

    @RpcHandler("command", "ping")
    def ping(self, content, reply_func):
        reply_func(MessageResult("pong"))


@pytest.fixture
def service(names):
    return names.exchange_class("svc"), "svc.key"


@pytest.fixture
def work_queue(names):
    return names.queue("work")


@defer.inlineCallbacks
def running(components, service, work_queue, cls=Kinds, **kwds):
    exchange, key = service
    processor = components.processor(cls, eqk=[(exchange, [(work_queue, key)])], **kwds)
    yield processor.start()
    return processor


def publish_raw(broker, service, body, **properties):
    exchange, key = service
    properties.setdefault("content_type", "application/json")
    broker.publish(exchange.name, key, body, **properties)


@pytest_twisted.inlineCallbacks
def test_processor_has_consumer_and_fingerprint(components, service, work_queue):
    processor = yield running(components, service, work_queue)
    assert isinstance(processor, MicroThread)
    assert isinstance(processor.consumer, GenericConsumer)
    assert processor.fingerprint["name"] == processor.consumer.name
    assert work_queue in processor.consumer.queues


@pytest_twisted.inlineCallbacks
def test_message_handler_gets_the_content(components, service, work_queue, tools):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_content(a=1)
    yield tools.wait_for(lambda: "content" in processor.got, what="the handler")
    assert processor.got["content"] == [{"parameters": {"a": 1}}]


@pytest_twisted.inlineCallbacks
def test_every_message_handler_of_a_name_runs(components, service, work_queue, tools):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_content(a=1)
    yield tools.wait_for(lambda: "content-too" in processor.got and "content" in processor.got,
                         what="both handlers")
    assert processor.got["content"] == [{"parameters": {"a": 1}}]  # each ran once, with it
    assert processor.got["content-too"] == [{"parameters": {"a": 1}}]


@pytest_twisted.inlineCallbacks
def test_full_body_handler_gets_the_whole_body(components, service, work_queue, tools):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_body(b=2)
    (body,) = yield tools.wait_for(lambda: processor.got.get("body"), what="the handler")
    assert (body["type"], body["name"], body["category"]) == ("command", "body", "message")
    assert body["content"] == {"parameters": {"b": 2}}
    assert body["fingerprint"] == producer.fingerprint


@pytest_twisted.inlineCallbacks
def test_rpc_handler_answers_through_reply_func(components, service, work_queue):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_add(values=[1, 2, 3], _timeout=FAST)
    assert isinstance(result, MessageResult)
    assert result.value == 6


@pytest_twisted.inlineCallbacks
def test_handler_class_gets_processor_data_and_reply_func(components, service, work_queue):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_whoami(x=1, _timeout=FAST)
    assert result.value == {"processor": processor.fingerprint["name"],
                            "data": {"parameters": {"x": 1}}}


@pytest_twisted.inlineCallbacks
def test_message_handler_class_has_no_reply_func(components, service, work_queue, tools):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_klass(y=2)
    (got,) = yield tools.wait_for(lambda: processor.got.get("klass"), what="the handler")
    assert got == ({"parameters": {"y": 2}}, None)


@pytest_twisted.inlineCallbacks
def test_full_body_handler_class_gets_the_body_as_data(components, service, work_queue,
                                                       tools):
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.send("klass-body", z=3)  # message_NAME for a name with a dash
    (body,) = yield tools.wait_for(lambda: processor.got.get("klass-body"), what="the handler")
    assert body["name"] == "klass-body"
    assert body["content"] == {"parameters": {"z": 3}}


@pytest_twisted.inlineCallbacks
def test_exception_in_an_rpc_handler_answers_message_result_exception(
        components, service, work_queue):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_fail(_timeout=FAST, _max_retry=0)
    assert isinstance(result, MessageResultException)
    assert (result.value, result.message) == ("ValueError", "the value is wrong")


@pytest_twisted.inlineCallbacks
def test_exception_in_an_async_rpc_handler_answers_message_result_exception(
        components, service, work_queue):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    result = yield producer.call("fail-later", _timeout=FAST, _max_retry=0)
    assert isinstance(result, MessageResultException)
    assert result.value == "KeyError"


@pytest_twisted.inlineCallbacks
def test_rpc_without_a_handler_is_answered_with_an_error_at_once(components, service,
                                                                 work_queue):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    result = yield producer.rpc_nothing_here(_timeout=FAST, _max_retry=0)
    assert isinstance(result, MessageResultError)
    assert "nothing_here" in result.message


@pytest_twisted.inlineCallbacks
def test_handler_exception_is_logged_with_traceback_and_processing_goes_on(
        components, service, work_queue, log_events, tools):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_explode()
    result = yield producer.rpc_ping(_timeout=FAST)
    assert result.value == "pong"
    failures = yield tools.wait_for(log_events.failures, what="the logged failure")
    assert len(failures) == 1
    traceback = failures[0]["log_failure"].getTraceback()
    assert "ZeroDivisionError" in traceback
    assert "explode" in traceback


@pytest_twisted.inlineCallbacks
def test_rpc_handler_exception_is_logged_too(components, service, work_queue, log_events):
    yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.rpc_fail(_timeout=FAST, _max_retry=0)
    failures = log_events.failures()
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ValueError)



def _queue_is_empty(tools, queue):
    """True once the broker holds no message of ``queue``, ready or unacked."""
    return tools.queue_counts(queue).addCallback(lambda counts: counts[:2] == (0, 0))

@pytest_twisted.inlineCallbacks
def test_malformed_delivery_is_rejected_without_requeue_and_logged_once(
        components, broker, service, work_queue, log_events, tools):
    processor = yield running(components, service, work_queue)
    publish_raw(broker, service, b"this is not json")
    yield tools.wait_for(lambda: log_events.matching("rejected a delivery"),
                         what="the rejection")
    # Neither ready nor unacked: the message left the queue, so it cannot come back.
    yield tools.wait_for(lambda: _queue_is_empty(tools, work_queue), timeout=15,
                         what="an empty queue")
    assert len(log_events.matching("rejected a delivery")) == 1
    yield processor.stop()  # whatever was unacked would return to the queue now
    assert broker.message_count(work_queue) == 0


@pytest_twisted.inlineCallbacks
def test_delivery_without_content_type_is_decoded_with_the_encoder(components, broker,
                                                                   service, work_queue,
                                                                   tools):
    """3.0.3 sent no content type."""
    processor = yield running(components, service, work_queue)
    broker.publish(service[0].name, service[1],
                   json.dumps(MessageCommand("content", {"old": 1}).body))
    yield tools.wait_for(lambda: "content" in processor.got, what="the handler")
    assert processor.got["content"] == [{"parameters": {"old": 1}}]


@pytest_twisted.inlineCallbacks
def test_processor_survives_bad_input_and_still_answers(components, broker, service,
                                                        work_queue, log_events, tools):
    processor = yield running(components, service, work_queue)
    good = MessageCommand("content", {}).body
    bad = [
        b"{malformed",
        json.dumps([1, 2, 3]),
        json.dumps({k: v for k, v in good.items() if k != "category"}),
        json.dumps({**good, "category": "gossip"}),
        json.dumps(good).encode(),  # well-formed, but as text/plain: rejected
    ]
    for body in bad[:-1]:
        publish_raw(broker, service, body)
    publish_raw(broker, service, bad[-1], content_type="text/plain")
    producer = components.producer(eks=[service])
    yield producer.message_explode()  # a raising handler
    result = yield producer.rpc_ping(_timeout=FAST, _max_retry=0)
    assert result.value == "pong"
    yield tools.wait_for(lambda: len(log_events.matching("rejected a delivery")) == 5,
                         what="five rejections")
    # Neither ready nor unacked: every rejected message left the queue, none can come back.
    yield tools.wait_for(lambda: _queue_is_empty(tools, work_queue), timeout=15,
                         what="an empty queue")
    assert len(log_events.matching("rejected a delivery")) == 5  # each once: none came back
    assert len(log_events.failures()) == 1
    assert "content" not in processor.got
    yield processor.stop()
    assert broker.message_count(work_queue) == 0  # nothing unacked went back to the queue


@pytest_twisted.inlineCallbacks
def test_reply_to_a_303_caller_has_no_correlation_id_and_is_readable(components, broker,
                                                                     names, service,
                                                                     work_queue, tools):
    yield running(components, service, work_queue)
    reply_queue = broker.declare_queue(names.queue("old-caller"))
    request = {**RpcCommand("add", {"values": [2, 3]}).body, "version": "2"}
    broker.publish(service[0].name, service[1], json.dumps(request), reply_to=reply_queue)
    _method, properties, body = yield tools.wait_for(lambda: broker.get(reply_queue),
                                                     what="the reply")
    assert properties.correlation_id is None
    assert properties.content_type == "application/json"
    reply = decode_envelope(body)
    assert reply["type"] == "result"
    assert reply["content"]["type"] == "success"  # what a 3.0.3 caller reads
    assert reply["content"]["value"] == 5


@pytest_twisted.inlineCallbacks
def test_reply_copies_the_requests_correlation_id(components, broker, names, service,
                                                  work_queue, tools):
    yield running(components, service, work_queue)
    reply_queue = broker.declare_queue(names.queue("caller"))
    correlation_id = uuid.uuid4().hex
    broker.publish(service[0].name, service[1], json.dumps(RpcCommand("ping").body),
                   reply_to=reply_queue, correlation_id=correlation_id,
                   content_type="application/json")
    _method, properties, _body = yield tools.wait_for(lambda: broker.get(reply_queue),
                                                      what="the reply")
    assert properties.correlation_id == correlation_id


# ---- remote control ------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_quit_stops_the_processor_and_ends_the_scheduler(components, service, work_queue,
                                                         broker, tools):
    processor = components.processor(Kinds, eqk=[(service[0], [(work_queue, service[1])])])
    scheduler = components.scheduler()
    scheduler.add_microthread(processor)
    ended = scheduler.start()
    yield tools.wait_for(lambda: broker.queue_exists(work_queue)
                         and broker.consumer_count(work_queue) == 1, what="the consumer")
    producer = components.producer(eks=[service])
    yield producer.message_quit()
    yield tools.within(ended, FAST)
    assert processor.quit_requested
    assert not processor.consumer.connection.is_open
    assert broker.message_count(work_queue) == 0  # quit was acked


@pytest_twisted.inlineCallbacks
def test_quit_stops_a_processor_started_alone(components, service, work_queue):
    processor = yield running(components, service, work_queue)
    stopped = processor.when_stopped()
    producer = components.producer(eks=[service])
    yield producer.message_quit()
    quit_requested = yield stopped
    assert quit_requested is True


@pytest_twisted.inlineCallbacks
def test_remote_control_false_ignores_quit(components, service, work_queue, tools):
    processor = yield running(components, service, work_queue, remote_control=False)
    stopped = processor.when_stopped()
    producer = components.producer(eks=[service])
    yield producer.message_quit()
    result = yield producer.rpc_ping(_timeout=FAST)  # the queue is FIFO: quit came first
    assert result.value == "pong"
    assert not processor.quit_requested
    # An obeyed quit would have stopped consuming before the first ping was handled: a ping
    # sent only now is answered only by a processor that ignored it.
    again = yield producer.rpc_ping(_timeout=FAST, _max_retry=0)
    assert again.value == "pong"
    assert not stopped.called


@pytest_twisted.inlineCallbacks
def test_remote_control_false_as_a_class_attribute(components, service, work_queue):
    class Deaf(Kinds):
        remote_control = False

    processor = yield running(components, service, work_queue, cls=Deaf)
    assert ("message", "command", "quit") not in processor.dispatch.keys()
    assert ("message", "command", "restart") not in processor.dispatch.keys()
    assert ("message", "command", "quit") in Kinds.dispatch_table.keys()


@pytest_twisted.inlineCallbacks
def test_stop_waits_for_running_handlers_and_acks_them(components, broker, service,
                                                       work_queue, tools):
    class Slow(MessageProcessor):
        gate = None

        @MessageHandler("command", "slow")
        def slow(self, content):
            type(self).gate = defer.Deferred()
            return type(self).gate

    processor = yield running(components, service, work_queue, cls=Slow)
    producer = components.producer(eks=[service])
    yield producer.message_slow()
    yield tools.wait_for(lambda: Slow.gate is not None, what="the handler")
    stopping = processor.stop()
    # Stopping has begun (the broker no longer counts the consumer) and still waits for
    # the handler: a stop that did not wait would have ended along with its consumer.
    yield tools.wait_for(lambda: broker.consumer_count(work_queue) == 0, what="the cancel")
    assert not stopping.called
    Slow.gate.callback(None)
    yield tools.within(stopping, FAST)
    assert broker.message_count(work_queue) == 0


@pytest_twisted.inlineCallbacks
def test_restart_acks_then_asks_for_a_graceful_restart_of_the_process(
        components, broker, service, work_queue, monkeypatch, tools):
    """The restart itself (stop everything, then re-execute) is the whole process's: see
    the twistd tests; here the processor acks and hands it over."""
    from postage.twisted import restart

    asked = []
    monkeypatch.setattr(restart, "request", asked.append)
    processor = yield running(components, service, work_queue)
    producer = components.producer(eks=[service])
    yield producer.message_restart()
    yield tools.wait_for(lambda: asked, what="the restart request")
    assert asked == [processor.reactor]
    assert broker.message_count(work_queue) == 0  # acked


def test_restart_redacts_passwords_from_the_command_line_it_logs():
    from postage.twisted.restart import redacted

    argv = ["twistd", "--url", "amqps://user:s3cret@host:5671/vh", "amqp://:pw@h/"]
    assert redacted(argv) == ["twistd", "--url", "amqps://user:***@host:5671/vh",
                              "amqp://:***@h/"]


@pytest_twisted.inlineCallbacks
def test_stop_gives_up_waiting_for_a_hung_handler_after_stop_timeout(components, names,
                                                                      broker, tools):
    """Every Deferred ends: a handler that never finishes holds stop() for stop_timeout
    only; its message stays unacked, so the broker delivers it again."""
    exchange = names.exchange_class()
    queue = names.queue()

    class Hung(MessageProcessor):
        stop_timeout = 0.3

        @MessageHandler("command", "hang")
        def hang(self, content):
            return defer.Deferred()  # never fires

    processor = components.processor(Hung, eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_hang()
    yield tools.wait_for(lambda: processor._in_flight == 1, what="the handler to start")
    yield tools.within(processor.stop(), 5)
    count = yield tools.wait_for(lambda: broker.message_count(queue), what="the redelivery")
    assert count == 1
