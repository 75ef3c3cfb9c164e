"""Generator-based microthreads, as in Postage 3.0.3: pure Python, no I/O.

A :class:`MicroThread` is made once with :meth:`~MicroThread.create` and then advanced one
:meth:`~MicroThread.step` per round by a :class:`MicroScheduler`. A step that raises
``StopIteration`` ends its thread; one that raises :class:`ExitScheduler` ends the scheduler
after the current round. (Python 3.7 turned a ``StopIteration`` escaping a generator into
``RuntimeError``, PEP 479, so :meth:`MicroThread.main` catches it; 3.0.3 relied on it leaking.)

On Twisted, ``postage.twisted.MicroScheduler`` runs the same threads from a ``LoopingCall``.
"""

from __future__ import annotations

from collections.abc import Generator

__all__ = ["ExitScheduler", "MicroScheduler", "MicroThread"]


class ExitScheduler(Exception):  # noqa: N818 - the 3.0.3 name
    """Raised by a microthread's ``step()`` to end the scheduler that runs it."""


class MicroThread:
    """A cooperative thread: override :meth:`create` (runs once) and :meth:`step`."""

    def create(self) -> None:
        """Runs once, in the first round, before any step."""

    def step(self) -> None:
        """One slice of work. Raise ``StopIteration`` to end this thread."""

    def main(self) -> Generator[None, None, None]:
        """The generator a scheduler advances: ``create()`` in the first round, then one
        ``step()`` a round. (Creating every thread before stepping any lets a blocking
        step, such as a facade processor's, find its siblings already running.)"""
        self.create()
        yield
        while True:
            try:
                self.step()
            except StopIteration:
                return
            yield


class MicroScheduler:
    """Runs microthreads round-robin: ``for _ in scheduler.main(): pass``.

    With ``autoquit=True`` the scheduler ends when no thread is left; otherwise it keeps
    going (threads may be added later).
    """

    def __init__(self, autoquit: bool = False) -> None:
        self.autoquit = autoquit
        self.microthreads: list[MicroThread] = []

    def add_microthread(self, microthread: MicroThread) -> None:
        """Add a thread; it is created in the next round."""
        self.microthreads.append(microthread)

    def main(self) -> Generator[None, None, None]:
        """One round per iteration: every live thread advances by one step."""
        running: dict[int, tuple[MicroThread, Generator[None, None, None]]] = {}
        while True:
            for thread in self.microthreads:
                if id(thread) not in running:
                    running[id(thread)] = (thread, thread.main())
            if not running and self.autoquit:
                return
            exiting = False
            for key, (thread, generator) in list(running.items()):
                try:
                    next(generator)
                except StopIteration:
                    del running[key]
                    self.microthreads.remove(thread)
                except ExitScheduler:
                    exiting = True
                    del running[key]
                    self.microthreads.remove(thread)
            if exiting:
                return
            yield
