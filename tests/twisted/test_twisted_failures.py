"""When handlers fail, against the real broker: delayed retries through delay queues, the dead
queue and its error history, malformed deliveries, handler_timeout, max_concurrency, and a
channel the broker closes with 406 while a handler is slow."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from postage import (
    MessageHandler,
    MessageResult,
    MessageResultException,
    RetryPolicy,
    RpcHandler,
)
from postage.retry import (
    ATTEMPT_HEADER,
    DEAD_REASON_HEADER,
    ERROR_HEADER,
    ERRORS_HEADER,
    QUEUE_HEADER,
    dead_queue,
)
from postage.twisted import MessageProcessor

CLASSIC = {}
QUORUM = {"durable": True, "arguments": {"x-queue-type": "quorum"}}


class Flaky(MessageProcessor):
    """``fail``: raises until it ran ``content['parameters']['fail']`` times; every run's
    time lands in ``self.runs``."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.runs = []

    @MessageHandler("command", "flaky")
    def flaky(self, content):
        self.runs.append(time.monotonic())
        if len(self.runs) <= content["parameters"]["fail"]:
            raise RuntimeError(f"run {len(self.runs)} fails")


def side_queues(names, queue, policy):
    """Register a queue's delay and dead queues for deletion at the end of the test."""
    names.queues.extend([*policy.delay_queues(queue), dead_queue(queue)])


@defer.inlineCallbacks
def start(components, names, cls, queue_flags=CLASSIC, **kwds):
    queue = names.queue("work")
    spec = {"name": queue, "flags": queue_flags} if queue_flags else queue
    processor = components.processor(cls, eqk=[("", [(spec, queue)])], **kwds)
    for policy in {kwds.get("retry"), *processor.dispatch.retry_policies()} - {None}:
        side_queues(names, queue, policy)
    yield processor.start()
    return processor, queue


@defer.inlineCallbacks
def settled(broker, tools, *queues):
    """Wait until ``queues`` hold no message, ready or unacked (counts lag: poll)."""
    for queue in queues:
        yield tools.wait_for(lambda q=queue: broker.message_count(q) == 0, timeout=20,
                             what=f"{queue} empty")
        yield tools.wait_for(lambda q=queue: tools.unacked_count(q).addCallback(
            lambda n: n == 0), timeout=20, what=f"{queue} acked")


