"""Postage against raw pika on ``TwistedProtocolConnection``, side by side, in one process.

    .venv/bin/python benchmarks/run.py [--quick] [--rounds N] [--only WORKLOAD ...]

Each workload runs on both sides once per round, the order of the two sides alternating from
round to round; the table shows the median of the rounds and the ratio of the medians:
Postage / raw for a throughput, raw / Postage for a latency, so that a ratio above 1 always
means Postage did better (the goal is 1.0 or more). See README.rst beside this
file.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import common
import postage_side
import raw
from common import QUEUE_FLAGS, in_flight, raw_close, raw_connect, sequential, unique
from twisted.internet import defer, task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from postage.twisted import GenericProducer

SIDES = ("raw", "postage")
PREFETCH = 100  # consume and the RPC servers, both sides
WINDOW = GenericProducer.max_unconfirmed  # unconfirmed publishes: Postage's default, raw too


@dataclass(frozen=True)
class Counts:
    publish: int
    consume: int
    rpc_sequential: int
    rpc_warmup: int
    rpc_in_flight: int
    concurrency: int = 100


FULL = Counts(publish=20_000, consume=20_000, rpc_sequential=4_000, rpc_warmup=200,
              rpc_in_flight=20_000)
QUICK = Counts(publish=4_000, consume=4_000, rpc_sequential=500, rpc_warmup=50,
               rpc_in_flight=2_000)
WARMUP = Counts(publish=1_000, consume=1_000, rpc_sequential=100, rpc_warmup=20,
                rpc_in_flight=500)

# (key, label, unit, higher is better)
ROWS = [
    ("publish", f"publish, confirms, {WINDOW} in flight", "msg/s", True),
    ("consume", f"consume, manual ack, prefetch {PREFETCH}", "msg/s", True),
    ("rpc_p50", "sequential RPC round trip, p50", "ms", False),
    ("rpc_p99", "sequential RPC round trip, p99", "ms", False),
    ("rpc_in_flight", "RPC, 100 calls in flight", "calls/s", True),
]
# process CPU per operation (both RPC ends run in this process): steadier on a busy machine
CPU_ROWS = [
    ("publish_cpu", "publish, confirms", "us/msg", False),
    ("consume_cpu", "consume", "us/msg", False),
    ("rpc_sequential_cpu", "sequential RPC, client + server", "us/call", False),
    ("rpc_in_flight_cpu", "RPC in flight, client + server", "us/call", False),
]
ALL_ROWS = ROWS + CPU_ROWS
UNITS = {key: unit for key, _label, unit, _higher in ALL_ROWS}


# ---- the workloads: each measures one side once, setting up and cleaning up around it -----


async def publish(side: str, admin: Any, counts: Counts) -> dict[str, float]:
    exchange, queue = unique("pub-x"), unique("pub-q")
    await admin.exchange_declare(exchange, "direct", durable=False, auto_delete=True)
    await admin.queue_declare(queue, **QUEUE_FLAGS)
    await admin.queue_bind(queue, exchange, routing_key="bench")
    try:
        if side == "raw":
            rate, cpu = await raw.publish(counts.publish, exchange, "bench", WINDOW)
        else:
            rate, cpu = await postage_side.publish(counts.publish, exchange, "bench")
    finally:
        await admin.queue_delete(queue)  # and the auto-delete exchange loses its last binding
    return {"publish": rate, "publish_cpu": cpu}


async def consume(side: str, admin: Any, counts: Counts) -> dict[str, float]:
    queue = unique("con-q")
    await admin.queue_declare(queue, **QUEUE_FLAGS)
    await raw.preload(queue, counts.consume)
    if side == "raw":
        rate, cpu = await raw.consume(counts.consume, queue, PREFETCH)
    else:
        rate, cpu = await postage_side.consume(counts.consume, queue)
    return {"consume": rate, "consume_cpu": cpu}


async def _rpc(side: str, driver: Any) -> Any:
    exchange, queue = unique("rpc-x"), unique("rpc-q")
    if side == "raw":
        return await raw.rpc(exchange, queue, PREFETCH, driver)
    return await postage_side.rpc(exchange, queue, driver)


async def rpc_sequential(side: str, _admin: Any, counts: Counts) -> dict[str, float]:
    async def driver(call: Any, check: Any) -> tuple[list[float], float]:
        return await sequential(call, check, counts.rpc_sequential, counts.rpc_warmup)

    latencies, cpu = await _rpc(side, driver)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"rpc_p50": cuts[49] * 1000, "rpc_p99": cuts[98] * 1000, "rpc_sequential_cpu": cpu}


async def rpc_in_flight(side: str, _admin: Any, counts: Counts) -> dict[str, float]:
    def driver(call: Any, check: Any) -> defer.Deferred[tuple[float, float]]:
        return in_flight(call, check, counts.rpc_in_flight, counts.concurrency)

    rate, cpu = await _rpc(side, driver)
    return {"rpc_in_flight": rate, "rpc_in_flight_cpu": cpu}


WORKLOADS = {
    "publish": publish,
    "consume": consume,
    "rpc_sequential": rpc_sequential,
    "rpc_in_flight": rpc_in_flight,
}


# ---- checks, report -----------------------------------------------------------------------


def check_bodies() -> int:
    """The raw side must put on the wire exactly what Postage does; returns the size of a
    command envelope."""
    from postage import JsonEncoder, MessageCommand, MessageResult, RpcCommand  # noqa: PLC0415

    encode = JsonEncoder().encode
    pairs = [
        (MessageCommand("bench", common.parameters(7)), common.command_body(7)),
        (RpcCommand("echo", common.parameters(7)), common.rpc_request_body(7)),
        (MessageResult(common.parameters(7)), common.rpc_reply_body(common.parameters(7))),
    ]
    for message, body in pairs:
        message.fingerprint = common.FINGERPRINT
        if encode(message.body) != body:
            raise SystemExit(f"raw body differs from Postage's:\n{encode(message.body)}\n{body}")
    return len(common.command_body(7).encode())


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.3f}"
    if unit.startswith("us"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def ratio(raw_value: float, postage_value: float, higher_is_better: bool) -> float:
    return postage_value / raw_value if higher_is_better else raw_value / postage_value


def table(title: str, rows: list[tuple[str, str, str, bool]],
          results: dict[str, dict[str, list[float]]]) -> None:
    print(f"{title:<36} {'unit':<8} {'raw pika':>10} {'Postage':>10} {'ratio':>6}  "
          "each round")
    print("-" * 96)
    for key, label, unit, higher in rows:
        raw_values, postage_values = results[key]["raw"], results[key]["postage"]
        if not raw_values or not postage_values:
            continue
        raw_median = statistics.median(raw_values)
        postage_median = statistics.median(postage_values)
        rounds = " ".join(f"{ratio(r, p, higher):.2f}" for r, p in zip(raw_values, postage_values))
        print(f"{label:<36} {unit:<8} {fmt(raw_median, unit):>10} {fmt(postage_median, unit):>10} "
              f"{ratio(raw_median, postage_median, higher):>6.2f}  {rounds}")


def report(results: dict[str, dict[str, list[float]]]) -> None:
    print()
    table("workload", ROWS, results)
    print()
    table("process CPU per operation", CPU_ROWS, results)
    print()
    print("raw pika and Postage: medians of the rounds; ratio: of those medians; each round: "
          "the ratio\nin each round (the two sides run back to back). ratio = Postage/raw for "
          "throughput\n(msg/s, calls/s), raw/Postage for latency (ms) and CPU time (us per "
          "operation):\nabove 1 means Postage did better. The goal is 1.0 or more.")


# ---- main -----------------------------------------------------------------------------------


async def run_round(admin: Any, counts: Counts, workloads: list[str], sides: tuple[str, ...],
                    results: dict[str, dict[str, list[float]]] | None, label: str) -> None:
    for name in workloads:
        for side in sides:
            gc.collect()
            figures = await WORKLOADS[name](side, admin, counts)
            shown = "  ".join(f"{key} {fmt(value, UNITS[key])} {UNITS[key]}"
                              for key, value in figures.items())
            print(f"{label:<10} {name:<15} {side:<8} {shown}", flush=True)
            if results is not None:
                for key, value in figures.items():
                    results[key][side].append(value)


async def main(args: argparse.Namespace) -> None:
    counts = QUICK if args.quick else FULL
    size = check_bodies()
    import pika  # noqa: PLC0415
    import twisted  # noqa: PLC0415

    protocol = await raw_connect()
    version = protocol._impl.server_properties.get("version", "?")
    print(f"Python {platform.python_version()}, pika {pika.__version__}, Twisted "
          f"{twisted.__version__}, RabbitMQ {version} at {common.HOST}:{common.PORT}")
    print(f"{args.rounds} rounds, {'quick' if args.quick else 'full'} counts: {counts}; "
          f"command envelope {size} bytes")
    admin = await protocol.channel()
    results: dict[str, dict[str, list[float]]] = {key: {side: [] for side in SIDES}
                                                  for key, _l, _u, _h in ALL_ROWS}
    try:
        if not args.quick:
            await run_round(admin, WARMUP, args.only, SIDES, None, "warm-up")
        for number in range(args.rounds):
            sides = SIDES if number % 2 == 0 else SIDES[::-1]
            await run_round(admin, counts, args.only, sides, results,
                            f"round {number + 1}")
    finally:
        await raw_close(protocol)
    report(results)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller counts, no warm-up round: the whole run in ~30 s")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS),
                        metavar="WORKLOAD", help=f"run only these of {', '.join(WORKLOADS)}")
    return parser.parse_args(argv)


def start_logging() -> None:
    """Show Postage's and Twisted's warnings and errors (e.g. an unhandled error in a
    Deferred) on stderr; nothing else."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    # pika's main branch deprecates its Twisted adapter: not news for a benchmark of it
    warnings.filterwarnings("ignore", message="TwistedProtocolConnection is deprecated",
                            category=DeprecationWarning)
    start_logging()
    task.react(lambda _reactor: defer.ensureDeferred(main(arguments)))
