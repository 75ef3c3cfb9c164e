"""Recovery without loops and without zombies: channel recovery with backoff, a stopping
processor that stays stopped through a reconnection, RPC calls in flight sent again as soon
as the broker is back, and bounded waits in every RPC mode while the broker is away."""

import itertools
import time

import pytest_twisted
from twisted.internet import defer, task

from postage import MessageHandler, MessageResult, RpcHandler
from postage.microthreads import ExitScheduler, MicroThread
from postage.microthreads import MicroScheduler as PureMicroScheduler
from postage.twisted import MessageProcessor, MicroScheduler
from postage.twisted.recovery import Recovery

FAST = 5


# ---- Recovery, on a Clock ------------------------------------------------------------------

def test_recovery_retries_with_a_growing_delay_and_resets_after_success():
    clock, attempts, outcomes = task.Clock(), [], []

    def attempt():
        attempts.append(clock.seconds())
        outcome = outcomes.pop(0)
        return defer.succeed(None) if outcome else defer.fail(RuntimeError("refused"))

    recovery = Recovery(clock, "a channel", lambda: True)
    outcomes[:] = [False, False, False, True]
    recovery.start(attempt)
    for _ in range(400):
        clock.advance(0.05)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 0.5, 1, 2 s doubling, each plus a jitter of less than a second
    assert 0.5 <= gaps[0] < 1.55 and 1 <= gaps[1] < 2.05 and 2 <= gaps[2] < 3.05
    assert not recovery.busy
    outcomes[:] = [True]
    recovery.start(attempt)  # after a success the next recovery starts at once again
    assert attempts[-1] == clock.seconds()


def test_recovery_runs_one_attempt_at_a_time_and_stops_when_not_alive():
    clock, pending, alive = task.Clock(), [], [True]

    def attempt():
        pending.append(defer.Deferred())
        return pending[-1]

    recovery = Recovery(clock, "a channel", lambda: alive[0])
    recovery.start(attempt)
    recovery.start(attempt)  # under way: ignored
    assert len(pending) == 1
    pending[0].errback(RuntimeError("refused"))
    alive[0] = False
    clock.advance(60)
    assert len(pending) == 1 and not recovery.busy


# ---- against the broker ----------------------------------------------------------------------

class Counting(MessageProcessor):
    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.seen = []

    @MessageHandler("command", "count")
    def count(self, content):
        self.seen.append(content["parameters"])


