"""The twistd service: ``twistd -n postage --processor package.module:Class [...]``.

Each processor class is built as ``Class(fingerprint)`` (the 3.0.3 demos' form) and run by
one :class:`~postage.twisted.scheduler.MicroScheduler`. Daemons may start before the broker,
so an unreachable broker is retried forever (logged, with the sessions' own
:func:`~postage.twisted.connection.reconnect_policy`); a permanent error (a wrong password,
a missing vhost, a certificate that does not verify: ``is_permanent``, decided by the error
classes) is logged, and the process exits non-zero. ``quit`` stops the service and the
process exits 0. SIGTERM stops gracefully: consuming stops, running handlers
finish and are acked, connections close.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from postage.errors import BrokerConnectionError
from postage.fingerprint import Fingerprint
from postage.twisted.connection import is_permanent, reconnect_policy
from postage.twisted.logs import LEVELS, PostageLogger, set_level
from postage.twisted.scheduler import MicroScheduler

__all__ = ["Options", "PostageService", "load_class", "makeService"]

log = PostageLogger()


def load_class(path: str) -> type:
    """Import ``package.module:Class`` (``package.module.Class`` works too), looking in the
    current directory first, as ``python -m`` and twistd do."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise usage.UsageError(f"{path!r} is not package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise usage.UsageError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise usage.UsageError(f"module {module_name!r} has no {attr!r}") from None


