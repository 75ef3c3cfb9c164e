"""GenericProducer on Twisted against the real broker: routing (eks, _key, _eks), the
fingerprint in every message, message_NAME / build_message_NAME, message(), forward(),
publisher confirms, unroutable and failed publishes, options and unknown attributes."""

import json

import pytest
import pytest_twisted

from postage import (
    EncodeError,
    Fingerprint,
    Message,
    MessageCommand,
    MessageStatus,
    PostageError,
    UnroutableError,
    decode_envelope,
)
from postage.twisted import GenericProducer

FAST = 5


def bound_queue(broker, names, exchange, key, label="q"):
    """A queue of the test's own, bound to ``exchange`` (a name) with ``key``."""
    queue = broker.declare_queue(names.queue(label))
    broker.bind(queue, exchange, key)
    return queue


def received(broker, queue):
    """The decoded envelope of the next message in ``queue`` (the publish was confirmed,
    so it is there)."""
    got = broker.get(queue)
    assert got is not None, f"nothing in {queue}"
    return decode_envelope(got[2])


@pytest_twisted.inlineCallbacks
def test_eks_with_an_exchange_class_declares_it_and_routes_there(components, names, broker):
    exchange = names.exchange_class()
    producer = components.producer(eks=[(exchange, "ping")])
    yield producer.ready
    assert broker.exchange_exists(exchange.name)
    queue = bound_queue(broker, names, exchange.name, "ping")
    yield producer.message_ping()
    assert received(broker, queue)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_eks_with_an_exchange_name_routes_to_an_existing_exchange(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    queue = bound_queue(broker, names, exchange, "ping")
    producer = components.producer(eks=[(exchange, "ping")])
    yield producer.message_ping()
    assert received(broker, queue)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_eks_as_a_class_attribute(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    queue = bound_queue(broker, names, exchange, "ping")

    class PingProducer(GenericProducer):
        eks = [(exchange, "ping")]

    producer = components.producer(PingProducer)
    yield producer.message_ping()
    assert received(broker, queue)["type"] == "command"


@pytest_twisted.inlineCallbacks
def test_fingerprint_is_merged_into_each_message(components, names, broker):
    queue = broker.declare_queue(names.queue())
    fingerprint = Fingerprint(name=names.component("fp"), type="tester")
    producer = components.producer(fingerprint=fingerprint)
    yield producer.message_one(_key=queue)
    yield producer.message(1, _key=queue)
    assert received(broker, queue)["fingerprint"] == fingerprint.as_dict()
    assert received(broker, queue)["fingerprint"] == fingerprint.as_dict()


@pytest_twisted.inlineCallbacks
def test_message_name_without_builder_sends_keywords_as_parameters(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message_resize(width=3, height=4, _key=queue)
    body = received(broker, queue)
    assert (body["type"], body["name"], body["category"]) == ("command", "resize", "message")
    assert body["content"] == {"parameters": {"width": 3, "height": 4}}
    assert body["version"] == 2


@pytest_twisted.inlineCallbacks
def test_message_name_without_builder_sends_one_positional_value_as_parameters(
        components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message_resize([3, 4], _key=queue)
    assert received(broker, queue)["content"] == {"parameters": [3, 4]}


@pytest_twisted.inlineCallbacks
def test_message_name_with_builder_sends_what_the_builder_built(components, names, broker):
    queue = broker.declare_queue(names.queue())
    seen = []

    class StatusProducer(GenericProducer):
        def build_message_status(self, status, **kwds):
            seen.append((status, kwds))
            return MessageStatus(status)

    producer = components.producer(StatusProducer)
    yield producer.message_status("online", extra=1, _key=queue, _mandatory=True)
    body = received(broker, queue)
    assert (body["type"], body["name"], body["content"]) == ("status", "online", {})
    assert seen == [("online", {"extra": 1})]  # the builder never sees the _options


@pytest_twisted.inlineCallbacks
def test_key_routes_to_the_default_exchange_with_that_key(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    default_queue = bound_queue(broker, names, exchange, "default", "default")
    other_queue = bound_queue(broker, names, exchange, "other", "other")
    producer = components.producer(eks=[(exchange, "default")])
    yield producer.message_ping(_key="other")
    assert received(broker, other_queue)["name"] == "ping"
    assert broker.get(default_queue) is None


@pytest_twisted.inlineCallbacks
def test_key_without_eks_goes_straight_to_the_queue_of_that_name(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message_ping(_key=queue)
    assert received(broker, queue)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_eks_option_as_a_list_sends_to_every_pair(components, names, broker):
    first = names.exchange_class("first")
    second = broker.declare_exchange(names.exchange("second"))
    broker.channel.exchange_declare(**first.parameters)  # to bind before the producer sends
    producer = components.producer()
    queue_a = bound_queue(broker, names, first.name, "a", "a")
    queue_b = bound_queue(broker, names, second, "b", "b")
    yield producer.message_ping(_eks=[(first, "a"), (second, "b")])
    assert received(broker, queue_a)["name"] == "ping"
    assert received(broker, queue_b)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_eks_option_as_a_dict_sends_to_every_exchange(components, names, broker):
    first = broker.declare_exchange(names.exchange("first"))
    second = broker.declare_exchange(names.exchange("second"))
    queue_a = bound_queue(broker, names, first, "a", "a")
    queue_b = bound_queue(broker, names, second, "b", "b")
    producer = components.producer()
    yield producer.message_ping(_eks={first: "a", second: "b"})
    assert received(broker, queue_a)["name"] == "ping"
    assert received(broker, queue_b)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_eks_option_wins_over_key(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    by_key = bound_queue(broker, names, exchange, "by-key", "by-key")
    by_eks = bound_queue(broker, names, exchange, "by-eks", "by-eks")
    producer = components.producer(eks=[(exchange, "default")])
    yield producer.message_ping(_key="by-key", _eks=[(exchange, "by-eks")])
    assert received(broker, by_eks)["name"] == "ping"
    assert broker.get(by_key) is None


@pytest_twisted.inlineCallbacks
def test_message_sends_a_plain_message_with_args_and_keywords(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message(1, "str", values={1, 2, 3, "numbers"}, _key=queue)
    body = received(broker, queue)
    assert (body["type"], body["name"], body["category"]) == ("none", "none", "message")
    assert body["content"]["args"] == [1, "str"]
    assert sorted(map(str, body["content"]["kwds"]["values"])) == ["1", "2", "3", "numbers"]


@pytest_twisted.inlineCallbacks
def test_forward_resends_a_decoded_body_as_it_is(components, names, broker):
    queue = broker.declare_queue(names.queue())
    original = MessageCommand("reboot", {"now": True})
    original.fingerprint = Fingerprint(name="somebody-else").as_dict()
    producer = components.producer()
    yield producer.forward(original.body, _key=queue)
    assert received(broker, queue) == original.body


@pytest_twisted.inlineCallbacks
def test_publish_fires_only_after_the_broker_confirmed_it(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    publish = producer.message_ping(_key=queue)
    assert not publish.called  # nothing has been confirmed yet: the reactor has not run
    yield publish
    assert broker.message_count(queue) == 1


@pytest_twisted.inlineCallbacks
def test_without_confirms_a_publish_fires_at_once(components, names, broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer(confirm=False)
    yield producer.ready
    publish = producer.message_ping(_key=queue)
    assert publish.called
    yield publish
    yield tools.wait_for(lambda: broker.message_count(queue) == 1, what="the message")


@pytest_twisted.inlineCallbacks
def test_many_confirmed_publishes_all_fire(components, names, broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer(max_unconfirmed=50)
    yield producer.ready
    from twisted.internet import defer

    yield defer.gatherResults([producer.message_n(i, _key=queue) for i in range(500)])
    assert broker.message_count(queue) == 500


@pytest_twisted.inlineCallbacks
def test_mandatory_unroutable_message_errbacks_unroutable_error(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    producer = components.producer(eks=[(exchange, "nobody")])
    with pytest.raises(UnroutableError):
        yield producer.message_ping(_mandatory=True)


@pytest_twisted.inlineCallbacks
def test_mandatory_knob_makes_every_message_mandatory(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    producer = components.producer(eks=[(exchange, "nobody")], mandatory=True)
    with pytest.raises(UnroutableError):
        yield producer.message_ping()


@pytest_twisted.inlineCallbacks
def test_unroutable_message_without_mandatory_is_confirmed(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    producer = components.producer(eks=[(exchange, "nobody")])
    result = yield producer.message_ping()
    assert result is None


@pytest_twisted.inlineCallbacks
def test_routable_mandatory_message_is_confirmed(components, names, broker):
    exchange = broker.declare_exchange(names.exchange())
    queue = bound_queue(broker, names, exchange, "k")
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_ping(_mandatory=True)
    assert received(broker, queue)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_publish_to_a_missing_exchange_fails_clearly(components, names, tools):
    missing = names.exchange("missing")
    producer = components.producer()
    yield producer.ready
    with pytest.raises(PostageError) as raised:
        yield tools.within(producer.message_ping(_eks=[(missing, "k")]), FAST)
    assert "NOT_FOUND" in str(raised.value) or missing in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_producer_keeps_working_after_a_publish_to_a_missing_exchange(components, names,
                                                                     broker, tools):
    missing = names.exchange("missing")
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    with pytest.raises(PostageError):
        yield tools.within(producer.message_ping(_eks=[(missing, "k")]), FAST)
    yield tools.within(producer.message_pong(_key=queue), FAST)
    assert received(broker, queue)["name"] == "pong"


@pytest_twisted.inlineCallbacks
def test_producer_with_an_exchange_class_keeps_working_after_a_failed_publish(
        components, names, broker, tools):
    """After the broker closed the channel, the producer's own exchange is declared again
    on the new channel and messages flow to it."""
    exchange = names.exchange_class()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.ready
    queue = bound_queue(broker, names, exchange.name, "k")
    with pytest.raises(PostageError):
        yield tools.within(producer.message_ping(_eks=[(names.exchange("missing"), "k")]), FAST)
    yield tools.within(producer.message_pong(), FAST)
    assert received(broker, queue)["name"] == "pong"


@pytest_twisted.inlineCallbacks
def test_options_never_become_parameters(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message_ping(value=1, _key=queue, _mandatory=False, _timeout=3,
                                _max_retry=1)
    assert received(broker, queue)["content"] == {"parameters": {"value": 1}}


@pytest_twisted.inlineCallbacks
def test_options_never_become_message_keywords(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message(value=1, _key=queue)
    assert received(broker, queue)["content"] == {"kwds": {"value": 1}}


def test_unknown_attribute_raises_attribute_error(components):
    producer = components.producer(connect_timeout=1)
    with pytest.raises(AttributeError):
        producer.not_a_method  # noqa: B018
    with pytest.raises(AttributeError):
        producer.message_  # noqa: B018
    with pytest.raises(AttributeError):
        producer.rpc_  # noqa: B018
    assert not hasattr(producer, "build_message_ping")


@pytest_twisted.inlineCallbacks
def test_encode_error_errbacks_before_anything_is_published(components, names, broker,
                                                            tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    publish = producer.message_ping(what=object(), _key=queue)
    assert publish.called  # failed at once, locally
    with pytest.raises(EncodeError):
        yield publish
    yield producer.message_sentinel(_key=queue)
    assert received(broker, queue)["name"] == "sentinel"  # the bad one never went out


@pytest_twisted.inlineCallbacks
def test_encode_error_in_a_plain_message_errbacks(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    with pytest.raises(EncodeError):
        yield producer.message(b"bytes are not JSON", _key=queue)


@pytest_twisted.inlineCallbacks
def test_a_producer_with_no_destination_errbacks(components):
    producer = components.producer()
    with pytest.raises(ValueError):
        yield producer.message_ping()


@pytest_twisted.inlineCallbacks
def test_routing_key_knob_sends_to_the_queue_of_that_name(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer(routing_key=queue)
    yield producer.message_ping()
    assert received(broker, queue)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_messages_carry_the_json_content_type(components, names, broker):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.message_ping(_key=queue)
    _method, properties, body = broker.get(queue)
    assert properties.content_type == "application/json"
    assert json.loads(body)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_ready_fires_with_the_producer_every_time(components):
    producer = components.producer()
    first = yield producer.ready
    second = yield producer.ready
    assert first is producer and second is producer


@pytest_twisted.inlineCallbacks
def test_a_plain_message_object_can_be_built(components, names, broker):
    """build_message_NAME may return any Message, e.g. a plain one."""
    queue = broker.declare_queue(names.queue())

    class Plain(GenericProducer):
        def build_message_hello(self, who):
            return Message(who)

    producer = components.producer(Plain)
    yield producer.message_hello("world", _key=queue)
    assert received(broker, queue)["content"] == {"args": ["world"]}


@pytest_twisted.inlineCallbacks
def test_a_nacked_publish_errbacks_nack_error(components, names, broker):
    from postage import NackError

    queue = broker.declare_queue(names.queue("full"), arguments={
        "x-max-length": 0, "x-overflow": "reject-publish"})
    producer = components.producer()
    with pytest.raises(NackError):
        yield producer.message_ping(_key=queue)


@pytest_twisted.inlineCallbacks
def test_a_publish_to_many_targets_errbacks_when_one_is_unroutable(components, names,
                                                                   broker):
    exchange = broker.declare_exchange(names.exchange())
    queue = bound_queue(broker, names, exchange, "routed")
    producer = components.producer()
    with pytest.raises(UnroutableError):
        yield producer.message_ping(_eks=[(exchange, "routed"), (exchange, "nowhere")],
                                    _mandatory=True)
    assert received(broker, queue)["name"] == "ping"  # the routable one went out



@pytest_twisted.inlineCallbacks
def test_publishes_made_while_the_channel_is_reopened_wait_for_it(components, names, broker,
                                                                  tools):
    exchange = names.exchange_class()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.ready
    queue = bound_queue(broker, names, exchange.name, "k")
    with pytest.raises(PostageError):
        yield tools.within(producer.message_ping(_eks=[(names.exchange("missing"), "k")]), FAST)
    # The failure reached us from inside the producer's channel-closed handling; the test
    # checks that the producer is reopening its channel now (the publisher has none), or
    # it would test nothing.
    assert producer._publisher.channel is None, "the channel is open again already"
    publish = producer.message_pong()
    assert not publish.called  # made while the channel is reopened: it waits
    yield tools.within(publish, FAST)
    assert producer._publisher.channel is not None
    assert received(broker, queue)["name"] == "pong"
