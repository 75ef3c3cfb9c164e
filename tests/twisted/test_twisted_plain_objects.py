"""The Twisted layer's plain pieces that need no broker: ``OneShot`` (a result many wait
for), ``parse_queue`` (an ``eqk`` queue spec), the producer's command parameters, and the
knobs the constructors accept. Bad arguments fail at once, with the name of what was wrong."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from postage.twisted import GenericProducer, MessageProcessor
from postage.twisted.oneshot import OneShot
from postage.twisted.producer import command_parameters
from postage.twisted.topology import parse_queue

NOWHERE = {"host": "127.0.0.1", "port": 1, "user": "guest", "password": "guest"}


def test_oneshot_gives_every_waiter_the_value_before_and_after_it_fired():
    shot = OneShot()
    early = shot.when()
    assert not shot.called and not early.called
    shot.fire(42)
    shot.fire(43)  # later calls are ignored
    assert shot.called
    assert (early.result, shot.when().result) == (42, 42)


def test_oneshot_gives_every_waiter_the_failure_before_and_after_it_fired():
    shot = OneShot()
    early = shot.when()
    shot.fire(Failure(KeyError("k")))
    late = shot.when()
    for d in (early, late):
        failures = []
        d.addErrback(failures.append)
        assert failures[0].check(KeyError)


def test_parse_queue_reads_a_name_or_a_spec_with_flags():
    assert parse_queue("q") == ("q", {})
    assert parse_queue({"name": "q", "flags": {"durable": True}}) == ("q", {"durable": True})
    assert parse_queue({"name": "q", "flags": None}) == ("q", {})


@pytest.mark.parametrize("spec", [42, {"flags": {}}, {"name": 7}])
def test_parse_queue_refuses_anything_else_naming_it(spec):
    with pytest.raises(TypeError) as info:
        parse_queue(spec)
    expected = f"a queue is a name or {{'name': ..., 'flags': {{...}}}}, not {spec!r}"
    assert str(info.value) == expected


def test_command_parameters_are_one_positional_value_or_the_keywords():
    assert command_parameters("x", (5,), {}) == 5
    assert command_parameters("x", (), {"a": 1}) == {"a": 1}
    for args, kwds in (((1, 2), {}), ((1,), {"a": 1})):
        with pytest.raises(TypeError, match=r"^x\(\) takes one positional parameters value"):
            command_parameters("x", args, kwds)


def test_an_unknown_producer_option_is_refused_at_once():
    with pytest.raises(TypeError, match=r"^unknown producer option 'prefetch'$"):
        GenericProducer(hup=NOWHERE, prefetch=3)


def test_an_unknown_processor_option_is_refused_at_once():
    with pytest.raises(TypeError, match=r"^unknown processor option\(s\) \['bogus'\]$"):
        MessageProcessor(hup=NOWHERE, eqk=[], bogus=1)
