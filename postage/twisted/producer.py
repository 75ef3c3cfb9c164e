"""GenericProducer on Twisted: the send and call API, its knobs, and where messages go.

``producer.message_NAME(...)`` returns a Deferred that fires once the broker confirmed the
publish; ``producer.rpc_NAME(...)`` returns a Deferred that fires with the result message
(``MessageResult``, ``MessageResultError`` or ``MessageResultException``) and never errbacks
for remote or transport trouble. A producer can be used as soon as it is made: calls wait for
the connection. The work is shared out: the connection is kept by a
:class:`~postage.twisted.connection.Session`, publishing by a
:class:`~postage.twisted.publisher.Publisher`, RPC by an
:class:`~postage.twisted.rpcclient.RpcClient`; this class builds messages and their
properties and picks their destinations.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from pika import BasicProperties
from twisted.internet import defer
from twisted.python.failure import Failure

from postage import config, otel, stats, tracing
from postage.encoders import JsonEncoder
from postage.errors import BrokerConnectionError, PostageError
from postage.exchanges import exchange_name
from postage.fingerprint import fingerprint_dict
from postage.messages import Message, MessageCommand, RpcCommand
from postage.options import command_parameters, split_options
from postage.twisted.connection import Connection, Session
from postage.twisted.frames import TRACEPARENT_PLACEHOLDER
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneShot
from postage.twisted.publisher import Publisher
from postage.twisted.reactors import default_reactor
from postage.twisted.rpcclient import RpcClient

__all__ = ["GenericProducer"]

log = PostageLogger()

_KNOBS = ("eks", "encoder_class", "routing_key", "confirm", "mandatory", "persistent",
          "rpc_reply_to", "rpc_timeout", "max_retry", "connect_timeout", "max_unconfirmed",
          "max_waiting", "publish_timeout")
_PER_CALL = ("_persistent", "_expiration", "_priority", "_headers")
_PERSISTENT = 2

Target = tuple[Any, str]


class GenericProducer:
    """Sends messages and makes RPC calls; see the module docstring.

    Class attributes are the defaults, and each may be given as a constructor keyword:
    ``eks`` (list of ``(Exchange subclass or name, routing key)``; the first is the default
    and the one RPC uses), ``encoder_class``, ``routing_key`` (key for the nameless exchange
    when there is no ``eks``), ``confirm`` (publisher confirms), ``mandatory`` (for
    ``message_*``), ``persistent`` (``message_*`` publishes survive a broker restart in a
    durable queue; RPC is always transient), ``rpc_reply_to`` (``"direct"``, or
    ``"exclusive"`` for 3.0.3 servers), ``rpc_timeout``, ``max_retry``, ``connect_timeout``,
    ``max_unconfirmed`` (publishes, and RPC requests, in flight before further ones wait:
    pika has no write backpressure of its own), ``max_waiting`` (publishes that may wait
    while nothing can be sent; more fail at once) and ``publish_timeout`` (seconds a publish
    may wait to be sent before it fails). ``builders`` (keyword only) is the object whose
    class's ``build_*`` methods are used (default: the producer itself).

    Per call, besides ``_key``, ``_eks``, ``_mandatory``, ``_timeout``, ``_max_retry`` and
    ``_queue_only``: ``_persistent``, ``_expiration`` (seconds a message may wait in a queue),
    ``_priority`` (0-255) and ``_headers`` (merged into the AMQP headers).

    After the first connection, a lost connection is reconnected with backoff, forever:
    publishes wait meanwhile, those the broker had not confirmed are sent again (at least
    once), and RPC calls in flight are sent again as soon as the broker is back.
    """

    eks: list[Target] = []
    encoder_class: type = JsonEncoder
    routing_key: str | None = None
    vhost: str | None = None
    hup: Mapping[str, Any] | None = None
    confirm = True
    mandatory = False
    persistent = True
    rpc_reply_to = "direct"
    rpc_timeout: float = 30
    max_retry = 4
    connect_timeout: float = 10
    max_unconfirmed = 1000
    max_waiting = 10000
    publish_timeout: float = 60

    def __init__(self, fingerprint: Any = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, *, reactor: Any = None, clock: Any = None,
                 builders: Any = None, **knobs: Any) -> None:
        for knob, value in knobs.items():
            if knob not in _KNOBS:
                raise TypeError(f"unknown producer option {knob!r}")
            setattr(self, knob, value)
        if self.rpc_reply_to not in ("direct", "exclusive"):
            raise ValueError("rpc_reply_to is 'direct' or 'exclusive'")
        self.reactor = reactor = default_reactor(reactor)
        # whose class's build_message_NAME / build_rpc_NAME are used (the blocking facade
        # wraps a producer and passes itself)
        self.builders = self if builders is None else builders
        self.fingerprint = fingerprint_dict(fingerprint)
        self.settings = config.settings(
            hup if hup is not None else self.hup,
            vhost if vhost is not None else self.vhost,
            self.connect_timeout,
        )
        self.encoder = self.encoder_class()
        self.eks = [(exchange, key) for exchange, key in self.eks]
        self.connection: Connection | None = None
        self._error: BaseException | None = None  # set once the producer cannot publish
        self._down: BrokerConnectionError | None = None  # while reconnecting
        self._ready = OneShot()
        # shared by message_* publishes: each writes its traceparent into the placeholder
        self._properties = BasicProperties(
            content_type=self.encoder.content_type, user_id=self.settings.user,
            delivery_mode=_PERSISTENT if self.persistent else None,
            headers={"traceparent": TRACEPARENT_PLACEHOLDER})
        self._rpc_traceparent: str | None = None  # an RPC call's span, while it is sent
        self._publisher = Publisher(
            reactor, confirm=self.confirm, max_unconfirmed=self.max_unconfirmed,
            max_waiting=self.max_waiting, wait_timeout=self.publish_timeout,
            exchanges=[exchange for exchange, _key in self.eks])
        self._rpc = RpcClient(
            clock if clock is not None else reactor, self._publisher, self.encoder,
            self._make_properties, reply_to=self.rpc_reply_to,
            max_in_flight=self.max_unconfirmed, down=lambda: self._down)
        self.stats = stats.ProducerStats()  # plain counters, read by the metrics
        self.stats.published = self._publisher.window.published  # counted by the window
        stats.components.add(self)
        # correlation ids: unique per producer, cheaper than a uuid4 per call
        self._id_prefix = f"{uuid.uuid4().hex[:12]}."
        self._ids = itertools.count(1)
        self._session = Session(self.settings, reactor, self.fingerprint.get("name"),
                                self._on_connected, self._on_connection_lost, self._give_up)
        self._setting_up = self._session.start().addErrback(self._give_up_failure)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fingerprint.get('name')!r} to {self.settings}>"

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> defer.Deferred[GenericProducer]:
        """Fires with the producer once it is connected, its exchanges are declared, confirm
        mode is on and RPC replies are listened for; errbacks if that cannot happen. A new
        Deferred each time, so every waiter gets the producer."""
        return self._ready.when()

    @defer.inlineCallbacks
    def _on_connected(self, connection: Connection) -> Any:
        """Set up on a new connection, the first or a reconnection."""
        self.connection = connection
        yield self._publisher.open(connection)
        yield self._rpc.open(connection)
        if self._down is not None:
            log.info("reconnected; sending {n} waiting publishes",
                     n=len(self._publisher.window.backlog))
        self._down = None
        self._ready.fire(self)

    def _on_connection_lost(self, error: BrokerConnectionError) -> None:
        """The session reconnects: publishes wait; unconfirmed ones go out again first."""
        self._down = error
        if self._ready.called:
            self._ready = OneShot()
        self._publisher.lost(error)
        self._rpc.lost(error)

    def _give_up_failure(self, failure: Any) -> None:
        self._give_up(failure.value)

    def _give_up(self, error: BaseException) -> None:
        """The producer cannot publish any more (first connection failed, bad password,
        closed)."""
        if self._error is None:
            self._error = error
        if self._ready.called:
            self._ready = OneShot()
        self._ready.fire(Failure(self._error))
        self._publisher.fail_all(self._error)
        self._rpc.fail_all(self._error)

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Close the connection. Calls still in flight end with BrokerConnectionError."""
        if self._error is None:
            self._error = BrokerConnectionError("the producer was closed")
        stats.components.discard(self)
        yield self._session.close()
        if not self._setting_up.called:
            yield self._setting_up
        self._give_up(self._error)

    # ---- messages and their properties ---------------------------------------------------

    def _make_properties(self, **extra: Any) -> Any:
        """A publish's properties, with the ``traceparent`` that continues the running
        handler's trace (a new trace outside handlers)."""
        traceparent = self._rpc_traceparent or tracing.outgoing_header()
        headers = extra.pop("headers", None)
        return BasicProperties(
            content_type=self.encoder.content_type, user_id=self.settings.user,
            headers={"traceparent": traceparent, **headers} if headers else {
                "traceparent": traceparent}, **extra)

    def _message_properties(self, options: Mapping[str, Any]) -> Any:
        """The properties of a ``message_*`` publish: the producer's, unless per-call
        options change them (checked here: a bad value must not reach the broker, which
        would close the channel)."""
        if not any(option in options for option in _PER_CALL):
            return self._properties  # (with the placeholder: see _send_body)
        persistent = options.get("_persistent", self.persistent)
        extra: dict[str, Any] = {"delivery_mode": _PERSISTENT if persistent else None}
        if (expiration := options.get("_expiration")) is not None:
            if isinstance(expiration, bool) or not isinstance(expiration, (int, float)) or (
                    expiration < 0):
                raise ValueError(f"_expiration is seconds (>= 0), not {expiration!r}")
            extra["expiration"] = str(int(expiration * 1000))
        if (priority := options.get("_priority")) is not None:
            if isinstance(priority, bool) or not isinstance(priority, int) or not (
                    0 <= priority <= 255):
                raise ValueError(f"_priority is an integer from 0 to 255, not {priority!r}")
            extra["priority"] = priority
        if (headers := options.get("_headers")) is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"_headers is a dict, not {headers!r}")
            extra["headers"] = dict(headers)
        return self._make_properties(**extra)

    def _build(self, kind: str, command: type[MessageCommand], name: str,
               args: tuple[Any, ...], kwds: dict[str, Any]) -> Message:
        """The message of ``message_NAME()`` / ``rpc_NAME()``: what ``build_<kind>_NAME``
        returns when the class defines one, else a ``command`` named NAME. (The builder is
        looked up on the class: a miss on the instance would go through ``__getattr__`` and
        raise, on every call.)"""
        attr = f"build_{kind}_{name}"
        if hasattr(type(self.builders), attr):
            return getattr(self.builders, attr)(*args, **kwds)
        return command(name, command_parameters(name, args, kwds))

    def _encode(self, message: Message) -> str | bytes:
        message.fingerprint = self.fingerprint
        return self.encoder.encode(message.body)

    # ---- routing and sending -------------------------------------------------------------

    def _targets(self, options: Mapping[str, Any]) -> list[Target]:
        eks = options.get("_eks")
        if eks is not None:
            pairs = list(eks.items()) if isinstance(eks, Mapping) else list(eks)
        elif options.get("_key") is not None:
            default = self.eks[0][0] if self.eks else ""
            pairs = [(default, options["_key"])]
        elif self.eks:
            pairs = self.eks
        elif self.routing_key is not None:
            pairs = [("", self.routing_key)]
        else:
            raise ValueError("no destination: give the producer eks, or _key= / _eks=")
        return pairs

    def _send_body(self, payload: str | bytes, options: Mapping[str, Any]
                   ) -> defer.Deferred[None]:
        mandatory = options.get("_mandatory", self.mandatory)
        publish = self._publisher.publish
        targets = self._targets(options)
        tracer = otel.tracer()
        if tracer is not None:  # OpenTelemetry is set up: the publish is a span
            return self._send_in_span(tracer, payload, options, targets, mandatory)
        properties = self._message_properties(options)
        # the message's own traceparent, written into the shared properties' placeholder
        traceparent = tracing.outgoing_header().encode()
        if len(targets) == 1:
            exchange, key = targets[0]
            return publish(exchange, key, payload, properties, mandatory, traceparent)
        deferreds = [publish(exchange, key, payload, properties, mandatory, traceparent)
                     for exchange, key in targets]
        return defer.gatherResults(deferreds, consumeErrors=True).addCallbacks(
            lambda _: None, lambda failure: failure.value.subFailure)

    def _send_in_span(self, tracer: Any, payload: str | bytes, options: Mapping[str, Any],
                      targets: list[Target], mandatory: bool) -> defer.Deferred[None]:
        span = otel.start_send(tracer, exchange_name(targets[0][0]), targets[0][1])
        self._rpc_traceparent = traceparent = otel.header(span)
        try:
            properties = self._message_properties(options)
        finally:
            self._rpc_traceparent = None
        deferreds = [self._publisher.publish(exchange, key, payload, properties, mandatory,
                                             traceparent.encode())
                     for exchange, key in targets]
        d = deferreds[0] if len(deferreds) == 1 else defer.gatherResults(
            deferreds, consumeErrors=True).addCallbacks(
                lambda _: None, lambda failure: failure.value.subFailure)
        return d.addBoth(_end_span, span)

    def send(self, name: str, /, *args: Any, **kwds: Any) -> defer.Deferred[None]:
        """``message_NAME(...)``: build (``build_message_NAME``) or make a command, publish."""
        try:
            options = split_options(kwds)
            message = self._build("message", MessageCommand, name, args, kwds)
            return self._send_body(self._encode(message), options)
        except (PostageError, ValueError, TypeError):
            return defer.fail()

    def message(self, *args: Any, **kwds: Any) -> defer.Deferred[None]:
        """Send a plain :class:`Message` with these args and keywords."""
        try:
            options = split_options(kwds)
            return self._send_body(self._encode(Message(*args, **kwds)), options)
        except (PostageError, ValueError, TypeError):
            return defer.fail()

    def forward(self, body: Mapping[str, Any], **options: Any) -> defer.Deferred[None]:
        """Re-send a decoded body as it is (its own fingerprint kept)."""
        try:
            options = split_options(options)
            return self._send_body(self.encoder.encode(dict(body)), options)
        except (PostageError, ValueError, TypeError):
            return defer.fail()

    # ---- RPC ---------------------------------------------------------------------------

    def call(self, name: str, /, *args: Any, **kwds: Any) -> defer.Deferred[Any]:
        """``rpc_NAME(...)``: fires with the result message (never errbacks for a timeout, an
        unroutable call or a lost connection), or with a queue name for ``_queue_only``."""
        try:
            options = split_options(kwds)
            payload = self._encode(self._build("rpc", RpcCommand, name, args, kwds))
            exchange, key = self._targets(options)[0]
        except (PostageError, ValueError, TypeError):
            return defer.fail()
        timeout = options.get("_timeout", self.rpc_timeout)
        if options.get("_queue_only"):
            return self._rpc.call_queue_only(exchange, key, payload, timeout)
        correlation_id = f"{self._id_prefix}{next(self._ids)}"
        span = None
        tracer = otel.tracer()
        if tracer is not None:  # the request carries the call span's ids
            span = otel.start_call(tracer, name, exchange_name(exchange), key, correlation_id)
            self._rpc_traceparent = otel.header(span)
        try:
            d = self._rpc.call(
                exchange, key, payload, timeout, options.get("_max_retry", self.max_retry),
                f"rpc {name!r} to {exchange_name(exchange)!r}/{key!r}", correlation_id)
        finally:
            self._rpc_traceparent = None
        return d.addCallback(self._count_call, name, perf_counter(), span)

    def _count_call(self, result: Any, name: str, started: float, span: Any) -> Any:
        outcome = stats.rpc_outcome(result)
        self.stats.rpc(name, outcome, perf_counter() - started)
        if span is not None:
            otel.end(span, outcome == "success", f"{outcome}: {result.message}")
        return result

    def consume_rpc(self, queue: str, result_len: int = 1, callback: Any = None,
                    timeout: float | None = None) -> defer.Deferred[list[Message]]:
        """Read ``result_len`` replies from a ``_queue_only`` queue; fires with the list of
        result messages, ending with ``MessageResultException('TimeoutError', ...)`` when
        they do not all come within ``timeout`` (default: ``rpc_timeout``), or with the
        ``UnroutableError`` of a request that no queue could receive. ``callback(result)`` is
        called for each reply as it arrives. The queue is deleted afterwards."""
        return self._rpc.consume_rpc(queue, result_len, callback,
                                     self.rpc_timeout if timeout is None else timeout)

    # ---- the documented dynamic names ----------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Kept in the instance once made: the next call finds it without coming here.
        if name.startswith("message_") and len(name) > 8:
            method = self.__dict__[name] = functools.partial(self.send, name[8:])
            return method
        if name.startswith("rpc_") and len(name) > 4:
            method = self.__dict__[name] = functools.partial(self.call, name[4:])
            return method
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _end_span(result: Any, span: Any) -> Any:
    failed = isinstance(result, Failure)
    otel.end(span, not failed, str(result.value) if failed else None)
    return result
