"""The blocking facade next to pika's ``BlockingConnection``: sequential RPC from a script.

    .venv/bin/python benchmarks/blocking.py [--calls N] [--rounds R]

One raw-pika echo server (``raw.EchoServer``, on Twisted) runs in a child process; in this
process two clients take turns calling it one call after the other, over direct reply-to:
``postage.messaging.GenericProducer.rpc_echo(...)`` (the facade: a reactor thread, a hand-off
per call) and hand-written pika on ``BlockingConnection`` (publish, then
``process_data_events`` until the reply). Same server, same bodies, same broker: the ratio
(facade calls/s over pika's) says what the facade's thread hand-off and Postage's own work
cost. A ratio above 1 means the facade did better. Not a test: ``scripts/test`` only lints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def serve(exchange: str, queue: str) -> None:
    """The child: run the raw echo server until stdin closes."""
    import raw  # noqa: PLC0415
    from twisted.internet import defer, reactor, stdio  # noqa: PLC0415
    from twisted.protocols.basic import LineReceiver  # noqa: PLC0415

    server = raw.EchoServer(exchange, queue, prefetch=100)

    class Control(LineReceiver):
        delimiter = b"\n"

        def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
            defer.ensureDeferred(server.stop()).addBoth(lambda _: reactor.stop())

    async def start() -> None:
        await server.start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        stdio.StandardIO(Control())

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()


def pika_side(exchange: str, calls: int, warmup: int) -> tuple[float, float, float]:
    """Hand-written pika on BlockingConnection: calls/s, p50 ms, CPU µs per call."""
    import pika  # noqa: PLC0415

    connection = pika.BlockingConnection(pika.ConnectionParameters(
        common.HOST, common.PORT, credentials=pika.PlainCredentials(common.USER,
                                                                    common.PASSWORD)))
    channel = connection.channel()
    replies: dict[str, Any] = {}

    def on_reply(_ch: Any, _method: Any, properties: Any, body: bytes) -> None:
        replies[properties.correlation_id] = common.DECODE(body)

    channel.basic_consume(DIRECT_REPLY_TO, on_reply, auto_ack=True)

    def call(seq: int) -> Any:
        correlation_id = uuid.uuid4().hex
        channel.basic_publish(exchange, "echo", common.rpc_request_body(seq),
                              pika.BasicProperties(content_type=common.CONTENT_TYPE,
                                                   correlation_id=correlation_id,
                                                   reply_to=DIRECT_REPLY_TO))
        while correlation_id not in replies:
            connection.process_data_events(time_limit=None)
        return replies.pop(correlation_id)["content"]["value"]

    try:
        return measure(call, calls, warmup)
    finally:
        connection.close()


def facade_side(exchange: str, calls: int, warmup: int) -> tuple[float, float, float]:
    """``postage.messaging``: calls/s, p50 ms, CPU µs per call."""
    from postage import messaging  # noqa: PLC0415

    producer = messaging.GenericProducer(messaging.Fingerprint("bench", "benchmark"),
                                         hup=common.hup(), eks=[(exchange, "echo")])
    try:
        return measure(lambda seq: producer.rpc_echo(common.parameters(seq)).value, calls,
                       warmup)
    finally:
        producer.close()


def measure(call: Any, calls: int, warmup: int) -> tuple[float, float, float]:
    latencies = []
    for seq in range(warmup):
        call(seq)
    wall0, cpu0 = common.now(), common.cpu()
    for seq in range(calls):
        t0 = common.now()
        value = call(seq)
        latencies.append(common.now() - t0)
        if value["seq"] != seq:
            raise RuntimeError(f"call {seq}: wrong reply {value!r}")
    wall, cpu = common.now() - wall0, common.cpu() - cpu0
    return calls / wall, statistics.median(latencies) * 1e3, cpu * 1e6 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("EXCHANGE", "QUEUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    exchange, queue = common.unique("x"), common.unique("q")
    child = subprocess.Popen([sys.executable, __file__, "--serve", exchange, queue],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        if child.stdout is None or child.stdout.readline().strip() != "ready":
            raise SystemExit("the echo server did not start")
        results: dict[str, list[tuple[float, float, float]]] = {"pika": [], "facade": []}
        sides = {"pika": pika_side, "facade": facade_side}
        for number in range(args.rounds):
            order = ["pika", "facade"] if number % 2 == 0 else ["facade", "pika"]
            for side in order:
                results[side].append(sides[side](exchange, args.calls, args.warmup))
        report(results)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def report(results: dict[str, list[tuple[float, float, float]]]) -> None:
    def med(side: str, index: int) -> float:
        return statistics.median(figures[index] for figures in results[side])

    rounds = [facade[0] / pika[0] for pika, facade in zip(results["pika"], results["facade"],
                                                          strict=True)]
    rows = {
        "calls/s": (med("pika", 0), med("facade", 0), med("facade", 0) / med("pika", 0)),
        "p50 ms": (med("pika", 1), med("facade", 1), med("pika", 1) / med("facade", 1)),
        "CPU us/call": (med("pika", 2), med("facade", 2), med("pika", 2) / med("facade", 2)),
    }
    sys.stdout.write(f"{'sequential RPC':<14} {'pika blocking':>14} {'facade':>10} "
                     f"{'ratio':>7}\n")
    for name, (pika_value, facade_value, ratio) in rows.items():
        sys.stdout.write(f"{name:<14} {pika_value:>14.2f} {facade_value:>10.2f} "
                         f"{ratio:>7.2f}\n")
    sys.stdout.write(f"calls/s ratio in each round: {json.dumps([round(r, 2) for r in rounds])}"
                     "\n")


if __name__ == "__main__":
    main()
