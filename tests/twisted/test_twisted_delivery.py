"""Delivery on the wire: what a producer sets on its publishes (persistence, user_id, per-call
options, RPC expiration), a Delivery that settles once, ack before reply, who may send quit,
and publishes that fail alone."""

import json
import uuid

import pika
import pytest
import pytest_twisted
from twisted.internet import defer

from postage import (
    MessageCommand,
    MessageHandler,
    MessageResult,
    PublishError,
    RpcHandler,
)
from postage.twisted import MessageProcessor
from postage.twisted.delivery import Delivery

FAST = 5


def bound_queue(broker, names, exchange, key):
    queue = broker.declare_queue(names.queue())
    broker.bind(queue, exchange, key)
    return queue


@pytest.fixture
def routed(components, names, broker):
    """A producer whose default route ends in a queue the test reads."""
    exchange = names.exchange_class()

    @defer.inlineCallbacks
    def make(**knobs):
        producer = components.producer(eks=[(exchange, "k")], **knobs)
        yield producer.ready
        return producer, bound_queue(broker, names, exchange.name, "k")

    return make


@pytest_twisted.inlineCallbacks
def test_message_publishes_are_persistent_and_carry_the_user_id(routed, broker):
    producer, queue = yield routed()
    yield producer.message_ping()
    properties, _body = broker.get_message(queue)
    assert properties.delivery_mode == 2
    assert properties.user_id == "guest"
    assert properties.content_type == "application/json"


@pytest_twisted.inlineCallbacks
def test_persistent_false_knob_and_per_call_option_publish_transient(routed, broker):
    producer, queue = yield routed(persistent=False)
    yield producer.message_ping()
    properties, _body = broker.get_message(queue)
    assert properties.delivery_mode in (None, 1)
    persistent, _ = yield routed()
    yield persistent.message_ping(_persistent=False)


@pytest_twisted.inlineCallbacks
def test_per_call_expiration_priority_and_headers(routed, broker):
    producer, queue = yield routed()
    yield producer.message_ping(_expiration=2.5, _priority=7, _headers={"x-who": "me"})
    properties, body = broker.get_message(queue)
    assert properties.expiration == "2500"
    assert properties.priority == 7
    assert properties.headers["x-who"] == "me"
    assert "_headers" not in json.loads(body)["content"]["parameters"]


@pytest.mark.parametrize("options", [{"_expiration": -1}, {"_expiration": "soon"},
                                     {"_priority": 256}, {"_priority": 1.5},
                                     {"_headers": ["not", "a", "dict"]}])
@pytest_twisted.inlineCallbacks
def test_bad_per_call_options_fail_that_call_before_anything_is_sent(routed, broker, options):
    producer, queue = yield routed()
    with pytest.raises((ValueError, TypeError)):
        yield producer.message_ping(**options)
    yield producer.message_pong()  # the producer goes on
    _properties, body = broker.get_message(queue)
    assert json.loads(body)["name"] == "pong"


