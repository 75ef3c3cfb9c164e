"""What the suites that talk to the real RabbitMQ (127.0.0.1:5672, guest/guest) share:

- ``Admin``: the test's own eyes on the broker, on pika's ``BlockingConnection`` (declare,
  bind, publish raw bytes, basic_get, passive checks and counts, delete), independent of
  Postage;
- ``Names``: unique exchange / queue / component names for one test, under a suite's prefix;
  ``delete`` removes what they named;
- ``rabbitmqctl_argv`` / ``rabbitmqctl_sync``: the broker's admin tool, run to completion;
- ``leftovers`` / ``assert_nothing_left``: the queues and exchanges still on the broker whose
  name starts with a given prefix (each suite checks its own at the end of the session, so that
  two suites running at once never report each other's).

Each suite names everything under a prefix of its own: ``postage-test.twisted.``,
``postage-test.blocking.``, ``postage-test.tools.``.

The conftests import this module as ``brokertools``: pyproject.toml puts ``tests`` on pytest's
``pythonpath``. It imports neither pytest-twisted nor the reactor, and pika and Postage only
when used: the blocking facade's suite (``-p no:twisted``) imports it too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import defer  # (defer installs no reactor: the blocking suite too)

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 5672
GUEST = {"host": BROKER_HOST, "user": "guest", "password": "guest"}


# ---- rabbitmqctl ---------------------------------------------------------------------------

def rabbitmqctl_argv(*args: str) -> list[str]:
    """The command line of ``rabbitmqctl ARGS`` (through ``sudo -n`` when not root)."""
    path = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    sudo = ["sudo", "-n"] if os.getuid() != 0 and shutil.which("sudo") else []
    return [*sudo, path, *args]


def rabbitmqctl_sync(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` to completion: its stdout; raises when it exits non-zero."""
    return subprocess.run(rabbitmqctl_argv("-q", *args), check=True, capture_output=True,
                          text=True, timeout=60).stdout


