"""Handlers finishing out of order on one channel: every delivery is acked once, and the
broker keeps the channel open (a multiple ack naming a tag already acked on its own would
make it close the channel: "unknown delivery tag")."""

import pytest_twisted
from twisted.internet import defer, task

from postage import MessageHandler
from postage.twisted import MessageProcessor

WAIT = 10


@pytest_twisted.ensureDeferred
async def test_out_of_order_settling_acks_every_delivery_once(components, names, broker,
                                                              tools, log_events):
    from twisted.internet import reactor  # noqa: PLC0415

    exchange, queue = names.exchange_class(), names.queue()
    done = []
    all_done: defer.Deferred[None] = defer.Deferred()

    class Uneven(MessageProcessor):
        @MessageHandler("command", "work")
        async def work(self, content):
            number = content["parameters"]["n"]
            # the first of every three is the slowest: the two after it settle first
            await task.deferLater(reactor, 0.05 if number % 3 == 0 else 0.0, lambda: None)
            done.append(number)
            if len(done) == 30:
                all_done.callback(None)

    processor = components.processor(Uneven, eqk=[(exchange, [(queue, "k")])])
    await tools.within(processor.start(), WAIT)
    producer = components.producer(eks=[(exchange, "k")])

    await tools.within(defer.gatherResults(
        [producer.message_work(n=number) for number in range(30)]), WAIT)
    await tools.within(all_done, WAIT)

    assert sorted(done) == list(range(30))
    assert await tools.wait_for(lambda: broker.message_count(queue) == 0, WAIT)
    assert await tools.wait_for(
        lambda: tools.unacked_count(queue).addCallback(lambda count: count == 0), WAIT)
    assert not log_events.matching("unknown delivery tag")
    assert processor.consumer.consuming == [queue]
