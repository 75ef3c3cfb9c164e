"""The public names of ``postage.messaging``, the 3.0.3 module: pinned, so that a change to
them is a decision, not an accident."""

from __future__ import annotations

import pytest

import postage
from postage import errors, messaging
from postage import twisted as postage_twisted

pytestmark = pytest.mark.blocking


def test_messaging_all_is_pinned():
    assert sorted(messaging.__all__) == [
        "AuthenticationError",
        "BrokerConnectionError",
        "EncodeError",
        "Encoder",
        "Exchange",
        "ExitScheduler",
        "FilterError",
        "Fingerprint",
        "GenericConsumer",
        "GenericProducer",
        "Handler",
        "JsonEncoder",
        "Message",
        "MessageCommand",
        "MessageFilter",
        "MessageFormatError",
        "MessageHandler",
        "MessageHandlerFullBody",
        "MessageProcessor",
        "MessageResult",
        "MessageResultError",
        "MessageResultException",
        "MessageStatus",
        "MicroScheduler",
        "MicroThread",
        "NackError",
        "PostageError",
        "PublishError",
        "RetryPolicy",
        "RpcCommand",
        "RpcHandler",
        "TLSVerificationError",
        "UnroutableError",
        "VirtualHostError",
        "decode_envelope",
    ]


def test_every_name_in_messaging_all_exists():
    missing = [name for name in messaging.__all__ if not hasattr(messaging, name)]

    assert missing == []


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_are_the_same_objects_in_messaging_and_postage(name):
    assert getattr(messaging, name) is getattr(errors, name) is getattr(postage, name)


@pytest.mark.parametrize("name", ["GenericProducer", "GenericConsumer", "MessageProcessor"])
def test_facade_classes_wrap_the_twisted_ones_and_subclass_none_of_postage_twisted(name):
    facade = getattr(messaging, name)

    assert not issubclass(facade, getattr(postage_twisted, name))
    assert [klass for klass in facade.__mro__
            if klass.__module__.startswith("postage.twisted")] == []


def test_retry_policy_is_the_same_class_in_all_three_apis():
    assert messaging.RetryPolicy is postage_twisted.RetryPolicy is postage.RetryPolicy