def broker_names(*kinds: str) -> list[str]:
    """Names of the broker's ``kinds`` ("queues", "exchanges") in vhost ``/``: one rabbitmqctl
    child per kind, run at once."""
    children = [subprocess.Popen(rabbitmqctl_argv("-q", f"list_{kind}", "name"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for kind in kinds]
    names = []
    for child in children:
        out, err = child.communicate(timeout=60)
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(child.args)} exited {child.returncode}: {err}")
        names += [line.strip() for line in out.splitlines() if line.strip()]
    return names


# This run's own mark in every name: another run on the same broker (a second checkout, a
# colleague) uses the same prefixes, and its names in flight are not this run's leftovers.
RUN = uuid.uuid4().hex[:8]


def run_prefix(prefix: str) -> str:
    """``prefix`` with this run's mark: where this run's names start."""
    return f"{prefix}{RUN}."


def leftovers(prefix: str) -> list[str]:
    """The queues and exchanges on the broker whose name starts with ``prefix``."""
    return [name for name in broker_names("queues", "exchanges") if name.startswith(prefix)]


def assert_nothing_left(prefix: str) -> None:
    """For a suite's end-of-session check: no queue or exchange of this run's is left."""
    left = leftovers(run_prefix(prefix))
    assert not left, f"left on the broker: {left}"


# ---- the test's own admin client -----------------------------------------------------------

class Admin:
    """Plain pika BlockingConnection: what a test uses to look at the broker. Connects on first
    use, and opens a new channel after a channel error (a passive declare of a missing name
    closes it). A context manager: closes its connection on exit."""

    def __init__(self, connection_name: str, vhost: str = "/") -> None:
        self.connection_name = connection_name
        self.vhost = vhost
        self._connection: Any = None
        self._channel: Any = None

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def channel(self) -> Any:
        import pika  # noqa: PLC0415

        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.ConnectionParameters(
                BROKER_HOST, BROKER_PORT, self.vhost, heartbeat=0,
                client_properties={"connection_name": self.connection_name}))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    # -- declare

    def declare_queue(self, name: str, **flags: Any) -> str:
        self.channel.queue_declare(name, **flags)
        return name

    def declare_exchange(self, name: str, exchange_type: str = "direct", **flags: Any) -> str:
        """Not durable unless ``durable=True`` is given."""
        flags.setdefault("durable", False)
        self.channel.exchange_declare(name, exchange_type, **flags)
        return name

    def bind(self, queue: str, exchange: str, key: str) -> None:
        self.channel.queue_bind(queue, exchange, routing_key=key)

    def declare_bound_queue(self, queue: str, exchange: str, key: str,
                            expired_to: str | None = None) -> str:
        """A queue nobody consumes, bound with ``key`` to a direct exchange declared here
        (auto-delete). With ``expired_to``, messages that expire in it (RPC requests do,
        after their attempt) are dead-lettered to that queue, declared too, to be counted."""
        self.declare_exchange(exchange, auto_delete=True)
        arguments = None
        if expired_to is not None:
            self.declare_queue(expired_to)
            arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": expired_to}
        self.declare_queue(queue, arguments=arguments)
        self.bind(queue, exchange, key)
        return queue

    # -- publish and read

    def publish(self, exchange: str, key: str, body: bytes | str, **properties: Any) -> None:
        import pika  # noqa: PLC0415

        self.channel.basic_publish(exchange, key, body, pika.BasicProperties(**properties))

    def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """``(method, properties, body)`` of one message (auto-acked), or None when the queue
        is empty now."""
        method, properties, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (method, properties, body)

    def get_message(self, queue: str) -> tuple[Any, bytes] | None:
        """``(properties, body)`` of one message (auto-acked), or None when it is empty."""
        got = self.get(queue)
        return None if got is None else got[1:]

    def get_body(self, queue: str) -> bytes | None:
        """The body of one message (auto-acked), or None when it is empty."""
        got = self.get(queue)
        return None if got is None else got[2]

    # -- look

    def _passive(self, declare: Any) -> Any:
        """The frame of a passive declare, or None when the name does not exist."""
        from pika.exceptions import ChannelClosedByBroker  # noqa: PLC0415

        try:
            return declare(self.channel)
        except ChannelClosedByBroker:
            return None

    def queue_exists(self, name: str) -> bool:
        return self._passive(lambda ch: ch.queue_declare(name, passive=True)) is not None

    def exchange_exists(self, name: str) -> bool:
        return self._passive(lambda ch: ch.exchange_declare(name, passive=True)) is not None

    def message_count(self, queue: str) -> int:
        """Raises (the channel closes) when the queue does not exist."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def consumer_count(self, queue: str) -> int:
        """0 when the queue does not exist (yet, or any more)."""
        frame = self._passive(lambda ch: ch.queue_declare(queue, passive=True))
        return 0 if frame is None else frame.method.consumer_count

    # -- delete

    def delete_queue(self, name: str) -> None:
        self.channel.queue_delete(name)

    def delete_exchange(self, name: str) -> None:
        self.channel.exchange_delete(name)


# ---- unique names --------------------------------------------------------------------------

class Names:
    """Unique names for one test: ``<prefix><test>.<uid>.<kind>.<label>``, the test's name cut
    to 40 characters. Remembers the queues and exchanges it named; ``delete`` removes them."""

    def __init__(self, prefix: str, test_name: str) -> None:
        self.prefix = run_prefix(prefix)
        self.uid = uuid.uuid4().hex[:10]
        self.test = test_name.replace("[", "-").replace("]", "")[:40]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def _name(self, kind: str, label: str) -> str:
        return f"{self.prefix}{self.test}.{self.uid}.{kind}.{label}"

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
        """A component's (fingerprint's) name: also its connection's client-provided name."""
        return f"{self.prefix}{self.test}.{self.uid}.{label}"

    def exchange_class(self, label: str = "x", exchange_type: str = "direct",
                       auto_delete: bool = True) -> type:
        """A fresh ``Exchange`` subclass with a unique name (not durable, auto-delete by
        default)."""
        from postage import Exchange  # noqa: PLC0415 - the facade's is the same class

        return type(f"Exchange_{label}", (Exchange,), {
            "name": self.exchange(label), "exchange_type": exchange_type,
            "durable": False, "auto_delete": auto_delete})

    def delete(self, admin: Admin) -> None:
        """Delete every queue and exchange named here (what does not exist is fine)."""
        for queue in self.queues:
            admin.delete_queue(queue)
        for exchange in self.exchanges:
            admin.delete_exchange(exchange)


# ---- waiting on the reactor (the pytest-twisted suites) -------------------------------------

def sleep(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` of real time."""
    from twisted.internet import reactor, task  # noqa: PLC0415 - the suite's reactor

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``predicate()`` (it may return a Deferred) until it is true; fail after
    ``timeout`` seconds. Broker counts lag behind what was routed, so tests poll them."""
    deadline = time.monotonic() + timeout
    while True:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield sleep(interval)


def within(d: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    """``d`` with a deadline: a hang fails the test instead of the whole run."""
    from twisted.internet import reactor  # noqa: PLC0415

    return d.addTimeout(seconds, reactor)
