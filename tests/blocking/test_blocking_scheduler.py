"""``MicroScheduler().run()`` and the 3.0.3 loop ``for _ in scheduler.main(): pass`` running a
facade processor in the main thread of a script, until ``quit`` (or Ctrl-C). Each runs in a
fresh interpreter under a timeout, so a scheduler that does not end cannot hang the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys, threading, time
from postage import messaging

class TestExchange(messaging.Exchange):
    name = os.environ["TEST_EXCHANGE"]
    exchange_type = "direct"
    durable = False
    auto_delete = True

class Component(messaging.MessageProcessor):
    eqk = [(TestExchange, [({"name": os.environ["TEST_QUEUE"], "flags": {"auto_delete": True}},
                            "k")])]

    @messaging.RpcHandler("command", "ping")
    def ping(self, content, reply_func):
        reply_func(messaging.MessageResult("pong"))

    @messaging.MessageHandler("command", "quit")
    def goodbye(self, content):
        print("quit received", flush=True)

def client(send_quit):
    producer = messaging.GenericProducer(eks=[(TestExchange, "k")])
    while not producer.rpc_ping(_timeout=1, _max_retry=0):  # until it is consuming
        time.sleep(0.05)
    print("ping answered", flush=True)
    if send_quit:
        producer.message_quit()
    producer.close()

component = Component(messaging.Fingerprint("scheduler-test"))
if os.environ.get("START_FIRST") == "1":
    component.start()  # consuming before the scheduler runs it (and starts it again)
scheduler = messaging.MicroScheduler()
scheduler.add_microthread(component)
threading.Thread(target=client, args=(os.environ["SEND_QUIT"] == "1",), daemon=True).start()
if os.environ["MODE"] == "run":
    scheduler.run()
else:
    for _ in scheduler.main():
        pass
print("scheduler returned; processor stopped:", component.wait(5), flush=True)
"""


def script_env(names, mode, send_quit):
    return {"TEST_EXCHANGE": names.exchange(), "TEST_QUEUE": names.queue(), "MODE": mode,
            "SEND_QUIT": "1" if send_quit else "0"}


@pytest.mark.parametrize("mode", ["run", "main-loop"])
def test_scheduler_in_main_thread_ends_on_quit_sent_from_another_thread(mode, names,
                                                                        run_script):
    done = run_script(SCRIPT, timeout=30, env=script_env(names, mode, send_quit=True))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "ping answered",
        "quit received",
        "scheduler returned; processor stopped: True",
    ]
    assert "Unhandled error" not in done.stderr


def test_processor_started_before_run_is_started_once_and_stops_cleanly(names, run_script):
    env = {**script_env(names, "run", send_quit=True), "START_FIRST": "1"}
    done = run_script(SCRIPT, timeout=30, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "scheduler returned; processor stopped: True"
    assert "Unhandled error" not in done.stderr
    assert "Traceback" not in done.stderr


def test_run_returns_on_ctrl_c_and_stops_the_processor(names, tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTAGE_")}
    env.update(script_env(names, "run", send_quit=False), PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                             stdin=subprocess.DEVNULL)
    try:
        first = read_line(child, timeout=20)
        assert first == "ping answered\n"

        child.send_signal(signal.SIGINT)

        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, out + err
    assert out == "scheduler returned; processor stopped: True\n"
    assert "Traceback" not in err


def read_line(child, timeout):
    """The child's next stdout line, or fail after ``timeout`` seconds."""
    lines = []
    reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines, f"no output within {timeout}s"
    return lines[0]


def test_run_returns_at_once_without_microthreads(run_script):
    done = run_script("""
        import time
        from postage import messaging
        start = time.monotonic()
        messaging.MicroScheduler().run()
        print(time.monotonic() - start < 1)
    """, timeout=20)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_run_outside_the_main_thread_raises_runtime_error():
    errors = []

    def target():
        try:
            messaging.MicroScheduler().run()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)

    assert len(errors) == 1
    assert "main thread" in str(errors[0])


def test_run_ends_when_a_microthread_raises_exit_scheduler(run_script):
    done = run_script("""
        from postage import messaging

        class Counter(messaging.MicroThread):
            def create(self):
                self.steps = 0

            def step(self):
                self.steps += 1
                if self.steps == 3:
                    raise messaging.ExitScheduler

        counter = Counter()
        scheduler = messaging.MicroScheduler()
        scheduler.add_microthread(counter)
        scheduler.run()
        print(counter.steps)
    """, timeout=20)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


def test_facade_scheduler_is_the_3_0_3_scheduler_plus_run():
    from postage.microthreads import MicroScheduler  # noqa: PLC0415

    scheduler = messaging.MicroScheduler()

    assert isinstance(scheduler, MicroScheduler)
    assert scheduler.autoquit is False
