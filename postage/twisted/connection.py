"""One AMQP connection on pika's ``TwistedProtocolConnection``, and the channel we use on it.

The adapter has sharp edges (``shared/PIKA-TWISTED-NOTES.md``) that this module files down:

- importing ``pika.adapters.twisted_connection`` installs the default reactor, so it is
  imported inside functions, once a reactor is wanted anyway;
- host and port in ``ConnectionParameters`` are ignored: we connect through a Twisted
  endpoint ourselves, trying each configured host in turn, within ``connect_timeout``;
- a failed handshake is reported by the adapter as a bare ``AMQPConnectionError``, hiding
  *why*; our protocol subclass keeps the real reason, so a wrong password or a missing vhost
  becomes :class:`AuthenticationError` / :class:`VirtualHostError` at once, never a hang;
- ``basic_ack``, ``basic_reject`` and ``close`` return ``None`` and ``basic_consume`` has a
  queue-based API that is slower than callbacks: :class:`Channel` offers callback consuming
  whose Deferreds end when the channel dies, and leaves confirm bookkeeping to the producer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionDone, DNSLookupError
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from postage.config import ConnectionSettings
from postage.errors import AuthenticationError, BrokerConnectionError, VirtualHostError
from postage.twisted import reader
from postage.twisted.frames import ChannelFrames
from postage.twisted.logs import PostageLogger

__all__ = ["Channel", "Connection", "connect", "translate_error"]

log = PostageLogger()

# AMQP reply codes the broker closes a connection with during the handshake.
_ACCESS_REFUSED = 403
_NOT_ALLOWED = 530


def _reactor(reactor: Any = None) -> Any:
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 - chosen by the application
    return reactor


def translate_error(error: BaseException, settings: ConnectionSettings) -> BrokerConnectionError:
    """Turn what pika or Twisted raised into our error family, with a message that says what
    to check and never holds the password."""
    from pika import exceptions  # noqa: PLC0415

    where = settings.describe()
    if isinstance(error, BrokerConnectionError):
        return error
    if isinstance(error, (exceptions.AuthenticationError, exceptions.ProbableAuthenticationError)):
        return AuthenticationError(
            f"the broker refused user {settings.user!r} at {where}: check the user and password "
            "(POSTAGE_RMQ_USER / POSTAGE_RMQ_PASSWORD, POSTAGE_RMQ_URL or hup)"
        )
    text = str(error)
    closed = isinstance(error, exceptions.ConnectionClosedByBroker)
    if closed and error.reply_code == _ACCESS_REFUSED and "vhost" not in text:
        return translate_error(exceptions.AuthenticationError(text), settings)
    if isinstance(error, exceptions.ProbableAccessDeniedError) or (
        closed and error.reply_code in (_NOT_ALLOWED, _ACCESS_REFUSED)
    ):
        return VirtualHostError(
            f"vhost {settings.vhost!r} does not exist or user {settings.user!r} may not use it "
            f"({where}): create it with rabbitmqctl add_vhost / set_permissions, or set "
            "POSTAGE_VHOST"
        )
    if isinstance(error, (ConnectError, DNSLookupError, defer.TimeoutError)):
        return BrokerConnectionError(f"cannot reach the broker at {where}: {error}")
    return BrokerConnectionError(f"connection to {where} failed: {error!r}")


def _protocol_class() -> type:
    """Our subclass of pika's protocol, built on first use (the import installs a reactor)."""
    global _PROTOCOL
    if _PROTOCOL is None:
        from pika.adapters.twisted_connection import TwistedProtocolConnection  # noqa: PLC0415

        class _Protocol(TwistedProtocolConnection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                reader.install(self._impl)  # deliveries read without pika's detours

            # pika replaces the handshake's real error with AMQPConnectionError(attempts);
            # keep it, so that a bad password is reported as one.
            def _on_connection_failed(self, _connection: Any, error: Any = None) -> None:
                d, self.ready = self.ready, None
                if d:
                    d.errback(error if error is not None else BrokerConnectionError("refused"))

            # When the broker closes the connection (Connection.Close), pika already holds
            # the reason; the adapter then overwrites it with Twisted's ConnectionDone.
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                impl = self._impl
                if impl._error is not None and reason.check(ConnectionDone):
                    impl._transport = None
                    impl._on_stream_terminated(None)
                    d, self.ready = self.ready, None
                    if d:
                        d.errback(reason)
                else:
                    super().connectionLost(reason)

        _PROTOCOL = _Protocol
    return _PROTOCOL


_PROTOCOL: type | None = None


def _endpoint(reactor: Any, host: str, port: int, tls: bool, timeout: float) -> Any:
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS  # noqa: PLC0415

    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls:
        from twisted.internet.ssl import optionsForClientTLS  # noqa: PLC0415

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def _parameters(settings: ConnectionSettings, name: str | None) -> Any:
    import pika  # noqa: PLC0415

    return pika.ConnectionParameters(
        virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.user, settings.password),
        heartbeat=settings.heartbeat,
        client_properties={"connection_name": name} if name else None,
    )


