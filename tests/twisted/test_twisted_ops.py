"""Operations on Twisted, against the real broker: ``describe`` through ``postage.control``,
the metrics after a known number of deliveries, failures and RPC calls, ``/readyz`` while the
broker has cancelled a consumer, and traces continued across two hops."""

from __future__ import annotations

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

from postage import MessageHandler, MessageResult, RpcHandler, tracing
from postage.twisted import MessageProcessor, discovery, metrics

FAST = 10


class Counted(MessageProcessor):
    """Handlers that succeed, fail, answer, and (``relay``) publish on."""

    producer = None  # set by a test: where ``relay`` publishes
    relay_to = None

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.seen = []  # (label, TraceContext while the handler ran)

    @MessageHandler("command", "ok")
    def ok(self, content):
        self.seen.append(("ok", tracing.current.get()))

    @MessageHandler("command", "boom")
    def boom(self, content):
        raise RuntimeError("boom")

    @MessageHandler("command", "later")
    async def later(self, content):
        await defer.succeed(None)
        self.seen.append(("later", tracing.current.get()))

    @RpcHandler("command", "opsm_add")
    def opsm_add(self, content, reply_func):
        reply_func(MessageResult(sum(content["parameters"]["values"])))

    @MessageHandler("command", "relay")
    def relay(self, content):
        self.seen.append(("relay", tracing.current.get()))
        return self.producer.send("ok", {}, _eks=[self.relay_to])


def _processor(components, names, label, exchange):
    queue = names.auto_queue(label)
    return components.processor(Counted, label=label, eqk=[(exchange, [(queue, label)])]), \
        queue["name"]


@defer.inlineCallbacks
def _get(port, path):
    """``GET path`` over HTTP/1.0 (the server closes after the answer): (status, body)."""
    from twisted.internet import protocol, reactor  # noqa: PLC0415
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: PLC0415

    class Get(protocol.Protocol):
        def __init__(self):
            self.data = []
            self.done = defer.Deferred()

        def connectionMade(self):
            self.transport.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())

        def dataReceived(self, data):
            self.data.append(data)

        def connectionLost(self, reason=None):
            self.done.callback(b"".join(self.data))

    client = Get()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    raw = yield client.done.addTimeout(10, reactor)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _samples(text):
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples]


