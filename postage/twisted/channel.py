"""A pika channel with the calls Postage needs, each ending when the channel dies, and the
waits of a stop (``basic.cancel``, ``channel.close``) bounded.

pika's ``basic_ack``, ``basic_reject`` and ``close`` return ``None`` and its ``basic_consume``
has a queue-based API that is slower than callbacks: :class:`Channel` offers callback
consuming whose Deferreds end when the channel dies, and leaves confirm bookkeeping to the
producer. A stop must end whatever the broker does: when the broker does not answer a
cancel or a close within :data:`CLOSE_TIMEOUT` (a silent link), the connection's transport
is aborted, which ends every other wait on it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from postage.twisted.frames import ChannelFrames
from postage.twisted.logs import PostageLogger

__all__ = ["CLOSE_TIMEOUT", "Channel", "bounded"]

log = PostageLogger()

CLOSE_TIMEOUT = 3.0  # seconds a stop waits for one broker answer before aborting the link


def bounded(d: defer.Deferred[Any], reactor: Any, abort: Callable[[], Any] | None,
            what: str, timeout: float = CLOSE_TIMEOUT) -> defer.Deferred[None]:
    """``d`` within ``timeout`` seconds; past that the link is aborted (``abort()``) and the
    result is None: a stop goes on instead of waiting for a broker that does not answer.
    Errors other than the timeout are ignored too: the thing being closed is gone."""
    result: defer.Deferred[None] = defer.Deferred()

    def expired() -> None:
        if result.called:
            return
        log.warn("the broker did not answer {what} within {timeout:g}s: aborting the link",
                 what=what, timeout=timeout)
        if abort is not None:
            abort()
        result.callback(None)

    timer = reactor.callLater(timeout, expired)

    def done(_: Any) -> None:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(None)

    d.addBoth(done)
    return result


class Channel:
    """A pika channel with the calls we need, each ending when the channel dies.

    ``impl`` is pika's plain ``Channel`` (for publishing, acks and callback consuming, the
    per-message calls, kept free of Deferred overhead); ``twisted`` is pika's
    ``TwistedChannel`` (Deferred-returning declarations).
    """

    def __init__(self, twisted_channel: Any, reactor: Any = None,
                 abort: Callable[[], Any] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415 - chosen by the application
        self.reactor = reactor
        self._abort = abort  # drops the whole connection: for a stop the broker ignores
        self.twisted = twisted_channel
        self.impl = twisted_channel._channel
        self._pending: set[defer.Deferred[Any]] = set()
        self._frames: ChannelFrames | None = None
        self.closed_reason: BaseException | None = None
        twisted_channel.on_closed.addBoth(self._on_closed)
        # declarations: pika's Deferred wrappers, not called once the channel is closing
        self.exchange_declare = self._guard(twisted_channel.exchange_declare)
        self.queue_declare = self._guard(twisted_channel.queue_declare)
        self.queue_bind = self._guard(twisted_channel.queue_bind)
        self.queue_unbind = self._guard(twisted_channel.queue_unbind)
        self.queue_delete = self._guard(twisted_channel.queue_delete)
        self.exchange_delete = self._guard(twisted_channel.exchange_delete)
        self.basic_qos = self._guard(twisted_channel.basic_qos)

    def _guard(self, method: Callable[..., Any]) -> Callable[..., defer.Deferred[Any]]:
        # pika's wrapper, called on a closing channel, raises and returns a failure but
        # leaves a Deferred of its own behind that errbacks unhandled when the channel closes
        # ("Unhandled error in Deferred"): fail here instead.
        def call(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            if not self.is_open:
                from pika.exceptions import ChannelWrongStateError  # noqa: PLC0415

                return defer.fail(self.closed_reason or ChannelWrongStateError(
                    "the channel is closing"))
            return method(*args, **kwargs)

        return call

    @property
    def is_open(self) -> bool:
        return self.closed_reason is None and self.impl.is_open

    @property
    def frames(self) -> ChannelFrames:
        """The per-message calls (publish, ack) of this channel, written by Postage."""
        frames = self._frames
        if frames is None:
            frames = self._frames = ChannelFrames(self.impl)
        return frames

    def _on_closed(self, result: Any) -> Any:
        reason = result.value if isinstance(result, Failure) else result
        self.closed_reason = reason if isinstance(reason, BaseException) else Exception(reason)
        pending, self._pending = self._pending, set()
        for d in pending:
            d.errback(self.closed_reason)
        return result  # callbacks added to on_closed after ours still see the reason

    def _track(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._pending.add(d)
        d.addBoth(self._untrack, d)
        return d

    def _untrack(self, result: Any, d: defer.Deferred[Any]) -> Any:
        self._pending.discard(d)
        return result

    def consume(
        self,
        queue: str,
        on_message: Callable[..., Any],
        auto_ack: bool = False,
        exclusive: bool = False,
    ) -> defer.Deferred[str]:
        """``basic.consume`` with a callback per delivery (pika's ``(channel, method,
        properties, body)``); the Deferred fires with the consumer tag."""
        if self.closed_reason is not None:
            return defer.fail(self.closed_reason)
        d = self._track()
        self.impl.basic_consume(
            queue,
            on_message,
            auto_ack=auto_ack,
            exclusive=exclusive,
            callback=lambda frame: d.callback(frame.method.consumer_tag),
        )
        return d

    def cancel(self, consumer_tag: str) -> defer.Deferred[None]:
        """``basic.cancel``; fires once the broker confirmed, the channel is gone, or after
        :data:`CLOSE_TIMEOUT` (the link is then aborted)."""
        if not self.is_open:
            return defer.succeed(None)
        d = self._track()
        self.impl.basic_cancel(consumer_tag, callback=lambda _frame: d.callback(None))
        return bounded(d, self.reactor, self._abort, "basic.cancel")

    def confirm_delivery(self, on_ack_nack: Callable[[Any], Any]) -> defer.Deferred[None]:
        """Turn on publisher confirms; ``on_ack_nack(frame)`` gets every Basic.Ack/Nack."""
        d = self._track()
        self.impl.confirm_delivery(on_ack_nack, callback=lambda _frame: d.callback(None))
        return d

    def close(self) -> defer.Deferred[None]:
        """Close the channel; fires once it is closed (pika's close returns None), or after
        :data:`CLOSE_TIMEOUT` (the link is then aborted)."""
        if not self.is_open:
            return defer.succeed(None)
        if self._frames is not None:
            self._frames.flush()  # acks waiting for the end of this turn go out first
        d: defer.Deferred[None] = defer.Deferred()

        def closed(result: Any) -> Any:
            d.callback(None)
            return result  # later callbacks on on_closed still see the reason

        self.twisted.on_closed.addBoth(closed)
        self.impl.close()
        return bounded(d, self.reactor, self._abort, "channel.close")
