"""JsonEncoder: the content type, what it turns into lists, what it refuses, bad input."""

import json
import math

import pytest

from postage import EncodeError, Encoder, JsonEncoder, Message, MessageFormatError, PostageError


def wire(encoded):
    """What goes on the wire: the encoder's text as UTF-8 bytes, or its bytes."""
    return encoded.encode("utf-8") if isinstance(encoded, str) else encoded


def roundtrip(data):
    return json.loads(wire(JsonEncoder().encode(data)))


def test_content_type_is_application_json():
    assert JsonEncoder.content_type == "application/json"
    assert JsonEncoder().content_type == "application/json"


def test_json_encoder_is_an_encoder():
    assert isinstance(JsonEncoder(), Encoder)


def test_sets_encode_as_lists():
    decoded = roundtrip({"values": {1, 2, 3, "numbers"}})
    assert isinstance(decoded["values"], list)
    assert sorted(map(str, decoded["values"])) == ["1", "2", "3", "numbers"]


def test_frozensets_encode_as_lists():
    assert roundtrip(frozenset({7})) == [7]


def test_tuples_encode_as_lists():
    assert roundtrip({"pair": (1, "a"), "nested": ((1, 2), (3,))}) == {
        "pair": [1, "a"],
        "nested": [[1, 2], [3]],
    }


def test_seed_generic_message_with_a_set_encodes():
    message = Message(1, "str", values={1, 2, 3, "numbers"})
    content = roundtrip(message.body)["content"]
    assert content["args"] == [1, "str"]
    assert sorted(map(str, content["kwds"]["values"])) == ["1", "2", "3", "numbers"]


def test_plain_json_values_round_trip():
    data = {"a": [1, 2.5, None, True, False], "b": {"c": "ünïcode ✓"}}
    assert JsonEncoder().decode(wire(JsonEncoder().encode(data))) == data


def _circular_list():
    items = []
    items.append(items)
    return items


def _circular_dict():
    mapping = {}
    mapping["self"] = mapping
    return mapping


@pytest.mark.parametrize(
    "data",
    [
        {"object": object()},
        {"bytes": b"raw"},
        {"nan": math.nan},
        {"inf": math.inf},
        {"complex": 1j},
        {"tuple-key": {(1, 2): "x"}},
        _circular_list(),
        _circular_dict(),
    ],
    ids=["object", "bytes", "nan", "inf", "complex", "tuple-key", "circular-list", "circular-dict"],
)
def test_unencodable_content_raises_encode_error(data):
    with pytest.raises(EncodeError):
        JsonEncoder().encode(data)


def test_encode_error_is_a_postage_error_and_a_type_error():
    with pytest.raises(EncodeError) as info:
        JsonEncoder().encode(object())
    assert isinstance(info.value, PostageError)
    assert isinstance(info.value, TypeError)


def test_lone_surrogate_text_still_encodes_to_valid_utf8_json():
    # A str may hold lone surrogates (os.fsdecode of a bad file name, say); JSON can carry
    # them escaped, so the encoded body must still be UTF-8 on the wire and decode the same.
    data = {"name": "bad\udcff-file", "other": "\ud800"}
    assert JsonEncoder().decode(wire(JsonEncoder().encode(data))) == data


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", "", b"\xff\xfe\xfa", "{'single': 'quotes'}", b'{"a": 1'],
)
def test_decode_of_bad_json_raises_message_format_error(data):
    with pytest.raises(MessageFormatError):
        JsonEncoder().decode(data)


def test_decode_accepts_bytes_and_str():
    assert JsonEncoder().decode(b'{"a": 1}') == JsonEncoder().decode('{"a": 1}') == {"a": 1}


def test_encoded_json_is_compact():
    """No spaces after separators: every byte counts per message."""
    assert JsonEncoder().encode({"a": [1, 2], "b": "c d"}) == '{"a":[1,2],"b":"c d"}'


def test_encode_error_names_the_type_that_json_cannot_hold():
    class Gadget:
        pass

    with pytest.raises(EncodeError) as info:
        JsonEncoder().encode({"x": Gadget()})
    assert str(info.value) == "cannot encode message as JSON: Gadget cannot be encoded as JSON"


def test_decode_error_says_the_body_is_not_json():
    with pytest.raises(MessageFormatError, match=r"^body is not valid JSON: Expecting value"):
        JsonEncoder().decode(b"nope")


def test_decode_of_deeply_nested_json_raises_message_format_error():
    with pytest.raises(MessageFormatError, match=r"^body is not valid JSON"):
        JsonEncoder().decode(b"{\"a\":" * 100_000 + b"1" + b"}" * 100_000)


def test_the_encoder_interface_asks_subclasses_for_both_directions():
    class Half(Encoder):
        pass

    with pytest.raises(NotImplementedError):
        Half().encode({})
    with pytest.raises(NotImplementedError):
        Half().decode("{}")
    assert Half.content_type == "application/octet-stream"
