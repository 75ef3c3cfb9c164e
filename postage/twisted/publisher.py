"""The publishing channel of a producer: declare exchanges, publish, and keep the confirm
window right across channel errors and reconnections.

Everything a producer publishes goes through :meth:`Publisher.publish`: one path that
declares an ``Exchange`` class the first time it is used on a connection, then publishes on
the channel in confirm mode (or queues the publish while there is none, the broker blocks
publishers, or ``max_unconfirmed`` publishes are in flight). The bookkeeping is the plain
:class:`~postage.twisted.confirms.ConfirmWindow`; this module only moves frames.

A channel the broker closes (a publish to a missing exchange) is opened again, one opening
at a time (two channels must never share the window's tags) and with backoff between failed
ones (:class:`~postage.twisted.recovery.Recovery`).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pika import exceptions
from twisted.internet import defer

from postage.errors import PublishError
from postage.exchanges import Exchange, exchange_name
from postage.twisted.confirms import ConfirmWindow, Publish
from postage.twisted.connection import Channel, Connection
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneAtATime
from postage.twisted.recovery import Recovery

__all__ = ["Publisher", "closed_by_broker"]

log = PostageLogger()


def _channel_trouble(error: BaseException) -> bool:
    """Whether pika refused a publish because of its channel (then it waits for the next
    one) rather than because of the publish itself (then that call fails)."""
    return isinstance(error, (exceptions.ChannelWrongStateError, exceptions.ChannelClosed,
                              exceptions.ConnectionWrongStateError))


def closed_by_broker(reason: Any) -> bool:
    """Whether a channel was closed by the broker for an error of its own (not with its
    connection, nor by us)."""
    return isinstance(reason, exceptions.ChannelClosedByBroker)


class Publisher:
    """Publishes with confirms on a channel of its own; see the module docstring.

    ``exchanges`` are declared on every new channel; ``on_open()`` is called each time a
    channel is ready (the first and every re-opened one).
    """

    def __init__(self, clock: Any, *, confirm: bool = True, max_unconfirmed: int = 1000,
                 max_waiting: int = 10000, wait_timeout: float = 60.0,
                 exchanges: Iterable[Any] = (), on_open: Callable[[], Any] | None = None
                 ) -> None:
        self.clock = clock
        self.confirm = confirm
        self.window = ConfirmWindow(clock, max_unconfirmed, max_waiting, wait_timeout)
        self.exchanges = [exchange for exchange in exchanges if isinstance(exchange, type)]
        self.declared: set[str] = {""}
        self.connection: Connection | None = None
        self.channel: Channel | None = None
        self._frames: Any = None  # the channel's ChannelFrames
        self._on_open = on_open or (lambda: None)
        self._open = OneAtATime(self._open_channel)  # one channel opening at a time
        self._closed = False
        self._recovery = Recovery(clock, "the producer's channel", lambda: (
            not self._closed and self.connection is not None and self.connection.is_open))
        self._ids = itertools.count(1)
        self._id_prefix = f"postage.{uuid.uuid4().hex[:8]}."

    # ---- channel lifecycle ------------------------------------------------------------

    def open(self, connection: Connection) -> defer.Deferred[Any]:
        """Open the channel on a new connection (the first, or a reconnection)."""
        self.connection = connection
        self.declared = {""}
        connection.on_blocked(self._on_blocked, self._on_unblocked)
        self.window.blocked = False
        return self._open()

    @defer.inlineCallbacks
    def _open_channel(self) -> Any:
        connection = self.connection
        # open() sets it just before, and Recovery calls _open only while its alive() sees
        # it; both synchronously, before this first line of the generator
        assert connection is not None
        channel = yield connection.channel()
        channel.twisted.on_closed.addCallback(self._on_channel_closed, channel)
        channel.impl.add_on_return_callback(self._on_return)
        for exchange in self.exchanges:
            yield self.declare(exchange, channel)
        if self.confirm:
            yield channel.confirm_delivery(self._on_confirm)
        if self._closed or connection is not self.connection or not channel.is_open:
            yield channel.close()
            return
        self.channel = channel
        self._frames = channel.frames
        self.window.channel_open()
        self._flush()
        self._on_open()

    def lost(self, error: BaseException) -> None:
        """The connection is gone: unconfirmed publishes wait for the next one."""
        self.channel = None
        self.connection = None
        self._recovery.cancel()
        self.window.channel_lost(error)

    def _on_channel_closed(self, reason: Any, channel: Channel) -> None:
        if channel is not self.channel:
            return  # closed by us, or already replaced
        self.channel = None
        reason = getattr(reason, "value", reason)
        # only the broker's own channel errors say something about the publishes; a channel
        # closed with its connection is just lost
        self.window.channel_lost(reason if closed_by_broker(reason) else None)
        if self._closed or self.connection is None or not self.connection.is_open:
            return  # the connection went with it: lost() is told
        log.warn("the broker closed the producer's channel ({reason}): opening a new one",
                 reason=reason)
        self._recovery.start(self._open)

    def fail_all(self, error: BaseException) -> None:
        """Nothing will be published any more: every waiting publish fails."""
        self._closed = True
        self._recovery.cancel()
        self.window.fail_all(error)

    # ---- declaring and publishing ------------------------------------------------------

    def declare(self, exchange: type[Exchange] | str, channel: Channel | None = None
                ) -> defer.Deferred[Any]:
        """Declare an ``Exchange`` class once per connection (a name is never declared)."""
        name = exchange_name(exchange)  # (a TypeError for anything but those two)
        if name in self.declared or isinstance(exchange, str):
            return defer.succeed(None)
        channel = channel or self.channel
        if channel is None:
            return self.when_open().addCallback(lambda _: self.declare(exchange))
        return channel.exchange_declare(**exchange.parameters).addCallback(
            lambda _: self.declared.add(name))

    def when_open(self) -> defer.Deferred[Any]:
        """Fires when a channel is there (at once when it is)."""
        if self.channel is not None:
            return defer.succeed(None)
        if self.window.error is not None:
            return defer.fail(self.window.error)
        d: defer.Deferred[Any] = defer.Deferred()
        self.window.hold(_Marker(d))
        return d

    def publish(self, exchange: type[Exchange] | str, key: str, body: str | bytes, properties: Any,
                mandatory: bool = False, traceparent: bytes | None = None
                ) -> defer.Deferred[None]:
        """Publish; fires when the broker confirmed it (at once without confirms).
        ``exchange`` is a name or an ``Exchange`` class, declared first if need be."""
        if isinstance(exchange, type):
            name = exchange_name(exchange)
            if name not in self.declared:
                return self.declare(exchange).addCallback(
                    lambda _: self.publish(name, key, body, properties, mandatory,
                                           traceparent))
            exchange = name
        message_id = None
        if mandatory and self.confirm:
            # a return names no delivery tag: the message id finds the publish again
            message_id = f"{self._id_prefix}{next(self._ids)}"
            properties = copy.copy(properties)
            properties.message_id = message_id
        publish = Publish(exchange, key, body, properties, mandatory, message_id, traceparent)
        if self.window.may_send_now() and self.channel is not None:
            self._send(publish)
            return publish.deferred
        return self.window.hold(publish)

    def _send(self, publish: Publish) -> None:
        if isinstance(publish, _Marker):
            publish.deferred.callback(None)
            return
        try:
            self._frames.publish(publish.exchange, publish.key, publish.body,
                                 publish.properties, publish.mandatory, publish.traceparent)
        except Exception as exc:  # noqa: BLE001 - pika's refusals are many; sorted below
            if _channel_trouble(exc):
                self.window.backlog.appendleft(publish)
                return
            publish.deferred.errback(PublishError(
                f"cannot publish to {publish.exchange!r}/{publish.key!r}: {exc}"))
            return
        if self.confirm:
            self.window.sent(publish)
        else:
            publish.deferred.callback(None)

    def _flush(self) -> None:
        window = self.window
        while self.channel is not None:
            publish = window.next_to_send()
            if publish is None:
                return
            self._send(publish)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self.window.confirm(method.delivery_tag, method.multiple,
                            nack=method.NAME == "Basic.Nack")
        if self.window.refill_wanted():
            self._flush()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        if not self.window.returned_message(properties.message_id):
            log.warn("message to {exchange!r}/{key!r} was returned: {text}",
                     exchange=method.exchange, key=method.routing_key, text=method.reply_text)

    def _on_blocked(self, *_args: Any) -> None:
        log.warn("the broker blocked publishing (resource alarm): publishes wait")
        self.window.blocked = True

    def _on_unblocked(self, *_args: Any) -> None:
        log.info("the broker unblocked publishing")
        self.window.blocked = False
        self._flush()


class _Marker(Publish):
    """A place in the backlog that publishes nothing: whoever waits for a channel is told
    when the publishes queued before it go out."""

    def __init__(self, d: defer.Deferred[Any]) -> None:
        super().__init__("", "", b"", None, False)
        self.deferred = d
