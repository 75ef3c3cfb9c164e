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
    run.add_argument("processor", help="package.module:Class")
    run.add_argument("options", nargs=argparse.REMAINDER,
                     help="--name N --type T --vhost V --url URL --url-file PATH --log-level L "
                     "--processor ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``postage`` console script."""
    args = _parser().parse_args(argv)
    from postage.twisted import commands  # noqa: PLC0415 - Twisted only when running

    try:

        if args.action == "run":
            return commands.run(args.processor, args.options)
        if args.url:
            os.environ["POSTAGE_RMQ_URL"] = args.url
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
