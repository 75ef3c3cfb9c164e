"""Fixtures for the tools tests: the ``postage`` command, the twistd plugin and the examples,
each run as a subprocess against the real RabbitMQ on 127.0.0.1:5672.

The tests here are plain synchronous tests: they only spawn processes and look at the broker
with pika's ``BlockingConnection`` (no reactor in this process is used, so they run in the
pytest-twisted process as well as anywhere else).

- ``run_tool(*argv, timeout=...)``: run a command to completion (``subprocess.run``);
- ``spawn(*argv, env=...)``: start a long-running process; killed at the end of the test if
  it is still running;
- ``admin``: ``brokertools.Admin``, the test's own eyes on the broker (declare, count, get,
  delete);
- ``slow_names``: unique exchange / queue / log file names for ``slow_component`` (under
  ``postage-test.tools.``), passed to the component through the environment; what they name
  is deleted afterwards;
- ``wait_for(predicate, timeout)``: poll until true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brokertools import Admin, assert_nothing_left, run_prefix

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
POSTAGE = str(BIN / "postage")
TWISTD = str(BIN / "twistd")
PYTHON = sys.executable
PREFIX = "postage-test.tools."


def tool_env(**extra: str) -> dict[str, str]:
    """The environment of a child: the broker settings cleared (defaults: guest on
    localhost:5672), ``tests/tools`` on the path for ``slow_component``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTAGE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def admin() -> Any:
    with Admin(f"{PREFIX}admin") as client:
        yield client


def kill_group(child: subprocess.Popen[Any]) -> None:
    """Kill what is left of a child's process group (it ran in a session of its own), so
    that nothing it started outlives the test, even when the test fails."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def run_tool() -> Any:
    """Run a command to completion; whatever it started is killed afterwards."""

    def run(*argv: str, timeout: float = 30, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT, env=env or tool_env(),
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = child.communicate(timeout=timeout)
        finally:
            kill_group(child)
            if child.poll() is None:
                child.wait(timeout=10)
        return subprocess.CompletedProcess(list(argv), child.returncode, out, err)

    return run


class Spawned:
    """Long-running children of one test, each read to a file (no pipe can fill up)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = self.tmp_path / f"child-{len(self.children)}.out"
        with open(out, "wb") as sink:
            child = subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env or tool_env(),
                                     start_new_session=True)
        child.output_path = out  # type: ignore[attr-defined]
        self.children.append((child, out))
        return child

    @staticmethod
    def output(child: subprocess.Popen[bytes]) -> str:
        return child.output_path.read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for child, _out in self.children:
            stop(child)


def stop(child: subprocess.Popen[Any]) -> None:
    """SIGTERM (a clean stop), SIGKILL after 10 s; then its whole process group."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
    kill_group(child)


@pytest.fixture
def spawn(tmp_path: Path) -> Any:
    spawned = Spawned(tmp_path)
    yield spawned
    spawned.stop_all()


class SlowNames:
    """Unique names for one ``slow_component`` run, and the environment that carries them."""

    def __init__(self, tmp_path: Path) -> None:
        uid = uuid.uuid4().hex[:10]
        self.exchange = f"{run_prefix(PREFIX)}{uid}.x"
        self.queue = f"{run_prefix(PREFIX)}{uid}.q"
        self.log = tmp_path / "handler.log"
        self.log.touch()

    def env(self) -> dict[str, str]:
        return tool_env(POSTAGE_TEST_EXCHANGE=self.exchange, POSTAGE_TEST_QUEUE=self.queue,
                        POSTAGE_TEST_LOG=str(self.log))

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def slow_names(tmp_path: Path, admin: Admin) -> Any:
    names = SlowNames(tmp_path)
    yield names
    admin.delete_queue(names.queue)
    admin.delete_queue(f"{names.queue}.relay")  # slow_component.RelayProcessor's
    admin.delete_exchange(names.exchange)


def wait_for_output(child: subprocess.Popen[bytes], text: str, timeout: float = 15) -> None:
    """Wait until a spawned child printed ``text`` (fails early if it exited)."""

    def printed() -> bool:
        if text in Spawned.output(child):
            return True
        if child.poll() is not None:
            raise AssertionError(f"the process exited ({child.returncode}) before printing "
                                 f"{text!r}:\n{Spawned.output(child)}")
        return False

    wait_for(printed, timeout, what=repr(text))


@pytest.fixture(scope="session", autouse=True)
def tools_leave_nothing_behind() -> Any:
    """After the run, no queue or exchange named by these tests is left on the broker."""
    yield
    assert_nothing_left(PREFIX)


@pytest.fixture(scope="session")
def tk() -> Any:
    """The helpers above, for the test modules (they do not import conftest)."""
    import types  # noqa: PLC0415

    return types.SimpleNamespace(
        ROOT=ROOT, POSTAGE=POSTAGE, TWISTD=TWISTD, PYTHON=PYTHON, env=tool_env,
        wait_for=wait_for, wait_for_output=wait_for_output, output=Spawned.output)


# The examples use fixed names (they are meant to be run by hand); what they leave is deleted.
EXAMPLE_QUEUES = ("postage-examples-echo", "ping-listener")
EXAMPLE_EXCHANGES = ("postage-examples", "ping-exchange")


@pytest.fixture(scope="module")
def example_names() -> Any:
    """Deletes what the examples declare once the module's tests are done."""
    yield
    with Admin(f"{PREFIX}admin") as client:
        for queue in EXAMPLE_QUEUES:
            client.delete_queue(queue)
        for exchange in EXAMPLE_EXCHANGES:
            client.delete_exchange(exchange)


@pytest.fixture(scope="module")
def echo_component(tmp_path_factory: Any, example_names: Any) -> Any:
    """``postage run examples.rpc_echo:EchoProcessor``, consuming; stopped (SIGTERM) at the
    end of the module."""
    out = tmp_path_factory.mktemp("echo") / "component.out"
    with open(out, "wb") as sink:
        child = subprocess.Popen(
            [POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--name",
             f"{PREFIX}echo"], stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=ROOT, env=tool_env(), start_new_session=True)
    child.output_path = out  # type: ignore[attr-defined]
    try:
        wait_for_output(child, "consuming: EchoProcessor")
        yield child
    finally:
        stop(child)
