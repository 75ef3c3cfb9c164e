"""Throughput of a CPU-bound handler with ``postage run --workers N``, for N = 1 and 2.

    .venv/bin/python benchmarks/workers.py [--messages 2000] [--work-ms 2] [--workers 1 2]

Each handler burns about ``--work-ms`` of pure-Python CPU (calibrated here first). For each N,
``postage run workers:CpuBound --workers N`` is started (the supervisor and N workers, or one
process for N = 1), the messages are published once every worker answers ``describe``, and
the time runs from the first publish until the workers' ``handled`` counters (read with
``describe``) add up to the number sent. Run it once: the machine is shared, and one run says
what two cores give. Everything it declares is unique and deleted afterwards.

This module is also the component: ``CpuBound`` reads its queue and exchange names from the
environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from postage import Exchange, MessageHandler, fleet, messaging
from postage.twisted import MessageProcessor

EXCHANGE = os.environ.get("BENCH_EXCHANGE", "postage-bench.workers.x")
QUEUE = os.environ.get("BENCH_QUEUE", "postage-bench.workers.q")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1000"))
HERE = Path(__file__).resolve().parent
POSTAGE = str(Path(sys.executable).parent / "postage")


def burn(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


class BenchExchange(Exchange):
    name = EXCHANGE
    exchange_type = "direct"
    durable = False
    auto_delete = True


class CpuBound(MessageProcessor):
    eqk = [(BenchExchange, [({"name": QUEUE, "flags": {"auto_delete": True}}, "work")])]
    prefetch_count = 20

    @MessageHandler("command", "work")
    def work(self, content):
        burn(ROUNDS)


def calibrate(work_ms: float) -> int:
    rounds = 10_000
    started = time.process_time()
    burn(rounds)
    per_round = (time.process_time() - started) / rounds
    return max(int(work_ms / 1000 / per_round), 1)


def parallelism(rounds: int) -> float:
    """How many cores two processes get right now: 1 burn alone vs 2 at once (about 2.0 on
    an idle 2-core machine, about 1.0 when one core is taken by others)."""
    import multiprocessing  # noqa: PLC0415

    started = time.perf_counter()
    burn(rounds)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        pool.map(burn, [rounds, rounds])
    return 2 * alone / (time.perf_counter() - started)


def handled(producer: messaging.GenericProducer, name: str) -> tuple[int, int]:
    """(sum of the workers' handled counters, how many workers answered)."""
    queue = producer.call(fleet.DESCRIBE, {}, _queue_only=True,
                          _eks=[(fleet.ControlExchange, fleet.key_for(name))])
    results = producer.consume_rpc(queue, 1 << 30, timeout=0.3)
    values = [r.value for r in results if r and isinstance(r.value, dict)]
    return sum(v["counters"]["handled"] for v in values), len(values)


def measure(workers: int, messages: int, rounds: int) -> float:
    uid = uuid.uuid4().hex[:8]
    name = f"postage-bench.{os.getpid()}.{uid}.cpu"
    env = {**os.environ, "BENCH_EXCHANGE": f"postage-bench.{uid}.x",
           "BENCH_QUEUE": f"postage-bench.{uid}.q", "BENCH_ROUNDS": str(rounds),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([POSTAGE, "run", "workers:CpuBound", "--name", name,
                              "--workers", str(workers), "--log-level", "warn"],
                             env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    exchange = type("X", (Exchange,), {"name": env["BENCH_EXCHANGE"], "exchange_type": "direct",
                                       "durable": False, "auto_delete": True})
    producer = messaging.GenericProducer(eks=[(exchange, "work")], max_unconfirmed=1000)
    try:
        deadline = time.monotonic() + 60
        while handled(producer, name)[1] < workers:
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit("the workers did not start")
        started = time.perf_counter()
        for _ in range(messages):
            producer.message_work()
        done = 0
        while done < messages:
            time.sleep(0.1)
            done, _ = handled(producer, name)
        return messages / (time.perf_counter() - started)
    finally:
        producer.close()
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--work-ms", type=float, default=2.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rounds = calibrate(args.work_ms)
    sys.stdout.write(f"{args.messages} messages, ~{args.work_ms} ms of CPU each "
                     f"({rounds} rounds), {os.cpu_count()} cores\n")
    sys.stdout.write(f"cores available to two processes now: {parallelism(rounds * 300):.2f}\n")
    figures = {}
    for workers in args.workers:
        figures[workers] = measure(workers, args.messages, rounds)
        sys.stdout.write(f"--workers {workers}: {figures[workers]:8.0f} msg/s"
                         f"  ({figures[workers] / figures[args.workers[0]]:.2f}x)\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