@defer.inlineCallbacks
def _connect_once(reactor: Any, settings: ConnectionSettings, name: str | None) -> Any:
    from twisted.internet.endpoints import connectProtocol  # noqa: PLC0415

    parameters = _parameters(settings, name)
    last: BaseException | None = None
    # connect_timeout bounds the whole attempt, every host included
    deadline = reactor.seconds() + settings.connect_timeout
    for host, port in settings.hosts:
        remaining = deadline - reactor.seconds()
        if remaining <= 0:
            break
        protocol = _protocol_class()(parameters, custom_reactor=reactor)
        try:
            endpoint = _endpoint(reactor, host, port, settings.tls, remaining)
            yield connectProtocol(endpoint, protocol)
            ready = protocol.ready
            ready.addTimeout(max(deadline - reactor.seconds(), 0.001), reactor)
            yield ready
        except Exception as exc:  # noqa: BLE001 - every failure is translated below
            error = translate_error(exc, settings.replace(hosts=((host, port),)))
            if isinstance(error, (AuthenticationError, VirtualHostError)):
                raise error from exc  # permanent: the next host would say the same
            log.debug("broker {host}:{port} failed: {error}", host=host, port=port, error=error)
            last = error
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            continue
        return protocol
    assert last is not None
    raise last


def connect(
    settings: ConnectionSettings, reactor: Any = None, name: str | None = None
) -> defer.Deferred[Connection]:
    """Connect to the first broker of ``settings.hosts`` that answers; the Deferred fires
    with a :class:`Connection`, or errbacks with a :class:`BrokerConnectionError` (its
    subclasses for a wrong password or vhost) within about ``connect_timeout`` per host."""
    reactor = _reactor(reactor)
    d = _connect_once(reactor, settings, name)
    return d.addCallback(lambda protocol: Connection(protocol, settings, reactor))


class Connection:
    """A live connection: opens :class:`Channel` objects, tells when it is lost."""

    def __init__(self, protocol: Any, settings: ConnectionSettings, reactor: Any) -> None:
        self.protocol = protocol
        self.settings = settings
        self.reactor = reactor
        self._lost_callbacks: list[Callable[[BrokerConnectionError], Any]] = []
        self.lost_reason: BrokerConnectionError | None = None
        protocol.closed.addBoth(self._on_closed)

    @property
    def is_open(self) -> bool:
        return self.lost_reason is None and self.protocol.is_open

    def on_lost(self, callback: Callable[[BrokerConnectionError], Any]) -> None:
        """Call ``callback(error)`` when the connection closes, whatever closed it."""
        self._lost_callbacks.append(callback)

    def on_blocked(self, blocked: Callable[..., Any], unblocked: Callable[..., Any]) -> None:
        """Call ``blocked()`` / ``unblocked()`` when the broker blocks publishing (a memory
        or disk alarm) and lifts it; publishers must hold their messages meanwhile."""
        self.protocol._impl.add_on_connection_blocked_callback(blocked)
        self.protocol._impl.add_on_connection_unblocked_callback(unblocked)

    def _on_closed(self, reason: Any) -> None:
        if isinstance(reason, Failure):
            reason = reason.value
        from pika.exceptions import ConnectionClosedByClient  # noqa: PLC0415

        if isinstance(reason, ConnectionClosedByClient):
            error = BrokerConnectionError(f"connection to {self.settings.describe()} was closed")
        else:
            error = BrokerConnectionError(
                f"connection to {self.settings.describe()} was lost: {reason!r}"
            )
            log.warn("{error}", error=error)
        self.lost_reason = error
        for callback in self._lost_callbacks:
            callback(error)
        self._lost_callbacks.clear()

    @defer.inlineCallbacks
    def channel(self) -> Any:
        """Open a channel; the Deferred fires with a :class:`Channel`."""
        if self.lost_reason is not None:
            raise self.lost_reason
        twisted_channel = yield self.protocol.channel()
        return Channel(twisted_channel)

    def close(self) -> defer.Deferred[None]:
        """Close the connection; the Deferred fires once it is closed."""
        if self.lost_reason is not None or self.protocol.closed is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.on_lost(lambda _: d.callback(None))
        self.protocol.close()
        return d


