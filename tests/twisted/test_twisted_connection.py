"""Connections: from the settings (HUP dict, vhost, environment), clear errors within
seconds for a wrong password, a missing vhost or a refused port, and a lost connection
ending every pending Deferred with a clear error."""

import time
import uuid

import pika
import pytest
import pytest_twisted

from postage import (
    AuthenticationError,
    BrokerConnectionError,
    MessageResultException,
    VirtualHostError,
    decode_envelope,
)
from postage.twisted.connection import connect

FAST = 5  # seconds: "within a few seconds"
GUEST = {"host": "127.0.0.1", "user": "guest", "password": "guest"}


def test_pika_version_is_supported(record_testsuite_property):
    """The suite reports the pika it ran with (in the JUnit report and in the terminal
    summary, see conftest); DESIGN.md pins >=1.4.4,<2."""
    version = tuple(int(part) for part in pika.__version__.split(".")[:3])
    record_testsuite_property("pika_version", pika.__version__)
    print(f"pika {pika.__version__}")
    assert (1, 4, 4) <= version < (2,)


def clear_env(monkeypatch):
    for var in ("POSTAGE_RMQ_URL", "POSTAGE_RMQ_HOST", "POSTAGE_RMQ_PORT", "POSTAGE_RMQ_USER",
                "POSTAGE_RMQ_PASSWORD", "POSTAGE_VHOST"):
        monkeypatch.delenv(var, raising=False)


@pytest_twisted.inlineCallbacks
def test_producer_connects_with_a_hup_dict(components, names, broker, tools):
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup={"host": "127.0.0.1", "port": 5672, "user": "guest",
                                        "password": "guest"})
    yield tools.within(producer.message_ping(_key=queue), FAST)
    assert broker.get(queue) is not None


@pytest_twisted.inlineCallbacks
def test_producer_connects_to_the_vhost_argument(components, names, vhost, tools):
    name, admin = vhost
    queue = admin.declare_queue(f"postage-test.{uuid.uuid4().hex}")
    producer = components.producer(vhost=name)
    yield tools.within(producer.message_ping(_key=queue), FAST)
    _method, _properties, body = admin.get(queue)
    assert decode_envelope(body)["name"] == "ping"


@pytest_twisted.inlineCallbacks
def test_producer_reads_the_settings_from_the_environment(monkeypatch, components, names,
                                                          vhost, tools):
    name, admin = vhost
    clear_env(monkeypatch)
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTAGE_RMQ_PORT", "5672")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "guest")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "guest")
    monkeypatch.setenv("POSTAGE_VHOST", name)
    queue = admin.declare_queue(f"postage-test.{uuid.uuid4().hex}")
    producer = components.producer(hup=None)
    yield tools.within(producer.message_ping(_key=queue), FAST)
    assert admin.get(queue) is not None


@pytest_twisted.inlineCallbacks
def test_producer_reads_the_url_from_the_environment(monkeypatch, components, names, vhost,
                                                     tools):
    name, admin = vhost
    clear_env(monkeypatch)
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://guest:guest@127.0.0.1:5672/{name}")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "not-this-one")
    queue = admin.declare_queue(f"postage-test.{uuid.uuid4().hex}")
    producer = components.producer(hup=None)
    yield tools.within(producer.message_ping(_key=queue), FAST)
    assert admin.get(queue) is not None


@pytest_twisted.inlineCallbacks
def test_wrong_password_fails_with_authentication_error(components):
    started = time.monotonic()
    producer = components.producer(hup={**GUEST, "password": "s3cret-wrong"})
    with pytest.raises(AuthenticationError) as raised:
        yield producer.ready
    assert time.monotonic() - started < FAST
    assert "s3cret-wrong" not in str(raised.value)
    assert "guest" in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_a_publish_on_a_producer_with_a_wrong_password_errbacks(components):
    producer = components.producer(hup={**GUEST, "password": "s3cret-wrong"})
    with pytest.raises(AuthenticationError):
        yield producer.message_ping(_key="anything")


@pytest_twisted.inlineCallbacks
def test_missing_vhost_fails_with_virtual_host_error(components):
    started = time.monotonic()
    producer = components.producer(vhost=f"postage-test-missing-{uuid.uuid4().hex}")
    with pytest.raises(VirtualHostError) as raised:
        yield producer.ready
    assert time.monotonic() - started < FAST
    assert "postage-test-missing" in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_refused_port_fails_with_broker_connection_error(components, free_port):
    started = time.monotonic()
    producer = components.producer(hup={**GUEST, "port": free_port})
    with pytest.raises(BrokerConnectionError) as raised:
        yield producer.ready
    assert time.monotonic() - started < FAST
    assert not isinstance(raised.value, (AuthenticationError, VirtualHostError))
    assert str(free_port) in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_connect_tries_the_next_host_when_the_first_refuses(free_port, tools):
    from postage import config

    settings = config.settings({**GUEST, "host": [f"127.0.0.1:{free_port}", "127.0.0.1:5672"]},
                               connect_timeout=FAST)
    connection = yield tools.within(connect(settings), FAST * 2)
    try:
        assert connection.is_open
    finally:
        yield connection.close()


@pytest_twisted.inlineCallbacks
def test_processor_with_a_wrong_password_fails_to_start(components):
    from postage.twisted import MessageProcessor

    processor = components.processor(MessageProcessor, eqk=[],
                                     hup={**GUEST, "password": "s3cret-wrong"})
    with pytest.raises(AuthenticationError):
        yield processor.start()


