"""The ``postage`` command: poke running components and run new ones.

    postage send EXCHANGE KEY COMMAND [name=value ...]
    postage rpc EXCHANGE KEY COMMAND [name=value ...] [--timeout S] [--retries N]
    postage run package.module:Class [twistd postage options]

Each ``name=value`` value is read as JSON when it parses (``n=3``, ``flags=[1,2]``), else as
a string (``who=world``). ``rpc`` prints the result's value as JSON on stdout and exits 0 only
for a success result; an error or exception result prints its message on stderr and exits 1.
A broker that cannot be reached exits 3 with a message saying where it looked; usage errors
exit 2. EXCHANGE may be ``""`` for the nameless exchange (KEY is then a queue name).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postage import PostageError

__all__ = ["main"]

EXIT_RESULT_ERROR = 1
EXIT_USAGE = 2
EXIT_BROKER = 3


def parse_parameters(items: list[str]) -> dict[str, Any]:
    """``["n=3", "who=world"]`` → ``{"n": 3, "who": "world"}``."""
    parameters: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"parameters are name=value, not {item!r}")
        try:
            parameters[name] = json.loads(text)
        except ValueError:
            parameters[name] = text
    return parameters


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postage", description="Send commands and RPC calls to Postage components, "
        "or run one.")
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (("send", "send a command message (fire and forget)"),
                         ("rpc", "call a component and print the result")):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("exchange", help="exchange name ('' for the nameless exchange)")
        p.add_argument("key", help="routing key")
        p.add_argument("command", help="command name")
        p.add_argument("parameters", nargs="*", metavar="name=value",
                       help="command parameters; values are JSON when they parse")
        p.add_argument("--url", help="broker URL (default: POSTAGE_RMQ_URL or POSTAGE_RMQ_*)")
        p.add_argument("--vhost", help="virtual host (default: POSTAGE_VHOST or /)")
        if action == "rpc":
            p.add_argument("--timeout", type=float, default=30.0,
                           help="seconds to wait for each attempt [default: 30]")
            p.add_argument("--retries", type=int, default=0,
                           help="attempts after the first one times out [default: 0]")
    run = sub.add_parser("run", help="run processor classes (like twistd -n postage)",
                         description="Run processors until quit or SIGTERM. Options after the "
                         "class are those of 'twistd postage --help'.")
    run.add_argument("processor", help="package.module:Class")
    run.add_argument("options", nargs=argparse.REMAINDER,
                     help="--name N --type T --vhost V --url URL --log-level L --processor ...")
    return parser


def _call(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415

    from twisted.internet import defer, task  # noqa: PLC0415

    from postage.twisted import GenericProducer  # noqa: PLC0415

    if args.url:
        os.environ["POSTAGE_RMQ_URL"] = args.url
    parameters = parse_parameters(args.parameters)
    status = [0]

    @defer.inlineCallbacks
    def run(reactor: Any) -> Any:
        producer = GenericProducer(vhost=args.vhost, reactor=reactor, connect_timeout=5)
        try:
            yield producer.ready
            options = {"_eks": [(args.exchange, args.key)]}
            if args.action == "send":
                yield producer.send(args.command, parameters, **options, _mandatory=True)
                return
            result = yield producer.call(args.command, parameters, _timeout=args.timeout,
                                         _max_retry=args.retries, **options)
            if result:
                sys.stdout.write(json.dumps(result.value) + "\n")
            else:
                sys.stderr.write(f"postage: {result.value or 'error'}: {result.message}\n")
                status[0] = EXIT_RESULT_ERROR
        finally:
            yield producer.close()

    try:
        task.react(lambda reactor: run(reactor).addErrback(_report, status), [])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return status[0]


def _report(failure: Any, status: list[int]) -> None:
    from postage.errors import BrokerConnectionError, UnroutableError  # noqa: PLC0415

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


def _run(args: argparse.Namespace) -> int:
    from twisted.logger import (  # noqa: PLC0415
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.python import usage  # noqa: PLC0415

    from postage.config import debug_mode  # noqa: PLC0415
    from postage.twisted.logs import LEVELS  # noqa: PLC0415
    from postage.twisted.service import Options, makeService  # noqa: PLC0415

    options = Options()
    try:
        options.parseOptions(["--processor", args.processor, *args.options])
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
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return service.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``postage`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "run":
            return _run(args)
        return _call(args)
    except argparse.ArgumentTypeError as exc:
        sys.stderr.write(f"postage: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
