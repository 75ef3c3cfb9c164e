"""MicroScheduler on the reactor.

Plain microthreads are stepped from a ``LoopingCall`` (every ``interval`` seconds, only while
there are any, so an idle component does not spin the CPU). Processors are not stepped at
all: their deliveries are dispatched the moment they arrive, so the scheduler adds no latency.
It starts them, and ends when one of them receives ``quit``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol, TypeGuard

from twisted.internet import defer, task
from twisted.python.failure import Failure

from postage.microthreads import ExitScheduler, MicroThread
from postage.microthreads import MicroScheduler as PureMicroScheduler
from postage.twisted.logs import PostageLogger
from postage.twisted.oneshot import OneShot
from postage.twisted.reactors import default_reactor

__all__ = ["MicroScheduler"]

log = PostageLogger()


class _Processor(Protocol):
    """What the scheduler needs of a processor it runs beside its microthreads."""

    def start(self) -> Any: ...

    def when_stopped(self) -> defer.Deferred[Any]: ...

    def stop(self) -> defer.Deferred[Any]: ...


def _is_processor(thread: Any) -> TypeGuard[_Processor]:
    return callable(getattr(thread, "start", None)) and callable(
        getattr(thread, "when_stopped", None))


class MicroScheduler(PureMicroScheduler):
    """``start()`` returns a Deferred that fires when the scheduler ends: on
    ``ExitScheduler``, a processor's ``quit``, :meth:`stop`, or — with ``autoquit`` — when
    no thread is left. It errbacks when a processor cannot start, or gives up reconnecting
    (a password or vhost that stopped working); every other thread is stopped first."""

    interval = 0.01

    def __init__(self, autoquit: bool = False, *, reactor: Any = None) -> None:
        super().__init__(autoquit)
        self.reactor = reactor = default_reactor(reactor)
        self._generators: dict[int, Generator[None, None, None]] = {}
        self._loop: task.LoopingCall | None = None
        self._done: defer.Deferred[None] | None = None
        self._ended: OneShot | None = None

    def add_microthread(self, microthread: MicroThread) -> None:
        super().add_microthread(microthread)
        if self._done is not None:
            self._launch(microthread)
            self._run_rounds()

    def start(self) -> defer.Deferred[None]:
        """Start every thread; fires when the scheduler ends (errbacks if a processor
        could not start)."""
        if self._done is None:
            self._done = defer.Deferred()
            # every thread is launched before the first round runs, so that each takes part
            # in it, as in the pure scheduler's main()
            for thread in list(self.microthreads):
                self._launch(thread)
            self._run_rounds()
            self._check_autoquit()
        return self._done

    def _launch(self, thread: Any) -> None:
        if _is_processor(thread):
            thread.when_stopped().addCallback(self._processor_stopped, thread)
            thread.start().addErrback(self._processor_failed, thread)
        else:
            self._generators[id(thread)] = thread.main()

    def _run_rounds(self) -> None:
        """Run a round now and every ``interval`` while plain threads are there."""
        if self._loop is None and self._generators:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)

    def _tick(self) -> None:
        exiting = False
        for thread in list(self.microthreads):
            generator = self._generators.get(id(thread))
            if generator is None:
                continue
            try:
                next(generator)
            except StopIteration:
                self._remove(thread)
            except ExitScheduler:
                self._remove(thread)
                exiting = True
            except Exception:  # noqa: BLE001 - one thread's bug must not stop the others
                log.failure("microthread {thread!r} failed and leaves", thread=thread)
                self._remove(thread)
        if exiting:
            self.stop()
        else:
            self._check_autoquit()

    def _remove(self, thread: Any) -> None:
        self._generators.pop(id(thread), None)
        if thread in self.microthreads:
            self.microthreads.remove(thread)
        if not self._generators and self._loop is not None and self._loop.running:
            self._loop.stop()
            self._loop = None

    def _processor_stopped(self, quit_requested: bool, thread: Any) -> None:
        self._remove(thread)
        error = getattr(thread, "connection_error", None)
        if error is not None:
            self._end(Failure(error))  # whoever runs us decides (the twistd service exits)
        elif quit_requested:
            self.stop()
        else:
            self._check_autoquit()

    def _processor_failed(self, failure: Failure, thread: Any) -> None:
        self._remove(thread)
        self._end(failure)

    def _check_autoquit(self) -> None:
        if self.autoquit and not self.microthreads:
            self.stop()

    def stop(self) -> defer.Deferred[None]:
        """Stop every thread (processors finish their running handlers), then end:
        ``start()``'s Deferred fires. Fires when all that is done."""
        return self._end(None)

    def _end(self, outcome: Failure | None) -> defer.Deferred[None]:
        if self._ended is None:
            ended = self._ended = OneShot()
            self._stop_threads().addBoth(self._finish, outcome, ended)
        return self._ended.when()

    @defer.inlineCallbacks
    def _stop_threads(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._generators.clear()
        threads, self.microthreads = list(self.microthreads), []
        yield defer.DeferredList(
            [thread.stop() for thread in threads if _is_processor(thread)], consumeErrors=True)

    def _finish(self, _: Any, outcome: Failure | None, ended: OneShot) -> None:
        # start()'s Deferred first: whoever waited on stop() finds the scheduler ended
        done = self._done
        if done is not None and not done.called:
            if outcome is None:
                done.callback(None)
            else:
                done.errback(outcome)
        ended.fire(None)
