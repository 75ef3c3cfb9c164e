"""Exchanges declared by subclassing :class:`Exchange` and setting class attributes."""

from __future__ import annotations

from typing import Any

__all__ = ["Exchange", "exchange_name"]


class _ClassProperty:
    """A read-only property computed from the class, usable without an instance."""

    def __init__(self, getter: Any) -> None:
        self.getter = getter
        self.__doc__ = getter.__doc__

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


class Exchange:
    """An AMQP exchange described by class attributes::

        class PingExchange(Exchange):
            name = "ping-exchange"
            exchange_type = "direct"
            durable = True

    ``arguments`` (a dict, e.g. ``{'alternate-exchange': ...}``) goes to the declaration too.
    """

    name: str = ""
    exchange_type: str = "direct"
    passive: bool = False
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] | None = None

    @_ClassProperty
    def parameters(cls) -> dict[str, Any]:
        """The keyword arguments for pika's ``channel.exchange_declare()``."""
        return {
            "exchange": cls.name,
            "exchange_type": cls.exchange_type,
            "passive": cls.passive,
            "durable": cls.durable,
            "auto_delete": cls.auto_delete,
            "internal": cls.internal,
            "arguments": cls.arguments,
        }


def exchange_name(exchange: type[Exchange] | str) -> str:
    """The name of an exchange given as an :class:`Exchange` subclass or as a plain name."""
    if isinstance(exchange, str):
        return exchange
    if isinstance(exchange, type) and issubclass(exchange, Exchange):
        return exchange.name
    raise TypeError(f"an exchange is an Exchange subclass or a name, not {exchange!r}")
