"""The confirm window on a task.Clock, without a broker: tags, acks and nacks (``multiple``
too), returns by message id, the backlog, its bounds in number and time, and what is sent
again after a lost channel."""

import pytest
from twisted.internet import task
from twisted.python.failure import Failure

from postage import BrokerConnectionError, NackError, PublishError, UnroutableError
from postage.twisted.confirms import ConfirmWindow, Publish, refused_exchange


def publish(n, exchange="ex", mandatory=False):
    return Publish(exchange, f"key{n}", f"body{n}", None, mandatory,
                   f"id{n}" if mandatory else None)


_failed = []


@pytest.fixture(autouse=True)
def _consume_failures():
    """The failures outcome() looked at are handled once the test is over (an unhandled
    one would be logged as an error of a later test)."""
    yield
    while _failed:
        _failed.pop().addErrback(lambda _: None)


def outcome(p):
    """'pending', 'confirmed', or the error class of a publish's Deferred (read without
    changing it)."""
    d = p.deferred
    if not d.called:
        return "pending"
    if isinstance(d.result, Failure):
        _failed.append(d)
        return d.result.type
    return "confirmed"


def open_window(**knobs):
    window = ConfirmWindow(task.Clock(), **knobs)
    window.channel_open()
    return window


def send(window, *publishes):
    for p in publishes:
        assert window.may_send_now() or window.has_room()
        window.sent(p)


def test_an_ack_confirms_only_its_own_publish():
    window = open_window()
    a, b, c = publish(1), publish(2), publish(3)
    send(window, a, b, c)
    window.confirm(2, multiple=False)
    assert [outcome(p) for p in (a, b, c)] == ["pending", "confirmed", "pending"]


def test_a_multiple_ack_confirms_every_lower_tag():
    window = open_window()
    ps = [publish(n) for n in range(1, 6)]
    send(window, *ps)
    window.confirm(3, multiple=True)
    assert [outcome(p) for p in ps] == ["confirmed"] * 3 + ["pending"] * 2
    window.confirm(5, multiple=True)
    assert [outcome(p) for p in ps] == ["confirmed"] * 5
    assert not window.unconfirmed


def test_a_nack_fails_its_own_publish_with_nack_error():
    window = open_window()
    a, b = publish(1), publish(2)
    send(window, a, b)
    window.confirm(2, multiple=False, nack=True)
    window.confirm(1, multiple=False)
    assert (outcome(a), outcome(b)) == ("confirmed", NackError)


def test_a_multiple_nack_fails_every_lower_unconfirmed_publish():
    window = open_window()
    ps = [publish(n) for n in range(1, 4)]
    send(window, *ps)
    window.confirm(1, multiple=False)
    window.confirm(3, multiple=True, nack=True)
    assert [outcome(p) for p in ps] == ["confirmed", NackError, NackError]


def test_a_publish_pika_refused_takes_no_tag():
    """Only sent() takes a tag: a publish that never reached sent() shifts nothing, so the
    next ack lands on the right publish (the tag that slipped, before this window)."""
    window = open_window()
    a, refused, b = publish(1), publish(2), publish(3)
    window.sent(a)
    # `refused` failed in pika: the publisher never calls sent() for it
    window.sent(b)
    window.confirm(2, multiple=False, nack=True)
    assert (outcome(a), outcome(b), outcome(refused)) == ("pending", NackError, "pending")


def test_a_returned_mandatory_publish_fails_unroutable_when_acked():
    window = open_window()
    a, b = publish(1, mandatory=True), publish(2, mandatory=True)
    send(window, a, b)
    assert window.returned_message("id2")
    window.confirm(2, multiple=True)
    assert (outcome(a), outcome(b)) == ("confirmed", UnroutableError)


def test_returns_are_forgotten_once_confirmed():
    window = open_window()
    ps = [publish(n, mandatory=True) for n in range(1, 101)]
    send(window, *ps)
    assert len(window.returns) == 100
    window.confirm(100, multiple=True)
    assert window.returns == {}
    assert not window.returned_message("id5")  # a late return of a confirmed one is not ours


def test_a_return_of_someone_elses_message_is_not_ours():
    window = open_window()
    assert not window.returned_message("nobody")
    assert not window.returned_message(None)


def test_the_window_has_no_room_at_max_unconfirmed():
    window = open_window(max_unconfirmed=2)
    send(window, publish(1), publish(2))
    assert not window.has_room()
    third = publish(3)
    window.hold(third)
    assert window.next_to_send() is None
    window.confirm(1, multiple=False)
    assert window.next_to_send() is third


