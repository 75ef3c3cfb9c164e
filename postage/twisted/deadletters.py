"""``postage dead list | replay | purge``: look at a dead queue, put its messages back, empty it.

How ``list`` peeks without removing anything: it takes the messages one by one with
``basic.get`` *without* acking them, on a channel of its own, and then closes that channel.
The broker requeues every unacked message of a closed channel, in its original place (classic
queues); if this process dies half-way, its connection goes and the broker requeues them just
the same. Nothing is acked, so nothing can be lost; the only trace is the ``redelivered`` flag
(and, on a quorum queue, ``x-delivery-count``: give dead queues no ``delivery-limit``). An
explicit ``basic.nack(requeue=True)`` per message would be one more frame each and would lose
that guarantee when the process dies between two nacks — no worse, but no better either.

``replay`` moves messages from ``<queue>.dead`` back to ``<queue>`` one at a time: get
(unacked), publish to the queue (mandatory, confirmed), and only then ack the dead copy. A
crash in between leaves the message in both places (a duplicate), never in neither. It moves
at most the number of messages the dead queue held when it started, so a message that fails
again at once and comes back is not replayed in a loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from postage.errors import PostageError, UnroutableError
from postage.messages import decode_envelope
from postage.retry import (
    DEAD_REASON_HEADER,
    ERROR_HEADER,
    ERRORS_HEADER,
    dead_queue,
    failed_attempts,
    replay_headers,
)
from postage.twisted.retries import DEAD_AT_HEADER, publish_raw, republish_properties

__all__ = ["DeadMessage", "format_table", "list_dead", "purge_dead", "replay_dead"]


@dataclass
class DeadMessage:
    """One message of a dead queue as ``postage dead list`` shows it."""

    position: int
    category: str | None
    type: str | None
    name: str | None
    attempts: int
    reason: str
    error: str
    errors: list[str] = field(default_factory=list)
    dead_at: str | None = None
    message_id: str | None = None
    size: int = 0
    headers: dict[str, Any] = field(default_factory=dict)
    body: Any = None

    @classmethod
    def from_delivery(cls, position: int, properties: Any, body: bytes) -> DeadMessage:
        headers = {key: _plain(value) for key, value in (properties.headers or {}).items()}
        try:
            envelope = decode_envelope(body)
            shown: Any = envelope
        except PostageError:
            envelope = {}
            shown = body.decode("utf-8", "replace")
        reason = headers.get(DEAD_REASON_HEADER)
        if reason is None and "x-first-death-reason" in headers:
            # dead-lettered by the broker itself (a quorum queue's delivery-limit, a TTL)
            reason = f"broker: {headers['x-first-death-reason']}"
        return cls(position, envelope.get("category"), envelope.get("type"),
                   envelope.get("name"), failed_attempts(headers), str(reason or ""),
                   str(headers.get(ERROR_HEADER, "")),
                   [str(e) for e in headers.get(ERRORS_HEADER) or []],
                   headers.get(DEAD_AT_HEADER), properties.message_id, len(body), headers,
                   shown)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _plain(value: Any) -> Any:
    """Header values as JSON can hold them (pika gives bytes for undecodable strings)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


@defer.inlineCallbacks
def _dead_count(connection: Any, queue: str) -> Any:
    """The number of messages in ``<queue>.dead``; a clear error when it does not exist."""
    channel = yield connection.channel()  # a passive declare of a missing queue closes it
    try:
        frame = yield channel.queue_declare(dead_queue(queue), passive=True)
    except Exception as exc:  # noqa: BLE001 - pika's ChannelClosedByBroker (404)
        hint = (f" (give the queue it serves: {queue[:-5]!r})" if queue.endswith(".dead")
                else "")
        raise PostageError(f"there is no dead queue {dead_queue(queue)!r}{hint}: does a "
                           f"processor with a retry policy consume {queue!r}?") from exc
    finally:
        yield channel.close()
    return frame.method.message_count


@defer.inlineCallbacks
def list_dead(connection: Any, queue: str, limit: int | None = None) -> Any:
    """Peek at the messages of ``<queue>.dead`` (at most ``limit``); removes nothing."""
    yield _dead_count(connection, queue)
    channel = yield connection.channel()
    found: list[DeadMessage] = []
    try:
        while limit is None or len(found) < limit:
            got = yield channel.twisted.basic_get(dead_queue(queue), auto_ack=False)
            if got is None:
                break
            found.append(DeadMessage.from_delivery(len(found) + 1, got.properties, got.body))
    finally:
        yield channel.close()  # every message we got, unacked, goes back where it was
    return found


