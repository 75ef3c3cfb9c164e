"""Reading pika's connection's inbound bytes with a fast path for deliveries.

pika's reader turns every frame into an object, trims its buffer by copying what is left
after each one, runs its callback registry for each, and assembles a delivery's three frames
through its content assembler before calling the consumer. For the frames that make up a
``basic.deliver`` to a consumer pika knows (the per-message case), :func:`install` gives the
connection a reader that decodes the method, header and body in place, walking the buffer by
offset, and calls the consumer pika registered, as pika's own ``_on_deliver`` would, with
pika's own objects (``Basic.Deliver``, ``BasicProperties``). Every other frame — handshake,
heartbeats, replies to declarations, returns, deliveries to a consumer pika does not know —
is decoded and processed by pika, in order.
"""

from __future__ import annotations

import struct
from typing import Any

from pika import frame, spec

__all__ = ["install"]

_HEADER = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">HHQ")
_DELIVERY_TAG = struct.Struct(">QB")
_METHOD_ID = struct.Struct(">I")
_DELIVER = 0x003C003C  # Basic.Deliver
_METHOD, _CONTENT, _BODY = 1, 2, 3
_END = 0xCE


def _short_string(data: bytes, offset: int) -> tuple[Any, int]:
    length = data[offset]
    offset += 1
    value: Any = data[offset:offset + length]
    try:
        value = value.decode("utf-8")
    except UnicodeDecodeError:
        pass  # as pika: the bytes
    return value, offset + length


class _Reader:
    """The reader of one connection (``impl``: pika's connection object)."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        self.pika_reader = impl._on_data_available
        # channel number -> [Deliver, properties or None, body size, body parts, received]
        self.partial: dict[int, list[Any]] = {}

    def data_available(self, data: bytes) -> None:
        impl = self.impl
        buffer = impl._frame_buffer + data if impl._frame_buffer else data
        if buffer[:4] == b"AMQP":  # a protocol header (a version refusal): pika's business
            impl._frame_buffer = b""
            self.pika_reader(buffer)
            return
        size_of = len(buffer)
        position = 0
        unpack = _HEADER.unpack_from
        partial = self.partial
        while size_of - position >= 8:
            kind, number, size = unpack(buffer, position)
            end = position + 7 + size
            if end >= size_of:
                break
            if buffer[end] != _END:
                from pika.exceptions import InvalidFrameError  # noqa: PLC0415 - rare

                raise InvalidFrameError("Invalid FRAME_END marker")
            start = position + 7
            position = end + 1
            impl.bytes_received += size + 8
            if kind == _METHOD and _METHOD_ID.unpack_from(buffer, start)[0] == _DELIVER:
                if self._deliver(number, buffer, start + 4):
                    continue
            elif (kind == _CONTENT or kind == _BODY) and number in partial:
                self._content(kind, number, buffer, start, end)
                continue
            if kind == _METHOD:
                partial.pop(number, None)  # (a channel closed mid-delivery starts anew)
            impl._frame_buffer = b""
            _consumed, frame_value = frame.decode_frame(buffer[start - 7:end + 1])
            impl._process_frame(frame_value)
            if impl._frame_buffer:  # (pika read more meanwhile: keep its order)
                buffer = buffer[position:] + impl._frame_buffer
                size_of, position = len(buffer), 0
        impl._frame_buffer = buffer[position:] if position < size_of else b""

    def _deliver(self, number: int, data: bytes, offset: int) -> bool:
        """A Basic.Deliver: kept until its content is in, when its consumer is pika's."""
        channel = self.impl._channels.get(number)
        consumer_tag, offset = _short_string(data, offset)
        if channel is None or consumer_tag not in channel._consumers or (
                consumer_tag in channel._cancelled):
            return False  # pika rejects or logs it, as it always does
        delivery_tag, bits = _DELIVERY_TAG.unpack_from(data, offset)
        exchange, offset = _short_string(data, offset + 9)
        routing_key, _ = _short_string(data, offset)
        method = spec.Basic.Deliver(consumer_tag, delivery_tag, bool(bits & 1), exchange,
                                    routing_key)
        self.impl.frames_received += 1
        self.partial[number] = [method, None, 0, [], 0]
        return True

    def _content(self, kind: int, number: int, data: bytes, start: int, end: int) -> None:
        self.impl.frames_received += 1
        state = self.partial[number]
        if kind == _CONTENT:
            _class, _weight, body_size = _CONTENT_HEADER.unpack_from(data, start)
            properties = spec.BasicProperties()
            properties.decode(data[start + 12:end])
            state[1], state[2] = properties, body_size
        else:
            state[3].append(data[start:end])
            state[4] += end - start
        if state[1] is not None and state[4] >= state[2]:
            del self.partial[number]
            method, properties, _size, parts, _received = state
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            channel = self.impl._channels.get(number)
            consumer = None if channel is None else channel._consumers.get(method.consumer_tag)
            if consumer is not None:
                consumer(channel, method, properties, body)


def install(impl: Any) -> None:
    """Give pika's connection object ``impl`` the fast reader."""
    impl._on_data_available = _Reader(impl).data_available
