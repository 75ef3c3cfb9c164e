"""The RPC call table (``postage.twisted.rpc.RpcCalls``) on a ``task.Clock``: what the
results of calls that end without a reply say, and the debug event of each retry. No
broker: these complete the call-table tests of test_twisted_rpc.py."""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher

from postage import BrokerConnectionError
from postage.twisted import logs
from postage.twisted.rpc import RpcCalls


def test_a_call_that_times_out_says_which_call_and_after_how_long():
    clock = task.Clock()
    d = RpcCalls(clock).call("id-1", lambda: None, timeout=1.5, max_retry=0)
    clock.advance(1.5)
    assert (d.result.value, d.result.message) == ("TimeoutError", "rpc: no reply after 1.5s")


def test_a_call_described_by_the_caller_is_named_so_in_its_result():
    clock = task.Clock()
    d = RpcCalls(clock).call("id-1", lambda: None, timeout=1, max_retry=0,
                             description="rpc_echo")
    clock.advance(1)
    assert d.result.message == "rpc_echo: no reply after 1s"


def test_a_call_whose_broker_stays_unreachable_ends_with_that_error():
    clock = task.Clock()
    down = BrokerConnectionError("connection refused")
    d = RpcCalls(clock, lambda: down).call("id-1", lambda: None, timeout=1, max_retry=1,
                                            description="rpc_echo")
    clock.advance(1)
    assert not d.called  # one retry left: it retries, broker or not
    clock.advance(1)
    assert (d.result.value, d.result.message) == (
        "BrokerConnectionError", "rpc_echo: the broker stayed unreachable: connection refused")


def test_fail_all_ends_each_call_with_the_given_name_and_text():
    calls = RpcCalls(task.Clock())
    first = calls.call("id-1", lambda: None, timeout=1, max_retry=0)
    second = calls.call("id-2", lambda: None, timeout=1, max_retry=0)
    calls.fail_all("BrokerConnectionError", "the connection was lost")
    for d in (first, second):
        assert (d.result.value, d.result.message) == ("BrokerConnectionError",
                                                      "the connection was lost")
    assert len(calls) == 0


def test_each_retry_is_a_debug_event_naming_the_call_and_the_attempts_left(monkeypatch):
    monkeypatch.setattr(logs, "_threshold", [])  # a level of this test's own
    logs.set_level("debug")
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = task.Clock()
        RpcCalls(clock).call("id-1", lambda: None, timeout=1, max_retry=2,
                             description="rpc_echo")
        clock.advance(1)
        clock.advance(1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [formatEvent(event) for event in events if event.get("log_namespace", "").startswith(
        "postage.twisted.rpc")]
    assert texts == ["rpc_echo timed out, retrying (2 left)",
                     "rpc_echo timed out, retrying (1 left)"]


class Sender:
    """Counts its sends; raises on the ones listed in ``fail_on`` (1-based)."""

    def __init__(self, fail_on=()):
        self.count = 0
        self.fail_on = set(fail_on)

    def __call__(self):
        self.count += 1
        if self.count in self.fail_on:
            raise RuntimeError(f"send {self.count} refused")


def test_resend_sends_the_calls_again_now_without_using_an_attempt():
    clock = task.Clock()
    calls, send = RpcCalls(clock), Sender()
    d = calls.call("id-1", send, timeout=1, max_retry=0)
    calls.resend(["unknown-id", "id-1"])  # an id not in flight is skipped, not a stop
    assert send.count == 2
    assert not d.called
    calls.reply("id-1", "the reply")
    assert d.result == "the reply"
    calls.resend(["id-1"])  # ended: nothing to send
    assert send.count == 2


def test_resend_that_raises_ends_that_call_with_the_error():
    calls, send = RpcCalls(task.Clock()), Sender(fail_on={2})
    d = calls.call("id-1", send, timeout=1, max_retry=3)
    calls.resend(["id-1"])
    assert (d.result.value, d.result.message) == ("RuntimeError", "send 2 refused")
    assert len(calls) == 0
