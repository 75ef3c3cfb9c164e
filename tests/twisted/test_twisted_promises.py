"""README promises of the Twisted API that need a test of their own: the publish window
(``max_unconfirmed``), a broker that blocks publishers, ``remote_control = False`` against
``restart``, ``connect_timeout`` against a peer that never speaks AMQP, a wrong password or
vhost never retried, consuming stopping first on stop, the thread handlers run on,
``POSTAGE_DEBUG_MODE`` and passwords kept out of log events and reprs.

Each test is named on docs/reference/guarantees.rst beside the promise it checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pika
import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from postage import (
    AuthenticationError,
    BrokerConnectionError,
    MessageCommand,
    MessageHandler,
    MessageResult,
    RpcHandler,
    VirtualHostError,
)
from postage.twisted import MessageProcessor

FAST = 10
SECRET = "s3cret-Pa55word"


def body(n: int) -> bytes:
    """A message body that is easy to find in the bytes a client sent."""
    return json.dumps(MessageCommand("work", {"marker": f"marker-{n:04d}"}).body).encode()


def marker(n: int) -> bytes:
    return f"marker-{n:04d}".encode()


# ---- publishing: the window, and a broker that blocks us --------------------------------------

@pytest_twisted.inlineCallbacks
def test_max_unconfirmed_publishes_go_out_and_the_next_waits_for_a_confirm(
        components, names, broker, proxy, tools):
    """With ``max_unconfirmed = 2`` and the confirms held back, two publishes go out and the
    third is not written at all until a confirm frees the window."""
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup=proxy.hup, max_unconfirmed=2)
    yield producer.ready
    proxy.pause()  # confirms stay on the broker's side of the proxy
    published = [producer.message_work(marker=f"marker-{n:04d}", _key=queue)
                 for n in range(3)]
    # The broker routed both of the window's messages; the third, had it been written in the
    # same turn as the second, would have reached the proxy with it (TCP keeps the order).
    yield tools.wait_for(lambda: broker.message_count(queue) == 2, what="two messages")
    sent = bytes(proxy.sent)
    assert marker(0) in sent and marker(1) in sent
    assert marker(2) not in sent
    assert not any(d.called for d in published)
    proxy.cut()  # the confirms are lost: the producer reconnects, sends again, then the third
    yield tools.within(defer.gatherResults(published), FAST)
    assert marker(2) in bytes(proxy.sent)
    found = set()
    while (got := broker.get(queue)) is not None:
        found.add(json.loads(got[2])["content"]["parameters"]["marker"])
    assert found == {"marker-0000", "marker-0001", "marker-0002"}


@pytest_twisted.inlineCallbacks
def test_publishes_wait_while_the_broker_blocks_the_connection(components, names, broker,
                                                               proxy):
    """A shared broker cannot be made to raise a resource alarm for one test, so the test
    hands its own producer's pika connection the very frames RabbitMQ sends then
    (``connection.blocked`` / ``connection.unblocked``), through the protocol's
    ``dataReceived``, the way bytes from the broker arrive."""
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup=proxy.hup)
    yield producer.ready
    amqp = producer.connection.protocol  # pika's TwistedProtocolConnection
    amqp.dataReceived(pika.frame.Method(0, pika.spec.Connection.Blocked("test alarm")).marshal())
    held = producer.message_work(marker="marker-0001", _key=queue)
    # A round trip on the same connection, written after the publish would have been: when
    # its answer is back, anything written before it went through the proxy already.
    channel = yield tools_within(amqp.channel(), FAST)
    assert marker(1) not in bytes(proxy.sent)
    assert not held.called
    amqp.dataReceived(pika.frame.Method(0, pika.spec.Connection.Unblocked()).marshal())
    yield tools_within(held, FAST)
    assert marker(1) in bytes(proxy.sent)
    assert broker.get(queue) is not None
    yield channel.close()


def tools_within(d: defer.Deferred, seconds: float) -> defer.Deferred:
    from twisted.internet import reactor  # noqa: PLC0415

    return d.addTimeout(seconds, reactor)


# ---- remote control ---------------------------------------------------------------------------

class Pinger(MessageProcessor):
    @RpcHandler("command", "ping")
    def ping(self, content, reply_func):
        reply_func(MessageResult("pong"))


@pytest_twisted.inlineCallbacks
def test_remote_control_false_ignores_restart(components, names, monkeypatch, tools):
    executed = []
    monkeypatch.setattr(os, "execv", lambda path, argv: executed.append((path, argv)))
    exchange = names.exchange_class()
    processor = components.processor(Pinger, eqk=[(exchange, [(names.queue(), "k")])],
                                     remote_control=False)
    yield tools.within(processor.start(), FAST)
    stopped = processor.when_stopped()
    producer = components.producer(eks=[(exchange, "k")])
    yield producer.message_restart()
    first = yield producer.rpc_ping(_timeout=FAST, _max_retry=0)  # FIFO: restart came first
    # An obeyed restart would have stopped consuming before the first ping was handled: a
    # ping sent only now is answered only by a processor that ignored it.
    second = yield producer.rpc_ping(_timeout=FAST, _max_retry=0)
    assert (first.value, second.value) == ("pong", "pong")
    assert executed == []
    assert not stopped.called


# ---- connecting -------------------------------------------------------------------------------

class _Silent(protocol.Protocol):
    """Accepts the TCP connection and never says a word (nor closes it)."""


@pytest_twisted.inlineCallbacks
def test_connect_timeout_ends_the_first_connection_to_a_peer_that_never_speaks(components):
    from twisted.internet import reactor  # noqa: PLC0415

    factory = protocol.Factory.forProtocol(_Silent)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        producer = components.producer(
            hup={"host": "127.0.0.1", "port": port.getHost().port, "user": "guest",
                 "password": "guest"}, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError):
            yield tools_within(producer.ready, FAST)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 5, f"gave up after {elapsed:.2f}s, connect_timeout is 1s"
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_wrong_password_is_reported_at_once_and_never_retried(components, proxy):
    producer = components.producer(hup={**proxy.hup, "password": SECRET})
    with pytest.raises(AuthenticationError):
        yield tools_within(producer.ready, FAST)
    assert proxy.accepted == 1
    # The producer has given up: a publish fails at once, and makes no new attempt.
    with pytest.raises(AuthenticationError):
        yield tools_within(producer.message_ping(_key="nowhere"), 1)
    assert proxy.accepted == 1


@pytest_twisted.inlineCallbacks
def test_a_missing_vhost_is_reported_at_once_and_never_retried(components, names, proxy):
    producer = components.producer(hup=proxy.hup, vhost=names.queue("no-such-vhost"))
    with pytest.raises(VirtualHostError):
        yield tools_within(producer.ready, FAST)
    assert proxy.accepted == 1
    with pytest.raises(VirtualHostError):
        yield tools_within(producer.message_ping(_key="nowhere"), 1)
    assert proxy.accepted == 1


# ---- stopping ---------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_stop_stops_consuming_first_so_a_message_sent_during_the_drain_stays_queued(
        components, names, broker, tools):
    class Held(MessageProcessor):
        gate: defer.Deferred | None = None
        handled: list = []

        @MessageHandler("command", "work")
        def work(self, content):
            self.handled.append(content["parameters"])
            type(self).gate = defer.Deferred()
            return type(self).gate

    Held.handled = []
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Held, eqk=[(exchange, [(queue, "k")])])
    yield tools.within(processor.start(), FAST)
    broker.publish(exchange.name, "k", body(1))
    yield tools.wait_for(lambda: Held.gate is not None, what="the first handler")
    stopping = processor.stop()
    yield tools.wait_for(lambda: broker.consumer_count(queue) == 0, what="consuming to stop")
    broker.publish(exchange.name, "k", body(2))  # arrives while the first handler drains
    Held.gate.callback(None)
    yield tools.within(stopping, FAST)
    assert [p["marker"] for p in Held.handled] == ["marker-0001"]
    assert broker.message_count(queue) == 1  # the second is still queued, for the next one
    assert json.loads(broker.get(queue)[2])["content"]["parameters"]["marker"] == "marker-0002"


# ---- threads ----------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_handlers_of_a_twisted_processor_run_on_the_reactor_thread(components, names,
                                                                   broker, tools):
    from twisted.python import threadable  # noqa: PLC0415

    seen = []

    class Where(MessageProcessor):
        @MessageHandler("command", "work")
        def work(self, content):
            seen.append((threading.current_thread(), threadable.isInIOThread()))

    exchange = names.exchange_class()
    processor = components.processor(Where, eqk=[(exchange, [(names.queue(), "k")])])
    yield tools.within(processor.start(), FAST)
    broker.publish(exchange.name, "k", body(1))
    yield tools.wait_for(lambda: seen, what="the handler")
    assert seen == [(threading.current_thread(), True)]  # the test runs on the reactor too


# ---- logs -------------------------------------------------------------------------------------

DEBUG_PROBE = textwrap.dedent("""
    from twisted.internet import task
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    from postage.twisted.rpc import RpcCalls

    clock = task.Clock()
    RpcCalls(clock).call("id-1", lambda: None, timeout=1, max_retry=1, description="probe")
    clock.advance(1)
    clock.advance(1)
    for event in events:
        print(event["log_level"].name, formatEvent(event))
    print("probe done")
