"""The Postage side: the same workloads written as a Postage user writes them, with
``postage.twisted.GenericProducer`` and ``MessageProcessor`` and their defaults (publisher
confirms on, ``max_unconfirmed = 1000``), except ``prefetch_count = 100`` on the processors, as
on the raw side.
"""

from __future__ import annotations

from typing import Any

from common import FINGERPRINT, QUEUE_FLAGS, Countdown, Stopwatch, hup, parameters
from twisted.internet import defer
from twisted.python.failure import Failure

from postage import Exchange, MessageHandler, MessageResult, RpcHandler
from postage.twisted import GenericProducer, MessageProcessor


def bench_exchange(name: str) -> type[Exchange]:
    """An Exchange subclass for ``name``: direct, not durable, auto-delete (what ``run.py``
    and the raw side declare too)."""
    return type("BenchExchange", (Exchange,), {
        "name": name, "exchange_type": "direct", "durable": False, "auto_delete": True})


# ---- publish with confirms --------------------------------------------------------------


async def publish(n: int, exchange: str, key: str) -> tuple[float, float]:
    """``producer.message_bench(parameters)`` ``n`` times, then wait for every confirm;
    messages per second and CPU microseconds per message, first publish to last confirm.

    Each publish's Deferred gets one callback that counts it: the least a user who wants to
    know about confirms does (``gatherResults`` over 20k Deferreds would add ~6 us a message
    of Twisted's own work to the figure)."""
    producer = GenericProducer(FINGERPRINT, hup(), eks=[(bench_exchange(exchange), key)])
    try:
        await producer.ready
        done: defer.Deferred[None] = defer.Deferred()
        failures: list[Failure] = []
        left = n

        def settled(result: Any) -> None:
            nonlocal left
            if isinstance(result, Failure):
                failures.append(result)
            left -= 1
            if not left:
                done.callback(None)

        watch = Stopwatch()
        watch.start()
        for seq in range(n):
            producer.message_bench(parameters(seq)).addBoth(settled)
        await done
        watch.stop()
        if failures:
            raise RuntimeError(f"{len(failures)} publishes failed: {failures[0].value!r}")
        return watch.figures(n)
    finally:
        await producer.close()


# ---- consume ----------------------------------------------------------------------------


class BenchProcessor(MessageProcessor):
    """A trivial handler: counts the ``bench`` commands."""

    prefetch_count = 100
    countdown: Countdown

    @MessageHandler("command", "bench")
    def on_bench(self, content: Any) -> None:
        self.countdown.tick()


async def consume(n: int, queue: str) -> tuple[float, float]:
    """Consume ``n`` preloaded envelopes with a :class:`BenchProcessor`; messages per second
    and CPU microseconds per message, first delivery to last."""
    processor = BenchProcessor(FINGERPRINT, eqk=[("", [({"name": queue, "flags": QUEUE_FLAGS},
                                                       queue)])], hup=hup())
    processor.countdown = count = Countdown(n)
    await processor.start()
    try:
        await count.done
        return count.figures()
    finally:
        await processor.stop()  # the consumer goes, and the auto-delete queue with it


# ---- RPC --------------------------------------------------------------------------------


class EchoProcessor(MessageProcessor):
    """Answers ``echo`` with the call's parameters."""

    prefetch_count = 100

    @RpcHandler("command", "echo")
    def echo(self, content: Any, reply: Any) -> None:
        reply(MessageResult(content["parameters"]))


def echoed(result: Any, seq: int) -> bool:
    """Whether a result message is the successful echo of call number ``seq``."""
    return bool(result) and result.value["seq"] == seq


async def rpc(exchange: str, queue: str, driver: Any) -> Any:
    """Start an echo processor and a producer, run ``driver(call, check)``, stop both."""
    bench = bench_exchange(exchange)
    server = EchoProcessor(FINGERPRINT, eqk=[(bench, [({"name": queue, "flags": QUEUE_FLAGS},
                                                      "echo")])], hup=hup())
    await server.start()
    producer = GenericProducer(FINGERPRINT, hup(), eks=[(bench, "echo")])
    try:
        await producer.ready
        return await driver(lambda seq: producer.rpc_echo(parameters(seq)), echoed)
    finally:
        await producer.close()
        await server.stop()