def _value(samples, metric, **labels):
    found = [s.value for s in samples
             if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


@pytest_twisted.ensureDeferred
async def test_describe_answers_through_postage_control(components, names, started, tools):
    exchange = names.exchange_class()
    first, first_queue = _processor(components, names, "first", exchange)
    second, _ = _processor(components, names, "second", exchange)
    await started(first)
    await started(second)
    producer = components.producer(eks=[(exchange, "first")])
    for _ in range(3):
        await producer.send("ok", {})
    await producer.send("boom", {})
    await tools.wait_for(lambda: first.stats.handled == 4, timeout=FAST)
    name = first.fingerprint["name"]

    values = await tools.wait_for(lambda: discovery.gather(producer, name, timeout=0.5),
                                  timeout=FAST, what="describe answered")

    assert len(values) == 1  # the key name.<name> reaches that component alone
    value = values[0]
    assert value["fingerprint"] == first.fingerprint
    assert value["queues"] == [first_queue]
    assert ["command", "opsm_add"] in value["handlers"]
    assert value["counters"] == {"handled": 4, "failed": 1, "rejected": 0, "retried": 0,
                                 "dead": 0, "rpc_answered": 0, "in_flight": 0}
    assert value["connection"]["port"] == 5672
    assert value["connection"]["reconnects"] == 0
    assert value["connection"]["connected_since"].endswith("+00:00")
    every = await tools.wait_for(
        lambda: discovery.gather(producer, None, timeout=0.5).addCallback(
            lambda vs: {v["fingerprint"]["name"] for v in vs} >= {
                name, second.fingerprint["name"]}),
        timeout=FAST, what="both components answer on 'all'")
    assert every


@pytest_twisted.ensureDeferred
async def test_metrics_after_known_deliveries_failures_and_calls(components, names, started,
                                                                 tools):
    exchange = names.exchange_class()
    processor, queue = _processor(components, names, "counted", exchange)
    await started(processor)
    producer = components.producer(eks=[(exchange, "counted")])
    port = metrics.listen(0)
    components.add(port.stopListening)
    for _ in range(5):
        await producer.send("ok", {})
    for _ in range(2):
        await producer.send("boom", {})
    await producer.send("later", {})
    for n in range(3):
        result = await producer.call("opsm_add", {"values": [n, 1]})
        assert result.value == n + 1
    await producer.forward({"not": "an envelope"})
    await tools.wait_for(lambda: processor.stats.rejected == 1, timeout=FAST)

    code, text = await _get(port.getHost().port, "/metrics")

    assert code == 200
    samples = _samples(text)
    handled = "postage_handled_total"
    assert _value(samples, handled, queue=queue, name="ok", outcome="ok") == 5
    assert _value(samples, handled, queue=queue, name="boom", outcome="error") == 2
    assert _value(samples, handled, queue=queue, name="later", outcome="ok") == 1
    assert _value(samples, handled, queue=queue, name="opsm_add", outcome="ok") == 3
    assert _value(samples, handled, queue=queue, outcome="rejected") == 1
    assert _value(samples, "postage_handler_seconds_count", type="command", name="ok") >= 5
    assert _value(samples, "postage_published_total", exchange=exchange.name,
                  outcome="confirmed") == 9
    assert _value(samples, "postage_rpc_calls_total", name="opsm_add", outcome="success") == 3
    assert _value(samples, "postage_rpc_seconds_count", name="opsm_add") == 3
    assert _value(samples, "postage_connected") == 1
    assert _value(samples, "postage_in_flight") == 0
    assert _value(samples, "postage_reconnects_total") is not None
    code, text = await _get(port.getHost().port, "/livez")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_readyz_503_while_the_broker_cancelled_the_consumer_then_200(
        components, names, started, tools, proxy, broker):
    exchange = names.exchange_class()
    queue = names.auto_queue("ready")
    processor = components.processor(Counted, label="ready", hup=proxy.hup,
                                      eqk=[(exchange, [(queue, "ready")])])
    await started(processor)
    port = metrics.listen(0)
    components.add(port.stopListening)
    web = port.getHost().port

    async def ready():
        code, _ = await _get(web, "/readyz")
        return code == 200

    await tools.wait_for(lambda: defer.ensureDeferred(ready()), timeout=FAST,
                         what="/readyz 200")

    # When the broker's basic.cancel arrives, hold what the broker sends next (the consumer's
    # re-declaration is answered but not read), so that the not-consuming state lasts.
    cancelled = defer.Deferred()

    def on_cancel(_frame):
        proxy.pause()
        cancelled.callback(None)

    processor.consumer.channel.impl.add_on_cancel_callback(on_cancel)
    broker.delete_queue(queue["name"])
    await tools.within(cancelled, FAST)

    code, body = await _get(web, "/readyz")
    assert code == 503
    assert f"not consuming {queue['name']}" in body

    proxy.paused = False
    for pair in proxy.pairs:
        if pair.upstream is not None:
            pair.upstream.transport.resumeProducing()
    await tools.wait_for(lambda: defer.ensureDeferred(ready()), timeout=FAST,
                         what="/readyz 200 after re-consuming")
    assert processor.consumer.consuming == [queue["name"]]


@pytest_twisted.ensureDeferred
async def test_a_trace_continues_across_two_hops(components, names, started, tools,
                                                 log_events):
    exchange = names.exchange_class()
    first, _ = _processor(components, names, "hop1", exchange)
    second, _ = _processor(components, names, "hop2", exchange)
    first.producer = components.producer(label="relay")
    first.relay_to = (exchange, "hop2")
    await started(first)
    await started(second)
    producer = components.producer(eks=[(exchange, "hop1")])
    root = tracing.new_context()

    token = tracing.current.set(root)  # as if this test were itself a handler
    try:
        sent = producer.send("relay", {})
    finally:
        tracing.current.reset(token)
    await sent
    await tools.wait_for(lambda: second.seen, timeout=FAST, what="the second hop")
    fresh = producer.send("boom", {}, _key="hop1")
    await fresh
    await tools.wait_for(lambda: log_events.matching("failed on command/boom"),
                         timeout=FAST)

    (label, hop1), = first.seen
    (label2, hop2), = second.seen
    assert (label, label2) == ("relay", "ok")
    assert hop1.trace_id == hop2.trace_id == root.trace_id
    assert len({root.span_id, hop1.span_id, hop2.span_id}) == 3
    failure, = log_events.matching("failed on command/boom")
    assert failure["trace_id"] not in (None, root.trace_id)  # a publish outside: a new trace
    assert tracing.current.get() is None


def test_text_log_lines_of_a_handler_end_with_its_trace_id():
    import io  # noqa: PLC0415

    from twisted.logger import Logger  # noqa: PLC0415

    from postage.twisted.logs import text_observer  # noqa: PLC0415

    out = io.StringIO()
    observer = text_observer(out)
    user_log = Logger(observer=observer)
    context = tracing.new_context()
    token = tracing.current.set(context)
    try:
        user_log.info("inside a handler")
    finally:
        tracing.current.reset(token)
    user_log.info("outside")

    inside, outside = out.getvalue().splitlines()
    assert inside.endswith(f"inside a handler trace_id={context.trace_id}")
    assert outside.endswith("outside")


@pytest_twisted.ensureDeferred
async def test_describe_is_answered_again_after_the_control_connection_is_lost(
        components, names, started, tools):
    exchange = names.exchange_class()
    processor, _ = _processor(components, names, "lost", exchange)
    await started(processor)
    producer = components.producer()
    name = processor.fingerprint["name"]
    await tools.wait_for(lambda: discovery.gather(producer, name, timeout=0.3), timeout=FAST,
                         what="describe answered")
    first_queue = processor.control.queue

    await tools.close_connections(f"{name}.control")

    values = await tools.wait_for(lambda: discovery.gather(producer, name, timeout=0.3),
                                  timeout=30, what="describe answered after reconnecting")
    assert values[0]["fingerprint"]["name"] == name
    assert processor.control.queue != first_queue  # a fresh exclusive queue


@pytest_twisted.ensureDeferred
async def test_each_message_carries_its_own_traceparent_on_the_wire(components, names,
                                                                    broker):
    exchange = names.exchange_class()
    queue = broker.declare_bound_queue(names.queue(), exchange.name, "k")
    producer = components.producer(eks=[(exchange, "k")])
    for _ in range(3):
        await producer.send("ok", {})
    await producer.send("ok", {}, _headers={"tenant": "a"})

    got = [broker.get(queue) for _ in range(4)]

    headers = [properties.headers for _method, properties, _body in got]
    parsed = [tracing.parse(each["traceparent"]) for each in headers]
    assert all(parsed), headers
    assert len({each.trace_id for each in parsed}) == 4  # four publishes outside handlers
    assert headers[3]["tenant"] == "a"
