"""Fixtures of the fault suite (``-m faults``, a pytest process of its own in scripts/test),
against the real RabbitMQ on 127.0.0.1:5672, through a proxy each test owns.

- ``proxy``: :class:`faults.proxy.Proxy`, listening, relaying to the broker; stopped at the end;
- ``names`` / ``broker``: unique names under ``postage-test.faults.`` and the test's own
  pika ``BlockingConnection`` (``brokertools.Admin``); what the names name is deleted;
- ``components``: Postage producers, processors and consumers, closed at the end (bounded);
- ``figures``: what a test measured (``figures.add(...)``), printed at the end of the run
  in a "fault suite figures" block, so that CI's output shows them;
- ``tools``: ``sleep``, ``wait_for`` (poll with a bound), ``within`` (a deadline on a
  Deferred), ``drain`` (read a whole queue, off the reactor thread), ``parameters`` (of a
  command's body).

Names live under their own prefix, checked for leftovers at the end of the run: this
process runs apart from the others (scripts/test), and its prefix keeps it from seeing
theirs.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

import brokertools
from brokertools import GUEST, Admin, Names, assert_nothing_left, sleep, within

PREFIX = "postage-test.faults."

_FIGURES: list[str] = []


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    """These tests need pytest-twisted's reactor; the blocking suite runs without it."""
    if not config.pluginmanager.has_plugin("twisted"):
        return True
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every figure the fault tests measured (also those of failed or xfailed tests:
    a figure that shows a loss is the point)."""
    if not _FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for line in _FIGURES:
        terminalreporter.write_line(line)


class Figures:
    """What one test measured; ``add(label, n_published=..., ...)`` keeps an ordered line
    ``<test function> [label]: 5000 published, 7 cuts, 0 lost, 3 duplicates``."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.lines: list[str] = []

    def add(self, label: str, **values: Any) -> str:
        parts = [f"{_number(value)} {name.replace('_', ' ')}" for name, value in values.items()]
        line = f"{self.test} [{label}]: {', '.join(parts)}"
        self.lines.append(line)
        _FIGURES.append(line)
        return line


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


@pytest.fixture
def figures(request: Any) -> Figures:
    return Figures(request.node.originalname)


# ---- time ----------------------------------------------------------------------------------

def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """The toolkit's wait, with this suite's longer default bound."""
    return brokertools.wait_for(predicate, timeout, interval, what)


def _drain_blocking(queue: str, label: str) -> list[tuple[Any, bytes]]:
    """Every message of ``queue`` now (``(properties, body)``, acked), on pika's
    BlockingConnection: the count is read first, then exactly that many are consumed."""
    with Admin(f"{PREFIX}drain.{label}") as admin:
        expected = admin.message_count(queue)
        got: list[tuple[Any, bytes]] = []
        channel = admin.channel
        channel.basic_qos(prefetch_count=500)
        for method, properties, body in channel.consume(queue, inactivity_timeout=30):
            if method is None:
                raise AssertionError(f"{queue}: {len(got)} of {expected} read, then silence")
            got.append((properties, body))
            if len(got) % 200 == 0 or len(got) >= expected:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if len(got) >= expected:
                break
        channel.cancel()
        return got


def drain(queue: str, label: str = "drain") -> defer.Deferred[list[tuple[Any, bytes]]]:
    """:func:`_drain_blocking` in a thread: the reactor keeps running meanwhile."""
    return threads.deferToThread(_drain_blocking, queue, label)


def parameters(body: bytes) -> Any:
    """The parameters of a Postage command body."""
    return json.loads(body)["content"]["parameters"]


@pytest.fixture
def tools() -> Any:
    return types.SimpleNamespace(sleep=sleep, wait_for=wait_for, within=within, drain=drain,
                                 parameters=parameters)


# ---- the broker, names, components -----------------------------------------------------------

@pytest.fixture
def broker() -> Any:
    with Admin(f"{PREFIX}admin") as admin:
        yield admin


@pytest.fixture
def names(request: Any, broker: Admin) -> Any:
    made = Names(PREFIX, request.node.name)
    yield made
    made.delete(broker)


@pytest.fixture(scope="session", autouse=True)
def faults_leave_nothing_behind() -> Any:
    yield
    assert_nothing_left(PREFIX)


class Components:
    """Postage components of one test, closed (each within 10 s) when it ends."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._closers: list[Callable[[], Any]] = []

    def producer(self, label: str = "producer", **kwds: Any) -> Any:
        from postage import Fingerprint  # noqa: PLC0415
        from postage.twisted import GenericProducer  # noqa: PLC0415

        kwds.setdefault("fingerprint", Fingerprint(name=self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        producer = GenericProducer(**kwds)
        self._closers.append(producer.close)
        return producer

    def processor(self, cls: Any, label: str = "processor", **kwds: Any) -> Any:
        from postage import Fingerprint  # noqa: PLC0415

        kwds.setdefault("fingerprint", Fingerprint(name=self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        processor = cls(**kwds)
        self._closers.append(processor.stop)
        return processor

    async def close_all(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        for closer in reversed(self._closers):
            try:
                await defer.maybeDeferred(closer).addTimeout(10, reactor)
            except Exception:  # noqa: BLE001 - a component already broken by its test
                pass


@pytest_twisted.async_yield_fixture
async def components(names: Names) -> Any:
    made = Components(names)
    yield made
    await made.close_all()


@pytest_twisted.async_yield_fixture
async def proxy() -> Any:
    from faults.proxy import Proxy  # noqa: PLC0415

    relay = Proxy()
    relay.listen()
    yield relay
    await relay.stop()
