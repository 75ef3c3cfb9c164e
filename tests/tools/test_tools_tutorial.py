"""The tutorial (docs/tutorial.rst), run as a reader would: every ``$`` command of the page,
in an empty folder holding the files of ``docs/tutorial/``, against the real broker; what
each prints is compared with what the page shows.

Two things differ from a reader's run, on purpose: the set-up commands (make a folder and a
venv, pip install) are this suite's own (a fresh temporary folder, this suite's venv), and
the exchange and queue names get a unique prefix (``"tutorial`` becomes
``"postage-test.tools.<id>.tutorial``) so that runs at the same time on one broker cannot
stop each other's greeter.
"""

from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from brokertools import run_prefix
from doctools import code_blocks, normalized, transcript

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorial.rst"
FILES = ROOT / "docs" / "tutorial"
BIN = Path(sys.executable).parent
PREFIX = "postage-test.tools."

# What the suite does itself instead (see the module docstring).
SET_UP = {
    "mkdir hello-postage",
    "cd hello-postage",
    "python3 -m venv .venv",
    ". .venv/bin/activate",
    "pip install /path/to/postage",
    "pip install pytest",
}
PROGRAMS = {"python": sys.executable, "postage": str(BIN / "postage")}


def reader_env() -> dict[str, str]:
    """A reader's shell: the venv first on PATH, no Postage settings, nothing on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTAGE_", "PYTEST_")) and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "80"
    return env


def started_or_gone(child: subprocess.Popen[bytes], log: Path) -> bool:
    return b"consuming: Greeter" in log.read_bytes() or child.poll() is not None


def end(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL of the child's whole process group (nothing outlives the test)."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if child.poll() is None:
        child.wait(timeout=10)


def test_every_command_of_the_tutorial_prints_what_the_page_shows(tmp_path, admin, tk):
    text = PAGE.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    steps = [step for block in blocks if block.language == "console"
             for step in transcript(block)]
    greeter_says = [line for block in blocks if block.options.get("name", "").startswith(
        "greeter-output") for line in block.lines]
    assert steps and greeter_says, "the tutorial page lost its console or output blocks"

    exchange = f"{run_prefix(PREFIX)}{uuid.uuid4().hex[:10]}.tutorial"
    folder = tmp_path / "hello-postage"
    folder.mkdir()
    for source in sorted(FILES.glob("*.py")):
        (folder / source.name).write_text(
            source.read_text(encoding="utf-8").replace('"tutorial', f'"{exchange}'))
    assert exchange in (folder / "greeter.py").read_text(), "greeter.py names no exchange"

    env = reader_env()
    log = tmp_path / "greeter.out"
    greeter: subprocess.Popen[bytes] | None = None
    try:
        for command, expected in steps:
            if command in SET_UP:
                continue
            argv = [exchange if arg == "tutorial" else arg for arg in shlex.split(command)]
            assert argv[0] in PROGRAMS, f"the suite does not know how to run {command!r}"
            argv[0] = PROGRAMS[argv[0]]
            if argv[1:2] == ["run"]:  # the component: in its own terminal, in the background
                with open(log, "wb") as sink:
                    greeter = subprocess.Popen(argv, cwd=folder, env=env, stdout=sink,
                                               stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL,
                                               start_new_session=True)
                tk.wait_for(functools.partial(started_or_gone, greeter, log), 20,
                            what="the greeter to start")
                assert greeter.poll() is None, log.read_text()
                continue
            done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=60)
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
            assert normalized(done.stdout.splitlines()) == normalized(expected), command

        assert greeter is not None, "the tutorial never starts its component"
        # the last step is `postage send tutorial greeter quit`: the greeter exits 0
        assert greeter.wait(timeout=20) == 0, log.read_text()
        printed = log.read_text().splitlines()
        for line in greeter_says:
            assert line in printed, f"the greeter did not print {line!r}:\n{log.read_text()}"
    finally:
        if greeter is not None:
            end(greeter)
        admin.delete_queue(f"{exchange}.greeter")
        admin.delete_exchange(exchange)


def test_the_twisted_example_of_the_testing_guide_passes():
    """docs/howto/testing.rst includes docs/howto/test_twisted_component.py: run it as the
    guide says (pytest with pytest-twisted), from the checkout."""
    example = ROOT / "docs" / "howto" / "test_twisted_component.py"
    env = reader_env()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(example)], cwd=ROOT, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert normalized(done.stdout.splitlines())[-1] == "2 passed in Ns", done.stdout
