"""Connection settings from the environment, a URL, a HUP dict and a vhost argument.

Everything is read when a component asks for it, never at import time, so a process can set
its environment after importing Postage. Precedence, highest first: explicit arguments
(``hup``, ``vhost``) > ``POSTAGE_RMQ_URL`` > ``POSTAGE_RMQ_*`` > defaults.

A password never appears in a repr or a log line: :class:`ConnectionSettings` hides it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "DEFAULT_PORT",
    "ConnectionSettings",
    "debug_mode",
    "default_vhost",
    "parse_hosts",
    "settings",
]

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect: the hosts to try in order, credentials and vhost."""

    hosts: tuple[tuple[str, int], ...] = (("localhost", DEFAULT_PORT),)
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    tls: bool = False
    heartbeat: int = 60
    connect_timeout: float = 10.0

    def describe(self) -> str:
        """A one-line description that is safe to log (no password)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{quote(self.user, safe='')}@{hosts}/{quote(self.vhost, safe='')}"

    def replace(self, **changes: Any) -> ConnectionSettings:
        """A copy with some fields changed."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return ConnectionSettings(**values)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def default_vhost() -> str:
    """The vhost components use unless told otherwise: the URL's, else ``POSTAGE_VHOST``."""
    url = os.environ.get("POSTAGE_RMQ_URL")
    if url:
        return _parse_url(url)["vhost"]
    return _env("POSTAGE_VHOST", "/")


def debug_mode() -> bool:
    """True when ``POSTAGE_DEBUG_MODE`` is ``true`` (any case): debug logging is wanted."""
    return os.environ.get("POSTAGE_DEBUG_MODE", "").strip().lower() == "true"


def parse_hosts(hosts: str | Iterable[str], default_port: int) -> tuple[tuple[str, int], ...]:
    """Read ``"a,b:5673"`` or ``["a", "b:5673"]`` as ``(("a", default_port), ("b", 5673))``."""
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    parsed = []
    for entry in hosts:
        entry = entry.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if sep and port.isdigit() and "]" not in port:
            parsed.append((host.strip("[]"), int(port)))
        else:
            parsed.append((entry.strip("[]"), default_port))
    if not parsed:
        raise ValueError("no broker host given")
    return tuple(parsed)


def _parse_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError("POSTAGE_RMQ_URL must start with amqp:// or amqps://")
    tls = parts.scheme == "amqps"
    port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    netloc = parts.netloc.rpartition("@")[2]
    values: dict[str, Any] = {
        "tls": tls,
        "hosts": parse_hosts(netloc or "localhost", port),
        # amqp://host/ names the vhost "" in the AMQP URI spec, but every user means "/".
        "vhost": unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
    }
    if parts.username is not None:
        values["user"] = unquote(parts.username)
    if parts.password is not None:
        values["password"] = unquote(parts.password)
    return values


def settings(
    hup: Mapping[str, Any] | None = None,
    vhost: str | None = None,
    connect_timeout: float | None = None,
) -> ConnectionSettings:
    """The settings a component connects with, from the environment and its own arguments.

    ``hup`` replaces host, user and password as a whole (``{'host', 'user', 'password'}``,
    optional ``'port'``; ``host`` may be a list, each entry ``host`` or ``host:port``).
    """
    url = os.environ.get("POSTAGE_RMQ_URL")
    if url:
        values = {"user": "guest", "password": "guest", **_parse_url(url)}
        port = values["hosts"][0][1]
    else:
        port = int(_env("POSTAGE_RMQ_PORT", str(DEFAULT_PORT)))
        values = {
            "hosts": parse_hosts(_env("POSTAGE_RMQ_HOST", "localhost"), port),
            "user": _env("POSTAGE_RMQ_USER", "guest"),
            "password": _env("POSTAGE_RMQ_PASSWORD", "guest"),
            "vhost": _env("POSTAGE_VHOST", "/"),
        }
    if hup is not None:
        hup_port = int(hup.get("port", port))
        values["hosts"] = parse_hosts(hup.get("host", "localhost"), hup_port)
        values["user"] = hup.get("user", "guest")
        values["password"] = hup.get("password", "guest")
    if vhost is not None:
        values["vhost"] = vhost
    if connect_timeout is not None:
        values["connect_timeout"] = float(connect_timeout)
    return ConnectionSettings(**values)
