"""Postage messages: the objects, their dict form (the envelope) and its validation.

On the wire a message is a JSON object::

    {"type": ..., "name": ..., "category": "message" | "rpc", "version": 2,
     "fingerprint": {...}, "content": {...}, "_reserved": {}}

Decoding is validation: :func:`decode_envelope` returns a well-formed body or raises
:class:`~postage.errors.MessageFormatError`, so nothing downstream has to guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postage.encoders import Encoder, JsonEncoder
from postage.errors import MessageFormatError

__all__ = [
    "ENVELOPE_VERSION",
    "Message",
    "MessageCommand",
    "MessageResult",
    "MessageResultError",
    "MessageResultException",
    "MessageStatus",
    "RpcCommand",
    "decode_envelope",
    "message_from_body",
]

ENVELOPE_VERSION = 2
_DEFAULT_ENCODER = JsonEncoder()


class Message:
    """A generic message: positional arguments in ``content['args']``, keywords in
    ``content['kwds']`` (each present only when non-empty).

    A message is true unless it reports a failure (``MessageResultError`` and
    ``MessageResultException`` are false), so ``if reply:`` tells success. Messages compare
    equal when their bodies are equal.
    """

    type: str = "none"
    name: str = "none"
    category: str = "message"
    boolean_value: bool = True

    def __init__(self, *args: Any, **kwds: Any) -> None:
        self.fingerprint: dict[str, Any] = {}
        self.content: dict[str, Any] = {}
        self._reserved: dict[str, Any] = {}
        if args:
            self.content["args"] = list(args)
        if kwds:
            self.content["kwds"] = kwds

    @property
    def body(self) -> dict[str, Any]:
        """The dict form: what goes on the wire once encoded."""
        return {
            "type": self.type,
            "name": self.name,
            "category": self.category,
            "version": ENVELOPE_VERSION,
            "fingerprint": self.fingerprint,
            "content": self.content,
            "_reserved": self._reserved,
        }

    def __bool__(self) -> bool:
        return self.boolean_value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.body == other.body

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type}/{self.name} content={self.content!r}>"


class MessageCommand(Message):
    """A fire-and-forget command: ``name`` is the command, content ``{'parameters': ...}``."""

    type = "command"

    def __init__(self, command: str, parameters: Any = None) -> None:
        super().__init__()
        self.name = command
        self.content = {"parameters": {} if parameters is None else parameters}


class RpcCommand(MessageCommand):
    """A command that expects an answer: like :class:`MessageCommand`, category ``rpc``."""

    category = "rpc"


class MessageStatus(Message):
    """The status of a component; the status string is the message name."""

    type = "status"

    def __init__(self, status: str) -> None:
        super().__init__()
        self.name = status


class _Result(Message):
    """The answer to an RPC call; content ``{'type', 'value', 'message'}`` (3.0.3's form)."""

    type = "result"
    result_type = "success"

    def __init__(self, value: Any, message: str) -> None:
        super().__init__()
        self.content = {"type": self.result_type, "value": value, "message": message}

    @property
    def value(self) -> Any:
        return self.content.get("value")

    @property
    def message(self) -> str:
        return self.content.get("message", "")


class MessageResult(_Result):
    """A successful call: ``value`` is what the handler returned."""

    def __init__(self, value: Any, message: str = "") -> None:
        super().__init__(value, message)


class MessageResultError(_Result):
    """A call that failed in an expected way; ``value`` is None, ``message`` says why."""

    result_type = "error"
    boolean_value = False

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class MessageResultException(_Result):
    """A call that raised: ``value`` is the exception's name (``TimeoutError`` for a call
    nobody answered), ``message`` its text."""

    result_type = "exception"
    boolean_value = False

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)


_RESULT_CLASSES: dict[str, type[_Result]] = {
    cls.result_type: cls for cls in (MessageResult, MessageResultError, MessageResultException)
}


def message_from_body(body: Mapping[str, Any]) -> Message:
    """Rebuild a message object from a decoded envelope; results get their own class.

    A result whose content is not one of the three result forms becomes a
    :class:`MessageResultError` saying so, so a caller never mistakes it for a success.
    """
    content = body.get("content", {})
    cls: type[Message] = Message
    if body.get("type") == "result":
        cls = _RESULT_CLASSES.get(content.get("type"), _Result)
        if cls is _Result:
            return MessageResultError(f"malformed result content: {content!r}")
    message = cls.__new__(cls)
    message.type = body["type"]
    message.name = body.get("name", "none")
    message.category = body["category"]
    message.fingerprint = body.get("fingerprint", {})
    message.content = content
    message._reserved = body.get("_reserved", {})
    return message


_MISSING = object()
# field -> (the type it must have, its value when absent); checked on every delivery
_FIELDS = (("name", str, "none"), ("content", dict, None), ("fingerprint", dict, None),
           ("_reserved", dict, None))


def decode_envelope(data: str | bytes, encoder: Encoder | None = None) -> dict[str, Any]:
    """Decode and validate a received body; return the envelope dict.

    Raises :class:`MessageFormatError` (and nothing else) for a body that is not in the
    encoder's format, not an object, lacks ``category``/``type``, has a category other than
    ``message``/``rpc``, a field of the wrong type, or a version other than 2 (``"2"`` from
    3.0.3 is accepted and returned as the integer 2). Absent optional fields are filled in.
    """
    try:
        body = (encoder or _DEFAULT_ENCODER).decode(data)
    except MessageFormatError:
        raise
    except Exception as exc:  # a plugged-in encoder may raise anything: it is still bad input
        raise MessageFormatError(f"body cannot be decoded: {exc}") from exc
    if type(body) is not dict:
        raise MessageFormatError(f"envelope must be an object, not {type(body).__name__}")
    get = body.get
    category = get("category", _MISSING)
    if category != "message" and category != "rpc":
        if category is _MISSING:
            raise MessageFormatError("envelope has no 'category'")
        raise MessageFormatError(f"unknown message category {category!r}")
    kind = get("type", _MISSING)
    if type(kind) is not str:
        if kind is _MISSING:
            raise MessageFormatError("envelope has no 'type'")
        raise MessageFormatError("envelope field 'type' must be a str")
    for key, required, default in _FIELDS:
        value = get(key, _MISSING)
        if value is _MISSING:
            body[key] = {} if default is None else default
        elif not isinstance(value, required):
            raise MessageFormatError(f"envelope field {key!r} must be a {required.__name__}")
    version = get("version", _MISSING)
    if type(version) is not int or version != ENVELOPE_VERSION:
        if version is not _MISSING and version != str(ENVELOPE_VERSION):  # 3.0.3 sent "2"
            raise MessageFormatError(f"unsupported envelope version {version!r}")
        body["version"] = ENVELOPE_VERSION
    return body
