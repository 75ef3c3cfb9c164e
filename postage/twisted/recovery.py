"""Recovering a channel the broker closed under a live connection: one attempt at a time,
with Twisted's ``backoffPolicy`` between failed ones.

A channel error (a refused declaration, a publish to a missing exchange, a delivery-ack
timeout) closes only the channel. Opening it again at once is right the first time; but
when the cause stays (a queue declared with other flags), retrying at once loops
open/declare/close hundreds of times a second. Publishers, the RPC client and consumers
all recover the same way, through :class:`Recovery`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer

from postage.twisted.logs import PostageLogger

__all__ = ["Recovery"]

log = PostageLogger()


class Recovery:
    """Runs recovery attempts for ``what`` while ``alive()`` (the connection lasts and the
    owner still wants it): the first at once, each next one after a backoff delay (from
    0.5 s, doubling, at most 30 s)."""

    def __init__(self, clock: Any, what: str, alive: Callable[[], bool]) -> None:
        self.clock = clock
        self.what = what
        self.alive = alive
        self.busy = False  # an attempt runs or is scheduled
        self._delay = backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=30.0)
        self._failures = 0
        self._call: Any = None

    def start(self, attempt: Callable[[], defer.Deferred[Any]]) -> None:
        """Recover with ``attempt`` (ignored while a recovery is under way)."""
        if self.busy:
            return
        self.busy = True
        self._run(attempt)

    def _run(self, attempt: Callable[[], defer.Deferred[Any]]) -> None:
        self._call = None
        if not self.alive():
            self.busy = False
            return
        attempt().addCallbacks(self._succeeded, self._failed, errbackArgs=(attempt,))

    def _succeeded(self, _: Any) -> None:
        self.busy = False
        self._failures = 0

    def _failed(self, failure: Any, attempt: Callable[[], defer.Deferred[Any]]) -> None:
        if not self.busy:
            return  # cancelled meanwhile
        delay = self._delay(self._failures)
        self._failures += 1
        log.error("cannot recover {what} ({error}); trying again in {delay:.1f}s",
                  what=self.what, error=failure.value, delay=delay)
        self._call = self.clock.callLater(delay, self._run, attempt)

    def cancel(self) -> None:
        """Stop recovering (the connection is gone, or the owner is closing)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.busy = False
        self._failures = 0
