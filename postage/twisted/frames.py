"""The frames of the per-message calls — ``basic.publish`` with its content, and
``basic.ack`` — written for one channel of pika's connection, in pika's own encoding.

pika builds a ``Basic.Publish`` object, a ``Header`` frame object and a ``Body`` frame object
per message, encodes each, and hands the transport three writes. Most of that repeats from
one message to the next: a producer publishes to a few (exchange, key) pairs with one
properties object. :class:`ChannelFrames` keeps the encoded method frame of each pair and
the encoded properties of the object last used, and hands the transport one write. The
channel's and connection's own state stays pika's: it refuses a closed channel as pika would,
and counts the bytes and frames it sends (the heartbeat checker reads them). Acks of
deliveries settled in order go out as one ``multiple`` ack per turn of the reactor.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["TRACEPARENT_PLACEHOLDER", "ChannelFrames"]

#: The ``traceparent`` header value of properties shared by many publishes: each publish
#: writes its own value (same length) in its place, in the encoded properties.
TRACEPARENT_PLACEHOLDER = "00-" + "0" * 32 + "-" + "0" * 16 + "-00"
_PLACEHOLDER = TRACEPARENT_PLACEHOLDER.encode()

_FRAME_END = b"\xce"
_FRAME_HEADER = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
_PUBLISH = struct.pack(">IH", 0x003C0028, 0)  # Basic.Publish, ticket 0
_CONTENT_HEADER = struct.Struct(">HxxQ")  # class Basic, weight 0, body size
_BASIC_CLASS = 60
_ACK = struct.Struct(">BHIIQB")  # a whole Basic.Ack method frame but its end
_ACK_METHOD = 0x003C0050
_ACK_PAYLOAD_SIZE = 4 + 8 + 1
_KEPT_ROUTES = 1024  # encoded method frames kept per channel (reply queues are many)


def _short_string(value: str) -> bytes:
    encoded = value.encode("utf-8")
    if len(encoded) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than 255 bytes")
    return bytes((len(encoded),)) + encoded


class ChannelFrames:
    """Publishes and acks on pika's plain channel ``impl``, with fewer allocations and one
    transport write per message."""

    __slots__ = ("_ack_to", "_acked", "_body_max", "_channel", "_connection", "_flush_call",
                 "_number", "_properties", "_routes", "_settled", "_singly")

    def __init__(self, impl: Any) -> None:
        self._channel = impl
        self._connection = impl.connection
        self._number: int = impl.channel_number
        self._body_max: int = self._connection._body_max_length
        self._routes: dict[tuple[str, str, bool], bytes] = {}
        # (the object, its encoding, where the traceparent placeholder is in it or -1)
        self._properties: tuple[Any, bytes, int] | None = None
        self._settled = 0  # every delivery up to this tag is settled (acked or rejected)
        self._acked = 0  # ... and up to this one the broker was told so
        # the newest tag of the run settled in order: what a multiple ack names (a tag the
        # broker was already told of singly would close the channel, "unknown delivery tag")
        self._ack_to = 0
        self._singly: set[int] = set()  # tags above _settled already settled one by one
        self._flush_call: Any = None

    def _route(self, exchange: str, key: str, mandatory: bool) -> bytes:
        payload = b"".join((_PUBLISH, _short_string(exchange), _short_string(key),
                            b"\x01" if mandatory else b"\x00"))
        frame = _FRAME_HEADER.pack(_METHOD_FRAME, self._number, len(payload)) + payload + \
            _FRAME_END
        routes = self._routes
        if len(routes) >= _KEPT_ROUTES:
            routes.clear()
        routes[(exchange, key, mandatory)] = frame
        return frame

    def publish(self, exchange: str, key: str, body: str | bytes, properties: Any,
                mandatory: bool = False, traceparent: bytes | None = None) -> None:
        """``basic.publish`` with its content; raises as pika's ``basic_publish`` does for
        a closed channel, and ``ValueError`` for a name over 255 bytes (nothing is sent).
        Acks noted before it go out first: an RPC server's ack must reach the broker before
        its reply (a reply can break the connection). ``traceparent`` (55 bytes) replaces
        :data:`TRACEPARENT_PLACEHOLDER` in the encoded properties: shared properties stay
        encoded once, each message has its own trace."""
        channel = self._channel
        if not channel.is_open:
            channel._raise_if_not_open()
        if self._settled > self._acked:
            self.flush()
        if isinstance(body, str):
            body = body.encode("utf-8")
        method = self._routes.get((exchange, key, mandatory))
        if method is None:
            method = self._route(exchange, key, mandatory)
        cached = self._properties
        if cached is not None and cached[0] is properties:
            encoded, at = cached[1], cached[2]
        else:
            encoded = b"".join(properties.encode())
            at = encoded.find(_PLACEHOLDER)
            self._properties = (properties, encoded, at)
        if traceparent is not None and at >= 0 and len(traceparent) == 55:
            encoded = encoded[:at] + traceparent + encoded[at + 55:]
        size = len(body)
        number = self._number
        header = _CONTENT_HEADER.pack(_BASIC_CLASS, size) + encoded
        parts = [method, _FRAME_HEADER.pack(_HEADER_FRAME, number, len(header)), header,
                 _FRAME_END]
        if not size:  # no body frame at all, as pika
            frames = 2
        elif size <= self._body_max:
            frames = 3
            parts += (_FRAME_HEADER.pack(_BODY_FRAME, number, size), body, _FRAME_END)
        else:
            frames = 2
            step = self._body_max
            for start in range(0, size, step):
                chunk = body[start:start + step]
                parts += (_FRAME_HEADER.pack(_BODY_FRAME, number, len(chunk)), chunk,
                          _FRAME_END)
                frames += 1
        data = b"".join(parts)
        connection = self._connection
        connection.bytes_sent += len(data)
        connection.frames_sent += frames
        connection._adapter_emit_data(data)

    # ---- acks: many at once where the protocol allows ---------------------------------

    def ack(self, delivery_tag: int, now: bool = False) -> None:
        """Settle one delivery with ``basic.ack``.

        Deliveries on a channel are tagged 1, 2, 3...; once every delivery up to tag N is
        settled, one ``basic.ack`` with ``multiple`` acks them all. So a tag that extends
        the settled run is only noted, and the run is acked once, right after the reactor
        is done with what it is handling now (``now``: at once); a tag settled out of order
        (a slower handler before it) is acked at once on its own, so that a delivery that
        is never settled holds one prefetch slot, not every one after it."""
        if delivery_tag == self._settled + 1:
            self._extend(delivery_tag)
            if now:
                self.flush()
            elif self._flush_call is None:
                self._flush_call = self._connection._reactor.callLater(0, self._flush)
        else:
            self._write_ack(delivery_tag, multiple=False)
            self._singly.add(delivery_tag)

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        """``basic.reject``, at once; the tag then counts as settled."""
        self._check_open()
        self._channel.basic_reject(delivery_tag, requeue=requeue)
        if delivery_tag == self._settled + 1:
            self._flush()  # acks noted before it go out first, then it joins the run
            self._extend(delivery_tag)
            self._acked = self._settled
        else:
            self._singly.add(delivery_tag)

    def flush(self) -> None:
        """Send the ack of the settled run now (before the channel closes)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush()

    def _extend(self, delivery_tag: int) -> None:
        self._ack_to = delivery_tag
        settled = delivery_tag
        singly = self._singly
        while singly and settled + 1 in singly:
            settled += 1
            singly.discard(settled)
        self._settled = settled

    def _flush(self) -> None:
        self._flush_call = None
        if self._ack_to > self._acked and self._channel.is_open:
            self._write_ack(self._ack_to, multiple=True)
        self._acked = self._settled

    def _check_open(self) -> None:
        channel = self._channel
        if not channel.is_open:
            channel._raise_if_not_open()

    def _write_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._check_open()
        data = _ACK.pack(_METHOD_FRAME, self._number, _ACK_PAYLOAD_SIZE, _ACK_METHOD,
                         delivery_tag, 1 if multiple else 0) + _FRAME_END
        connection = self._connection
        connection.bytes_sent += len(data)
        connection.frames_sent += 1
        connection._adapter_emit_data(data)
