"""The raw side: hand-written pika on ``TwistedProtocolConnection``, the bar Postage is held to.

This is the best straightforward raw-pika code for each workload, doing the same work as
Postage (encode or decode the same JSON envelope per message):

- publishing: pika's plain channel in confirm mode, with our own confirm tracker keyed by
  delivery tag (pika's ``TwistedChannel`` bookkeeping scans every outstanding delivery on
  each ack), at most ``window`` publishes unconfirmed;
- consuming: callback style (``basic_consume(queue, on_message)``), ack each delivery;
- RPC: a client on direct reply-to (``amq.rabbitmq.reply-to``), calls in a dict keyed by
  correlation id; an echo server that decodes the request, encodes a ``MessageResult``
  envelope and publishes it to ``reply_to``.

The plain channel is ``TwistedChannel._channel``: the adapter has no public way to get a
callback-style channel.
"""

from __future__ import annotations

import uuid
from random import getrandbits
from typing import Any

from common import (
    CONTENT_TYPE,
    DECODE,
    QUEUE_FLAGS,
    Countdown,
    Stopwatch,
    command_body,
    raw_close,
    raw_connect,
    rpc_reply_body,
    rpc_request_body,
)
from twisted.internet import defer

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
USER = "guest"  # the user_id property Postage sets on everything it publishes


def traceparent() -> str:
    """A W3C trace context for a message that starts a trace, as Postage puts on every
    publish (a raw client carrying trace context makes one per message too)."""
    return "00-%032x-%016x-01" % (getrandbits(128) or 1, getrandbits(64) or 1)  # noqa: UP031


def _properties(**values: Any) -> Any:
    from pika import BasicProperties  # noqa: PLC0415

    return BasicProperties(**values)


async def _open(protocol: Any) -> tuple[Any, Any]:
    """A channel: pika's ``TwistedChannel`` (for declarations) and its plain channel."""
    twisted_channel = await protocol.channel()
    return twisted_channel, twisted_channel._channel


# ---- publish with confirms --------------------------------------------------------------


class ConfirmPublisher:
    """Publishes ``n`` envelopes, at most ``window`` unconfirmed; ``done`` fires with the
    number of nacked messages once every publish is confirmed."""

    def __init__(self, channel: Any, exchange: str, key: str, n: int, window: int,
                 body: Any = command_body) -> None:
        self.channel = channel
        self.exchange = exchange
        self.key = key
        self.n = n
        self.window = window
        self.body = body
        # what a Postage producer sets on a message_* publish (persistent, its user, a
        # traceparent header of the message's own)
        self.properties = lambda: _properties(content_type=CONTENT_TYPE, delivery_mode=2,
                                              user_id=USER,
                                              headers={"traceparent": traceparent()})
        self.pending: dict[int, int] = {}  # delivery tag -> message number
        self.next_tag = 1
        self.low = 1  # no tag below this one is pending
        self.sent = 0
        self.nacked = 0
        self.done: defer.Deferred[int] = defer.Deferred()

    def start(self) -> defer.Deferred[int]:
        self.channel.confirm_delivery(self.on_confirm, callback=lambda _frame: self.pump())
        return self.done

    def pump(self) -> None:
        pending = self.pending
        publish = self.channel.basic_publish
        exchange, key, properties, body = self.exchange, self.key, self.properties, self.body
        sent, tag, n, window = self.sent, self.next_tag, self.n, self.window
        while sent < n and len(pending) < window:
            publish(exchange, key, body(sent), properties())
            pending[tag] = sent
            tag += 1
            sent += 1
        self.sent, self.next_tag = sent, tag

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        pending = self.pending
        if method.multiple:
            for each in range(self.low, tag + 1):
                pending.pop(each, None)
        else:
            pending.pop(tag, None)
        if method.NAME == "Basic.Nack":
            self.nacked += 1
        low = self.low
        while low < self.next_tag and low not in pending:
            low += 1
        self.low = low
        if self.sent < self.n:
            self.pump()
        elif not pending:
            self.done.callback(self.nacked)


async def publish(n: int, exchange: str, key: str, window: int) -> tuple[float, float]:
    """Publish ``n`` envelopes with confirms; messages per second and CPU microseconds per
    message, first publish to last confirm."""
    protocol = await raw_connect()
    try:
        _tw, channel = await _open(protocol)
        publisher = ConfirmPublisher(channel, exchange, key, n, window)
        watch = Stopwatch()
        watch.start()
        nacked = await publisher.start()
        watch.stop()
        if nacked:
            raise RuntimeError(f"the broker nacked {nacked} publishes")
        return watch.figures(n)
    finally:
        await raw_close(protocol)


