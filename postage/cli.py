"""The ``postage`` command: poke running components and run new ones.

    postage send EXCHANGE KEY COMMAND [name=value ...]
    postage rpc EXCHANGE KEY COMMAND [name=value ...] [--timeout S] [--retries N]
    postage run package.module:Class [twistd postage options] [--workers N]
    postage ps [--name N] [--timeout S] [--json]
    postage ping NAME [--timeout S]
    postage dead list|replay|purge QUEUE [--count N] [--json]

Each ``name=value`` value is read as JSON when it parses (``n=3``, ``flags=[1,2]``), else as
a string (``who=world``). ``rpc`` prints the result's value as JSON on stdout and exits 0 only
for a success result; an error or exception result prints its message on stderr and exits 1.
A broker that cannot be reached exits 3 with a message saying where it looked; usage errors
exit 2. EXCHANGE may be ``""`` for the nameless exchange (KEY is then a queue name).
``ps`` and ``ping`` exit 0 when at least one component answered within the timeout, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["main", "parse_parameters"]

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
        urls = p.add_mutually_exclusive_group()
        urls.add_argument("--url", help="broker URL (default: POSTAGE_RMQ_URL or POSTAGE_RMQ_*)")
        urls.add_argument("--url-file", metavar="PATH",
                          help="a file holding the broker URL (keeps the password off the "
                          "command line; sets POSTAGE_RMQ_URL_FILE)")
        p.add_argument("--vhost", help="virtual host (default: POSTAGE_VHOST or /)")
        if action == "rpc":
            p.add_argument("--timeout", type=float, default=30.0,
                           help="seconds to wait for each attempt [default: 30]")
            p.add_argument("--retries", type=int, default=0,
                           help="attempts after the first one times out [default: 0]")
    run = sub.add_parser("run", help="run processor classes (like twistd -n postage)",
                         description="Run processors until quit or SIGTERM. Options after the "
                         "class are those of 'twistd postage --help'.")
    _ops_parsers(sub)
    _dead_parser(sub)
    run.add_argument("processor", help="package.module:Class")
    run.add_argument("options", nargs=argparse.REMAINDER,
                     help="--name N --type T --vhost V --url URL --url-file PATH --log-level L "
                     "--processor ...")
    return parser


def _ops_parsers(sub: Any) -> None:
    """``postage ps`` and ``postage ping``: who is running (answers to ``describe``)."""
    ps = sub.add_parser("ps", help="list the running components",
                        description="Ask every component (or those named N) to describe "
                        "itself and list those that answer within the timeout.")
    ps.add_argument("--name", help="only the components of this name")
    ping = sub.add_parser("ping", help="check that a component answers",
                          description="pong with the round trip of each component of that "
                          "name that answers within the timeout")
    ping.add_argument("name", help="the component's name (its fingerprint's)")
    for p in (ps, ping):
        p.add_argument("--timeout", type=float, default=1.0,
                       help="seconds to gather answers [default: 1.0]")
        p.add_argument("--url", help="broker URL (default: POSTAGE_RMQ_URL or POSTAGE_RMQ_*)")
        p.add_argument("--vhost", help="virtual host (default: POSTAGE_VHOST or /)")
    ps.add_argument("--json", action="store_true", help="print the answers as a JSON list")


def _ops(args: argparse.Namespace) -> int:
    from postage.errors import BrokerConnectionError  # noqa: PLC0415
    from postage.twisted import commands, discovery  # noqa: PLC0415

    if args.url:
        os.environ["POSTAGE_RMQ_URL"] = args.url
    try:
        if args.action == "ps":
            return discovery.ps(args.name, args.timeout, args.json, vhost=args.vhost)
        return discovery.ping(args.name, args.timeout, vhost=args.vhost)
    except BrokerConnectionError as exc:
        sys.stderr.write(f"postage: {exc}\n")
        return commands.EXIT_BROKER


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a count is an integer >= 1, not {text!r}")
    return value


def _dead_parser(sub: Any) -> None:
    """``postage dead list|replay|purge QUEUE``: the dead queue ``QUEUE.dead`` of a processor
    with a retry policy (postage/twisted/deadletters.py says how each is safe)."""
    dead = sub.add_parser("dead", help="look at, replay or purge a queue's dead messages",
                          description="QUEUE is the queue a processor consumes; its dead "
                          "messages are in QUEUE.dead.")
    actions = dead.add_subparsers(dest="dead_action", metavar="ACTION", required=True)
    for action, text in (("list", "show the dead messages (nothing is removed)"),
                         ("replay", "move dead messages back to QUEUE (each confirmed first)"),
                         ("purge", "delete every dead message")):
        p = actions.add_parser(action, help=text, description=text)
        p.add_argument("queue", help="the queue the dead messages came from")
        if action != "purge":
            p.add_argument("--count", type=_positive, default=None,
                           help="at most this many messages [default: all]")
        if action == "list":
            p.add_argument("--json", action="store_true", help="print a JSON list")
        p.add_argument("--url", help="broker URL (default: POSTAGE_RMQ_URL or POSTAGE_RMQ_*)")
        p.add_argument("--vhost", help="virtual host (default: POSTAGE_VHOST or /)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``postage`` console script."""
    args = _parser().parse_args(argv)
    if args.action in ("ps", "ping"):
        return _ops(args)
    from postage.twisted import commands  # noqa: PLC0415 - Twisted only when running

    try:

        if args.action == "run":
            return commands.run(args.processor, args.options)
        if args.url:
            os.environ["POSTAGE_RMQ_URL"] = args.url
        if args.action == "dead":
            from postage.twisted import deadletters  # noqa: PLC0415

            return deadletters.run_command(args.dead_action, args.queue,
                                           getattr(args, "count", None),
                                           getattr(args, "json", False), vhost=args.vhost)
        if args.url_file:
            os.environ.pop("POSTAGE_RMQ_URL", None)
            os.environ["POSTAGE_RMQ_URL_FILE"] = args.url_file
        return commands.call(args.action, args.exchange, args.key, args.command,
                             parse_parameters(args.parameters), vhost=args.vhost,
                             timeout=getattr(args, "timeout", None),
                             retries=getattr(args, "retries", 0))
    except argparse.ArgumentTypeError as exc:
        sys.stderr.write(f"postage: {exc}\n")
        return commands.EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
