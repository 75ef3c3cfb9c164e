"""The publisher-confirm window: which publish each broker ack, nack or return belongs to.

Plain state on a clock, in the manner of h11: no channel, no broker. The publisher asks
:meth:`ConfirmWindow.has_room` before it sends, tells :meth:`~ConfirmWindow.sent` after pika
*accepted* a publish (so a publish that pika refuses on the spot never takes a delivery tag,
and the tags of the others stay right), and hands over what the broker says
(:meth:`~ConfirmWindow.confirm`, :meth:`~ConfirmWindow.returned_message`). The window fires
each publish's Deferred:

- a broker ack → the Deferred fires (``UnroutableError`` if the broker returned it first:
  mandatory publishes carry a ``message_id`` so that the return, which names no tag, finds
  its publish);
- a nack → ``NackError``;
- a lost channel or connection → the unconfirmed publishes go back to the front of the
  backlog, in order, to be sent again on the next channel (at least once), except those to
  the exchange the broker refused, which fail with the broker's reason;
- a publish that waited ``wait_timeout`` seconds without being sent (no channel, the broker
  blocking publishers) → ``BrokerConnectionError``; and while nothing can be sent at most
  ``max_waiting`` publishes wait, further ones fail at once. So every Deferred ends.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from twisted.internet import defer

from postage.errors import BrokerConnectionError, NackError, PublishError, UnroutableError

__all__ = ["ConfirmWindow", "Publish", "refused_exchange"]

# "NOT_FOUND - no exchange 'x' in vhost '/'", "ACCESS_REFUSED - access to exchange 'x' in
# vhost '/' refused for user 'u'": the exchange a channel error was about
_EXCHANGE_IN_REASON = re.compile(r"exchange '((?:[^']|'(?! in vhost))*)' in vhost")


def refused_exchange(reason: BaseException | str | None) -> str | None:
    """The exchange a broker channel error names, if any."""
    match = _EXCHANGE_IN_REASON.search(str(reason or ""))
    return match.group(1) if match else None


class Publish:
    """One message to publish, and the Deferred of whoever waits for its confirm."""

    __slots__ = ("body", "deferred", "exchange", "key", "mandatory", "message_id",
                 "properties", "returned", "since", "traceparent")

    def __init__(self, exchange: str, key: str, body: str | bytes, properties: Any,
                 mandatory: bool, message_id: str | None = None,
                 traceparent: bytes | None = None) -> None:
        self.exchange = exchange
        self.key = key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.message_id = message_id
        self.traceparent = traceparent  # written into the properties' placeholder
        self.deferred: defer.Deferred[None] = defer.Deferred()
        self.returned = False
        self.since = 0.0


class ConfirmWindow:
    """Publishes sent and not yet confirmed (by delivery tag), and those waiting to be sent.

    ``sending`` is True while a channel in confirm mode is there; ``blocked`` while the
    broker blocks publishers (a resource alarm). Tags start at 1 on every new channel.
    """

    def __init__(self, clock: Any, max_unconfirmed: int = 1000, max_waiting: int = 10000,
                 wait_timeout: float = 60.0) -> None:
        self.clock = clock
        self.max_unconfirmed = max_unconfirmed
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.unconfirmed: dict[int, Publish] = {}
        # publishes by (exchange, outcome): confirmed, nacked, returned, failed (metrics)
        self.published: dict[tuple[str, str], int] = {}
        self.backlog: deque[Publish] = deque()
        self.returns: dict[str, Publish] = {}  # message_id -> its publish, until confirmed
        self.sending = False
        self.blocked = False
        self.error: BaseException | None = None  # set once nothing will ever be sent
        self._next_tag = 1
        self._low_tag = 1  # no unconfirmed tag is lower
        self._expiry: Any = None
        self._unexplained: str | None = None  # a channel error naming no exchange, if the
        # last loss was one and nothing was confirmed since

    # ---- before sending --------------------------------------------------------------

    def has_room(self) -> bool:
        """True when a publish may be sent now."""
        return (self.sending and not self.blocked
                and len(self.unconfirmed) < self.max_unconfirmed)

    def may_send_now(self) -> bool:
        """True when a new publish goes out at once (nothing waits before it)."""
        return not self.backlog and self.has_room()

    def hold(self, publish: Publish) -> defer.Deferred[None]:
        """Keep ``publish`` until it may be sent; its Deferred fires once confirmed."""
        if self.error is not None:
            publish.deferred.errback(self.error)
        elif not self.has_room() and len(self.backlog) >= self.max_waiting and (
                not self.sending or self.blocked):
            publish.deferred.errback(BrokerConnectionError(
                f"{len(self.backlog)} publishes already wait for the broker "
                f"({self._why_waiting()})"))
        else:
            publish.since = self.clock.seconds()
            self.backlog.append(publish)
            self._arm_expiry()
        return publish.deferred

    def next_to_send(self) -> Publish | None:
        """The next waiting publish, when there is room for it."""
        if self.backlog and self.has_room():
            return self.backlog.popleft()
        return None

    # ---- after sending ---------------------------------------------------------------

    def sent(self, publish: Publish) -> None:
        """pika accepted ``publish``: it takes the next delivery tag."""
        tag = self._next_tag
        self._next_tag = tag + 1
        self.unconfirmed[tag] = publish
        if publish.message_id is not None:
            self.returns[publish.message_id] = publish

    def returned_message(self, message_id: str | None) -> bool:
        """The broker returned the message with this id (its ack follows); True when it
        was one of ours."""
        publish = self.returns.get(message_id) if message_id else None
        if publish is None:
            return False
        publish.returned = True
        return True

    def confirm(self, tag: int, multiple: bool, nack: bool = False) -> None:
        """The broker acked (or nacked) ``tag``, and every lower one with ``multiple``."""
        unconfirmed = self.unconfirmed
        counts = self.published
        tags = range(self._low_tag, tag + 1) if multiple else (tag,)
        for each in tags:
            publish = unconfirmed.pop(each, None)
            if publish is None:
                continue
            if publish.message_id is not None:
                self.returns.pop(publish.message_id, None)
            outcome = (publish.exchange, "nacked" if nack else "returned" if publish.returned
                       else "confirmed")
            counts[outcome] = counts.get(outcome, 0) + 1
            if nack:
                publish.deferred.errback(NackError(
                    "the broker nacked the message (it could not take it)"))
            elif publish.returned:
                publish.deferred.errback(UnroutableError(
                    f"the message to {publish.exchange!r}/{publish.key!r} was returned: no "
                    "queue is bound for it"))
            else:
                publish.deferred.callback(None)
        self._unexplained = None
        low = self._low_tag
        while low < self._next_tag and low not in unconfirmed:
            low += 1
        self._low_tag = low

    def refill_wanted(self) -> bool:
        """True when waiting publishes should be sent now: the window is at most half
        full. Refilling in bursts, not one publish per ack, lets the broker confirm many
        at once (one ``multiple`` ack for hundreds of messages)."""
        return bool(self.backlog) and len(self.unconfirmed) <= self.max_unconfirmed // 2

    # ---- channel lifecycle ------------------------------------------------------------

    def channel_open(self) -> None:
        """A new channel in confirm mode is there: tags start again at 1."""
        self._next_tag = self._low_tag = 1
        self.sending = True

    def channel_lost(self, reason: BaseException | None = None) -> None:
        """The channel (or its connection) is gone: what it did not confirm is sent again
        on the next one, first and in order; publishes to an exchange the broker refused
        (``reason`` names it) fail with that reason instead, so one bad publish neither
        fails the others nor loops. A channel error that names no exchange and comes again,
        with nothing confirmed in between, fails what it would otherwise send forever."""
        self.sending = False
        pending = list(self.unconfirmed.values())
        self.unconfirmed.clear()
        self.returns.clear()
        refused = refused_exchange(reason)
        if refused is None and reason is not None and not isinstance(
                reason, BrokerConnectionError):
            text = str(reason)
            if text == self._unexplained:
                self._unexplained = None
                self.backlog.extendleft(reversed(pending))
                self.fail_all(PublishError(f"the broker keeps refusing: {text}"))
                self.error = None
                return
            self._unexplained = text
        keep = []
        for publish in pending:
            publish.returned = False
            if refused is not None and publish.exchange == refused:
                self._failed(publish).errback(PublishError(
                    f"the broker refused the publish to {refused!r}: {reason}"))
            else:
                keep.append(publish)
        if refused is not None and self.backlog:
            waiting, self.backlog = self.backlog, deque()
            for publish in waiting:
                if publish.exchange == refused:
                    self._failed(publish).errback(PublishError(
                        f"the broker refused the publish to {refused!r}: {reason}"))
                else:
                    self.backlog.append(publish)
        now = self.clock.seconds()
        for publish in keep:
            publish.since = now
        self.backlog.extendleft(reversed(keep))
        if self.backlog:
            self._arm_expiry()

    def _failed(self, publish: Publish) -> defer.Deferred[None]:
        """Count a publish that fails without a broker answer; its Deferred, to errback."""
        if publish.properties is not None:  # (not a marker, which publishes nothing)
            key = (publish.exchange, "failed")
            self.published[key] = self.published.get(key, 0) + 1
        return publish.deferred

    def fail_all(self, error: BaseException) -> None:
        """Nothing will be sent any more (closed, or a permanent error): fail everything."""
        self.error = error
        self.sending = False
        pending = [*self.unconfirmed.values(), *self.backlog]
        self.unconfirmed.clear()
        self.backlog.clear()
        self.returns.clear()
        self._disarm_expiry()
        for publish in pending:
            self._failed(publish).errback(error)

    # ---- the time bound of waiting publishes ------------------------------------------

    def _why_waiting(self) -> str:
        if self.blocked:
            return "the broker blocks publishers"
        return "no connection" if not self.sending else "the confirm window is full"

    def _arm_expiry(self) -> None:
        if self._expiry is None and self.backlog:
            oldest = min(publish.since for publish in self.backlog)
            delay = max(oldest + self.wait_timeout - self.clock.seconds(), 0.0)
            self._expiry = self.clock.callLater(delay, self._expire)

    def _disarm_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        deadline = self.clock.seconds() - self.wait_timeout
        if any(publish.since <= deadline for publish in self.backlog):
            why = self._why_waiting()
            waiting, self.backlog = self.backlog, deque()
            for publish in waiting:
                if publish.since <= deadline:
                    self._failed(publish).errback(BrokerConnectionError(
                        f"the publish to {publish.exchange!r}/{publish.key!r} waited "
                        f"{self.wait_timeout}s without being sent ({why})"))
                else:
                    self.backlog.append(publish)
        self._arm_expiry()
