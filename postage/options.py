"""How a producer call's arguments split into options (``_key=``, ``_eks=``...) and the
parameters of the command it sends.

``message_NAME(*args, **kwds)`` and ``rpc_NAME(*args, **kwds)`` mix both in one call: names
starting with ``_`` are options, never parameters, and an unknown one is an error rather than
a silent parameter (a typo such as ``_timout=`` must not be sent to the component).
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPTIONS", "command_parameters", "split_options"]

OPTIONS = frozenset({
    "_key", "_eks", "_timeout", "_max_retry", "_queue_only", "_mandatory",
    "_persistent", "_expiration", "_priority", "_headers",
})


def split_options(kwds: dict[str, Any]) -> dict[str, Any]:
    """Take the ``_options`` out of a call's keywords (in place) and return them."""
    if not kwds:
        return {}
    options = {key: kwds.pop(key) for key in [k for k in kwds if k.startswith("_")]}
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; options are {sorted(OPTIONS)}")
    return options


def command_parameters(name: str, args: tuple[Any, ...], kwds: dict[str, Any]) -> Any:
    """The parameters of a command sent without a ``build_*`` method: the single positional
    value if one is given (any JSON value), else the keyword arguments."""
    if len(args) > 1 or (args and kwds):
        raise TypeError(f"{name}() takes one positional parameters value or keyword arguments")
    return args[0] if args else kwds
