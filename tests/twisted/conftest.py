"""Fixtures for the Twisted layer's integration tests, against the real RabbitMQ on
127.0.0.1:5672.

- ``names``: unique exchange / queue / component names for one test (a uuid in each), under
  ``postage-test.twisted.``; everything they name is deleted when the test ends;
- ``broker``: ``brokertools.Admin``, the test's own eyes on the broker (declare, publish raw
  bytes, basic_get, passive counts), independent of Postage;
- ``vhost``: ``(name, Admin)``, a vhost of the test's own;
- ``components``: makes producers, processors and schedulers and stops them all at the end; a
  stop that fails or hangs fails the test (``Components.close_all``);
- ``log_events``: every ``twisted.logger`` event emitted during the test;
- ``proxy``: a TCP proxy to the broker, written with Twisted, that a test can pause or cut;
- ``tools``: ``sleep``, ``wait_for`` (poll), ``within`` (a deadline), ``rabbitmqctl`` (the
  broker's admin tool, run without blocking the reactor), ``close_connections`` (by client-
  provided name), ``connection_pids``, ``unacked_count`` and ``queue_counts``.

Nothing here imports the reactor at module level: the blocking facade's suite runs with
``-p no:twisted`` and must be free to choose its own (and it does not collect this folder).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from brokertools import (
    BROKER_HOST,
    BROKER_PORT,
    GUEST,
    Admin,
    Names,
    assert_nothing_left,
    rabbitmqctl_argv,
    rabbitmqctl_sync,
    sleep,
    wait_for,
    within,
)

PREFIX = "postage-test.twisted."


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    """These tests need pytest-twisted's reactor; the blocking suite runs without it."""
    if not config.pluginmanager.has_plugin("twisted"):
        return True
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which pika the Twisted tests ran with (DESIGN.md: a test must show it)."""
    if not terminalreporter.config.pluginmanager.has_plugin("twisted"):
        return
    import pika  # noqa: PLC0415

    terminalreporter.write_line(f"postage twisted tests ran with pika {pika.__version__}")


# ---- time ----------------------------------------------------------------------------------

# ---- rabbitmqctl, without blocking the reactor -----------------------------------------------

def rabbitmqctl(*args: str) -> defer.Deferred[str]:
    """Run ``rabbitmqctl -q ARGS`` in a child process; fires with its stdout, errbacks
    when it exits non-zero. The reactor keeps running meanwhile."""
    from twisted.internet import utils  # noqa: PLC0415

    argv = rabbitmqctl_argv("-q", *args)

    def check(result: tuple[bytes, bytes, int]) -> str:
        out, err, code = result
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {code}: {err.decode(errors='replace')}")
        return out.decode()

    return utils.getProcessOutputAndValue(argv[0], argv[1:], env=os.environ).addCallback(check)


@defer.inlineCallbacks
def connection_pids(connection_name: str) -> Any:
    """The broker's pids of the connections whose client-provided name is
    ``connection_name`` (Postage passes the fingerprint's name as pika's connection_name)."""
    out = yield rabbitmqctl("list_connections", "pid", "client_properties")
    return [line.split("\t", 1)[0] for line in out.splitlines()
            if f'"{connection_name}"' in line]


@defer.inlineCallbacks
def close_connections(connection_name: str) -> Any:
    """Close, from the broker's side, every connection named ``connection_name``."""
    pids = yield wait_for(lambda: connection_pids(connection_name), timeout=10,
                          what=f"a connection named {connection_name!r}")
    for pid in pids:
        yield rabbitmqctl("close_connection", pid, "closed by a Postage test")
    return pids


@defer.inlineCallbacks
def unacked_count(queue: str) -> Any:
    """``messages_unacknowledged`` of ``queue`` as rabbitmqctl reports it."""
    out = yield rabbitmqctl("list_queues", "name", "messages_unacknowledged")
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"queue {queue!r} not found")


@defer.inlineCallbacks
def queue_counts(queue: str) -> Any:
    """``(ready, unacked, consumers)`` of ``queue`` as rabbitmqctl reports them: the broker's
    own accounting, to wait on instead of sleeping (a message the broker holds unacked for
    one consumer is not delivered to another; one that is neither ready nor unacked is gone
    from the queue, so it was not requeued)."""
    out = yield rabbitmqctl("list_queues", "name", "messages_ready",
                            "messages_unacknowledged", "consumers")
    for line in out.splitlines():
        name, *counts = line.split("\t")
        if name == queue:
            return tuple(int(count) for count in counts)
    raise AssertionError(f"queue {queue!r} not found")


