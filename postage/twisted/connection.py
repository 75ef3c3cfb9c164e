"""Keeping a connection to the broker: one :class:`Connection`, and a :class:`Session` that
makes it again after every loss, on Twisted's ``ClientService``.

The reconnection machinery is Twisted's: ``ClientService`` with ``backoffPolicy`` (from
0.5 s, doubling, capped at 30 s, jittered, see :func:`reconnect_policy`), its
``prepareConnection`` running the owner's set-up (channels, topology, consumers) on every new
connection, and ``whenConnected(failAfterFailures=1)`` bounding the first connection. Two
things ``ClientService`` cannot do alone, and how we bridge them:

- It takes a connection for made when its endpoint's Deferred fires, and pika's protocol is
  only usable after the AMQP handshake (``ready``). Our endpoint
  (:class:`~postage.twisted.amqp.BrokerEndpoint`) fires only after the handshake, trying the
  hosts in turn, so "connected" means "usable"; a handshake that fails (a wrong password)
  is a failed attempt like a refused port.
- It expects no link to be lost before a connection counts as made, nor after a failed
  ``prepareConnection`` (it raises ``NoTransition`` then, and never closes that link itself).
  A :class:`~postage.twisted.amqp.Gate` keeps such losses from it, and a set-up that fails
  or is cancelled aborts its link.

What is permanent is decided once, by the error classes (``permanent = True`` on
``AuthenticationError``, ``VirtualHostError`` and ``TLSVerificationError``, see
:func:`is_permanent`): such an error ends the session instead of being retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from postage.config import ConnectionSettings
from postage.errors import BrokerConnectionError
from postage.twisted.amqp import BrokerEndpoint, ProtocolFactory, translate_error
from postage.twisted.channel import CLOSE_TIMEOUT, Channel, bounded
from postage.twisted.logs import PostageLogger

__all__ = ["Channel", "Connection", "Session", "connect", "is_permanent", "reconnect_policy",
           "translate_error"]

log = PostageLogger()

INITIAL_DELAY = 0.5
MAX_DELAY = 30.0
JITTER = 0.5  # seconds: up to this much is added to each delay, so a fleet does not step


def _reactor(reactor: Any = None) -> Any:
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 - chosen by the application
    return reactor


def is_permanent(error: BaseException) -> bool:
    """True when retrying cannot help: the error's class says ``permanent = True``."""
    return bool(getattr(error, "permanent", False))


def reconnect_policy(rand: Callable[[], float] = random.random) -> Callable[[int], float]:
    """``ClientService``'s ``retryPolicy``: the delay before retry number ``attempt`` (1, 2,
    ...) is 0.5, 1, 2, 4, ... seconds, capped at 30, plus ``rand() × 0.5`` seconds of jitter
    (``rand`` returns a float in [0, 1); tests pass their own)."""
    from twisted.application.internet import backoffPolicy  # noqa: PLC0415

    policy = backoffPolicy(initialDelay=INITIAL_DELAY, factor=2, maxDelay=MAX_DELAY,
                           jitter=lambda: rand() * JITTER)
    # backoffPolicy's first retry waits initialDelay × factor: shift so that it waits 0.5 s
    return lambda attempt: policy(max(attempt - 1, 0))


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

    def abort(self) -> None:
        """Drop the link at once, buffered data and all (a broker that does not answer)."""
        self.protocol.abort()

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
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback(error)

    @defer.inlineCallbacks
    def channel(self) -> Any:
        """Open a channel; the Deferred fires with a :class:`Channel`."""
        if self.lost_reason is not None:
            raise self.lost_reason
        twisted_channel = yield self.protocol.channel()
        return Channel(twisted_channel, self.reactor, self.abort)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> defer.Deferred[None]:
        """Close the connection; fires once it is closed, or after ``timeout`` seconds
        without the broker's answer (the link is then aborted)."""
        if self.lost_reason is not None or self.protocol.closed is None:
            if self.protocol.transport is not None and not self.protocol.is_open:
                self.abort()  # a handshake still running: nothing to close gracefully
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.on_lost(lambda _: d.callback(None))
        self.protocol.close()
        return bounded(d, self.reactor, self.abort, "connection.close", timeout)


