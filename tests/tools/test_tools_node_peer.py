"""A component in another language: ``examples/node/peer.js`` (Node.js, ``amqplib`` from the
npm registry), written from the wire-format page alone, talks with Postage both ways
through the real broker.

``npm ci`` runs once when ``examples/node/node_modules`` is missing (the registry must then
be reachable); the tests are skipped where Node.js or npm is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from brokertools import Admin, run_prefix

NODE = shutil.which("node")
NPM = shutil.which("npm")
PREFIX = "postage-test.tools."

pytestmark = pytest.mark.skipif(NODE is None or NPM is None,
                                reason="Node.js and npm are not installed")


@pytest.fixture(scope="module")
def peer(tk):
    """The path of peer.js, its node_modules installed (``npm ci``, from the lock file)."""
    folder = tk.ROOT / "examples" / "node"
    if not (folder / "node_modules" / "amqplib").is_dir():
        done = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=folder,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}{done.stderr}"
    return str(folder / "peer.js")


@pytest.fixture
def names():
    uid = uuid.uuid4().hex[:10]
    exchange, queue = f"{run_prefix(PREFIX)}{uid}.node.x", f"{run_prefix(PREFIX)}{uid}.node.q"
    yield exchange, queue
    with Admin(f"{PREFIX}admin") as admin:
        admin.delete_queue(queue)
        admin.delete_exchange(exchange)


def node_result(done: subprocess.CompletedProcess[str]) -> tuple[int, dict]:
    assert done.stdout.strip(), f"peer.js printed nothing:\n{done.stderr}"
    return done.returncode, json.loads(done.stdout)


def test_a_node_peer_calls_a_postage_component_and_sends_it_a_message(
        peer, names, spawn, run_tool, tk):
    exchange, queue = names
    env = tk.env(POSTAGE_TEST_EXCHANGE=exchange, POSTAGE_TEST_QUEUE=queue)
    component = spawn(tk.POSTAGE, "run", "wire_peers:WireComponent", "--name",
                      f"{PREFIX}wire", env=env)
    tk.wait_for_output(component, "consuming: WireComponent")

    def node(*argv: str) -> subprocess.CompletedProcess[str]:
        return run_tool(NODE, peer, *argv, timeout=30)

    assert node_result(node("call", exchange, "wire", "echo",
                            '{"text": "from Node.js", "n": [1, 2.5, null]}')) == (
        0, {"type": "success", "value": {"text": "from Node.js", "n": [1, 2.5, None]},
            "message": ""})
    assert node_result(node("call", exchange, "wire", "divide", '{"a": 1, "b": 0}')) == (
        1, {"type": "exception", "value": "ZeroDivisionError", "message": "division by zero"})
    assert node_result(node("call", exchange, "wire", "missing")) == (
        1, {"type": "error", "value": None,
            "message": "no handler for command/missing in WireComponent"})
    nobody = node("call", exchange, "nobody-listens", "echo")
    assert (nobody.returncode, nobody.stdout) == (2, ""), nobody.stderr
    assert "unroutable" in nobody.stderr

    sent = node("send", exchange, "wire", "note", '{"text": "hello from Node.js"}')
    assert sent.returncode == 0, sent.stderr
    tk.wait_for_output(component, "note: hello from Node.js")


def test_a_node_peer_answers_postage_producers_both_reply_ways(peer, names, spawn, run_tool,
                                                               tk):
    exchange, queue = names
    server = spawn(NODE, peer, "serve", exchange, "node", queue)
    tk.wait_for_output(server, f"serving {queue}")

    hello = run_tool(tk.POSTAGE, "rpc", exchange, "node", "hello", "who=Grace")
    assert (hello.returncode, hello.stdout) == (0, '"Hello, Grace! (from Node.js)"\n'), (
        hello.stderr)
    fail = run_tool(tk.POSTAGE, "rpc", exchange, "node", "fail")
    assert (fail.returncode, fail.stderr) == (
        1, "postage: RangeError: this call always fails\n")

    calls = run_tool(tk.PYTHON, str(tk.ROOT / "tests" / "tools" / "wire_peers.py"), "call",
                     exchange, "node", timeout=60)
    assert calls.returncode == 0, calls.stdout + calls.stderr
    expected = []
    for way in ("direct", "exclusive"):
        expected += [
            f"{way} hello MessageResult 'Hello, Ada! (from Node.js)'",
            f"{way} add MessageResult 42",
            f"{way} fail MessageResultException 'RangeError' this call always fails",
            f"{way} missing MessageResultError None no handler for command/missing in node peer",
        ]
    assert [line.rstrip() for line in calls.stdout.splitlines()] == expected

    assert server.wait(timeout=15) == 0, tk.output(server)  # the producer sent quit
    out = tk.output(server)
    assert "note: from Python" in out
    assert out.count("answered hello (correlation id set)") == 3, out
