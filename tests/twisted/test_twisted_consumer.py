"""GenericConsumer (and the processor's use of it): eqk with queue names and flag dicts,
dead-lettering, queue_bind / queue_unbind at run time, prefetch, and acks that wait for the
handlers to finish."""

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import MessageCommand, MessageHandler, UnroutableError
from postage.twisted import GenericConsumer, MessageProcessor

FAST = 5


class Deliveries:
    """An ``on_delivery`` callback that acks and keeps each decoded body."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.bodies = []

    def __call__(self, delivery):
        self.bodies.append((delivery.routing_key, json.loads(delivery.body)))
        assert delivery.ack()


def command(name, **parameters):
    return json.dumps(MessageCommand(name, parameters).body)


@pytest_twisted.inlineCallbacks
def test_eqk_declares_the_exchange_queues_and_bindings(components, names, broker, tools):
    exchange = names.exchange_class()
    first, second = names.queue("first"), names.queue("second")
    consumer = components.consumer(eqk=[(exchange, [(first, "k1"), (second, "k2")])])
    deliveries = Deliveries(consumer)
    yield tools.within(consumer.start(deliveries), FAST)
    assert broker.exchange_exists(exchange.name)
    assert consumer.queues == [first, second]
    broker.publish(exchange.name, "k1", command("one"))
    broker.publish(exchange.name, "k2", command("two"))
    yield tools.wait_for(lambda: len(deliveries.bodies) == 2, what="two deliveries")
    assert sorted((key, body["name"]) for key, body in deliveries.bodies) == [
        ("k1", "one"), ("k2", "two")]


@pytest_twisted.inlineCallbacks
def test_eqk_queue_by_name_uses_pikas_defaults(components, names, tools):
    queue = names.queue()
    consumer = components.consumer(eqk=[(names.exchange_class(), [(queue, "k")])])
    yield tools.within(consumer.start(Deliveries(consumer)), FAST)
    out = yield tools.rabbitmqctl("list_queues", "name", "durable", "auto_delete", "exclusive")
    assert f"{queue}\tfalse\tfalse\tfalse" in out.splitlines()


@pytest_twisted.inlineCallbacks
def test_eqk_queue_flags_go_to_queue_declare(components, names, tools):
    queue = names.queue()
    flags = {"auto_delete": True, "arguments": {"x-max-length": 7}}
    consumer = components.consumer(eqk=[(names.exchange_class(), [(
        {"name": queue, "flags": flags}, "k")])])
    yield tools.within(consumer.start(Deliveries(consumer)), FAST)
    out = yield tools.rabbitmqctl("list_queues", "name", "auto_delete", "arguments")
    line = next(line for line in out.splitlines() if line.startswith(queue + "\t"))
    assert "\ttrue\t" in line
    assert "x-max-length" in line and "7" in line


@pytest_twisted.inlineCallbacks
def test_eqk_exchange_given_by_name_is_not_declared(components, names, tools):
    missing = names.exchange("never-declared")
    consumer = components.consumer(eqk=[(missing, [(names.queue(), "k")])])
    with pytest.raises(Exception, match="NOT_FOUND"):
        yield tools.within(consumer.start(Deliveries(consumer)), FAST)


@pytest_twisted.inlineCallbacks
def test_eqk_exchange_given_by_name_is_bound(components, names, broker, tools):
    exchange = broker.declare_exchange(names.exchange())
    consumer = components.consumer(eqk=[(exchange, [(names.queue(), "k")])])
    deliveries = Deliveries(consumer)
    yield tools.within(consumer.start(deliveries), FAST)
    broker.publish(exchange, "k", command("hello"))
    yield tools.wait_for(lambda: deliveries.bodies, what="the delivery")
    assert deliveries.bodies[0][1]["name"] == "hello"


class Recorder(MessageProcessor):
    """Keeps the content of every ``note`` command."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.notes = []

    @MessageHandler("command", "note")
    def note(self, content):
        self.notes.append(content["parameters"])


