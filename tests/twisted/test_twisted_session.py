"""Sessions on ClientService: the reconnection schedule (on a clock), the first connection
bounded and not retried, hosts rotated on reconnection, a close during a reconnection that
schedules nothing more, a half-open link with data buffered declared lost within 2 ×
heartbeat and reconnected, and a stop that ends while the broker path is silent."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task

from postage import BrokerConnectionError, config
from postage.twisted.channel import CLOSE_TIMEOUT
from postage.twisted.connection import Session, is_permanent, reconnect_policy

from brokertools import BROKER_HOST, BROKER_PORT, GUEST

# ---- the schedule: 0.5 s, doubling, capped at 30 s, jittered ---------------------------

def test_reconnect_policy_starts_at_half_a_second_doubles_and_caps_at_30():
    policy = reconnect_policy(rand=lambda: 0.0)
    assert [policy(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy(10_000) == 30  # no overflow for a broker down for days


def test_reconnect_policy_jitter_adds_at_most_half_a_second():
    lowest, highest = reconnect_policy(rand=lambda: 0.0), reconnect_policy(rand=lambda: 0.999)
    for attempt in range(1, 12):
        assert lowest(attempt) < highest(attempt) < lowest(attempt) + 0.5


def test_reconnect_policy_default_randomness_stays_within_the_bounds():
    policy, floor = reconnect_policy(), reconnect_policy(rand=lambda: 0.0)
    delays = [policy(3) for _ in range(200)]
    assert all(floor(3) <= delay < floor(3) + 0.5 for delay in delays)
    assert len(set(delays)) > 1  # jittered: a fleet does not reconnect in step


def test_client_service_with_the_policy_retries_at_half_a_second_doubling_to_30_on_a_clock():
    """The schedule as ClientService applies it (its attempt numbering included): the gaps
    between failed attempts, on a clock."""
    from twisted.application.internet import ClientService

    clock = task.Clock()
    attempts = []

    class Refusing:
        def connect(self, factory):
            attempts.append(clock.seconds())
            return defer.fail(BrokerConnectionError("refused"))

    service = ClientService(Refusing(), protocol.Factory(), clock=clock,
                            retryPolicy=reconnect_policy(rand=lambda: 0.0))
    service.startService()
    while len(attempts) < 10:
        clock.advance(0.25)  # every delay is a multiple of this step
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[:9] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    service.stopService()


def test_the_twistd_service_retries_its_first_connection_on_the_same_schedule():
    from twisted.python.failure import Failure

    from postage.twisted.service import PostageService

    clock = task.Clock()
    service = PostageService([], None, "component", reactor=clock)
    service.retry_policy = reconnect_policy(rand=lambda: 0.0)
    delays = []
    for _ in range(8):
        service._failed(Failure(BrokerConnectionError("the broker is not up yet")))
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        call.cancel()
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert service.exit_code == 0  # transient: never an exit


def test_permanence_is_a_class_attribute_of_the_errors():
    from postage import AuthenticationError, TLSVerificationError, VirtualHostError

    assert all(is_permanent(cls("x")) for cls in (AuthenticationError, VirtualHostError,
                                                   TLSVerificationError))
    assert not is_permanent(BrokerConnectionError("x"))
    assert not is_permanent(ValueError("x"))
    assert issubclass(TLSVerificationError, BrokerConnectionError)


# ---- the first connection, on a clock ------------------------------------------------------

class Clock(task.Clock):
    """task.Clock with the system-event triggers a session registers for shutdown."""

    def addSystemEventTrigger(self, *args):  # noqa: N802 - Twisted's name
        return object()

    def removeSystemEventTrigger(self, trigger):  # noqa: N802
        pass


class ControlledEndpoint:
    """An endpoint whose attempts the test ends (as a refused or hung connection would)."""

    def __init__(self):
        self.attempts: list[defer.Deferred] = []

    def connect(self, factory):
        self.attempts.append(defer.Deferred())
        return self.attempts[-1]


def clock_session(endpoint):
    settings = config.settings(GUEST, connect_timeout=5)
    failed = []
    session = Session(settings, Clock(), "clock", lambda connection: None, lambda e: None,
                      failed.append, endpoint=endpoint, policy=lambda attempt: 1.0)
    return session, failed


def test_a_failed_first_connection_fails_start_and_is_not_retried():
    endpoint = ControlledEndpoint()
    session, failed = clock_session(endpoint)
    started = session.start()
    endpoint.attempts[0].errback(BrokerConnectionError("refused"))
    outcome = []
    started.addErrback(outcome.append)
    session.reactor.advance(0)
    assert outcome and outcome[0].check(BrokerConnectionError)
    session.reactor.advance(120)
    assert len(endpoint.attempts) == 1
    assert failed == []  # start() reported it; failed() is for a session that was running


def test_close_during_the_first_attempt_cancels_it_and_schedules_no_other():
    endpoint = ControlledEndpoint()
    session, _ = clock_session(endpoint)
    started = session.start()
    outcome = []
    started.addErrback(outcome.append)
    closed = session.close()
    assert closed.called
    assert outcome and outcome[0].check(BrokerConnectionError)
    assert endpoint.attempts[0].called  # cancelled
    endpoint.attempts[0].addErrback(lambda _: None)
    session.reactor.advance(120)
    assert len(endpoint.attempts) == 1


# ---- on the real broker -----------------------------------------------------------------

class _Side(protocol.Protocol):
    def __init__(self, other=None):
        self.other = other

    def dataReceived(self, data):
        self.other.transport.write(data)

    def connectionLost(self, reason=None):
        if self.other is not None and self.other.transport is not None:
            self.other.transport.abortConnection()


class _Client(_Side):
    def connectionMade(self):
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        self.factory.links.append(self)
        self.transport.pauseProducing()
        upstream = _Side(self)
        connectProtocol(TCP4ClientEndpoint(reactor, BROKER_HOST, BROKER_PORT),
                        upstream).addCallbacks(self._linked,
                                               lambda _: self.transport.abortConnection())

    def _linked(self, upstream):
        self.other = upstream
        self.transport.resumeProducing()


class FreezingProxy(protocol.Factory):
    """A TCP relay to the broker that can *freeze* its links: nothing is read from either
    side any more, as on a half-open link (the peer's buffers fill, nothing is answered).
    Links made after a freeze relay normally."""

    protocol = _Client

    def __init__(self):
        self.links: list[_Client] = []
        self.port = 0
        self.listening = None

    @property
    def connections(self):
        return len(self.links)

    def freeze(self):
        for link in self.links:
            link.transport.pauseProducing()
            if link.other is not None:
                link.other.transport.pauseProducing()

    def stop(self):
        for link in self.links:
            link.transport.abortConnection()
        return self.listening.stopListening()


@pytest_twisted.async_yield_fixture
async def frozen_proxies():
    """``make()`` starts a FreezingProxy on a free port; all are stopped at the end."""
    from twisted.internet import reactor

    made = []

    def make():
        proxy = FreezingProxy()
        proxy.listening = reactor.listenTCP(0, proxy, interface=BROKER_HOST)
        proxy.port = proxy.listening.getHost().port
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await defer.maybeDeferred(proxy.stop)


def counting_session(settings, name):
    """A session that only records: connections set up, losses, permanent failures."""
    from twisted.internet import reactor

    events = {"setup": [], "lost": [], "failed": []}
    session = Session(settings, reactor, name, events["setup"].append, events["lost"].append,
                      events["failed"].append)
    return session, events


@pytest_twisted.inlineCallbacks
def test_reconnection_moves_on_to_the_next_host(frozen_proxies, tools):
    first, second = frozen_proxies(), frozen_proxies()
    settings = config.settings({**GUEST, "host": [f"{BROKER_HOST}:{first.port}",
                                                  f"{BROKER_HOST}:{second.port}"]})
    session, events = counting_session(settings, f"postage-test.rotate.{uuid.uuid4().hex}")
    try:
        yield tools.within(session.start(), 10)
        assert (first.connections, second.connections) == (1, 0)  # in order at first
        first.links[0].transport.abortConnection()  # the first host's link dies
        yield tools.wait_for(lambda: len(events["setup"]) == 2, timeout=10,
                             what="the reconnection")
        # the first host still answers, yet the reconnection went to the next one
        assert (first.connections, second.connections) == (1, 1)
        assert len(events["lost"]) == 1
    finally:
        yield tools.within(session.close(), CLOSE_TIMEOUT + 5)


@pytest_twisted.inlineCallbacks
def test_close_during_a_reconnection_attempt_schedules_no_other(proxy, tools):
    settings = config.settings(proxy.hup)
    session, events = counting_session(settings, f"postage-test.close.{uuid.uuid4().hex}")
    yield tools.within(session.start(), 10)
    proxy.refusing = True
    proxy.cut()
    yield tools.wait_for(lambda: events["lost"], what="the loss")
    yield tools.within(session.close(), CLOSE_TIMEOUT + 5)
    # Stopped, not waiting to retry: ClientService says so at once (a retry pending would
    # leave this Deferred waiting for the next connection instead).
    with pytest.raises(defer.CancelledError):
        yield tools.within(session._service.whenConnected(), 1)
    assert not session._service.running
    assert len(events["setup"]) == 1 and events["failed"] == []


@pytest_twisted.inlineCallbacks
def test_a_half_open_link_with_data_buffered_is_lost_within_two_heartbeats_and_reconnected(
        monkeypatch, components, names, broker, frozen_proxies, tools):
    heartbeat = 2
    monkeypatch.setenv("POSTAGE_RMQ_HEARTBEAT", str(heartbeat))
    relay = frozen_proxies()
    queue = broker.declare_queue(names.queue(), auto_delete=False)
    producer = components.producer(hup={**GUEST, "port": relay.port})
    yield tools.within(producer.ready, 10)
    first = producer.connection
    relay.freeze()
    frozen_at = time.monotonic()
    big = producer.message_big("x" * (16 * 1024 * 1024), _key=queue)  # more than the
    yield tools.sleep(0.2)  # kernel buffers hold: Twisted keeps the rest, unsent
    assert first.protocol.transport.dataBuffer or first.protocol.transport._tempDataBuffer
    yield tools.wait_for(lambda: not first.is_open, timeout=4 * heartbeat + 5,
                         what="the half-open link to be declared lost")
    lost_after = time.monotonic() - frozen_at
    yield tools.within(big, 30)  # sent again on the new link, and confirmed
    resumed_after = time.monotonic() - frozen_at
    print(f"half-open link (heartbeat {heartbeat}s, 16 MiB buffered): lost after "
          f"{lost_after:.1f}s, publish confirmed after reconnecting at {resumed_after:.1f}s")
    assert lost_after <= 2 * heartbeat + 1  # (1 s of slack for a loaded machine)
    assert producer.connection is not first and producer.connection.is_open
    assert relay.connections == 2
    count = yield tools.wait_for(lambda: broker.message_count(queue), what="the message")
    assert count in (1, 2)


@pytest_twisted.inlineCallbacks
def test_a_processor_stops_in_bounded_time_while_the_broker_path_is_silent(
        components, names, frozen_proxies, tools):
    from postage.twisted import MessageProcessor

    relay = frozen_proxies()
    processor = components.processor(
        MessageProcessor, hup={**GUEST, "port": relay.port},
        eqk=[(names.exchange_class(), [(names.queue(), "k")])])
    yield tools.within(processor.start(), 10)
    relay.freeze()
    started = time.monotonic()
    yield tools.within(processor.stop(), 3 * CLOSE_TIMEOUT + 5)
    took = time.monotonic() - started
    print(f"stop with a silent broker path took {took:.1f}s")
    assert not processor.consumer.connection or not processor.consumer.connection.is_open


@pytest_twisted.inlineCallbacks
def test_a_producer_closes_in_bounded_time_while_the_broker_path_is_silent(
        components, names, broker, frozen_proxies, tools):
    relay = frozen_proxies()
    queue = broker.declare_queue(names.queue())
    producer = components.producer(hup={**GUEST, "port": relay.port})
    yield tools.within(producer.ready, 10)
    relay.freeze()
    waiting = producer.message_ping(_key=queue)  # never confirmed: the link is silent
    started = time.monotonic()
    yield tools.within(producer.close(), 2 * CLOSE_TIMEOUT + 5)
    print(f"producer close with a silent broker path took {time.monotonic() - started:.1f}s")
    with pytest.raises(BrokerConnectionError):
        yield tools.within(waiting, 1)  # ended by the close, not left hanging


@pytest_twisted.inlineCallbacks
def test_a_tls_ca_file_that_cannot_be_read_fails_at_once_and_is_permanent(monkeypatch, tmp_path,
                                                                        components, tools):
    from postage import TLSVerificationError

    missing = tmp_path / "no-such-ca.pem"
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqps://guest:guest@{BROKER_HOST}:{BROKER_PORT}/"
                                          f"?cacertfile={missing}")
    started = time.monotonic()
    producer = components.producer(hup=None)
    with pytest.raises(TLSVerificationError) as raised:
        yield tools.within(producer.ready, 10)
    assert str(missing) in str(raised.value) and raised.value.permanent
    assert time.monotonic() - started < 5
