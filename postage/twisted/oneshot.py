"""A result that many may wait for, each with a Deferred of its own.

A plain Deferred's callbacks chain: a waiter that returns something else changes what the
next one gets. ``producer.ready`` and ``processor.start()`` may be waited on by many, any
time, before or after the fact, so they hand out a fresh Deferred per waiter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["OneAtATime", "OneShot"]

_PENDING = object()


class OneShot:
    """Fire once with :meth:`fire`; :meth:`when` gives each waiter its own Deferred."""

    def __init__(self) -> None:
        self._waiters: list[defer.Deferred[Any]] = []
        self._result: Any = _PENDING

    @property
    def called(self) -> bool:
        return self._result is not _PENDING

    def when(self) -> defer.Deferred[Any]:
        if self._result is _PENDING:
            d: defer.Deferred[Any] = defer.Deferred()
            self._waiters.append(d)
            return d
        if isinstance(self._result, Failure):
            return defer.fail(self._result)
        return defer.succeed(self._result)

    def fire(self, result: Any) -> None:
        """Fire with a value or a Failure (later calls are ignored)."""
        if self._result is not _PENDING:
            return
        self._result = result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


class OneAtATime:
    """Runs ``operation()`` (which returns a Deferred) one at a time: called while a run is
    under way, it waits for that run instead of starting another. Opening a channel is such
    an operation: two openings at once would make two channels where one is wanted."""

    def __init__(self, operation: Callable[[], defer.Deferred[Any]]) -> None:
        self._operation = operation
        self._running: OneShot | None = None

    def __call__(self) -> defer.Deferred[Any]:
        if self._running is None:
            running = self._running = OneShot()

            def done(result: Any) -> None:
                self._running = None
                running.fire(result)

            self._operation().addBoth(done)
        return self._running.when()
