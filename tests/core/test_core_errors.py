"""The error hierarchy DESIGN.md fixes ("Errors"), re-exported by ``postage``."""

import pytest

import postage
from postage import errors


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (errors.MessageFormatError, (errors.PostageError, ValueError)),
        (errors.EncodeError, (errors.PostageError, TypeError)),
        (errors.PublishError, (errors.PostageError,)),
        (errors.NackError, (errors.PublishError,)),
        (errors.UnroutableError, (errors.PublishError,)),
        (errors.BrokerConnectionError, (errors.PostageError,)),
        (errors.AuthenticationError, (errors.BrokerConnectionError,)),
        (errors.VirtualHostError, (errors.BrokerConnectionError,)),
    ],
)
def test_error_derives_from_its_documented_bases(error, bases):
    for base in bases:
        assert issubclass(error, base)


def test_postage_error_is_an_exception():
    assert issubclass(errors.PostageError, Exception)


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_are_reexported_by_postage(name):
    assert getattr(postage, name) is getattr(errors, name)
