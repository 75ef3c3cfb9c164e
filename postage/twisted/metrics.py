"""Metrics and health over HTTP: ``/metrics`` (Prometheus text), ``/livez``, ``/readyz``.

``twistd postage --metrics-port P`` and ``postage run --metrics-port P`` serve them with
:func:`listen`; a Twisted application with a web site of its own mounts :func:`resource`
(``root.putChild(b"postage", metrics.resource())``). Both run on the application's reactor.

The figures are not kept in ``prometheus_client`` objects updated per message: processors
and producers add to plain integers (``postage.stats``), and :class:`PostageCollector`
reads them when Prometheus scrapes, so a message costs a few dict increments, not a lock
and a label lookup per metric.

Readiness is stricter than liveness on purpose: a process whose consumer the broker cancelled
(its queue deleted, its node gone) keeps running and looks alive, yet receives nothing.
``/readyz`` answers 200 only while every processor is connected and consuming each of its
queues, and 503 otherwise, with one line per reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

from postage import stats

__all__ = ["PostageCollector", "listen", "readiness", "registry", "resource"]


def _processors() -> list[Any]:
    return [each for each in list(stats.components) if isinstance(each.stats,
                                                                   stats.ProcessorStats)]


def _producers() -> list[Any]:
    return [each for each in list(stats.components) if isinstance(each.stats,
                                                                  stats.ProducerStats)]


def _session(component: Any) -> Any:
    owner = component.consumer if hasattr(component, "consumer") else component
    return getattr(owner, "_session", None)


def _connected(component: Any) -> bool:
    session = _session(component)
    connection = getattr(session, "connection", None)
    return connection is not None and connection.is_open


def _add(total: dict[Any, int], part: dict[Any, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def _histograms(family: HistogramMetricFamily, by_labels: dict[tuple[str, ...], list[Any]]
                ) -> HistogramMetricFamily:
    for labels, histograms in sorted(by_labels.items()):
        buckets: dict[str, int] = {}
        total = 0.0
        for histogram in histograms:
            for bound, count in histogram.cumulative():
                buckets[bound] = buckets.get(bound, 0) + count
            total += histogram.sum
        family.add_metric(list(labels), list(buckets.items()), total)
    return family


class PostageCollector:
    """Reads the counters of this process's live processors and producers at scrape time."""

    def collect(self) -> Iterator[Metric]:
        processors, producers = _processors(), _producers()
        outcomes: dict[tuple[str, ...], int] = {}
        seconds: dict[tuple[str, ...], list[Any]] = {}
        in_flight = 0
        for processor in processors:
            _add(outcomes, processor.stats.outcomes)
            for key, histogram in processor.stats.seconds.items():
                seconds.setdefault(key, []).append(histogram)
            in_flight += processor._in_flight
        handled = CounterMetricFamily(
            "postage_handled", "Deliveries by queue, message type and name, and outcome "
            "(ok, error, rejected, retried, dead).", labels=["queue", "type", "name", "outcome"])
        for labels, value in sorted(outcomes.items()):
            handled.add_metric(list(labels), value)
        yield handled
        yield _histograms(HistogramMetricFamily(
            "postage_handler_seconds", "Time from delivery to the end of its handlers.",
            labels=["type", "name"]), seconds)

        published: dict[tuple[str, ...], int] = {}
        calls: dict[tuple[str, ...], int] = {}
        call_seconds: dict[tuple[str, ...], list[Any]] = {}
        for producer in producers:
            _add(published, producer.stats.published)
            _add(calls, producer.stats.rpc_calls)
            for name, histogram in producer.stats.rpc_seconds.items():
                call_seconds.setdefault((name,), []).append(histogram)
        family = CounterMetricFamily(
            "postage_published", "Publishes by exchange and outcome (confirmed, nacked, "
            "returned, failed).", labels=["exchange", "outcome"])
        for labels, value in sorted(published.items()):
            family.add_metric(list(labels), value)
        yield family
        family = CounterMetricFamily(
            "postage_rpc_calls", "RPC calls by name and outcome (success, error, exception, "
            "timeout, unroutable, broker).", labels=["name", "outcome"])
        for labels, value in sorted(calls.items()):
            family.add_metric(list(labels), value)
        yield family
        yield _histograms(HistogramMetricFamily(
            "postage_rpc_seconds", "RPC call durations, every attempt included.",
            labels=["name"]), call_seconds)

        components = processors + producers
        yield GaugeMetricFamily(
            "postage_connected", "1 while every processor and producer of the process is "
            "connected to the broker.",
            value=int(bool(components) and all(_connected(each) for each in components)))
        yield CounterMetricFamily(
            "postage_reconnects", "Connections made again after a loss.",
            value=sum(max(getattr(_session(each), "connections", 0) - 1, 0)
                      for each in components))
        yield GaugeMetricFamily("postage_in_flight", "Deliveries whose handlers are running.",
                                value=in_flight)


def _make_registry() -> CollectorRegistry:
    from prometheus_client import ProcessCollector  # noqa: PLC0415

    made = CollectorRegistry(auto_describe=False)
    made.register(PostageCollector())
    ProcessCollector(registry=made)
    return made


#: The registry ``/metrics`` serves (Postage's metrics and the process's own).
registry = _make_registry()


def readiness() -> list[str]:
    """Why this process is not ready; empty when it is (connected and consuming every
    queue of every running processor)."""
    processors = _processors()
    if not processors:
        return ["no processor is running"]
    reasons = []
    for processor in processors:
        name = processor.fingerprint.get("name") or type(processor).__name__
        if not _connected(processor):
            reasons.append(f"{name}: not connected to the broker")
            continue
        consuming = set(processor.consumer.consuming)
        missing = [queue for queue in processor.consumer.queues if queue not in consuming]
        if missing:
            reasons.append(f"{name}: not consuming {', '.join(missing)}")
    return reasons


class _Metrics(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(registry)


class _Live(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"live\n"


class _Ready(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        reasons = readiness()
        if reasons:
            request.setResponseCode(503)
            return ("not ready:\n" + "".join(f"{reason}\n" for reason in reasons)).encode()
        return b"ready\n"


def resource() -> Resource:
    """A twisted.web resource with the children ``metrics``, ``livez`` and ``readyz``."""
    root = Resource()
    root.putChild(b"metrics", _Metrics())
    root.putChild(b"livez", _Live())
    root.putChild(b"readyz", _Ready())
    return root


class _QuietSite(Site):
    """A Site without an access log line per request: a scraper polls every few seconds."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


def listen(port: int, host: str = "127.0.0.1", reactor: Any = None) -> Any:
    """Serve :func:`resource` at ``http://host:port/``; returns the listening port."""
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415

    return reactor.listenTCP(port, _QuietSite(resource()), interface=host)
