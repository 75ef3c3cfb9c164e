"""RetryPolicy and the arithmetic of failed deliveries: delays, queue names, headers. No I/O.

A processor with a policy re-publishes a delivery whose handler raised to a *delay queue*,
``<queue>.retry.<delay in ms>``: a queue nobody consumes, whose ``x-message-ttl`` is that
delay and which dead-letters expired messages back to ``<queue>`` through the nameless
exchange. RabbitMQ does the waiting, so a retry survives a restart of the component (and,
with durable queues, of the broker). One queue per delay, because a classic queue expires
messages only from its head: messages that share one TTL expire in the order they came.
After the last attempt the delivery goes to ``<queue>.dead``, where a person can look at it
(``postage dead list``) and put it back once the bug is fixed (``postage dead replay``).

The headers a failed delivery carries:

- ``x-postage-attempt``: how many runs of its handlers have failed (1 after the first);
- ``x-postage-error``: the last failure, ``"ExceptionName: text"``;
- ``x-postage-errors``: every failure in order (the error history; each entry cut to
  :data:`MAX_ERROR_TEXT` characters, the newest :data:`MAX_HISTORY` kept);
- ``x-postage-queue``: the queue it failed on;
- ``x-postage-handlers``: the handlers (attribute names) that failed, so a retry runs only
  those and the handlers of the same message that succeeded do not run twice;
- ``x-postage-dead-reason`` (dead messages only): why it was parked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_REASON_HEADER",
    "ERRORS_HEADER",
    "ERROR_HEADER",
    "HANDLERS_HEADER",
    "QUEUE_HEADER",
    "Decision",
    "RetryPolicy",
    "dead_queue",
    "dead_queue_flags",
    "decide_malformed",
    "delay_queue",
    "delay_queue_flags",
    "describe_error",
    "failed_attempts",
    "failed_handlers",
    "replay_headers",
]

ATTEMPT_HEADER = "x-postage-attempt"
ERROR_HEADER = "x-postage-error"
ERRORS_HEADER = "x-postage-errors"
QUEUE_HEADER = "x-postage-queue"
HANDLERS_HEADER = "x-postage-handlers"
DEAD_REASON_HEADER = "x-postage-dead-reason"

MAX_ERROR_TEXT = 1000
MAX_HISTORY = 50

# What the broker adds when it dead-letters or redelivers: dropped when we re-publish (our
# own headers tell the story; a quorum queue's x-delivery-count must start again).
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"RetryPolicy {what} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failing message handler runs again.

    ``attempts`` counts every run of the handler, the first included (``attempts=1``: no
    retry, straight to the dead queue after one failure). The n-th retry waits
    ``min(delay * multiplier ** (n - 1), max_delay)`` seconds, in whole milliseconds (at
    least 1 ms: RabbitMQ's TTL unit).
    """

    attempts: int = 5
    delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or (
                self.attempts < 1):
            raise ValueError(f"RetryPolicy attempts counts every run, the first included: an "
                             f"integer >= 1, not {self.attempts!r}")
        if _number(self.delay, "delay") <= 0:
            raise ValueError(f"RetryPolicy delay is seconds > 0, not {self.delay!r}")
        if _number(self.multiplier, "multiplier") < 1:
            raise ValueError(f"RetryPolicy multiplier must be >= 1 (delays never shrink), not "
                             f"{self.multiplier!r}")
        if _number(self.max_delay, "max_delay") < self.delay:
            raise ValueError(f"RetryPolicy max_delay ({self.max_delay!r}) must be >= delay "
                             f"({self.delay!r})")

    @property
    def retries(self) -> int:
        """How many times a message may be retried (attempts after the first)."""
        return self.attempts - 1

    def delay_for(self, retry: int) -> float:
        """Seconds the ``retry``-th retry (1-based) waits."""
        if retry < 1:
            raise ValueError(f"retries are counted from 1, not {retry!r}")
        try:
            seconds = self.delay * self.multiplier ** (retry - 1)
        except OverflowError:  # far past max_delay
            return self.max_delay
        return min(seconds, self.max_delay)

    def delay_ms(self, retry: int) -> int:
        """:meth:`delay_for` in whole milliseconds (the delay queue's ``x-message-ttl``)."""
        return max(1, round(self.delay_for(retry) * 1000))

    def delays(self) -> list[float]:
        """The delay of every retry, in order."""
        return [self.delay_ms(n) / 1000 for n in range(1, self.attempts)]

    def delay_queues(self, queue: str) -> list[str]:
        """The delay queues of ``queue`` this policy may use, each once, shortest first."""
        return list(dict.fromkeys(delay_queue(queue, self.delay_ms(n))
                                  for n in range(1, self.attempts)))

    def decide(self, queue: str, headers: Mapping[str, Any] | None, error: str,
               handlers: Iterable[str] = ()) -> Decision:
        """What to do with a delivery of ``queue`` whose handlers ``handlers`` failed with
        ``error`` ("ExceptionName: text"): retry it through a delay queue, or park it in the
        dead queue when this was the last attempt."""
        attempt = failed_attempts(headers) + 1
        history = [*_errors(headers), _cut(error)][-MAX_HISTORY:]
        out = _clean(headers)
        out.update({ATTEMPT_HEADER: attempt, ERROR_HEADER: history[-1], ERRORS_HEADER: history,
                    QUEUE_HEADER: queue})
        names = sorted(set(handlers))
        if names:
            out[HANDLERS_HEADER] = names
        if attempt < self.attempts:
            ms = self.delay_ms(attempt)
            return Decision("retry", delay_queue(queue, ms), out, attempt, ms / 1000)
        out[DEAD_REASON_HEADER] = (f"failed {attempt} of {self.attempts} attempts"
                                   if self.attempts > 1 else "failed (no retry)")
        return Decision("dead", dead_queue(queue), out, attempt)