@pytest_twisted.inlineCallbacks
def test_malformed_message_lands_in_the_dead_letter_queue(components, names, broker, tools):
    dlx = broker.declare_exchange(names.exchange("dlx"), "fanout")
    dead = broker.declare_queue(names.queue("dead"))
    broker.bind(dead, dlx, "")
    exchange = names.exchange_class()
    flags = {"auto_delete": True, "arguments": {"x-dead-letter-exchange": dlx}}
    processor = components.processor(Recorder, eqk=[(exchange, [(
        {"name": names.queue("work"), "flags": flags}, "k")])])
    yield tools.within(processor.start(), FAST)
    broker.publish(exchange.name, "k", b"{not json", content_type="application/json")
    got = yield tools.wait_for(lambda: broker.get(dead), what="the dead letter")
    assert got[2] == b"{not json"
    assert got[1].headers["x-death"][0]["reason"] == "rejected"


@pytest_twisted.inlineCallbacks
def test_queue_bind_on_a_running_consumer_consumes_the_new_queue(components, names, broker,
                                                                tools):
    exchange = names.exchange_class()
    processor = components.processor(Recorder, eqk=[(exchange, [(names.queue("a"), "a")])])
    yield tools.within(processor.start(), FAST)
    late = names.queue("late")
    yield tools.within(processor.consumer.queue_bind(exchange, late, "late"), FAST)
    assert broker.consumer_count(late) == 1
    broker.publish(exchange.name, "late", command("note", via="late"))
    yield tools.wait_for(lambda: processor.notes, what="the note")
    assert processor.notes == [{"via": "late"}]


@pytest_twisted.inlineCallbacks
def test_queue_bind_with_flags_at_run_time(components, names, broker, tools):
    exchange = names.exchange_class()
    processor = components.processor(Recorder, eqk=[(exchange, [(names.queue("a"), "a")])])
    yield tools.within(processor.start(), FAST)
    late = names.queue("late")
    yield processor.consumer.queue_bind(
        exchange, {"name": late, "flags": {"auto_delete": True}}, "late")
    out = yield tools.rabbitmqctl("list_queues", "name", "auto_delete")
    assert f"{late}\ttrue" in out.splitlines()


@pytest_twisted.inlineCallbacks
def test_queue_bind_adds_a_key_to_a_consumed_queue(components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Recorder, eqk=[(exchange, [(queue, "a")])])
    yield tools.within(processor.start(), FAST)
    yield processor.consumer.queue_bind(exchange, queue, "b")
    assert broker.consumer_count(queue) == 1  # still one consumer on it
    broker.publish(exchange.name, "b", command("note", via="b"))
    yield tools.wait_for(lambda: processor.notes, what="the note")
    assert processor.notes == [{"via": "b"}]


@pytest_twisted.inlineCallbacks
def test_queue_bind_before_start_is_declared_at_start(components, names, broker, tools):
    exchange = names.exchange_class()
    processor = components.processor(Recorder, eqk=[(exchange, [(names.queue("a"), "a")])])
    late = names.queue("late")
    yield processor.consumer.queue_bind(exchange, late, "late")
    yield tools.within(processor.start(), FAST)
    broker.publish(exchange.name, "late", command("note", via="late"))
    yield tools.wait_for(lambda: processor.notes, what="the note")
    assert processor.notes == [{"via": "late"}]


@pytest_twisted.inlineCallbacks
def test_queue_unbind_at_run_time_stops_the_routing(components, names, broker, tools):
    exchange = broker.declare_exchange(names.exchange())  # not auto-delete: it outlives the unbind
    queue = names.queue()
    processor = components.processor(Recorder, eqk=[(exchange, [(queue, "a")])])
    yield tools.within(processor.start(), FAST)
    producer = components.producer(eks=[(exchange, "a")])
    yield producer.message_note(n=1, _mandatory=True)
    yield processor.consumer.queue_unbind(exchange, queue, "a")
    with pytest.raises(UnroutableError):
        yield producer.message_note(n=2, _mandatory=True)
    yield tools.wait_for(lambda: processor.notes, what="the first note")
    assert processor.notes == [{"n": 1}]


