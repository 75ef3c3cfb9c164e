"""What a consumer declared — exchanges, queues, bindings, QoS, consumed queues — as data.

Kept apart from the channel so that it can be replayed on a fresh channel (after the broker
closed one, or after a reconnect) and inspected in tests without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from postage.exchanges import exchange_name

__all__ = ["Topology", "parse_queue"]


def parse_queue(queue: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A queue from ``eqk``: a name, or ``{'name': ..., 'flags': {...}}`` where the flags go
    to ``queue_declare`` (``durable``, ``exclusive``, ``auto_delete``, ``arguments``...)."""
    if isinstance(queue, str):
        return queue, {}
    if isinstance(queue, Mapping) and isinstance(queue.get("name"), str):
        return queue["name"], dict(queue.get("flags") or {})
    raise TypeError(f"a queue is a name or {{'name': ..., 'flags': {{...}}}}, not {queue!r}")


@dataclass
class Topology:
    """Everything a consumer asked the broker for, in the order it asked."""

    prefetch_count: int = 10
    exchanges: dict[str, Any] = field(default_factory=dict)  # name -> Exchange subclass
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> flags
    bindings: dict[tuple[str, str, str], None] = field(default_factory=dict)  # ordered set
    # queues declared beside the consumed ones and never consumed (a processor's delay and
    # dead queues): computed from ``queues`` at each declare, so they follow its changes
    side_queues: Callable[[Mapping[str, dict[str, Any]]], dict[str, dict[str, Any]]] | None = None

    def add_binding(self, exchange: Any, queue: str | Mapping[str, Any], key: str
                    ) -> tuple[str, str, str]:
        """Record exchange → queue with key; an exchange given by name is not declared."""
        name, flags = parse_queue(queue)
        if isinstance(exchange, type):
            self.exchanges.setdefault(exchange_name(exchange), exchange)
        if name not in self.queues or flags:
            self.queues[name] = flags
        binding = (exchange_name(exchange), name, key)
        self.bindings[binding] = None
        return binding

    def add_eqk(self, eqk: Iterable[tuple[Any, Iterable[tuple[Any, str]]]]) -> None:
        """Record ``[(Exchange, [(queue, key), ...]), ...]``."""
        for exchange, queue_keys in eqk:
            for queue, key in queue_keys:
                self.add_binding(exchange, queue, key)

    def remove_binding(self, exchange: Any, queue: str, key: str) -> tuple[str, str, str]:
        binding = (exchange_name(exchange), queue, key)
        self.bindings.pop(binding, None)
        return binding

    @defer.inlineCallbacks
    def declare(self, channel: Any) -> Any:
        """Declare all of it on ``channel`` (QoS, exchanges, queues, bindings)."""
        yield channel.basic_qos(prefetch_count=self.prefetch_count)
        for exchange in self.exchanges.values():
            yield channel.exchange_declare(**exchange.parameters)
        for queue, flags in self.queues.items():
            yield channel.queue_declare(queue, **flags)
        if self.side_queues is not None:
            for queue, flags in self.side_queues(self.queues).items():
                yield channel.queue_declare(queue, **flags)
        for exchange, queue, key in self.bindings:
            if exchange:  # the nameless exchange binds every queue by its name already
                yield channel.queue_bind(queue, exchange, routing_key=key)
