"""What the ``postage`` command runs, on the reactor, and the exit statuses it returns
(``postage.cli`` parses the command line)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task

from postage.errors import BrokerConnectionError, PostageError, UnroutableError

if TYPE_CHECKING:  # (imported where used: they bring in the reactor side)
    from postage.twisted.service import PostageService
    from postage.twisted.workers import WorkersService

__all__ = ["EXIT_BROKER", "EXIT_RESULT_ERROR", "EXIT_USAGE", "call", "run"]

# the exit statuses of the postage command
EXIT_RESULT_ERROR = 1  # an error or exception result, or a broker refusal
EXIT_USAGE = 2  # as argparse
EXIT_BROKER = 3  # the broker cannot be reached


def call(action: str, exchange: str, key: str, command: str, parameters: dict[str, Any],
         vhost: str | None = None, timeout: float | None = None, retries: int = 0) -> int:
    """``postage send`` (action ``"send"``) or ``postage rpc`` (``"rpc"``); the exit status."""
    from postage.twisted.producer import GenericProducer  # noqa: PLC0415

    status = [0]

    @defer.inlineCallbacks
    def main(reactor: Any) -> Any:
        producer = GenericProducer(vhost=vhost, reactor=reactor, connect_timeout=5)
        try:
            yield producer.ready
            options = {"_eks": [(exchange, key)]}
            if action == "send":
                yield producer.send(command, parameters, **options, _mandatory=True)
                return
            result = yield producer.call(command, parameters, _timeout=timeout,
                                         _max_retry=retries, **options)
            if result:
                sys.stdout.write(json.dumps(result.value) + "\n")
            else:
                sys.stderr.write(f"postage: {result.value or 'error'}: {result.message}\n")
                status[0] = EXIT_RESULT_ERROR
        finally:
            yield producer.close()

    try:
        task.react(lambda reactor: main(reactor).addErrback(_report, status), [])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return status[0]


def _report(failure: Any, status: list[int]) -> None:
    error = failure.value
    if isinstance(error, UnroutableError):
        sys.stderr.write("postage: the message was returned: no queue is bound for that "
                         "exchange and key (is the component running?)\n")
        status[0] = EXIT_RESULT_ERROR
    elif isinstance(error, BrokerConnectionError):
        sys.stderr.write(f"postage: {error}\n")
        status[0] = EXIT_BROKER
    elif isinstance(error, PostageError):  # e.g. the broker closed the channel: no exchange
        sys.stderr.write(f"postage: {error}\n")
        status[0] = EXIT_RESULT_ERROR
    elif isinstance(error, ValueError | TypeError):
        sys.stderr.write(f"postage: {error}\n")
        status[0] = EXIT_USAGE
    else:
        failure.raiseException()


def run(processor: str, arguments: list[str]) -> int:
    """``postage run package.module:Class [options]``: the twistd service without twistd;
    returns the exit status once the reactor stopped."""
    from twisted.logger import (  # noqa: PLC0415
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
    )
    from twisted.python import usage  # noqa: PLC0415

    from postage.config import debug_mode  # noqa: PLC0415
    from postage.twisted.logs import LEVELS, text_observer  # noqa: PLC0415
    from postage.twisted.service import Options, makeService  # noqa: PLC0415

    options = Options()
    service: WorkersService | PostageService
    try:
        options.parseOptions(["--processor", processor, *arguments])
        if options["workers"] < 1:
            raise usage.UsageError("--workers is 1 or more")
        if options["workers"] > 1:
            from postage.twisted.workers import WorkersService  # noqa: PLC0415

            service = WorkersService(processor, arguments, options["workers"])
        else:
            from postage.twisted.workers import end_with_supervisor  # noqa: PLC0415

            end_with_supervisor()
            service = makeService(options)
    except usage.UsageError as exc:
        sys.stderr.write(f"postage run: {exc}\n")
        return EXIT_USAGE
    from twisted.internet import reactor  # noqa: PLC0415

    level = LEVELS[options["log-level"] or ("debug" if debug_mode() else "info")]
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    # one line per broker connection is Twisted's chatter, not the operator's business
    if level in (LogLevel.debug, LogLevel.info):
        predicate.setLogLevelForNamespace("twisted.internet.endpoints", LogLevel.warn)
    observer = FilteringLogObserver(text_observer(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return service.exit_code
