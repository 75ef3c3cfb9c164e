"""What a running component counts: plain integers and histograms, read at scrape time.

The message path only adds to integers here (a dict entry or an attribute ``+= 1``, a few
tens of nanoseconds); nothing is formatted, locked or exported per message. Whoever wants the
figures — ``describe`` answers, the Prometheus collector of ``postage.twisted.metrics`` —
reads them when asked. One thread (the reactor's) writes them, so no lock is needed; a reader
on the same thread sees a consistent view.

:data:`components` is the process's weak set of live processors and producers, which the
metrics endpoint and the readiness check walk: a component that is garbage is gone from it.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_BUCKETS", "Histogram", "ProcessorStats", "ProducerStats", "components"]

#: Upper bounds, in seconds (Prometheus's default buckets).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0)


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and their number."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound as text, observations <= it), ..., ("+Inf", all)]``."""
        total = 0
        out = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class ProcessorStats:
    """A processor's deliveries.

    ``handled`` counts deliveries whose handlers ran to the end, ``failed`` those among them
    where a handler raised, ``rejected`` deliveries that were not Postage envelopes,
    ``retried`` / ``dead`` failed deliveries sent to a retry queue / the dead-letter queue,
    ``rpc_answered`` replies sent, ``in_flight`` deliveries whose handlers still run.
    ``outcomes`` counts by ``(queue, type, name, outcome)`` for the metrics (``ok``,
    ``error``, ``rejected``, ``retried``, ``dead``; rejected deliveries have no type or name:
    ``""``); ``seconds`` holds a handler-duration histogram per ``(type, name)``.
    """

    __slots__ = ("dead", "failed", "handled", "in_flight", "outcomes", "rejected", "retried",
                 "rpc_answered", "seconds")

    def __init__(self) -> None:
        self.handled = 0
        self.failed = 0
        self.rejected = 0
        self.retried = 0
        self.dead = 0
        self.rpc_answered = 0
        self.in_flight = 0
        self.outcomes: dict[tuple[str, str, str, str], int] = {}
        self.seconds: dict[tuple[str, str], Histogram] = {}

    def finished(self, queue: str, type_: str, name: str, ok: bool, seconds: float) -> None:
        """One delivery's handlers ended (``ok`` false when one raised)."""
        self.handled += 1
        if not ok:
            self.failed += 1
        key = (queue, type_, name, "ok" if ok else "error")
        outcomes = self.outcomes
        outcomes[key] = outcomes.get(key, 0) + 1
        histogram = self.seconds.get((type_, name))
        if histogram is None:
            histogram = self.seconds[(type_, name)] = Histogram()
        histogram.observe(seconds)

    def count(self, queue: str, type_: str, name: str, outcome: str) -> None:
        """A delivery that ended some other way (``rejected``, ``retried``, ``dead``)."""
        if outcome == "rejected":
            self.rejected += 1
        elif outcome == "retried":
            self.retried += 1
        elif outcome == "dead":
            self.dead += 1
        key = (queue, type_, name, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def counters(self) -> dict[str, int]:
        """The ``describe`` answer's ``counters``."""
        return {"handled": self.handled, "failed": self.failed, "rejected": self.rejected,
                "retried": self.retried, "dead": self.dead,
                "rpc_answered": self.rpc_answered, "in_flight": self.in_flight}


class ProducerStats:
    """A producer's publishes by ``(exchange, outcome)`` (``confirmed``, ``nacked``,
    ``returned``, ``failed``), its RPC calls by ``(name, outcome)`` (``success``, ``error``,
    ``exception``, ``timeout``, ``unroutable``, ``broker``) and their durations by name."""

    __slots__ = ("published", "rpc_calls", "rpc_seconds")

    def __init__(self) -> None:
        self.published: dict[tuple[str, str], int] = {}
        self.rpc_calls: dict[tuple[str, str], int] = {}
        self.rpc_seconds: dict[str, Histogram] = {}

    def publish(self, exchange: str, outcome: str, n: int = 1) -> None:
        key = (exchange, outcome)
        self.published[key] = self.published.get(key, 0) + n

    def rpc(self, name: str, outcome: str, seconds: float) -> None:
        key = (name, outcome)
        self.rpc_calls[key] = self.rpc_calls.get(key, 0) + 1
        histogram = self.rpc_seconds.get(name)
        if histogram is None:
            histogram = self.rpc_seconds[name] = Histogram()
        histogram.observe(seconds)


def rpc_outcome(result: Any) -> str:
    """The ``outcome`` label of an RPC call's result message."""
    kind = getattr(result, "result_type", None)
    if kind == "success":
        return "success"
    if kind == "error":
        return "error"
    value = getattr(result, "value", None)
    if value == "TimeoutError":
        return "timeout"
    if value == "UnroutableError":
        return "unroutable"
    if isinstance(value, str) and value.endswith(("BrokerConnectionError", "AuthenticationError",
                                                  "VirtualHostError")):
        return "broker"
    return "exception"


#: The live processors and producers of this process (weakly held).
components: weakref.WeakSet[Any] = weakref.WeakSet()
