"""The examples of the Postage 3.0.3 documentation (``seed/postage-3.0.3-README.rst``), ported
to Python 3 syntax and nothing else, run against the real broker with the blocking facade."""

from __future__ import annotations

import queue
import time

import pika
import pytest

from postage import messaging

pytestmark = pytest.mark.blocking

WAIT = 5  # seconds a handler has to receive what a test sent


# ---- the seed's code, as it is written there -------------------------------------------------

class MyExchange(messaging.Exchange):
    name = "my-custom-exchange"
    exchange_type = "topic"
    passive = False
    durable = True
    auto_delete = False


class PingExchange(messaging.Exchange):
    name = "ping-exchange"
    exchange_type = "direct"
    passive = False
    durable = True
    auto_delete = False


class PingProducer(messaging.GenericProducer):
    eks = [(PingExchange, 'ping')]

    def build_message_ping(self):
        return messaging.MessageCommand('ping', parameters={'send_time':time.time()})

# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fixed_exchange(admin):
    """Deletes a fixed-name exchange of the seed afterwards, unless it was there before."""
    existed = {}

    def track(name):
        existed.setdefault(name, admin.exchange_exists(name))
        return name

    yield track
    for name, was_there in existed.items():
        if not was_there:
            admin.delete_exchange(name)


def recorder():
    """A queue handlers put what they got in (they run in the facade's worker thread)."""
    return queue.Queue()


def test_my_exchange_parameters_are_what_exchange_declare_takes():
    parameters = MyExchange.parameters
    assert {key: parameters[key] for key in (
        "exchange", "exchange_type", "passive", "durable", "auto_delete")} == {
        "exchange": "my-custom-exchange", "exchange_type": "topic", "passive": False,
        "durable": True, "auto_delete": False}


def test_my_exchange_is_declared_by_a_producer_that_uses_it(make, admin, fixed_exchange):
    fixed_exchange(MyExchange.name)

    make.producer(eks=[(MyExchange, "a.key")])

    assert admin.exchange_exists(MyExchange.name)
    # Declaring it again with the same attributes succeeds only if they are what it has: a
    # difference closes the channel (PRECONDITION_FAILED), which pika's BlockingChannel
    # raises here. The channel is held, not looked up again: admin.channel would reopen it.
    channel = admin.channel
    channel.exchange_declare(MyExchange.name, "topic", durable=True, auto_delete=False)
    assert channel.is_open
    # ... and the check can fail: other attributes are refused, and the channel is closed.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.exchange_declare(MyExchange.name, "fanout", durable=True, auto_delete=False)
    assert not channel.is_open


def test_generic_producer_message_sends_the_set_as_a_list(make, names):
    MyExchangeCls = names.exchange_class("my", exchange_type="topic")  # noqa: N806 - the seed's
    got = recorder()

    class Listener(messaging.MessageProcessor):
        eqk = [(MyExchangeCls, [(names.auto_queue(), "a_routing_key")])]

        @messaging.MessageHandler("none", "none")
        def msg_any(self, content):
            got.put(content)

    make.processor(Listener)

    p = make.producer()
    p.message(1, "str", values={1, 2, 3, "numbers"}, _eks=[(MyExchangeCls, "a_routing_key")])

    content = got.get(timeout=WAIT)
    assert content["args"] == [1, "str"]
    values = content["kwds"]["values"]
    assert isinstance(values, list)
    assert sorted(values, key=str) == sorted([1, 2, 3, "numbers"], key=str)


def test_ping_producer_message_ping_sends_the_ping_command(make, names, fixed_exchange):
    fixed_exchange(PingExchange.name)
    got = recorder()

    class PingListener(messaging.MessageProcessor):
        eqk = [(PingExchange, [(names.auto_queue(), "ping")])]

        @messaging.MessageHandler("command", "ping")
        def msg_ping(self, content):
            got.put(content)

    make.processor(PingListener)
    before = time.time()

    p = make.producer(PingProducer)
    p.message_ping()

    content = got.get(timeout=WAIT)
    assert before <= content["parameters"]["send_time"] <= time.time()


