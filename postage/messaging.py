"""The blocking API of Postage 3.0.3, for scripts: every 3.0.3 name in one place.

``GenericProducer``, ``GenericConsumer``, ``MessageProcessor`` and ``MicroScheduler`` here
are a facade over :mod:`postage.twisted`, not a second implementation: each holds a Twisted
object and calls its public API on the reactor thread (:mod:`postage.twisted.threaded`: the
running reactor, else one in a daemon thread started on first use). So
``reply = producer.rpc_echo("hi")`` returns the result message, and
``producer.message_ping()`` returns once the broker confirmed the message. Every wait is
bounded by ``call_timeout`` (a knob; default: an RPC call's own bound, timeout × attempts
plus some slack, and 60 s for everything else), then raises :class:`BrokerConnectionError`.

Handlers of a facade processor run in its worker threads (``handler_threads``, default 1:
one at a time in arrival order, as in 3.0.3), so they may block and may use a blocking
producer themselves. A handler that is ``async def`` or returns a Deferred is awaited on the
reactor before its message is acked.

Importing this module does not install a reactor; the first producer or processor does.
Under twistd or ``postage run`` the facade uses the reactor already running there, and its
methods, called on the reactor thread, return the Twisted object's Deferreds (they cannot
block it). After ``os.fork()`` a child makes its own producers and processors, on a reactor
of its own.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

# The pure core's names, re-exported: this module is where 3.0.3 code finds them all.
from postage import *  # noqa: F403
from postage import __all__ as _core_names
from postage.handlers import HandlerRegistry, HandlerSpec, MessageHandler, call_handler
from postage.messages import Message
from postage.microthreads import ExitScheduler, MicroThread
from postage.microthreads import MicroScheduler as _PureMicroScheduler
from postage.twisted import consumer as _consumer
from postage.twisted import processor as _processor
from postage.twisted import producer as _producer
from postage.twisted import threaded

__all__ = sorted(
    {*_core_names, "GenericConsumer", "GenericProducer", "MessageProcessor"} - {"__version__"}
)

DEFAULT_CALL_TIMEOUT: float = 60
#: added to an RPC call's own bound (timeout × attempts): connecting, declaring, the reply
RPC_SLACK: float = 10

_MISSING = object()


def _knobs_of(twisted_class: type) -> set[str]:
    """The class-attribute knobs of a ``postage.twisted`` class: its public data attributes
    (classes such as ``encoder_class`` included), read from its ``postage.twisted`` bases."""
    names: set[str] = set()
    for klass in twisted_class.__mro__:
        if not klass.__module__.startswith("postage.twisted"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or inspect.isfunction(value) or isinstance(
                    value, (property, classmethod, staticmethod)):
                continue
            names.add(name)
    return names


def _class_knobs(facade_class: type, twisted_class: type, skip: set[str]) -> dict[str, Any]:
    """The knobs that a facade subclass sets as class attributes (3.0.3 style), to be given
    to the Twisted object it wraps."""
    knobs = {}
    for name in _knobs_of(twisted_class) - skip:
        value = getattr(facade_class, name, _MISSING)
        if value is not _MISSING:
            knobs[name] = value
    return knobs


class _Facade:
    """What the facade classes share: the Twisted object they hold (``_inner``), bounded
    calls on the reactor thread, and read access to the Twisted object's data."""

    call_timeout: float | None = None
    _inner: Any
    _pid: int
    _readable: frozenset[str] = frozenset()  # properties of the Twisted object to read

    def _bound(self, seconds: float | None = None) -> float:
        if self.call_timeout is not None:
            return self.call_timeout
        return DEFAULT_CALL_TIMEOUT if seconds is None else seconds

    def _call(self, timeout: float, function: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        what = type(self).__name__
        threaded.check_pid(self._pid, what)
        name = function.__name__.removeprefix("_").removesuffix("_on_reactor")
        return threaded.call_within(timeout, f"{what}.{name}()", function, *args, **kwargs)

    def _mirror(self, knobs: Mapping[str, Any]) -> None:
        # A knob reads on the facade as the Twisted object has it (else a subclass's class
        # attribute would hide the value given as a keyword).
        for name in knobs:
            self.__dict__[name] = getattr(self._inner, name, knobs[name])

    def __getattr__(self, name: str) -> Any:
        # Data of the Twisted object (fingerprint, encoder, eks, knobs...) reads through;
        # its methods do not: they would run off the reactor thread.
        inner = self.__dict__.get("_inner")
        if inner is not None and not name.startswith("_"):
            static = inspect.getattr_static(inner, name, _MISSING)
            if static is not _MISSING and (name in self._readable or isinstance(static, type)
                                           or not hasattr(static, "__get__")):
                return getattr(inner, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class GenericProducer(_Facade):
    """The 3.0.3 producer: ``message_NAME()`` returns once the broker confirmed it,
    ``rpc_NAME()`` returns the result message. Connects when made: a bad password or an
    unreachable broker raises a :class:`PostageError` here. Knobs are those of
    :class:`postage.twisted.GenericProducer` (class attributes or keywords), plus
    ``call_timeout``; ``build_message_NAME`` / ``build_rpc_NAME`` of a subclass are used."""

    def __init__(self, fingerprint: Any = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, **knobs: Any) -> None:
        self._pid = os.getpid()
        self.call_timeout = knobs.pop("call_timeout", type(self).call_timeout)
        knobs = {**_class_knobs(type(self), _producer.GenericProducer, {"hup", "vhost"}),
                 **knobs}
        hup = hup if hup is not None else getattr(type(self), "hup", None)
        vhost = vhost if vhost is not None else getattr(type(self), "vhost", None)
        reactor = threaded.get_reactor()
        connect_timeout = knobs.get("connect_timeout", _producer.GenericProducer.connect_timeout)

        waits = not threaded.on_reactor_thread()

        def connect() -> Any:
            self._inner = _producer.GenericProducer(fingerprint, hup, vhost, reactor=reactor,
                                                    builders=self, **knobs)
            self._mirror(knobs)
            return self._inner.ready if waits else None

        # on the reactor thread (twistd) it cannot wait: calls wait for the connection
        self._call(self._bound(max(DEFAULT_CALL_TIMEOUT, connect_timeout + RPC_SLACK)), connect)

    def send(self, name: str, *args: Any, **kwds: Any) -> Any:
        """``message_NAME(...)``: returns once the broker confirmed the message."""
        return self._call(self._bound(), self._inner.send, name, *args, **kwds)

    def message(self, *args: Any, **kwds: Any) -> Any:
        """Send a plain :class:`Message` with these args and keywords."""
        return self._call(self._bound(), self._inner.message, *args, **kwds)

    def forward(self, body: Mapping[str, Any], **options: Any) -> Any:
        """Re-send a decoded body as it is (its own fingerprint kept)."""
        return self._call(self._bound(), self._inner.forward, body, **options)

    def call(self, name: str, *args: Any, **kwds: Any) -> Any:
        """``rpc_NAME(...)``: the result message (or, for ``_queue_only``, a queue name)."""
        inner = self._inner
        attempts = kwds.get("_max_retry", inner.max_retry) + 1
        own_bound = kwds.get("_timeout", inner.rpc_timeout) * max(attempts, 1) + RPC_SLACK
        return self._call(self._bound(own_bound), inner.call, name, *args, **kwds)

    def consume_rpc(self, queue: str, result_len: int = 1, callback: Any = None,
                    timeout: float | None = None) -> list[Message]:
        """The replies read from a ``_queue_only`` queue (see the Twisted producer)."""
        own_bound = (self._inner.rpc_timeout if timeout is None else timeout) + RPC_SLACK
        results: list[Message] = self._call(self._bound(own_bound), self._inner.consume_rpc,
                                            queue, result_len, callback, timeout)
        return results

    def close(self) -> Any:
        """Close the connection."""
        return self._call(self._bound(), self._inner.close)

    def __getattr__(self, name: str) -> Any:
        # The documented dynamic names; kept in the instance once made.
        if name.startswith("message_") and len(name) > 8:
            method = self.__dict__[name] = functools.partial(self.send, name[8:])
            return method
        if name.startswith("rpc_") and len(name) > 4:
            method = self.__dict__[name] = functools.partial(self.call, name[4:])
            return method
        return super().__getattr__(name)


class GenericConsumer(_Facade):
    """The 3.0.3 consumer; a processor drives it on the reactor thread. Its run-time
    ``queue_bind()`` / ``queue_unbind()`` block until the broker answered. Knobs are those of
    :class:`postage.twisted.GenericConsumer` (class attributes or keywords)."""

    _readable = frozenset({"queues", "consuming"})

    def __init__(self, eqk: list[Any] | None = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, **knobs: Any) -> None:
        self._pid = os.getpid()
        self.call_timeout = knobs.pop("call_timeout", type(self).call_timeout)
        reactor = knobs.pop("reactor", None) or threaded.get_reactor()
        knobs = {**_class_knobs(type(self), _consumer.GenericConsumer, {"hup", "vhost"}),
                 **knobs}
        eqk = eqk if eqk is not None else knobs.pop("eqk", None)
        knobs.pop("eqk", None)
        hup = hup if hup is not None else getattr(type(self), "hup", None)
        vhost = vhost if vhost is not None else getattr(type(self), "vhost", None)

        def build() -> None:
            self._inner = _consumer.GenericConsumer(eqk, hup, vhost, reactor=reactor, **knobs)
            self._mirror(knobs)

        self._call(self._bound(), build)

    def queue_bind(self, exchange: Any, queue: Any, key: str) -> Any:
        """Bind (declaring as needed) and consume a new queue; returns once done."""
        return self._call(self._bound(), self._inner.queue_bind, exchange, queue, key)

    def queue_unbind(self, exchange: Any, queue: str, key: str) -> Any:
        """Remove a binding; returns once the broker answered."""
        return self._call(self._bound(), self._inner.queue_unbind, exchange, queue, key)


class MessageProcessor(_Facade, MicroThread, HandlerRegistry):
    """The 3.0.3 processor: ``start()`` / ``stop()`` block; a scheduler runs it with
    ``run()`` or ``for _ in scheduler.main(): pass``. Knobs are those of
    :class:`postage.twisted.MessageProcessor`, plus ``call_timeout`` and ``handler_threads``
    (the worker threads its handlers run in, default 1). ``stop()`` may be called from a
    handler: it then asks for the stop and returns at once."""

    consumer_class: type = GenericConsumer
    handler_threads = 1

    def __init__(self, fingerprint: Any = None, eqk: list[Any] | None = None,
                 hup: Mapping[str, Any] | None = None, vhost: str | None = None,
                 **knobs: Any) -> None:
        self._pid = os.getpid()
        self.call_timeout = knobs.pop("call_timeout", type(self).call_timeout)
        self.handler_threads = knobs.pop("handler_threads", type(self).handler_threads)
        consumer_class = knobs.pop("consumer_class", type(self).consumer_class)
        knobs = {**_class_knobs(type(self), _processor.MessageProcessor,
                                {"consumer_class", "eqk", "dispatch_table"}), **knobs}
        eqk = eqk if eqk is not None else getattr(type(self), "eqk", None)
        self._workers = threaded.Workers(self.handler_threads, f"postage-{type(self).__name__}")
        self._stopped_event = threading.Event()
        self._started = False
        self._restart_requested = False
        self._shutdown_trigger: Any = None
        reactor = threaded.get_reactor()

        def make_consumer(*args: Any, **kwds: Any) -> Any:
            if self.call_timeout is not None:
                kwds.setdefault("call_timeout", self.call_timeout)  # its bind, unbind too
            self.consumer = consumer_class(*args, **kwds)
            return self.consumer._inner  # noqa: SLF001 - our own facade's Twisted consumer

        def build() -> None:
            self._inner = _processor.MessageProcessor(
                fingerprint, eqk, hup, vhost, reactor=reactor, handlers=self,
                call_handler=self._call_handler, consumer_class=make_consumer, **knobs)
            self._mirror(knobs)

        self._call(self._bound(), build)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Any:
        """Connect and consume; returns once every queue is consumed (on the reactor
        thread, a Deferred that fires then). A processor that already ran and stopped
        (``quit``, ``restart``) is not started again."""
        if self._started and self._stopped_event.is_set() and (
                not threaded.on_reactor_thread()):
            return self
        timeout = self._bound(max(DEFAULT_CALL_TIMEOUT, self._inner.connect_timeout + RPC_SLACK))
        return self._call(timeout, self._start_on_reactor)

    def _start_on_reactor(self) -> Any:
        if not self._started:
            self._started = True
            self._stopped_event.clear()
            self._workers.start()
            self._inner.when_stopped().addCallback(self._on_stopped)
            # The reactor stopping (at exit, a restart) stops the processor first: its
            # running handlers finish and are acked, as under twistd.
            self._shutdown_trigger = self._inner.reactor.addSystemEventTrigger(
                "before", "shutdown", self._stop_at_shutdown)
        return self._inner.start().addCallbacks(lambda _: self, self._start_failed)

    def _start_failed(self, failure: Any) -> Any:
        self._on_stopped(False)
        return failure

    def _stop_at_shutdown(self) -> Any:
        self._shutdown_trigger = None
        return self._inner.stop()

    def _on_stopped(self, _quit: bool) -> None:
        # Never joins a worker: a handler still running past stop_timeout may need the
        # reactor (a blocking producer, a reply), which must stay free.
        self._workers.stop()
        self._stopped_event.set()
        if self._shutdown_trigger is not None:
            self._inner.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None

    def when_stopped(self) -> Any:
        """(Reactor thread) fires once the processor has stopped, True after ``quit``."""
        return self._inner.when_stopped()

    def stop(self) -> Any:
        """Stop consuming, let running handlers finish (up to ``stop_timeout``), close;
        returns when done. From one of this processor's handlers, it only asks for the stop
        (waiting would wait for that handler); on the reactor thread, it returns the
        Deferred."""
        if threaded.on_reactor_thread():
            return self._inner.stop()
        if not self._started or self._stopped_event.is_set():
            return None
        if self._workers.running_here():
            threaded.on_reactor(self._inner.stop)
            return None
        self._call(self._inner.stop_timeout + self._bound(), self._inner.stop)
        return None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the processor stops (or ``timeout``); True once it has stopped."""
        return self._stopped_event.wait(timeout)

    # -- built-in remote control: the Twisted processor's, asked from the handler --------

    @MessageHandler("command", "quit")
    def msg_quit(self, content: Any) -> None:
        """Stop this processor (after this message is acked) and end its scheduler."""
        threaded.on_reactor(self._inner.msg_quit, content)

    @MessageHandler("command", "restart")
    def msg_restart(self, content: Any) -> None:
        """Ack, stop cleanly, then re-execute the same command line."""
        self._restart_requested = True  # its scheduler ends, so that the script can end
        threaded.on_reactor(self._inner.msg_restart, content)

    # -- microthread ------------------------------------------------------------------

    def create(self) -> None:
        self.start()

    def step(self) -> None:
        """Consume until the processor stops; then leave the scheduler (ending it when the
        processor got ``quit`` or ``restart``)."""
        while not self._stopped_event.wait(0.5):  # wakes up for Ctrl-C
            pass
        if self._inner.quit_requested or self._restart_requested:
            raise ExitScheduler
        raise StopIteration

    # -- handlers in the worker threads ------------------------------------------------

    def _call_handler(self, owner: Any, spec: HandlerSpec, body: Mapping[str, Any],
                      reply: Any) -> Any:
        """The Twisted processor's ``call_handler`` hook (on the reactor thread): run the
        handler in a worker thread; the Deferred fires on the reactor once it finished, and
        once what it returned (a coroutine, a Deferred) has finished too."""
        from twisted.internet import defer  # noqa: PLC0415

        reactor = self._inner.reactor
        done: defer.Deferred[Any] = defer.Deferred()
        threaded_reply = None
        if reply is not None:
            def threaded_reply(result: Message) -> None:
                if threaded.on_reactor_thread():
                    reply(result)
                else:
                    reactor.callFromThread(reply, result)

        def settle(ok: bool, outcome: Any) -> None:  # on the reactor
            if not ok:
                done.errback(outcome)
                return
            try:
                outcome = threaded.as_deferred(outcome)
            except Exception:  # noqa: BLE001 - a bad awaitable fails this handler only
                done.errback()
                return
            if isinstance(outcome, defer.Deferred):
                outcome.chainDeferred(done)
            else:
                done.callback(outcome)

        def work() -> None:  # in a worker thread
            from twisted.python.failure import Failure  # noqa: PLC0415

            try:
                outcome, ok = call_handler(owner, spec, body, threaded_reply), True
            except BaseException:  # noqa: BLE001 - logged (and answered) on the reactor
                outcome, ok = Failure(), False
            reactor.callFromThread(settle, ok, outcome)

        # the worker runs in a copy of this context: it sees the delivery's trace
        self._workers.submit(contextvars.copy_context().run, work)
        return done


class MicroScheduler(_PureMicroScheduler):  # type: ignore[no-redef] # the core's, plus run()
    """The 3.0.3 scheduler plus :meth:`run`, which blocks until the scheduler ends."""

    def run(self) -> None:
        """Run every microthread until ``quit``, ``ExitScheduler`` or Ctrl-C; returns at once
        when there is none. Processors still running at the end are stopped cleanly.
        Main thread only (Ctrl-C is delivered there)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("MicroScheduler.run() runs in the main thread")
        threads = list(self.microthreads)
        if not threads:
            return
        try:
            for _ in self.main():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            for thread in threads:
                if isinstance(thread, MessageProcessor):
                    thread.stop()
