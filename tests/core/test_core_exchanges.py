"""Exchange: declared by class attributes; parameters without an instance; exchange_name."""

import inspect

import pytest

from postage import Exchange
from postage.exchanges import exchange_name


class MyExchange(Exchange):
    name = "my-custom-exchange"
    exchange_type = "topic"
    passive = False
    durable = True
    auto_delete = False


class TransientExchange(MyExchange):
    name = "transient"
    durable = False
    auto_delete = True


SEED_KEYS = ("exchange", "exchange_type", "passive", "durable", "auto_delete")


def test_parameters_work_on_the_class_without_an_instance():
    parameters = MyExchange.parameters
    assert {key: parameters[key] for key in SEED_KEYS} == {
        "exchange": "my-custom-exchange",
        "exchange_type": "topic",
        "passive": False,
        "durable": True,
        "auto_delete": False,
    }


def test_parameters_work_on_an_instance_too():
    assert MyExchange().parameters == MyExchange.parameters


def test_parameters_reflect_subclass_attributes():
    parameters = TransientExchange.parameters
    assert parameters["exchange"] == "transient"
    assert parameters["exchange_type"] == "topic"  # inherited from MyExchange
    assert (parameters["durable"], parameters["auto_delete"]) == (False, True)


def test_subclass_does_not_change_its_parent_parameters():
    assert MyExchange.parameters["exchange"] == "my-custom-exchange"
    assert MyExchange.parameters["durable"] is True


def test_parameters_are_valid_exchange_declare_keywords():
    pika_channel = pytest.importorskip("pika.channel")
    signature = inspect.signature(pika_channel.Channel.exchange_declare)
    bound = signature.bind(None, **MyExchange.parameters)  # TypeError on an unknown keyword
    assert bound.arguments["exchange"] == "my-custom-exchange"
    assert bound.arguments["exchange_type"] == "topic"


def test_exchange_name_of_a_class_is_its_name():
    assert exchange_name(MyExchange) == "my-custom-exchange"


def test_exchange_name_of_a_string_is_the_string():
    assert exchange_name("plain-exchange") == "plain-exchange"
    assert exchange_name("") == ""


@pytest.mark.parametrize(
    "value",
    [42, None, MyExchange(), int, ("name", "key")],
    ids=repr,
)
def test_exchange_name_of_anything_else_raises_type_error(value):
    with pytest.raises(TypeError):
        exchange_name(value)


def test_a_class_defined_later_gets_its_own_parameters_and_keeps_the_docstring():
    class Later(Exchange):
        name = "later"
        exchange_type = "fanout"

    assert Later.parameters["exchange"] == "later"
    assert Later.parameters["exchange_type"] == "fanout"
    assert "exchange_declare" in vars(Exchange)["parameters"].__doc__


def test_class_property_reads_its_getter_from_the_class_and_keeps_its_doc():
    from postage.exchanges import _ClassProperty  # noqa: PLC0415

    def getter(cls):
        """The class's name."""
        return cls.__name__

    class Owner:
        prop = _ClassProperty(getter)

    assert Owner.prop == "Owner"
    assert Owner().prop == "Owner"
    assert vars(Owner)["prop"].__doc__ == "The class's name."


def test_exchange_name_error_says_what_an_exchange_may_be():
    with pytest.raises(TypeError) as info:
        exchange_name(42)
    assert str(info.value) == "an exchange is an Exchange subclass or a name, not 42"
