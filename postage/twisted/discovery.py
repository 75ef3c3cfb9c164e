"""Asking the fleet: ``describe`` sent to every component (or those of one name) and every
answer gathered for a while — ``postage ps`` and ``postage ping``.

One request, many replies: the request goes to ``postage.control`` with one reply queue
(the producer's ``_queue_only`` call, which declares the queue before publishing, so no early
answer is lost) and :meth:`GenericProducer.consume_rpc` gathers what comes in until the
timeout. A component that does not answer in time is simply absent.
"""

from __future__ import annotations

import json
import sys
from time import perf_counter
from typing import Any, TextIO

from twisted.internet import defer, task

from postage import fleet
from postage.messages import MessageResult

__all__ = ["gather", "ping", "ps"]

_UNBOUNDED = 1 << 30  # replies: as many as come within the timeout


@defer.inlineCallbacks
def gather(producer: Any, name: str | None = None, timeout: float = 1.0) -> Any:
    """Fires with the ``describe`` values of the components that answered within
    ``timeout`` seconds (all of them, or those named ``name``), in arrival order."""
    queue = yield producer.call(fleet.DESCRIBE, {}, _queue_only=True,
                                _eks=[(fleet.ControlExchange, fleet.key_for(name))])
    results = yield producer.consume_rpc(queue, _UNBOUNDED, timeout=timeout)
    return [result.value for result in results
            if isinstance(result, MessageResult) and isinstance(result.value, dict)]


def _react(main: Any) -> Any:
    """Run ``main(reactor)`` to its end; its result, or its exception raised here."""
    outcome: list[Any] = []

    def run(reactor: Any) -> Any:
        return defer.maybeDeferred(main, reactor).addBoth(outcome.append)

    try:
        task.react(run, [])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    result = outcome[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _producer(reactor: Any, vhost: str | None) -> Any:
    from postage.fingerprint import Fingerprint  # noqa: PLC0415
    from postage.twisted.producer import GenericProducer  # noqa: PLC0415

    return GenericProducer(Fingerprint("postage-cli", "tool"), vhost=vhost, reactor=reactor,
                           connect_timeout=5)


def ps(name: str | None = None, timeout: float = 1.0, as_json: bool = False,
       vhost: str | None = None, out: TextIO | None = None) -> int:
    """``postage ps``: print the components that answered; 0 when at least one did, else 1.
    An unreachable broker raises :class:`~postage.errors.BrokerConnectionError`."""
    out = out or sys.stdout

    @defer.inlineCallbacks
    def main(reactor: Any) -> Any:
        producer = _producer(reactor, vhost)
        try:
            yield producer.ready
            values = yield gather(producer, name, timeout)
        finally:
            yield producer.close()
        return values

    values = _react(main)
    if as_json:
        out.write(json.dumps(values, indent=2, sort_keys=True) + "\n")
    elif values:
        out.write(fleet.format_table(values))
    else:
        sys.stderr.write("postage ps: no component answered within "
                         f"{timeout}s{f' by the name {name!r}' if name else ''}\n")
    return 0 if values else 1


def ping(name: str, timeout: float = 1.0, vhost: str | None = None,
         out: TextIO | None = None) -> int:
    """``postage ping NAME``: ``pong`` from each component of that name, with the round
    trip of its answer; 0 when one answered, else 1."""
    out = out or sys.stdout
    replies: list[tuple[float, dict[str, Any]]] = []
    sent = [0.0]

    @defer.inlineCallbacks
    def main(reactor: Any) -> Any:
        producer = _producer(reactor, vhost)
        try:
            yield producer.ready
            sent[0] = perf_counter()
            queue = yield producer.call(fleet.DESCRIBE, {}, _queue_only=True,
                                        _eks=[(fleet.ControlExchange, fleet.key_for(name))])

            def arrived(result: Any) -> None:
                if isinstance(result, MessageResult) and isinstance(result.value, dict):
                    replies.append((perf_counter() - sent[0], result.value))

            yield producer.consume_rpc(queue, _UNBOUNDED, callback=arrived, timeout=timeout)
        finally:
            yield producer.close()

    _react(main)
    for seconds, value in replies:
        fingerprint = value.get("fingerprint") or {}
        out.write(f"pong from {fingerprint.get('name')} (host {fingerprint.get('host')}, pid "
                  f"{fingerprint.get('pid')}) in {seconds * 1000:.1f} ms\n")
    if not replies:
        sys.stderr.write(f"postage ping: no answer from {name!r} within {timeout}s\n")
    return 0 if replies else 1