def send(broker, queue, name, **parameters):
    body = {"type": "command", "name": name, "category": "message", "version": 2,
            "fingerprint": {}, "content": {"parameters": parameters}, "_reserved": {}}
    broker.publish("", queue, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("flags", [CLASSIC, QUORUM], ids=["classic", "quorum"])
@pytest_twisted.inlineCallbacks
def test_failing_twice_then_succeeding_runs_three_times_with_the_delays(
        components, names, broker, tools, flags):
    policy = RetryPolicy(attempts=5, delay=0.5, multiplier=2.0)
    processor, queue = yield start(components, names, Flaky, flags, retry=policy)
    send(broker, queue, "flaky", fail=2)
    yield tools.wait_for(lambda: len(processor.runs) == 3, timeout=20, what="three runs")
    yield settled(broker, tools, queue, *policy.delay_queues(queue))
    assert len(processor.runs) == 3  # everything acked, nothing waits: no fourth run comes
    gaps = [b - a for a, b in zip(processor.runs, processor.runs[1:])]
    for gap, delay in zip(gaps, [0.5, 1.0]):
        assert delay - 0.05 <= gap <= delay + 2.0, (gaps, "delays 0.5 s and 1.0 s")
    assert processor.counters["retried"] == 2
    assert broker.message_count(dead_queue(queue)) == 0


@pytest_twisted.inlineCallbacks
def test_always_failing_lands_in_the_dead_queue_with_its_history(
        components, names, broker, tools):
    policy = RetryPolicy(attempts=3, delay=0.2)
    processor, queue = yield start(components, names, Flaky, retry=policy)
    send(broker, queue, "flaky", fail=1000)
    dead = dead_queue(queue)
    yield tools.wait_for(lambda: broker.message_count(dead) == 1, timeout=20, what="dead")
    yield settled(broker, tools, queue, *policy.delay_queues(queue))
    assert len(processor.runs) == 3
    properties, body = broker.get_message(dead)
    headers = properties.headers
    assert headers[ATTEMPT_HEADER] == 3
    assert headers[ERRORS_HEADER] == [f"RuntimeError: run {n} fails" for n in (1, 2, 3)]
    assert headers[ERROR_HEADER] == "RuntimeError: run 3 fails"
    assert headers[QUEUE_HEADER] == queue
    assert headers[DEAD_REASON_HEADER] == "failed 3 of 3 attempts"
    assert properties.delivery_mode == 2
    assert json.loads(body)["name"] == "flaky"  # the body as it was sent
    assert processor.counters["dead"] == 1 and processor.counters["retried"] == 2


@pytest_twisted.inlineCallbacks
def test_a_deleted_delay_queue_is_declared_again_and_nothing_is_lost(
        components, names, broker, tools, log_events):
    policy = RetryPolicy(attempts=3, delay=0.2)
    processor, queue = yield start(components, names, Flaky, retry=policy)
    broker.delete_queue(f"{queue}.retry.200")  # an operator's mistake
    send(broker, queue, "flaky", fail=1000)
    dead = dead_queue(queue)
    yield tools.wait_for(lambda: broker.message_count(dead) == 1, timeout=20, what="dead")
    # the first failure could not be moved (unroutable): the message went back to its queue,
    # the delay queue was declared again, and then the three attempts ran
    assert len(processor.runs) == 4
    assert log_events.matching(f"could not move a failed delivery to '{queue}.retry.200'")
    yield settled(broker, tools, queue, *policy.delay_queues(queue))


class Answering(MessageProcessor):
    @RpcHandler("command", "divide")
    def divide(self, content, reply_func):
        reply_func(MessageResult(1 / content["parameters"]["by"]))


@pytest_twisted.inlineCallbacks
def test_rpc_handlers_are_not_retried_under_a_processor_policy(components, names, broker,
                                                               tools):
    policy = RetryPolicy(attempts=3, delay=0.1)
    processor, queue = yield start(components, names, Answering, retry=policy)
    producer = components.producer(routing_key=queue)
    result = yield producer.rpc_divide(by=0, _timeout=5, _max_retry=0)
    assert isinstance(result, MessageResultException)
    assert result.value == "ZeroDivisionError"
    yield settled(broker, tools, queue, *policy.delay_queues(queue), dead_queue(queue))
    assert processor.counters == {"retried": 0, "dead": 0, "timed_out": 0}


class TwoHandlers(MessageProcessor):
    """Two handlers of one message: ``steady`` always succeeds, ``shaky`` fails once."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.calls = {"steady": 0, "shaky": 0}

    @MessageHandler("command", "both")
    def steady(self, content):
        self.calls["steady"] += 1

    @MessageHandler("command", "both", retry=RetryPolicy(attempts=2, delay=0.1))
    def shaky(self, content):
        self.calls["shaky"] += 1
        if self.calls["shaky"] == 1:
            raise ValueError("first time")


@pytest_twisted.inlineCallbacks
def test_a_per_handler_policy_retries_only_the_handler_that_failed(
        components, names, broker, tools):
    processor, queue = yield start(components, names, TwoHandlers)
    send(broker, queue, "both")
    yield tools.wait_for(lambda: processor.calls["shaky"] == 2, timeout=20, what="retry")
    yield settled(broker, tools, queue, f"{queue}.retry.100")
    assert processor.calls == {"steady": 1, "shaky": 2}


@pytest_twisted.inlineCallbacks
def test_without_a_policy_a_failure_is_logged_and_acked(components, names, broker, tools,
                                                        log_events):
    processor, queue = yield start(components, names, Flaky)
    send(broker, queue, "flaky", fail=1)
    yield tools.wait_for(lambda: processor.runs, what="the run")
    yield settled(broker, tools, queue)
    assert len(processor.runs) == 1
    assert log_events.matching("handler flaky failed on command/flaky")
    assert not broker.queue_exists(dead_queue(queue))


@pytest_twisted.inlineCallbacks
def test_with_a_policy_a_malformed_delivery_goes_to_the_dead_queue_with_the_reason(
        components, names, broker, tools):
    processor, queue = yield start(components, names, Flaky, retry=RetryPolicy(attempts=2))
    broker.publish("", queue, b"not json at all", content_type="application/json")
    dead = dead_queue(queue)
    yield tools.wait_for(lambda: broker.message_count(dead) == 1, timeout=20, what="dead")
    properties, body = broker.get_message(dead)
    assert body == b"not json at all"
    assert properties.headers[DEAD_REASON_HEADER].startswith("malformed: ")
    assert properties.headers[ERROR_HEADER].startswith("MessageFormatError: ")
    yield settled(broker, tools, queue)
    assert processor.runs == []


class Slow(MessageProcessor):
    """``hang``: a Deferred that never fires by itself (cancelled by handler_timeout)."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.started = []
        self.cancelled = 0

    @MessageHandler("command", "hang")
    def hang(self, content):
        self.started.append(time.monotonic())

        def cancel(_d):
            self.cancelled += 1

        return defer.Deferred(cancel)


@pytest_twisted.inlineCallbacks
def test_a_handler_past_handler_timeout_is_cancelled_and_retried(
        components, names, broker, tools, log_events):
    policy = RetryPolicy(attempts=2, delay=0.1)
    processor, queue = yield start(components, names, Slow, retry=policy, handler_timeout=0.3)
    send(broker, queue, "hang")
    dead = dead_queue(queue)
    yield tools.wait_for(lambda: broker.message_count(dead) == 1, timeout=20, what="dead")
    assert processor.cancelled == 2 and len(processor.started) == 2
    assert processor.counters["timed_out"] == 2
    properties, _ = broker.get_message(dead)
    assert properties.headers[ERROR_HEADER] == (
        "HandlerTimeout: handler hang of ('command', 'hang') ran longer than 0.3s")
    assert log_events.matching("handler hang of (command, hang) ran longer than 0.3s")


@pytest_twisted.inlineCallbacks
def test_handler_timeout_without_a_policy_acks(components, names, broker, tools):
    processor, queue = yield start(components, names, Slow, handler_timeout=0.2)
    send(broker, queue, "hang")
    yield tools.wait_for(lambda: processor.cancelled == 1, timeout=10, what="cancel")
    yield settled(broker, tools, queue)
    assert len(processor.started) == 1


class Counting(MessageProcessor):
    """``work``: takes a few ms (a Deferred); records how many run at once."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.now = self.most = self.done = 0

    @MessageHandler("command", "work")
    @defer.inlineCallbacks
    def work(self, content):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            yield task.deferLater(reactor, 0.005, lambda: None)
        finally:
            self.now -= 1
            self.done += 1


@pytest_twisted.inlineCallbacks
def test_max_concurrency_is_never_exceeded_under_a_burst_of_200(
        components, names, broker, tools):
    # prefetch 50 lets 50 deliveries in at once: only max_concurrency holds them to 5
    processor, queue = yield start(components, names, Counting, max_concurrency=5,
                                   prefetch_count=50)
    for _ in range(200):
        send(broker, queue, "work")
    yield tools.wait_for(lambda: processor.done == 200, timeout=60, what="200 handled")
    assert processor.most == 5  # reached, never exceeded
    yield settled(broker, tools, queue)


def test_max_concurrency_defaults_to_the_prefetch():
    assert Counting(prefetch_count=7, reactor=reactor)._concurrency == 7


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_max_concurrency_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="max_concurrency"):
        Flaky(max_concurrency=value, reactor=reactor)


def test_retry_must_be_a_policy():
    with pytest.raises(TypeError, match="RetryPolicy"):
        Flaky(retry=3, reactor=reactor)


class Stuck(MessageProcessor):
    """``stuck``: the first delivery waits on a Deferred the test holds; the redelivery
    (after the channel closed) finishes at once."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.held = []
        self.redelivered = 0

    @MessageHandler("command", "stuck")
    def stuck(self, content):
        if not self.held:
            self.held.append(defer.Deferred())
            return self.held[0]
        self.redelivered += 1
        return None


@pytest_twisted.inlineCallbacks
def test_a_channel_closed_with_406_is_reopened_and_names_the_slow_handler(
        components, names, broker, tools, log_events):
    # RabbitMQ 3.10 has no per-queue consumer timeout (x-consumer-timeout came in 3.11.15 and
    # is ignored here) and the shared broker's 30-minute setting is not ours to change. So
    # the broker closes the channel with the same 406 PRECONDITION_FAILED another honest way:
    # an ack of a delivery tag it never gave.
    processor, queue = yield start(components, names, Stuck)
    send(broker, queue, "stuck")
    yield tools.wait_for(lambda: processor.held, what="the first delivery")
    old = processor.consumer.channel
    old.impl.basic_ack(999_999)
    yield tools.wait_for(lambda: processor.redelivered == 1, timeout=20, what="redelivery")
    assert processor.consumer.channel is not old
    (event,) = log_events.matching("handlers still running on it: (command, stuck)")
    assert "PRECONDITION_FAILED" in str(event.get("reason")) or "406" in str(event["reason"])
    processor.held[0].callback(None)  # its ack goes nowhere: that channel is gone
    yield settled(broker, tools, queue)


# ---- plain data, no broker -------------------------------------------------------------------


def test_side_queues_of_every_queue_under_every_policy():
    from postage.twisted.retries import side_queues as computed  # noqa: PLC0415

    queues = {"a": {}, "b": QUORUM}
    out = computed(queues, [RetryPolicy(attempts=3, delay=1), RetryPolicy(attempts=2, delay=1)])
    assert list(out) == ["a.retry.1000", "a.retry.2000", "a.dead",
                         "b.retry.1000", "b.retry.2000", "b.dead"]
    assert out["b.dead"]["arguments"] == {"x-queue-type": "quorum"}
    assert out["a.retry.2000"]["arguments"]["x-dead-letter-routing-key"] == "a"
    assert computed(queues, []) == {}


def test_republished_properties_drop_the_ttl_and_a_foreign_user_id():
    from pika import BasicProperties  # noqa: PLC0415

    from postage.twisted.retries import republish_properties  # noqa: PLC0415

    original = BasicProperties(content_type="application/json", expiration="5000",
                               user_id="someone", headers={"old": 1}, message_id="m1")
    out = republish_properties(original, {"new": 2}, user="guest", dead=True, now=0)
    assert (out.expiration, out.user_id, out.delivery_mode, out.message_id) == (
        None, None, 2, "m1")
    assert out.headers == {"new": 2, "x-postage-original-user-id": "someone",
                           "x-postage-dead-at": "1970-01-01T00:00:00Z"}
    assert original.headers == {"old": 1} and original.expiration == "5000"
    assert republish_properties(original, {}, user="someone").user_id == "someone"


def test_dead_list_table_and_a_message_the_broker_dead_lettered():
    from pika import BasicProperties  # noqa: PLC0415

    from postage.twisted.deadletters import DeadMessage, format_table  # noqa: PLC0415

    body = json.dumps({"type": "command", "name": "charge", "category": "message",
                       "version": 2, "fingerprint": {}, "content": {}, "_reserved": {}})
    ours = RetryPolicy(attempts=1).decide("q", None, "ValueError: no").headers
    first = DeadMessage.from_delivery(1, BasicProperties(headers=ours), body.encode())
    second = DeadMessage.from_delivery(2, BasicProperties(headers={
        "x-first-death-reason": b"delivery_limit"}), b"\xff not json")
    assert (first.type, first.name, first.attempts, first.error) == (
        "command", "charge", 1, "ValueError: no")
    assert second.reason == "broker: delivery_limit" and second.type is None
    table = format_table("q", [first, second]).splitlines()
    assert table[0] == "q.dead: 2 dead messages (nothing removed)"
    assert table[2].split()[:3] == ["1", "command/charge", "1"]
    assert table[3].split()[:2] == ["2", "(malformed)"]
    assert format_table("q", []) == "q.dead: no dead messages\n"
