"""A reactor for blocking code: run in a daemon thread, called into with a bounded wait.

The blocking facade (:mod:`postage.messaging`) goes through here for everything it asks of
the Twisted layer. Its reactor is the one already running in the process (twistd,
``postage run``, a Twisted application), else the global reactor run in a daemon thread
started on first use and stopped at exit. Importing this module installs no reactor.

:func:`blocking_call` waits at most ``timeout`` seconds, then raises
:class:`~postage.errors.BrokerConnectionError`: a caller never hangs, whatever the broker or
the network does. Its hand-off is one lock per call (``blockingCallFromThread`` builds a
``Queue`` and a ``maybeDeferred`` each time), which counts on a script's sequential RPC.

After ``os.fork()`` only the forking thread exists in the child: the inherited reactor's
thread is gone, and its selector and waker are shared with the parent. The child's first
call therefore installs a fresh global reactor of the same kind and runs it in a new thread;
facade objects made before the fork belong to the parent (see :func:`check_pid`).
"""

from __future__ import annotations

import atexit
import contextvars
import inspect
import os
import sys
import threading
from _thread import allocate_lock, get_ident
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from twisted.internet import defer
from twisted.python import threadable
from twisted.python.failure import Failure

from postage.errors import BrokerConnectionError
from postage.twisted import awaitables
from postage.twisted.logs import PostageLogger

__all__ = ["Workers", "as_deferred", "blocking_call", "call_within", "check_pid", "get_reactor",
           "on_reactor", "on_reactor_thread"]

log = PostageLogger()


class _ReactorThread:
    """Which reactor the facade uses, and the thread that runs it when nobody else does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reactor: Any = None
        self.thread: threading.Thread | None = None
        self.started = threading.Event()  # set once the thread's reactor runs
        self._forked = False
        self._atexit = False

    def get(self) -> Any:
        reactor = self.reactor
        if reactor is not None:
            return reactor
        with self._lock:
            if self.reactor is None:
                self.reactor = self._start()
            return self.reactor

    def _start(self) -> Any:
        if self._forked:
            reactor = _fresh_global_reactor()
            self._forked = False
        else:
            from twisted.internet import reactor  # noqa: PLC0415
        if reactor.running or threadable.ioThread == get_ident():
            return reactor  # twistd, postage run, a Twisted application: theirs
        self.started = started = threading.Event()
        reactor.callWhenRunning(started.set)
        self.thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                       name="postage-reactor", daemon=True)
        self.thread.start()
        if not self._atexit:
            self._atexit = True  # (inherited by a forked child, with the registration)
            atexit.register(self.stop)
        started.wait(10)  # so that isInIOThread() answers for the new thread at once
        return reactor

    def stop(self) -> None:
        """Stop the reactor this module started (at exit), waiting a little for it."""
        reactor, thread = self.reactor, self.thread
        if reactor is not None and thread is not None and thread.is_alive():
            reactor.callFromThread(reactor.stop)
            thread.join(timeout=10)

    def after_fork_in_child(self) -> None:
        # Only this thread survived the fork: a lock another thread held stays held, and the
        # reactor (its thread gone, its selector shared with the parent) cannot serve here.
        self._lock = threading.Lock()
        if self.reactor is not None or "twisted.internet.reactor" in sys.modules:
            self._forked = True
        self.reactor = None
        self.thread = None
        threadable.ioThread = None  # no reactor thread in the child until one starts


def _fresh_global_reactor() -> Any:
    """Replace the inherited global reactor with a new one of the same kind, so that the
    child's code that imports ``twisted.internet.reactor`` finds a working one too."""
    import twisted.internet  # noqa: PLC0415
    from twisted.internet import main  # noqa: PLC0415

    old: Any = sys.modules.pop("twisted.internet.reactor", None)
    if hasattr(twisted.internet, "reactor"):
        del twisted.internet.reactor
    try:
        reactor = type(old)() if old is not None else None
    except Exception:  # noqa: BLE001 - a kind that cannot be made again: the default one
        reactor = None
    if reactor is None:
        from twisted.internet import default  # noqa: PLC0415

        default.install()
        from twisted.internet import reactor  # noqa: PLC0415

        return reactor
    main.installReactor(reactor)
    return reactor


_holder = _ReactorThread()
os.register_at_fork(after_in_child=_holder.after_fork_in_child)


def get_reactor() -> Any:
    """The facade's reactor, started in a daemon thread on first use when none runs."""
    return _holder.get()


def on_reactor_thread() -> bool:
    """True when the caller runs on the reactor's thread (it must not block there)."""
    return threadable.ioThread == get_ident()


