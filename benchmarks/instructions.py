"""Instructions per message, Postage against raw pika, counted by valgrind's callgrind.

    .venv/bin/python benchmarks/instructions.py [--only WORKLOAD ...] [--count N]

Wall-clock ratios swing on a shared machine; the number of instructions the client process
executes for the same work does not (callgrind counts them, deterministic for the same
inputs up to the few reactor iterations that timing changes). Each workload runs under
callgrind twice per side, with ``N`` and ``2N`` messages; the difference divided by ``N`` is
the cost of one message with the start-up (imports, connections) taken out. RPC figures cover
client and server, both in the process, as in ``run.py``. Queues for ``consume`` are filled
by a separate, uncounted process.

The same file is the measured program: ``instructions.py --run SIDE WORKLOAD N [QUEUE]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("publish", "consume", "rpc_sequential", "rpc_in_flight")
UNITS = {"publish": "msg", "consume": "msg", "rpc_sequential": "call", "rpc_in_flight": "call"}
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


# ---- the measured program -----------------------------------------------------------------

async def _run(side: str, workload: str, count: int, queue: str | None) -> None:
    import common  # noqa: PLC0415
    import postage_side  # noqa: PLC0415
    import raw  # noqa: PLC0415
    import run  # noqa: PLC0415

    if workload == "consume":
        if side == "raw":
            await raw.consume(count, queue, run.PREFETCH)
        else:
            await postage_side.consume(count, queue)
        return
    protocol = await common.raw_connect()
    admin = await protocol.channel()
    try:
        counts = run.Counts(publish=count, consume=count, rpc_sequential=count,
                            rpc_warmup=20, rpc_in_flight=count)
        await run.WORKLOADS[workload](side, admin, counts)
    finally:
        await common.raw_close(protocol)


async def _preload(queue: str, count: int) -> None:
    import common  # noqa: PLC0415
    import raw  # noqa: PLC0415

    protocol = await common.raw_connect()
    admin = await protocol.channel()
    try:
        await admin.queue_declare(queue, **common.QUEUE_FLAGS)
    finally:
        await common.raw_close(protocol)
    await raw.preload(queue, count)


def measured(argv: list[str]) -> None:
    from twisted.internet import defer, task  # noqa: PLC0415

    warnings.filterwarnings("ignore", message="TwistedProtocolConnection is deprecated",
                            category=DeprecationWarning)
    if argv[0] == "--preload":
        queue, count = argv[1], int(argv[2])
        task.react(lambda _r: defer.ensureDeferred(_preload(queue, count)))
    side, workload, count = argv[0], argv[1], int(argv[2])
    queue = argv[3] if len(argv) > 3 else None
    task.react(lambda _r: defer.ensureDeferred(_run(side, workload, count, queue)))


# ---- the driver ---------------------------------------------------------------------------

def count_instructions(side: str, workload: str, count: int) -> int:
    """Instructions callgrind counted for one run of the workload."""
    args = [side, workload, str(count)]
    if workload == "consume":
        queue = f"postage-bench.callgrind.{os.getpid()}.{side}.{count}"
        subprocess.run([sys.executable, __file__, "--run", "--preload", queue,
                        str(count + 200)], check=True, cwd=HERE)
        args.append(queue)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
             sys.executable, __file__, "--run", *args],
            capture_output=True, text=True, cwd=HERE)
    match = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(match.group(1))


def per_message(side: str, workload: str, count: int) -> float:
    once, twice = (count_instructions(side, workload, n) for n in (count, 2 * count))
    return (twice - once) / count


def main(args: argparse.Namespace) -> None:
    print(f"instructions per {' / '.join(sorted(set(UNITS.values())))} of the client process "
          f"(callgrind; runs of N and 2N, N={args.count}; RPC: client and server)")
    print(f"{'workload':<16} {'raw pika':>12} {'Postage':>12} {'ratio':>7}")
    for workload in args.only:
        raw_cost = per_message("raw", workload, args.count)
        postage_cost = per_message("postage", workload, args.count)
        print(f"{workload:<16} {raw_cost:>12,.0f} {postage_cost:>12,.0f} "
              f"{raw_cost / postage_cost:>7.2f}", flush=True)
    print("ratio = raw / Postage: above 1 means Postage executes fewer instructions.")


def parse_args(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS),
                        metavar="WORKLOAD")
    parser.add_argument("--count", type=int, default=1000,
                        help="N: messages or calls of the smaller run (default 1000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        sys.path.insert(0, HERE)
        measured(sys.argv[2:])
    else:
        main(parse_args(sys.argv[1:]))
