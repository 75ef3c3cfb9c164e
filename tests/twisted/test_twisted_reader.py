"""The fast reader hands consumers exactly what pika's own reader would, whatever way the
bytes are cut, and leaves every other frame to pika, in order."""

import random

import pytest
from pika import BasicProperties, frame, spec

from postage.twisted import reader


class Channel:
    def __init__(self, log, consumer_tags=("ctag",), cancelled=()):
        self._consumers = {tag: self.consumer for tag in consumer_tags}
        self._cancelled = set(cancelled)
        self.log = log

    def consumer(self, channel, method, properties, body):
        assert channel is self
        self.log.append(("deliver", method.consumer_tag, method.delivery_tag,
                         method.redelivered, method.exchange, method.routing_key,
                         dict(vars(properties)), body))


class Impl:
    """What the reader uses of pika's connection; generic frames are recorded."""

    def __init__(self, log):
        self._frame_buffer = b""
        self.bytes_received = self.frames_received = 0
        self._channels = {}
        self.log = log
        self._on_data_available = None

    def _process_frame(self, value):
        self.frames_received += 1
        self.log.append(("pika", value.NAME, getattr(value, "channel_number", None)))


def deliver(number, tag, body, ctag="ctag", exchange="ex", key="k", **props):
    properties = BasicProperties(**props)
    frames = [frame.Method(number, spec.Basic.Deliver(ctag, tag, tag % 2 == 0, exchange,
                                                      key)).marshal(),
              frame.Header(number, len(body), properties).marshal()]
    for start in range(0, len(body), 50):
        frames.append(frame.Body(number, body[start:start + 50]).marshal())
    return b"".join(frames)


def stream():
    return b"".join([
        deliver(1, 1, b'{"a": 1}', content_type="application/json", headers={"h": [1, 2]}),
        frame.Heartbeat().marshal(),
        deliver(2, 1, b"x" * 120, correlation_id="c", reply_to="r"),  # three body frames
        frame.Method(1, spec.Basic.QosOk()).marshal(),
        deliver(1, 2, b""),  # no body frame at all
        deliver(1, 3, b"to a consumer pika does not know", ctag="other"),
        deliver(1, 4, "é".encode(), exchange="", key="queue"),
    ])


def expected():
    return [
        ("deliver", "ctag", 1, False, "ex", "k",
         dict(vars(BasicProperties(content_type="application/json", headers={"h": [1, 2]}))),
         b'{"a": 1}'),
        ("pika", "Heartbeat", 0),
        ("deliver", "ctag", 1, False, "ex", "k",
         dict(vars(BasicProperties(correlation_id="c", reply_to="r"))), b"x" * 120),
        ("pika", "METHOD", 1),
        ("deliver", "ctag", 2, True, "ex", "k", dict(vars(BasicProperties())), b""),
        ("pika", "METHOD", 1), ("pika", "Header", 1), ("pika", "Body", 1),
        ("deliver", "ctag", 4, True, "", "queue", dict(vars(BasicProperties())), "é".encode()),
    ]


def read(chunks):
    log = []
    impl = Impl(log)
    impl._channels = {1: Channel(log), 2: Channel(log)}
    reader.install(impl)
    for chunk in chunks:
        impl._on_data_available(chunk)
    return log, impl


def test_a_stream_read_at_once():
    data = stream()
    log, impl = read([data])
    assert log == expected()
    assert impl.bytes_received == len(data) and impl._frame_buffer == b""


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_cut_anywhere(seed):
    data = stream()
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    log, impl = read(chunks)
    assert log == expected()
    assert impl.bytes_received == len(data)


def test_a_stream_one_byte_at_a_time():
    data = stream()
    log, _impl = read([data[i:i + 1] for i in range(len(data))])
    assert log == expected()


def test_a_delivery_to_a_cancelled_consumer_is_left_to_pika():
    log = []
    impl = Impl(log)
    impl._channels = {1: Channel(log, cancelled=("ctag",))}
    reader.install(impl)
    impl._on_data_available(deliver(1, 1, b"b"))
    assert [entry[:2] for entry in log] == [("pika", "METHOD"), ("pika", "Header"),
                                            ("pika", "Body")]


def test_a_bad_frame_end_is_refused():
    from pika.exceptions import InvalidFrameError

    data = bytearray(deliver(1, 1, b"b"))
    data[-1] = 0
    with pytest.raises(InvalidFrameError):
        read([bytes(data)])
