"""Fixtures for the blocking facade's tests (``postage.messaging``), run in a pytest process of
their own without pytest-twisted: ``python -m pytest tests -m blocking -p no:twisted``. The
facade starts its reactor in a daemon thread on first use; nothing here touches a reactor.

- ``names``: unique exchange / queue / component names for one test (a uuid in each), under
  ``postage-test.blocking.``; what they name is deleted when the test ends;
- ``admin``: ``brokertools.Admin``, the test's own eyes on the broker, on pika's
  ``BlockingConnection``;
- ``make``: makes facade producers and processors, closes / stops them all at the end;
- ``run_script(source, timeout)``: runs a Python script in a fresh interpreter from the
  repository root (for what could hang, or needs a process of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brokertools import GUEST, Admin, Names, assert_nothing_left

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "postage-test.blocking."


@pytest.fixture
def admin() -> Any:
    with Admin(f"{PREFIX}admin") as client:
        yield client


@pytest.fixture
def names(request: Any, admin: Admin) -> Any:
    made = Names(PREFIX, request.node.name)
    yield made
    made.delete(admin)


class Make:
    """Makes facade components for one test; closes / stops them all at the end."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._closers: list[Callable[[], Any]] = []

    def producer(self, cls: Any = None, label: str = "producer", **kwds: Any) -> Any:
        from postage import messaging  # noqa: PLC0415

        kwds.setdefault("fingerprint", messaging.Fingerprint(self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        producer = (cls or messaging.GenericProducer)(**kwds)
        self._closers.append(producer.close)
        return producer

    def processor(self, cls: Any, label: str = "processor", start: bool = True,
                  **kwds: Any) -> Any:
        """Make (and by default start) a facade processor."""
        from postage import messaging  # noqa: PLC0415

        kwds.setdefault("fingerprint", messaging.Fingerprint(self.names.component(label)))
        kwds.setdefault("hup", GUEST)
        processor = cls(**kwds)
        self._closers.append(processor.stop)
        if start:
            processor.start()
        return processor

    def close_all(self) -> None:
        for closer in reversed(self._closers):
            closer()


@pytest.fixture
def make(names: Names) -> Any:
    made = Make(names)
    yield made
    made.close_all()


@pytest.fixture
def run_script(tmp_path: Path) -> Any:
    """Run ``source`` (dedented) as a script in a fresh interpreter, cwd = the repository
    root; ``env`` adds variables. Returns the CompletedProcess (text)."""

    def run(source: str, timeout: float = 30, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / f"script_{uuid.uuid4().hex[:6]}.py"
        script.write_text(textwrap.dedent(source))
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("POSTAGE_")}
        child_env["PYTHONPATH"] = str(ROOT)
        child_env.update(env or {})
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=child_env,
                              stdin=subprocess.DEVNULL)

    return run


@pytest.fixture(scope="session", autouse=True)
def blocking_leave_nothing_behind() -> Any:
    """After the run, no queue or exchange named by these tests is left on the broker."""
    yield
    assert_nothing_left(PREFIX)
