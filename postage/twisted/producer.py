"""GenericProducer on Twisted: publish with confirms, and RPC calls over direct reply-to.

``producer.message_NAME(...)`` returns a Deferred that fires once the broker confirmed the
publish; ``producer.rpc_NAME(...)`` returns a Deferred that fires with the result message
(``MessageResult``, ``MessageResultError`` or ``MessageResultException``) and never errbacks
for remote or transport trouble. A producer can be used as soon as it is made: calls wait for
the connection. The per-message path is kept short on purpose (PIKA-TWISTED-NOTES.md): one
encode, one pika publish, one dict entry for the confirm.
"""

from __future__ import annotations

import copy
import functools
import itertools
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from pika import BasicProperties
from twisted.internet import defer

from postage import config
from postage.encoders import JsonEncoder
from postage.errors import BrokerConnectionError, NackError, PostageError, UnroutableError
from postage.exchanges import Exchange, exchange_name
from postage.messages import (
    Message,
    MessageCommand,
    MessageResultException,
    RpcCommand,
    decode_envelope,
    message_from_body,
)
from postage.twisted.connection import Channel, Connection, Session
from postage.twisted.logs import PostageLogger
from postage.twisted.rpc import RpcCalls

__all__ = ["GenericProducer"]

log = PostageLogger()

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_OPTIONS = frozenset({"_key", "_eks", "_timeout", "_max_retry", "_queue_only", "_mandatory"})
_KNOBS = ("eks", "encoder_class", "routing_key", "confirm", "mandatory", "rpc_reply_to",
          "rpc_timeout", "max_retry", "connect_timeout", "max_unconfirmed", "max_waiting")

Target = tuple[Any, str]


def fingerprint_dict(fingerprint: Any) -> dict[str, Any]:
    """A fingerprint in its dictionary form (3.0.3 accepted any object with ``as_dict``)."""
    if fingerprint is None:
        return {}
    if isinstance(fingerprint, Mapping):
        return dict(fingerprint)
    return fingerprint.as_dict()


def split_options(kwds: dict[str, Any]) -> dict[str, Any]:
    """Take the ``_options`` out of a call's keywords (they are never parameters)."""
    if not kwds:
        return {}
    options = {key: kwds.pop(key) for key in [k for k in kwds if k.startswith("_")]}
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; options are {sorted(_OPTIONS)}")
    return options


def command_parameters(name: str, args: tuple[Any, ...], kwds: dict[str, Any]) -> Any:
    """The parameters of a command sent without a ``build_*`` method."""
    if len(args) > 1 or (args and kwds):
        raise TypeError(f"{name}() takes one positional parameters value or keyword arguments")
    return args[0] if args else kwds


