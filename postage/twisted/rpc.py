"""The RPC client's bookkeeping: calls in flight, keyed by correlation id.

Plain data plus a clock, in the manner of h11: no channel, no broker. The producer hands
each call a ``send()`` function that publishes one attempt; this table times the attempts,
retries with the *same* correlation id (so the first reply to any attempt wins), and ends
every call with a result message, never an errback:

- a reply → the decoded result message;
- no reply after the last attempt → ``MessageResultException("TimeoutError", ...)``;
- an attempt that cannot be delivered (unroutable, nacked, connection gone) →
  ``MessageResultException(<that error's name>, ...)`` at once.

Every call therefore ends within ``timeout × (max_retry + 1)``.

Tests drive it with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer

from postage.messages import Message, MessageResultException
from postage.twisted.logs import PostageLogger

__all__ = ["PendingCall", "RpcCalls"]

log = PostageLogger()


class PendingCall:
    """One call in flight."""

    __slots__ = ("attempts_left", "correlation_id", "deferred", "description", "send", "timeout",
                 "timer")

    def __init__(self, correlation_id: str, send: Callable[[], Any], timeout: float,
                 max_retry: int, description: str) -> None:
        self.correlation_id = correlation_id
        self.send = send
        self.timeout = timeout
        self.attempts_left = max_retry + 1
        self.description = description
        self.deferred: defer.Deferred[Message] = defer.Deferred()
        self.timer: Any = None


class RpcCalls:
    """The table of calls in flight; ``clock`` provides ``callLater``; ``down()`` returns
    the connection error while the broker is unreachable (None otherwise), so that a call
    whose last attempt times out then ends as that error rather than as a timeout."""

    def __init__(self, clock: Any, down: Callable[[], BaseException | None] | None = None
                 ) -> None:
        self.clock = clock
        self._down = down or (lambda: None)
        self._calls: dict[str, PendingCall] = {}

    def down(self) -> BaseException | None:
        """The connection error while the broker is unreachable, else None."""
        return self._down()

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, correlation_id: str) -> bool:
        return correlation_id in self._calls

    def call(self, correlation_id: str, send: Callable[[], Any], timeout: float,
             max_retry: int, description: str = "rpc") -> defer.Deferred[Message]:
        """Start a call: ``send()`` now and again after each ``timeout`` seconds without a
        reply, ``max_retry`` times at most. Fires with the result message."""
        call = PendingCall(correlation_id, send, timeout, max(0, max_retry), description)
        self._calls[correlation_id] = call
        self._attempt(call)
        return call.deferred

    def _attempt(self, call: PendingCall) -> None:
        call.attempts_left -= 1
        call.timer = self.clock.callLater(call.timeout, self._on_timeout, call)
        try:
            call.send()
        except Exception as exc:  # noqa: BLE001 - a send that raises ends the call, as data
            self.fail(call.correlation_id, type(exc).__name__, str(exc))

    def _on_timeout(self, call: PendingCall) -> None:
        call.timer = None
        if self._calls.get(call.correlation_id) is not call:
            return
        if call.attempts_left > 0:
            log.debug("{call} timed out, retrying ({left} left)", call=call.description,
                      left=call.attempts_left)
            self._attempt(call)
        elif (error := self._down()) is not None:
            self.fail(call.correlation_id, type(error).__name__,
                      f"{call.description}: the broker stayed unreachable: {error}")
        else:
            self.fail(call.correlation_id, "TimeoutError",
                      f"{call.description}: no reply after {call.timeout}s")

    def _finish(self, correlation_id: str, result: Message) -> bool:
        call = self._calls.pop(correlation_id, None)
        if call is None:
            return False
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.deferred.callback(result)
        return True

    def reply(self, correlation_id: str, result: Message) -> bool:
        """A reply arrived; True when it ended a call (a late or stray reply is dropped)."""
        return self._finish(correlation_id, result)

    def fail(self, correlation_id: str, name: str, text: str) -> bool:
        """End a call with ``MessageResultException(name, text)``."""
        return self._finish(correlation_id, MessageResultException(name, text))

    def resend(self, correlation_ids: Iterable[str]) -> None:
        """Send these calls in flight once more, now, without using up an attempt: their
        replies would have come on a channel that is gone (direct reply-to addresses a
        channel), so waiting for each timer would only add delay."""
        for correlation_id in correlation_ids:
            call = self._calls.get(correlation_id)
            if call is None:
                continue
            try:
                call.send()
            except Exception as exc:  # noqa: BLE001 - as in _attempt
                self.fail(correlation_id, type(exc).__name__, str(exc))

    def fail_all(self, name: str, text: str) -> None:
        """End every call in flight (the connection is gone)."""
        for correlation_id in list(self._calls):
            self.fail(correlation_id, name, text)
