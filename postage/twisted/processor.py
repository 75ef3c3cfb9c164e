"""MessageProcessor on Twisted: deliveries → the class's dispatch table → handlers.

A delivery is dispatched the moment pika hands it over (no scheduler tick in between), and
acked once its handlers have finished: a handler may return a value, a Deferred or be
``async def``. Bad input never stops the processor: a delivery that is not a Postage
envelope is rejected without requeue (a dead-letter exchange keeps it) and logged once; a
handler that raises is logged with its traceback, and an RPC caller gets
``MessageResultException(name, text)``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from time import perf_counter
from typing import Any

from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from postage import otel, stats, tracing
from postage.errors import MessageFormatError
from postage.fingerprint import fingerprint_dict
from postage.handlers import HandlerRegistry, HandlerSpec, MessageHandler
from postage.handlers import call_handler as default_call_handler
from postage.messages import MessageResultError, MessageResultException, decode_envelope
from postage.microthreads import MicroThread
from postage.retry import RetryPolicy
from postage.twisted import awaitables, restart
from postage.twisted.consumer import GenericConsumer
from postage.twisted.control import ControlResponder
from postage.twisted.delivery import Delivery
from postage.twisted.failures import Failed, FailurePolicy, check_knobs, failures_of
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneShot
from postage.twisted.reactors import default_reactor
from postage.twisted.rpcserver import Redeliveries, RemoteControl, readable, reply_function

__all__ = ["MessageProcessor"]

log = PostageLogger()

_BUILTINS = ("msg_quit", "msg_restart")
_CONTROL = frozenset({"quit", "restart"})
_FAILED = Failed(None, None)  # an RPC nobody handles: failed, never retried


class MessageProcessor(MicroThread, HandlerRegistry):
    """A microthread that consumes ``eqk`` and runs the handlers of this class.

    ``self.consumer`` is a ``consumer_class`` instance (``prefetch_count`` forwarded);
    ``self.fingerprint`` is the fingerprint's dict form. ``remote_control = False`` removes
    the built-in ``('command', 'quit')`` and ``('command', 'restart')`` handlers.
    ``remote_control_users`` are the broker users whose ``quit`` / ``restart`` are obeyed
    (default: the processor's own user); the broker validates the ``user_id`` property, so it
    cannot be forged. ``stop_timeout`` bounds how long :meth:`stop` waits for running
    handlers; messages whose handlers have not finished by then are delivered again.
    ``discoverable = False`` opts out of answering ``describe`` on ``postage.control``.
    ``self.stats`` holds the processor's counters (plain integers, read when asked).

    Two hooks let another object own the handlers (the blocking facade wraps a processor
    this way): ``handlers`` is the object whose class's dispatch table is used and on which
    handlers are called (default: the processor itself; an owner that wants the built-in
    ``quit`` and ``restart`` defines them, e.g. by calling this processor's); and
    ``call_handler(owner, spec, body, reply_func)`` runs one handler and returns its value,
    a Deferred or an awaitable (default :func:`postage.handlers.call_handler`, on the reactor
    thread). ``consumer_class`` may also be given as a keyword, as any callable taking the
    consumer's arguments.
    """

    consumer_class: type[GenericConsumer] = GenericConsumer
    eqk: list[Any] = []
    prefetch_count = 10
    remote_control = True
    remote_control_users: Iterable[str] | None = None
    connect_timeout: float = 10
    stop_timeout: float = 60  # how long stop() waits for running handlers
    discoverable = True  # answer describe on postage.control
    retry: RetryPolicy | None = None  # see postage.twisted.failures
    handler_timeout: float | None = None
    max_concurrency: int | None = None  # None: prefetch_count

    def __init__(self, fingerprint: Any = None, eqk: list[Any] | None = None,
                 hup: Mapping[str, Any] | None = None, vhost: str | None = None, *,
                 reactor: Any = None, handlers: Any = None,
                 call_handler: Callable[[Any, HandlerSpec, Mapping[str, Any], Any], Any]
                 | None = None, **knobs: Any) -> None:
        for knob in ("prefetch_count", "remote_control", "remote_control_users",
                     "connect_timeout", "stop_timeout", "discoverable", "consumer_class",
                     "retry", "handler_timeout", "max_concurrency"):
            if knob in knobs:
                setattr(self, knob, knobs.pop(knob))
        if knobs:
            raise TypeError(f"unknown processor option(s) {sorted(knobs)}")
        check_knobs(self.retry, self.handler_timeout, self.max_concurrency)
        self._hup, self._vhost = hup, vhost  # for the producer that re-publishes failures
        self.reactor = reactor = default_reactor(reactor)
        self.fingerprint = fingerprint_dict(fingerprint)
        self.consumer = self.consumer_class(
            eqk if eqk is not None else self.eqk, hup, vhost, reactor=reactor,
            name=self.fingerprint.get("name"), prefetch_count=self.prefetch_count,
            connect_timeout=self.connect_timeout)
        self.encoder = self.consumer.encoder
        self.handlers = self if handlers is None else handlers
        self.call_handler = default_call_handler if call_handler is None else call_handler
        table = type(self.handlers).dispatch_table
        self.dispatch = table if self.remote_control else table.without(_BUILTINS)
        self._user = self.consumer.settings.user  # set as user_id on what we publish
        self._remote = RemoteControl(self.remote_control_users if
                                     self.remote_control_users is not None else (self._user,))
        self._redeliveries = Redeliveries()
        self.quit_requested = False
        self.connection_error: Exception | None = None  # why its consumer gave up
        self._in_flight = 0
        self._idle: list[defer.Deferred[None]] = []
        self._running = False
        self._stopping: OneShot | None = None
        self._stopped = OneShot()  # fires with quit_requested
        self._started: OneShot | None = None
        self.stats = stats.ProcessorStats()
        self.failures = FailurePolicy(self.retry, self.dispatch.retry_policies(), reactor,
                                      self.stats.count)
        self.counters = self.failures.counters  # retried, dead, timed_out
        if self.failures.active:
            self.consumer.topology.side_queues = self.failures.side_queues
            self.failures.queues = lambda: self.consumer.topology.queues
        self._concurrency = self.max_concurrency or self.prefetch_count
        self._active = 0  # deliveries whose handlers run
        self._waiting: deque[Delivery] = deque()  # past max_concurrency, in arrival order
        self.control = ControlResponder(self, hup, vhost) if self.discoverable else None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> defer.Deferred[MessageProcessor]:
        """Connect and consume; fires once every queue is being consumed. Calling it again
        (a scheduler does) waits for the same start."""
        if self._started is None:
            self._running = True
            self._started = OneShot()
            stats.components.add(self)
            if self.control is not None:
                self.control.start()  # not waited for: discovery never delays the work
            d = self.failures.start(self.fingerprint, self._hup, self._vhost,
                                    self.connect_timeout)
            d.addCallback(lambda _: self.consumer.start(self._on_delivery))
            self.consumer.gave_up.addCallback(self._on_gave_up)
            d.addCallbacks(lambda _: self, self._not_started).addBoth(self._started.fire)
        return self._started.when()

    def _not_started(self, failure: Failure) -> Failure:
        stats.components.discard(self)  # (a service retrying builds a new processor)
        if self.control is not None:
            self.control.stop()
        return failure

    def when_stopped(self) -> defer.Deferred[bool]:
        """Fires once the processor has stopped, with True when a ``quit`` message stopped
        it (so whoever runs it should end too)."""
        return self._stopped.when()

    def stop(self) -> defer.Deferred[None]:
        """Stop consuming, let running handlers finish (and ack), then close."""
        if self._stopping is None:
            self._stopping = OneShot()
            self._stop().addBoth(self._stopping.fire)
        return self._stopping.when()

    @defer.inlineCallbacks
    def _stop(self) -> Any:
        self._running = False
        try:
            yield self.consumer.stop_consuming()
        except Exception as exc:  # noqa: BLE001 - a dead channel has nothing left to cancel
            log.debug("stop: {error}", error=exc)
        if self._in_flight:
            idle: defer.Deferred[None] = defer.Deferred()
            self._idle.append(idle)
            try:
                yield idle.addTimeout(self.stop_timeout, self.reactor)
            except defer.TimeoutError:
                log.warn("{n} handlers still running after {s}s: closing anyway (the broker "
                         "delivers their messages again)", n=self._in_flight, s=self.stop_timeout)
        for waiting in self._waiting:  # never started: the broker delivers them again
            waiting.reject(requeue=True)
        self._waiting.clear()
        try:
            yield self.consumer.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("close: {error}", error=exc)
        try:
            yield self.failures.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("close: {error}", error=exc)
        if self.control is not None:
            yield self.control.stop()
        stats.components.discard(self)
        self._stopped.fire(self.quit_requested)

    def _on_gave_up(self, error: Exception) -> None:
        # the consumer reconnects by itself; it gives up only when retrying cannot help
        if self._running:
            log.error("{name} stops: {error}", name=type(self.handlers).__name__, error=error)
            self.connection_error = error
            self.stop()

    # ---- built-in remote control -------------------------------------------------------

    @MessageHandler("command", "quit")
    def msg_quit(self, content: Any) -> None:
        """Stop this processor (after this message is acked) and end its scheduler."""
        self.quit_requested = True
        self.reactor.callFromThread(self.stop)

    @MessageHandler("command", "restart")
    def msg_restart(self, content: Any) -> None:
        """Ack, stop the whole process gracefully, then re-execute its command line."""
        self.reactor.callFromThread(restart.request, self.reactor)

    # ---- dispatch ----------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        if not self._running:  # stopping: the broker keeps it for the next consumer
            delivery.reject(requeue=True)
            return
        if self._active >= self._concurrency:
            self._waiting.append(delivery)  # max_concurrency
            return
        self._handle(delivery)

    def _handle(self, delivery: Delivery) -> None:
        content_type = delivery.properties.content_type
        if content_type is not None and content_type != self.encoder.content_type and (
                not readable(content_type, self.encoder.content_type)):
            self._reject(delivery, f"content type {content_type!r} is not "
                         f"{self.encoder.content_type!r}")
            return
        try:
            message = decode_envelope(delivery.body, self.encoder)
        except MessageFormatError as exc:
            self._reject(delivery, str(exc))
            return
        specs = self.dispatch.lookup(message)
        if (message["category"] == "rpc" and delivery.redelivered
                and self._redeliveries.poisonous(delivery)):
            self._reject(delivery, "an RPC request delivered again and again (it may "
                         "break the connection that answers it)")
            return
        # the delivery's trace, continued by whatever its handlers publish (their messages'
        # parent is the delivery's span)
        headers = delivery.properties.headers
        parent = tracing.parse(headers.get("traceparent")) if headers else None
        context = parent if parent is not None else tracing.new_context()
        span = otel_token = None
        tracer = otel.tracer()
        if tracer is not None:  # OpenTelemetry is set up: the handlers run in a span
            span = otel.start_process(tracer, parent, delivery)
            context = otel.trace_context(span)
            otel_token = otel.attach(span)
        token = tracing.current.set(context)
        started = perf_counter()
        try:
            result = self._dispatch(delivery, message, specs, context)
        finally:
            tracing.current.reset(token)
            if otel_token is not None:
                otel.detach(otel_token)
        if not isinstance(result, defer.Deferred):
            self._settle(delivery, message, failures_of(result))
            self.stats.finished(delivery.queue, message["type"], message["name"],
                                result is None, perf_counter() - started)
            if span is not None:
                otel.end(span, result is None, "a handler raised")
        else:
            self._in_flight += 1
            self._active += 1
            self.failures.began(delivery, message)
            result.addBoth(self._finished, delivery, message, started, span)

    def _dispatch(self, delivery: Delivery, message: dict[str, Any], specs: list[Any],
                  context: Any) -> Any:
        """Run the handlers: None when all finished at once, a :class:`Failed` (or a list of
        them) when some raised at once, else a Deferred (firing with those, if some did)."""
        if message["category"] == "rpc":
            reply = self._reply_func(delivery, context)
            if not specs:
                reply(MessageResultError(
                    f"no handler for {message['type']}/{message['name']} in "
                    f"{type(self.handlers).__name__}"))
                return _FAILED
            return self._run(specs[0], message, reply)  # not retried: the caller retries
        if message["name"] in _CONTROL and specs and specs[0].attr in _BUILTINS and (
                not self._remote.allowed(delivery, message)):
            specs = [spec for spec in specs if spec.attr not in _BUILTINS]
        if self.failures.active and delivery.properties.headers:
            specs = self.failures.select(specs, delivery.properties)  # a retry: who failed
        failed: list[Failed] = []
        pending = []
        for spec in specs:
            outcome = self._run(spec, message, None)
            if outcome is None:
                continue
            if isinstance(outcome, Failed):
                failed.append(outcome)
            else:
                pending.append(outcome)
        if not pending:
            return failed or None
        if failed:
            pending.append(defer.succeed(failed))
        return pending[0] if len(pending) == 1 else defer.gatherResults(pending)

    def _run(self, spec: Any, message: dict[str, Any], reply: Any) -> Any:
        """Run one handler: None when it finished at once, ``_FAILED`` when it raised at
        once, else a Deferred that never fails (errors are logged and, for RPC, answered;
        it then fires with ``_FAILED``)."""
        try:
            outcome = self.call_handler(self.handlers, spec, message, reply)
        except Exception:  # noqa: BLE001 - a handler's error must not stop the processor
            return self._handler_failed(Failure(), spec, message, reply)
        if outcome is None:  # the common case: finished at once (skips the awaitable check)
            return None
        if not isinstance(outcome, defer.Deferred):
            if not inspect.isawaitable(outcome):
                return None
            outcome = awaitables.deferred(outcome)
        return self._time_limit(outcome, spec, message).addErrback(
            self._handler_failed, spec, message, reply, tracing.current.get())

    def _time_limit(self, d: defer.Deferred[Any], spec: Any, message: dict[str, Any]
                    ) -> defer.Deferred[Any]:
        """``d`` cancelled after ``handler_timeout`` (a subclass running handlers in threads
        calls this on the thread's Deferred too)."""
        return self.failures.with_timeout(d, self.handler_timeout, spec, message)

    def _handler_failed(self, failure: Failure, spec: Any, message: dict[str, Any],
                        reply: Any, context: Any = None) -> object:
        context = context or tracing.current.get()
        log.failure("handler {handler} failed on {type}/{name}", failure, LogLevel.error,
                    handler=spec.attr, type=message["type"], name=message["name"],
                    trace_id=None if context is None else context.trace_id)
        if reply is not None:
            reply(MessageResultException(type(failure.value).__name__, str(failure.value)))
        return Failed(spec, failure)

    def _finished(self, result: Any, delivery: Delivery, message: dict[str, Any],
                  started: float, span: Any = None) -> None:
        self.failures.ended(delivery)
        self._active -= 1
        self._in_flight -= 1  # _settle counts a re-publish that waits for its confirm
        failed = failures_of(result)
        self._settle(delivery, message, failed)
        self.stats.finished(delivery.queue, message["type"], message["name"], not failed,
                            perf_counter() - started)
        if span is not None:
            otel.end(span, not failed, "a handler raised")
        self._check_idle()
        while self._waiting and self._active < self._concurrency and self._running:
            self._handle(self._waiting.popleft())

    def _settle(self, delivery: Delivery, message: dict[str, Any], failed: list[Failed]
                ) -> None:
        """Ack, or (handlers failed, a policy applies) re-publish and ack once confirmed.
        RPC requests are never retried (and were acked by their reply)."""
        if not failed or message["category"] == "rpc":
            delivery.ack()
            return
        d = self.failures.settle(delivery, message, failed)
        if d is not None:
            self._in_flight += 1
            d.addBoth(self._republished)

    def _republished(self, _: Any) -> None:
        self._in_flight -= 1
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._in_flight and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                if not d.called:  # (not when stop() stopped waiting for it)
                    d.callback(None)

    def _reject(self, delivery: Delivery, why: str) -> None:
        """A delivery that is no Postage envelope: to the dead queue with the reason when a
        policy exists, else rejected (a dead-letter exchange, if set, keeps it)."""
        log.warn("rejected a delivery from {exchange!r}/{key!r}: {why}",
                 exchange=delivery.exchange, key=delivery.routing_key, why=why)
        if not self.failures.malformed(delivery, why):
            delivery.reject()
            self.stats.count(delivery.queue, "", "", "rejected")

    def _reply_func(self, delivery: Delivery, context: Any = None) -> Any:
        """The function an RPC handler answers with (see :func:`reply_function`)."""
        return reply_function(delivery, encoder=self.encoder, fingerprint=self.fingerprint,
                              user=self._user, publish=self.consumer.publish,
                              answered=self._answered, context=context)

    def _answered(self) -> None:
        self.stats.rpc_answered += 1
