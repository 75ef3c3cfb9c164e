"""postage.options: a producer call's ``_options`` split from the command's parameters."""

import pytest

from postage.options import OPTIONS, command_parameters, split_options


def test_split_options_takes_the_options_out_and_leaves_the_parameters():
    kwds = {"a": 1, "_key": "k", "b": 2, "_timeout": 3}
    assert split_options(kwds) == {"_key": "k", "_timeout": 3}
    assert kwds == {"a": 1, "b": 2}


def test_split_options_of_no_keywords_is_empty():
    kwds = {}
    assert split_options(kwds) == {}
    assert split_options({"a": 1}) == {}


def test_every_documented_option_is_accepted():
    kwds = {name: name for name in OPTIONS}
    assert split_options(kwds) == {name: name for name in OPTIONS}
    assert kwds == {}
    assert OPTIONS >= {"_key", "_eks", "_timeout", "_max_retry", "_queue_only", "_mandatory"}


def test_an_unknown_option_is_an_error_naming_it_and_the_known_ones():
    with pytest.raises(TypeError) as info:
        split_options({"_timout": 3, "_key": "k", "a": 1})
    assert str(info.value) == (f"unknown option(s) ['_timout']; options are {sorted(OPTIONS)}")


@pytest.mark.parametrize(("args", "kwds", "parameters"), [
    ((5,), {}, 5),
    ((None,), {}, None),
    (([1, 2],), {}, [1, 2]),
    ((), {"a": 1}, {"a": 1}),
    ((), {}, {}),
])
def test_command_parameters_are_the_one_positional_value_or_the_keywords(args, kwds,
                                                                         parameters):
    assert command_parameters("x", args, kwds) == parameters


@pytest.mark.parametrize(("args", "kwds"), [((1, 2), {}), ((1,), {"a": 1})])
def test_command_parameters_refuse_both_or_several_positionals(args, kwds):
    with pytest.raises(TypeError) as info:
        command_parameters("go", args, kwds)
    assert str(info.value) == "go() takes one positional parameters value or keyword arguments"
