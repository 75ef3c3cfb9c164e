"""Fingerprint: who sent a message (name, type, pid, host, user, vhost).

Every value that is not given is read from the OS when the object is made, never at import
time, so a process forked after import reports its own pid (a 3.0.3 bug we do not repeat).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from typing import Any

from postage import config

__all__ = ["Fingerprint", "fingerprint_dict"]

_FIELDS = ("name", "type", "pid", "host", "user", "vhost")


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a container, say
        return None


class Fingerprint:
    """The identity of a component, sent in every message it produces.

    ``name`` and ``type`` describe the component and default to ``None``; ``pid``, ``host``,
    ``user`` and ``vhost`` default to what the OS and the environment say now.
    Values are kept as given.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        name: Any = None,
        type: Any = None,  # noqa: A002 - the 3.0.3 keyword
        pid: Any = None,
        host: Any = None,
        user: Any = None,
        vhost: Any = None,
    ) -> None:
        self.name = name
        self.type = type
        self.pid = os.getpid() if pid is None else pid
        self.host = socket.gethostname() if host is None else host
        self.user = _current_user() if user is None else user
        self.vhost = config.default_vhost() if vhost is None else vhost

    def as_dict(self) -> dict[str, Any]:
        """The dictionary form, the one Postage puts in every message."""
        return {field: getattr(self, field) for field in _FIELDS}

    def as_tuple(self) -> tuple[Any, ...]:
        """The values in the order name, type, pid, host, user, vhost."""
        return tuple(getattr(self, field) for field in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        args = ", ".join(f"{field}={getattr(self, field)!r}" for field in _FIELDS)
        return f"Fingerprint({args})"


def fingerprint_dict(fingerprint: Any) -> dict[str, Any]:
    """A fingerprint in its dictionary form; 3.0.3 accepted any object with ``as_dict()``,
    and a plain mapping (a decoded message's fingerprint) is taken as it is."""
    if fingerprint is None:
        return {}
    if isinstance(fingerprint, Mapping):
        return dict(fingerprint)
    return fingerprint.as_dict()