@defer.inlineCallbacks
def connect(settings: ConnectionSettings, reactor: Any = None, name: str | None = None) -> Any:
    """One connection, not kept: to the first of ``settings.hosts`` that answers. Fires with a
    :class:`Connection`, or errbacks with a :class:`BrokerConnectionError` (a subclass for a
    wrong password, vhost or certificate) within about ``connect_timeout``."""
    reactor = _reactor(reactor)
    proxy = yield BrokerEndpoint(settings, reactor).connect(
        ProtocolFactory(settings, reactor, name))
    proxy.amqp.gate.open = True  # nobody else watches this link
    return Connection(proxy.amqp, settings, reactor)


class Session:
    """Keeps one connection to the broker for its owner, across losses.

    ``setup(connection)`` runs on every new connection (the first and each reconnection,
    as ``ClientService``'s ``prepareConnection``) and declares what the owner needs; a set-up
    that fails drops that connection and counts as a failed attempt. ``lost(error)`` is told
    of each loss of a connection that was set up (or being set up). The first connection
    fails :meth:`start` after ``connect_timeout`` (every host tried); after that, losses and
    failed attempts are retried forever with :func:`reconnect_policy`, rotating through the
    hosts, except a permanent error (:func:`is_permanent`), which ends the session with
    ``failed(error)``. ``close()`` stops all that, bounded in time whatever the broker does.

    ``endpoint`` and ``policy`` may be given by tests (``task.Clock`` as ``reactor``).
    """

    def __init__(self, settings: ConnectionSettings, reactor: Any, name: str | None,
                 setup: Callable[[Connection], Any],
                 lost: Callable[[BrokerConnectionError], Any],
                 failed: Callable[[BrokerConnectionError], Any], *, endpoint: Any = None,
                 policy: Callable[[int], float] | None = None) -> None:
        from twisted.application.internet import ClientService  # noqa: PLC0415

        self.settings = settings
        self.reactor = reactor
        self.name = name
        self._setup = setup
        self._lost = lost
        self._failed = failed
        self.connection: Connection | None = None
        self._newest: Connection | None = None  # the newest link, kept to abort it at close
        self.closing = False
        self._started = False  # the first connection was made: failures now go to failed()
        self._shutdown_trigger: Any = None
        # for describe and metrics: plain values, read when asked
        self.connected_since: float | None = None  # POSIX time of the current connection
        self.connections = 0  # connections made; reconnections are the ones after the first
        self.endpoint = endpoint if endpoint is not None else BrokerEndpoint(settings, reactor)
        self._service = ClientService(
            _Reporting(self.endpoint, self._on_attempt_failed),
            ProtocolFactory(settings, reactor, name),
            retryPolicy=policy if policy is not None else reconnect_policy(),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Connect and set up; errbacks if the first connection cannot be made.

        When the reactor shuts down, the session closes its connection instead of
        reconnecting, in the "during" phase: services stopping "before" it (a processor
        finishing its handlers and acking) still have their connection."""
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self.close)
        first = self._service.whenConnected(failAfterFailures=1)  # before any attempt ends
        self._service.startService()
        try:
            yield first
        except defer.CancelledError:
            raise BrokerConnectionError("closed before the connection was made") from None
        except Exception:
            if not self.closing:  # the first connection failed: nothing retries it
                # (stopped on the next turn: we are called from inside ClientService's
                # transition to "waiting", which a stop input must not interrupt)
                yield task.deferLater(self.reactor, 0, lambda: None)
                yield self._stop_service()
            raise
        if self.closing:
            raise BrokerConnectionError("closed before the connection was made")
        self._started = True

    def _prepare(self, proxy: Any) -> defer.Deferred[None]:
        """``prepareConnection``: the owner's set-up on a connection just made."""
        amqp = proxy.amqp
        connection = Connection(amqp, self.settings, self.reactor)
        result: defer.Deferred[None] = defer.Deferred(lambda _: connection.abort())
        if self.closing:
            connection.abort()
            result.errback(BrokerConnectionError("the session is closing"))
            return result
        self.connection = self._newest = connection
        connection.on_lost(lambda error: self._on_lost(connection, error))

        def done(outcome: Any) -> None:
            # (lost_reason, not is_open: a close() begun from the owner's own set-up, e.g.
            # by whoever waited for its `ready`, is no failure of the set-up)
            if not isinstance(outcome, Failure) and connection.lost_reason is not None:
                outcome = Failure(connection.lost_reason)
            if isinstance(outcome, Failure):
                if self.connection is connection:
                    self.connection = None  # its loss is this failure, reported below
                if not self.closing:  # (closing: close() ends this link, gracefully first)
                    connection.abort()
                if not result.called:
                    if self._started and not self.closing:
                        log.warn("setting up the connection failed: {error}",
                                 error=outcome.value)
                    result.errback(outcome)
                return
            if result.called:  # cancelled meanwhile (the session closed): abort did it
                return
            amqp.gate.open = True  # from now on, ClientService hears of its loss
            log.debug("connected to {where}", where=self.settings.describe())
            self.connected_since = time.time()
            self.connections += 1
            result.callback(None)

        defer.maybeDeferred(self._setup, connection).addBoth(done)
        return result

    def _on_lost(self, connection: Connection, error: BrokerConnectionError) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.connected_since = None
        if self.closing:
            return
        self._lost(error)

    def _on_attempt_failed(self, error: BaseException) -> None:
        """A connection attempt failed (every host tried): permanent ends the session."""
        if self.closing:
            return
        # (the permanent errors are all BrokerConnectionErrors: see postage.errors)
        if isinstance(error, BrokerConnectionError) and is_permanent(error):
            if self._started:
                log.error("giving up: {error}", error=error)
                self.reactor.callLater(0, self._give_up, error)
            return
        if self._started:
            log.warn("reconnection failed: {error}", error=error)

    def _give_up(self, error: BrokerConnectionError) -> None:
        if self.closing:
            return
        self.closing = True
        self._stop_service()
        self._failed(error)

    def _stop_service(self) -> defer.Deferred[None]:
        """Stop ``ClientService`` (no attempt after this), bounded: a running attempt is
        cancelled, which aborts its link."""
        return bounded(defer.maybeDeferred(self._service.stopService), self.reactor,
                       self._abort_current, "the end of a connection attempt")

    def _abort_current(self) -> None:
        if self._newest is not None:
            self._newest.abort()

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Stop reconnecting and close the connection: ends within a few seconds, whatever
        the broker does (a graceful AMQP close first, an abort when it is not answered)."""
        self.closing = True
        if self._shutdown_trigger is not None:
            trigger, self._shutdown_trigger = self._shutdown_trigger, None
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except ValueError:  # already fired: we are being called by it
                pass
        connection = self.connection
        if connection is not None and connection.is_open:
            yield connection.close()
        yield self._stop_service()


@implementer(IStreamClientEndpoint)
class _Reporting:
    """The endpoint ``ClientService`` connects with, telling the session of every failed
    attempt as it happens (``ClientService`` itself only schedules the next one)."""

    def __init__(self, endpoint: Any, on_failure: Callable[[BaseException], Any]) -> None:
        self.endpoint = endpoint
        self._on_failure = on_failure

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        d = self.endpoint.connect(factory)

        def failed(failure: Failure) -> Failure:
            if not failure.check(defer.CancelledError):
                # a Failure always holds its exception (Failure() without one raises
                # NoCurrentExceptionError); Twisted types value as Optional regardless
                assert failure.value is not None
                self._on_failure(failure.value)
            return failure

        return d.addErrback(failed)

    def __repr__(self) -> str:
        settings = getattr(self.endpoint, "settings", None)
        return settings.describe() if settings is not None else repr(self.endpoint)
