"""GenericConsumer on Twisted: declare, bind, consume; ack or reject each delivery.

Deliveries are handed to a callback as they arrive, each as a
:class:`~postage.twisted.delivery.Delivery` (pika's callback style: about 10% faster than
pulling from its DeferredQueue); ``prefetch_count`` bounds how many are unacked at once,
which is also what bounds memory. The consumer does not decode: the processor does.

A channel the broker closes (a refused re-declaration, a delivery-ack timeout) and a
consumer the broker cancels (its queue deleted) are recovered by declaring and consuming
again, with backoff between failed attempts (:class:`~postage.twisted.recovery.Recovery`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from postage import config
from postage.encoders import JsonEncoder
from postage.errors import BrokerConnectionError
from postage.exchanges import Exchange, exchange_name
from postage.twisted.connection import Channel, Connection, Session
from postage.twisted.delivery import Delivery
from postage.twisted.logs import PostageLogger
from postage.twisted.reactors import default_reactor
from postage.twisted.recovery import Recovery
from postage.twisted.topology import Topology, parse_queue

__all__ = ["GenericConsumer"]

log = PostageLogger()

_KNOBS = ("eqk", "encoder_class", "prefetch_count", "connect_timeout")

OnDelivery = Callable[[Delivery], Any]


class GenericConsumer:
    """Consumes the queues of ``eqk = [(Exchange, [(queue, key), ...]), ...]``.

    A queue is a name or ``{'name': ..., 'flags': {...}}``; queues use pika's defaults (not
    durable, not exclusive, not auto-delete) unless flags say otherwise. Knobs (class
    attributes or constructor keywords): ``eqk``, ``encoder_class``, ``prefetch_count``,
    ``connect_timeout``.
    """

    eqk: list[Any] = []
    encoder_class: type = JsonEncoder
    prefetch_count = 10
    hup: Mapping[str, Any] | None = None
    vhost: str | None = None
    connect_timeout: float = 10

    def __init__(self, eqk: list[Any] | None = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, *, reactor: Any = None, name: str | None = None,
                 **knobs: Any) -> None:
        for knob, value in knobs.items():
            if knob not in _KNOBS:
                raise TypeError(f"unknown consumer option {knob!r}")
            setattr(self, knob, value)
        if eqk is not None:
            self.eqk = eqk
        self.reactor = reactor = default_reactor(reactor)
        self.name = name
        self.settings = config.settings(
            hup if hup is not None else self.hup,
            vhost if vhost is not None else self.vhost,
            self.connect_timeout,
        )
        self.encoder = self.encoder_class()
        self.topology = Topology(prefetch_count=self.prefetch_count)
        self.topology.add_eqk(self.eqk)
        self.connection: Connection | None = None
        self.channel: Channel | None = None
        self._on_delivery: OnDelivery | None = None
        self._consumers: dict[str, str] = {}  # queue -> consumer tag
        self._wanted = False  # consume, now and after reconnections? False once stopping
        self._recovery = Recovery(self.reactor, "the consumer's channel", lambda: (
            self._wanted and self.connection is not None and self.connection.is_open))
        # fires if the consumer gives up (a wrong password or vhost when reconnecting)
        self.gave_up: defer.Deferred[BrokerConnectionError] = defer.Deferred()
        self._session = Session(self.settings, self.reactor, name, self._on_connected,
                                self._on_connection_lost, self._give_up)

    @property
    def queues(self) -> list[str]:
        """The queues this consumer reads."""
        return list(self.topology.queues)

    @property
    def consuming(self) -> list[str]:
        """The queues consumed right now (none while reconnecting)."""
        return list(self._consumers)

    @defer.inlineCallbacks
    def start(self, on_delivery: OnDelivery) -> Any:
        """Connect, declare the topology and consume every queue; ``on_delivery(delivery)``
        gets each :class:`Delivery`. Fires once all queues are consumed."""
        self._on_delivery = on_delivery
        self._wanted = True
        yield self._session.start()

    @defer.inlineCallbacks
    def _on_connected(self, connection: Connection) -> Any:
        """Declare the whole topology and consume every queue: at start and after each
        reconnection (deliveries unacked on the lost connection come back from the broker).
        A consumer that is stopping declares nothing and consumes nothing."""
        self.connection = connection
        if not self._wanted:
            return
        self.channel = channel = yield connection.channel()
        channel.twisted.on_closed.addCallback(self._on_channel_closed, channel)
        channel.impl.add_on_cancel_callback(self._on_cancelled)
        yield self.topology.declare(channel)
        for queue in self.topology.queues:
            yield self._consume(queue)

    def _on_channel_closed(self, reason: Any, channel: Channel) -> None:
        """The broker closed the channel but not the connection (a channel error): open
        a new channel and consume again, rather than go silently deaf."""
        if channel is not self.channel or self._session.closing:
            return
        self.channel = None
        self._consumers.clear()
        if self.connection is None or not self.connection.is_open or not self._wanted:
            return  # the session reconnects, or we are stopping
        log.warn("the broker closed the consumer's channel ({reason}): opening a new one",
                 reason=reason)
        self._recovery.start(self._reconnected)

    def _reconnected(self) -> defer.Deferred[Any]:
        """Set up again on the current connection (a recovery's attempt)."""
        connection = self.connection
        # Recovery calls an attempt only while its alive() sees a connection, synchronously
        # (and _declare_queue comes here before its first yield)
        assert connection is not None
        return self._on_connected(connection)

    def _on_cancelled(self, frame: Any) -> None:
        """The broker cancelled one of our consumers: its queue was deleted (or, for a
        replicated queue, its node failed). Declare the queue and its bindings again, and
        consume it again."""
        tag = frame.method.consumer_tag
        queue = next((queue for queue, each in self._consumers.items() if each == tag), None)
        if queue is None:
            return
        del self._consumers[queue]
        log.warn("the broker cancelled the consumer of {queue!r}: declaring it again",
                 queue=queue)
        self._recovery.start(lambda: self._declare_queue(queue))

    @defer.inlineCallbacks
    def _declare_queue(self, queue: str) -> Any:
        channel = self.channel
        if channel is None or not channel.is_open:
            yield self._reconnected()
            return
        yield channel.queue_declare(queue, **self.topology.queues[queue])
        for exchange, bound, key in self.topology.bindings:
            if bound == queue and exchange:
                yield channel.queue_bind(queue, exchange, routing_key=key)
        yield self._consume(queue)

    def _on_connection_lost(self, error: BrokerConnectionError) -> None:
        self.channel = None
        self._consumers.clear()
        self._recovery.cancel()

    def _give_up(self, error: BrokerConnectionError) -> None:
        self.channel = None
        self._consumers.clear()
        self._recovery.cancel()
        if not self.gave_up.called:
            self.gave_up.callback(error)

    @defer.inlineCallbacks
    def _consume(self, queue: str) -> Any:
        on_delivery = self._on_delivery
        if queue in self._consumers or on_delivery is None or not self._wanted:
            return
        channel = self.channel
        if channel is None:
            return  # the channel closed meanwhile: its recovery consumes every queue again

        def deliver(_impl: Any, method: Any, properties: Any, body: bytes) -> None:
            on_delivery(Delivery(channel, method, properties, body, queue))

        tag = yield channel.consume(queue, deliver)
        self._consumers[queue] = tag

    @defer.inlineCallbacks
    def queue_bind(self, exchange: type[Exchange] | str, queue: str | Mapping[str, Any],
                   key: str) -> Any:
        """Bind ``queue`` to ``exchange`` with ``key`` now (declaring both as needed) and, on a
        running consumer, start consuming the queue if it is new.

        The declarations run on a channel of their own: when the broker refuses one (a
        missing exchange, flags that differ from the queue's), that channel closes, the
        Deferred errbacks, nothing is recorded, and the consumer goes on consuming."""
        name, flags = parse_queue(queue)
        # (a consumer with a channel has its connection: the second test narrows only)
        if self.channel is None or self.connection is None:
            self.topology.add_binding(exchange, queue, key)
            return  # declared with the rest at start()
        bound_to = exchange_name(exchange)
        new_queue = name not in self.topology.queues
        channel = yield self.connection.channel()
        try:
            if isinstance(exchange, type):
                yield channel.exchange_declare(**exchange.parameters)
            if new_queue or flags:
                yield channel.queue_declare(name, **flags)
            if bound_to:
                yield channel.queue_bind(name, bound_to, routing_key=key)
        finally:
            channel.close()
        self.topology.add_binding(exchange, queue, key)
        yield self._consume(name)

    @defer.inlineCallbacks
    def queue_unbind(self, exchange: Any, queue: str, key: str) -> Any:
        """Remove a binding (the queue stays, and stays consumed)."""
        bound_to, _, _ = self.topology.remove_binding(exchange, queue, key)
        if self.channel is not None and self.connection is not None and bound_to:
            channel = yield self.connection.channel()  # a refusal closes this one only
            try:
                yield channel.queue_unbind(queue, bound_to, routing_key=key)
            finally:
                channel.close()

    def publish(self, exchange: str, key: str, body: str | bytes, properties: Any) -> None:
        """Publish on the consumer's channel (replies: not mandatory, see pitfall 5)."""
        if self.channel is not None and self.channel.is_open:
            self.channel.frames.publish(exchange, key, body, properties)
        else:
            log.warn("cannot publish to {key!r}: the consumer's channel is closed", key=key)

    @defer.inlineCallbacks
    def stop_consuming(self) -> Any:
        """Cancel every consumer: no new deliveries arrive after this fires, and none is
        started again by a reconnection."""
        self._wanted = False
        self._recovery.cancel()
        consumers, self._consumers = self._consumers, {}
        if self.channel is not None:
            for tag in consumers.values():
                yield self.channel.cancel(tag)

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Stop consuming and close the channel and the connection."""
        try:
            yield self.stop_consuming()
            channel, self.channel = self.channel, None  # (its closing is ours: no reopening)
            if channel is not None:
                yield channel.close()
        finally:
            yield self._session.close()
