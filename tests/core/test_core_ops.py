"""The pure parts of operations: trace context, counters and histograms, describe and the
``postage ps`` table."""

from __future__ import annotations

import contextvars
import re

import pytest

from postage import fleet, stats, tracing
from postage.messages import MessageResult, MessageResultError, MessageResultException

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


# ---- tracing -----------------------------------------------------------------------------

def test_new_context_formats_as_a_valid_traceparent():
    context = tracing.new_context()
    assert TRACEPARENT.match(context.traceparent)
    assert tracing.parse(context.traceparent) == context


def test_child_keeps_the_trace_and_gets_a_new_span():
    parent = tracing.new_context()
    child = parent.child()
    assert child.trace_id == parent.trace_id
    assert child.span_id != parent.span_id
    assert child.flags == parent.flags


def test_parse_reads_the_w3c_example_and_bytes():
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    expected = tracing.TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert tracing.parse(header) == expected
    assert tracing.parse(header.encode()) == expected


@pytest.mark.parametrize("header", [
    None, 17, "", "garbage",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # invalid trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # invalid span id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
    b"\xff" * 60,
])
def test_parse_refuses_malformed_headers(header):
    assert tracing.parse(header) is None


def test_parse_reads_a_future_version_by_its_first_fields():
    header = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
    assert tracing.parse(header).trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_outgoing_continues_the_current_context_and_starts_a_trace_outside():
    outside = tracing.outgoing()
    assert tracing.current.get() is None
    delivery = tracing.new_context()

    def in_handler():
        tracing.current.set(delivery)
        return tracing.outgoing(), tracing.current_trace_id()

    inside, trace_id = contextvars.copy_context().run(in_handler)
    assert inside.trace_id == delivery.trace_id == trace_id
    assert outside.trace_id != delivery.trace_id
    assert tracing.current_trace_id() is None  # the handler's context did not leak


# ---- stats -------------------------------------------------------------------------------

def test_histogram_counts_per_bucket_and_cumulates():
    histogram = stats.Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(3.65)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]


def test_processor_stats_count_outcomes_and_counters():
    counts = stats.ProcessorStats()
    counts.finished("q", "command", "a", True, 0.001)
    counts.finished("q", "command", "a", False, 0.002)
    counts.count("q", "", "", "rejected")
    counts.count("q", "command", "a", "retried")
    counts.count("q", "command", "a", "dead")
    assert counts.counters() == {"handled": 2, "failed": 1, "rejected": 1, "retried": 1,
                                 "dead": 1, "rpc_answered": 0, "in_flight": 0}
    assert counts.outcomes == {("q", "command", "a", "ok"): 1, ("q", "command", "a", "error"): 1,
                               ("q", "", "", "rejected"): 1, ("q", "command", "a", "retried"): 1,
                               ("q", "command", "a", "dead"): 1}
    assert counts.seconds[("command", "a")].count == 2


@pytest.mark.parametrize(("result", "outcome"), [
    (MessageResult(1), "success"),
    (MessageResultError("no"), "error"),
    (MessageResultException("ValueError", "bad"), "exception"),
    (MessageResultException("TimeoutError", "late"), "timeout"),
    (MessageResultException("UnroutableError", "nobody"), "unroutable"),
    (MessageResultException("BrokerConnectionError", "down"), "broker"),
])
def test_rpc_outcome_names_each_result(result, outcome):
    assert stats.rpc_outcome(result) == outcome


# ---- fleet -------------------------------------------------------------------------------

def _value(name, pid, handled=0, uptime=5.0):
    return fleet.describe_value(
        fingerprint={"name": name, "type": "component", "pid": pid, "host": "h1"},
        version="4.0.0", started_at=1_000_000.0, now=1_000_000.0 + uptime, queues=["q"],
        handlers=[("command", "echo"), ("command", None)],
        counters={**stats.ProcessorStats().counters(), "handled": handled},
        host="localhost", port=5672, connected_since=1_000_001.0, reconnects=0)


def test_describe_value_has_the_documented_keys():
    value = _value("echo", 12)
    assert set(value) == {"fingerprint", "postage_version", "started_at", "uptime_s", "queues",
                          "handlers", "counters", "connection"}
    assert value["started_at"] == "1970-01-12T13:46:40+00:00"
    assert value["uptime_s"] == 5.0
    assert value["handlers"] == [["command", ""], ["command", "echo"]]
    assert set(value["counters"]) == {"handled", "failed", "rejected", "retried", "dead",
                                      "rpc_answered", "in_flight"}
    assert value["connection"] == {"host": "localhost", "port": 5672,
                                   "connected_since": "1970-01-12T13:46:41+00:00",
                                   "reconnects": 0}


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (60, "1m00s"), (425, "7m05s"), (3600 * 3 + 720, "3h12m"),
    (86400 * 2 + 3600 * 4, "2d04h")])
def test_format_uptime(seconds, text):
    assert fleet.format_uptime(seconds) == text


def test_format_table_one_sorted_row_per_answer():
    table = fleet.format_table([_value("worker", 30, handled=1234), _value("echo", 7)])
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "HOST", "PID", "VERSION", "UPTIME", "HANDLED",
                                "FAILED", "IN", "FLIGHT"]
    assert lines[1].split() == ["echo", "component", "h1", "7", "4.0.0", "5s", "0", "0", "0"]
    assert lines[2].split() == ["worker", "component", "h1", "30", "4.0.0", "5s", "1234", "0",
                                "0"]
    assert lines[2].index("1234") + 4 == lines[0].index("HANDLED") + len("HANDLED")


def test_key_for():
    assert fleet.key_for(None) == "all"
    assert fleet.key_for("echo") == "name.echo"


def test_the_one_step_headers_match_the_contexts():
    parent = tracing.new_context()
    child = tracing.parse(tracing.child_header(parent))
    assert (child.trace_id, child.flags) == (parent.trace_id, parent.flags)
    assert child.span_id != parent.span_id
    assert TRACEPARENT.match(tracing.outgoing_header())
    token = tracing.current.set(parent)
    try:
        assert tracing.parse(tracing.outgoing_header()).trace_id == parent.trace_id
    finally:
        tracing.current.reset(token)
