"""What both sides of the benchmark share: the message bodies, names, timing helpers and a raw
pika connection (used by the raw side, and by ``run.py`` to set up and clean up queues).

The bodies are the Postage envelope, built by hand: the raw side encodes exactly the bytes
that Postage puts on the wire (``run.py`` checks this before measuring anything).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from twisted.internet import defer

from postage import Fingerprint

HOST = "127.0.0.1"
PORT = 5672
USER = "guest"
PASSWORD = "guest"

CONTENT_TYPE = "application/json"
#: every queue the benchmark declares also expires on its own, should a run be interrupted
QUEUE_ARGUMENTS = {"x-expires": 120_000}
QUEUE_FLAGS = {"auto_delete": True, "arguments": QUEUE_ARGUMENTS}

FINGERPRINT = Fingerprint(name="bench", type="benchmark").as_dict()
#: pads the content so that a whole envelope is about 300 bytes
TEXT = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2

#: one encoder made once, compact separators: what Postage's JsonEncoder writes
ENCODE = json.JSONEncoder(separators=(",", ":")).encode
DECODE = json.loads


def parameters(seq: int) -> dict[str, Any]:
    """The parameters of message number ``seq``: what a Postage user passes to
    ``message_bench()`` / ``rpc_echo()``."""
    return {"seq": seq, "text": TEXT}


def envelope(category: str, type_: str, name: str, content: dict[str, Any]) -> dict[str, Any]:
    """A Postage envelope as a dict, keys in the order Postage writes them."""
    return {
        "type": type_,
        "name": name,
        "category": category,
        "version": 2,
        "fingerprint": FINGERPRINT,
        "content": content,
        "_reserved": {},
    }


def command_body(seq: int) -> str:
    """The encoded ``MessageCommand('bench', parameters(seq))``."""
    return ENCODE(envelope("message", "command", "bench", {"parameters": parameters(seq)}))


def rpc_request_body(seq: int) -> str:
    """The encoded ``RpcCommand('echo', parameters(seq))``."""
    return ENCODE(envelope("rpc", "command", "echo", {"parameters": parameters(seq)}))


def rpc_reply_body(value: Any) -> str:
    """The encoded ``MessageResult(value)``."""
    return ENCODE(envelope("message", "result", "none",
                           {"type": "success", "value": value, "message": ""}))


def unique(label: str) -> str:
    """A queue or exchange name no other run uses."""
    return f"postage-bench.{os.getpid()}.{uuid.uuid4().hex[:8]}.{label}"


def hup() -> dict[str, Any]:
    """Where Postage connects: the same broker as the raw side."""
    return {"host": HOST, "port": PORT, "user": USER, "password": PASSWORD}


now = time.perf_counter
#: CPU time of this process (both RPC ends run in it): steadier than wall time on a busy box
cpu = time.process_time


class Stopwatch:
    """Wall time and process CPU time between ``start()`` and ``stop()``."""

    __slots__ = ("cpu0", "cpu1", "wall0", "wall1")

    def __init__(self) -> None:
        self.wall0 = self.wall1 = self.cpu0 = self.cpu1 = 0.0

    def start(self) -> None:
        self.wall0, self.cpu0 = now(), cpu()

    def stop(self) -> None:
        self.wall1, self.cpu1 = now(), cpu()

    def figures(self, ops: int) -> tuple[float, float]:
        """Operations per second, and CPU microseconds per operation."""
        return ops / (self.wall1 - self.wall0), (self.cpu1 - self.cpu0) * 1e6 / ops


class Countdown:
    """Counts events; ``done`` fires once ``n`` happened. Times from the first event to the
    last, for throughput measured from the first delivery to the last."""

    __slots__ = ("done", "left", "n", "watch")

    def __init__(self, n: int) -> None:
        self.n = n
        self.left = n
        self.watch = Stopwatch()
        self.done: defer.Deferred[None] = defer.Deferred()

    def tick(self) -> None:
        left = self.left
        if left == self.n:
            self.watch.start()
        left -= 1
        self.left = left
        if left == 0:
            self.watch.stop()
            self.done.callback(None)

    def figures(self) -> tuple[float, float]:
        """Events per second and CPU microseconds per event, first to last (n - 1
        intervals)."""
        return self.watch.figures(self.n - 1)


async def raw_connect() -> Any:
    """A pika ``TwistedProtocolConnection``, connected through a Twisted endpoint (pika ignores
    host and port of its parameters in this adapter), ready to open channels."""
    import pika  # noqa: PLC0415
    from pika.adapters.twisted_connection import TwistedProtocolConnection  # noqa: PLC0415
    from twisted.internet import reactor  # noqa: PLC0415
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: PLC0415

    parameters = pika.ConnectionParameters(credentials=pika.PlainCredentials(USER, PASSWORD))
    protocol = TwistedProtocolConnection(parameters)
    await connectProtocol(TCP4ClientEndpoint(reactor, HOST, PORT), protocol)
    await protocol.ready
    return protocol


async def raw_close(protocol: Any) -> None:
    """Close a raw connection and wait until it is closed (``closed`` fires, with the reason
    as its result, whatever closed it)."""
    closed = protocol.closed
    if protocol.is_open and closed is not None:
        protocol.close()
        await closed


# ---- RPC drivers: the same client loop for both sides ------------------------------------


async def sequential(call: Any, check: Any, n: int, warmup: int
                     ) -> tuple[list[float], float]:
    """``warmup`` calls, then ``n`` calls one after the other; the latency of each of the
    ``n``, in seconds, and the CPU microseconds per call. ``call(seq)`` returns a Deferred of
    the reply, ``check(reply, seq)`` tells whether it is the right answer."""
    latencies = []
    watch = Stopwatch()
    for seq in range(warmup + n):
        if seq == warmup:
            watch.start()
        t0 = now()
        reply = await call(seq)
        elapsed = now() - t0
        if not check(reply, seq):
            raise RuntimeError(f"call {seq}: wrong reply {reply!r}")
        if seq >= warmup:
            latencies.append(elapsed)
    watch.stop()
    return latencies, watch.figures(n)[1]


def in_flight(call: Any, check: Any, n: int, concurrency: int
              ) -> defer.Deferred[tuple[float, float]]:
    """``n`` calls, ``concurrency`` of them in flight at any time (each reply starts the next
    call); fires with calls per second and CPU microseconds per call, first call to last
    reply."""
    done: defer.Deferred[tuple[float, float]] = defer.Deferred()
    state = {"issued": 0, "finished": 0, "wrong": 0}
    watch = Stopwatch()
    watch.start()

    def issue() -> None:
        seq = state["issued"]
        state["issued"] = seq + 1
        call(seq).addCallback(finished, seq).addErrback(done.errback)

    def finished(reply: Any, seq: int) -> None:
        if not check(reply, seq):
            state["wrong"] += 1
        state["finished"] += 1
        if state["issued"] < n:
            issue()
        elif state["finished"] == n:
            if state["wrong"]:
                done.errback(RuntimeError(f"{state['wrong']} wrong replies"))
            else:
                watch.stop()
                done.callback(watch.figures(n))

    for _ in range(min(n, concurrency)):
        issue()
    return done
