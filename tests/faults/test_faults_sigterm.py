"""SIGTERM to a component run by ``postage run`` (a child process, its URL pointing at the
proxy) in the middle of a stream: each message is handled once or is still queued, never
both and never neither; and when the path to the broker has gone silent, the stop still ends
within ``stop_timeout`` plus a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

pytestmark = pytest.mark.faults

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POSTAGE = str(Path(sys.executable).parent / "postage")
MESSAGES = 2000  # about 4 s of work (20 ms each, 10 at a time): SIGTERM falls mid-stream
STOP_TIMEOUT = 3.0
FEW_SECONDS = 10.0  # what a stop may take beyond stop_timeout (closing, exiting)


class Component:
    """``postage run faults_component:Recorder`` as a child process of the test."""

    def __init__(self, tmp_path: Path, queue: str, name: str, url: str,
                 work: float = 0.02) -> None:
        self.record = tmp_path / "handled.txt"
        self.record.touch()
        self.output = tmp_path / "component.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTAGE_")}
        env.update(PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), PYTHONUNBUFFERED="1",
                   POSTAGE_FAULTS_QUEUE=queue, POSTAGE_FAULTS_RECORD=str(self.record),
                   POSTAGE_FAULTS_STOP_TIMEOUT=str(STOP_TIMEOUT), POSTAGE_FAULTS_WORK=str(work))
        with open(self.output, "wb") as sink:
            self.child = subprocess.Popen(
                [POSTAGE, "run", "faults_component:Recorder", "--name", name, "--url", url],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                env=env, start_new_session=True)

    def handled(self) -> list[int]:
        return [int(line) for line in self.record.read_text().split()]

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.child.poll() is None:
            self.child.wait(timeout=10)


@pytest.fixture
def component(tmp_path: Path) -> Any:
    made: list[Component] = []

    def start(*args: Any, **kwds: Any) -> Component:
        made.append(Component(tmp_path, *args, **kwds))
        return made[-1]

    yield start
    for each in made:
        each.kill()


async def _fill(components: Any, queue: str, tools: Any) -> None:
    filler = components.producer(label="filler")
    await tools.within(defer.gatherResults(
        [filler.message_item({"n": n}, _key=queue) for n in range(MESSAGES)]), 60)
    await filler.close()


async def _terminate(child: Component, tools: Any, bound: float) -> float | None:
    """SIGTERM, then the seconds until the process exited; None when it was still running
    ``bound`` + 5 s later (it is killed then)."""
    started = time.monotonic()
    child.child.send_signal(signal.SIGTERM)
    try:
        await tools.wait_for(lambda: child.child.poll() is not None, bound + 5,
                             what="the component to exit after SIGTERM")
    except AssertionError:
        child.kill()
        return None
    return time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_sigterm_mid_stream_leaves_each_message_handled_once_or_queued(
        components, component, names, broker, proxy, tools, figures):
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    await _fill(components, queue, tools)
    child = component(queue, names.component("recorder"), proxy.url())
    await tools.wait_for(lambda: len(child.handled()) >= 100, 60,
                         what="the component to handle some messages")
    seconds = await _terminate(child, tools, STOP_TIMEOUT + FEW_SECONDS)
    handled = Counter(child.handled())
    await tools.wait_for(lambda: broker.consumer_count(queue) == 0, 30, what="no consumer")
    queued = Counter(tools.parameters(body)["n"] for _, body in await tools.drain(queue))
    both = set(handled) & set(queued)
    neither = set(range(MESSAGES)) - set(handled) - set(queued)
    twice = [n for n, count in handled.items() if count > 1]
    figures.add("link up", published=MESSAGES, handled=len(handled), still_queued=len(queued),
                both=len(both), neither=len(neither), handled_twice=len(twice),
                stop_seconds=seconds if seconds is not None else "(killed)")
    assert seconds is not None, f"still running after SIGTERM:\n{child.text()[-3000:]}"
    assert child.child.returncode == 0, child.text()[-3000:]
    assert 0 < len(handled) < MESSAGES, "SIGTERM did not fall mid-stream"
    assert not both, f"handled and still queued: {sorted(both)[:10]}"
    assert not neither, f"neither handled nor queued (lost): {sorted(neither)[:10]}"
    assert not twice and not [n for n, count in queued.items() if count > 1]
    assert seconds <= STOP_TIMEOUT + FEW_SECONDS


@pytest_twisted.ensureDeferred
async def test_sigterm_with_handlers_outlasting_stop_timeout_ends_in_time_and_requeues(
        components, component, names, broker, proxy, tools, figures):
    """Handlers that would run for a minute: SIGTERM ends the process after stop_timeout,
    and their messages are delivered again (still queued), not lost."""
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    await _fill(components, queue, tools)
    child = component(queue, names.component("recorder"), proxy.url(), work=60.0)
    await tools.wait_for(lambda: broker.consumer_count(queue) == 1
                         and broker.message_count(queue) < MESSAGES, 60,
                         what="the component to take its first messages")
    bound = STOP_TIMEOUT + FEW_SECONDS
    seconds = await _terminate(child, tools, bound)
    await tools.wait_for(lambda: broker.consumer_count(queue) == 0, 30, what="no consumer")
    queued = Counter(tools.parameters(body)["n"] for _, body in await tools.drain(queue))
    figures.add("handlers outlast stop_timeout", published=MESSAGES,
                handled=len(child.handled()), still_queued=len(queued),
                stop_seconds=seconds if seconds is not None else f">{bound + 5:.0f} (killed)",
                bound_seconds=bound)
    assert seconds is not None, f"still running after SIGTERM:\n{child.text()[-3000:]}"
    assert STOP_TIMEOUT <= seconds <= bound
    assert not child.handled() and set(queued) == set(range(MESSAGES))


@pytest_twisted.ensureDeferred
async def test_sigterm_while_the_broker_path_is_silent_ends_within_stop_timeout(
        components, component, names, broker, proxy, tools, figures):
    queue = names.queue("stream")
    broker.declare_queue(queue, durable=True)
    await _fill(components, queue, tools)
    child = component(queue, names.component("recorder"), proxy.url())
    await tools.wait_for(lambda: len(child.handled()) >= 100, 60,
                         what="the component to handle some messages")
    proxy.pause()  # half-open: nothing reaches the broker, nothing comes back
    bound = STOP_TIMEOUT + FEW_SECONDS
    try:
        seconds = await _terminate(child, tools, bound)
    finally:
        proxy.cut("rst")  # the broker then requeues what the component had not acked
    handled = set(child.handled())
    await tools.wait_for(lambda: broker.consumer_count(queue) == 0, 30, what="no consumer")
    queued = {tools.parameters(body)["n"] for _, body in await tools.drain(queue)}
    neither = set(range(MESSAGES)) - handled - queued
    figures.add("link silent", published=MESSAGES, handled=len(handled),
                still_queued=len(queued), neither=len(neither),
                stop_seconds=seconds if seconds is not None else f">{bound + 5:.0f} (killed)",
                bound_seconds=bound)
    # acks sent into a silent link are lost, so "both" is allowed here (at least once)
    assert not neither, f"neither handled nor queued (lost): {sorted(neither)[:10]}"
    assert seconds is not None, f"still running after SIGTERM:\n{child.text()[-3000:]}"
    assert seconds <= bound, f"SIGTERM took {seconds:.1f}s (bound {bound:.1f}s)"
