"""RetryPolicy and the arithmetic of failed deliveries (postage.retry), without a broker."""

from __future__ import annotations

import dataclasses

import pytest

from postage import MessageHandler, RetryPolicy, RpcHandler
from postage.handlers import HandlerRegistry
from postage.retry import (
    ATTEMPT_HEADER,
    DEAD_REASON_HEADER,
    ERROR_HEADER,
    ERRORS_HEADER,
    HANDLERS_HEADER,
    MAX_ERROR_TEXT,
    MAX_HISTORY,
    QUEUE_HEADER,
    dead_queue,
    dead_queue_flags,
    decide_malformed,
    delay_queue,
    delay_queue_flags,
    describe_error,
    failed_attempts,
    failed_handlers,
    replay_headers,
)

# ---- the policy as data -----------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    assert RetryPolicy() == RetryPolicy(attempts=5, delay=1.0, multiplier=2.0, max_delay=300.0)


def test_policy_is_frozen_and_hashable():
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 3  # type: ignore[misc]
    assert len({RetryPolicy(), RetryPolicy(), RetryPolicy(attempts=2)}) == 2


@pytest.mark.parametrize(("kwds", "words"), [
    ({"attempts": 0}, "attempts"),
    ({"attempts": 2.5}, "attempts"),
    ({"attempts": True}, "attempts"),
    ({"delay": 0}, "delay"),
    ({"delay": -1}, "delay"),
    ({"delay": float("nan")}, "finite"),
    ({"delay": "1"}, "finite"),
    ({"multiplier": 0.5}, "multiplier"),
    ({"max_delay": 0.5}, "max_delay"),
    ({"max_delay": float("inf")}, "finite"),
])
def test_bad_values_are_refused_with_a_clear_error(kwds, words):
    with pytest.raises(ValueError, match=words):
        RetryPolicy(**kwds)


def test_the_nth_retry_waits_delay_times_multiplier_to_the_n_minus_1():
    policy = RetryPolicy(attempts=5, delay=1.0, multiplier=2.0, max_delay=300.0)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delays() == [1.0, 2.0, 4.0, 8.0]
    assert policy.retries == 4


def test_delays_stop_growing_at_max_delay():
    policy = RetryPolicy(attempts=20, delay=10, multiplier=3, max_delay=60)
    assert policy.delays()[:4] == [10.0, 30.0, 60.0, 60.0]
    assert policy.delay_for(10_000) == 60  # no overflow far past the cap


def test_delays_are_whole_milliseconds_at_least_one():
    policy = RetryPolicy(attempts=3, delay=0.0001, multiplier=1.0, max_delay=1)
    assert policy.delay_ms(1) == 1
    assert RetryPolicy(delay=0.25).delay_ms(1) == 250
    assert RetryPolicy(delay=1.0004).delay_ms(1) == 1000


def test_retry_numbers_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().delay_for(0)


def test_one_attempt_means_no_delay_queue():
    assert RetryPolicy(attempts=1).delays() == []
    assert RetryPolicy(attempts=1).delay_queues("q") == []


# ---- queue names and flags ----------------------------------------------------------------


def test_queue_names():
    assert delay_queue("orders", 1500) == "orders.retry.1500"
    assert dead_queue("orders") == "orders.dead"


def test_delay_queues_each_once_shortest_first():
    policy = RetryPolicy(attempts=6, delay=1, multiplier=2, max_delay=4)
    assert policy.delay_queues("q") == ["q.retry.1000", "q.retry.2000", "q.retry.4000"]