def test_message_handler_gets_the_content_of_its_command(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler("command", "note")
        def msg_note(self, content):
            got.put(content)

    make.processor(Processor)

    make.producer(eks=[(Exchange, "k")]).message_note(text="hello", n=2)

    assert got.get(timeout=WAIT) == {"parameters": {"text": "hello", "n": 2}}


def test_quit_handler_of_the_class_runs_and_the_processor_stops(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler("command", "quit")
        def msg_goodbye(self, content):
            got.put(("goodbye", content))

    processor = make.processor(Processor)

    make.producer(eks=[(Exchange, "k")]).message_quit()

    assert got.get(timeout=WAIT) == ("goodbye", {"parameters": {}})
    assert processor.wait(WAIT)  # the built-in quit handler ran too
    assert processor.quit_requested


def test_rpc_handler_replies_with_reply_func_then_cleans_up(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    cleaned = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "add")
        def msg_add(self, content, reply_func):
            parameters = content["parameters"]
            reply_func(messaging.MessageResult(parameters["a"] + parameters["b"]))
            cleaned.put("after the reply")

    make.processor(Processor)

    reply = make.producer(eks=[(Exchange, "k")]).rpc_add(a=2, b=3, _timeout=WAIT)

    assert isinstance(reply, messaging.MessageResult)
    assert reply.value == 5
    assert cleaned.get(timeout=WAIT) == "after the reply"


def test_handler_class_gets_processor_data_and_reply_func(make, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.RpcHandler("command", "whoami")
        class WhoAmI(messaging.Handler):
            def call(self):
                self.reply_func(messaging.MessageResult({
                    "name": self.processor.fingerprint["name"],
                    "asked": self.data["parameters"]["who"]}))

    processor = make.processor(Processor, label="who")

    reply = make.producer(eks=[(Exchange, "k")]).rpc_whoami(who="me", _timeout=WAIT)

    assert reply.value == {"name": processor.fingerprint["name"], "asked": "me"}
    assert processor.fingerprint["name"] == names.component("who")


def test_message_handler_full_body_gets_the_whole_envelope(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandlerFullBody("command", "full")
        def msg_full(self, body):
            got.put(body)

    make.processor(Processor)
    producer = make.producer(eks=[(Exchange, "k")], label="sender")

    producer.message_full(x=1)

    body = got.get(timeout=WAIT)
    assert body["category"] == "message"
    assert (body["type"], body["name"]) == ("command", "full")
    assert body["version"] == 2
    assert body["content"] == {"parameters": {"x": 1}}
    assert body["fingerprint"]["name"] == names.component("sender")


def test_handler_class_under_full_body_gets_the_whole_envelope_as_data(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandlerFullBody("status", "busy")
        class Busy(messaging.Handler):
            def call(self):
                got.put((self.data, self.reply_func))

    make.processor(Processor)

    make.producer(eks=[(Exchange, "k")]).message_busy()  # no build_*: a command named busy

    class StatusProducer(messaging.GenericProducer):
        def build_message_busy(self):
            return messaging.MessageStatus("busy")

    make.producer(StatusProducer, eks=[(Exchange, "k")]).message_busy()

    # The command was queued first and handlers run in arrival order: had it reached the
    # status handler, it would be the first thing the handler got.
    data, reply_func = got.get(timeout=WAIT)
    assert (data["type"], data["name"], data["category"]) == ("status", "busy", "message")
    assert reply_func is None
    assert got.empty()


def test_seed_style_msg_quit_replaces_the_builtin_quit_handler(make, names):
    Exchange = names.exchange_class()  # noqa: N806
    got = recorder()

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler('command', 'quit')
        def msg_quit(self, content):
            got.put(content)

    processor = make.processor(Processor)

    producer = make.producer(eks=[(Exchange, "k")])
    producer.message_quit()
    assert got.get(timeout=WAIT) == {"parameters": {}}
    # The method of the same name replaced the built-in one: had the built-in quit run too,
    # consuming would have stopped, and a quit sent only now would not be handled.
    producer.message_quit(n=2)
    assert got.get(timeout=WAIT) == {"parameters": {"n": 2}}
    assert not processor.wait(0)