@pytest_twisted.inlineCallbacks
def test_an_rpc_request_nobody_takes_expires_with_its_attempt(components, names, broker,
                                                              tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    result = yield producer.rpc_echo(_key=queue, _timeout=0.5, _max_retry=0)
    assert result.value == "TimeoutError"
    # the broker drops the request once its attempt is over: nobody runs it late
    yield tools.wait_for(lambda: broker.message_count(queue) == 0, timeout=5,
                         what="the request to expire")


@pytest_twisted.inlineCallbacks
def test_rpc_request_properties(components, names, broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    call = producer.rpc_echo(_key=queue, _timeout=20, _max_retry=0)
    got = yield tools.wait_for(lambda: broker.get_message(queue), what="the request")
    properties, _body = got
    assert properties.expiration == "20000"
    assert properties.delivery_mode in (None, 1)
    assert properties.user_id == "guest"
    assert properties.reply_to.startswith("amq.rabbitmq.reply-to.")  # (the broker's form)
    yield producer.close()
    assert (yield call).value == "BrokerConnectionError"


@pytest_twisted.inlineCallbacks
def test_a_publish_pika_refuses_fails_alone_and_keeps_the_tags_right(routed, broker, names):
    """A routing key over 255 bytes is refused by pika before anything is sent: that call
    fails with PublishError, and the confirms of the publishes around it stay theirs."""
    producer, queue = yield routed()
    before = producer.message_ping(n=1)
    refused = producer.message_ping(_key="k" * 300)
    after = producer.message_ping(n=2)
    yield before
    with pytest.raises(PublishError):
        yield refused
    yield after
    bodies = [json.loads(broker.get_message(queue)[1])["content"]["parameters"]["n"]
              for _ in range(2)]
    assert bodies == [1, 2]


@pytest_twisted.inlineCallbacks
def test_a_lone_surrogate_in_a_key_fails_that_call_only(routed, broker):
    producer, queue = yield routed()
    with pytest.raises(PublishError):
        yield producer.message_ping(_key="bad\udc80key")
    yield producer.message_ping(n=3)
    assert json.loads(broker.get_message(queue)[1])["content"]["parameters"] == {"n": 3}


@pytest_twisted.inlineCallbacks
def test_a_publish_to_a_missing_exchange_fails_alone(components, names, broker, tools):
    """The broker closes the channel for it; the publishes it had already taken are not
    failed (they are sent again, or confirmed), and later ones go out."""
    exchange = names.exchange_class()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.ready
    queue = bound_queue(broker, names, exchange.name, "k")
    good = [producer.message_ping(n=n) for n in range(50)]
    bad = producer.message_ping(_eks=[(names.exchange("missing"), "k")])
    more = [producer.message_ping(n=n) for n in range(50, 60)]
    with pytest.raises(PublishError):
        yield tools.within(bad, FAST)
    yield tools.within(defer.gatherResults(good + more), FAST)
    count = yield tools.wait_for(lambda: broker.message_count(queue) >= 60 and
                                 broker.message_count(queue), what="every good publish")
    assert count >= 60  # (at least once: some may have been sent again)


# ---- the processor's side ------------------------------------------------------------------

class Echo(MessageProcessor):
    @RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]))

    @RpcHandler("command", "later")
    def later(self, content, reply_func):
        self.replied = defer.Deferred()
        reply_func(MessageResult("early"))
        return self.replied  # still running after its reply


@pytest_twisted.inlineCallbacks
def test_an_rpc_server_acks_the_request_before_it_replies(components, names, broker, tools):
    exchange, queue = names.exchange_class(), names.queue()
    processor = components.processor(Echo, eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    producer = components.producer(eks=[(exchange, "k")])
    result = yield tools.within(producer.rpc_later(), FAST)
    assert result.value == "early"
    # the handler has not returned, yet the request is acked: nothing is unacked
    unacked = yield tools.unacked_count(queue)
    assert unacked == 0
    processor.replied.callback(None)


class Stuck(MessageProcessor):
    runs = 0

    @RpcHandler("command", "stuck")
    def stuck(self, content, reply_func):
        type(self).runs += 1
        return defer.Deferred()  # never replies, never ends: the request stays unacked


@pytest_twisted.inlineCallbacks
def test_a_request_redelivered_again_and_again_is_rejected(components, names, broker, tools):
    """A request that keeps killing the server's connection (seen on a cluster) must not
    loop: after three redeliveries it is rejected (dead-lettered where set up)."""
    queue = names.queue()
    dead = broker.declare_queue(names.queue("dead"))
    broker.declare_queue(queue, arguments={"x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": dead})
    flags = {"arguments": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}}
    processor = components.processor(Stuck, eqk=[("", [({"name": queue, "flags": flags},
                                                         queue)])], stop_timeout=0.5)
    yield processor.start()
    broker.channel.basic_publish("", queue, json.dumps(
        {**MessageCommand("stuck").body, "category": "rpc"}), pika.BasicProperties(
        content_type="application/json", correlation_id=uuid.uuid4().hex,
        reply_to="amq.rabbitmq.reply-to.nobody"))
    for runs in range(1, 5):
        yield tools.wait_for(lambda n=runs: Stuck.runs == n, timeout=15, what=f"run {runs}")
        yield tools.close_connections(processor.fingerprint["name"])
    count = yield tools.wait_for(lambda: broker.message_count(dead), timeout=15,
                                 what="the dead-lettered request")
    assert count == 1
    assert Stuck.runs == 4  # the first delivery and three redeliveries, no more


class Quitting(MessageProcessor):
    pass


