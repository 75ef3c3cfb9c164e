"""Handler decorators and the dispatch table they build: pure data, no I/O.

A processor class marks its methods (or nested :class:`Handler` classes) with
``@MessageHandler(type, name)``, ``@RpcHandler(type, name)`` or
``@MessageHandlerFullBody(type, name)``. The decorators only tag the object and return it
unchanged, so a handler stays a plain method that can be called directly. When a class that
mixes in :class:`HandlerRegistry` is defined, ``__init_subclass__`` walks its MRO and builds
its own :class:`DispatchTable`: subclasses inherit their parents' handlers, a method of the
same name replaces its parent's, and sibling classes never share a registry.

Dispatch rules: every message handler of a (type, name) runs; only the last RPC
handler runs (the last in the subclass-most definition order). A handler registered with
``name=None`` serves every name of its type when no handler names the message exactly.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from postage.retry import RetryPolicy

__all__ = [
    "DispatchTable",
    "FilterError",
    "Handler",
    "HandlerRegistry",
    "HandlerSpec",
    "MessageFilter",
    "MessageHandler",
    "MessageHandlerFullBody",
    "RpcHandler",
    "call_handler",
]

_TAG = "_postage_handlers"
T = TypeVar("T")
Key = tuple[str, str | None]

@dataclass(frozen=True)
class Registration:
    """What a decorator records on the object it tags."""

    category: str
    type: str
    name: str | None
    full_body: bool
    retry: RetryPolicy | None = None

@dataclass(frozen=True)
class HandlerSpec:
    """One entry of a dispatch table: which attribute to call and how to call it."""

    attr: str
    full_body: bool
    rpc: bool
    is_class: bool
    retry: RetryPolicy | None = None  # this handler's own policy (else the processor's)

class MessageHandler:
    """``@MessageHandler(type, name, retry=None)``: the method gets the message ``content``.

    ``retry`` (a :class:`~postage.retry.RetryPolicy`) is this handler's own failure policy;
    without one the processor's ``retry`` applies (default None: log the error and ack).
    """

    category = "message"
    full_body = False

    def __init__(self, type: str, name: str | None = None,  # noqa: A002
                 retry: RetryPolicy | None = None) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry is a RetryPolicy or None, not {retry!r}")
        if retry is not None and self.category == "rpc":
            raise TypeError("RPC handlers are not retried: the caller retries (rpc _max_retry)")
        self.registration = Registration(self.category, type, name, self.full_body, retry)

    def __call__(self, handler: T) -> T:
        # vars(), not getattr(): a subclass of a decorated Handler class must not inherit
        # its parent's registrations.
        tags = vars(handler).get(_TAG)
        if tags is None:
            tags = []
            setattr(handler, _TAG, tags)
        tags.append(self.registration)
        return handler

class RpcHandler(MessageHandler):
    """``@RpcHandler(type, name)``: the method gets ``(content, reply_func)`` and answers by
    calling ``reply_func(MessageResult(...))``, so it can clean up after replying."""

    category = "rpc"

class MessageHandlerFullBody(MessageHandler):
    """``@MessageHandlerFullBody(type, name)``: the method gets the whole envelope dict."""

    full_body = True

class Handler:
    """A handler written as a class, nested in a processor and decorated like a method.

    It is made for each message with ``self.data`` (the content, or the whole body under
    :class:`MessageHandlerFullBody`), ``self.reply_func`` (None for plain messages) and
    ``self.processor``, and then its :meth:`call` runs.
    """

    def __init__(self, data: Any, reply_func: Callable[[Any], Any] | None = None,
                 processor: Any = None) -> None:
        self.data = data
        self.reply_func = reply_func
        self.processor = processor

    def call(self) -> Any:
        raise NotImplementedError("a Handler subclass defines call()")

class FilterError(Exception):
    """Raised by a :class:`MessageFilter` function to drop a message before its handler."""

class MessageFilter:
    """``@MessageFilter(func, *args, **kwds)`` under a handler decorator: the handler gets
    ``func(copy_of_data, *args, **kwds)`` instead of the data; ``func`` raises
    :class:`FilterError` to skip the handler for this message."""

    def __init__(self, filter_func: Callable[..., Any], *args: Any, **kwds: Any) -> None:
        self.filter_func = filter_func
        self.args = args
        self.kwds = kwds

    def __call__(self, handler: Callable[..., Any]) -> Callable[..., Any]:

        @functools.wraps(handler)
        def filtered(owner: Any, data: Any, *rest: Any) -> Any:
            try:
                data = self.filter_func(copy.deepcopy(data), *self.args, **self.kwds)
            except FilterError:
                return None
            return handler(owner, data, *rest)

        return filtered

class DispatchTable:
    """Maps a message's (category, type, name) to the handlers that serve it."""

    def __init__(self) -> None:
        self._message: dict[Key, list[HandlerSpec]] = {}
        self._rpc: dict[Key, HandlerSpec] = {}

    @classmethod
    def from_namespace(cls, items: Iterable[tuple[str, Any]]) -> DispatchTable:
        """Build a table from ``(attribute name, object)`` pairs in definition order."""
        table = cls()
        for attr, obj in items:
            tags = getattr(obj, "__dict__", {}).get(_TAG, ())
            is_class = isinstance(obj, type)
            for reg in tags:
                spec = HandlerSpec(attr, reg.full_body, reg.category == "rpc", is_class,
                                   reg.retry)
                if spec.rpc:
                    table._rpc[(reg.type, reg.name)] = spec
                else:
                    table._message.setdefault((reg.type, reg.name), []).append(spec)
        return table

    def without(self, attrs: Iterable[str]) -> DispatchTable:
        """A copy without the handlers bound to the given attribute names."""
        drop = set(attrs)
        table = DispatchTable()
        for key, specs in self._message.items():
            kept = [spec for spec in specs if spec.attr not in drop]
            if kept:
                table._message[key] = kept
        table._rpc = {key: spec for key, spec in self._rpc.items() if spec.attr not in drop}
        return table

    def message_handlers(self, type: str, name: str) -> list[HandlerSpec]:  # noqa: A002
        """Every handler of a plain message, in definition order (empty when none)."""
        specs = self._message.get((type, name))
        if specs is None:
            specs = self._message.get((type, None), [])
        return specs

    def rpc_handler(self, type: str, name: str) -> HandlerSpec | None:  # noqa: A002
        """The one handler that answers an RPC call, or None."""
        spec = self._rpc.get((type, name))
        return spec if spec is not None else self._rpc.get((type, None))

    def lookup(self, body: Mapping[str, Any]) -> list[HandlerSpec]:
        """The handlers a decoded envelope goes to."""
        if body["category"] == "rpc":
            spec = self.rpc_handler(body["type"], body["name"])
            return [] if spec is None else [spec]
        return self.message_handlers(body["type"], body["name"])

    def retry_policies(self) -> list[RetryPolicy]:
        """Every per-handler retry policy, each once (their delay queues are declared)."""
        policies = (spec.retry for specs in self._message.values() for spec in specs)
        return list(dict.fromkeys(policy for policy in policies if policy is not None))

    def keys(self) -> set[tuple[str, str, str | None]]:
        """Every (category, type, name) served, for introspection and tests."""
        return {("message", *key) for key in self._message} | {("rpc", *key) for key in self._rpc}

def call_handler(owner: Any, spec: HandlerSpec, body: Mapping[str, Any],
                 reply_func: Callable[[Any], Any] | None) -> Any:
    """Run one handler of ``owner`` for ``body`` the way its decorator asked."""
    data = body if spec.full_body else body["content"]
    target = getattr(owner, spec.attr)
    if spec.is_class:
        return target(data, reply_func, owner).call()
    if spec.rpc:
        return target(data, reply_func)
    return target(data)

class HandlerRegistry:
    """Mixin that gives each subclass its own :class:`DispatchTable` (``dispatch_table``)."""

    dispatch_table: DispatchTable = DispatchTable()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for attr, obj in vars(klass).items():
                # pop first: an override takes the subclass's place in definition order
                namespace.pop(attr, None)
                namespace[attr] = obj
        cls.dispatch_table = DispatchTable.from_namespace(namespace.items())
