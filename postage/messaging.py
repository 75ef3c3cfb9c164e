"""The blocking API of Postage 3.0.3, for scripts: every 3.0.3 name in one place.

``GenericProducer``, ``GenericConsumer``, ``MessageProcessor`` and ``MicroScheduler`` here
are a facade over :mod:`postage.twisted`, not a second implementation: the reactor runs in a
daemon thread (started on first use, stopped at exit) and each call waits for its Deferred
with ``blockingCallFromThread``. So ``reply = producer.rpc_echo("hi")`` returns the result
message, and ``producer.message_ping()`` returns once the broker confirmed the message.

Handlers of a facade processor run in a worker thread of their own, one at a time in arrival
order (as in 3.0.3), so they may block and may use a blocking producer themselves.

Importing this module does not install a reactor; the first producer or processor does.
Under twistd or ``postage run`` the facade uses the reactor already running there, and its
methods, called on the reactor thread, return Deferreds (they cannot block it).
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import Any

# The pure core's names, re-exported: this module is where 3.0.3 code finds them all.
from postage import *  # noqa: F403
from postage import __all__ as _core_names
from postage import tracing
from postage.handlers import call_handler
from postage.messages import Message
from postage.microthreads import ExitScheduler
from postage.microthreads import MicroScheduler as _PureMicroScheduler
from postage.twisted import consumer as _consumer
from postage.twisted import processor as _processor
from postage.twisted import producer as _producer

__all__ = sorted(
    {*_core_names, "GenericConsumer", "GenericProducer", "MessageProcessor"} - {"__version__"}
)


class _ReactorThread:
    """The reactor the facade uses: the one already running in this process (twistd,
    ``postage run``), else one started in a daemon thread on first use, stopped at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reactor: Any = None
        self.thread: threading.Thread | None = None

    def get(self) -> Any:
        with self._lock:
            if self.reactor is None:
                from twisted.internet import reactor  # noqa: PLC0415
                from twisted.python import threadable  # noqa: PLC0415

                self.reactor = reactor
                if not (reactor.running or threadable.isInIOThread()):
                    self.thread = threading.Thread(
                        target=reactor.run, kwargs={"installSignalHandlers": False},
                        name="postage-reactor", daemon=True)
                    self.thread.start()
                    atexit.register(self.stop)
            return self.reactor

    def stop(self) -> None:
        if self.reactor is not None and self.thread is not None and self.thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self.thread.join(timeout=10)


_reactor_thread = _ReactorThread()