def check_pid(pid: int, what: str) -> None:
    """Raise if an object made in process ``pid`` is used in a forked child: its connection
    belongs to the parent (the child makes its own objects)."""
    if pid != os.getpid():
        raise BrokerConnectionError(
            f"this {what} was made in process {pid}, before os.fork(); a forked child makes "
            "its own producers and processors")


def as_deferred(outcome: Any) -> Any:
    """A handler's outcome as something a Deferred chain waits for: a coroutine or another
    awaitable becomes a Deferred, run on the reactor (asyncio ones too, under the asyncio
    reactor); anything else is returned as it is."""
    if isinstance(outcome, defer.Deferred) or not inspect.isawaitable(outcome):
        return outcome
    return awaitables.deferred(outcome)


class _Slot:
    """Where the reactor thread puts one call's outcome for the thread that waits on it."""

    __slots__ = ("_lock", "failure", "result")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()
        self.result: Any = None
        self.failure: Failure | None = None

    def run(self, function: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            outcome = as_deferred(function(*args, **kwargs))
        except BaseException:  # noqa: BLE001 - handed to the waiting thread, raised there
            self.failed(Failure())
            return
        if isinstance(outcome, defer.Deferred):
            outcome.addCallbacks(self.succeeded, self.failed)
        else:
            self.succeeded(outcome)

    def succeeded(self, result: Any) -> None:
        self.result = result
        self._lock.release()

    def failed(self, failure: Failure) -> None:
        self.failure = failure
        self._lock.release()

    def wait(self, timeout: float, what: str) -> Any:
        if not self._lock.acquire(timeout=max(timeout, 0)):
            raise BrokerConnectionError(f"{what} got no answer within {timeout:g}s "
                                        "(call_timeout)")
        if self.failure is not None:
            self.failure.raiseException()
        return self.result


def blocking_call(timeout: float, function: Callable[..., Any], *args: Any, **kwargs: Any
                  ) -> Any:
    """Run ``function`` on the reactor thread and wait, at most ``timeout`` seconds, for what
    it returns (a Deferred's or a coroutine's result too); its failure is raised here, and
    :class:`BrokerConnectionError` once the time is up (the call may still complete on the
    reactor). Called on the reactor thread itself, it cannot wait: it returns what
    ``function`` returns, Deferreds included."""
    return call_within(timeout, getattr(function, "__name__", "a call"), function, *args,
                       **kwargs)


def call_within(timeout: float, what: str, function: Callable[..., Any], *args: Any,
                **kwargs: Any) -> Any:
    """:func:`blocking_call`, saying ``what`` timed out in its error."""
    reactor = _holder.reactor or _holder.get()
    if threadable.ioThread == get_ident():
        return function(*args, **kwargs)
    thread = _holder.thread
    if thread is not None and not (thread.is_alive() and (
            reactor.running or not _holder.started.is_set())):
        raise BrokerConnectionError(f"{what}: the reactor has stopped (a restart, or the "
                                    "program is ending)")
    slot = _Slot()
    # in the caller's context: a publish from a handler thread continues the handler's trace
    reactor.callFromThread(contextvars.copy_context().run, slot.run, function, args, kwargs)
    return slot.wait(timeout, what)


def on_reactor(function: Callable[..., Any], *args: Any) -> None:
    """Run ``function`` on the reactor thread without waiting for it (now, when already
    there); a failure it returns is logged, never left unhandled."""
    def run() -> None:
        d = defer.maybeDeferred(function, *args)
        d.addErrback(lambda failure: log.failure("{function} failed", failure,
                                                 function=function))

    if on_reactor_thread():
        run()
    else:
        _holder.get().callFromThread(run)


class Workers:
    """Daemon threads that run what they are given in arrival order; with one thread,
    strictly one at a time. Daemons: a handler stuck past a processor's stop cannot keep
    the process from exiting (its message, unacked, is delivered again)."""

    def __init__(self, count: int, name: str) -> None:
        if count < 1:
            raise ValueError(f"handler_threads is at least 1, not {count!r}")
        self.count = count
        self.name = name
        self.idents: set[int] = set()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for number in range(self.count):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        """Queue ``function(*args)``; it must not raise."""
        self._queue.put((function, args))

    def stop(self) -> None:
        """Let each thread finish what is queued, then end; never waits."""
        for _ in self._threads:
            self._queue.put(None)
        self._threads = []

    def running_here(self) -> bool:
        """True in one of these threads (a handler calling its own processor)."""
        return threading.get_ident() in self.idents

    def _work(self) -> None:
        self.idents.add(threading.get_ident())
        try:
            while (item := self._queue.get()) is not None:
                function, args = item
                try:
                    function(*args)
                except Exception:  # noqa: BLE001 - the thread must live on for the next one
                    log.failure("{function} failed in a worker thread", function=function)
        finally:
            self.idents.discard(threading.get_ident())
