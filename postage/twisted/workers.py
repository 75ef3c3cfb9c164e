"""``postage run --workers N``: N worker processes of the same processors, supervised.

The workers are competing consumers of the same queues (the broker spreads deliveries among
them, at most ``prefetch_count`` unacked each), so a CPU-bound component uses more than one
core. The supervisor is a small Twisted service with no broker connection of its own:

- each worker is ``python -m postage.cli run ...`` with the same arguments and
  ``--workers 1``; with ``--metrics-port P`` worker *k* (0, 1, ...) serves on ``P + k``;
- a worker that dies (a signal, or a non-zero exit status) is started again after a delay
  that starts at 0.5 s and doubles up to 30 s (reset once a worker has run for a minute), so a
  component that cannot start does not spin; one that exits 0 (``quit``) is not;
- SIGTERM (and Ctrl-C) is passed on to every worker, which drains — stops consuming, lets its
  running handlers finish and acks them — and the supervisor exits once all have ended
  (those still running after ``drain_timeout`` seconds are killed); a worker whose
  supervisor died (even by SIGKILL) gets SIGTERM too, on Linux, and drains.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol

from postage.twisted.connection import reconnect_policy
from postage.twisted.logs import PostageLogger

__all__ = ["WorkersService", "end_with_supervisor", "worker_arguments"]

log = PostageLogger()

_HEALTHY_AFTER = 60.0  # seconds a worker runs before its restart delay starts over


def end_with_supervisor() -> None:
    """In a worker: be sent SIGTERM (and drain) when the supervisor dies, even by SIGKILL,
    instead of running on unsupervised (Linux's ``PR_SET_PDEATHSIG``; elsewhere nothing)."""
    supervisor = os.environ.get("POSTAGE_SUPERVISOR")
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(supervisor):  # it died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def worker_arguments(arguments: list[str], index: int) -> list[str]:
    """The ``postage run`` options of worker ``index``: ``--workers`` dropped, and
    ``--metrics-port P`` turned into ``P + index`` (each worker serves its own)."""
    out: list[str] = []
    items = iter(arguments)
    for item in items:
        name, sep, value = item.partition("=")
        if name in ("--workers", "--metrics-port"):
            if not sep:
                value = next(items, "")
            if name == "--metrics-port":
                out += ["--metrics-port", str(int(value) + index)]
            continue
        out.append(item)
    return out


class _Worker(protocol.ProcessProtocol):
    def __init__(self, owner: WorkersService, index: int) -> None:
        self.owner = owner
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.started_at = 0.0

    def processEnded(self, reason: Any) -> None:
        self.owner._ended(self, reason.value)
        self.ended.callback(None)


class WorkersService(service.Service):
    """Runs and watches ``count`` workers of ``postage run processor arguments``."""

    drain_timeout: float = 120.0

    def __init__(self, processor: str, arguments: list[str], count: int,
                 reactor: Any = None) -> None:
        self.processor = processor
        self.arguments = arguments
        self.count = count
        self.reactor = reactor
        self.exit_code = 0
        self.workers: dict[int, _Worker] = {}  # index -> the running worker
        self.restart_delay = reconnect_policy()  # the schedule connections retry on
        self.failures = [0] * count  # restarts of each worker since it last ran healthy
        self._restarts: dict[int, Any] = {}
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        if self.reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415

            self.reactor = reactor
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        worker = _Worker(self, index)
        argv = [sys.executable, "-m", "postage.cli", "run", self.processor,
                *worker_arguments(self.arguments, index)]
        env = {**os.environ, "POSTAGE_WORKER": str(index),
               "POSTAGE_SUPERVISOR": str(os.getpid())}
        process = self.reactor.spawnProcess(worker, sys.executable, argv, env=env,
                                            childFDs={0: "w", 1: 1, 2: 2})
        worker.started_at = self.reactor.seconds()
        self.workers[index] = worker
        log.info("worker {index} started (pid {pid})", index=index, pid=process.pid)

    def _ended(self, worker: _Worker, status: Any) -> None:
        index = worker.index
        if self.workers.get(index) is worker:
            del self.workers[index]
        code, sig = getattr(status, "exitCode", None), getattr(status, "signal", None)
        how = f"signal {sig}" if sig is not None else f"status {code}"
        if self._stopping:
            log.info("worker {index} ended ({how})", index=index, how=how)
            return
        if sig is None and code == 0:
            log.info("worker {index} exited (status 0): not restarted", index=index)
            if not self.workers and not self._restarts:
                self.reactor.stop()
            return
        if self.reactor.seconds() - worker.started_at > _HEALTHY_AFTER:
            self.failures[index] = 0
        self.failures[index] += 1
        delay = self.restart_delay(self.failures[index])
        log.warn("worker {index} died ({how}); starting it again in {delay:.1f}s",
                 index=index, how=how, delay=delay)
        self._restarts[index] = self.reactor.callLater(delay, self._spawn, index)

    def stopService(self) -> defer.Deferred[Any]:
        """SIGTERM to every worker; fires once all have ended."""
        self._stopping = True
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        workers = list(self.workers.values())
        for worker in workers:
            self._signal(worker, signal.SIGTERM)
        ended = defer.DeferredList([worker.ended for worker in workers])
        timer = self.reactor.callLater(self.drain_timeout, self._kill, workers)
        return ended.addBoth(lambda _: timer.active() and timer.cancel())

    def _kill(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if not worker.ended.called:
                log.warn("worker {index} still running after {s}s: killing it",
                         index=worker.index, s=self.drain_timeout)
                self._signal(worker, signal.SIGKILL)

    @staticmethod
    def _signal(worker: _Worker, sig: int) -> None:
        from twisted.internet.error import ProcessExitedAlready  # noqa: PLC0415

        transport = worker.transport  # set by spawnProcess, kept after the process ended
        if transport is None:
            return  # no process was ever started for it: nothing to signal
        try:
            transport.signalProcess(sig)
        except ProcessExitedAlready:
            pass