async def preload(queue: str, n: int) -> None:
    """Fill ``queue`` (already declared) with ``n`` envelopes, all confirmed."""
    protocol = await raw_connect()
    try:
        _tw, channel = await _open(protocol)
        nacked = await ConfirmPublisher(channel, "", queue, n, 1000).start()
        if nacked:
            raise RuntimeError(f"the broker nacked {nacked} publishes")
    finally:
        await raw_close(protocol)


# ---- consume ----------------------------------------------------------------------------


async def consume(n: int, queue: str, prefetch: int) -> tuple[float, float]:
    """Consume ``n`` preloaded envelopes (decode, ack each); messages per second and CPU
    microseconds per message, first delivery to last."""
    protocol = await raw_connect()
    try:
        tw, channel = await _open(protocol)
        await tw.basic_qos(prefetch_count=prefetch)
        count = Countdown(n)
        tick = count.tick

        def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
            DECODE(body)
            ch.basic_ack(method.delivery_tag)
            tick()

        channel.basic_consume(queue, on_message)
        await count.done
        return count.figures()
    finally:
        await raw_close(protocol)  # the consumer goes, and the auto-delete queue with it


# ---- RPC --------------------------------------------------------------------------------


class EchoServer:
    """Answers every request on ``queue`` (bound to ``exchange`` with key ``echo``) with a
    ``MessageResult`` envelope holding the request's parameters."""

    def __init__(self, exchange: str, queue: str, prefetch: int) -> None:
        self.exchange = exchange
        self.queue = queue
        self.prefetch = prefetch
        self.protocol: Any = None

    async def start(self) -> None:
        self.protocol = await raw_connect()
        tw, channel = await _open(self.protocol)
        await tw.exchange_declare(self.exchange, "direct", durable=False, auto_delete=True)
        await tw.queue_declare(self.queue, **QUEUE_FLAGS)
        await tw.queue_bind(self.queue, self.exchange, routing_key="echo")
        await tw.basic_qos(prefetch_count=self.prefetch)
        consuming: defer.Deferred[Any] = defer.Deferred()
        channel.basic_consume(self.queue, self.on_request, callback=consuming.callback)
        await consuming

    def on_request(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        request = DECODE(body)
        reply = rpc_reply_body(request["content"]["parameters"])
        channel.basic_ack(method.delivery_tag)  # before the reply, as Postage does
        channel.basic_publish("", properties.reply_to, reply, _properties(
            content_type=CONTENT_TYPE, correlation_id=properties.correlation_id,
            user_id=USER, headers={"traceparent": traceparent()}))

    async def stop(self) -> None:
        await raw_close(self.protocol)


class RpcClient:
    """Calls ``echo`` over direct reply-to; ``call()`` returns a Deferred that fires with the
    decoded reply envelope."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.protocol: Any = None
        self.channel: Any = None
        self.pending: dict[str, defer.Deferred[Any]] = {}
        self.expiration = "30000"  # as Postage: each request expires with its attempt

    async def start(self) -> None:
        self.protocol = await raw_connect()
        _tw, self.channel = await _open(self.protocol)
        consuming: defer.Deferred[Any] = defer.Deferred()
        self.channel.basic_consume(DIRECT_REPLY_TO, self.on_reply, auto_ack=True,
                                   callback=consuming.callback)
        await consuming

    def call(self, seq: int) -> defer.Deferred[Any]:
        correlation_id = uuid.uuid4().hex
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending[correlation_id] = d
        self.channel.basic_publish(self.exchange, "echo", rpc_request_body(seq), _properties(
            content_type=CONTENT_TYPE, correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO, expiration=self.expiration, user_id=USER,
            headers={"traceparent": traceparent()}), True)
        return d

    def on_reply(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        d = self.pending.pop(properties.correlation_id, None)
        if d is not None:
            d.callback(DECODE(body))

    async def stop(self) -> None:
        await raw_close(self.protocol)


def echoed(reply: Any, seq: int) -> bool:
    """Whether a reply is the successful echo of call number ``seq``."""
    content = reply["content"]
    return content["type"] == "success" and content["value"]["seq"] == seq


async def rpc(exchange: str, queue: str, prefetch: int, driver: Any) -> Any:
    """Start an echo server and a client, run ``driver(call, check)``, stop both."""
    server = EchoServer(exchange, queue, prefetch)
    await server.start()
    client = RpcClient(exchange)
    try:
        await client.start()
        return await driver(client.call, echoed)
    finally:
        await client.stop()
        await server.stop()
