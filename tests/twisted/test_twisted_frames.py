"""The frames Postage writes for publish and ack are byte for byte pika's own."""

import pytest
from pika import BasicProperties, frame, spec

from postage.twisted.frames import ChannelFrames


class Connection:
    """What ChannelFrames uses of pika's connection: the frame size, the counters, and the
    write it hands the bytes to."""

    def __init__(self, body_max=131072 - 8):
        self._body_max_length = body_max
        self.bytes_sent = self.frames_sent = 0
        self.written = []

    def _adapter_emit_data(self, data):
        self.written.append(data)


class Channel:
    def __init__(self, connection, number=5):
        self.connection, self.channel_number, self.is_open = connection, number, True

    def _raise_if_not_open(self):
        raise RuntimeError("closed")


def pika_publish(number, exchange, key, body, properties, mandatory, body_max):
    out = [frame.Method(number, spec.Basic.Publish(exchange=exchange, routing_key=key,
                                                   mandatory=mandatory)).marshal(),
           frame.Header(number, len(body), properties).marshal()]
    for start in range(0, len(body), body_max):
        out.append(frame.Body(number, body[start:start + body_max]).marshal())
    return b"".join(out), len(out)


@pytest.mark.parametrize("mandatory", [False, True])
@pytest.mark.parametrize("body", [b'{"a": 1}', "é unicode".encode(), b"x" * 300, b""])
def test_publish_writes_what_pika_writes(body, mandatory):
    connection = Connection(body_max=100)
    frames = ChannelFrames(Channel(connection))
    properties = BasicProperties(content_type="application/json", delivery_mode=2,
                                 user_id="guest", headers={"h": 1})
    for _ in range(2):  # the second time from the caches
        frames.publish("exchange", "route.key", body, properties, mandatory)
    expected, count = pika_publish(5, "exchange", "route.key", body, properties, mandatory,
                                   100)
    assert connection.written == [expected, expected]
    assert connection.frames_sent == 2 * count
    assert connection.bytes_sent == 2 * len(expected)


def test_a_changed_properties_object_is_encoded_again():
    connection = Connection()
    frames = ChannelFrames(Channel(connection))
    first = BasicProperties(content_type="a")
    second = BasicProperties(content_type="b", correlation_id="c")
    frames.publish("", "q", b"1", first)
    frames.publish("", "q", b"1", second)
    assert connection.written[1] == pika_publish(5, "", "q", b"1", second, False, 10**6)[0]


def test_a_str_body_is_sent_as_utf8():
    connection = Connection()
    ChannelFrames(Channel(connection)).publish("", "q", "é", BasicProperties())
    assert connection.written[0] == pika_publish(5, "", "q", "é".encode(), BasicProperties(),
                                                 False, 10**6)[0]


@pytest.mark.parametrize(("exchange", "key"), [("", "k" * 256), ("x" * 256, "k"),
                                               ("", "bad\udc80")])
def test_a_name_pika_would_refuse_raises_and_sends_nothing(exchange, key):
    connection = Connection()
    with pytest.raises((ValueError, UnicodeEncodeError)):
        ChannelFrames(Channel(connection)).publish(exchange, key, b"", BasicProperties())
    assert connection.written == [] and connection.bytes_sent == 0


def test_ack_writes_what_pika_writes():
    connection = Connection()
    ChannelFrames(Channel(connection, number=3)).ack(2**40 + 7)
    expected = frame.Method(3, spec.Basic.Ack(delivery_tag=2**40 + 7)).marshal()
    assert connection.written == [expected] and connection.frames_sent == 1


def test_a_closed_channel_refuses_as_pika_does():
    channel = Channel(Connection())
    channel.is_open = False
    frames = ChannelFrames(channel)
    with pytest.raises(RuntimeError):
        frames.publish("", "q", b"", BasicProperties())
    with pytest.raises(RuntimeError):
        frames.ack(1)