@pytest.fixture
def tools() -> Any:
    """The helpers above, for the tests (test modules do not import conftest)."""
    import types  # noqa: PLC0415

    return types.SimpleNamespace(
        sleep=sleep, wait_for=wait_for, within=within, rabbitmqctl=rabbitmqctl,
        close_connections=close_connections, connection_pids=connection_pids,
        unacked_count=unacked_count, queue_counts=queue_counts)


# ---- the broker as the test sees it; unique names, cleaned up ------------------------------

@pytest.fixture
def broker() -> Any:
    with Admin(f"{PREFIX}admin") as admin:
        yield admin


@pytest.fixture
def vhost() -> Any:
    """``(name, Admin)``: a vhost of its own, guest allowed on it, deleted afterwards."""
    name = f"{PREFIX}vhost-{uuid.uuid4().hex[:10]}"
    rabbitmqctl_sync("add_vhost", name)
    rabbitmqctl_sync("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    with Admin(f"{PREFIX}admin", vhost=name) as admin:
        yield name, admin
    rabbitmqctl_sync("delete_vhost", name)


@pytest.fixture
def names(request: Any, broker: Admin) -> Any:
    made = Names(PREFIX, request.node.name)
    yield made
    made.delete(broker)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Any:
    """After the run, no queue or exchange named by these tests is left on the broker."""
    yield
    assert_nothing_left(PREFIX)


# ---- components, stopped at the end -----------------------------------------------------------

class Components:
    """Makes Postage components for a test and stops them all when it ends."""

    def __init__(self, names: Names, close_timeout: float = 15) -> None:
        self.names = names
        self.close_timeout = close_timeout
        self._closers: list[Callable[[], Any]] = []

    def producer(self, cls: Any = None, label: str = "producer", **kwds: Any) -> Any:
        from postage import Fingerprint  # noqa: PLC0415
        from postage.twisted import GenericProducer  # noqa: PLC0415

        kwds.setdefault("fingerprint", Fingerprint(name=self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        producer = (cls or GenericProducer)(**kwds)
        self._closers.append(producer.close)
        return producer

    def consumer(self, label: str = "consumer", **kwds: Any) -> Any:
        from postage.twisted import GenericConsumer  # noqa: PLC0415

        kwds.setdefault("name", self.names.component(label))
        kwds.setdefault("hup", GUEST)
        consumer = GenericConsumer(**kwds)
        self._closers.append(consumer.close)
        return consumer

    def processor(self, cls: Any, label: str = "processor", **kwds: Any) -> Any:
        from postage import Fingerprint  # noqa: PLC0415

        kwds.setdefault("fingerprint", Fingerprint(name=self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        processor = cls(**kwds)
        self._closers.append(processor.stop)
        return processor

    def scheduler(self, **kwds: Any) -> Any:
        from postage.twisted import MicroScheduler  # noqa: PLC0415

        scheduler = MicroScheduler(**kwds)
        self._closers.append(scheduler.stop)
        return scheduler

    def add(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    async def close_all(self) -> None:
        """Stop everything the test made, newest first; every stop is tried, each bounded
        by ``close_timeout`` seconds. A stop that raises or hangs fails the test that made
        the component: a broken ``stop()``/``close()`` must not pass unseen."""
        timeout = self.close_timeout
        from twisted.internet import reactor  # noqa: PLC0415

        problems = []
        for closer in reversed(self._closers):
            d = defer.maybeDeferred(closer).addTimeout(timeout, reactor)
            try:
                await d
            except defer.TimeoutError:
                problems.append(f"{_describe(closer)} did not end within {timeout}s")
            except Exception as exc:  # noqa: BLE001 - reported below, with its type
                problems.append(f"{_describe(closer)} failed: {type(exc).__name__}: {exc}")
        if problems:
            raise AssertionError("teardown: " + "; ".join(problems))


def _describe(closer: Callable[[], Any]) -> str:
    owner = getattr(closer, "__self__", None)
    name = getattr(closer, "__name__", repr(closer))
    return f"{type(owner).__name__}.{name}()" if owner is not None else f"{name}()"


@pytest_twisted.async_yield_fixture
async def components(names: Names) -> Any:
    made = Components(names)
    yield made
    await made.close_all()


@pytest_twisted.async_yield_fixture
async def started(components: Components) -> Any:
    """``await started(processor)``: start a processor (it is stopped at the end)."""

    async def start(processor: Any) -> Any:
        return await within(processor.start(), 10)

    yield start


# ---- log capture ---------------------------------------------------------------------------

class LogEvents(list):
    """The ``twisted.logger`` events of one test."""

    def texts(self) -> list[str]:
        from twisted.logger import formatEvent  # noqa: PLC0415

        return [formatEvent(event) for event in self]

    def matching(self, text: str) -> list[dict[str, Any]]:
        from twisted.logger import formatEvent  # noqa: PLC0415

        return [event for event in self if text in formatEvent(event)]

    def failures(self) -> list[dict[str, Any]]:
        return [event for event in self if "log_failure" in event]


@pytest.fixture
def log_events() -> Any:
    from twisted.logger import globalLogPublisher  # noqa: PLC0415

    events = LogEvents()
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# ---- a TCP proxy to the broker, to cut ---------------------------------------------

class _Upstream(protocol.Protocol):
    """The proxy's side towards the broker."""

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(protocol.Protocol):
    """The proxy's side towards the client: connects to the broker, relays both ways."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.upstream: _Upstream | None = None
        self.buffer: list[bytes] = []

    def connectionMade(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: PLC0415

        self.proxy.accepted += 1
        if self.proxy.refusing:  # the broker is "down": no connection gets through
            self.proxy.refused += 1
            self.transport.abortConnection()
            return
        self.proxy.pairs.append(self)
        self.transport.pauseProducing()
        endpoint = TCP4ClientEndpoint(reactor, BROKER_HOST, BROKER_PORT)
        connectProtocol(endpoint, _Upstream(self)).addCallbacks(self._linked,
                                                                 self._failed)

    def _linked(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        if self.proxy.paused:
            upstream.transport.pauseProducing()
        self.transport.resumeProducing()

    def _failed(self, _failure: Any) -> None:
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.proxy.sent += data
        if self.upstream is not None:
            self.upstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class Proxy(protocol.Factory):
    """Relays 127.0.0.1:<port> to the broker. ``pause()`` stops what the broker sends from
    reaching the client (so confirms and replies stay pending); ``cut()`` drops every
    connection at once, as a network failure would; while ``refusing`` is true, new
    connections are dropped at once (a broker that stays unreachable). ``accepted`` and
    ``refused`` count the connections it took and dropped: a test sees attempts happen;
    ``sent`` holds what clients wrote, so a test sees what went out, and what did not."""

    def __init__(self) -> None:
        self.pairs: list[_Downstream] = []
        self.paused = False
        self.refusing = False
        self.accepted = 0  # connections the proxy accepted (attempts to reach the broker)
        self.refused = 0  # ... and dropped at once, while refusing
        self.sent = bytearray()  # every byte a client sent through the proxy, in order
        self.port: int = 0
        self._listening: Any = None

    def buildProtocol(self, addr: Any) -> _Downstream:
        return _Downstream(self)

    def listen(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self._listening = reactor.listenTCP(0, self, interface=BROKER_HOST)
        self.port = self._listening.getHost().port

    @property
    def hup(self) -> dict[str, Any]:
        return {**GUEST, "port": self.port}

    def pause(self) -> None:
        self.paused = True
        for pair in self.pairs:
            if pair.upstream is not None:
                pair.upstream.transport.pauseProducing()

    def cut(self) -> None:
        self.paused = False  # connections made after the cut relay both ways again
        pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.abort()

    def stop(self) -> Any:
        self.cut()
        return self._listening.stopListening()


@pytest_twisted.async_yield_fixture
async def proxy() -> Any:
    relay = Proxy()
    relay.listen()
    yield relay
    await defer.maybeDeferred(relay.stop)


@pytest.fixture
def free_port() -> int:
    """A local TCP port nothing listens on."""
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind((BROKER_HOST, 0))
        return sock.getsockname()[1]