# ---- prefetch and acks -------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_prefetch_class_attribute_bounds_the_handlers_in_flight(components, names, broker,
                                                                tools):
    from twisted.internet import reactor, task

    class Slow(MessageProcessor):
        prefetch_count = 3

        def __init__(self, *args, **kwds):
            super().__init__(*args, **kwds)
            self.running = 0
            self.most = 0
            self.done = 0

        @MessageHandler("command", "work")
        def work(self, content):
            self.running += 1
            self.most = max(self.most, self.running)

            def finish():
                self.running -= 1
                self.done += 1

            return task.deferLater(reactor, 0.1, finish)

    exchange = names.exchange_class()
    processor = components.processor(Slow, eqk=[(exchange, [(names.queue(), "k")])])
    assert processor.consumer.prefetch_count == 3
    yield tools.within(processor.start(), FAST)
    for i in range(12):
        broker.publish(exchange.name, "k", command("work", i=i))
    yield tools.wait_for(lambda: processor.done == 12, timeout=10, what="all the work")
    assert processor.most == 3


@pytest_twisted.inlineCallbacks
def test_prefetch_constructor_keyword_bounds_the_handlers_in_flight(components, names,
                                                                   broker, tools):
    class Held(MessageProcessor):
        def __init__(self, *args, **kwds):
            super().__init__(*args, **kwds)
            self.held = []

        @MessageHandler("command", "work")
        def work(self, content):
            d = defer.Deferred()
            self.held.append(d)
            return d

    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Held, eqk=[(exchange, [(queue, "k")])],
                                     prefetch_count=2)
    yield tools.within(processor.start(), FAST)
    for i in range(5):
        broker.publish(exchange.name, "k", command("work", i=i))
    yield tools.wait_for(lambda: len(processor.held) == 2, what="two deliveries")
    # The broker's own accounting: three ready and two unacked, with a consumer on the queue;
    # a third delivery would have moved one from ready to unacked.
    counts = yield tools.wait_for(lambda: _counts_if(tools, queue, (3, 2, 1)),
                                  timeout=15, what="3 ready, 2 unacked")
    assert counts == (3, 2, 1)
    assert len(processor.held) == 2  # the broker holds the rest back
    for _ in range(5):
        yield tools.wait_for(lambda: processor.held, what="a delivery")
        assert len(processor.held) <= 2
        processor.held.pop(0).callback(None)


def _counts_if(tools, queue, expected):
    """``tools.queue_counts(queue)`` when they are ``expected``, else None."""
    return tools.queue_counts(queue).addCallback(
        lambda counts: counts if counts == expected else None)


