"""The frames Postage writes for publish and ack are byte for byte pika's own."""

import pytest
from pika import BasicProperties, frame, spec
from twisted.internet import task

from postage.twisted.frames import ChannelFrames


class Connection:
    """What ChannelFrames uses of pika's connection: the frame size, the counters, and the
    write it hands the bytes to."""

    def __init__(self, body_max=131072 - 8):
        self._body_max_length = body_max
        self._reactor = task.Clock()
        self.bytes_sent = self.frames_sent = 0
        self.written = []

    def _adapter_emit_data(self, data):
        self.written.append(data)


class Channel:
    def __init__(self, connection, number=5):
        self.connection, self.channel_number, self.is_open = connection, number, True
        self.rejected = []

    def basic_reject(self, tag, requeue):
        self.rejected.append((tag, requeue))

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


@pytest.mark.parametrize("multiple", [False, True])
def test_ack_writes_what_pika_writes(multiple):
    connection = Connection()
    frames = ChannelFrames(Channel(connection, number=3))
    if multiple:
        frames.ack(1)
        frames.flush()
        expected = frame.Method(3, spec.Basic.Ack(delivery_tag=1, multiple=True)).marshal()
    else:
        frames.ack(2**40 + 7)  # out of order: on its own
        expected = frame.Method(3, spec.Basic.Ack(delivery_tag=2**40 + 7)).marshal()
    assert connection.written == [expected] and connection.frames_sent == 1


def test_a_closed_channel_refuses_as_pika_does():
    channel = Channel(Connection())
    channel.is_open = False
    frames = ChannelFrames(channel)
    with pytest.raises(RuntimeError):
        frames.publish("", "q", b"", BasicProperties())
    with pytest.raises(RuntimeError):
        frames.ack(5)


def acks(connection):
    """The acks written, as (tag, multiple)."""
    out = []
    for data in connection.written:
        method = frame.decode_frame(data)[1].method
        out.append((method.delivery_tag, method.multiple))
    return out


def test_acks_settled_in_order_go_out_as_one_multiple_ack_after_this_turn():
    connection = Connection()
    frames = ChannelFrames(Channel(connection))
    for tag in (1, 2, 3):
        frames.ack(tag)
    assert connection.written == []  # not yet: the reactor is still busy with this turn
    connection._reactor.advance(0)
    assert acks(connection) == [(3, True)]


def test_an_ack_out_of_order_goes_out_at_once_on_its_own():
    """A delivery never settled (a hung handler) must not hold back the acks after it."""
    connection = Connection()
    frames = ChannelFrames(Channel(connection))
    frames.ack(1)
    frames.ack(3)  # 2 is still running
    frames.ack(4)
    connection._reactor.advance(0)
    assert acks(connection) == [(3, False), (4, False), (1, True)]
    frames.ack(2)  # the gap fills: 2 joins the run, which now reaches 4
    connection._reactor.advance(0)
    # 3 and 4 went out already: the multiple ack names 2 (naming 4, acked before, would
    # make the broker close the channel: "unknown delivery tag 4")
    assert acks(connection)[-1] == (2, True)
    frames.ack(5)
    connection._reactor.advance(0)
    assert acks(connection)[-1] == (5, True)


def test_a_reject_goes_out_at_once_after_the_acks_before_it():
    connection = Connection()
    channel = Channel(connection)
    frames = ChannelFrames(channel)
    frames.ack(1)
    frames.reject(2)
    frames.ack(3)
    connection._reactor.advance(0)
    assert channel.rejected == [(2, False)]
    assert acks(connection) == [(1, True), (3, True)]


def test_flush_sends_the_waiting_ack_now():
    connection = Connection()
    frames = ChannelFrames(Channel(connection))
    frames.ack(1)
    frames.flush()
    assert acks(connection) == [(1, True)]
    connection._reactor.advance(0)
    assert acks(connection) == [(1, True)]  # nothing more


def test_acks_noted_before_a_publish_go_out_before_it():
    """An RPC server acks a request, then replies: the ack must reach the broker first."""
    connection = Connection()
    frames = ChannelFrames(Channel(connection))
    frames.ack(1)
    frames.publish("", "reply-to", b"{}", BasicProperties())
    assert frame.decode_frame(connection.written[0])[1].method.NAME == "Basic.Ack"
    assert frame.decode_frame(connection.written[1])[1].method.NAME == "Basic.Publish"
