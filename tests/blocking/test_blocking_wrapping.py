"""The facade holds Twisted objects instead of being one: what a 3.0.3 subclass declares
(builders, class-attribute knobs, ``consumer_class``, the built-in ``restart``) still reaches
them, and their data reads through the facade."""

from __future__ import annotations

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking

WAIT = 10


def test_build_rpc_name_of_a_producer_subclass_makes_the_request(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Echo(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "echo")
        def echo(self, content, reply_func):
            reply_func(messaging.MessageResult(content["parameters"]))

    class Caller(messaging.GenericProducer):
        eks = [(Exchange, "k")]

        def build_rpc_shout(self, word):
            return messaging.RpcCommand("echo", {"word": word.upper()})

    make.processor(Echo)

    reply = make.producer(Caller).rpc_shout("hi", _timeout=WAIT)

    assert reply.value == {"word": "HI"}


def test_class_attribute_knobs_reach_the_twisted_producer(make, names, admin):
    exchange = names.exchange()
    admin.declare_exchange(exchange)

    class Producer(messaging.GenericProducer):
        eks = [(exchange, "k")]
        rpc_timeout = 7
        max_retry = 2
        rpc_reply_to = "exclusive"

    producer = make.producer(Producer, max_retry=1)

    assert (producer.rpc_timeout, producer.max_retry, producer.rpc_reply_to) == (
        7, 1, "exclusive")
    assert producer.eks == [(exchange, "k")]
    assert producer.fingerprint["name"] == names.component("producer")


def test_consumer_class_and_its_knobs_are_used_by_the_processor():
    class Encoder(messaging.JsonEncoder):
        pass

    class Consumer(messaging.GenericConsumer):
        encoder_class = Encoder

    class Processor(messaging.MessageProcessor):
        eqk = []
        consumer_class = Consumer
        prefetch_count = 3
        stop_timeout = 5

    processor = Processor()

    assert isinstance(processor.consumer, Consumer)
    assert isinstance(processor.consumer.encoder, Encoder)
    assert isinstance(processor.encoder, Encoder)  # what the processor decodes with
    assert processor.consumer.prefetch_count == 3
    assert processor.stop_timeout == 5


def test_methods_of_the_twisted_object_are_not_reachable_through_the_facade(make):
    producer = make.producer()

    with pytest.raises(AttributeError):
        producer.ready  # noqa: B018 - a Deferred property, for the reactor thread only


def test_builtin_restart_reexecutes_a_facade_component(run_script, names):
    exchange, queue = names.exchange(), names.queue()
    marker = names.component("restarted")
    done = run_script(f"""
        import os, sys
        from postage import messaging

        HUP = {{"host": "127.0.0.1", "user": "guest", "password": "guest"}}

        class TestExchange(messaging.Exchange):
            name = {exchange!r}
            exchange_type = "direct"
            durable = False
            auto_delete = True

        class Component(messaging.MessageProcessor):
            eqk = [(TestExchange, [({{"name": {queue!r}, "flags": {{"auto_delete": True}}}},
                                    "k")])]

        if os.environ.get({marker!r}):
            print("run 2", flush=True)
            sys.exit(0)
        os.environ[{marker!r}] = "1"  # inherited by the re-executed program
        print("run 1", flush=True)
        component = Component(messaging.Fingerprint("restarting"), hup=HUP)
        component.start()
        messaging.GenericProducer(eks=[(TestExchange, "k")], hup=HUP).message_restart()
        scheduler = messaging.MicroScheduler()
        scheduler.add_microthread(component)
        scheduler.run()  # ends once the component stopped for the restart
        print("scheduler ended", component.wait(0), flush=True)
        # then the program runs again, when this one exits
    """, timeout=40)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["run 1", "scheduler ended True", "run 2"]


def test_an_rpc_without_handler_names_the_facade_class(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Lonely(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

    make.processor(Lonely)

    reply = make.producer(eks=[(Exchange, "k")]).rpc_missing(_timeout=WAIT)

    assert isinstance(reply, messaging.MessageResultError)
    assert reply.message == "no handler for command/missing in Lonely"


def test_the_knobs_the_facade_forwards_are_those_the_twisted_classes_take():
    # A public data attribute added to a Twisted class is read as a knob by the facade
    # (a subclass setting it forwards it): it must then be one the constructor takes.
    from postage.twisted import consumer, producer  # noqa: PLC0415

    assert messaging._knobs_of(producer.GenericProducer) - {"hup", "vhost"} == set(
        producer._KNOBS)
    assert messaging._knobs_of(consumer.GenericConsumer) - {"hup", "vhost"} == set(
        consumer._KNOBS)
