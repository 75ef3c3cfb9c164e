"""The ``restart`` command: stop the whole process gracefully, then run it again.

Re-executing at once, from inside a handler, would skip the shutdown of every other
processor and producer, and under ``twistd`` the new program would find its own pidfile and
refuse to start. So a restart stops the reactor (every service stops as it would on SIGTERM:
processors drain, producers flush) and re-executes the original command line
(``sys.orig_argv``) when the interpreter exits, after twistd has removed its pidfile. The
process keeps its pid.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from typing import Any

from postage.twisted.logs import PostageLogger

__all__ = ["redacted", "request"]

log = PostageLogger()

_PASSWORD_IN_URL = re.compile(r"(amqps?://[^:/@\s]*:)[^@\s]*@")
_requested = False


def redacted(argv: list[str]) -> list[str]:
    """``argv`` with the password of every broker URL in it replaced by ``***``."""
    return [_PASSWORD_IN_URL.sub(r"\1***@", arg) for arg in argv]


def request(reactor: Any) -> None:
    """Stop ``reactor`` gracefully, then re-execute the process (once, however often asked)."""
    global _requested
    if not _requested:
        _requested = True
        atexit.register(reexec)
        log.info("restarting: {argv}", argv=" ".join(redacted(sys.orig_argv)))
    if reactor.running:
        reactor.stop()


def reexec() -> None:
    """Replace this process by a new run of its command line."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
