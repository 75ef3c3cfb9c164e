"""Sending with the blocking facade's producer: ``message_NAME()`` returns once the broker has
the message; local mistakes raise before anything is published; routing options."""

from __future__ import annotations

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking


@pytest.fixture
def deaf(admin, names):
    """``(queue, exchange)``: a queue nobody consumes, bound with key ``k``."""
    queue, exchange = names.queue("deaf"), names.exchange("deaf")
    admin.declare_bound_queue(queue, exchange, "k")
    return queue, exchange


def body_of(admin, queue):
    got = admin.get_message(queue)
    assert got is not None, f"nothing in {queue}"
    return messaging.decode_envelope(got[1])


def test_message_returns_once_the_broker_has_the_message(make, deaf, admin):
    queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])

    for _ in range(5):
        producer.message_hello()

    assert admin.message_count(queue) == 5


def test_unencodable_content_raises_encode_error_and_publishes_nothing(make, deaf, admin):
    queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])

    with pytest.raises(messaging.EncodeError):
        producer.message_hello(thing=object())

    assert admin.message_count(queue) == 0


def test_mandatory_message_nobody_can_receive_raises_unroutable_error(make, names, admin):
    exchange = names.exchange("nobody-bound")
    admin.declare_exchange(exchange)
    producer = make.producer(eks=[(exchange, "k")])

    with pytest.raises(messaging.UnroutableError):
        producer.message_hello(_mandatory=True)


def test_unknown_underscore_option_raises_type_error(make, deaf):
    _queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])

    with pytest.raises(TypeError):
        producer.message_hello(_bogus=1)


def test_unknown_attribute_raises_attribute_error(make, deaf):
    _queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])

    with pytest.raises(AttributeError):
        producer.no_such_thing  # noqa: B018


def test_key_option_routes_on_the_default_exchange(make, names, admin):
    queue, exchange = names.queue("other"), names.exchange()
    admin.declare_bound_queue(queue, exchange, "other-key")
    producer = make.producer(eks=[(exchange, "k")])

    producer.message_hello(_key="other-key")

    assert body_of(admin, queue)["name"] == "hello"


def test_eks_option_wins_over_key(make, names, admin):
    queue, exchange = names.queue("there"), names.exchange("there")
    admin.declare_bound_queue(queue, exchange, "there")
    default = names.exchange("default")
    admin.declare_exchange(default)
    producer = make.producer(eks=[(default, "k")])

    producer.message_hello(_key="ignored", _eks={exchange: "there"})

    assert body_of(admin, queue)["name"] == "hello"


def test_producer_without_eks_sends_key_to_the_queue_of_that_name(make, names, admin):
    queue = names.queue("direct")
    admin.channel.queue_declare(queue)
    producer = make.producer()

    producer.message_hello(_key=queue)

    assert body_of(admin, queue)["name"] == "hello"


def test_message_carries_the_producer_fingerprint(make, deaf, admin, names):
    queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")], label="fp")

    producer.message_hello()

    assert body_of(admin, queue)["fingerprint"]["name"] == names.component("fp")


def test_forward_resends_a_decoded_body_as_it_is(make, deaf, admin):
    queue, exchange = deaf
    producer = make.producer(eks=[(exchange, "k")])
    producer.message_hello(n=1)
    body = body_of(admin, queue)

    producer.forward(body)

    assert body_of(admin, queue) == body