class Waiting(MessageProcessor):
    """Handlers that finish only when the test says so."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.gate = defer.Deferred()
        self.entered = 0

    @MessageHandler("command", "deferred")
    def returns_a_deferred(self, content):
        self.entered += 1
        d = defer.Deferred()
        self.gate.addCallback(lambda _: d.callback(None))
        return d

    @MessageHandler("command", "coroutine")
    async def coroutine(self, content):
        self.entered += 1
        gate = defer.Deferred()
        self.gate.addCallback(lambda _: gate.callback(None))
        await gate


@pytest.mark.parametrize("kind", ["deferred", "coroutine"])
@pytest_twisted.inlineCallbacks
def test_ack_waits_until_the_handler_finished(kind, components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Waiting, eqk=[(exchange, [(queue, "k")])])
    yield tools.within(processor.start(), FAST)
    broker.publish(exchange.name, "k", command(kind))
    yield tools.wait_for(lambda: processor.entered == 1, what="the handler")
    yield tools.wait_for(lambda: tools.unacked_count(queue).addCallback(lambda n: n == 1),
                         timeout=10, interval=0.2, what="one unacked message")
    processor.gate.callback(None)
    yield tools.wait_for(lambda: tools.unacked_count(queue).addCallback(lambda n: n == 0),
                         timeout=10, interval=0.2, what="the ack")
    assert broker.message_count(queue) == 0


@pytest_twisted.inlineCallbacks
def test_an_unfinished_handlers_message_is_redelivered_to_another_consumer(
        components, names, broker, tools):
    """Unacked means the broker still owns it: when the processor goes away mid-handler,
    a second consumer gets the same message."""
    exchange = names.exchange_class()
    queue = names.queue()
    first = components.processor(Waiting, label="first", eqk=[(exchange, [(queue, "k")])])
    yield tools.within(first.start(), FAST)
    broker.publish(exchange.name, "k", command("deferred"))
    yield tools.wait_for(lambda: first.entered == 1, what="the first handler")
    second = components.consumer(label="second", eqk=[(exchange, [(queue, "k")])])
    seen = []

    def on_delivery(delivery):
        seen.append((delivery.redelivered, json.loads(delivery.body)["name"]))
        delivery.ack()

    yield tools.within(second.start(on_delivery), FAST)
    # The broker holds the one message unacked for the first processor, with both consumers
    # on the queue: it is not delivered to the second while that lasts.
    yield tools.wait_for(lambda: tools.queue_counts(queue).addCallback(
        lambda counts: counts == (0, 1, 2)), timeout=15, what="0 ready, 1 unacked, 2 consumers")
    assert seen == []  # the first processor still holds it
    yield tools.close_connections(first.fingerprint["name"])
    yield tools.wait_for(lambda: seen, what="the redelivery")
    assert seen == [(True, "deferred")]
    first.gate.callback(None)  # let the first one's handler end, so that it can stop


def test_consumer_rejects_unknown_options():
    with pytest.raises(TypeError):
        GenericConsumer(eqk=[], prefetch=3)


@pytest_twisted.inlineCallbacks
def test_queue_bind_at_run_time_declares_a_new_exchange_class(components, names, broker,
                                                              tools):
    processor = components.processor(Recorder, eqk=[(names.exchange_class("first"), [(
        names.queue("a"), "a")])])
    yield tools.within(processor.start(), FAST)
    second = names.exchange_class("second")
    yield processor.consumer.queue_bind(second, names.queue("b"), "b")
    assert broker.exchange_exists(second.name)
    broker.publish(second.name, "b", command("note", via="second"))
    yield tools.wait_for(lambda: processor.notes, what="the note")
    assert processor.notes == [{"via": "second"}]


@pytest_twisted.inlineCallbacks
def test_a_failed_queue_bind_errbacks_and_the_processor_keeps_consuming(components, names,
                                                                      broker, tools):
    exchange = names.exchange_class()
    processor = components.processor(Recorder, eqk=[(exchange, [(names.queue("a"), "a")])])
    yield tools.within(processor.start(), FAST)
    with pytest.raises(Exception, match="NOT_FOUND"):
        yield tools.within(processor.consumer.queue_bind(
            names.exchange("missing"), names.queue("b"), "b"), FAST)
    broker.publish(exchange.name, "a", command("note", after="the failed bind"))
    yield tools.wait_for(lambda: processor.notes, what="the note")
    assert processor.notes == [{"after": "the failed bind"}]


def collector(got):
    """A processor class that appends the parameters of each ``note`` command to ``got``."""
    from postage import MessageHandler
    from postage.twisted import MessageProcessor

    class Collector(MessageProcessor):
        @MessageHandler("command", "note")
        def note(self, content):
            got.append(content["parameters"])

    return Collector


@pytest_twisted.inlineCallbacks
def test_a_consumer_whose_channel_the_broker_closed_consumes_again(components, names, broker,
                                                                   tools):
    """A channel error (here: an ack of a delivery tag the broker never sent) closes the
    channel, not the connection; the consumer opens a new channel and goes on."""
    exchange = names.exchange_class()
    queue = names.queue()
    got = []
    processor = components.processor(collector(got), eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    first = processor.consumer.channel
    first.impl.basic_ack(424242)  # PRECONDITION_FAILED - unknown delivery tag
    yield tools.wait_for(lambda: processor.consumer.channel not in (None, first)
                         and processor.consumer.consuming, what="a new channel")
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_note(n=1)
    yield tools.wait_for(lambda: got, what="the message")
    assert got == [{"n": 1}]


@pytest_twisted.inlineCallbacks
def test_a_consumer_whose_queue_was_deleted_declares_it_again_and_consumes(
        components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    got = []
    processor = components.processor(collector(got), eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    broker.delete_queue(queue)
    yield tools.wait_for(lambda: broker.consumer_count(queue) == 1, what="the queue back")
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_note(n=2)
    yield tools.wait_for(lambda: got, what="the message")
    assert got == [{"n": 2}]
