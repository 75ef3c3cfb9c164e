"""The RPC client of a producer: requests out, replies in, over direct reply-to, exclusive
per-call queues (for 3.0.3 servers), or a queue read later (``_queue_only``).

The bookkeeping of calls in flight is :class:`~postage.twisted.rpc.RpcCalls` (timers,
retries with one correlation id, every call ending as a result message). This module moves
the frames:

- **direct reply-to** (the default): requests go on a channel of their own, without
  confirms (a return still tells of a request nobody can receive, and the reply tells of the
  rest), and replies come back on it. At most ``max_in_flight`` requests are out at once and
  none goes out while the broker blocks publishers; the others wait, their timers running.
  When that channel or its connection is lost, the calls in flight are sent again as soon
  as a new one is there, since their replies would have been addressed to the old one;
  calls to an exchange the broker refused end with its reason.
- **exclusive**: one exclusive server-named queue per call, the request published with
  confirms through the producer's :class:`~postage.twisted.publisher.Publisher`.
- **_queue_only**: the request is published and the reply queue's name returned;
  :meth:`RpcClient.consume_rpc` reads it later on a channel of its own.

Every wait is bounded by the call's own time: a call made while the broker is away ends as
``BrokerConnectionError`` once its attempts are used up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pika.exceptions import AMQPConnectionError, ChannelClosed
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost

from postage.errors import BrokerConnectionError, PostageError
from postage.exchanges import Exchange, exchange_name
from postage.messages import Message, MessageResultException, decode_envelope, message_from_body
from postage.twisted.confirms import refused_exchange
from postage.twisted.connection import Channel, Connection
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneAtATime
from postage.twisted.publisher import Publisher, closed_by_broker
from postage.twisted.recovery import Recovery
from postage.twisted.rpc import RpcCalls

__all__ = ["DIRECT_REPLY_TO", "RpcClient"]

log = PostageLogger()

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def _result(body: bytes, encoder: Any) -> Message:
    try:
        return message_from_body(decode_envelope(body, encoder))
    except PostageError as exc:
        return MessageResultException("MessageFormatError", f"malformed reply: {exc}")


class RpcClient:
    """Makes RPC calls for a producer; see the module docstring.

    ``properties(**extra)`` builds the AMQP properties of a request; ``down()`` returns the
    connection error while the broker is unreachable.
    """

    def __init__(self, clock: Any, publisher: Publisher, encoder: Any,
                 properties: Callable[..., Any], *, reply_to: str = "direct",
                 max_in_flight: int = 1000,
                 down: Callable[[], BaseException | None] | None = None) -> None:
        self.clock = clock
        self.publisher = publisher
        self.encoder = encoder
        self.properties = properties
        self.reply_to = reply_to
        self.max_in_flight = max_in_flight
        self.calls = RpcCalls(clock, down)
        self.connection: Connection | None = None
        self.channel: Channel | None = None  # direct reply-to: requests and replies
        self._open = OneAtATime(self._open_channel)  # one channel opening at a time
        self._closed = False
        self._error: BaseException | None = None  # once no call can be made
        self._recovery = Recovery(clock, "the RPC channel", lambda: (
            not self._closed and self.connection is not None and self.connection.is_open))
        self._out: dict[str, str] = {}  # correlation id -> exchange, of requests sent
        self._waiting: dict[str, Callable[[], None]] = {}  # requests not sent yet, in order
        self._exclusive_replies: dict[str, str] = {}  # consumer tag -> correlation id
        self._queue_only_failures: dict[str, Message] = {}  # reply queue -> why no reply

    # ---- the direct reply-to channel ----------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.reply_to != "direct" or self.channel is not None

    def open(self, connection: Connection) -> defer.Deferred[Any]:
        """Set up on a new connection: the reply channel (direct mode)."""
        self.connection = connection
        if self.reply_to != "direct":
            return defer.succeed(None)
        return self._open()

    @defer.inlineCallbacks
    def _open_channel(self) -> Any:
        connection = self.connection
        # open() sets it just before, and Recovery calls _open only while its alive() sees
        # it; both synchronously, before this first line of the generator
        assert connection is not None
        channel = yield connection.channel()
        channel.twisted.on_closed.addCallback(self._on_channel_closed, channel)
        channel.impl.add_on_return_callback(self._on_return)
        yield channel.consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
        if self._closed or connection is not self.connection or not channel.is_open:
            yield channel.close()
            return
        self.channel = channel
        # replies to what was sent on the old channel were addressed to it: send again
        sent_before = list(self._out)
        self._out.clear()
        self.calls.resend(sent_before)
        self.flush()

    def _on_channel_closed(self, reason: Any, channel: Channel) -> None:
        if channel is not self.channel:
            return
        self.channel = None
        reason = getattr(reason, "value", reason)
        refused = refused_exchange(reason) if closed_by_broker(reason) else None
        if refused is not None:
            for correlation_id, exchange in list(self._out.items()):
                if exchange == refused:
                    self.calls.fail(correlation_id, "BrokerConnectionError",
                                    f"the broker refused the request: {reason}")
        if self._closed or self.connection is None or not self.connection.is_open:
            return
        log.warn("the broker closed the RPC channel ({reason}): opening a new one",
                 reason=reason)
        self._recovery.start(self._open)

    def lost(self, error: BaseException) -> None:
        """The connection is gone: direct calls wait for the next one; exclusive reply
        queues died with it, so their calls end now."""
        self.channel = None
        self.connection = None
        self._recovery.cancel()
        for correlation_id in list(self._exclusive_replies.values()):
            self.calls.fail(correlation_id, type(error).__name__, str(error))
        self._exclusive_replies.clear()

    def fail_all(self, error: BaseException) -> None:
        """No call can be made any more: every call in flight ends with ``error``."""
        self._closed = True
        self._error = error
        self._recovery.cancel()
        self.calls.fail_all(type(error).__name__, str(error))
        self._exclusive_replies.clear()

    # ---- direct reply-to calls --------------------------------------------------------

    def call(self, exchange: Any, key: str, payload: str | bytes, timeout: float,
             max_retry: int, description: str, correlation_id: str) -> defer.Deferred[Any]:
        """One call; fires with its result message."""
        if self._error is not None:
            return defer.succeed(MessageResultException(type(self._error).__name__,
                                                        str(self._error)))
        if self.reply_to == "exclusive":
            return self._call_exclusive(exchange, key, payload, timeout, max_retry,
                                        description, correlation_id)
        properties = self.properties(correlation_id=correlation_id, reply_to=DIRECT_REPLY_TO,
                                     expiration=str(int(timeout * 1000)))

        def send() -> None:
            self._send_direct(exchange, key, payload, properties, correlation_id)

        d = self.calls.call(correlation_id, send, timeout, max_retry, description)
        return d.addBoth(self._ended, correlation_id)

    def _ended(self, result: Any, correlation_id: str) -> Any:
        self._out.pop(correlation_id, None)
        self._waiting.pop(correlation_id, None)
        if self._waiting:
            self.flush()
        return result

    def _may_send(self, exchange: type[Exchange] | str, correlation_id: str) -> bool:
        return (self.channel is not None and not self.publisher.window.blocked
                and (correlation_id in self._out or len(self._out) < self.max_in_flight)
                and (not isinstance(exchange, type)
                     or exchange_name(exchange) in self.publisher.declared))

    def _send_direct(self, exchange: type[Exchange] | str, key: str, payload: str | bytes,
                     properties: Any, correlation_id: str) -> None:
        """Send one attempt now, or once it may go (one waiting copy is enough)."""
        channel = self.channel
        if channel is None or not self._may_send(exchange, correlation_id):
            if correlation_id not in self._waiting:
                self._waiting[correlation_id] = lambda: self._send_direct(
                    exchange, key, payload, properties, correlation_id)
                if (channel is not None and isinstance(exchange, type)
                        and exchange_name(exchange) not in self.publisher.declared):
                    self.publisher.declare(exchange).addCallbacks(
                        lambda _: self.flush(), self._request_failed,
                        errbackArgs=(correlation_id,))
            return
        name = exchange_name(exchange)
        try:
            channel.frames.publish(name, key, payload, properties, True)
        except Exception as exc:  # noqa: BLE001 - ends this call only, as a result
            self.calls.fail(correlation_id, type(exc).__name__, f"cannot publish: {exc}")
            return
        self._out[correlation_id] = name

    def flush(self) -> None:
        """Send the requests that waited, in order, as far as they may go."""
        while self._waiting:
            correlation_id = next(iter(self._waiting))
            send = self._waiting[correlation_id]
            before = len(self._waiting)
            del self._waiting[correlation_id]
            send()
            if len(self._waiting) >= before:
                return  # it had to wait again: so do the ones after it

    def _request_failed(self, failure: Any, correlation_id: str) -> None:
        self._waiting.pop(correlation_id, None)
        self.calls.fail(correlation_id, type(failure.value).__name__, str(failure.value))

    def _on_reply(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        correlation_id = properties.correlation_id
        if correlation_id is None:  # a 3.0.3 server, replying on a per-call queue
            correlation_id = self._exclusive_replies.get(method.consumer_tag)
        if not self.calls.reply(correlation_id, _result(body, self.encoder)):
            log.debug("dropped a late or stray RPC reply ({id})", id=correlation_id)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        correlation_id = properties.correlation_id
        if correlation_id is not None and correlation_id in self.calls:
            self.calls.fail(
                correlation_id, "UnroutableError",
                f"no queue is bound to exchange {method.exchange!r} with key "
                f"{method.routing_key!r}: is the component running?")

    # ---- exclusive per-call queues, and _queue_only ----------------------------------------

    @defer.inlineCallbacks
    def _reply_queue(self, within: float) -> Any:
        """Declare an exclusive, server-named reply queue (3.0.3's way), waiting at most
        ``within`` seconds for the producer's channel."""
        publisher = self.publisher
        yield publisher.when_open().addTimeout(within, self.clock)
        channel = publisher.channel
        if channel is None:  # when_open fires on the opening; lost since then
            raise BrokerConnectionError("the producer's channel closed")
        frame = yield channel.queue_declare("", exclusive=True, auto_delete=True)
        return frame.method.queue

    def _call_exclusive(self, exchange: Any, key: str, payload: str | bytes, timeout: float,
                        max_retry: int, description: str, correlation_id: str
                        ) -> defer.Deferred[Any]:
        @defer.inlineCallbacks
        def run() -> Any:
            try:
                queue = yield self._reply_queue(timeout * (max_retry + 1))
                channel = self.publisher.channel
                if channel is None:  # lost while the reply queue was declared
                    raise BrokerConnectionError("the producer's channel closed")
                tag = yield channel.consume(queue, self._on_reply, auto_ack=True, exclusive=True)
            except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
                return MessageResultException(*_why(exc, self.calls))
            self._exclusive_replies[tag] = correlation_id
            properties = self.properties(correlation_id=correlation_id, reply_to=queue,
                                         expiration=str(int(timeout * 1000)))

            def send() -> None:
                self.publisher.publish(exchange, key, payload, properties, True).addErrback(
                    self._request_failed, correlation_id)

            try:
                result = yield self.calls.call(correlation_id, send, timeout, max_retry,
                                               description)
            finally:
                self._exclusive_replies.pop(tag, None)
                if channel.is_open:
                    channel.queue_delete(queue).addErrback(lambda _: None)
            return result

        return run()

    def call_queue_only(self, exchange: Any, key: str, payload: str | bytes, timeout: float
                        ) -> defer.Deferred[str]:
        """Publish a request whose reply waits in a queue; fires with the queue's name."""
        @defer.inlineCallbacks
        def run() -> Any:
            queue = yield self._reply_queue(timeout)
            properties = self.properties(correlation_id=uuid.uuid4().hex, reply_to=queue)
            try:
                yield self.publisher.publish(exchange, key, payload, properties, True)
            except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
                # the caller still gets its queue; consume_rpc() then says what happened
                self._queue_only_failures[queue] = MessageResultException(
                    type(exc).__name__, str(exc))
            return queue

        return run()

    @defer.inlineCallbacks
    def consume_rpc(self, queue: str, result_len: int, callback: Any, timeout: float) -> Any:
        """Read ``result_len`` replies from a ``_queue_only`` queue within ``timeout``, on a
        channel of its own (a vanished queue closes that one only); see the producer."""
        failure = self._queue_only_failures.pop(queue, None)
        if failure is not None:
            return [failure]
        results: list[Any] = []
        done: defer.Deferred[None] = defer.Deferred()
        done.addTimeout(timeout, self.clock, onTimeoutCancel=lambda *_: None)
        try:
            yield self.publisher.when_open().addTimeout(timeout, self.clock)
            connection = self.connection
            if connection is None:  # lost since when_open fired
                raise BrokerConnectionError("the connection to the broker was lost")
            channel = yield connection.channel()
        except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
            return [MessageResultException(*_why(exc, self.calls))]

        def on_message(_ch: Any, _method: Any, _properties: Any, body: bytes) -> None:
            if done.called:
                return
            result = _result(body, self.encoder)
            results.append(result)
            if callback is not None:
                callback(result)
            if len(results) >= result_len:
                done.callback(None)

        try:
            tag = yield channel.consume(queue, on_message, auto_ack=True)
            yield done
            yield channel.cancel(tag)
            yield channel.queue_delete(queue)
        except Exception as exc:  # noqa: BLE001 - RPC ends as a result, never an errback
            results.append(MessageResultException(type(exc).__name__, str(exc)))
        finally:
            channel.close()
        if len(results) < result_len:  # what came, then why the rest did not
            results.append(MessageResultException(
                "TimeoutError", f"{len(results)} of {result_len} replies on {queue!r} after "
                f"{timeout}s"))
        return results


def _why(error: BaseException, calls: RpcCalls) -> tuple[str, str]:
    """A failed wait or declaration as a result's (name, text): while the broker is away,
    or when the failure is the link's, it is a ``BrokerConnectionError``."""
    down = calls.down()
    if down is not None:
        return type(down).__name__, f"the broker is unreachable: {down}"
    if isinstance(error, (ConnectionLost, ConnectionDone, AMQPConnectionError, ChannelClosed)):
        return "BrokerConnectionError", f"the connection to the broker was lost: {error!r}"
    return type(error).__name__, str(error)
