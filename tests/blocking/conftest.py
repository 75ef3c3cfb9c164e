"""Fixtures for the blocking facade's tests (``postage.messaging``), run in a pytest process of
their own without pytest-twisted: ``python -m pytest tests -m blocking -p no:twisted``. The
facade starts its reactor in a daemon thread on first use; nothing here touches a reactor.

- ``names``: unique exchange / queue / component names for one test (a uuid in each); what
  they name is deleted when the test ends;
- ``admin``: the test's own eyes on the broker, on pika's ``BlockingConnection``;
- ``make``: makes facade producers and processors, closes / stops them all at the end;
- ``run_script(source, timeout)``: runs a Python script in a fresh interpreter from the
  repository root (for what could hang, or needs a process of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "postage-test.blocking"
GUEST = {"host": "127.0.0.1", "user": "guest", "password": "guest"}


class Names:
    """Unique names for one test."""

    def __init__(self, test_name: str) -> None:
        self.uid = uuid.uuid4().hex[:10]
        self.test = test_name[:40]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def _name(self, kind: str, label: str) -> str:
        return f"{PREFIX}.{self.test}.{self.uid}.{kind}.{label}"

    def queue(self, label: str = "q") -> str:
        name = self._name("q", label)
        self.queues.append(name)
        return name

    def auto_queue(self, label: str = "q") -> dict[str, Any]:
        """An ``eqk`` queue spec: the unique name, auto-delete."""
        return {"name": self.queue(label), "flags": {"auto_delete": True}}

    def exchange(self, label: str = "x") -> str:
        name = self._name("x", label)
        self.exchanges.append(name)
        return name

    def component(self, label: str = "c") -> str:
        return f"{PREFIX}.{self.test}.{self.uid}.{label}"

    def exchange_class(self, label: str = "x", exchange_type: str = "direct",
                       auto_delete: bool = True) -> type:
        """A fresh ``Exchange`` subclass with a unique name (auto-delete, not durable)."""
        from postage import messaging  # noqa: PLC0415

        return type(f"Exchange_{label}", (messaging.Exchange,), {
            "name": self.exchange(label), "exchange_type": exchange_type,
            "durable": False, "auto_delete": auto_delete})


class Admin:
    """pika BlockingConnection: declare, count and read, independent of Postage."""

    def __init__(self) -> None:
        import pika  # noqa: PLC0415

        self._pika = pika
        self._connection: Any = None
        self._channel: Any = None

    @property
    def channel(self) -> Any:
        if self._connection is None or not self._connection.is_open:
            self._connection = self._pika.BlockingConnection(self._pika.ConnectionParameters(
                "127.0.0.1", 5672, "/", heartbeat=0,
                client_properties={"connection_name": f"{PREFIX}.admin"}))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def _passive(self, declare: Callable[[Any], Any]) -> Any:
        from pika.exceptions import ChannelClosedByBroker  # noqa: PLC0415

        try:
            return declare(self.channel)
        except ChannelClosedByBroker:
            return None

    def queue_exists(self, name: str) -> bool:
        return self._passive(lambda ch: ch.queue_declare(name, passive=True)) is not None

    def exchange_exists(self, name: str) -> bool:
        return self._passive(lambda ch: ch.exchange_declare(name, passive=True)) is not None

    def message_count(self, name: str) -> int:
        return self.channel.queue_declare(name, passive=True).method.message_count

    def declare_bound_queue(self, queue: str, exchange: str, key: str) -> None:
        """A queue nobody consumes, bound to a (declared) direct exchange."""
        self.channel.exchange_declare(exchange, "direct", durable=False, auto_delete=True)
        self.channel.queue_declare(queue)
        self.channel.queue_bind(queue, exchange, routing_key=key)

    def declare_exchange(self, exchange: str) -> None:
        self.channel.exchange_declare(exchange, "direct", durable=False, auto_delete=False)

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        """``(properties, body)`` of one message (auto-acked), or None when it is empty."""
        _method, properties, body = self.channel.basic_get(queue, auto_ack=True)
        return None if body is None else (properties, body)

    def delete_queue(self, name: str) -> None:
        self.channel.queue_delete(name)

    def delete_exchange(self, name: str) -> None:
        self.channel.exchange_delete(name)

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()


@pytest.fixture
def admin() -> Any:
    client = Admin()
    yield client
    client.close()


@pytest.fixture
def names(request: Any, admin: Admin) -> Any:
    made = Names(request.node.name.replace("[", "-").replace("]", ""))
    yield made
    for queue in made.queues:
        admin.delete_queue(queue)
    for exchange in made.exchanges:
        admin.delete_exchange(exchange)


class Make:
    """Makes facade components for one test; closes / stops them all at the end."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._closers: list[Callable[[], Any]] = []

    def producer(self, cls: Any = None, label: str = "producer", **kwds: Any) -> Any:
        from postage import messaging  # noqa: PLC0415

        kwds.setdefault("fingerprint", messaging.Fingerprint(self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        producer = (cls or messaging.GenericProducer)(**kwds)
        self._closers.append(producer.close)
        return producer

    def processor(self, cls: Any, label: str = "processor", start: bool = True,
                  **kwds: Any) -> Any:
        """Make (and by default start) a facade processor."""
        from postage import messaging  # noqa: PLC0415

        kwds.setdefault("fingerprint", messaging.Fingerprint(self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        processor = cls(**kwds)
        self._closers.append(processor.stop)
        if start:
            processor.start()
        return processor

    def close_all(self) -> None:
        for closer in reversed(self._closers):
            closer()


@pytest.fixture
def make(names: Names) -> Any:
    made = Make(names)
    yield made
    made.close_all()


@pytest.fixture
def run_script(tmp_path: Path) -> Any:
    """Run ``source`` (dedented) as a script in a fresh interpreter, cwd = the repository
    root; ``env`` adds variables. Returns the CompletedProcess (text)."""

    def run(source: str, timeout: float = 30, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / f"script_{uuid.uuid4().hex[:6]}.py"
        script.write_text(textwrap.dedent(source))
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("POSTAGE_")}
        child_env["PYTHONPATH"] = str(ROOT)
        child_env.update(env or {})
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=child_env,
                              stdin=subprocess.DEVNULL)

    return run


def _broker_names(*kinds: str) -> list[str]:
    """Names of the broker's queues / exchanges (rabbitmqctl, one child per kind, at once)."""
    children = [subprocess.Popen(["rabbitmqctl", "-q", f"list_{kind}", "name"],
                                 stdout=subprocess.PIPE, text=True) for kind in kinds]
    names = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0, f"rabbitmqctl exited {child.returncode}"
        names += [line.strip() for line in out.splitlines() if line.strip()]
    return names


@pytest.fixture(scope="session", autouse=True)
def blocking_leave_nothing_behind() -> Any:
    """After the run, no queue or exchange named by these tests is left on the broker."""
    yield
    left = [name for name in _broker_names("queues", "exchanges") if name.startswith(PREFIX)]
    assert not left, f"left on the broker: {left}"
