"""Memory stays flat over 100 000 messages (confirmed publishes, consumed by a processor,
with RPC calls in between), measured in a process of its own (``memory_soak.py``).

The sharp measure is ``sys.getallocatedblocks()`` after ``gc.collect()``: anything kept per
message (a dict entry, a Deferred) adds at least one block per message, 90 000 between the
first sample and the last; RSS is reported too, with a generous bound (the allocator keeps
arenas, so it moves by some megabytes without any leak)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

SOAK = Path(__file__).resolve().parent / "memory_soak.py"
MESSAGES = 100_000
MAX_BLOCKS_GROWTH = 10_000  # a leak of one block per message would be 90 000
MAX_RSS_GROWTH_KB = 30 * 1024


def soak(names, *flags: str) -> tuple[dict, float]:
    queue, rpc_queue = names.queue("soak"), names.queue("rpc")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(SOAK), queue, rpc_queue, str(MESSAGES), *flags],
                          capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def _growth(result: dict) -> tuple[int, int]:
    first, last = result["samples"][0], result["samples"][-1]
    return last["blocks"] - first["blocks"], last["rss_kb"] - first["rss_kb"]


def test_memory_stays_flat_over_100000_messages_and_rpc(names, figures):
    result, seconds = soak(names)
    blocks, rss = _growth(result)
    figures.add("publish + consume + rpc", messages=result["consumed"],
                rpc_calls=len(result["samples"]) * 100,
                rss_kb_after_warm_up=result["samples"][0]["rss_kb"], rss_growth_kb=rss,
                allocated_blocks_growth=blocks, seconds=seconds)
    assert result["consumed"] == MESSAGES
    assert blocks <= MAX_BLOCKS_GROWTH, result["samples"]
    assert rss <= MAX_RSS_GROWTH_KB, result["samples"]


def test_memory_stays_flat_over_100000_mandatory_messages(names, figures):
    result, seconds = soak(names, "--mandatory")
    blocks, rss = _growth(result)
    figures.add("mandatory publish + consume + rpc", messages=result["consumed"],
                rss_growth_kb=rss, allocated_blocks_growth=blocks, seconds=seconds)
    assert result["consumed"] == MESSAGES
    assert blocks <= MAX_BLOCKS_GROWTH, result["samples"]
    assert rss <= MAX_RSS_GROWTH_KB, result["samples"]
