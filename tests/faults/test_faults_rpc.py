"""RPC load through a link that is cut, paused or blackholed one way: with hundreds of calls
in flight, every call ends within its bound (timeout × attempts, plus slack) with a result
message, never hangs and never gets another call's answer; once the link is back, calls
succeed again."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import Message, MessageResult, RpcHandler
from postage.twisted import MessageProcessor

pytestmark = pytest.mark.faults

CALLS = 300  # in flight at once
TIMEOUT = 3.0  # seconds per attempt
RETRIES = 2  # attempts after the first
SLACK = 15.0  # a loaded machine, a reconnection or two
BOUND = TIMEOUT * (RETRIES + 1) + SLACK


class Echo(MessageProcessor):
    @RpcHandler("command", "echo")
    def echo(self, content: Any, reply: Any) -> None:
        reply(MessageResult(content["parameters"]))


async def _fault(proxy: Any, fault: str, tools: Any) -> None:
    if fault in ("rst", "fin"):
        proxy.cut(fault)
    elif fault == "pause-then-cut":  # a half-open link, replaced by a new connection
        proxy.pause()
        await tools.sleep(1.5)
        proxy.cut("rst")
    elif fault == "pause-then-resume":  # longer than one attempt's timeout
        proxy.pause()
        await tools.sleep(TIMEOUT + 1)
        proxy.resume()
    elif fault == "stairway":  # resets at growing byte offsets, until the calls ended
        proxy.stairway(2048, factor=2)
    elif fault.startswith("blackhole-"):  # one way lost for a while, then a new connection
        proxy.blackhole(fault.removeprefix("blackhole-").replace("-", "_"))
        await tools.sleep(1.5)
        proxy.cut("rst")
        proxy.blackhole(None)
    else:
        raise ValueError(fault)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("fault", ["rst", "fin", "pause-then-cut", "pause-then-resume",
                                   "blackhole-to-broker", "blackhole-to-client", "stairway"])
async def test_rpc_calls_in_flight_through_a_fault_all_end_within_their_bound(
        fault, components, names, proxy, tools, figures):
    queue = names.queue("echo")
    server = components.processor(
        Echo, label="server", hup=proxy.hup, prefetch_count=100,
        # not auto-delete: the queue must outlive the server's own connection cuts
        eqk=[("", [(queue, queue)])])
    await tools.within(server.start(), 30)
    producer = components.producer(label="caller", hup=proxy.hup, rpc_timeout=TIMEOUT,
                                   max_retry=RETRIES)
    await tools.within(producer.ready, 30)
    assert (await tools.within(producer.rpc_echo(n=-1, _key=queue), BOUND)).value == {"n": -1}

    ended: dict[int, tuple[float, Any]] = {}
    answered = [0]
    fault_started: defer.Deferred[None] = defer.Deferred()

    def done(result: Any, n: int, started: float) -> None:
        ended[n] = (time.monotonic() - started, result)
        answered[0] += 1
        if answered[0] == CALLS // 3 and not fault_started.called:
            fault_started.callback(None)

    calls = []
    for n in range(CALLS):
        d = producer.rpc_echo(n=n, _key=queue)
        calls.append(d.addCallback(done, n, time.monotonic()))
    # the fault strikes with about two thirds of the calls still in flight
    await tools.within(fault_started, BOUND)
    in_flight = CALLS - answered[0]
    await _fault(proxy, fault, tools)
    # every call ends (with a generous bound for the lot; each call's own bound below)
    await tools.within(defer.gatherResults(calls), BOUND + 30)
    proxy.stairway(None)

    outcomes = Counter()
    crossed = []
    for n, (_seconds, result) in ended.items():
        assert isinstance(result, Message), f"call {n} ended with {result!r}"
        if isinstance(result, MessageResult) and result:
            outcomes["success"] += 1
            if result.value != {"n": n}:
                crossed.append((n, result.value))
        else:
            outcomes[str(result.value)] += 1
    slowest = max(seconds for seconds, _ in ended.values())
    # the link is back: a new call is answered
    after = await tools.within(producer.rpc_echo(n="after", _key=queue), BOUND)
    figures.add(fault, calls=CALLS, in_flight_at_the_fault=in_flight, succeeded=outcomes["success"],
                other_results=sum(outcomes.values()) - outcomes["success"],
                cuts=proxy.cuts, slowest_seconds=slowest, bound_seconds=BOUND)
    assert len(ended) == CALLS and in_flight > 0
    assert not crossed, f"calls answered with another call's reply: {crossed[:5]}"
    assert slowest <= BOUND, f"a call took {slowest:.1f}s (bound {BOUND:.1f}s)"
    assert set(outcomes) <= {"success", "TimeoutError", "BrokerConnectionError"}, outcomes
    assert after.value == {"n": "after"}
