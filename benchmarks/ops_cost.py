"""What operations (counters, traces) add to each message, measured in isolation.

    .venv/bin/python benchmarks/ops_cost.py

Times, in microseconds per message (the best of 7 repeats, so the least disturbed by a busy
machine), the exact work the processor and the producer do for metrics and traces, next to
the pika work the ``traceparent`` header adds where properties are encoded per message (RPC
requests and replies) and where every delivery's are decoded.
No broker is needed. ``benchmarks/run.py`` gives the end-to-end picture.
"""

from __future__ import annotations

import sys
import timeit
from time import perf_counter

from pika import BasicProperties

from postage import stats, tracing
from postage.messages import MessageResult
from postage.twisted.frames import TRACEPARENT_PLACEHOLDER

N = 100_000
HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def best(statement: object) -> float:
    return min(timeit.repeat(statement, number=N, repeat=7)) / N * 1e6


def main() -> None:
    plain = BasicProperties(content_type="application/json")
    traced = BasicProperties(content_type="application/json", headers={"traceparent": HEADER})
    plain_wire = b"".join(plain.encode())
    traced_wire = b"".join(traced.encode())
    counts = stats.ProcessorStats()
    producer_counts = stats.ProducerStats()
    queue_of = {"ctag": "q"}
    context = tracing.parse(HEADER)
    result = MessageResult(1)

    def consume_side() -> None:  # what _on_delivery adds
        queue_of.get("ctag")
        headers = traced.headers
        parent = tracing.parse(headers.get("traceparent")) if headers else None
        token = tracing.current.set(parent)
        started = perf_counter()
        tracing.current.reset(token)
        counts.finished("q", "command", "bench", True, perf_counter() - started)

    def consume_side_no_header() -> None:  # a 3.0.3 sender: a new trace per delivery
        queue_of.get("ctag")
        token = tracing.current.set(tracing.new_context())
        started = perf_counter()
        tracing.current.reset(token)
        counts.finished("q", "command", "bench", True, perf_counter() - started)

    shared = BasicProperties(content_type="application/json",
                             headers={"traceparent": TRACEPARENT_PLACEHOLDER})
    encoded = b"".join(shared.encode())
    at = encoded.find(TRACEPARENT_PLACEHOLDER.encode())
    counts_by_exchange: dict[tuple[str, str], int] = {}

    def publish_side() -> None:  # message_*: a traceparent written into the kept encoding
        traceparent = tracing.outgoing_header().encode()
        encoded[:at] + traceparent + encoded[at + 55:]  # noqa: B018 - what frames.py does
        key = ("x", "confirmed")
        counts_by_exchange[key] = counts_by_exchange.get(key, 0) + 1

    def publish_in_handler() -> None:
        token = tracing.current.set(context)
        traceparent = tracing.outgoing_header().encode()
        encoded[:at] + traceparent + encoded[at + 55:]  # noqa: B018
        tracing.current.reset(token)

    def properties_per_message() -> None:  # RPC requests and replies: their own properties
        BasicProperties(content_type="application/json",
                        headers={"traceparent": tracing.outgoing_header()}).encode()

    def rpc_client_side() -> None:  # per call, beyond publish_side
        started = perf_counter()
        producer_counts.rpc("echo", stats.rpc_outcome(result), perf_counter() - started)

    rows = [
        ("consume: counters + trace context", best(consume_side)),
        ("consume without a traceparent (new trace)", best(consume_side_no_header)),
        ("publish: traceparent into kept encoding", best(publish_side)),
        ("publish from a handler (child span)", best(publish_in_handler)),
        ("RPC request/reply: own properties, encoded", best(properties_per_message)),
        ("RPC call: outcome + duration", best(rpc_client_side)),
        ("pika: encode properties, with header", best(traced.encode)),
        ("pika: encode properties, without", best(plain.encode)),
        ("pika: decode properties, with header",
         best(lambda: BasicProperties().decode(traced_wire))),
        ("pika: decode properties, without", best(lambda: BasicProperties().decode(plain_wire))),
    ]
    for label, micros in rows:
        sys.stdout.write(f"{label:<44} {micros:6.2f} us\n")


if __name__ == "__main__":
    main()
