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
import os
import sys
from collections.abc import Mapping
from typing import Any

from pika import BasicProperties
from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from postage.errors import MessageFormatError
from postage.handlers import HandlerRegistry, MessageHandler, call_handler
from postage.messages import Message, MessageResultError, MessageResultException, decode_envelope
from postage.microthreads import MicroThread
from postage.twisted.consumer import GenericConsumer
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneShot
from postage.twisted.producer import fingerprint_dict

__all__ = ["MessageProcessor"]

log = PostageLogger()

_BUILTINS = ("msg_quit", "msg_restart")


class MessageProcessor(MicroThread, HandlerRegistry):
    """A microthread that consumes ``eqk`` and runs the handlers of this class.

    ``self.consumer`` is a ``consumer_class`` instance (``prefetch_count`` forwarded);
    ``self.fingerprint`` is the fingerprint's dict form. ``remote_control = False`` removes
    the built-in ``('command', 'quit')`` and ``('command', 'restart')`` handlers.
    ``stop_timeout`` bounds how long :meth:`stop` waits for running handlers; messages
    whose handlers have not finished by then are delivered again by the broker.
    """

    consumer_class: type[GenericConsumer] = GenericConsumer
    eqk: list[Any] = []
    prefetch_count = 10
    remote_control = True
    connect_timeout: float = 10
    stop_timeout: float = 60  # how long stop() waits for running handlers

    def __init__(self, fingerprint: Any = None, eqk: list[Any] | None = None,
                 hup: Mapping[str, Any] | None = None, vhost: str | None = None, *,
                 reactor: Any = None, **knobs: Any) -> None:
        for knob in ("prefetch_count", "remote_control", "connect_timeout", "stop_timeout"):
            if knob in knobs:
                setattr(self, knob, knobs.pop(knob))
        if knobs:
            raise TypeError(f"unknown processor option(s) {sorted(knobs)}")
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415
        self.reactor = reactor
        self.fingerprint = fingerprint_dict(fingerprint)
        self.consumer = self.consumer_class(
            eqk if eqk is not None else self.eqk, hup, vhost, reactor=reactor,
            name=self.fingerprint.get("name"), prefetch_count=self.prefetch_count,
            connect_timeout=self.connect_timeout)
        self.encoder = self.consumer.encoder
        self.dispatch = (type(self).dispatch_table if self.remote_control
                         else type(self).dispatch_table.without(_BUILTINS))
        self.quit_requested = False
        self.connection_error: Exception | None = None  # why its consumer gave up
        self._in_flight = 0
        self._idle: list[defer.Deferred[None]] = []
        self._running = False
        self._stopping: OneShot | None = None
        self._stopped = OneShot()  # fires with quit_requested
        self._after_stop: Any = None
        self._started: OneShot | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> defer.Deferred[MessageProcessor]:
        """Connect and consume; fires once every queue is being consumed. Calling it again
        (a scheduler does) waits for the same start."""
        if self._started is None:
            self._running = True
            self._started = OneShot()
            d = self.consumer.start(self._on_delivery)
            self.consumer.gave_up.addCallback(self._on_gave_up)
            d.addCallback(lambda _: self).addBoth(self._started.fire)
        return self._started.when()

    def when_stopped(self) -> defer.Deferred[bool]:
        """Fires once the processor has stopped, with True when a ``quit`` message stopped
        it (so whoever runs it should end too)."""
        return self._stopped.when()

    def stop(self) -> defer.Deferred[None]:
        """Stop consuming, let running handlers finish (and ack), then close."""
        return self._stop_processor()

    def _stop_processor(self) -> defer.Deferred[None]:
        # What the processor itself calls (quit, lost connection), on the reactor thread;
        # stop() is the public name, which the blocking facade overrides.
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
        try:
            yield self.consumer.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("close: {error}", error=exc)
        self._stopped.fire(self.quit_requested)
        if self._after_stop is not None:
            self._after_stop()

    def _on_gave_up(self, error: Exception) -> None:
        # the consumer reconnects by itself; it gives up only when retrying cannot help
        if self._running:
            log.error("{name} stops: {error}", name=type(self).__name__, error=error)
            self.connection_error = error
            self._stop_processor()

    # ---- built-in remote control -------------------------------------------------------

    @MessageHandler("command", "quit")
    def msg_quit(self, content: Any) -> None:
        """Stop this processor (after this message is acked) and end its scheduler."""
        self.quit_requested = True
        self.reactor.callFromThread(self._stop_processor)

    @MessageHandler("command", "restart")
    def msg_restart(self, content: Any) -> None:
        """Ack, stop cleanly, then re-execute the same command line."""
        self._after_stop = self._exec_self
        self.reactor.callFromThread(self._stop_processor)

    def _exec_self(self) -> None:
        log.info("restarting: {argv}", argv=sys.argv)
        os.execv(sys.executable, [sys.executable, *sys.argv])

    # ---- dispatch ----------------------------------------------------------------------

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        tag = method.delivery_tag
        content_type = properties.content_type
        if content_type is not None and content_type != self.encoder.content_type:
            self._reject(channel, tag, method, f"content type {content_type!r} is not "
                         f"{self.encoder.content_type!r}")
            return
        try:
            message = decode_envelope(body, self.encoder)
        except MessageFormatError as exc:
            self._reject(channel, tag, method, str(exc))
            return
        specs = self.dispatch.lookup(message)
        if message["category"] == "rpc":
            reply = self._reply_func(properties)
            if not specs:
                reply(MessageResultError(
                    f"no handler for {message['type']}/{message['name']} in "
                    f"{type(self).__name__}"))
                self.consumer.ack(channel, tag)
                return
            result = self._run(specs[0], message, reply)
        else:
            result = None
            for spec in specs:
                outcome = self._run(spec, message, None)
                if outcome is not None:
                    result = outcome if result is None else defer.gatherResults(
                        [result, outcome])
        if result is None:
            self.consumer.ack(channel, tag)
        else:
            self._in_flight += 1
            result.addBoth(self._finished, channel, tag)

    def _run(self, spec: Any, message: dict[str, Any], reply: Any) -> defer.Deferred[Any] | None:
        """Run one handler; None when it finished at once, else a Deferred that never fails
        (errors are logged and, for RPC, answered)."""
        try:
            outcome = call_handler(self, spec, message, reply)
        except Exception:  # noqa: BLE001 - a handler's error must not stop the processor
            self._handler_failed(Failure(), spec, message, reply)
            return None
        if outcome is None:  # the common case: finished at once (skips the awaitable check)
            return None
        if inspect.isawaitable(outcome):
            outcome = defer.ensureDeferred(outcome)
        if isinstance(outcome, defer.Deferred):
            return outcome.addErrback(self._handler_failed, spec, message, reply)
        return None

    def _handler_failed(self, failure: Failure, spec: Any, message: dict[str, Any],
                        reply: Any) -> None:
        log.failure("handler {handler} failed on {type}/{name}", failure, LogLevel.error,
                    handler=spec.attr, type=message["type"], name=message["name"])
        if reply is not None:
            reply(MessageResultException(failure.type.__name__, str(failure.value)))

    def _finished(self, _result: Any, channel: Any, tag: int) -> None:
        self.consumer.ack(channel, tag)
        self._in_flight -= 1
        if not self._in_flight and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                if not d.called:  # (not when stop() stopped waiting for it)
                    d.callback(None)

    def _reject(self, channel: Any, tag: int, method: Any, why: str) -> None:
        log.warn("rejected a delivery from {exchange!r}/{key!r}: {why}",
                 exchange=method.exchange, key=method.routing_key, why=why)
        self.consumer.reject(channel, tag)

    def _reply_func(self, properties: Any) -> Any:
        """The function an RPC handler answers with: publishes to ``reply_to`` with the
        request's correlation id (3.0.3 callers send none), once."""
        reply_to = properties.reply_to
        correlation_id = properties.correlation_id
        sent = False

        def reply_func(result: Message) -> None:
            nonlocal sent
            if sent:
                log.warn("a handler replied twice to {reply_to}; the second reply is dropped",
                         reply_to=reply_to)
                return
            sent = True
            if not reply_to:
                log.warn("an RPC request without reply_to cannot be answered")
                return
            result.fingerprint = self.fingerprint
            try:
                body = self.encoder.encode(result.body)
            except Exception as exc:  # noqa: BLE001 - answer the caller, keep running
                body = self.encoder.encode(
                    MessageResultException(type(exc).__name__, str(exc)).body)
            properties = BasicProperties(content_type=self.encoder.content_type,
                                          correlation_id=correlation_id)
            self.consumer.publish("", reply_to, body, properties)

        return reply_func
