"""Operating components in processes of their own: ``postage ps`` / ``postage ping``, the
metrics port of ``postage run`` and ``twistd postage``, and ``postage run --workers``.

The components are ``tests/tools/slow_component.py``'s: ``SlowProcessor`` (``postage.twisted``)
and ``BlockingSlowProcessor`` (the 3.0.3 style, its handler blocking in a worker thread).
``postage ps`` on the shared broker also sees other people's components: the tests look for
their own names only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
import uuid

import pytest

PREFIX = "postage-test.tools."


def _name(label):
    return f"{PREFIX}ops-{uuid.uuid4().hex[:8]}-{label}"


def _answers(run_tool, tk, *names, timeout="1"):
    """The ``describe`` values of the named components, once all of them answer."""

    def all_answered():
        done = run_tool(tk.POSTAGE, "ps", "--json", "--timeout", timeout)
        if done.returncode != 0:
            return None
        values = {v["fingerprint"]["name"]: v for v in json.loads(done.stdout)}
        return values if set(names) <= set(values) else None

    return tk.wait_for(all_answered, 30, interval=0.2, what=f"{names} in postage ps")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None, ""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ps_and_ping_see_components_of_both_apis_in_separate_processes(
        slow_names, spawn, run_tool, tk):
    twisted_name, facade_name = _name("twisted"), _name("facade")
    first = spawn(tk.POSTAGE, "run", "slow_component:SlowProcessor", "--name", twisted_name,
                  env=slow_names.env())
    second = spawn(tk.TWISTD, "-n", "--pidfile=", "postage", "--processor",
                   "slow_component:BlockingSlowProcessor", "--name", facade_name,
                   "--type", "legacy", env=slow_names.env())
    tk.wait_for_output(first, "consuming: SlowProcessor")
    tk.wait_for_output(second, "consuming: BlockingSlowProcessor")

    values = _answers(run_tool, tk, twisted_name, facade_name)

    for name, child, kind in ((twisted_name, first, "component"),
                              (facade_name, second, "legacy")):
        value = values[name]
        assert value["fingerprint"]["pid"] == child.pid
        assert value["fingerprint"]["type"] == kind
        assert value["queues"] == [slow_names.queue]
        assert ["command", "slow"] in value["handlers"]
        assert ["command", "echo"] in value["handlers"]
        assert value["connection"]["reconnects"] == 0
        assert value["postage_version"]
    table = run_tool(tk.POSTAGE, "ps", "--name", facade_name)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "TYPE", "HOST"]
    assert row.split()[:2] == [facade_name, "legacy"]
    assert row.split()[3] == str(second.pid)
    pong = run_tool(tk.POSTAGE, "ping", twisted_name)
    assert pong.returncode == 0, pong.stderr
    assert pong.stdout.startswith(f"pong from {twisted_name} ")
    assert " ms" in pong.stdout


def test_ps_and_ping_exit_1_when_nobody_answers(run_tool, tk):
    nobody = _name("nobody")

    ps = run_tool(tk.POSTAGE, "ps", "--name", nobody, "--timeout", "0.3")
    ping = run_tool(tk.POSTAGE, "ping", nobody, "--timeout", "0.3")

    assert (ps.returncode, ps.stdout) == (1, "")
    assert "no component answered" in ps.stderr
    assert (ping.returncode, ping.stdout) == (1, "")
    assert "no answer" in ping.stderr


def test_describe_is_answered_while_a_facade_handler_blocks(slow_names, spawn, run_tool, tk):
    name = _name("busy")
    component = spawn(tk.POSTAGE, "run", "slow_component:BlockingSlowProcessor", "--name",
                      name, env=slow_names.env())
    tk.wait_for_output(component, "consuming: BlockingSlowProcessor")
    _answers(run_tool, tk, name)
    sent = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "slow", "n=1",
                    "seconds=8")
    assert sent.returncode == 0, sent.stderr
    tk.wait_for(lambda: "started 1" in slow_names.lines(), 15, what="the handler started")

    value = _answers(run_tool, tk, name)[name]

    # answered while the handler still blocked its only worker thread
    assert value["counters"]["in_flight"] == 1
    assert value["counters"]["handled"] == 0
    assert "finished 1" not in slow_names.lines()


@pytest.mark.parametrize("runner", ["postage run", "twistd"])
def test_metrics_port_serves_metrics_livez_and_readyz(runner, slow_names, spawn, run_tool, tk):
    port = _free_port()
    options = ["--metrics-port", str(port), "--name", _name("metrics")]
    if runner == "twistd":
        argv = [tk.TWISTD, "-n", "--pidfile=", "postage", "--processor",
                "slow_component:SlowProcessor", *options]
    else:
        argv = [tk.POSTAGE, "run", "slow_component:SlowProcessor", *options]
    component = spawn(*argv, env=slow_names.env())
    tk.wait_for_output(component, "consuming: SlowProcessor")
    for n in range(3):
        done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "slow", "echo", f"n={n}")
        assert done.returncode == 0, done.stderr

    status, text = tk.wait_for(lambda: (lambda got: got if got[0] else None)(
        _get(port, "/metrics")), 15, what="/metrics")

    assert status == 200
    line = (f'postage_handled_total{{name="echo",outcome="ok",queue="{slow_names.queue}",'
            f'type="command"}} 3.0')
    assert line in text.splitlines()
    assert "postage_connected 1.0" in text.splitlines()
    assert _get(port, "/livez")[0] == 200
    assert _get(port, "/readyz") == (200, "ready\n")


def test_workers_2_survive_a_kill_9_of_one_worker(slow_names, spawn, run_tool, tk):
    name = _name("workers")
    supervisor = spawn(tk.POSTAGE, "run", "slow_component:SlowProcessor", "--name", name,
                       "--workers", "2", env=slow_names.env())

    def worker_pids(count):
        def answered():
            done = run_tool(tk.POSTAGE, "ps", "--json", "--name", name)
            pids = {v["fingerprint"]["pid"] for v in json.loads(done.stdout or "[]")}
            return pids if len(pids) == count and all(map(_alive, pids)) else None
        return answered

    first = tk.wait_for(worker_pids(2), 30, interval=0.2, what="two workers")
    assert supervisor.pid not in first
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    after = tk.wait_for(lambda: (lambda pids: pids if pids and victim not in pids else None)(
        worker_pids(2)()), 30, interval=0.2, what="a new worker")

    assert first - {victim} <= after  # the survivor kept running
    assert "worker 0 died" in tk.output(supervisor) or "worker 1 died" in tk.output(supervisor)
    done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "slow", "echo", "n=1")
    assert done.returncode == 0, done.stderr
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    tk.wait_for(lambda: not any(map(_alive, after)), 10, what="the workers to end")


def test_workers_0_is_a_usage_error(run_tool, tk):
    done = run_tool(tk.POSTAGE, "run", "slow_component:SlowProcessor", "--workers", "0")

    assert done.returncode == 2
    assert "--workers" in done.stderr


def test_workers_drain_their_running_handlers_on_sigterm(slow_names, spawn, run_tool, tk):
    name = _name("drain")
    supervisor = spawn(tk.POSTAGE, "run", "slow_component:SlowProcessor", "--name", name,
                       "--workers", "2", env=slow_names.env())
    _answers(run_tool, tk, name)
    tk.wait_for(lambda: len(json.loads(run_tool(tk.POSTAGE, "ps", "--json", "--name",
                                                name).stdout or "[]")) == 2, 30,
                interval=0.2, what="two workers")
    for n in (1, 2):
        sent = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "slow", f"n={n}",
                        "seconds=2")
        assert sent.returncode == 0, sent.stderr
    tk.wait_for(lambda: {"started 1", "started 2"} <= set(slow_names.lines()), 15,
                what="both handlers started")

    supervisor.send_signal(signal.SIGTERM)

    assert supervisor.wait(timeout=30) == 0
    assert {"finished 1", "finished 2"} <= set(slow_names.lines())


def test_worker_arguments_drop_workers_and_spread_metrics_ports():
    from postage.twisted.workers import worker_arguments  # noqa: PLC0415

    argv = ["--name", "n", "--workers", "3", "--metrics-port=9000", "--log-level", "warn"]

    assert worker_arguments(argv, 0) == ["--name", "n", "--metrics-port", "9000",
                                         "--log-level", "warn"]
    assert worker_arguments(argv, 2) == ["--name", "n", "--metrics-port", "9002",
                                         "--log-level", "warn"]


def test_the_readme_echo_component_with_a_metrics_port(example_names, spawn, run_tool, tk):
    """What the README tells a newcomer: run the echo example with --metrics-port, see it in
    ``postage ps``, scrape it."""
    port, name = _free_port(), _name("readme-echo")
    component = spawn(tk.POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--name", name,
                      "--metrics-port", str(port))
    tk.wait_for_output(component, "consuming: EchoProcessor")

    value = _answers(run_tool, tk, name)[name]
    status, text = _get(port, "/metrics")

    assert value["queues"] == ["postage-examples-echo"]
    assert status == 200
    assert "postage_connected 1.0" in text.splitlines()
    assert "# TYPE postage_handled_total counter" in text.splitlines()
    assert _get(port, "/readyz") == (200, "ready\n")


def test_workers_end_when_their_supervisor_is_killed(slow_names, spawn, run_tool, tk):
    name = _name("orphans")
    supervisor = spawn(tk.POSTAGE, "run", "slow_component:SlowProcessor", "--name", name,
                       "--workers", "2", env=slow_names.env())

    def workers():
        done = run_tool(tk.POSTAGE, "ps", "--json", "--name", name)
        pids = {v["fingerprint"]["pid"] for v in json.loads(done.stdout or "[]")}
        return pids if len(pids) == 2 else None

    pids = tk.wait_for(workers, 30, interval=0.2, what="two workers")
    os.kill(supervisor.pid, signal.SIGKILL)

    tk.wait_for(lambda: not any(map(_alive, pids)), 20, what="the workers to end")