@defer.inlineCallbacks
def replay_dead(producer: Any, queue: str, count: int | None = None) -> Any:
    """Move up to ``count`` messages (default: all it holds now) from ``<queue>.dead`` back to
    ``queue``, each confirmed there before it is acked in the dead queue; fires with the
    number moved. A publish that fails (``queue`` deleted: unroutable) stops the replay with
    that error and the message stays dead."""
    yield producer.ready
    connection = producer.connection
    total = yield _dead_count(connection, queue)
    if count is not None:
        total = min(total, count)
    channel = yield connection.channel()
    moved = 0
    try:
        while moved < total:
            got = yield channel.twisted.basic_get(dead_queue(queue), auto_ack=False)
            if got is None:
                break
            properties = republish_properties(got.properties,
                                              replay_headers(got.properties.headers),
                                              producer.settings.user)
            properties.headers.pop(DEAD_AT_HEADER, None)
            try:
                yield publish_raw(producer, queue, got.body, properties)
            except UnroutableError as exc:
                raise UnroutableError(f"queue {queue!r} does not exist (the message was "
                                      f"returned): nothing more moved, it stays in "
                                      f"{dead_queue(queue)!r}") from exc
            channel.impl.basic_ack(got.method.delivery_tag)
            moved += 1
    finally:
        yield channel.close()
    return moved


@defer.inlineCallbacks
def purge_dead(connection: Any, queue: str) -> Any:
    """Delete every message of ``<queue>.dead``; fires with how many there were."""
    yield _dead_count(connection, queue)
    channel = yield connection.channel()
    try:
        frame = yield channel.twisted.queue_purge(dead_queue(queue))
    finally:
        yield channel.close()
    return frame.method.message_count


def _cell(text: Any, width: int) -> str:
    text = "-" if text in (None, "") else str(text).replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_table(queue: str, messages: list[DeadMessage]) -> str:
    """The readable form of ``postage dead list``."""
    if not messages:
        return f"{dead_queue(queue)}: no dead messages\n"
    lines = [f"{dead_queue(queue)}: {len(messages)} dead message"
             f"{'s' if len(messages) != 1 else ''} (nothing removed)"]
    columns = (("#", 3), ("type/name", 24), ("attempts", 8), ("dead since", 20),
               ("reason", 26), ("last error", 60))
    lines.append("  ".join(title.ljust(width) for title, width in columns).rstrip())
    for message in messages:
        what = f"{message.type}/{message.name}" if message.type is not None else "(malformed)"
        cells = (message.position, what, message.attempts, message.dead_at, message.reason,
                 message.error)
        lines.append("  ".join(_cell(cell, width).ljust(width)
                               for cell, (_, width) in zip(cells, columns)).rstrip())
    return "\n".join(lines) + "\n"


def format_json(messages: list[DeadMessage]) -> str:
    return json.dumps([message.as_dict() for message in messages], indent=2, default=str) + "\n"


def run_command(action: str, queue: str, count: int | None = None, as_json: bool = False,
                vhost: str | None = None) -> int:
    """``postage dead ACTION QUEUE``: run it on a reactor of its own; the exit status."""
    import sys  # noqa: PLC0415

    from twisted.internet import task  # noqa: PLC0415

    from postage.errors import BrokerConnectionError  # noqa: PLC0415
    from postage.twisted.commands import EXIT_BROKER, EXIT_RESULT_ERROR  # noqa: PLC0415
    from postage.twisted.producer import GenericProducer  # noqa: PLC0415

    status = [0]

    @defer.inlineCallbacks
    def main(reactor: Any) -> Any:
        producer = GenericProducer(vhost=vhost, reactor=reactor, connect_timeout=5)
        try:
            yield producer.ready
            if action == "list":
                found = yield list_dead(producer.connection, queue, count)
                sys.stdout.write(format_json(found) if as_json else format_table(queue, found))
            elif action == "replay":
                moved = yield replay_dead(producer, queue, count)
                sys.stdout.write(f"replayed {moved} message{'s' if moved != 1 else ''} from "
                                 f"{dead_queue(queue)} to {queue}\n")
            else:
                purged = yield purge_dead(producer.connection, queue)
                sys.stdout.write(f"purged {purged} message{'s' if purged != 1 else ''} from "
                                 f"{dead_queue(queue)}\n")
        finally:
            yield producer.close()

    def report(failure: Any) -> None:
        status[0] = EXIT_BROKER if failure.check(BrokerConnectionError) else EXIT_RESULT_ERROR
        if not failure.check(PostageError):
            failure.raiseException()
        sys.stderr.write(f"postage dead {action}: {failure.value}\n")

    try:
        task.react(lambda reactor: main(reactor).addErrback(report), [])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return status[0]
