"""One message the broker delivered to a consumer, and its settlement (ack or reject), once.

A delivery tag means something only on the channel the delivery came on: after that channel
closed (a channel error, a lost connection) the broker has put the message back in its queue
and will deliver it again, so an ack or reject on a new channel would be a protocol error
that closes it. :class:`Delivery` keeps its channel, settles at most once, and says whether
the settlement reached the broker.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Delivery"]


class Delivery:
    """``body`` (bytes), ``properties`` (pika's ``BasicProperties``), ``queue``,
    ``exchange``, ``routing_key``, ``redelivered``, and :meth:`ack` / :meth:`reject`.

    ``channel`` is the :class:`~postage.twisted.connection.Channel` it came on; ``settled``
    is True once acked or rejected (or given up because that channel is gone).
    """

    __slots__ = ("body", "channel", "exchange", "properties", "queue", "redelivered",
                 "routing_key", "settled", "tag")

    def __init__(self, channel: Any, method: Any, properties: Any, body: bytes,
                 queue: str) -> None:
        self.channel = channel
        self.tag: int = method.delivery_tag
        self.exchange: str = method.exchange
        self.routing_key: str = method.routing_key
        self.redelivered: bool = method.redelivered
        self.properties = properties
        self.body = body
        self.queue = queue
        self.settled = False

    @property
    def current(self) -> bool:
        """True while the channel it came on is open: an ack can still reach the broker."""
        return self.channel.is_open

    def ack(self, now: bool = False) -> bool:
        """Ack it; True when the ack was sent or will be at the end of this reactor turn
        (``now``: sent at once); False when settled already, or its channel is gone and the
        broker delivers the message again."""
        if self.settled:
            return False
        self.settled = True
        if not self.channel.is_open:
            return False
        self.channel.frames.ack(self.tag, now)
        return True

    def reject(self, requeue: bool = False) -> bool:
        """Reject it (without requeue a dead-letter exchange, if the queue has one, keeps
        it); True when the reject was sent."""
        if self.settled:
            return False
        self.settled = True
        if not self.channel.is_open:
            return False
        self.channel.frames.reject(self.tag, requeue=requeue)
        return True

    def header(self, name: str, default: Any = None) -> Any:
        """An AMQP header of the delivery (``default`` when absent)."""
        headers = self.properties.headers
        return default if not headers else headers.get(name, default)

    def __repr__(self) -> str:
        return (f"<Delivery {self.tag} from {self.queue!r} "
                f"({'settled' if self.settled else 'unsettled'})>")
