"""The server side of RPC and remote control in a processor: the reply function (ack, then
reply), the guard against requests delivered again and again, and who may send ``quit`` and
``restart``.

Plain state where it can be: :class:`Redeliveries` and :class:`RemoteControl` hold no
channel; :func:`reply_function` is handed what it publishes with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pika import BasicProperties

from postage import tracing
from postage.messages import Message, MessageResultException
from postage.twisted.delivery import Delivery
from postage.twisted.logs import PostageLogger

__all__ = ["Redeliveries", "RemoteControl", "readable", "reply_function"]

log = PostageLogger()

MAX_REDELIVERIES = 3
_KEPT = 1024  # requests whose redeliveries are counted (the oldest is forgotten first)


def readable(content_type: str, encoder_type: str) -> bool:
    """A content type the encoder reads although it is not spelled as the encoder's
    (``application/json; charset=utf-8``, other letter case; an empty one means none)."""
    media, _, parameters = content_type.partition(";")
    charset = parameters.strip().lower()
    same_media = media.strip().lower() == encoder_type
    return not content_type.strip() or (
        same_media and charset in ("", "charset=utf-8", 'charset="utf-8"'))


class Redeliveries:
    """Counts the deliveries of RPC requests delivered again, to refuse one that keeps
    coming back (it may be breaking the connection that answers it)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # correlation (or message) id -> deliveries seen

    def poisonous(self, delivery: Delivery) -> bool:
        """True for a request delivered more than ``MAX_REDELIVERIES`` times (counted by
        the broker for quorum queues, here by correlation id otherwise)."""
        count = delivery.header("x-delivery-count")
        if count is None:
            key = delivery.properties.correlation_id or delivery.properties.message_id
            if key is None:
                return False
            seen = self._seen
            count = seen.pop(key, 0) + 1
            seen[key] = count
            if len(seen) > _KEPT:
                del seen[next(iter(seen))]
        return bool(count > MAX_REDELIVERIES)


class RemoteControl:
    """Who may send ``quit`` and ``restart``: the broker users in ``users`` (the broker
    validates the ``user_id`` property, so it cannot be forged). A refused sender is logged
    once."""

    def __init__(self, users: Iterable[str]) -> None:
        self.users = frozenset(users)
        self._refused: set[str | None] = set()

    def allowed(self, delivery: Delivery, message: dict[str, Any]) -> bool:
        user = delivery.properties.user_id
        if user in self.users:
            return True
        if user not in self._refused:
            self._refused.add(user)
            log.warn("ignored {name!r} from user {user!r}: not in remote_control_users",
                     name=message["name"], user=user)
        return False


def reply_function(delivery: Delivery, *, encoder: Any, fingerprint: dict[str, Any],
                   user: str, publish: Callable[[str, str, Any, Any], None],
                   answered: Callable[[], None], context: Any = None
                   ) -> Callable[[Message], None]:
    """The function an RPC handler answers with, once: it acks the request, then
    publishes the result to ``reply_to`` with the request's correlation id (3.0.3 callers
    send none). Acking first means a reply that breaks the connection (a caller's node
    gone, on some RabbitMQ versions) does not bring the request back."""
    properties = delivery.properties
    reply_to = properties.reply_to
    correlation_id = properties.correlation_id
    sent = False

    def reply_func(result: Message) -> None:
        nonlocal sent
        if sent:
            log.warn("a handler replied twice to {reply_to}; the second reply is dropped",
                     reply_to=reply_to)
            return
        sent = True
        delivery.ack(now=True)
        if not reply_to:
            log.warn("an RPC request without reply_to cannot be answered")
            return
        result.fingerprint = fingerprint
        try:
            body = encoder.encode(result.body)
        except Exception as exc:  # noqa: BLE001 - answer the caller, keep running
            body = encoder.encode(MessageResultException(type(exc).__name__, str(exc)).body)
        trace = tracing.child_header(context) if context is not None else \
            tracing.outgoing_header()
        publish("", reply_to, body, BasicProperties(
            content_type=encoder.content_type, correlation_id=correlation_id, user_id=user,
            headers={"traceparent": trace}))
        answered()

    return reply_func
