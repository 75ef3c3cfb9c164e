"""OpenTelemetry spans, with the SDK's in-memory exporter: a publish is a PRODUCER span, the
handlers of its delivery a CONSUMER span (its child, through the ``traceparent`` header), an
RPC call a CLIENT span; the application's own spans nest in the handler's."""

from __future__ import annotations

import pytest
import pytest_twisted

from postage import MessageHandler, MessageResult, RpcHandler, otel

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

from postage.twisted import MessageProcessor  # noqa: E402

FAST = 10


@pytest.fixture
def spans():
    """A tracer provider for this test alone. OpenTelemetry lets a process set its provider
    once; the test puts the unset state back afterwards, so that the other tests run without
    spans, as an application without OpenTelemetry does."""
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    assert otel.tracer() is None


class Traced(MessageProcessor):
    @MessageHandler("command", "inner")
    def inner(self, content):
        with trace.get_tracer("app").start_as_current_span("app work"):
            pass

    @MessageHandler("command", "boom")
    def boom(self, content):
        raise RuntimeError("boom")

    @RpcHandler("command", "otel_echo")
    def otel_echo(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]))


def _by_name(exporter, name):
    return [span for span in exporter.get_finished_spans() if span.name == name]


@pytest_twisted.ensureDeferred
async def test_spans_for_publish_handlers_and_rpc(spans, components, names, started, tools):
    exchange = names.exchange_class()
    queue = names.auto_queue()
    processor = components.processor(Traced, eqk=[(exchange, [(queue, "k")])])
    await started(processor)
    producer = components.producer(eks=[(exchange, "k")])

    await producer.send("inner", {})
    await producer.send("boom", {})
    result = await producer.call("otel_echo", {"a": 1})
    assert result.value == {"a": 1}
    process = f"process {queue['name']}"
    await tools.wait_for(lambda: len(_by_name(spans, process)) == 3 and _by_name(
        spans, "call otel_echo"), timeout=FAST, what="the spans")

    publishes = _by_name(spans, f"publish {exchange.name}")
    handled = sorted(_by_name(spans, process), key=lambda span: span.start_time)
    app, = _by_name(spans, "app work")
    call, = _by_name(spans, "call otel_echo")
    assert len(publishes) == 2
    for publish, consumer in zip(publishes, handled[:2], strict=True):
        assert publish.kind == trace.SpanKind.PRODUCER
        assert consumer.kind == trace.SpanKind.CONSUMER
        assert consumer.parent.span_id == publish.context.span_id
        assert consumer.context.trace_id == publish.context.trace_id
        assert publish.attributes["messaging.system"] == "rabbitmq"
        assert publish.attributes["messaging.destination.name"] == exchange.name
        assert consumer.attributes["messaging.operation.type"] == "process"
    assert app.parent.span_id == handled[0].context.span_id
    assert handled[0].status.is_ok
    assert handled[1].status.status_code == trace.StatusCode.ERROR
    assert call.kind == trace.SpanKind.CLIENT
    assert call.attributes["rpc.method"] == "otel_echo"
    assert handled[2].parent.span_id == call.context.span_id
    assert handled[2].attributes["messaging.message.conversation_id"] == \
        call.attributes["messaging.message.conversation_id"]