@pytest_twisted.inlineCallbacks
def test_a_redeclaration_that_keeps_failing_backs_off_instead_of_looping(components, names,
                                                                        broker, tools,
                                                                        log_events):
    """The queue is deleted under the consumer and declared again with other flags by
    someone else: every re-declaration fails (406), a few times, not hundreds a second."""
    exchange, queue = names.exchange_class(), names.queue()
    processor = components.processor(Counting, eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    broker.delete_queue(queue)
    broker.declare_queue(queue, durable=True)  # the consumer's declaration now fails
    yield tools.sleep(3)
    failures = len(log_events.matching("cannot recover"))
    assert 1 <= failures <= 5, failures
    broker.delete_queue(queue)  # the cause goes away: the consumer recovers by itself
    yield tools.wait_for(lambda: queue in processor.consumer.consuming, timeout=40,
                         what="consuming again")


@pytest_twisted.inlineCallbacks
def test_a_processor_stopping_while_its_connection_drops_does_not_consume_again(
        components, names, broker, proxy, tools):
    exchange, queue = names.exchange_class(), names.queue()
    processor = components.processor(Counting, hup=proxy.hup,
                                      eqk=[(exchange, [(queue, "k")])])
    yield processor.start()
    proxy.pause()  # the cancel cannot get through: stop waits while the link dies
    stopping = processor.stop()
    proxy.cut()
    yield tools.within(stopping, 20)
    broker.publish(exchange.name, "k", b'{"type": "command", "name": "count", '
                   b'"category": "message", "version": 2, "content": {"parameters": {}}}',
                   content_type="application/json")
    yield tools.wait_for(lambda: broker.message_count(queue) == 1, what="the message queued")
    assert broker.consumer_count(queue) == 0 and processor.seen == []


class Echo(MessageProcessor):
    @RpcHandler("command", "echo")
    def echo(self, content, reply):
        reply(MessageResult(content["parameters"]))


@pytest_twisted.inlineCallbacks
def test_a_direct_rpc_in_flight_is_sent_again_as_soon_as_the_broker_is_back(
        components, names, proxy, tools):
    """With a single attempt (``_max_retry=0``) and a long timeout, the call is answered
    once the connection is back, long before its timer would have sent it again."""
    exchange, queue = names.exchange_class(), names.queue()
    server = components.processor(Echo, eqk=[(exchange, [(queue, "echo")])])
    yield server.start()
    producer = components.producer(hup=proxy.hup, eks=[(exchange, "echo")])
    yield producer.ready
    proxy.pause()
    call = producer.rpc_echo("back?", _timeout=30, _max_retry=0)
    yield tools.sleep(0.1)
    started = time.monotonic()
    proxy.cut()
    result = yield tools.within(call, 15)
    assert result.value == "back?"
    assert time.monotonic() - started < 15


@pytest_twisted.inlineCallbacks
def test_exclusive_mode_rpc_and_queue_only_end_in_time_while_the_broker_is_away(
        components, names, broker, proxy, tools):
    queue = broker.declare_queue(names.queue())
    exclusive = components.producer(hup=proxy.hup, rpc_reply_to="exclusive")
    queue_only = components.producer(hup=proxy.hup, label="queue-only")
    yield exclusive.ready
    yield queue_only.ready
    proxy.refusing = True
    proxy.cut()
    result = yield tools.within(exclusive.rpc_echo(_key=queue, _timeout=0.5, _max_retry=1), 5)
    assert result.value in ("BrokerConnectionError", "TimeoutError")
    consumed = yield tools.within(queue_only.consume_rpc("some-queue", timeout=0.5), 5)
    assert consumed[-1].value in ("BrokerConnectionError", "TimeoutError")


# ---- the rounds of the Twisted scheduler -----------------------------------------------------

class Recorder(MicroThread):
    def __init__(self, log, name, exit_on_step=None):
        self.log, self.name, self.exit_on_step, self.steps = log, name, exit_on_step, 0

    def create(self):
        self.log.append((self.name, "create"))

    def step(self):
        self.steps += 1
        self.log.append((self.name, self.steps))
        if self.steps == self.exit_on_step:
            raise ExitScheduler


def rounds(scheduler_class, **kwds):
    log = []
    scheduler = scheduler_class(**kwds)
    scheduler.add_microthread(Recorder(log, "a", exit_on_step=1))
    scheduler.add_microthread(Recorder(log, "b"))
    return scheduler, log


@pytest_twisted.inlineCallbacks
def test_every_thread_added_before_start_takes_part_in_the_first_round(tools):
    """As in the pure scheduler: create round for all, then a step round for all, in which
    ``a``'s ExitScheduler ends the scheduler *after* ``b`` had its step."""
    pure, expected = rounds(PureMicroScheduler)
    for _ in pure.main():
        pass
    scheduler, log = rounds(MicroScheduler)
    yield tools.within(scheduler.start(), FAST)
    assert log == expected == [("a", "create"), ("b", "create"), ("a", 1), ("b", 1)]



@pytest_twisted.inlineCallbacks
def test_overlapping_reopens_of_the_publishing_channel_open_one_channel(components, tools):
    """Two channels must never share the confirm window's tags: a re-open asked for while
    one is under way waits for that one."""
    producer = components.producer()
    yield producer.ready
    publisher = producer._publisher
    channels = producer.connection.protocol._impl._channels
    before = len(channels)
    yield tools.within(defer.gatherResults([publisher._open(), publisher._open()]), FAST)
    assert len(channels) == before + 1
