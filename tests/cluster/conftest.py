"""Fixtures of the cluster and TLS tests: a private 3-node cluster (``clusterbed``), started
once for the session and torn down at its end, and the tests' own eyes on it.

These tests run in a pytest process of their own (``-m cluster``, see scripts/test): they
take nodes down on purpose and need ~20 s to boot the cluster, which the other suites need
not wait for. Every node is brought back (and the cluster checked whole) before each test,
so no test depends on another's order.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

import brokertools
import clusterbed
from brokertools import sleep

GUEST = {"user": "guest", "password": "guest"}


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    """These tests need pytest-twisted's reactor; the blocking suite runs without it."""
    if not config.pluginmanager.has_plugin("twisted"):
        return True
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


def hosts(*nodes: int) -> list[str]:
    """``hup['host']`` for the plain AMQP listeners of ``nodes``, in that order."""
    return [f"127.0.0.1:{clusterbed.amqp_port(node)}" for node in nodes]


def hup(*nodes: int) -> dict[str, Any]:
    return {**GUEST, "host": hosts(*nodes)}


def in_thread(function: Any, *args: Any) -> defer.Deferred[Any]:
    """Run a blocking test-bed step (boot a node, rabbitmqctl) off the reactor thread."""
    from twisted.internet import threads  # noqa: PLC0415

    return threads.deferToThread(function, *args)


class Admin:
    """The test's own pika BlockingConnection to one node: declare, count, drain, delete."""

    def __init__(self, node: int) -> None:
        import pika  # noqa: PLC0415

        self.connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", clusterbed.amqp_port(node), credentials=pika.PlainCredentials(
                "guest", "guest"), client_properties={"connection_name": "postage-test.admin"}))
        self.channel = self.connection.channel()

    def declare_quorum(self, name: str) -> str:
        self.channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        return name

    def declare_durable(self, name: str) -> str:
        self.channel.queue_declare(name, durable=True)
        return name

    def message_count(self, name: str) -> int:
        return self.channel.queue_declare(name, passive=True).method.message_count

    def drain(self, name: str) -> list[bytes]:
        """Every message of the queue, taken off it."""
        bodies = []
        while True:
            method, _properties, body = self.channel.basic_get(name, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)

    def delete(self, name: str) -> None:
        self.channel.queue_delete(name)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture(scope="session")
def cluster() -> Any:
    """The private cluster, up for the whole session; everything of it removed at the end
    (and what an interrupted run left is removed by ``start``)."""
    started = time.monotonic()
    clusterbed.start()
    print(f"\ncluster of 3 nodes up in {time.monotonic() - started:.1f}s "
          f"(ports {clusterbed.BASE}-{clusterbed.BASE + 49})")
    try:
        yield clusterbed
    finally:
        clusterbed.stop()


def _running_nodes(down: list[int]) -> list[str]:
    """The cluster's running nodes, asked of the first node that answers (one whose app a
    test stopped does not)."""
    error: Exception | None = None
    for node in clusterbed.NODES:
        if node in down:
            continue
        try:
            running = clusterbed.running_nodes(node)
        except (RuntimeError, ValueError) as exc:
            error = exc
            continue
        if clusterbed.node_name(node) in running:
            return running
    raise RuntimeError(f"no node of the cluster answers: {error}")


@pytest_twisted.async_yield_fixture(autouse=True)
async def whole_cluster(cluster: Any) -> Any:
    """Before each test: every node running and in the cluster (a test that took one down
    does not decide the next one's starting point)."""
    down = [node for node in clusterbed.NODES if clusterbed.node_pid(node) is None]
    for node in down:
        await in_thread(clusterbed.start_node, node)
    running = await in_thread(_running_nodes, down)
    stopped = [node for node in clusterbed.NODES
               if node not in down and clusterbed.node_name(node) not in running]
    for node in stopped:  # an app stopped by a test that failed half-way
        await in_thread(clusterbed.ctl, node, "start_app")
    if down or stopped:
        await in_thread(clusterbed.wait_clustered)
    yield


@pytest.fixture
def name(request: Any) -> Any:
    """``name("q")``: a unique name for this test."""
    token = uuid.uuid4().hex[:8]
    return lambda label="q": f"postage-test.cluster.{request.node.name[:40]}.{token}.{label}"


@pytest.fixture
def admin() -> Any:
    """``admin(node)``: an Admin on that node, closed at the end."""
    made: list[Admin] = []

    def make(node: int) -> Admin:
        made.append(Admin(node))
        return made[-1]

    yield make
    for each in made:
        try:
            each.close()
        except Exception:  # noqa: BLE001 - its node may be down by now
            pass


class Closers:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, thing: Any, close: Any = None) -> Any:
        self.items.append(close or thing.close)
        return thing


@pytest_twisted.async_yield_fixture
async def closing() -> Any:
    """``closing.add(component[, closer])``: closed (or stopped) at the end of the test."""
    from twisted.internet import reactor  # noqa: PLC0415

    made = Closers()
    yield made
    for close in reversed(made.items):
        try:
            await defer.maybeDeferred(close).addTimeout(10, reactor)
        except Exception:  # noqa: BLE001 - already broken by its test
            pass


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """The toolkit's wait, with this suite's longer default bound."""
    return brokertools.wait_for(predicate, timeout, interval, what)


@pytest.fixture
def tools() -> Any:
    import types  # noqa: PLC0415

    from twisted.internet import reactor  # noqa: PLC0415

    return types.SimpleNamespace(
        sleep=sleep, wait_for=wait_for, in_thread=in_thread, hup=hup, hosts=hosts,
        within=lambda d, seconds: d.addTimeout(seconds, reactor))
