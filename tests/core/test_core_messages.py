"""Message classes: body shapes (DESIGN.md "Objects and wire"), truth, equality, rebuild."""

import pytest

from postage import (
    Fingerprint,
    JsonEncoder,
    Message,
    MessageCommand,
    MessageResult,
    MessageResultError,
    MessageResultException,
    MessageStatus,
    RpcCommand,
    decode_envelope,
)
from postage.messages import message_from_body

# Parametrized messages are made inside each test (as ``make()``), not at collection: a
# mutation tester that swaps the code in after collection must see them built by its code.

ENVELOPE_KEYS = {"type", "name", "category", "version", "fingerprint", "content", "_reserved"}


def test_body_has_exactly_the_envelope_keys():
    assert set(Message().body) == ENVELOPE_KEYS


def test_body_version_is_the_integer_2():
    version = MessageCommand("x").body["version"]
    assert version == 2
    assert type(version) is int


def test_message_without_arguments_has_empty_content():
    body = Message().body
    assert body["content"] == {}
    assert body["category"] == "message"
    assert body["fingerprint"] == {}
    assert body["_reserved"] == {}


def test_message_positional_arguments_go_to_args_only():
    assert Message(1, "two").body["content"] == {"args": [1, "two"]}


def test_message_keywords_go_to_kwds_only():
    assert Message(a=1, b=[2]).body["content"] == {"kwds": {"a": 1, "b": [2]}}


def test_message_with_both_has_args_and_kwds():
    assert Message(1, a=2).body["content"] == {"args": [1], "kwds": {"a": 2}}


def test_message_command_body():
    body = MessageCommand("ping", {"send_time": 1.5}).body
    assert (body["type"], body["name"], body["category"]) == ("command", "ping", "message")
    assert body["content"] == {"parameters": {"send_time": 1.5}}


def test_message_command_parameters_default_to_empty_dict():
    assert MessageCommand("ping").body["content"] == {"parameters": {}}


def test_rpc_command_body_has_category_rpc():
    body = RpcCommand("echo", {"text": "hi"}).body
    assert (body["type"], body["name"], body["category"]) == ("command", "echo", "rpc")
    assert body["content"] == {"parameters": {"text": "hi"}}


def test_rpc_command_parameters_default_to_empty_dict():
    assert RpcCommand("echo").body["content"] == {"parameters": {}}


@pytest.mark.parametrize("cls", [MessageCommand, RpcCommand])
@pytest.mark.parametrize("value", [[1, 2], "text", 3, 2.5, True, {"nested": [None]},
                                   0, 0.0, "", [], False, {}])
def test_command_parameters_may_be_any_json_value(cls, value):
    """Falsy values too: only None (no parameters) becomes ``{}``."""
    content = cls("x", value).body["content"]
    assert content == {"parameters": value}
    assert type(content["parameters"]) is type(value)


def test_message_status_name_is_the_status_and_content_is_empty():
    body = MessageStatus("busy").body
    assert (body["type"], body["name"], body["category"]) == ("status", "busy", "message")
    assert body["content"] == {}


@pytest.mark.parametrize(
    ("message", "content"),
    [
        (lambda: MessageResult(42), {"type": "success", "value": 42, "message": ""}),
        (lambda: MessageResult([1], "done"),
         {"type": "success", "value": [1], "message": "done"}),
        (
            lambda: MessageResultError("no such user"),
            {"type": "error", "value": None, "message": "no such user"},
        ),
        (
            lambda: MessageResultException("KeyError", "'x'"),
            {"type": "exception", "value": "KeyError", "message": "'x'"},
        ),
    ],
    ids=["result", "result-with-message", "error", "exception"],
)
def test_result_body(message, content):
    body = message().body
    assert (body["type"], body["name"], body["category"]) == ("result", "none", "message")
    assert body["content"] == content


@pytest.mark.parametrize(
    ("message", "value", "text"),
    [
        (lambda: MessageResult({"a": 1}, "ok"), {"a": 1}, "ok"),
        (lambda: MessageResult(7), 7, ""),
        (lambda: MessageResultError("failed"), None, "failed"),
        (lambda: MessageResultException("TimeoutError", "no answer"), "TimeoutError",
         "no answer"),
    ],
    ids=["result", "result-without-message", "error", "exception"],
)
def test_result_value_and_message_attributes(message, value, text):
    made = message()
    assert made.value == value
    assert made.message == text


@pytest.mark.parametrize(
    "message",
    [
        lambda: Message(),
        lambda: Message(1),
        lambda: MessageCommand("x"),
        lambda: RpcCommand("x"),
        lambda: MessageStatus("ok"),
        lambda: MessageResult(None),
        lambda: MessageResult(0),
        lambda: MessageResult(False),
    ],
    ids=["message", "message-1", "command", "rpc", "status", "result-none", "result-0",
         "result-false"],
)
def test_message_is_true(message):
    assert bool(message()) is True


@pytest.mark.parametrize(
    "message",
    [lambda: MessageResultError("e"), lambda: MessageResultException("E", "e")],
    ids=["error", "exception"],
)
def test_failed_result_is_false(message):
    assert bool(message()) is False


