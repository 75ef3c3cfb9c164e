"""Discovery's data: what a component says of itself (``describe``) and how ``postage ps``
shows the answers. Plain functions on dicts; the reactor side lives in ``postage.twisted``.

The names here — the exchange, its keys, the command and the keys of the answer — are a
contract that tools and dashboards read, so they are spelled once, in this module.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from postage.exchanges import Exchange

__all__ = ["COLUMNS", "CONTROL_EXCHANGE", "DESCRIBE", "ControlExchange", "describe_value",
           "format_table", "format_uptime", "iso_utc", "key_for"]

#: The durable topic exchange every processor's control queue is bound to.
CONTROL_EXCHANGE = "postage.control"
#: The RPC command (type ``command``) a processor answers on its control queue.
DESCRIBE = "describe"
ALL = "all"


class ControlExchange(Exchange):
    """``postage.control``: durable, so that it outlives every component; whoever needs it
    declares it (the same declaration each time, so they never disagree)."""

    name = CONTROL_EXCHANGE
    exchange_type = "topic"
    durable = True
    auto_delete = False

COLUMNS = ("NAME", "TYPE", "HOST", "PID", "VERSION", "UPTIME", "HANDLED", "FAILED",
           "IN FLIGHT")


def key_for(name: str | None) -> str:
    """The routing key that reaches every component (``all``) or those named ``name``."""
    return ALL if name is None else f"name.{name}"


def iso_utc(timestamp: float | None) -> str | None:
    """A POSIX time as ISO 8601 in UTC (``2026-12-01T10:27:33.123456+00:00``)."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def describe_value(*, fingerprint: Mapping[str, Any], version: str, started_at: float,
                   now: float, queues: Sequence[str], handlers: Iterable[tuple[str, Any]],
                   counters: Mapping[str, int], host: str | None, port: int | None,
                   connected_since: float | None, reconnects: int) -> dict[str, Any]:
    """The value of a ``describe`` answer (times are POSIX seconds)."""
    return {
        "fingerprint": dict(fingerprint),
        "postage_version": version,
        "started_at": iso_utc(started_at),
        "uptime_s": round(max(now - started_at, 0.0), 3),
        "queues": list(queues),
        "handlers": sorted([t, "" if n is None else n] for t, n in handlers),
        "counters": dict(counters),
        "connection": {"host": host, "port": port,
                       "connected_since": iso_utc(connected_since),
                       "reconnects": reconnects},
    }


def format_uptime(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``, ``2d04h``: short enough for a table column."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _row(value: Mapping[str, Any]) -> tuple[str, ...]:
    fingerprint = value.get("fingerprint") or {}
    counters = value.get("counters") or {}
    return (str(fingerprint.get("name")), str(fingerprint.get("type")),
            str(fingerprint.get("host")), str(fingerprint.get("pid")),
            str(value.get("postage_version")), format_uptime(value.get("uptime_s") or 0),
            str(counters.get("handled", 0)), str(counters.get("failed", 0)),
            str(counters.get("in_flight", 0)))


def format_table(values: Iterable[Mapping[str, Any]]) -> str:
    """``postage ps``'s table: a header and one row per answer, sorted by name, host, pid;
    the counters right-aligned."""
    rows = sorted((_row(value) for value in values),
                  key=lambda row: (row[0], row[2], int(row[3]) if row[3].isdigit() else 0))
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=False)]
    lines = []
    for row in (COLUMNS, *rows):
        cells = [cell.rjust(width) if index >= 6 else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
