"""decode_envelope: decoding is validation; bad input always raises MessageFormatError."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postage import (
    Message,
    MessageCommand,
    MessageFormatError,
    PostageError,
    RpcCommand,
    decode_envelope,
)
from postage.encoders import JsonEncoder
from postage.messages import message_from_body

# Bounded and machine-independent: no deadline and no too-slow check to flake on a busy CI.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_MISSING = object()


def envelope(**changes):
    body = {
        "type": "command",
        "name": "ping",
        "category": "message",
        "version": 2,
        "fingerprint": {},
        "content": {"parameters": {}},
        "_reserved": {},
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not _MISSING}


def as_json(body):
    return json.dumps(body)


def to_wire(encoded):
    return encoded.encode("utf-8") if isinstance(encoded, str) else encoded


def test_accepts_bytes():
    assert decode_envelope(as_json(envelope()).encode())["name"] == "ping"


def test_accepts_str():
    assert decode_envelope(as_json(envelope()))["name"] == "ping"


def test_returns_the_envelope_fields():
    body = envelope(category="rpc", content={"parameters": {"a": 1}})
    decoded = decode_envelope(as_json(body))
    assert decoded == body


def test_string_version_2_becomes_integer_2():
    decoded = decode_envelope(as_json(envelope(version="2")))
    assert decoded["version"] == 2
    assert type(decoded["version"]) is int


def test_integer_version_2_stays_2():
    assert decode_envelope(as_json(envelope(version=2)))["version"] == 2


BAD_BODIES = {
    "not-json": b"this is not json",
    "truncated-json": b'{"type": "command"',
    "empty": b"",
    "invalid-utf8": b"\xff\xfe\xfa\xfb",
    "json-list": b"[1, 2, 3]",
    "json-number": b"42",
    "json-string": b'"a string"',
    "json-null": b"null",
    "json-true": b"true",
    "missing-category": as_json(envelope(category=_MISSING)),
    "missing-type": as_json(envelope(type=_MISSING)),
    "unknown-category": as_json(envelope(category="event")),
    "non-string-category": as_json(envelope(category=["message"])),
    "non-string-type": as_json(envelope(type=5)),
    "null-type": as_json(envelope(type=None)),
    "list-content": as_json(envelope(content=[1, 2])),
    "string-content": as_json(envelope(content="text")),
    "list-fingerprint": as_json(envelope(fingerprint=["n", "t"])),
    "string-fingerprint": as_json(envelope(fingerprint="me")),
    "version-1": as_json(envelope(version=1)),
    "version-3": as_json(envelope(version=3)),
    "version-string-3": as_json(envelope(version="3")),
    "version-null": as_json(envelope(version=None)),
    "version-float": as_json(envelope(version=2.0)),
    "version-true": as_json(envelope(version=True)),
    "version-list": as_json(envelope(version=[2])),
    "null-category": as_json(envelope(category=None)),
    "non-string-name": as_json(envelope(name=5)),
    "null-name": as_json(envelope(name=None)),
    "list-name": as_json(envelope(name=["ping"])),
    "null-content": as_json(envelope(content=None)),
    "number-content": as_json(envelope(content=1)),
    "number-fingerprint": as_json(envelope(fingerprint=7)),
    "null-fingerprint": as_json(envelope(fingerprint=None)),
    "string-reserved": as_json(envelope(_reserved="x")),
    "list-reserved": as_json(envelope(_reserved=[])),
    "null-reserved": as_json(envelope(_reserved=None)),
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
    "deeply-nested-content": ('{"type": "t", "category": "message", "content": {"a": '
                              + "[" * 100_000 + "]" * 100_000 + "}}"),
}

# What each kind of bad body is told (the error says which rule it broke).
BAD_BODY_MESSAGES = {
    "not-json": "body is not valid JSON",
    "invalid-utf8": "body is not valid JSON",
    "json-list": "envelope must be an object, not list",
    "json-null": "envelope must be an object, not NoneType",
    "missing-category": "envelope has no 'category'",
    "null-category": "unknown message category None",
    "unknown-category": "unknown message category 'event'",
    "missing-type": "envelope has no 'type'",
    "null-type": "envelope field 'type' must be a str",
    "non-string-type": "envelope field 'type' must be a str",
    "non-string-name": "envelope field 'name' must be a str",
    "list-content": "envelope field 'content' must be a dict",
    "string-fingerprint": "envelope field 'fingerprint' must be a dict",
    "string-reserved": "envelope field '_reserved' must be a dict",
    "version-1": "unsupported envelope version 1",
    "version-string-3": "unsupported envelope version '3'",
    "version-true": "unsupported envelope version True",
    "deeply-nested": "body is not valid JSON",
}


@pytest.mark.parametrize("data", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_body_raises_message_format_error(data):
    with pytest.raises(MessageFormatError):
        decode_envelope(data)


@pytest.mark.parametrize(("kind", "text"), list(BAD_BODY_MESSAGES.items()),
                         ids=list(BAD_BODY_MESSAGES))
def test_bad_body_error_says_which_rule_it_broke(kind, text):
    with pytest.raises(MessageFormatError) as info:
        decode_envelope(BAD_BODIES[kind])
    assert str(info.value).startswith(text)


def test_envelope_without_version_is_accepted_as_version_2():
    decoded = decode_envelope(as_json(envelope(version=_MISSING)))
    assert decoded["version"] == 2
    assert type(decoded["version"]) is int


def test_absent_optional_fields_are_filled_in():
    bare = {"type": "command", "category": "message"}
    assert decode_envelope(as_json(bare)) == {
        "type": "command", "category": "message", "name": "none", "content": {},
        "fingerprint": {}, "_reserved": {}, "version": 2}


def test_filled_in_fields_are_fresh_dicts():
    decoded = decode_envelope(as_json({"type": "command", "category": "message"}))
    assert decoded["content"] is not decoded["fingerprint"]
    assert decoded["fingerprint"] is not decoded["_reserved"]


def test_deeply_nested_json_is_a_message_format_error_not_a_recursion_error():
    """json.loads raises RecursionError on deep nesting: bad input all the same."""
    with pytest.raises(MessageFormatError):
        JsonEncoder().decode("[" * 100_000 + "]" * 100_000)


def test_a_plugged_in_encoder_error_is_named_in_the_message():
    class Broken(JsonEncoder):
        def decode(self, data):
            raise KeyError("broken encoder")

    with pytest.raises(MessageFormatError, match=r"^body cannot be decoded: 'broken encoder'$"):
        decode_envelope(as_json(envelope()), encoder=Broken())


def test_a_plugged_in_encoder_message_format_error_passes_unchanged():
    class Strict(JsonEncoder):
        def decode(self, data):
            raise MessageFormatError("strict says no")

    with pytest.raises(MessageFormatError, match=r"^strict says no$"):
        decode_envelope(as_json(envelope()), encoder=Strict())


def test_message_format_error_is_a_value_error_and_a_postage_error():
    with pytest.raises(MessageFormatError) as info:
        decode_envelope(b"[]")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PostageError)


def test_a_plugged_in_encoder_failing_any_way_gives_message_format_error():
    class Broken(JsonEncoder):
        def decode(self, data):
            raise KeyError("broken encoder")

    with pytest.raises(MessageFormatError):
        decode_envelope(as_json(envelope()), encoder=Broken())


def test_a_plugged_in_encoder_is_used():
    class Reversed(JsonEncoder):
        def decode(self, data):
            return super().decode(data[::-1])

    decoded = decode_envelope(as_json(envelope(name="rev"))[::-1], encoder=Reversed())
    assert decoded["name"] == "rev"


# Property tests --------------------------------------------------------------------------

# st.text() leaves out lone surrogates; a Python str may hold one (os.fsdecode of a bad file
# name), and it must survive the trip as UTF-8 bytes too. (Only lone ones: JSON reads a high
# surrogate escape followed by a low one as a single astral character, by its spec.)
lone_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(max_size=8) | st.builds(
    lambda head, middle, tail: head + middle + tail,
    st.text(max_size=4),
    lone_surrogate,
    st.text(max_size=4),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(texts, json_values, max_size=3)


@PROPERTY
@given(content=json_objects, kind=st.sampled_from([Message, MessageCommand, RpcCommand]))
def test_any_json_content_survives_encode_and_decode(content, kind):
    message = kind("name") if kind is not Message else kind()
    message.content = content
    encoded = JsonEncoder().encode(message.body)
    decoded = decode_envelope(to_wire(encoded))
    assert decoded["content"] == content
    assert decoded["version"] == 2
    assert message_from_body(decoded) == message


@PROPERTY
@given(parameters=json_values)
def test_any_json_command_parameters_survive_encode_and_decode(parameters):
    message = RpcCommand("call", parameters)
    decoded = decode_envelope(to_wire(JsonEncoder().encode(message.body)))
    expected = {} if parameters is None else parameters
    assert decoded["content"] == {"parameters": expected}


def _decodes_or_rejects(data):
    try:
        decoded = decode_envelope(data)
    except MessageFormatError:
        return
    assert isinstance(decoded, dict)
    assert decoded["category"] in ("message", "rpc")
    assert isinstance(decoded["type"], str)
    assert decoded["version"] == 2


@PROPERTY
@given(data=st.binary())
def test_arbitrary_bytes_decode_or_raise_message_format_error(data):
    _decodes_or_rejects(data)


@PROPERTY
@given(data=st.text())
def test_arbitrary_text_decodes_or_raises_message_format_error(data):
    _decodes_or_rejects(data)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
field_values = (
    st.sampled_from(["message", "rpc", "command", "result", "2", 2, 2.0, 3, {}, {"a": 1}, []])
    | scalars
    | st.lists(scalars, max_size=2)
    | st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
ENVELOPE_FIELDS = ("type", "name", "category", "version", "fingerprint", "content", "_reserved")
envelope_like = st.builds(
    lambda changes, removed: {
        key: value for key, value in {**envelope(), **changes}.items() if key not in removed
    },
    st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), field_values, max_size=3),
    st.sets(st.sampled_from(ENVELOPE_FIELDS), max_size=2),
)


def _valid(body):
    """The envelope rules, written out independently of decode_envelope."""
    def absent_or(key, kind):
        return key not in body or (type(body[key]) is kind)

    version = body.get("version", 2)
    return (
        body.get("category") in ("message", "rpc")
        and type(body.get("type")) is str
        and absent_or("name", str)
        and all(absent_or(key, dict) for key in ("content", "fingerprint", "_reserved"))
        and ((type(version) is int and version == 2) or version == "2")
    )


@PROPERTY
@given(body=envelope_like)
def test_arbitrary_envelope_like_objects_are_accepted_exactly_when_valid(body):
    """Valid input is accepted (with the defaults filled in); anything else is rejected with
    MessageFormatError, never another error, never accepted."""
    data = json.dumps(body)
    if not _valid(body):
        with pytest.raises(MessageFormatError):
            decode_envelope(data)
        return
    decoded = decode_envelope(data)
    defaults = {"name": "none", "content": {}, "fingerprint": {}, "_reserved": {}}
    assert decoded == {**defaults, **body, "version": 2}