def test_if_reply_tells_success_from_failure():
    outcomes = []
    for reply in (MessageResult(1), MessageResultError("e"), MessageResultException("E", "")):
        if reply:
            outcomes.append("success")
        else:
            outcomes.append("failure")
    assert outcomes == ["success", "failure", "failure"]


def test_messages_with_equal_bodies_are_equal():
    assert MessageCommand("x", {"a": 1}) == MessageCommand("x", {"a": 1})


def test_messages_with_different_bodies_are_not_equal():
    assert MessageCommand("x", {"a": 1}) != MessageCommand("x", {"a": 2})
    assert MessageCommand("x") != RpcCommand("x")
    assert MessageResult(1) != MessageResultException(1, "")


def test_messages_differing_only_in_fingerprint_are_not_equal():
    first, second = MessageStatus("ok"), MessageStatus("ok")
    second.fingerprint = Fingerprint(name="other").as_dict()
    assert first != second


def test_message_is_not_equal_to_a_non_message():
    assert Message() != {}
    assert Message() != Message().body


def test_fingerprint_dict_goes_into_the_body():
    message = MessageCommand("x")
    message.fingerprint = Fingerprint("n", "t", 1, "h", "u", "v").as_dict()
    assert message.body["fingerprint"] == {
        "name": "n",
        "type": "t",
        "pid": 1,
        "host": "h",
        "user": "u",
        "vhost": "v",
    }


ALL_KINDS = {
    "message": lambda: Message(),
    "message-args-kwds": lambda: Message(1, "a", k={"x": 1}),
    "command": lambda: MessageCommand("ping", {"a": [1, 2]}),
    "rpc": lambda: RpcCommand("echo", "text"),
    "status": lambda: MessageStatus("busy"),
    "result": lambda: MessageResult({"v": 1}, "fine"),
    "error": lambda: MessageResultError("bad"),
    "exception": lambda: MessageResultException("KeyError", "'k'"),
}


@pytest.mark.parametrize("make", list(ALL_KINDS.values()), ids=list(ALL_KINDS))
def test_message_from_body_rebuilds_an_equal_message(make):
    message = make()
    rebuilt = message_from_body(message.body)
    assert rebuilt == message
    assert bool(rebuilt) is bool(message)


@pytest.mark.parametrize(
    "make",
    [lambda: MessageResult(1), lambda: MessageResultError("bad"),
     lambda: MessageResultException("E", "e")],
    ids=["result", "error", "exception"],
)
def test_message_from_body_rebuilds_the_result_class(make):
    message = make()
    rebuilt = message_from_body(message.body)
    assert type(rebuilt) is type(message)
    assert (rebuilt.value, rebuilt.message) == (message.value, message.message)


@pytest.mark.parametrize("make", list(ALL_KINDS.values()), ids=list(ALL_KINDS))
def test_message_survives_the_wire(make):
    message = make()
    message.fingerprint = Fingerprint("n", "t", 1, "h", "u", "v").as_dict()
    encoded = JsonEncoder().encode(message.body)
    assert message_from_body(decode_envelope(encoded)) == message


@pytest.mark.parametrize(
    "content",
    [{"type": "bogus", "value": 1, "message": ""}, {}, {"value": 1}],
    ids=["unknown-type", "empty", "no-type"],
)
def test_malformed_result_becomes_a_false_message_result_error(content):
    body = MessageResult(1).body
    body["content"] = content
    rebuilt = message_from_body(body)
    assert isinstance(rebuilt, MessageResultError)
    assert not rebuilt
    assert rebuilt.message == f"malformed result content: {content!r}"


def test_message_from_body_fills_in_what_a_bare_body_lacks():
    """A body that names only type and category (what validation requires) rebuilds with
    the envelope's defaults, each a fresh empty dict."""
    message = message_from_body({"type": "command", "category": "message"})
    assert (message.type, message.name, message.category) == ("command", "none", "message")
    assert message.content == {}
    assert message.fingerprint == {}
    assert message._reserved == {}
    assert message.body["_reserved"] == {}


def test_message_from_body_keeps_every_field_it_is_given():
    body = {"type": "status", "name": "busy", "category": "message", "version": 2,
            "fingerprint": {"name": "n"}, "content": {"k": 1}, "_reserved": {"r": 2}}
    message = message_from_body(body)
    assert message.body == body
    assert message._reserved == {"r": 2}


def test_message_repr_names_its_class_type_name_and_content():
    assert repr(MessageCommand("go", {"a": 1})) == (
        "<MessageCommand command/go content={'parameters': {'a': 1}}>")
    assert repr(MessageResultError("bad")).startswith("<MessageResultError result/none ")


def test_postage_3_result_with_string_version_is_read():
    wire = (
        '{"type": "result", "name": "none", "category": "message", "version": "2", '
        '"fingerprint": {}, "content": {"type": "success", "value": 5, "message": ""}, '
        '"_reserved": {}}'
    )
    reply = message_from_body(decode_envelope(wire))
    assert isinstance(reply, MessageResult)
    assert reply
    assert reply.value == 5
