"""What a processor does when handlers fail: retry through delay queues, park in the dead queue.

:class:`FailurePolicy` is the processor's collaborator for its failure policy. The processor
tells it which handlers of a delivery failed (:class:`Failed`); it picks the policy (the
first failed handler's own ``retry``, else the processor's), asks the pure core
(:mod:`postage.retry`) where the delivery goes, has :class:`~postage.twisted.retries.
Redeliverer` publish it there, and acks the original only once that publish is confirmed.
Without any policy it does what 3.0.3 did: the error was logged, the delivery is acked.

It also counts (``counters["retried"]``, ``["dead"]``, ...: plain integers that the metrics
can read) and watches the consumer's channels, so that when the broker closes one for a
delivery-ack timeout (406 PRECONDITION_FAILED) the log says which handlers were too slow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from postage.errors import UnroutableError
from postage.handlers import HandlerSpec
from postage.retry import RetryPolicy, decide_malformed, describe_error, failed_handlers
from postage.twisted.logs import PostageLogger
from postage.twisted.retries import Redeliverer, side_queues

__all__ = ["Failed", "FailurePolicy", "HandlerTimeout", "check_knobs", "failures_of"]

log = PostageLogger()

_PRECONDITION_FAILED = 406


class HandlerTimeout(Exception):
    """A handler ran longer than the processor's ``handler_timeout``."""


@dataclass(frozen=True)
class Failed:
    """One handler of a delivery that raised (or timed out)."""

    spec: HandlerSpec | None
    failure: Failure | None


def failures_of(result: Any) -> list[Failed]:
    """The :class:`Failed` in what a delivery's handlers ended with (one, or nested lists
    of them from several handlers)."""
    if isinstance(result, Failed):
        return [result]
    if isinstance(result, list):
        return [failed for each in result for failed in failures_of(each)]
    return []