class GenericProducer:
    """Sends messages and makes RPC calls; see the module docstring.

    Class attributes are the defaults, and each may be given as a constructor keyword:
    ``eks`` (list of ``(Exchange subclass or name, routing key)``; the first is the default
    and the one RPC uses), ``encoder_class``, ``routing_key`` (key for the nameless exchange
    when there is no ``eks``), ``confirm`` (publisher confirms), ``mandatory`` (for
    ``message_*``), ``rpc_reply_to`` (``"direct"``, or ``"exclusive"`` for 3.0.3 servers),
    ``rpc_timeout``, ``max_retry``, ``connect_timeout``, ``max_unconfirmed`` (publishes in
    flight before further ones wait: pika has no write backpressure of its own),
    ``max_waiting`` (publishes that may wait while the broker is unreachable; more fail).

    After the first connection, a lost connection is reconnected with backoff, forever:
    publishes wait meanwhile, those the broker had not confirmed are sent again (at least
    once), and RPC calls retry as their policy says.
    """

    eks: list[Target] = []
    encoder_class: type = JsonEncoder
    routing_key: str | None = None
    vhost: str | None = None
    hup: Mapping[str, Any] | None = None
    confirm = True
    mandatory = False
    rpc_reply_to = "direct"
    rpc_timeout: float = 30
    max_retry = 4
    connect_timeout: float = 10
    max_unconfirmed = 1000
    max_waiting = 10000

    def __init__(self, fingerprint: Any = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, *, reactor: Any = None, clock: Any = None,
                 **knobs: Any) -> None:
        for knob, value in knobs.items():
            if knob not in _KNOBS:
                raise TypeError(f"unknown producer option {knob!r}")
            setattr(self, knob, value)
        if self.rpc_reply_to not in ("direct", "exclusive"):
            raise ValueError("rpc_reply_to is 'direct' or 'exclusive'")
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415
        self.reactor = reactor
        self.fingerprint = fingerprint_dict(fingerprint)
        self.settings = config.settings(
            hup if hup is not None else self.hup,
            vhost if vhost is not None else self.vhost,
            self.connect_timeout,
        )
        self.encoder = self.encoder_class()
        self.eks = [(exchange, key) for exchange, key in self.eks]
        self.connection: Connection | None = None
        self._channel: Channel | None = None  # publishes, with confirms
        # RPC requests and their replies (direct reply-to), without confirms: a request
        # needs no broker ack (a return tells of one nobody can receive, the reply of the
        # rest), and an ack per call would cost both sides a frame.
        self._rpc_channel: Channel | None = None
        self._waiting_sends: set[str] = set()  # RPC attempts waiting for a channel
        self._queue_only_failures: dict[str, Message] = {}  # reply queue -> why no reply
        self._declared: set[str] = {""}
        self._error: BaseException | None = None  # set once the producer cannot publish
        self._ready_waiters: list[defer.Deferred[Any]] | None = []
        # confirms: delivery tag -> Deferred (None when nobody waits), see _on_confirm
        self._next_tag = 1
        self._low_tag = 1
        # tag -> (Deferred, what to publish again after a reconnect); None when nobody waits
        self._unconfirmed: dict[int, tuple[defer.Deferred[None], tuple[Any, ...]] | None] = {}
        self._returned: dict[str, int] = {}  # message_id of a mandatory publish -> its tag
        self._unroutable: set[int] = set()
        self._backlog: deque[tuple[tuple[Any, ...], defer.Deferred[None]]] = deque()
        self._blocked = False
        self._down: BrokerConnectionError | None = None  # while reconnecting
        self._calls = RpcCalls(clock if clock is not None else reactor, lambda: self._down)
        self._exclusive_replies: dict[str, str] = {}  # consumer tag -> correlation id
        self._properties = self._make_properties()
        # correlation ids: unique per producer, cheaper than a uuid4 per call
        self._id_prefix = f"{uuid.uuid4().hex[:12]}."
        self._ids = itertools.count(1)
        self._session = Session(self.settings, reactor, self.fingerprint.get("name"),
                                self._on_connected, self._on_connection_lost, self._give_up)
        self._setting_up = self._session.start().addErrback(self._give_up_failure)

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> defer.Deferred[GenericProducer]:
        """Fires with the producer once it is connected, its exchanges are declared, confirm
        mode is on and RPC replies are listened for; errbacks if that cannot happen. A new
        Deferred each time, so every waiter gets the producer."""
        if self._ready_waiters is None:
            return defer.succeed(self) if self._usable else defer.fail(self._error)
        d: defer.Deferred[GenericProducer] = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    @property
    def _usable(self) -> bool:
        return self._channel is not None and (
            self._rpc_channel is not None or self.rpc_reply_to != "direct")

    def _fire_ready(self, error: BaseException | None) -> None:
        waiters, self._ready_waiters = self._ready_waiters, None
        for d in waiters or ():
            d.errback(error) if error is not None else d.callback(self)

    @defer.inlineCallbacks
    def _on_connected(self, connection: Connection) -> Any:
        """Set up on a new connection, the first or a reconnection."""
        self.connection = connection
        connection.on_blocked(self._on_blocked, self._on_unblocked)
        self._declared = {""}
        yield self._open_channels()
        if self._down is not None:
            log.info("reconnected; sending {n} waiting publishes", n=len(self._backlog))
        self._down = None
        self._channels_open()

    def _give_up_failure(self, failure: Any) -> None:
        self._give_up(failure.value)

    def _give_up(self, error: BaseException) -> None:
        """The producer cannot publish any more (first connection failed, bad password)."""
        if self._error is None:
            self._error = error
        self._fire_ready(self._error)
        self._fail_publishes(self._error)
        self._fail_calls(self._error)
        self._fail_waiting(self._error)

    @defer.inlineCallbacks
    def _open_channels(self) -> Any:
        """Open the channels that are not open (both on a new connection)."""
        if self._channel is None:
            channel = yield self._new_channel()
            for exchange, _key in self.eks:
                yield self._declare(channel, exchange)
            if self.confirm:
                self._next_tag = self._low_tag = 1
                yield channel.confirm_delivery(self._on_confirm)
            self._channel = channel
        if self.rpc_reply_to == "direct" and self._rpc_channel is None:
            channel = yield self._new_channel()
            yield channel.consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
            self._rpc_channel = channel

    @defer.inlineCallbacks
    def _new_channel(self) -> Any:
        channel = yield self.connection.channel()
        channel.twisted.on_closed.addCallback(self._on_channel_closed, channel)
        channel.impl.add_on_return_callback(self._on_return)
        return channel

    def _declare(self, channel: Channel, exchange: Any) -> defer.Deferred[Any]:
        name = exchange_name(exchange)
        if name in self._declared or not isinstance(exchange, type):
            return defer.succeed(None)
        return channel.exchange_declare(**exchange.parameters).addCallback(
            lambda _: self._declared.add(name))

    def _on_channel_closed(self, reason: Any, channel: Channel) -> None:
        """The broker closed a channel (e.g. a publish to a missing exchange): fail what
        depended on it and open a new one, so one bad call does not break the producer."""
        if channel is self._channel:
            self._channel = None
        elif channel is self._rpc_channel:
            self._rpc_channel = None
        else:
            return  # closed by us, or a channel already replaced
        if self.connection is None or not self.connection.is_open:
            return  # the connection went with it: _on_connection_lost handles that
        error = PostageError(f"the broker closed the producer's channel: {reason}")
        if self._channel is None:
            self._fail_publishes(error)
        if self._rpc_channel is None or self.rpc_reply_to != "direct":
            self._fail_calls(error)  # their replies were to come on that channel
        if self._error is None:
            log.warn("{error}; opening a new channel", error=error)
            if self._ready_waiters is None:
                self._ready_waiters = []  # `ready` waits for the new channel
            self._open_channels().addCallbacks(self._channels_open, self._give_up_failure)

    def _channels_open(self, _: Any = None) -> None:
        """Every channel is open again: whoever waited for `ready`, and what waited to be
        published, go on."""
        self._fire_ready(None)
        self._flush()

    def _on_connection_lost(self, error: BrokerConnectionError) -> None:
        """The session reconnects: publishes wait; unconfirmed ones go out again first."""
        self._channel = self._rpc_channel = None
        self._blocked = False
        self._down = error
        if self._ready_waiters is None:
            self._ready_waiters = []
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._returned.clear()
        self._unroutable.clear()
        resend = [entry[::-1] for entry in unconfirmed.values() if entry is not None]
        self._backlog.extendleft(reversed(resend))
        # an exclusive reply queue died with the connection: its calls cannot be answered
        for correlation_id in list(self._exclusive_replies.values()):
            self._calls.fail(correlation_id, type(error).__name__, str(error))
        self._exclusive_replies.clear()

    def _fail_publishes(self, error: BaseException) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._returned.clear()
        self._unroutable.clear()
        for entry in unconfirmed.values():
            if entry is not None:
                entry[0].errback(error)

    def _fail_calls(self, error: BaseException) -> None:
        self._calls.fail_all(type(error).__name__, str(error))
        self._exclusive_replies.clear()

    def _fail_waiting(self, error: BaseException) -> None:
        backlog, self._backlog = self._backlog, deque()
        for _args, d in backlog:
            d.errback(error)

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Close the connection. Calls still in flight end with BrokerConnectionError."""
        error = BrokerConnectionError("the producer was closed")
        if self._error is None:
            self._error = error
        yield self._session.close()
        if not self._setting_up.called:
            yield self._setting_up
        self._give_up(self._error)

    # ---- publishing --------------------------------------------------------------------

    def _make_properties(self, **extra: Any) -> Any:
        return BasicProperties(content_type=self.encoder.content_type, **extra)

    def _build(self, kind: str, command: type[MessageCommand], name: str,
               args: tuple[Any, ...], kwds: dict[str, Any]) -> Message:
        """The message of ``message_NAME()`` / ``rpc_NAME()``: what ``build_<kind>_NAME``
        returns when the class defines one, else a ``command`` named NAME. (The builder is
        looked up on the class: a miss on the instance would go through ``__getattr__`` and
        raise, on every call.)"""
        attr = f"build_{kind}_{name}"
        if hasattr(type(self), attr):
            return getattr(self, attr)(*args, **kwds)
        return command(name, command_parameters(name, args, kwds))

    def _publish(self, exchange: str, key: str, body: str | bytes, properties: Any,
                 mandatory: bool, want_confirm: bool = True) -> defer.Deferred[None] | None:
        """Publish one message, or queue it while the channel is not there, the broker
        blocks us or ``max_unconfirmed`` publishes are in flight. Returns a Deferred that
        fires when the broker confirmed it (at once without confirms), or None when
        ``want_confirm`` is false and it went out."""
        if (self._channel is None or self._blocked or self._backlog
                or len(self._unconfirmed) >= self.max_unconfirmed):
            return self._wait_to_publish(exchange, key, body, properties, mandatory)
        return self._publish_now(exchange, key, body, properties, mandatory, want_confirm)

    def _publish_now(self, exchange: str, key: str, body: str | bytes, properties: Any,
                     mandatory: bool, want_confirm: bool = True,
                     waiter: defer.Deferred[None] | None = None) -> defer.Deferred[None] | None:
        d: defer.Deferred[None] | None = None
        if self.confirm:
            tag = self._next_tag
            self._next_tag = tag + 1
            entry = None
            if want_confirm:
                # a publish that waited in the backlog keeps its own Deferred (no chaining)
                d = defer.Deferred() if waiter is None else waiter
                entry = (d, (exchange, key, body, properties, mandatory))
            self._unconfirmed[tag] = entry
            if mandatory and want_confirm:
                # a return names no delivery tag: mark the message to find its tag again
                properties = copy.copy(properties)
                properties.message_id = message_id = f"postage.{tag}"
                self._returned[message_id] = tag
        elif want_confirm:
            d = defer.succeed(None)
        self._channel.impl.basic_publish(exchange, key, body, properties, mandatory)
        return d

    def _wait_to_publish(self, *args: Any) -> defer.Deferred[None]:
        if self._error is not None:
            return defer.fail(self._error)
        if self._down is not None and len(self._backlog) >= self.max_waiting:
            return defer.fail(BrokerConnectionError(
                f"{len(self._backlog)} publishes already wait for the broker: {self._down}"))
        d: defer.Deferred[None] = defer.Deferred()
        self._backlog.append((args, d))
        return d

    def _flush(self) -> None:
        """Send what waited for the channel, for confirms to free up, or for the broker to
        unblock us, as far as the window allows."""
        backlog = self._backlog
        while backlog and self._channel is not None and not self._blocked and (
                len(self._unconfirmed) < self.max_unconfirmed):
            args, waiter = backlog.popleft()
            d = self._publish_now(*args, waiter=waiter)
            if d is not None and d is not waiter:
                d.chainDeferred(waiter)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        nack = method.NAME == "Basic.Nack"
        unconfirmed = self._unconfirmed
        if method.multiple:
            tags: Iterable[int] = range(self._low_tag, tag + 1)
        else:
            tags = (tag,)
        for each in tags:
            entry = unconfirmed.pop(each, None)
            if entry is None:
                continue
            d = entry[0]
            if nack:
                d.errback(NackError("the broker nacked the message (it could not take it)"))
            elif each in self._unroutable:
                self._unroutable.discard(each)
                d.errback(UnroutableError("the message was returned: no queue is bound for it"))
            else:
                d.callback(None)
        low = self._low_tag
        while low < self._next_tag and low not in unconfirmed:
            low += 1
        self._low_tag = low
        # Refill the window in bursts, not one publish per ack: the broker then confirms
        # many at once (multiple=True), one frame for hundreds of messages.
        if self._backlog and len(unconfirmed) <= self.max_unconfirmed // 2:
            self._flush()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        tag = self._returned.pop(properties.message_id, None) if properties.message_id else None
        if tag is not None:
            self._unroutable.add(tag)  # the broker acks it next; _on_confirm errbacks then
            return
        correlation_id = properties.correlation_id
        if correlation_id is not None and correlation_id in self._calls:
            self._calls.fail(
                correlation_id, "UnroutableError",
                f"no queue is bound to exchange {method.exchange!r} with key "
                f"{method.routing_key!r}: is the component running?")
            return
        log.warn("message to {exchange!r}/{key!r} was returned: {text}",
                 exchange=method.exchange, key=method.routing_key, text=method.reply_text)

    def _on_blocked(self, *_args: Any) -> None:
        log.warn("the broker blocked publishing (resource alarm): publishes wait")
        self._blocked = True

    def _on_unblocked(self, *_args: Any) -> None:
        log.info("the broker unblocked publishing")
        self._blocked = False
        self._flush()

    # ---- routing -----------------------------------------------------------------------

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

    def _encode(self, message: Message) -> str | bytes:
        message.fingerprint = self.fingerprint
        return self.encoder.encode(message.body)

    def _send_body(self, payload: str | bytes, options: Mapping[str, Any]
                   ) -> defer.Deferred[None]:
        mandatory = options.get("_mandatory", self.mandatory)
        deferreds = []
        for exchange, key in self._targets(options):
            name = exchange_name(exchange)
            if name not in self._declared and isinstance(exchange, type):
                d = self._declare_then(exchange).addCallback(
                    lambda _, n=name, k=key: self._publish(n, k, payload, self._properties,
                                                           mandatory))
            else:
                d = self._publish(name, key, payload, self._properties, mandatory)
            deferreds.append(d)
        if len(deferreds) == 1:
            return deferreds[0]
        return defer.gatherResults(deferreds, consumeErrors=True).addCallbacks(
            lambda _: None, lambda failure: failure.value.subFailure)

    def _declare_then(self, exchange: type[Exchange]) -> defer.Deferred[Any]:
        ready = defer.succeed(self) if self._usable else self.ready
        return ready.addCallback(lambda _: self._declare(self._channel, exchange))

    def send(self, name: str, *args: Any, **kwds: Any) -> defer.Deferred[None]:
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

    def call(self, name: str, *args: Any, **kwds: Any) -> defer.Deferred[Any]:
        """``rpc_NAME(...)``: fires with the result message (never errbacks for a timeout, an
        unroutable call or a lost connection), or with a queue name for ``_queue_only``."""
        try:
            options = split_options(kwds)
            payload = self._encode(self._build("rpc", RpcCommand, name, args, kwds))
            targets = self._targets(options)
        except (PostageError, ValueError, TypeError):
            return defer.fail()
        exchange, key = targets[0]
        if options.get("_queue_only"):
            return self._call_queue_only(exchange, key, payload)
        timeout = options.get("_timeout", self.rpc_timeout)
        max_retry = options.get("_max_retry", self.max_retry)
        correlation_id = f"{self._id_prefix}{next(self._ids)}"
        description = f"rpc {name!r} to {exchange_name(exchange)!r}/{key!r}"
        if self.rpc_reply_to == "direct":
            properties = self._make_properties(correlation_id=correlation_id,
                                               reply_to=DIRECT_REPLY_TO)
            send = functools.partial(self._send_direct, exchange, key, payload, properties,
                                     correlation_id)
            return self._calls.call(correlation_id, send, timeout, max_retry, description)
        return self._call_exclusive(exchange, key, payload, correlation_id, timeout, max_retry,
                                    description)

    def _send_direct(self, exchange: Any, key: str, payload: str | bytes, properties: Any,
                     correlation_id: str) -> None:
        """Send one attempt of a direct reply-to call on the RPC channel; while there is none
        (connecting) or the exchange is not declared yet, send it once they are."""
        channel = self._rpc_channel
        if channel is not None and (not isinstance(exchange, type)
                                    or exchange.name in self._declared):
            channel.impl.basic_publish(exchange_name(exchange), key, payload, properties, True)
            return
        if correlation_id in self._waiting_sends:
            return  # an earlier attempt already waits: one copy is enough
        self._waiting_sends.add(correlation_id)

        def send(_: Any) -> None:
            self._waiting_sends.discard(correlation_id)
            if correlation_id in self._calls:
                self._send_direct(exchange, key, payload, properties, correlation_id)

        d = self._declare_then(exchange).addCallback(send)
        d.addErrback(self._request_failed, correlation_id)

    def _send_request(self, exchange: Any, key: str, payload: str | bytes, properties: Any,
                      correlation_id: str) -> None:
        """Send one attempt of an exclusive-queue call, on the publishing channel."""
        name = exchange_name(exchange)
        if self._channel is not None and name in self._declared:
            # fast path: the confirm is not waited for; a return ends the call in _on_return
            d = self._publish(name, key, payload, properties, True, want_confirm=False)
        elif isinstance(exchange, type) and name not in self._declared:
            d = self._declare_then(exchange).addCallback(
                lambda _: self._publish(name, key, payload, properties, True))
        else:
            d = self._publish(name, key, payload, properties, True)
        if d is not None:
            d.addErrback(self._request_failed, correlation_id)

    def _request_failed(self, failure: Any, correlation_id: str) -> None:
        self._waiting_sends.discard(correlation_id)
        self._calls.fail(correlation_id, type(failure.value).__name__, str(failure.value))

    def _on_reply(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        correlation_id = properties.correlation_id
        if correlation_id is None:
            correlation_id = self._exclusive_replies.get(_method.consumer_tag)
        try:
            result = message_from_body(decode_envelope(body, self.encoder))
        except PostageError as exc:
            result = MessageResultException("MessageFormatError", f"malformed reply: {exc}")
        if not self._calls.reply(correlation_id, result):
            log.debug("dropped a late or stray RPC reply ({id})", id=correlation_id)

    @defer.inlineCallbacks
    def _reply_queue(self) -> Any:
        """Declare an exclusive, server-named reply queue (3.0.3's way)."""
        yield self.ready
        frame = yield self._channel.queue_declare("", exclusive=True, auto_delete=True)
        return frame.method.queue

    def _call_exclusive(self, exchange: Any, key: str, payload: str | bytes,
                        correlation_id: str, timeout: float, max_retry: int,
                        description: str) -> defer.Deferred[Any]:
        @defer.inlineCallbacks
        def run() -> Any:
            try:
                queue = yield self._reply_queue()
                channel = self._channel
                tag = yield channel.consume(queue, self._on_reply, auto_ack=True, exclusive=True)
            except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
                return MessageResultException(type(exc).__name__, str(exc))
            self._exclusive_replies[tag] = correlation_id
            properties = self._make_properties(correlation_id=correlation_id, reply_to=queue)
            send = functools.partial(self._send_request, exchange, key, payload, properties,
                                     correlation_id)
            try:
                result = yield self._calls.call(correlation_id, send, timeout, max_retry,
                                                description)
            finally:
                self._exclusive_replies.pop(tag, None)
                if channel.is_open:
                    channel.queue_delete(queue).addErrback(lambda _: None)
            return result

        return run()

    def _call_queue_only(self, exchange: Any, key: str, payload: str | bytes
                         ) -> defer.Deferred[Any]:
        @defer.inlineCallbacks
        def run() -> Any:
            queue = yield self._reply_queue()
            properties = self._make_properties(correlation_id=uuid.uuid4().hex, reply_to=queue)
            name = exchange_name(exchange)
            try:
                if isinstance(exchange, type):
                    yield self._declare(self._channel, exchange)
                yield self._publish(name, key, payload, properties, True)
            except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
                # the caller still gets its queue; consume_rpc() then says what happened
                self._queue_only_failures[queue] = MessageResultException(
                    type(exc).__name__, str(exc))
            return queue

        return run()

    @defer.inlineCallbacks
    def consume_rpc(self, queue: str, result_len: int = 1, callback: Any = None,
                    timeout: float | None = None) -> Any:
        """Read ``result_len`` replies from a ``_queue_only`` queue; fires with the list of
        result messages, ending with ``MessageResultException('TimeoutError', ...)`` when
        they do not all come within ``timeout`` (default: ``rpc_timeout``), or with the
        ``UnroutableError`` of a request that no queue could receive. ``callback(result)`` is
        called for each reply as it arrives. The queue is deleted afterwards."""
        failure = self._queue_only_failures.pop(queue, None)
        if failure is not None:
            return [failure]
        yield self.ready
        timeout = self.rpc_timeout if timeout is None else timeout
        channel = self._channel
        results: list[Any] = []
        done: defer.Deferred[None] = defer.Deferred()

        def on_message(_ch: Any, _method: Any, _properties: Any, body: bytes) -> None:
            try:
                result = message_from_body(decode_envelope(body, self.encoder))
            except PostageError as exc:
                result = MessageResultException("MessageFormatError", f"malformed reply: {exc}")
            if done.called:
                return
            results.append(result)
            if callback is not None:
                callback(result)
            if len(results) >= result_len:
                done.callback(None)

        timer = self._calls.clock.callLater(timeout, lambda: done.called or done.callback(None))
        tag = yield channel.consume(queue, on_message, auto_ack=True)
        yield done
        if timer.active():
            timer.cancel()
        if channel.is_open:
            yield channel.cancel(tag)
            yield channel.queue_delete(queue)
        if len(results) < result_len:  # what came, then why the rest did not
            results.append(MessageResultException(
                "TimeoutError", f"{len(results)} of {result_len} replies on {queue!r} after "
                f"{timeout}s"))
        return results

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
