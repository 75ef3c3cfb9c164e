"""Connection settings from the environment, a URL, a HUP dict and a vhost argument.

Everything is read when a component asks for it, never at import time, so a process can set
its environment after importing Postage. Precedence, highest first: explicit arguments
(``hup``, ``vhost``, ``connect_timeout``) > ``POSTAGE_RMQ_URL`` (or the URL in the file
``POSTAGE_RMQ_URL_FILE`` names, so that a password need not sit on a command line) >
``POSTAGE_RMQ_*`` > defaults.

The URL's query takes RabbitMQ's URI names: ``heartbeat`` (seconds; 0 turns heartbeats off),
``connection_timeout`` (milliseconds, as in RabbitMQ's URI spec), and for ``amqps://``
``cacertfile``, ``certfile``, ``keyfile``, ``verify`` (``verify_peer``, the default, or
``verify_none``) and ``server_name_indication``. The environment gives the same through
``POSTAGE_RMQ_HEARTBEAT``, ``POSTAGE_RMQ_CACERTFILE``, ``POSTAGE_RMQ_CERTFILE`` and
``POSTAGE_RMQ_KEYFILE``. An unknown query name or a bad value is an error: a typo must not
silently turn verification off or leave the heartbeat at its default.

A password never appears in a repr or a log line: :class:`ConnectionSettings` hides it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "DEFAULT_PORT",
    "ConnectionSettings",
    "debug_mode",
    "default_vhost",
    "parse_hosts",
    "settings",
    "url_from_environment",
]

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
DEFAULT_HEARTBEAT = 60

_VERIFY = {"verify_peer": True, "verify_none": False}


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect: the hosts to try in order, credentials and vhost, the
    heartbeat and the first connection's bound, and for TLS the files and checks.

    ``verify`` checks the broker's certificate chain and host name (against ``cacertfile``,
    else the system's trust store); ``server_name`` is the name sent as SNI and checked
    against the certificate (default: the host connected to)."""

    hosts: tuple[tuple[str, int], ...] = (("localhost", DEFAULT_PORT),)
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    tls: bool = False
    heartbeat: int = DEFAULT_HEARTBEAT
    connect_timeout: float = 10.0
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    server_name: str | None = None

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


def url_from_environment() -> str | None:
    """``POSTAGE_RMQ_URL``, else the first line of the file ``POSTAGE_RMQ_URL_FILE`` names,
    else None. A file that cannot be read is a clear error (its content is never shown)."""
    url = os.environ.get("POSTAGE_RMQ_URL")
    if url:
        return url
    path = os.environ.get("POSTAGE_RMQ_URL_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the broker URL from {path!r} (POSTAGE_RMQ_URL_FILE): "
                         f"{exc.__class__.__name__}") from None
    if not text:
        raise ValueError(f"the URL file {path!r} (POSTAGE_RMQ_URL_FILE) is empty")
    return text.splitlines()[0].strip()


def default_vhost() -> str:
    """The vhost components use unless told otherwise: the URL's, else ``POSTAGE_VHOST``."""
    url = url_from_environment()
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


def _number(name: str, text: str, kind: type = int) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {text!r}")
    return value


def _parse_query(query: str) -> dict[str, Any]:
    """The URL query's options (RabbitMQ's URI names) as settings fields."""
    values: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name == "heartbeat":
            values["heartbeat"] = _number("heartbeat", text)
        elif name == "connection_timeout":
            values["connect_timeout"] = _number("connection_timeout", text, float) / 1000
        elif name in ("cacertfile", "certfile", "keyfile"):
            values[name] = text
        elif name == "verify":
            if text not in _VERIFY:
                raise ValueError(f"verify is verify_peer or verify_none, not {text!r}")
            values["verify"] = _VERIFY[text]
        elif name == "server_name_indication":
            values["server_name"] = text
        else:
            raise ValueError(
                f"unknown broker URL option {name!r}: Postage reads heartbeat, "
                "connection_timeout, cacertfile, certfile, keyfile, verify, "
                "server_name_indication")
    return values


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
    values.update(_parse_query(parts.query))
    return values


def _from_environment() -> dict[str, Any]:
    """Heartbeat and TLS files from ``POSTAGE_RMQ_*`` (a URL's query overrides them)."""
    values: dict[str, Any] = {}
    heartbeat = os.environ.get("POSTAGE_RMQ_HEARTBEAT")
    if heartbeat:
        values["heartbeat"] = _number("POSTAGE_RMQ_HEARTBEAT", heartbeat)
    for name in ("cacertfile", "certfile", "keyfile"):
        path = os.environ.get(f"POSTAGE_RMQ_{name.upper()}")
        if path:
            values[name] = path
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
    url = url_from_environment()
    values = _from_environment()
    if url:
        values.update({"user": "guest", "password": "guest", **_parse_url(url)})
        port = values["hosts"][0][1]
    else:
        port = int(_env("POSTAGE_RMQ_PORT", str(DEFAULT_PORT)))
        values.update({
            "hosts": parse_hosts(_env("POSTAGE_RMQ_HOST", "localhost"), port),
            "user": _env("POSTAGE_RMQ_USER", "guest"),
            "password": _env("POSTAGE_RMQ_PASSWORD", "guest"),
            "vhost": _env("POSTAGE_VHOST", "/"),
        })
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