class Options(usage.Options):
    """Options of ``twistd postage`` and ``postage run``."""

    synopsis = "--processor package.module:Class [--processor ...] [options]"
    optParameters = [
        ["name", None, None, "Component name in the fingerprint [default: the class name]"],
        ["type", None, "component", "Component type in the fingerprint"],
        ["vhost", None, None, "RabbitMQ virtual host (sets POSTAGE_VHOST)"],
        ["url", None, None, "Broker URL amqp://user:password@host:port/vhost "
                            "(sets POSTAGE_RMQ_URL)"],
        ["url-file", None, None, "A file holding the broker URL, so that the password is "
                                 "not on the command line (sets POSTAGE_RMQ_URL_FILE)"],
        ["log-level", None, None, "debug, info, warn, error or critical [default: info, or "
                                  "debug when POSTAGE_DEBUG_MODE=true]"],
        ["metrics-port", None, None, "Serve /metrics, /livez and /readyz on this TCP port "
                                     "[default: off]", int],
        ["metrics-host", None, "127.0.0.1", "The address the metrics port listens on"],
        ["workers", None, 1, "Worker processes (postage run only): competing consumers, "
                             "restarted when they die", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["processors"] = []

    def opt_processor(self, path: str) -> None:
        """A processor class to run, as package.module:Class (repeatable)."""
        self["processors"].append(path)

    opt_p = opt_processor

    def postOptions(self) -> None:
        if not self["processors"]:
            raise usage.UsageError("give at least one --processor package.module:Class")
        if self["url"] and self["url-file"]:
            raise usage.UsageError("give --url or --url-file, not both")
        if self["url-file"] and not os.access(self["url-file"], os.R_OK):
            raise usage.UsageError(f"--url-file {self['url-file']!r} cannot be read")
        level = self["log-level"]
        if level is not None and level not in LEVELS:
            raise usage.UsageError(f"--log-level is one of {', '.join(LEVELS)}, not {level!r}")


class PostageService(service.Service):
    """Runs processor classes until ``quit``, SIGTERM or a permanent connection error."""

    def __init__(self, classes: list[type], name: str | None, component_type: str,
                 reactor: Any = None) -> None:
        self.classes = classes
        self.component_name = name
        self.component_type = component_type
        self.reactor = reactor
        self.exit_code = 0
        self.scheduler: MicroScheduler | None = None
        self._retry: Any = None
        # the first connection: the delays of the sessions' reconnections (ClientService's
        # retryPolicy), the attempt count reset once the processors consume
        self.retry_policy = reconnect_policy()
        self.failed_attempts = 0
        self._stopping = False
        self.metrics_address: tuple[str, int] | None = None  # (host, port) of /metrics
        self._metrics_port: Any = None

    def startService(self) -> None:
        super().startService()
        if self.reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415

            self.reactor = reactor
        # Build the processors once the reactor runs: a 3.0.3-style class (postage.messaging)
        # then finds the running reactor and uses it instead of starting its own thread.
        self.reactor.callWhenRunning(self._run)
        if self.metrics_address is not None:
            self.reactor.callWhenRunning(self._serve_metrics)

    def _serve_metrics(self) -> None:
        from twisted.internet.error import CannotListenError  # noqa: PLC0415

        from postage.twisted import metrics  # noqa: PLC0415

        address = self.metrics_address
        if address is None:  # (scheduled only when set)
            return
        host, port = address
        try:
            self._metrics_port = metrics.listen(port, host, self.reactor)
        except CannotListenError as exc:
            log.critical("cannot serve metrics on {host}:{port}: {error}", host=host,
                         port=port, error=exc.socketError)
            self._exit_with(1)
            return
        log.info("metrics on http://{host}:{port}/metrics (/livez, /readyz)", host=host,
                 port=self._metrics_port.getHost().port)

    def _run(self) -> None:
        self._retry = None
        self.scheduler = MicroScheduler(reactor=self.reactor)
        processors = []
        for cls in self.classes:
            fingerprint = Fingerprint(self.component_name or cls.__name__, self.component_type)
            processors.append(cls(fingerprint))
            self.scheduler.add_microthread(processors[-1])
        self.scheduler.start().addCallbacks(self._ended, self._failed)
        started = defer.gatherResults([processor.start() for processor in processors],
                                      consumeErrors=True)
        started.addCallbacks(self._started, lambda _: None)  # failures: see _failed

    def _started(self, _: Any) -> None:
        log.info("consuming: {names}", names=", ".join(cls.__name__ for cls in self.classes))
        self.failed_attempts = 0

    def _ended(self, _: Any) -> None:
        if not self._stopping:
            log.info("processors stopped (quit): exiting")
            self.reactor.stop()

    def _failed(self, failure: Any) -> None:
        error = failure.value
        if self._stopping:
            return
        if is_permanent(error) or not isinstance(error, BrokerConnectionError):
            log.critical("cannot run: {error}", error=error)
            self._exit_with(1)
            return
        self.failed_attempts += 1
        delay = self.retry_policy(self.failed_attempts)
        log.warn("{error}; connecting again in {delay:.1f}s", error=error, delay=delay)
        self._retry = self.reactor.callLater(delay, self._run)

    def _exit_with(self, code: int) -> None:
        """Stop the reactor and make the process exit with ``code`` (twistd itself always
        exits 0 after a clean reactor stop)."""
        self.exit_code = code
        if code:
            atexit.register(_exit_now, code)
        self.reactor.stop()

    def stopService(self) -> defer.Deferred[None] | None:
        self._stopping = True
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._metrics_port is not None:
            port, self._metrics_port = self._metrics_port, None
            port.stopListening()
        if self.scheduler is not None:
            return self.scheduler.stop()
        return None


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def makeService(options: Options) -> PostageService:
    """Build the service from parsed options (twistd's ``IServiceMaker`` entry point)."""
    if options["vhost"]:
        os.environ["POSTAGE_VHOST"] = options["vhost"]
    if options["url"]:
        os.environ["POSTAGE_RMQ_URL"] = options["url"]
    if options["url-file"]:
        os.environ.pop("POSTAGE_RMQ_URL", None)  # the option given wins over the environment
        os.environ["POSTAGE_RMQ_URL_FILE"] = options["url-file"]
    if options["log-level"]:
        set_level(options["log-level"])
    if options["workers"] != 1:
        raise usage.UsageError("--workers runs worker processes under 'postage run', not "
                               "twistd (use a process manager for several twistd)")
    classes = [load_class(path) for path in options["processors"]]
    made = PostageService(classes, options["name"], options["type"])
    if options["metrics-port"] is not None:
        made.metrics_address = (options["metrics-host"], options["metrics-port"])
    return made
