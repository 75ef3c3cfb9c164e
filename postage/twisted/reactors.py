"""The reactor a Postage object uses when it is given none.

Importing ``twisted.internet.reactor`` installs the default reactor, so it must happen only
when an object is made without one, never at import: an application that wants the asyncio
reactor installs it first, then builds producers and processors.
"""

from __future__ import annotations

from typing import Any

__all__ = ["default_reactor"]


def default_reactor(reactor: Any = None) -> Any:
    """``reactor`` if given, else the global reactor (installed now if none is yet)."""
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 - the application's choice first
    return reactor