class Channel:
    """A pika channel with the calls we need, each ending when the channel dies.

    ``impl`` is pika's plain ``Channel`` (for publishing, acks and callback consuming, the
    per-message calls, kept free of Deferred overhead); ``twisted`` is pika's
    ``TwistedChannel`` (Deferred-returning declarations).
    """

    def __init__(self, twisted_channel: Any) -> None:
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
        """``basic.cancel``; fires once the broker confirmed (or the channel is gone)."""
        if not self.is_open:
            return defer.succeed(None)
        d = self._track()
        self.impl.basic_cancel(consumer_tag, callback=lambda _frame: d.callback(None))
        return d

    def confirm_delivery(self, on_ack_nack: Callable[[Any], Any]) -> defer.Deferred[None]:
        """Turn on publisher confirms; ``on_ack_nack(frame)`` gets every Basic.Ack/Nack."""
        d = self._track()
        self.impl.confirm_delivery(on_ack_nack, callback=lambda _frame: d.callback(None))
        return d

    def close(self) -> defer.Deferred[None]:
        """Close the channel; fires once it is closed (pika's close returns None)."""
        if not self.is_open:
            return defer.succeed(None)
        if self._frames is not None:
            self._frames.flush()  # acks waiting for the end of this turn go out first
        d: defer.Deferred[None] = defer.Deferred()
        self.twisted.on_closed.addBoth(lambda _: d.callback(None))
        self.impl.close()
        return d


class Backoff:
    """Reconnection delays: from ``start`` seconds, doubling, capped at ``cap``, each
    jittered by ±20% so that a fleet does not reconnect in step."""

    def __init__(self, start: float = 0.5, cap: float = 30.0, jitter: float = 0.2,
                 rand: Callable[[float, float], float] | None = None) -> None:
        import random  # noqa: PLC0415

        self.start = start
        self.cap = cap
        self.jitter = jitter
        self._rand = rand or random.uniform
        self._next = start

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * self._rand(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self._next = self.start


class Session:
    """Keeps one connection to the broker for its owner, across losses.

    ``setup(connection)`` runs after every successful connection (the first and each
    reconnection) and declares what the owner needs; ``lost(error)`` is told each loss. The
    first connection fails :meth:`start` after ``connect_timeout``; after that a loss is
    retried forever with :class:`Backoff`, except a wrong password or vhost, which ends the
    session (``failed(error)``), since retrying cannot help.
    """

    def __init__(self, settings: ConnectionSettings, reactor: Any, name: str | None,
                 setup: Callable[[Connection], Any], lost: Callable[[Exception], Any],
                 failed: Callable[[Exception], Any]) -> None:
        self.settings = settings
        self.reactor = reactor
        self.name = name
        self._setup = setup
        self._lost = lost
        self._failed = failed
        self.connection: Connection | None = None
        self.closing = False
        self.backoff = Backoff()
        self._retry: Any = None
        self._shutdown_trigger: Any = None
        # for describe and metrics: plain values, read when asked
        self.connected_since: float | None = None  # POSIX time of the current connection
        self.connections = 0  # connections made; reconnections are the ones after the first

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Connect and set up; errbacks if the first connection cannot be made.

        When the reactor shuts down, the session closes its connection instead of
        reconnecting, in the "during" phase: services stopping "before" it (a processor
        finishing its handlers and acking) still have their connection."""
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self.close)
        yield self._connect()

    @defer.inlineCallbacks
    def _connect(self) -> Any:
        connection = yield connect(self.settings, self.reactor, self.name)
        if self.closing:  # closed while connecting: leave nothing open
            yield connection.close()
            raise BrokerConnectionError("closed before the connection was made")
        self.connection = connection
        connection.on_lost(lambda error: self._on_lost(connection, error))
        try:
            yield self._setup(connection)
        except Exception:
            self.connection = None  # its loss is this failure, reported by the caller
            if connection.is_open:
                connection.protocol.transport.abortConnection()
            raise
        self.backoff.reset()
        self.connected_since = time.time()
        self.connections += 1

    def _on_lost(self, connection: Connection, error: Exception) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.connected_since = None
        if self.closing:
            return
        self._lost(error)
        self._schedule()

    def _schedule(self) -> None:
        delay = self.backoff.next()
        log.info("reconnecting to {where} in {delay:.1f}s", where=self.settings.describe(),
                 delay=delay)
        self._retry = self.reactor.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._retry = None
        if self.closing:
            return

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, (AuthenticationError, VirtualHostError)):
                log.error("giving up: {error}", error=error)
                self._failed(error)
            else:
                log.warn("reconnection failed: {error}", error=error)
                self._schedule()

        self._connect().addErrback(failed)

    def close(self) -> defer.Deferred[None]:
        """Stop reconnecting and close the connection."""
        self.closing = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._shutdown_trigger is not None:
            trigger, self._shutdown_trigger = self._shutdown_trigger, None
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except ValueError:  # already fired: we are being called by it
                pass
        if self.connection is None:
            return defer.succeed(None)
        return self.connection.close()
