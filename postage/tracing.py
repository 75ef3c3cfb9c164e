"""W3C Trace Context for messages: the ``traceparent`` header, parsed, made and continued.

Every publish carries a ``traceparent`` header (``00-<trace id>-<span id>-<flags>``). A message
published while a handler runs continues the trace of the delivery that handler is serving: the
processor sets :data:`current` around each handler call, and the producer asks
:func:`outgoing` for the header. Outside a handler each publish starts a new trace. The work per
message is two random numbers and one string format (about a microsecond), so it is always on;
OpenTelemetry spans, when wanted, are built on top of this by ``postage.twisted.otel``.

A :class:`~contextvars.ContextVar` (not a global) holds the current context, so that handlers
running at the same time on the reactor (each ``async def`` handler is a task with a context
of its own) and in worker threads (which run under a copy of the caller's context) never see
each other's trace.
"""

from __future__ import annotations

import contextvars
import random
import re
from typing import NamedTuple

__all__ = ["TraceContext", "child_header", "current", "current_trace_id", "new_context", "outgoing",
           "outgoing_header", "parse"]

_VERSION = "00"
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16
_HEX = frozenset("0123456789abcdef")
_random = random.Random()  # its own generator: seeding the global one must not repeat ids
_bits = _random.getrandbits
_V00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")  # the common case, fast


class TraceContext(NamedTuple):
    """One position in a trace: the trace, the span (the message or handler run) and the
    sampled flag. Immutable: :meth:`child` makes the next hop."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    flags: str = "01"  # sampled

    @property
    def traceparent(self) -> str:
        """The header's value."""
        return f"{_VERSION}-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span in the same trace (the parent's span id is this one's)."""
        return _make((self.trace_id, "%016x" % (_bits(64) or 1), self.flags))


_make = TraceContext._make  # (a tuple's constructor without the keyword handling)


def new_context() -> TraceContext:
    """The first span of a new trace (an all-zero id is invalid, hence ``or 1``)."""
    return _make(("%032x" % (_bits(128) or 1), "%016x" % (_bits(64) or 1), "01"))


def parse(header: object) -> TraceContext | None:
    """A ``traceparent`` header's context, or None when it is missing or malformed (a
    malformed header starts a new trace: it never fails a delivery). Versions above 00 are
    read by their first four fields, as the W3C recommendation asks."""
    if type(header) is str:
        match = _V00.fullmatch(header)
        if match is not None:
            trace_id, span_id, _flags = groups = match.groups()
            if trace_id != _INVALID_TRACE and span_id != _INVALID_SPAN:
                return _make(groups)
            return None
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(header, str) or len(header) < 55:
        return None
    parts = header.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[0], parts[1], parts[2], parts[3]
    if (len(version) != 2 or version == "ff" or len(trace_id) != 32 or len(span_id) != 16
            or len(flags) != 2 or (version == _VERSION and len(parts) != 4)):
        return None
    if not _HEX.issuperset(version + trace_id + span_id + flags):
        return None
    if trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    return TraceContext(trace_id, span_id, flags)


#: The context of the delivery whose handler is running (None outside handlers).
current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "postage_trace", default=None)


def current_trace_id() -> str | None:
    """The trace id of the running handler's delivery, for log events."""
    context = current.get()
    return None if context is None else context.trace_id


def outgoing() -> TraceContext:
    """The context an outgoing message carries: a child of the running handler's delivery,
    else the start of a new trace."""
    context = current.get()
    return new_context() if context is None else context.child()


def child_header(context: TraceContext) -> str:
    """``context.child().traceparent``, made in one step."""
    return "00-%s-%016x-%s" % (context[0], _bits(64) or 1, context[2])  # noqa: UP031 - fastest


def outgoing_header() -> str:
    """``outgoing().traceparent``, made in one step (this runs for every publish)."""
    context = current.get()
    if context is None:
        return "00-%032x-%016x-01" % (_bits(128) or 1, _bits(64) or 1)  # noqa: UP031
    return child_header(context)