def test_refill_waits_until_the_window_is_half_empty():
    window = open_window(max_unconfirmed=4)
    send(window, *[publish(n) for n in range(1, 5)])
    window.hold(publish(5))
    window.confirm(1, multiple=False)
    assert not window.refill_wanted()  # 3 of 4 in flight
    window.confirm(2, multiple=False)
    assert window.refill_wanted()  # 2 of 4: refill in a burst


def test_nothing_is_sent_while_the_broker_blocks_publishers():
    window = open_window()
    window.blocked = True
    assert not window.may_send_now()
    p = publish(1)
    window.hold(p)
    assert window.next_to_send() is None
    window.blocked = False
    assert window.next_to_send() is p


def test_at_most_max_waiting_publishes_wait_while_nothing_can_be_sent():
    window = ConfirmWindow(task.Clock(), max_waiting=2)  # no channel yet
    first, second, third = publish(1), publish(2), publish(3)
    for p in (first, second, third):
        window.hold(p)
    assert (outcome(first), outcome(second)) == ("pending", "pending")
    assert outcome(third) is BrokerConnectionError


def test_a_publish_waiting_longer_than_wait_timeout_fails():
    clock = task.Clock()
    window = ConfirmWindow(clock, wait_timeout=10)
    early = publish(1)
    window.hold(early)
    clock.advance(6)
    late = publish(2)
    window.hold(late)
    clock.advance(4)
    assert outcome(early) is BrokerConnectionError
    assert outcome(late) == "pending"
    clock.advance(6)
    assert outcome(late) is BrokerConnectionError
    assert not window.backlog
    assert not clock.getDelayedCalls()


def test_a_lost_channel_sends_the_unconfirmed_again_first_and_in_order():
    window = open_window()
    a, b, c = publish(1), publish(2), publish(3)
    send(window, a, b)
    window.hold(c)  # (waits behind nothing: forced into the backlog)
    window.confirm(1, multiple=False)
    window.channel_lost(BrokerConnectionError("gone"))
    assert list(window.backlog) == [b, c]
    window.channel_open()
    assert window.next_to_send() is b
    window.sent(b)
    window.confirm(1, multiple=False)  # tags start again at 1 on the new channel
    assert outcome(b) == "confirmed"


def test_a_refused_exchange_fails_only_its_own_publishes():
    """One publish to a missing exchange closes the channel: the others the broker took are
    sent again, not failed; those to the missing exchange fail with the broker's reason."""
    window = open_window()
    good, bad, later_bad, later_good = (publish(1), publish(2, "missing"),
                                        publish(3, "missing"), publish(4))
    send(window, good, bad)
    window.hold(later_bad)
    window.hold(later_good)
    window.channel_lost(Exception("NOT_FOUND - no exchange 'missing' in vhost '/'"))
    assert outcome(bad) is PublishError and outcome(later_bad) is PublishError
    assert list(window.backlog) == [good, later_good]


def test_a_channel_error_naming_no_exchange_twice_in_a_row_fails_what_it_would_resend():
    window = open_window()
    p = publish(1)
    send(window, p)
    window.channel_lost(Exception("PRECONDITION_FAILED - something"))
    assert list(window.backlog) == [p]
    window.channel_open()
    window.sent(window.next_to_send())
    window.channel_lost(Exception("PRECONDITION_FAILED - something"))
    assert outcome(p) is PublishError
    assert window.error is None  # later publishes still go out


def test_fail_all_ends_every_publish_and_refuses_new_ones():
    window = open_window(max_unconfirmed=1)
    sent, waiting = publish(1), publish(2)
    send(window, sent)
    window.hold(waiting)
    window.fail_all(BrokerConnectionError("closed"))
    assert outcome(sent) is BrokerConnectionError
    assert outcome(waiting) is BrokerConnectionError
    late = publish(3)
    window.hold(late)
    assert outcome(late) is BrokerConnectionError


@pytest.mark.parametrize(("reason", "exchange"), [
    ("NOT_FOUND - no exchange 'x.y' in vhost '/'", "x.y"),
    ("ACCESS_REFUSED - access to exchange 'it''s' in vhost 'v' refused for user 'u'",
     "it''s"),
    ("PRECONDITION_FAILED - inequivalent arg 'durable'", None),
    (None, None),
])
def test_refused_exchange_reads_the_broker_reason(reason, exchange):
    assert refused_exchange(reason) == exchange
