"""The examples, run as a person would from the repository root (``python -m examples.X``),
against the real broker; their output is checked."""

from __future__ import annotations

import re


def test_rpc_echo_demo_calls_the_component_and_stops_it_cleanly(example_names, run_tool, tk):
    done = run_tool(tk.PYTHON, "-m", "examples.rpc_echo_demo", timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "rpc_echo -> MessageResult {'text': 'hello, Postage'}" in out
    assert "rpc_divide(1, 0) -> MessageResultException ZeroDivisionError - division by zero" in out
    assert "rpc_missing -> MessageResultError - no handler for command/missing" in out
    assert '{"text": "hello from the shell", "n": 3}' in out
    assert "\n   3.5\n" in out
    assert "postage: ZeroDivisionError: division by zero" in out
    assert "(exit status 1)" in out
    assert "the component exited with status 0" in out


def test_twisted_app_makes_its_calls_and_ends_on_quit(run_tool, tk):
    done = run_tool(tk.PYTHON, "-m", "examples.twisted_app", timeout=30)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "7 squared is 49",
        "100 calls at once, sum of squares: 328350",
        "note: sent with publisher confirms",
        "processor quit; scheduler ended",
    ]


def test_ping_listener_prints_the_pings_and_quits(example_names, spawn, admin, run_tool, tk):
    listener = spawn(tk.PYTHON, "-m", "examples.ping", "listen")
    tk.wait_for(lambda: admin.consumer_count("ping-listener") > 0, 15,
                what="the ping listener to consume")

    sender = run_tool(tk.PYTHON, "-m", "examples.ping", "send", "3")

    assert sender.returncode == 0, sender.stdout + sender.stderr
    assert sender.stdout.strip() == "pings sent"
    assert listener.wait(timeout=15) == 0, tk.output(listener)
    out = tk.output(listener)
    assert len(re.findall(r"^ping received after \d+\.\d ms$", out, re.MULTILINE)) == 3, out
    assert out.rstrip().endswith("listener got quit")


def test_rpc_echo_client_talks_to_a_running_component(echo_component, run_tool, tk):
    done = run_tool(tk.PYTHON, "-m", "examples.rpc_echo_client", "hi", "there")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "echo answered: {'text': 'hi there'}",
        "divide by zero answered: MessageResultException ZeroDivisionError division by zero",
    ]
