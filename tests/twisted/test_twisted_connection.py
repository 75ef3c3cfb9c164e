"""Connections: from the settings (HUP dict, vhost, environment), clear errors within
seconds for a wrong password, a missing vhost or a refused port; a lost connection is
made again, with what waited sent then, and what cannot wait ending with a clear error."""

import time
import uuid

import pika
import pytest
import pytest_twisted
from twisted.internet import defer

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


# ---- connection loss: reconnection ---------------------------------------------------

class Echo:
    """An echo processor class, made here so the module imports no processor at load."""

    @staticmethod
    def make(seen=None):
        """``seen``, when given, gets the content of every request the processor answers."""
        from postage import MessageResult, RpcHandler
        from postage.twisted import MessageProcessor

        class EchoProcessor(MessageProcessor):
            @RpcHandler("command", "echo")
            def echo(self, content, reply):
                if seen is not None:
                    seen.append(content)
                reply(MessageResult(content["parameters"]))

        return EchoProcessor


@pytest_twisted.inlineCallbacks
def test_a_producer_reconnects_after_the_broker_closed_its_connection(components, names,
                                                                      broker, tools):
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer()
    yield producer.ready
    first = producer.connection
    yield tools.close_connections(producer.fingerprint["name"])
    yield tools.within(producer.message_ping(_key=queue), FAST)
    assert producer.connection is not first and producer.connection.is_open
    assert broker.get(queue) is not None


@pytest_twisted.inlineCallbacks
def test_a_publish_awaiting_its_confirm_is_sent_again_after_a_reconnect(components, names,
                                                                       broker, proxy, tools):
    """At least once: the broker's confirm was lost with the connection, so the message
    goes out again on the new one and the publish fires then."""
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    proxy.pause()  # the broker's confirm never reaches the producer
    publish = producer.message_ping(_key=queue)
    # The broker has the message, so it has confirmed it: only the paused proxy holds the
    # confirm back (a publish that fired now would not have waited for its confirm).
    yield tools.wait_for(lambda: broker.message_count(queue) == 1, what="the message")
    assert not publish.called
    proxy.cut()
    yield tools.within(publish, FAST)
    count = yield tools.wait_for(lambda: broker.message_count(queue), what="the message")
    assert count in (1, 2)  # once, or twice when the first copy had reached the queue


@pytest_twisted.inlineCallbacks
def test_publishes_wait_while_the_broker_is_unreachable(components, names, broker, proxy,
                                                       tools):
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    proxy.refusing = True
    proxy.cut()
    publish = producer.message_ping(_key=queue)
    # Two reconnection attempts refused, and the publish still waits for the next one.
    yield tools.wait_for(lambda: proxy.refused >= 2, timeout=10, what="two failed attempts")
    assert not publish.called
    proxy.refusing = False
    yield tools.within(publish, 10)
    assert broker.get(queue) is not None


@pytest_twisted.inlineCallbacks
def test_a_publish_beyond_max_waiting_fails_while_the_broker_is_unreachable(
        components, names, broker, proxy, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer(hup=proxy.hup, max_waiting=2)
    yield producer.ready
    proxy.refusing = True
    proxy.cut()
    yield tools.wait_for(lambda: producer.connection is None
                         or not producer.connection.is_open, what="the loss")
    waiting = [producer.message_ping(_key=queue) for _ in range(2)]
    with pytest.raises(BrokerConnectionError):
        yield tools.within(producer.message_ping(_key=queue), FAST)
    assert not any(d.called for d in waiting)
    proxy.refusing = False
    yield tools.within(defer.gatherResults(waiting), 10)


@pytest_twisted.inlineCallbacks
def test_an_rpc_in_flight_is_answered_after_a_reconnect(components, names, proxy, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    answered = []
    server = components.processor(Echo.make(answered), eqk=[(exchange, [(queue, "echo")])])
    yield tools.within(server.start(), FAST)
    producer = components.producer(hup=proxy.hup, eks=[(exchange, "echo")])
    yield producer.ready
    proxy.pause()  # the request goes out; its reply cannot come back on this connection
    call = producer.rpc_echo("still there?", _timeout=0.5, _max_retry=10)
    yield tools.wait_for(lambda: answered, what="the server's answer")  # lost in the proxy
    assert not call.called
    proxy.cut()
    result = yield tools.within(call, 10)
    assert result.value == "still there?"


@pytest_twisted.inlineCallbacks
def test_an_rpc_ends_with_broker_connection_error_when_the_broker_stays_unreachable(
        components, names, broker, proxy, tools):
    queue = broker.declare_queue(names.queue("nobody-answers"))
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    proxy.refusing = True
    proxy.cut()
    result = yield tools.within(producer.rpc_echo(_key=queue, _timeout=0.3, _max_retry=1),
                                FAST)
    assert isinstance(result, MessageResultException)
    assert result.value == "BrokerConnectionError"


@pytest_twisted.inlineCallbacks
def test_a_processor_consumes_again_after_the_broker_closed_its_connection(
        components, names, broker, tools):
    """Consumers provably resume: the topology is declared again and deliveries flow."""
    exchange = names.exchange_class()
    queue = names.queue()
    server = components.processor(Echo.make(), eqk=[(exchange, [(queue, "echo")])])
    yield tools.within(server.start(), FAST)
    yield tools.close_connections(server.fingerprint["name"])
    producer = components.producer(eks=[(exchange, "echo")])
    result = yield tools.within(producer.rpc_echo("again", _timeout=0.5, _max_retry=10), 10)
    assert result.value == "again"
    assert not server.when_stopped().called


@pytest_twisted.inlineCallbacks
def test_a_processor_cut_off_from_the_broker_resumes_with_its_exclusive_queue(
        components, names, broker, proxy, tools):
    """The exclusive queue died with the connection; the reconnection declares it again."""
    exchange = names.exchange_class()
    queue = {"name": names.queue(), "flags": {"exclusive": True}}
    server = components.processor(Echo.make(), hup=proxy.hup, eqk=[(exchange, [(queue, "e")])])
    yield tools.within(server.start(), FAST)
    first = server.consumer.connection
    proxy.cut()

    def consumed_again():  # (a passive declare of another's exclusive queue is refused)
        connection = server.consumer.connection
        return connection is not first and server.consumer.consuming

    yield tools.wait_for(consumed_again, what="the processor to consume again")
    producer = components.producer(eks=[(exchange, "e")])
    result = yield tools.within(producer.rpc_echo(1, _timeout=0.5, _max_retry=10), 10)
    assert result.value == 1


@pytest_twisted.inlineCallbacks
def test_a_publish_on_a_closed_producer_errbacks(components, names, broker, tools):
    queue = broker.declare_queue(names.queue())
    producer = components.producer()
    yield producer.ready
    yield producer.close()
    with pytest.raises(BrokerConnectionError):
        yield tools.within(producer.message_ping(_key=queue), FAST)


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
    outcome = []
    try:
        yield tools.within(starting, FAST)
        outcome.append("started")
    except BrokerConnectionError:
        outcome.append("stopped first")  # fine, as long as nothing is left open
    assert outcome in (["started"], ["stopped first"])  # start() ended, one way or the other
    pids = yield tools.wait_for(
        lambda: tools.connection_pids(processor.fingerprint["name"]).addCallback(
            lambda found: ["none"] if found == [] else None),
        timeout=3, interval=0.3, what="no connection")
    assert pids == ["none"]


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