@pytest_twisted.inlineCallbacks
def test_quit_from_a_user_not_in_remote_control_users_is_ignored(components, names, broker,
                                                                 tools, log_events):
    exchange, queue = names.exchange_class(), names.queue()
    processor = components.processor(Quitting, eqk=[(exchange, [(queue, "k")])],
                                     remote_control_users=["someone-else"])
    yield processor.start()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_quit()
    yield producer.message_quit()
    yield tools.wait_for(lambda: broker.message_count(queue) == 0, what="the acks")
    assert not processor.when_stopped().called
    refusals = [event for event in log_events
                if "remote_control_users" in event.get("log_format", "")]
    assert len(refusals) == 1  # logged once per sender


@pytest_twisted.inlineCallbacks
def test_quit_from_the_processors_own_user_is_obeyed(components, names, tools):
    exchange, queue = names.exchange_class(), names.queue()
    processor = components.processor(Quitting, eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_quit()
    quit_requested = yield tools.within(processor.when_stopped(), FAST)
    assert quit_requested is True


class Counting(MessageProcessor):
    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.seen = []

    @MessageHandler("command", "count")
    def count(self, content):
        self.seen.append(content["parameters"]["n"])


class Channel:
    """Stands for the consumer's channel: open or not, and what was sent on it."""

    def __init__(self):
        self.is_open = True
        self.sent = []
        self.impl = self.frames = self

    def ack(self, tag, now=False):
        self.sent.append(("ack", tag))

    def basic_reject(self, tag, requeue):
        self.sent.append(("reject", tag, requeue))


def a_delivery(channel, tag=7):
    method = pika.spec.Basic.Deliver(delivery_tag=tag, exchange="ex", routing_key="k")
    return Delivery(channel, method, pika.BasicProperties(headers={"h": 1}), b"{}", "q")


def test_a_delivery_settles_once():
    channel = Channel()
    delivery = a_delivery(channel)
    assert delivery.ack() is True
    assert delivery.ack() is False and delivery.reject() is False
    assert channel.sent == [("ack", 7)]
    assert delivery.settled


def test_a_delivery_whose_channel_is_gone_sends_nothing():
    """Its tag means nothing on another channel; the broker delivers it again."""
    channel = Channel()
    delivery = a_delivery(channel)
    channel.is_open = False
    assert not delivery.current
    assert delivery.reject() is False
    assert channel.sent == []


def test_a_delivery_reads_its_headers():
    delivery = a_delivery(Channel())
    assert delivery.header("h") == 1
    assert delivery.header("missing", "default") == "default"
    assert (delivery.queue, delivery.exchange, delivery.routing_key) == ("q", "ex", "k")


def test_an_async_handler_may_await_asyncio_futures_under_the_asyncio_reactor(tmp_path):
    """Under the asyncio reactor a handler may await asyncio awaitables and Deferreds."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = tmp_path / "asyncio_handler.py"
    script.write_text(ASYNCIO_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['deferred', 'future', 'sleep']"


ASYNCIO_SCRIPT = '''
import asyncio, uuid
from twisted.internet import asyncioreactor
asyncioreactor.install()
from twisted.internet import reactor, defer, task
from postage import MessageResult, RpcHandler
from postage.twisted import GenericProducer, MessageProcessor

QUEUE = "postage-test.twisted.asyncio." + uuid.uuid4().hex

class Mixed(MessageProcessor):
    eqk = [("", [({"name": QUEUE, "flags": {"auto_delete": True}}, QUEUE)])]

    @RpcHandler("command", "mixed")
    async def mixed(self, content, reply_func):
        a = await task.deferLater(reactor, 0.01, lambda: "deferred")
        b = await asyncio.ensure_future(asyncio.sleep(0.01, result="future"))
        await asyncio.sleep(0.01)
        reply_func(MessageResult([a, b, "sleep"]))

@defer.inlineCallbacks
def main():
    processor = Mixed({"name": "asyncio-test"})
    yield processor.start()
    producer = GenericProducer(routing_key=QUEUE)
    result = yield producer.rpc_mixed(_timeout=10, _max_retry=0)
    print(result.value)
    yield producer.close()
    yield processor.stop()
    reactor.stop()

reactor.callWhenRunning(main)
reactor.run()
'''
