"""Postage's loggers, with one level switch for all of them.

Every module under ``postage/twisted/`` logs through a :class:`PostageLogger`: a
``twisted.logger.Logger`` that drops events below the level set with :func:`set_level`
(``--log-level``, or ``debug`` when ``POSTAGE_DEBUG_MODE=true``) before any formatting work.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

from postage import config
from postage.tracing import current as _current_trace

__all__ = ["LEVELS", "PostageLogger", "set_level", "text_observer"]

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_ORDER = {level: rank for rank, level in enumerate(LEVELS.values())}
_threshold: list[int] = []  # empty until first use: POSTAGE_DEBUG_MODE is read then


def set_level(name: str) -> None:
    """Show Postage's events of this level and above (``debug`` ... ``critical``)."""
    if name not in LEVELS:
        raise ValueError(f"log level is one of {', '.join(LEVELS)}, not {name!r}")
    _threshold[:] = [_ORDER[LEVELS[name]]]


def _current() -> int:
    if not _threshold:
        set_level("debug" if config.debug_mode() else "info")
    return _threshold[0]


class PostageLogger(Logger):
    """A ``Logger`` that honours :func:`set_level`; an event emitted while a handler runs
    carries the ``trace_id`` of the delivery it serves."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:  # noqa: A002
        if _ORDER[level] >= _current():
            if "trace_id" not in kwargs:
                trace = _current_trace.get()
                if trace is not None:
                    kwargs["trace_id"] = trace.trace_id
            super().emit(level, format, **kwargs)



def text_observer(out: Any) -> Any:
    """Twisted's text log lines on ``out``, each event emitted while a handler ran (whatever
    logger emitted it) ending with ``trace_id=...``: grep one id across components' logs to
    follow a message. Observers run where the event is emitted, so the handler's trace is
    still the current one."""
    from twisted.logger import FileLogObserver, formatEventAsClassicLogText  # noqa: PLC0415

    def format_event(event: dict[str, Any]) -> str | None:
        trace_id = event.get("trace_id")
        if trace_id is None:
            trace = _current_trace.get()
            if trace is not None:
                trace_id = event["trace_id"] = trace.trace_id
        text = formatEventAsClassicLogText(event)
        if text is None or trace_id is None:
            return text
        return f"{text[:-1]} trace_id={trace_id}\n" if text.endswith("\n") else text

    return FileLogObserver(out, format_event)
