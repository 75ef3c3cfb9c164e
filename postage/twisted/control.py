"""Discovery: a processor answers ``describe`` on the ``postage.control`` exchange.

Each processor gets a :class:`ControlResponder`: an exclusive, auto-delete queue bound to the
durable topic exchange ``postage.control`` with the keys ``all`` and ``name.<name>``, read by
a consumer of its own (so on a connection of its own). Being apart from the processor's
consumer is the point: the answer is made on the reactor, never queued behind the processor's
deliveries, its prefetch window, or a 3.0.3-style handler blocking its worker thread; the
queue is not one of the processor's queues (readiness does not depend on it); and the
consumer's reconnection and re-declaration keep the queue there across connection losses.
The answer reads plain counters; nothing on the message path is added for it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from pika import BasicProperties
from twisted.internet import defer

from postage import __version__, fleet, tracing
from postage.errors import BrokerConnectionError, MessageFormatError
from postage.messages import MessageResult, MessageResultError, decode_envelope
from postage.twisted.consumer import GenericConsumer
from postage.twisted.logs import PostageLogger
from postage.twisted.topology import Topology

__all__ = ["ControlResponder", "describe"]

log = PostageLogger()


def describe(processor: Any, started_at: float) -> dict[str, Any]:
    """The ``describe`` value of a running processor (see ``postage.fleet``)."""
    consumer = processor.consumer
    session = getattr(consumer, "_session", None)
    connection = consumer.connection
    host = port = None
    if connection is not None and connection.is_open:
        transport = getattr(connection.protocol, "transport", None)
        peer = transport.getPeer() if transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    stats = processor.stats
    stats.in_flight = processor._in_flight
    counters = stats.counters()
    policy = getattr(processor, "counters", None)  # a failure policy's own plain counters
    if isinstance(policy, Mapping):
        for key in ("retried", "dead"):
            if key in policy:
                counters[key] = policy[key]
    handlers = {(type_, name) for _category, type_, name in processor.dispatch.keys()}
    return fleet.describe_value(
        fingerprint=processor.fingerprint, version=__version__, started_at=started_at,
        now=time.time(), queues=consumer.queues, handlers=handlers, counters=counters,
        host=host, port=port,
        connected_since=getattr(session, "connected_since", None),
        reconnects=max(getattr(session, "connections", 0) - 1, 0))


class _ControlConsumer(GenericConsumer):
    """The responder's consumer: a fresh control queue on each connection and channel."""

    def __init__(self, responder: ControlResponder, *args: Any, **kwds: Any) -> None:
        self.responder = responder
        super().__init__(*args, **kwds)

    def _on_connected(self, connection: Any) -> Any:
        self.topology = Topology(prefetch_count=self.prefetch_count)
        self.topology.add_eqk(self.responder._eqk())
        return super()._on_connected(connection)


class ControlResponder:
    """Answers the control commands of one processor (see the module docstring)."""

    def __init__(self, processor: Any, hup: Any = None, vhost: str | None = None) -> None:
        self.processor = processor
        self.started_at = time.time()
        self.name = processor.fingerprint.get("name") or type(processor).__name__
        self.queue = ""
        self.consumer = _ControlConsumer(
            self, self._eqk(), hup, vhost, reactor=processor.reactor,
            name=f"{self.name}.control", prefetch_count=10,
            connect_timeout=processor.connect_timeout)
        self._starting: defer.Deferred[Any] | None = None

    def _eqk(self) -> list[Any]:
        """The control queue, named afresh: an exclusive queue of a connection that died may
        outlive it on the broker for a while, and declaring its name again would be refused
        (RESOURCE_LOCKED) until then."""
        self.queue = f"{fleet.CONTROL_EXCHANGE}.{self.name}.{uuid.uuid4().hex[:12]}"
        queue = {"name": self.queue, "flags": {"exclusive": True, "auto_delete": True}}
        return [(fleet.ControlExchange, [(queue, fleet.key_for(None)),
                                         (queue, fleet.key_for(self.name))])]

    def start(self) -> defer.Deferred[None]:
        """Consume the control queue; fires once it is consumed, or once it failed (logged:
        a component that cannot be discovered still does its work)."""
        if self._starting is None:
            self.started_at = time.time()
            self._starting = self.consumer.start(self._on_delivery)
            self._starting.addErrback(self._start_failed)
        return self._starting

    def _start_failed(self, failure: Any) -> None:
        if self.consumer._session.closing:
            return
        # an unreachable broker is the processor's to report; anything else (a user not
        # allowed to declare postage.control) is this one's
        emit = log.debug if isinstance(failure.value, BrokerConnectionError) else log.warn
        emit("{queue}: not discoverable: {error}", queue=self.queue, error=failure.value)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Close the control connection (its exclusive queue goes with it)."""
        try:
            yield self.consumer.close()
        except Exception as exc:  # noqa: BLE001 - closing what may be half open
            log.debug("control close: {error}", error=exc)

    def describe(self) -> dict[str, Any]:
        return describe(self.processor, self.started_at)

    def _on_delivery(self, delivery: Any) -> None:
        delivery.ack()
        properties = delivery.properties
        try:
            message = decode_envelope(delivery.body, self.consumer.encoder)
        except MessageFormatError as exc:
            log.warn("a control message that is not a Postage envelope: {error}", error=exc)
            return
        if message["category"] != "rpc":
            return
        result: MessageResult | MessageResultError
        if message["name"] == fleet.DESCRIBE:
            try:
                result = MessageResult(self.describe())
            except Exception as exc:  # noqa: BLE001 - answer, and keep answering
                log.failure("describe failed")
                result = MessageResultError(f"describe failed: {exc!r}")
        else:
            result = MessageResultError(f"unknown control command {message['name']!r}; "
                                        f"known: {fleet.DESCRIBE!r}")
        self._reply(properties, result)

    def _reply(self, request: Any, result: Any) -> None:
        if not request.reply_to:
            return
        result.fingerprint = self.processor.fingerprint
        parent = tracing.parse((request.headers or {}).get("traceparent"))
        context = parent.child() if parent is not None else tracing.new_context()
        properties = BasicProperties(
            content_type=self.consumer.encoder.content_type,
            correlation_id=request.correlation_id, user_id=self.consumer.settings.user,
            headers={"traceparent": context.traceparent})
        self.consumer.publish("", request.reply_to, self.consumer.encoder.encode(result.body),
                              properties)
