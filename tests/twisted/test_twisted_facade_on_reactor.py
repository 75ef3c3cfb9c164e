"""The blocking facade used on the reactor thread (as a 3.0.3 component under twistd is): it
cannot block there, so every method returns the Twisted object's Deferred, and a failure
reaches that Deferred instead of becoming "Unhandled error in Deferred"."""

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import messaging

from brokertools import GUEST

WAIT = 10


def facade_producer(components, names, **kwds):
    producer = messaging.GenericProducer(messaging.Fingerprint(names.component("facade")),
                                         hup=GUEST, **kwds)
    components.add(producer.close)
    return producer


@pytest_twisted.ensureDeferred
async def test_producer_methods_return_deferreds_that_fire(components, names, broker, tools):
    queue, exchange = names.queue("deaf"), names.exchange("deaf")
    broker.declare_bound_queue(queue, exchange, "k")
    producer = facade_producer(components, names, eks=[(exchange, "k")])

    sent = [producer.message_hello(), producer.send("hello"), producer.message(1, two=2)]
    assert all(isinstance(d, defer.Deferred) for d in sent)
    await tools.within(defer.gatherResults(sent), WAIT)
    body = messaging.decode_envelope(broker.get_body(queue))
    forwarded = producer.forward(body)
    assert isinstance(forwarded, defer.Deferred)
    await tools.within(forwarded, WAIT)

    assert await tools.wait_for(lambda: broker.message_count(queue) == 3, WAIT)


@pytest_twisted.ensureDeferred
async def test_producer_failures_reach_the_returned_deferred(components, names, broker,
                                                             tools, log_events):
    exchange = names.exchange("nobody-bound")
    broker.declare_exchange(exchange)
    producer = facade_producer(components, names, eks=[(exchange, "k")])

    for d in (producer.message_hello(_mandatory=True), producer.send("hello", _mandatory=True),
              producer.message(1, _mandatory=True),
              producer.forward(messaging.MessageCommand("x").body, _mandatory=True)):
        assert isinstance(d, defer.Deferred)
        with pytest.raises(messaging.UnroutableError):
            await tools.within(d, WAIT)
    with pytest.raises(messaging.EncodeError):
        await producer.message_hello(thing=object())

    closed = producer.close()
    assert isinstance(closed, defer.Deferred)
    await tools.within(closed, WAIT)
    assert not log_events.matching("Unhandled error in Deferred")


@pytest_twisted.ensureDeferred
async def test_rpc_returns_a_deferred_of_the_result(components, names, tools):
    Exchange = names.exchange_class()  # noqa: N806

    class Echo(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "echo")])]

        @messaging.RpcHandler("command", "echo")
        def echo(self, content, reply_func):
            reply_func(messaging.MessageResult(content["parameters"]))

    processor = Echo(messaging.Fingerprint(names.component("echo")), hup=GUEST)
    components.add(processor.stop)
    started = processor.start()
    assert isinstance(started, defer.Deferred)
    assert await tools.within(started, WAIT) is processor
    producer = facade_producer(components, names, eks=[(Exchange, "echo")])

    reply = producer.rpc_echo("hi", _timeout=5)

    assert isinstance(reply, defer.Deferred)
    assert (await tools.within(reply, WAIT)).value == "hi"
    stopped = processor.stop()
    assert isinstance(stopped, defer.Deferred)
    await tools.within(stopped, WAIT)
    assert processor.wait(0)


@pytest_twisted.ensureDeferred
async def test_queue_bind_and_unbind_return_deferreds_and_failures_reach_them(
        components, names, tools, log_events):
    Exchange = names.exchange_class()  # noqa: N806

    class Listener(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

    processor = Listener(messaging.Fingerprint(names.component("listener")), hup=GUEST)
    components.add(processor.stop)
    await tools.within(processor.start(), WAIT)
    consumed = processor.consumer.queues[0]

    bound = processor.consumer.queue_bind(Exchange, consumed, "extra")
    assert isinstance(bound, defer.Deferred)
    await tools.within(bound, WAIT)
    unbound = processor.consumer.queue_unbind(Exchange, consumed, "extra")
    assert isinstance(unbound, defer.Deferred)
    await tools.within(unbound, WAIT)
    refused = processor.consumer.queue_bind(names.exchange("missing"), consumed, "k")

    with pytest.raises(Exception, match="NOT_FOUND"):
        await tools.within(refused, WAIT)
    assert not log_events.matching("Unhandled error in Deferred")
