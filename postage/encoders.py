"""Encoders turn message bodies into bytes on the wire and back.

An encoder is any object with ``content_type``, ``encode(obj) -> str | bytes`` and
``decode(data) -> object``; :class:`JsonEncoder` is the default and the only one Postage
ships, because the wire must be safe to read from anyone: no pickle, no eval.
"""

from __future__ import annotations

import json
from typing import Any

from postage.errors import EncodeError, MessageFormatError

__all__ = ["Encoder", "JsonEncoder"]


class Encoder:
    """The interface every encoder follows. Subclass it to plug in another format."""

    content_type: str = "application/octet-stream"

    def encode(self, data: Any) -> str | bytes:
        """Encode ``data``; raise :class:`EncodeError` for what the format cannot hold."""
        raise NotImplementedError

    def decode(self, data: str | bytes) -> Any:
        """Decode ``data``; raise :class:`MessageFormatError` for what is not in the format."""
        raise NotImplementedError


def _json_default(obj: Any) -> Any:
    # Sets are the one non-JSON type the 3.0.3 docs send (values={1, 2, 3, "numbers"}).
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} cannot be encoded as JSON")


class JsonEncoder(Encoder):
    """JSON on the wire. Sets and tuples become lists; anything else JSON cannot hold
    (objects, bytes, NaN, circular structures) raises :class:`EncodeError` before sending.
    """

    content_type = "application/json"

    def __init__(self) -> None:
        # One encoder object, made once: json.dumps() would build a new one per call.
        # ensure_ascii (the json default) also escapes lone surrogates, which could not go
        # on the wire as UTF-8 (os.fsdecode of a bad file name makes them).
        self._encoder = json.JSONEncoder(
            default=_json_default, allow_nan=False, separators=(",", ":")
        )

    def encode(self, data: Any) -> str:
        try:
            return self._encoder.encode(data)
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"cannot encode message as JSON: {exc}") from exc

    def decode(self, data: str | bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise MessageFormatError(f"body is not valid JSON: {exc}") from exc
