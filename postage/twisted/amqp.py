"""Making one AMQP connection: TCP (and TLS), then pika's handshake, host after host.

pika's ``TwistedProtocolConnection`` has sharp edges that this module files down:

- importing ``pika.adapters.twisted_connection`` installs the default reactor, so it is
  imported inside functions, once a reactor is wanted anyway;
- host and port in ``ConnectionParameters`` are ignored: :class:`BrokerEndpoint` connects
  through Twisted endpoints itself, trying each configured host in turn within
  ``connect_timeout``, and starts each new attempt one host further (rotation);
- a failed handshake is reported by the adapter as a bare ``AMQPConnectionError``, hiding
  *why*; our protocol keeps the real reason, so a wrong password, a missing vhost or a
  certificate that does not verify becomes its own error at once, never a hang;
- when its heartbeat checker finds the link silent, pika calls ``loseConnection()``, which
  waits for the write buffer to drain: on a half-open link with data buffered that is
  forever. Our protocol *aborts* the transport instead, and checks the link every half
  heartbeat, so a silent link is declared lost within 1.5 × heartbeat (pika's own check runs
  every heartbeat + 5 s and needs up to twice that);
- the endpoint's Deferred fires only once the AMQP handshake is done (pika's ``ready``):
  for ``ClientService`` a connection made is then a usable one (see ``connection.py``).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectError, ConnectionDone, DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport
from twisted.python.failure import Failure

from postage.config import ConnectionSettings
from postage.errors import AuthenticationError, BrokerConnectionError, VirtualHostError
from postage.twisted import reader
from postage.twisted.logs import PostageLogger
from postage.twisted.tls import TLSContext, tls_failure

__all__ = ["BrokerEndpoint", "ProtocolFactory", "translate_error"]

log = PostageLogger()

# AMQP reply codes the broker closes a connection with during the handshake.
_ACCESS_REFUSED = 403
_NOT_ALLOWED = 530


def _unwrap(error: BaseException) -> BaseException:
    """pika wraps what ended a connection in its own errors (``StreamLostError(repr)``,
    ``AMQPConnectionError(error)``): the first argument that is itself an error is the
    reason worth reporting."""
    seen = 0
    while error.args and isinstance(error.args[0], BaseException) and seen < 5:
        error, seen = error.args[0], seen + 1
    return error


def translate_error(error: BaseException, settings: ConnectionSettings) -> BrokerConnectionError:
    """Turn what pika or Twisted raised into our error family, with a message that says what
    to check and never holds the password."""
    from pika import exceptions  # noqa: PLC0415

    where = settings.describe()
    if isinstance(error, BrokerConnectionError):
        return error
    inner = _unwrap(error)
    tls = tls_failure(inner, where)
    if tls is not None:
        return tls
    if isinstance(error, (exceptions.AuthenticationError, exceptions.ProbableAuthenticationError)):
        return AuthenticationError(
            f"the broker refused user {settings.user!r} at {where}: check the user and password "
            "(POSTAGE_RMQ_USER / POSTAGE_RMQ_PASSWORD, POSTAGE_RMQ_URL or hup)"
        )
    text = str(error)
    closed_code = (
        error.reply_code if isinstance(error, exceptions.ConnectionClosedByBroker) else None)
    if closed_code == _ACCESS_REFUSED and "vhost" not in text:
        return translate_error(exceptions.AuthenticationError(text), settings)
    if isinstance(error, exceptions.ProbableAccessDeniedError) or (
        closed_code in (_NOT_ALLOWED, _ACCESS_REFUSED)
    ):
        return VirtualHostError(
            f"vhost {settings.vhost!r} does not exist or user {settings.user!r} may not use it "
            f"({where}): create it with rabbitmqctl add_vhost / set_permissions, or set "
            "POSTAGE_VHOST"
        )
    if isinstance(inner, (ConnectError, DNSLookupError, defer.TimeoutError)):
        return BrokerConnectionError(f"cannot reach the broker at {where}: {inner}")
    return BrokerConnectionError(f"connection to {where} failed: {inner!r}")


def _protocol_class() -> type:
    """Our subclass of pika's protocol, built on first use (the import installs a reactor)."""
    global _PROTOCOL
    if _PROTOCOL is None:
        from pika.adapters.twisted_connection import TwistedProtocolConnection  # noqa: PLC0415
        from pika.exceptions import AMQPHeartbeatTimeout  # noqa: PLC0415
        from pika.heartbeat import HeartbeatChecker  # noqa: PLC0415

        class _Heartbeat(HeartbeatChecker):
            # Check every half heartbeat; lost after two silent checks in a row. The broker
            # sends a heartbeat every half heartbeat, so one late frame is no false alarm,
            # and a silent link is found within 1.5 × heartbeat (within 2 × heartbeat).
            def __init__(self, connection: Any, timeout: int) -> None:
                super().__init__(connection, timeout)
                connection._adapter_remove_timeout(self._check_timer)
                self._check_interval = max(timeout / 2, 0.5)
                self._start_check_timer()

            @property
            def connection_is_idle(self) -> bool:
                return self._idle_byte_intervals >= 2

        class _Protocol(TwistedProtocolConnection):
            # pika's own attributes (mypy sees pika as untyped): the handshake's Deferred
            # (None once fired) and the one that fires when an open connection closes
            ready: defer.Deferred[Any] | None
            closed: defer.Deferred[Any] | None

            def __init__(self, parameters: Any, custom_reactor: Any) -> None:
                super().__init__(parameters, custom_reactor=custom_reactor)
                self.amqp = self  # reached through ClientService's proxy of this protocol
                self.gate: Gate | None = None
                impl = self._impl
                reader.install(impl)  # deliveries read without pika's detours
                impl._create_heartbeat_checker = self._create_heartbeat_checker
                impl._adapter_disconnect_stream = self._disconnect_stream

            def _create_heartbeat_checker(self) -> Any:
                impl = self._impl
                if impl.params.heartbeat is not None and impl.params.heartbeat > 0:
                    return _Heartbeat(impl, impl.params.heartbeat)
                return None

            def _disconnect_stream(self) -> None:
                # A silent link will not drain the write buffer: abort, do not wait.
                transport = self._impl._transport
                if transport is None:
                    return
                if isinstance(self._impl._error, AMQPHeartbeatTimeout):
                    log.warn("no data from the broker for too long (heartbeat): aborting")
                    transport.abortConnection()
                else:
                    transport.loseConnection()

            def _fire_ready(self, result: Any) -> None:
                d, self.ready = self.ready, None
                if d is not None and not d.called:
                    d.callback(result)  # a Failure takes the errback path

            def _on_connection_ready(self, _connection: Any) -> None:
                if self.ready is not None:
                    self.closed = defer.Deferred()
                self._fire_ready(None)

            # pika replaces the handshake's real error with AMQPConnectionError(attempts);
            # keep it, so that a bad password is reported as one.
            def _on_connection_failed(self, _connection: Any, error: Any = None) -> None:
                self._fire_ready(Failure(error if error is not None
                                         else BrokerConnectionError("refused")))

            # When the broker closes the connection (Connection.Close), pika already holds
            # the reason; the adapter then overwrites it with Twisted's ConnectionDone.
            def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
                impl = self._impl
                if impl._error is not None and reason.check(ConnectionDone):
                    impl._transport = None
                    impl._on_stream_terminated(None)
                else:
                    impl.connection_lost(reason)
                self._fire_ready(reason)

            def abort(self) -> None:
                """Drop the link at once, whatever is buffered."""
                if self.transport is not None:
                    self.transport.abortConnection()

        _PROTOCOL = _Protocol
    return _PROTOCOL