def test_a_delay_queue_expires_back_to_its_queue_through_the_nameless_exchange():
    assert delay_queue_flags("orders", 2000) == {"durable": True, "arguments": {
        "x-message-ttl": 2000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders"}}


def test_the_dead_queue_is_durable():
    assert dead_queue_flags() == {"durable": True}
    assert dead_queue_flags({"auto_delete": True}) == {"durable": True}


def test_a_quorum_queue_gets_quorum_delay_and_dead_queues():
    flags = {"durable": True, "arguments": {"x-queue-type": "quorum"}}
    assert delay_queue_flags("q", 10, flags)["arguments"]["x-queue-type"] == "quorum"
    assert dead_queue_flags(flags) == {"durable": True, "arguments": {"x-queue-type": "quorum"}}


# ---- deciding what happens to a failed delivery -----------------------------------------------


def test_first_failure_goes_to_the_first_delay_queue_with_attempt_1():
    decision = RetryPolicy(attempts=3, delay=0.5).decide("q", None, "ValueError: bad", ["h"])
    assert (decision.action, decision.queue, decision.attempt, decision.delay) == (
        "retry", "q.retry.500", 1, 0.5)
    assert decision.headers == {ATTEMPT_HEADER: 1, ERROR_HEADER: "ValueError: bad",
                                ERRORS_HEADER: ["ValueError: bad"], QUEUE_HEADER: "q",
                                HANDLERS_HEADER: ["h"]}


def test_failures_accumulate_and_the_last_attempt_goes_to_the_dead_queue():
    policy = RetryPolicy(attempts=3, delay=1, multiplier=2)
    first = policy.decide("q", {"app": "kept"}, "E: one")
    second = policy.decide("q", first.headers, "E: two")
    assert (second.action, second.queue, second.attempt) == ("retry", "q.retry.2000", 2)
    third = policy.decide("q", second.headers, "E: three")
    assert (third.action, third.queue, third.attempt) == ("dead", "q.dead", 3)
    assert third.headers[ERRORS_HEADER] == ["E: one", "E: two", "E: three"]
    assert third.headers[ERROR_HEADER] == "E: three"
    assert third.headers[DEAD_REASON_HEADER] == "failed 3 of 3 attempts"
    assert third.headers["app"] == "kept"


def test_attempts_1_parks_at_the_first_failure():
    decision = RetryPolicy(attempts=1).decide("q", None, "E")
    assert (decision.action, decision.queue) == ("dead", "q.dead")
    assert decision.headers[DEAD_REASON_HEADER] == "failed (no retry)"


def test_headers_the_broker_added_are_not_carried_on():
    headers = {"x-death": [{"count": 1}], "x-first-death-queue": "q.retry.1000",
               "x-last-death-reason": "expired", "x-delivery-count": 3, "mine": 1}
    decision = RetryPolicy().decide("q", headers, "E")
    assert set(decision.headers) == {"mine", ATTEMPT_HEADER, ERROR_HEADER, ERRORS_HEADER,
                                     QUEUE_HEADER}


def test_error_history_is_bounded():
    policy = RetryPolicy(attempts=1000)
    headers = None
    for n in range(MAX_HISTORY + 5):
        headers = policy.decide("q", headers, f"E: {n}").headers
    assert len(headers[ERRORS_HEADER]) == MAX_HISTORY
    assert headers[ERRORS_HEADER][-1] == f"E: {MAX_HISTORY + 4}"
    long = policy.decide("q", None, "x" * (MAX_ERROR_TEXT * 3)).headers[ERROR_HEADER]
    assert len(long) == MAX_ERROR_TEXT


@pytest.mark.parametrize(("value", "count"), [
    (None, 0), (2, 2), ("3", 3), (b"4", 4), (-1, 0), (True, 0), ("x", 0), (1.5, 0)])
def test_attempt_header_read_defensively(value, count):
    headers = {} if value is None else {ATTEMPT_HEADER: value}
    assert failed_attempts(headers) == count


def test_failed_handlers_from_the_header():
    assert failed_handlers(None) == frozenset()
    assert failed_handlers({HANDLERS_HEADER: ["a", b"b", 3]}) == {"a", "b"}
    assert failed_handlers({HANDLERS_HEADER: "a"}) == frozenset()


def test_malformed_goes_to_the_dead_queue_with_the_reason():
    decision = decide_malformed("q", {"k": "v"}, "body is not JSON")
    assert (decision.action, decision.queue) == ("dead", "q.dead")
    assert decision.headers[DEAD_REASON_HEADER] == "malformed: body is not JSON"
    assert decision.headers[ERROR_HEADER] == "MessageFormatError: body is not JSON"
    assert decision.headers["k"] == "v"


def test_replay_starts_the_count_again_and_keeps_the_history():
    dead = RetryPolicy(attempts=1).decide("q", None, "E: why").headers
    replayed = replay_headers(dead)
    assert failed_attempts(replayed) == 0
    assert replayed[ERRORS_HEADER] == ["E: why"]
    assert DEAD_REASON_HEADER not in replayed and ERROR_HEADER not in replayed


def test_describe_error():
    assert describe_error(ValueError("bad value")) == "ValueError: bad value"
    assert describe_error(KeyError()) == "KeyError"


# ---- per-handler policies on the decorators ---------------------------------------------------


def test_message_handler_takes_a_policy_and_leaves_the_function_unchanged():
    policy = RetryPolicy(attempts=2)

    def handler(self, content):
        return content

    assert MessageHandler("command", "x", retry=policy)(handler) is handler

    class P(HandlerRegistry):
        on_x = MessageHandler("command", "x", retry=policy)(handler)

        @MessageHandler("command", "y")
        def on_y(self, content):
            return content

    assert P.dispatch_table.message_handlers("command", "x")[0].retry == policy
    assert P.dispatch_table.message_handlers("command", "y")[0].retry is None
    assert P.dispatch_table.retry_policies() == [policy]
    assert P().on_x(3) == 3


def test_rpc_handlers_take_no_policy():
    with pytest.raises(TypeError, match="RPC handlers are not retried"):
        RpcHandler("command", "x", retry=RetryPolicy())


def test_retry_must_be_a_policy():
    with pytest.raises(TypeError, match="RetryPolicy"):
        MessageHandler("command", "x", retry=5)  # type: ignore[arg-type]