def blocking_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` on the reactor thread and wait for its result (a Deferred's too);
    a failure is raised here. Called on the reactor thread itself (a 3.0.3 component run by
    twistd), it cannot wait: it returns what ``function`` returns, Deferreds included."""
    from twisted.internet.threads import blockingCallFromThread  # noqa: PLC0415
    from twisted.python import threadable  # noqa: PLC0415

    reactor = _reactor_thread.get()
    if threadable.isInIOThread():
        return function(*args, **kwargs)
    # in the caller's context: a publish from a handler thread continues the handler's trace
    return blockingCallFromThread(reactor, contextvars.copy_context().run, function, *args,
                                  **kwargs)


class GenericProducer(_producer.GenericProducer):
    """The 3.0.3 producer: ``message_NAME()`` returns once the broker confirmed it,
    ``rpc_NAME()`` returns the result message. Connects when made: a bad password or an
    unreachable broker raises a :class:`PostageError` here."""

    def __init__(self, fingerprint: Any = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, **knobs: Any) -> None:
        init = super().__init__
        reactor = _reactor_thread.get()

        def start() -> Any:
            init(fingerprint, hup, vhost, reactor=reactor, **knobs)
            return self.ready

        blocking_call(start)

    def send(self, name: str, *args: Any, **kwds: Any) -> None:
        blocking_call(super().send, name, *args, **kwds)

    def message(self, *args: Any, **kwds: Any) -> None:
        blocking_call(super().message, *args, **kwds)

    def forward(self, body: Mapping[str, Any], **options: Any) -> None:
        blocking_call(super().forward, body, **options)

    def call(self, name: str, *args: Any, **kwds: Any) -> Any:
        return blocking_call(super().call, name, *args, **kwds)

    def consume_rpc(self, queue: str, result_len: int = 1, callback: Any = None,
                    timeout: float | None = None) -> list[Message]:
        return blocking_call(super().consume_rpc, queue, result_len, callback, timeout)

    def close(self) -> None:
        blocking_call(super().close)


class GenericConsumer(_consumer.GenericConsumer):
    """The 3.0.3 consumer; a processor drives it on the reactor thread. Its run-time
    ``queue_bind()`` / ``queue_unbind()`` block until the broker answered."""

    def __init__(self, eqk: list[Any] | None = None, hup: Mapping[str, Any] | None = None,
                 vhost: str | None = None, **knobs: Any) -> None:
        knobs.setdefault("reactor", _reactor_thread.get())
        super().__init__(eqk, hup, vhost, **knobs)

    def queue_bind(self, exchange: Any, queue: Any, key: str) -> None:
        blocking_call(super().queue_bind, exchange, queue, key)

    def queue_unbind(self, exchange: Any, queue: str, key: str) -> None:
        blocking_call(super().queue_unbind, exchange, queue, key)


class MessageProcessor(_processor.MessageProcessor):
    """The 3.0.3 processor: ``start()`` / ``stop()`` block; a scheduler runs it with
    ``run()`` or ``for _ in scheduler.main(): pass``. Its handlers run in a worker thread."""

    consumer_class: type = GenericConsumer

    def __init__(self, fingerprint: Any = None, eqk: list[Any] | None = None,
                 hup: Mapping[str, Any] | None = None, vhost: str | None = None,
                 **knobs: Any) -> None:
        knobs.setdefault("reactor", _reactor_thread.get())
        super().__init__(fingerprint, eqk, hup, vhost, **knobs)
        self._stopped_event = threading.Event()
        self._pool: Any = None

    # -- lifecycle, blocking ----------------------------------------------------------

    def start(self) -> MessageProcessor:
        """Connect and consume; returns once every queue is consumed."""
        return blocking_call(self._start_on_reactor)

    def _start_on_reactor(self) -> Any:
        from twisted.python.threadpool import ThreadPool  # noqa: PLC0415

        if self._pool is not None:  # started already (a scheduler starts it again): same start
            return super().start()
        self._stopped_event.clear()
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"postage-{type(self).__name__}")
        self._pool.start()
        self.when_stopped().addCallback(self._on_stopped)
        return super().start().addErrback(self._start_failed)

    def _start_failed(self, failure: Any) -> Any:
        # The pool's threads are not daemons under twistd: left running, the process could
        # not exit after a failed start (a wrong password).
        self._on_stopped(False)
        return failure

    def _on_stopped(self, _quit: bool) -> None:
        if self._pool is not None and self._pool.started:
            self._pool.stop()
        self._stopped_event.set()

    def stop(self) -> Any:
        """Stop consuming, let running handlers finish, close; returns when done."""
        if self._pool is None:
            return None
        return blocking_call(self._stop_processor)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the processor stops (or ``timeout``); True once it has stopped."""
        return self._stopped_event.wait(timeout)

    # -- microthread ------------------------------------------------------------------

    def create(self) -> None:
        self.start()

    def step(self) -> None:
        """Consume until the processor stops; then leave the scheduler (ending it when the
        processor got ``quit``)."""
        while not self._stopped_event.wait(0.5):  # wakes up for Ctrl-C
            pass
        if self.quit_requested:
            raise ExitScheduler
        raise StopIteration

    # -- handlers in the worker thread ------------------------------------------------

    def _run(self, spec: Any, message: dict[str, Any], reply: Any) -> Any:
        from twisted.internet.threads import deferToThreadPool  # noqa: PLC0415

        reactor = self.reactor
        threaded_reply = None
        if reply is not None:
            def threaded_reply(result: Message) -> None:
                reactor.callFromThread(reply, result)

        # the worker thread runs in a copy of this context: it sees the delivery's trace
        d = deferToThreadPool(reactor, self._pool, contextvars.copy_context().run,
                              call_handler, self, spec, message, threaded_reply)
        return d.addErrback(self._handler_failed, spec, message, reply, tracing.current.get())


class MicroScheduler(_PureMicroScheduler):
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

