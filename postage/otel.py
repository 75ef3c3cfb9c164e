"""OpenTelemetry spans for publishes, handlers and RPC calls, when the application wants them.

With ``opentelemetry-api`` installed (``pip install postage[otel]``) *and* a tracer provider
set by the application (``trace.set_tracer_provider(...)``, as the SDK or
``opentelemetry-instrument`` do), every publish is a ``PRODUCER`` span, every delivery's
handlers a ``CONSUMER`` span and every RPC call a ``CLIENT`` span, with the attributes of
OpenTelemetry's messaging conventions (``messaging.system = rabbitmq``, the operation, the
exchange, the routing key, the correlation id). The ``traceparent`` header then carries the
span's ids, so traces cross components whatever their language; a handler's span is the
current OpenTelemetry span while the handler runs, so the application's own spans nest in it.

Without the package, or without a provider, :func:`tracer` returns None after one attribute
read and nothing else is done: the cost is the ``traceparent`` header alone.
"""

from __future__ import annotations

from typing import Any

from postage import __version__
from postage.tracing import TraceContext

_trace: Any = None  # opentelemetry.trace, once imported
_context: Any = None
_loaded = False  # imported on first use: importing Postage does not import OpenTelemetry

__all__ = ["attach", "detach", "end", "header", "start_call", "start_process", "start_send",
           "trace_context", "tracer"]

_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)


def tracer() -> Any:
    """The tracer to make spans with, or None when nobody set up OpenTelemetry."""
    if not _loaded:
        _load()
    if _trace is None:
        return None
    # The provider the application set; None until it sets one (reading the global, not
    # calling get_tracer_provider(), which looks at the environment on every call).
    provider = getattr(_trace, "_TRACER_PROVIDER", None)
    if provider is None:
        return None
    global _cached
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("postage", __version__))
    return _cached[1]


def _load() -> None:
    global _trace, _context, _loaded
    _loaded = True
    try:
        from opentelemetry import context, trace  # noqa: PLC0415
    except ImportError:  # the extra is not installed
        return
    _trace, _context = trace, context


def _attributes(operation: str, exchange: str, key: str, correlation_id: str | None
                ) -> dict[str, Any]:
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": key,
    }
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    return attributes


def start_send(tracer: Any, exchange: str, key: str) -> Any:
    """A publish: ``PRODUCER``, a child of the current span (the running handler's)."""
    return tracer.start_span(f"publish {exchange or '(default)'}",
                             kind=_trace.SpanKind.PRODUCER,
                             attributes=_attributes("publish", exchange, key, None))


def start_call(tracer: Any, name: str, exchange: str, key: str, correlation_id: str) -> Any:
    """An RPC call, from the request to its result: ``CLIENT``."""
    attributes = _attributes("publish", exchange, key, correlation_id)
    attributes["rpc.system"] = "postage"
    attributes["rpc.method"] = name
    return tracer.start_span(f"call {name}", kind=_trace.SpanKind.CLIENT,
                             attributes=attributes)


def start_process(tracer: Any, parent: TraceContext | None, delivery: Any) -> Any:
    """A delivery's handlers (a ``Delivery``: its queue, exchange, routing key and
    properties): ``CONSUMER``, a child of the span the ``traceparent`` header names (a new
    trace without one)."""
    if parent is None:
        context = _context.Context()  # a root: not a child of whatever the reactor ran last
    else:
        remote = _trace.SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16),
                                    is_remote=True,
                                    trace_flags=_trace.TraceFlags(int(parent.flags, 16)))
        context = _trace.set_span_in_context(_trace.NonRecordingSpan(remote))
    attributes = _attributes("process", delivery.exchange, delivery.routing_key,
                             delivery.properties.correlation_id)
    attributes["messaging.destination.subscription.name"] = delivery.queue
    return tracer.start_span(f"process {delivery.queue}", context=context,
                             kind=_trace.SpanKind.CONSUMER, attributes=attributes)


def header(span: Any) -> str:
    """The ``traceparent`` of a span."""
    ids = span.get_span_context()
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"


def trace_context(span: Any) -> TraceContext:
    ids = span.get_span_context()
    return TraceContext(f"{ids.trace_id:032x}", f"{ids.span_id:016x}",
                        f"{int(ids.trace_flags):02x}")


def attach(span: Any) -> Any:
    """Make ``span`` the current span (until :func:`detach`)."""
    return _context.attach(_trace.set_span_in_context(span))


def detach(token: Any) -> None:
    _context.detach(token)


def end(span: Any, ok: bool, description: str | None = None) -> None:
    if not ok:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, description))
    span.end()