# ---- connection loss ------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_close_connection_ends_a_pending_rpc_with_broker_connection_error(components, names,
                                                                         broker, tools):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    producer = components.producer()
    yield producer.ready
    call = producer.rpc_echo(_key=queue, _timeout=30)
    yield tools.wait_for(lambda: broker.message_count(queue) == 1, what="the request")
    started = time.monotonic()
    yield tools.close_connections(producer.fingerprint["name"])
    result = yield tools.within(call, FAST)
    assert time.monotonic() - started < FAST
    assert isinstance(result, MessageResultException)
    assert result.value == "BrokerConnectionError"


@pytest_twisted.inlineCallbacks
def test_a_publish_after_the_connection_was_closed_errbacks(components, names, broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    yield tools.close_connections(producer.fingerprint["name"])
    yield tools.wait_for(lambda: not producer.connection.is_open, what="the loss")
    with pytest.raises(BrokerConnectionError):
        yield tools.within(producer.message_ping(_key=queue), FAST)


@pytest_twisted.inlineCallbacks
def test_cut_proxy_ends_a_pending_publish_with_broker_connection_error(components, names,
                                                                      broker, proxy, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    proxy.pause()  # the broker's confirm never reaches the producer
    publish = producer.message_ping(_key=queue)
    yield tools.sleep(0.1)
    assert not publish.called
    proxy.cut()
    with pytest.raises(BrokerConnectionError):
        yield tools.within(publish, FAST)


@pytest_twisted.inlineCallbacks
def test_cut_proxy_ends_a_pending_rpc_with_broker_connection_error(components, names, broker,
                                                                  proxy, tools):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    call = producer.rpc_echo(_key=queue, _timeout=30)
    yield tools.wait_for(lambda: broker.message_count(queue) == 1, what="the request")
    proxy.cut()
    result = yield tools.within(call, FAST)
    assert isinstance(result, MessageResultException)
    assert result.value == "BrokerConnectionError"


@pytest_twisted.inlineCallbacks
def test_cut_proxy_ends_a_publish_waiting_for_the_connection(components, names, broker, proxy,
                                                            tools):
    """A publish made before the connection is up waits for it; when the connection dies
    first, the publish errbacks instead of waiting forever."""
    queue = broker.declare_queue(names.queue())
    proxy.pause()
    producer = components.producer(hup=proxy.hup, connect_timeout=30)
    publish = producer.message_ping(_key=queue)
    yield tools.wait_for(lambda: proxy.pairs, what="the producer's connection")
    proxy.cut()
    with pytest.raises(BrokerConnectionError):
        yield tools.within(publish, FAST)


@pytest_twisted.inlineCallbacks
def test_cut_proxy_stops_the_processor(components, names, proxy, tools):
    from postage.twisted import MessageProcessor

    exchange = names.exchange_class()
    processor = components.processor(MessageProcessor, hup=proxy.hup,
                                     eqk=[(exchange, [(names.queue(), "k")])])
    yield tools.within(processor.start(), FAST)
    stopped = processor.when_stopped()
    proxy.cut()
    quit_requested = yield tools.within(stopped, FAST)
    assert quit_requested is False


@pytest_twisted.inlineCallbacks
def test_an_rpc_on_a_closed_producer_ends_with_broker_connection_error(components, names,
                                                                      broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    yield producer.close()
    result = yield tools.within(producer.rpc_echo(_key=queue, _timeout=30), FAST)
    assert isinstance(result, MessageResultException)
    assert result.value == "BrokerConnectionError"


@pytest_twisted.inlineCallbacks
def test_a_producer_closed_before_it_connected_leaves_no_connection(components, tools):
    producer = components.producer()
    yield producer.close()
    with pytest.raises(BrokerConnectionError):
        yield tools.within(producer.ready, FAST)
    yield tools.wait_for(lambda: tools.connection_pids(producer.fingerprint["name"]).addCallback(
        lambda pids: pids == []), timeout=3, interval=0.3, what="no connection")


@pytest_twisted.inlineCallbacks
def test_a_processor_stopped_while_starting_leaves_no_connection(components, names, tools):
    from postage.twisted import MessageProcessor

    processor = components.processor(MessageProcessor, eqk=[(names.exchange_class(), [(
        names.queue(), "k")])])
    starting = processor.start()
    yield tools.within(processor.stop(), FAST)
    try:
        yield tools.within(starting, FAST)
    except BrokerConnectionError:
        pass  # stopped before it could start: fine, as long as nothing is left open
    yield tools.wait_for(lambda: tools.connection_pids(processor.fingerprint["name"]).addCallback(
        lambda pids: pids == []), timeout=3, interval=0.3, what="no connection")


@pytest_twisted.inlineCallbacks
def test_a_processor_stopped_while_declaring_leaves_no_connection(components, names, tools):
    from postage.twisted import MessageProcessor

    processor = components.processor(MessageProcessor, eqk=[(names.exchange_class(), [(
        names.queue(), "k")])])
    starting = processor.start()
    yield tools.wait_for(lambda: processor.consumer.channel is not None, interval=0.001,
                         what="the consumer's channel")
    yield tools.within(processor.stop(), FAST)
    try:
        yield tools.within(starting, FAST)
    except Exception as error:  # noqa: BLE001 - any clear error will do; a hang would not
        assert "closing" in str(error) or isinstance(error, BrokerConnectionError)
    yield tools.wait_for(lambda: tools.connection_pids(processor.fingerprint["name"]).addCallback(
        lambda pids: pids == []), timeout=3, interval=0.3, what="no connection")