def check_knobs(retry: Any, handler_timeout: Any, max_concurrency: Any) -> None:
    """A processor's failure knobs, refused with a clear error when they are wrong."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry is a RetryPolicy or None, not {retry!r}")
    if handler_timeout is not None and (isinstance(handler_timeout, bool) or not isinstance(
            handler_timeout, int | float) or handler_timeout <= 0):
        raise ValueError(f"handler_timeout is seconds > 0 or None, not {handler_timeout!r}")
    if max_concurrency is not None and (isinstance(max_concurrency, bool) or not isinstance(
            max_concurrency, int) or max_concurrency < 1):
        raise ValueError(f"max_concurrency is an integer >= 1 or None, not "
                         f"{max_concurrency!r}")


class FailurePolicy:
    """See the module docstring. A delivery here has ``ack()``, ``reject(requeue)``,
    ``current`` (its channel is open), ``tag``, ``queue``, ``properties``, ``body`` and
    ``channel``."""

    def __init__(self, default: RetryPolicy | None, handler_policies: list[RetryPolicy],
                 reactor: Any, count: Callable[[str, str, str, str], Any] | None = None
                 ) -> None:
        self.default = default
        self.policies = list(dict.fromkeys(
            [*([default] if default is not None else []), *handler_policies]))
        self.reactor = reactor
        self._count = count  # the processor's stats: (queue, type, name, outcome)
        self.redeliverer: Redeliverer | None = None
        # the processor's consumed queues (name -> flags), to declare their side queues again
        self.queues: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
        # re-published and confirmed: to a delay queue, to the dead queue; handlers cancelled
        self.counters = {"retried": 0, "dead": 0, "timed_out": 0}
        self._watched: set[int] = set()
        self.running: dict[int, tuple[Any, str, str, float]] = {}  # token -> what runs

    @property
    def active(self) -> bool:
        """True when some policy exists: failed deliveries are re-published."""
        return bool(self.policies)

    def side_queues(self, queues: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        return side_queues(queues, self.policies)

    def start(self, fingerprint: Mapping[str, Any], hup: Any, vhost: str | None,
              connect_timeout: float) -> defer.Deferred[Any]:
        """With a policy, the producer that re-publishes failed deliveries (confirmed), on a
        connection of its own named ``<component>.retries``; fires once it is ready."""
        if not self.active:
            return defer.succeed(None)
        from postage.twisted.producer import GenericProducer  # noqa: PLC0415

        name = f"{fingerprint.get('name') or 'postage'}.retries"
        producer = GenericProducer({**fingerprint, "name": name}, hup, vhost,
                                   reactor=self.reactor, connect_timeout=connect_timeout)
        self.redeliverer = Redeliverer(producer)
        return producer.ready

    def close(self) -> defer.Deferred[Any]:
        if self.redeliverer is None:
            return defer.succeed(None)
        return self.redeliverer.close()

    # ---- which handlers run -------------------------------------------------------------

    @staticmethod
    def select(specs: list[HandlerSpec], properties: Any) -> list[HandlerSpec]:
        """A retried delivery runs only the handlers that failed (those that succeeded do
        not run twice), when they still exist; otherwise all of them."""
        names = failed_handlers(properties.headers) if properties.headers else None
        if not names:
            return specs
        chosen = [spec for spec in specs if spec.attr in names]
        return chosen or specs

    # ---- outcome of a delivery -----------------------------------------------------------

    def settle(self, delivery: Any, message: Mapping[str, Any], failed: list[Failed]
               ) -> defer.Deferred[None] | None:
        """Ack a delivery whose handlers all finished; for failed ones, re-publish first when
        a policy applies. Returns a Deferred while a re-publish is unconfirmed."""
        # (an RPC nobody handles is a failure with no handler and no error: never retried)
        handled = [(f.spec, f.failure) for f in failed
                   if f.spec is not None and f.failure is not None]
        if not handled:
            delivery.ack()
            return None
        policy = next((spec.retry for spec, _ in handled if spec.retry is not None),
                      self.default)
        if policy is None or self.redeliverer is None:
            delivery.ack()  # 3.0.3: logged, acked
            return None
        if not delivery.current:
            return None  # the broker delivers it again: re-publishing now would duplicate it
        # (a Failure always holds its exception; Twisted's types say it may not)
        first_error = handled[0][1].value
        assert first_error is not None
        error = describe_error(first_error)
        decision = policy.decide(delivery.queue, delivery.properties.headers, error,
                                 [spec.attr for spec, _ in handled])
        if decision.action == "retry":
            log.info("{type}/{name} failed (attempt {attempt} of {attempts}: {error}); "
                     "retrying in {delay}s", type=message["type"], name=message["name"],
                     attempt=decision.attempt, attempts=policy.attempts, error=error,
                     delay=decision.delay)
        else:
            log.warn("{type}/{name} failed {attempt} times ({error}): parked in {queue!r}",
                     type=message["type"], name=message["name"], attempt=decision.attempt,
                     error=error, queue=decision.queue)
        return self._republish(delivery, decision, policy.delay,
                               (message["type"], message["name"]))

    def malformed(self, delivery: Any, reason: str) -> bool:
        """With a policy, a malformed delivery goes to the dead queue with the reason; False
        when there is none (the processor then rejects it, as without a policy)."""
        if self.redeliverer is None or not self.policies:
            return False
        if not delivery.current:
            return True
        decision = decide_malformed(delivery.queue, delivery.properties.headers, reason)
        self._republish(delivery, decision, self.policies[0].delay)
        return True

    def _republish(self, delivery: Any, decision: Any, backoff: float,
                   what: tuple[str, str] = ("", "")) -> defer.Deferred[None]:
        assert self.redeliverer is not None
        counter = "retried" if decision.action == "retry" else "dead"

        def confirmed(_: Any) -> None:
            self.counters[counter] += 1
            if self._count is not None:
                self._count(delivery.queue, *what, counter)
            delivery.ack()

        def refused(failure: Failure) -> None:
            # not confirmed (the delay or dead queue was deleted, the broker nacked it):
            # the original stays ours, unacked; hand it back to the broker a little later
            # rather than at once, so a queue that stays missing is not a hot loop
            log.error("could not move a failed delivery to {queue!r} ({error}): it goes back "
                      "to {origin!r} in {delay}s", queue=decision.queue, error=failure.value,
                      origin=delivery.queue, delay=backoff)
            if failure.check(UnroutableError) and self.redeliverer is not None:
                # someone deleted a delay or dead queue: declare them again for next time
                self.redeliverer.declare(self.side_queues(self.queues())).addErrback(
                    lambda f: log.error("cannot declare the delay and dead queues again: "
                                        "{error}", error=f.value))
            self.reactor.callLater(backoff, delivery.reject, True)

        d = self.redeliverer.publish(decision, delivery.body, delivery.properties)
        return d.addCallbacks(confirmed, refused)

    # ---- slow handlers -------------------------------------------------------------------

    def with_timeout(self, d: defer.Deferred[Any], timeout: float | None, spec: HandlerSpec,
                     message: Mapping[str, Any]) -> defer.Deferred[Any]:
        """Cancel ``d`` after ``timeout`` seconds and fail it with :class:`HandlerTimeout`,
        logged with the handler's (type, name). A Deferred from a thread cannot stop its
        thread: the delivery fails, and what the thread returns later is ignored."""
        if timeout is None:
            return d
        what = (message["type"], message["name"])

        def timed_out(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError):
                self.counters["timed_out"] += 1
                log.error("handler {handler} of ({type}, {name}) ran longer than {timeout}s: "
                          "cancelled, counted as failed", handler=spec.attr, type=what[0],
                          name=what[1], timeout=timeout)
                return Failure(HandlerTimeout(f"handler {spec.attr} of {what} ran longer "
                                              f"than {timeout}s"))
            return failure

        return d.addTimeout(timeout, self.reactor).addErrback(timed_out)

    def began(self, delivery: Any, message: Mapping[str, Any]) -> None:
        """A delivery's handlers started (for the slow-handler report)."""
        channel = delivery.channel.impl  # pika's channel: its close callbacks get the reason
        self.running[id(delivery)] = (channel, message["type"], message["name"],
                                      self.reactor.seconds())
        if id(channel) not in self._watched:
            self._watched.add(id(channel))
            channel.add_on_close_callback(self._on_channel_closed)

    def ended(self, delivery: Any) -> None:
        self.running.pop(id(delivery), None)

    def _on_channel_closed(self, channel: Any, reason: Any) -> None:
        self._watched.discard(id(channel))
        if getattr(reason, "reply_code", None) != _PRECONDITION_FAILED:
            return
        now = self.reactor.seconds()
        slow = sorted(((now - started, kind, name) for ch, kind, name, started
                       in self.running.values() if ch is channel), reverse=True)
        text = ", ".join(f"({kind}, {name}) running for {age:.1f}s" for age, kind, name in slow)
        log.error("the broker closed the consumer's channel: {reason}; handlers still running "
                  "on it: {slow} (their deliveries come again; the channel is reopened)",
                  reason=reason, slow=text or "none")