_PROTOCOL: type | None = None


class ProtocolFactory(protocol.Factory):
    """Builds our pika protocols, each with the same connection parameters."""

    def __init__(self, settings: ConnectionSettings, reactor: Any, name: str | None) -> None:
        import pika  # noqa: PLC0415

        self.reactor = reactor
        self.parameters = pika.ConnectionParameters(
            virtual_host=settings.vhost,
            credentials=pika.PlainCredentials(settings.user, settings.password),
            heartbeat=settings.heartbeat,
            client_properties={"connection_name": name} if name else None,
        )

    def buildProtocol(self, addr: Any) -> Any:
        return _protocol_class()(self.parameters, custom_reactor=self.reactor)


class Gate(protocol.Protocol):
    """Sits between the transport and the protocol ``ClientService`` handed us (its proxy of
    our pika protocol), and tells the service of a lost link only once ``open``.

    ``ClientService`` takes a connection for made as soon as the endpoint's Deferred fires,
    and does not expect a link to be lost before then (nor after its ``prepareConnection``
    failed): a loss reported in those states raises ``NoTransition`` inside ``connectionLost``.
    Until the AMQP handshake and the owner's set-up are done, a loss goes to our protocol
    alone; the attempt then fails and the service retries as for any failed attempt."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.amqp = proxy.amqp
        self.amqp.gate = self
        self.open = False

    def makeConnection(self, transport: Any) -> None:
        protocol.Protocol.makeConnection(self, transport)
        self.proxy.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.amqp.dataReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.open:
            self.proxy.connectionLost(reason)
        else:
            self.amqp.connectionLost(reason)

    def abort(self) -> None:
        if self.transport is not None:
            # a TCP or TLS link (ClientService over our endpoints); Protocol types it only
            # as ITransport, which has no abortConnection
            cast(ITCPTransport, self.transport).abortConnection()


def _when_ready(amqp: Any) -> defer.Deferred[Any]:
    """A Deferred for the end of the handshake that may be cancelled (pika's may not)."""
    waiter: defer.Deferred[Any] = defer.Deferred()
    if amqp.ready is None:
        return defer.succeed(amqp) if amqp.is_open else defer.fail(
            BrokerConnectionError("the connection closed during the handshake"))

    def relay(result: Any) -> None:
        if not waiter.called:
            waiter.callback(result)

    amqp.ready.addBoth(relay)
    return waiter


class BrokerEndpoint:
    """A client endpoint (``IStreamClientEndpoint``) over the configured hosts.

    Each ``connect()`` tries the hosts in order, starting one host after the one the
    previous attempt connected to (or started from), all within ``connect_timeout``, and
    fires once the AMQP handshake is done. A permanent error (see
    :mod:`postage.errors`) ends the attempt at once: the next host would say the same."""

    def __init__(self, settings: ConnectionSettings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        self.attempts = 0
        self._next = 0
        self._tls: TLSContext | None = None

    def _endpoint(self, host: str, port: int, timeout: float) -> Any:
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS  # noqa: PLC0415

        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, host, port, timeout=max(timeout, 0.1))
        if self.settings.tls:
            if self._tls is None:
                self._tls = TLSContext(self.settings)
            endpoint = wrapClientTLS(self._tls.creator(host), endpoint)
        return endpoint

    @defer.inlineCallbacks
    def _attempt(self, factory: Any, host: str, port: int, timeout: float) -> Any:
        from twisted.internet.endpoints import connectProtocol  # noqa: PLC0415

        proxy = factory.buildProtocol(None)
        gate = Gate(proxy)
        try:
            yield connectProtocol(self._endpoint(host, port, timeout), gate)
            yield _when_ready(gate.amqp)
        except BaseException:
            gate.abort()
            raise
        return proxy

    @defer.inlineCallbacks
    def connect(self, factory: Any) -> Any:
        """Connect ``factory``'s protocol to the first host that completes the handshake."""
        hosts = self.settings.hosts
        start = self._next
        self._next = (start + 1) % len(hosts)
        self.attempts += 1
        deadline = self.reactor.seconds() + self.settings.connect_timeout
        last: BaseException | None = None
        for offset in range(len(hosts)):
            index = (start + offset) % len(hosts)
            host, port = hosts[index]
            remaining = deadline - self.reactor.seconds()
            if remaining <= 0:
                break
            share = remaining / (len(hosts) - offset)  # a silent host leaves time to the rest
            attempt = self._attempt(factory, host, port, share)
            try:
                proxy = yield attempt.addTimeout(share, self.reactor)
            except defer.CancelledError:
                raise  # the attempt itself was cancelled (ClientService stopping)
            except Exception as exc:  # noqa: BLE001 - every failure is translated below
                error = translate_error(exc, self.settings.replace(hosts=((host, port),)))
                if error.permanent:
                    raise error from None
                log.debug("broker {host}:{port} failed: {error}", host=host, port=port,
                          error=error)
                last = error
                continue
            self._next = (index + 1) % len(hosts)
            return proxy
        if last is None:
            last = BrokerConnectionError(
                f"cannot reach the broker at {self.settings.describe()} within "
                f"{self.settings.connect_timeout:g}s")
        raise last