@dataclass(frozen=True)
class Decision:
    """Where a failed delivery goes: ``action`` ``"retry"`` or ``"dead"``, the queue to
    publish it to (through the nameless exchange), the headers it carries there, the attempt
    that failed and, for a retry, how long it waits."""

    action: str
    queue: str
    headers: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    delay: float | None = None


def delay_queue(queue: str, delay_ms: int) -> str:
    """``<queue>.retry.<delay in ms>``."""
    return f"{queue}.retry.{delay_ms}"


def dead_queue(queue: str) -> str:
    """``<queue>.dead``."""
    return f"{queue}.dead"


def _queue_type(queue_flags: Mapping[str, Any] | None) -> dict[str, Any]:
    arguments = (queue_flags or {}).get("arguments") or {}
    kind = arguments.get("x-queue-type")
    return {"x-queue-type": kind} if kind == "quorum" else {}


def delay_queue_flags(queue: str, delay_ms: int,
                      queue_flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``queue_declare`` flags of a delay queue: durable, TTL = the delay, dead-lettered back
    to ``queue`` through the nameless exchange; a quorum queue's delay queues are quorum too
    (replicated like the queue they serve)."""
    return {"durable": True, "arguments": {
        "x-message-ttl": delay_ms, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue, **_queue_type(queue_flags)}}


def dead_queue_flags(queue_flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``queue_declare`` flags of a dead queue: durable (quorum when ``queue`` is)."""
    arguments = _queue_type(queue_flags)
    return {"durable": True, "arguments": arguments} if arguments else {"durable": True}


def decide_malformed(queue: str, headers: Mapping[str, Any] | None, reason: str) -> Decision:
    """A delivery that is no Postage envelope (or in a content type the encoder cannot
    read) goes straight to the dead queue, with the reason, when a policy exists."""
    out = _clean(headers)
    text = _cut(f"MessageFormatError: {reason}")
    out.update({ERROR_HEADER: text, ERRORS_HEADER: [*_errors(headers), text][-MAX_HISTORY:],
                QUEUE_HEADER: queue, DEAD_REASON_HEADER: f"malformed: {_cut(reason)}"})
    out.setdefault(ATTEMPT_HEADER, failed_attempts(headers))
    return Decision("dead", dead_queue(queue), out, failed_attempts(headers))


def replay_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of a dead message put back on its queue: the failure count starts again
    (it gets the policy's attempts anew), the history stays for whoever looks later."""
    out = _clean(headers)
    for name in (ATTEMPT_HEADER, ERROR_HEADER, DEAD_REASON_HEADER):
        out.pop(name, None)
    return out


def describe_error(error: BaseException) -> str:
    """``"ExceptionName: text"`` (the name alone when there is no text)."""
    text = str(error)
    return _cut(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def failed_attempts(headers: Mapping[str, Any] | None) -> int:
    """How many runs have failed, from ``x-postage-attempt`` (0 when absent or not a count:
    a header someone else set must not stop a message from being handled)."""
    value = (headers or {}).get(ATTEMPT_HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def failed_handlers(headers: Mapping[str, Any] | None) -> frozenset[str]:
    """The handler attribute names ``x-postage-handlers`` names (empty: run them all)."""
    value = (headers or {}).get(HANDLERS_HEADER)
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(_text(item) for item in value if isinstance(item, str | bytes))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 1] + "…"


def _errors(headers: Mapping[str, Any] | None) -> list[str]:
    value = (headers or {}).get(ERRORS_HEADER)
    if not isinstance(value, list | tuple):
        return []
    return [_text(item) for item in value]


def _clean(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (headers or {}).items()
            if not key.startswith(_BROKER_HEADERS)}
