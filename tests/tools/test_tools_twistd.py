"""The ``postage`` twistd plugin, run as ``twistd -n --pidfile= postage ...`` subprocesses.

The components are ``tests/tools/slow_component.py``'s, in both styles: ``SlowProcessor``
(``postage.twisted``, an ``async def`` handler) and ``BlockingSlowProcessor`` (the 3.0.3
style of ``postage.messaging``, a handler blocking in ``time.sleep`` in its worker thread).
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

STYLES = ["SlowProcessor", "BlockingSlowProcessor"]


def twistd_argv(tk, cls, *options):
    return [tk.TWISTD, "-n", "--pidfile=", "postage", "--processor", f"slow_component:{cls}",
            *options]


def start_component(tk, spawn, slow_names, cls):
    component = spawn(*twistd_argv(tk, cls), env=slow_names.env())
    tk.wait_for_output(component, f"consuming: {cls}")
    return component


def test_twistd_postage_help_documents_the_options(run_tool, tk):
    done = run_tool(tk.TWISTD, "postage", "--help")

    assert done.returncode == 0, done.stderr
    for option in ("--processor", "--name", "--type", "--vhost", "--url", "--log-level"):
        assert option in done.stdout, option
    for level in ("debug", "info", "warn", "error", "critical"):
        assert level in done.stdout, level


def test_twistd_lists_the_postage_plugin(run_tool, tk):
    done = run_tool(tk.TWISTD, "--help")

    assert done.returncode == 0, done.stderr
    assert "postage" in done.stdout


def test_twistd_with_bogus_log_level_is_a_usage_error(run_tool, tk):
    done = run_tool(tk.TWISTD, "-n", "--pidfile=", "postage", "--processor",
                    "examples.rpc_echo:EchoProcessor", "--log-level", "bogus")

    assert done.returncode != 0
    assert "bogus" in done.stdout + done.stderr


@pytest.mark.parametrize("cls", STYLES)
def test_twistd_component_answers_an_rpc(cls, slow_names, spawn, run_tool, tk):
    start_component(tk, spawn, slow_names, cls)

    done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "slow", "echo", "text=hi",
                    "--timeout", "5")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "hi"}


def test_facade_handler_calls_another_component_with_a_blocking_producer(slow_names, spawn,
                                                                          run_tool, tk):
    component = spawn(*twistd_argv(tk, "BlockingSlowProcessor", "--processor",
                                   "slow_component:RelayProcessor"), env=slow_names.env())
    tk.wait_for_output(component, "consuming: BlockingSlowProcessor, RelayProcessor")

    done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "relay", "relay", "text=hi",
                    "--timeout", "10")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"relayed": {"text": "hi"}}


@pytest.mark.parametrize("cls", STYLES)
def test_twistd_component_exits_0_on_quit(cls, slow_names, spawn, run_tool, tk):
    component = start_component(tk, spawn, slow_names, cls)

    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "quit")

    assert done.returncode == 0, done.stderr
    assert component.wait(timeout=15) == 0, tk.output(component)


@pytest.mark.parametrize("cls", STYLES)
@pytest.mark.parametrize("runner", ["twistd", "postage-run"])
def test_sigterm_lets_a_running_handler_finish_and_acks_its_message(runner, cls, slow_names,
                                                                    spawn, run_tool, admin, tk):
    if runner == "twistd":
        argv = twistd_argv(tk, cls)
    else:
        argv = [tk.POSTAGE, "run", f"slow_component:{cls}"]
    component = spawn(*argv, env=slow_names.env())
    tk.wait_for_output(component, f"consuming: {cls}")
    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "slow", "n=1",
                    "seconds=1.5")
    assert done.returncode == 0, done.stderr
    tk.wait_for(lambda: "started 1" in slow_names.lines(), 10, what="the handler to start")

    component.send_signal(signal.SIGTERM)

    status = component.wait(timeout=15)
    if runner == "twistd":
        # twistd shuts down, then ends by re-raising the signal it got (Twisted's choice:
        # the exit status tells a supervisor it was SIGTERM'd); the log shows a clean stop
        assert status == -signal.SIGTERM, tk.output(component)
        assert "Server Shut Down." in tk.output(component)
    else:
        assert status == 0, tk.output(component)
    assert slow_names.lines() == ["started 1", "finished 1"]
    assert admin.message_count(slow_names.queue) == 0  # acked: not requeued
    assert admin.consumer_count(slow_names.queue) == 0
    assert admin.get(slow_names.queue) is None  # a new consumer receives nothing


@pytest.mark.parametrize("cls", STYLES)
def test_twistd_with_a_wrong_password_exits_nonzero_with_a_clear_log_line(cls, slow_names,
                                                                          run_tool, tk):
    password = f"wrong-{uuid.uuid4().hex}"
    start = time.monotonic()
    done = run_tool(*twistd_argv(tk, cls, "--url", f"amqp://guest:{password}@127.0.0.1:5672/"),
                    env=slow_names.env(), timeout=20)

    assert done.returncode not in (0, None)
    assert time.monotonic() - start < 12
    output = done.stdout + done.stderr
    assert "refused user 'guest'" in output
    assert password not in output
    assert "Unhandled error" not in output


@pytest.mark.parametrize("cls", STYLES)
def test_restart_stops_gracefully_then_runs_again_in_the_same_process(cls, slow_names, spawn,
                                                                      run_tool, tk, tmp_path):
    """restart: the whole service stops as on SIGTERM, twistd removes its pidfile, and the
    same command line runs again (same pid); the URL's password is never logged."""
    pidfile = tmp_path / "twistd.pid"
    password = "guest"
    argv = [tk.TWISTD, "-n", f"--pidfile={pidfile}", "postage", "--processor",
            f"slow_component:{cls}", "--url", f"amqp://guest:{password}@127.0.0.1:5672/"]
    component = spawn(*argv, env=slow_names.env())
    tk.wait_for_output(component, f"consuming: {cls}")
    pid = int(pidfile.read_text())

    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "restart")
    assert done.returncode == 0, done.stderr
    tk.wait_for(lambda: tk.output(component).count(f"consuming: {cls}") == 2, 30,
                what="the component to run again")

    assert component.poll() is None
    assert int(pidfile.read_text()) == pid == component.pid
    output = tk.output(component)
    assert "restarting:" in output
    assert f"guest:{password}@" not in output and "guest:***@" in output
    done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "slow", "echo", "text=again",
                    "--timeout", "10")
    assert done.returncode == 0, done.stderr + output
    run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "quit")
    assert component.wait(timeout=15) == 0, tk.output(component)
