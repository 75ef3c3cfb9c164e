"""Re-publishing failed deliveries to their delay or dead queue, with publisher confirms.

:class:`Redeliverer` is what a processor with a retry policy owns: a
:class:`~postage.twisted.producer.GenericProducer` (its confirm tracking, reconnection and
backlog, reused) that publishes a failed delivery's body, with the headers the pure core
computed (:mod:`postage.retry`), to ``<queue>.retry.<ms>`` or ``<queue>.dead``. The Deferred
it returns fires once the broker *confirmed* that publish; only then does the processor ack
the original delivery. A crash in between leaves both copies (the original is delivered again
by the broker): a duplicate, never a loss. The publish is ``mandatory``: a delay or dead
queue someone deleted makes it fail (UnroutableError) instead of vanishing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer

from postage.retry import Decision, RetryPolicy, dead_queue, dead_queue_flags, delay_queue
from postage.retry import delay_queue_flags as _delay_flags

__all__ = ["DEAD_AT_HEADER", "Redeliverer", "publish_raw", "republish_properties",
           "side_queues"]

DEAD_AT_HEADER = "x-postage-dead-at"
_ORIGINAL_USER_HEADER = "x-postage-original-user-id"


def side_queues(queues: Mapping[str, Mapping[str, Any]], policies: list[RetryPolicy]
                ) -> dict[str, dict[str, Any]]:
    """The delay and dead queues (name -> ``queue_declare`` flags) of every consumed queue
    under every policy in use: declared with the processor's topology, never consumed."""
    out: dict[str, dict[str, Any]] = {}
    for queue, flags in queues.items():
        for policy in policies:
            for n in range(1, policy.attempts):
                ms = policy.delay_ms(n)
                out.setdefault(delay_queue(queue, ms), _delay_flags(queue, ms, flags))
        if policies:
            out[dead_queue(queue)] = dead_queue_flags(flags)
    return out


def republish_properties(properties: Any, headers: Mapping[str, Any], user: str,
                         dead: bool = False, now: float | None = None) -> Any:
    """A copy of a delivery's properties for its re-publication: ``headers`` replace its
    headers, it is persistent, and its per-message ``expiration`` is dropped (a TTL meant
    for its first delivery must not make it vanish from a delay or dead queue). A
    ``user_id`` that is not ours is moved to a header: RabbitMQ refuses a publish whose
    ``user_id`` is not the publishing connection's user."""
    out = copy.copy(properties)
    out.headers = dict(headers)
    out.delivery_mode = 2
    out.expiration = None
    if out.user_id is not None and out.user_id != user:
        out.headers[_ORIGINAL_USER_HEADER] = out.user_id
        out.user_id = None
    if dead:
        stamp = time.time() if now is None else now
        out.headers[DEAD_AT_HEADER] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    return out


def publish_raw(producer: Any, queue: str, body: bytes, properties: Any
                ) -> defer.Deferred[None]:
    """Publish bytes as they are to ``queue`` (nameless exchange, mandatory) with the
    producer's confirm tracking; fires once the broker confirmed it."""
    # The producer's Publisher (confirm window, backlog while reconnecting): this is the one
    # place outside the producer that uses it.
    return producer._publisher.publish("", queue, body, properties, True)


class Redeliverer:
    """Publishes failed deliveries where their :class:`~postage.retry.Decision` says."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    @property
    def user(self) -> str:
        return self.producer.settings.user

    def publish(self, decision: Decision, body: bytes, properties: Any
                ) -> defer.Deferred[None]:
        """Fires once ``decision.queue`` has the message (confirmed); errbacks otherwise."""
        out = republish_properties(properties, decision.headers, self.user,
                                   dead=decision.action == "dead")
        return publish_raw(self.producer, decision.queue, body, out)

    @defer.inlineCallbacks
    def declare(self, queues: Mapping[str, Mapping[str, Any]]) -> Any:
        """Declare ``queues`` (name -> flags) again, on a channel of their own: a delay or
        dead queue someone deleted while the processor ran."""
        yield self.producer.ready
        channel = yield self.producer.connection.channel()
        try:
            for queue, flags in queues.items():
                yield channel.queue_declare(queue, **flags)
        finally:
            yield channel.close()

    def close(self) -> defer.Deferred[Any]:
        return self.producer.close()
