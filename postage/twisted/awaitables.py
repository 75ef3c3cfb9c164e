"""What a handler returns, made a Deferred: coroutines that await Deferreds, and, under the
asyncio reactor, asyncio futures, tasks and the coroutines of asyncio libraries too.

``Deferred.fromCoroutine`` drives a coroutine with Twisted's trampoline, which knows only
Deferreds: an asyncio future awaited inside fails with "await wasn't used with future". The
generator :func:`_drive` stands between the two: it passes each Deferred the coroutine waits
on to Twisted as it is, and turns each asyncio future into a Deferred
(``Deferred.fromFuture``), which is what an asyncio ``Task`` would have waited on.
"""

from __future__ import annotations

from asyncio import isfuture
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from twisted.internet import defer

__all__ = ["deferred"]


def deferred(awaitable: Awaitable[Any]) -> defer.Deferred[Any]:
    """A Deferred for ``awaitable`` (a coroutine, an asyncio future, anything awaitable)."""
    if isinstance(awaitable, defer.Deferred):
        return awaitable
    if isfuture(awaitable):
        return defer.Deferred.fromFuture(awaitable)
    if not isinstance(awaitable, Coroutine):
        awaitable = _as_coroutine(awaitable)
    return defer.Deferred.fromCoroutine(_drive(awaitable))


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _drive(coroutine: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Run ``coroutine`` under Twisted, awaiting the asyncio futures it yields as well."""
    step: Any = coroutine.send
    value: Any = None
    while True:
        try:
            yielded = step(value)
        except StopIteration as stop:
            return stop.value
        if isfuture(yielded):
            # what asyncio's Task does before it waits: the future then knows it was
            # awaited properly, and returns its result when the coroutine resumes
            yielded._asyncio_future_blocking = False
            yielded = defer.Deferred.fromFuture(yielded)
        try:
            value = yield yielded
            step = coroutine.send
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as asyncio does
            value = exc
            step = coroutine.throw
