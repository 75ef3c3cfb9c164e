"""Testing a postage.twisted component with pytest and pytest-twisted, on a real broker."""

import uuid

import pytest_twisted
from twisted.internet import task

from postage import Exchange, MessageResult, RpcHandler
from postage.twisted import GenericProducer, MessageProcessor


class HowtoExchange(Exchange):
    name = f"postage-howto-tests-{uuid.uuid4().hex[:8]}"  # this run's own
    durable = False
    auto_delete = True  # gone with the last queue bound to it


class Counter(MessageProcessor):
    @RpcHandler("command", "count")
    async def count(self, content, reply_func):
        await task.deferLater(self.reactor, 0.01)  # waits on the reactor, never blocks it
        reply_func(MessageResult(len(content["parameters"])))

    @RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]))


def on_a_queue_of_its_own(component):
    """The component class, reading a queue (and key) that only this test uses."""
    key = f"test-{uuid.uuid4().hex}"

    class UnderTest(component):
        eqk = [(HowtoExchange, [({"name": key, "flags": {"auto_delete": True}}, key)])]

    return UnderTest, key


def test_echo_answers_what_it_was_sent():
    replies = []
    Counter.echo(None, {"parameters": [1, 2]}, replies.append)
    assert replies == [MessageResult([1, 2])]


@pytest_twisted.inlineCallbacks
def test_count_answers_through_the_broker():
    component, key = on_a_queue_of_its_own(Counter)
    processor = component({"name": "counter-under-test"})
    yield processor.start()  # fires once its queue is consumed: no call can miss it
    producer = GenericProducer(eks=[(HowtoExchange, key)])
    try:
        reply = yield producer.rpc_count([1, 2, 3], _timeout=5, _max_retry=0)
    finally:
        yield producer.close()
        yield processor.stop()
    assert (type(reply), reply.value) == (MessageResult, 3)
