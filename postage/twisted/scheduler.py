"""MicroScheduler on the reactor.

Plain microthreads are stepped from a ``LoopingCall`` (every ``interval`` seconds, only while
there are any, so an idle component does not spin the CPU). Processors are not stepped at
all: their deliveries are dispatched the moment they arrive, so the scheduler adds no latency.
It starts them, and ends when one of them receives ``quit``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import defer, task

from postage.microthreads import ExitScheduler, MicroThread
from postage.microthreads import MicroScheduler as PureMicroScheduler
from postage.twisted.logs import PostageLogger

__all__ = ["MicroScheduler"]

log = PostageLogger()


def _is_processor(thread: Any) -> bool:
    return callable(getattr(thread, "start", None)) and callable(
        getattr(thread, "when_stopped", None))


class MicroScheduler(PureMicroScheduler):
    """``start()`` returns a Deferred that fires when the scheduler ends: on
    ``ExitScheduler``, a processor's ``quit``, :meth:`stop`, or — with ``autoquit`` — when
    no thread is left."""

    interval = 0.01

    def __init__(self, autoquit: bool = False, *, reactor: Any = None) -> None:
        super().__init__(autoquit)
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415
        self.reactor = reactor
        self._generators: dict[int, Generator[None, None, None]] = {}
        self._loop: task.LoopingCall | None = None
        self._done: defer.Deferred[None] | None = None
        self._ending = False

    def add_microthread(self, microthread: MicroThread) -> None:
        super().add_microthread(microthread)
        if _is_processor(microthread):
            microthread.scheduler = self
        if self._done is not None:
            self._launch(microthread)

    def start(self) -> defer.Deferred[None]:
        """Start every thread; fires when the scheduler ends (errbacks if a processor
        could not start)."""
        if self._done is None:
            self._done = defer.Deferred()
            for thread in list(self.microthreads):
                self._launch(thread)
            self._check_autoquit()
        return self._done

    def _launch(self, thread: Any) -> None:
        if _is_processor(thread):
            thread.when_stopped().addCallback(self._processor_stopped, thread)
            thread.start().addErrback(self._processor_failed, thread)
        else:
            self._generators[id(thread)] = thread.main()
            if self._loop is None:
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
        if quit_requested:
            self.stop()
        else:
            self._check_autoquit()

    def _processor_failed(self, failure: Any, thread: Any) -> None:
        self._remove(thread)
        if self._done is not None and not self._done.called:
            self._ending = True
            self.stop().addCallback(lambda _: None)
            done, self._done = self._done, defer.Deferred()
            done.errback(failure)

    def _check_autoquit(self) -> None:
        if self.autoquit and not self.microthreads:
            self.stop()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop every thread (processors finish their running handlers), then end."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._generators.clear()
        threads, self.microthreads = list(self.microthreads), []
        yield defer.DeferredList(
            [thread.stop() for thread in threads if _is_processor(thread)], consumeErrors=True)
        done = self._done
        if done is not None and not done.called and not self._ending:
            done.callback(None)