""")


@pytest.mark.parametrize(("value", "debug_shown"), [("true", True), ("TRUE", True),
                                                    ("false", False), (None, False)])
def test_postage_debug_mode_true_gives_debug_events(value, debug_shown):
    """In a child process: the level is read once, when Postage first logs."""
    env = {key: val for key, val in os.environ.items() if key != "POSTAGE_DEBUG_MODE"}
    if value is not None:
        env["POSTAGE_DEBUG_MODE"] = value
    out = subprocess.run([sys.executable, "-c", DEBUG_PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.splitlines()[-1] == "probe done"  # it ran to the end: what it logged is all
    debug = [line for line in out.splitlines() if line.startswith("debug ")]
    assert bool(debug) is debug_shown
    if debug_shown:
        assert "probe timed out, retrying" in debug[0]


@pytest_twisted.inlineCallbacks
def test_no_password_in_log_events_errors_or_reprs(components, names, log_events, proxy,
                                                   monkeypatch, caplog):
    """A wrong password (logged and raised), a processor and a producer made with it, and a
    URL password in the environment: the password shows nowhere."""
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://guest:{SECRET}@127.0.0.1:{proxy.port}/")
    hup = {**proxy.hup, "password": SECRET}
    producer = components.producer(hup=hup)
    with pytest.raises(AuthenticationError) as info:
        yield tools_within(producer.ready, FAST)
    processor = components.processor(Pinger, hup=hup,
                                     eqk=[(names.exchange_class(), [(names.queue(), "k")])])
    with pytest.raises(AuthenticationError):
        yield tools_within(processor.start(), FAST)
    from_url = components.producer(hup=None)  # the URL's password, from the environment
    with pytest.raises(AuthenticationError):
        yield tools_within(from_url.ready, FAST)
    assert "refused user 'guest'" in str(info.value)  # the error says what went wrong
    texts = [*log_events.texts(), *(record.getMessage() for record in caplog.records)]
    assert len(texts) > 3  # the connections' coming and going were logged
    shown = [*texts, str(info.value), repr(info.value), repr(producer), repr(processor),
             repr(processor.consumer), repr(from_url), str(vars(producer).get("settings")),
             repr(getattr(producer, "settings", None))]
    leaks = [text for text in shown if SECRET in text]
    assert leaks == []

