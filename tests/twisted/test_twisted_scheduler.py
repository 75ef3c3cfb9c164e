"""MicroScheduler on the reactor: plain microthreads stepped by a LoopingCall, ExitScheduler,
autoquit, no added latency for processors, and no CPU spent while idle."""

import resource
import time

import pytest
import pytest_twisted
from twisted.internet import task

from postage import ExitScheduler, MessageResult, MicroThread, RpcHandler
from postage.twisted import MessageProcessor, MicroScheduler

FAST = 5


class Counter(MicroThread):
    """Counts ``create()`` and ``step()``; leaves (StopIteration) or ends the scheduler
    (ExitScheduler) after the given number of steps."""

    def __init__(self, stop_after=None, exit_after=None):
        self.created = 0
        self.steps = 0
        self.stop_after = stop_after
        self.exit_after = exit_after

    def create(self):
        self.created += 1

    def step(self):
        self.steps += 1
        if self.steps == self.stop_after:
            raise StopIteration
        if self.steps == self.exit_after:
            raise ExitScheduler


class Pinger(MessageProcessor):
    @RpcHandler("command", "ping")
    def ping(self, content, reply_func):
        reply_func(MessageResult("pong"))


def pending_rounds(scheduler):
    """The scheduler's rounds still due on the reactor (its LoopingCall's next call): none
    means no microthread will be stepped again."""
    from twisted.internet import reactor  # noqa: PLC0415

    return [call for call in reactor.getDelayedCalls()
            if isinstance(call.func, task.LoopingCall)
            and getattr(call.func.f, "__self__", None) is scheduler]


def consuming(broker, queue, tools):
    """Wait until a processor the scheduler started consumes ``queue``."""
    return tools.wait_for(lambda: broker.queue_exists(queue) and broker.consumer_count(queue),
                          what=f"a consumer on {queue}")


@pytest_twisted.inlineCallbacks
def test_microthreads_are_created_once_then_stepped_by_the_looping_call(components, tools):
    scheduler = components.scheduler()
    thread = Counter()
    scheduler.add_microthread(thread)
    scheduler.start()
    yield tools.wait_for(lambda: thread.steps >= 5, what="five steps")
    assert thread.created == 1


@pytest_twisted.inlineCallbacks
def test_a_thread_that_stops_leaves_and_autoquit_ends_the_scheduler(components, tools):
    scheduler = components.scheduler(autoquit=True)
    threads = [Counter(stop_after=3), Counter(stop_after=6)]
    for thread in threads:
        scheduler.add_microthread(thread)
    yield tools.within(scheduler.start(), FAST)
    assert [thread.steps for thread in threads] == [3, 6]
    assert scheduler.microthreads == []


@pytest_twisted.inlineCallbacks
def test_autoquit_with_no_thread_ends_at_once(components, tools):
    scheduler = components.scheduler(autoquit=True)
    ended = scheduler.start()
    assert ended.called  # at once: not a round later
    result = yield ended
    assert result is None
    assert pending_rounds(scheduler) == []


def test_without_autoquit_the_scheduler_outlives_its_threads():
    clock = task.Clock()
    scheduler = MicroScheduler(reactor=clock)
    scheduler.add_microthread(Counter(stop_after=2))
    ended = scheduler.start()
    clock.advance(0)
    while scheduler.microthreads:
        clock.advance(scheduler.interval)
    clock.pump([scheduler.interval] * 100)  # a hundred rounds later, still running
    assert not ended.called
    scheduler.stop()
    assert ended.called


def test_exit_scheduler_ends_the_start_deferred():
    clock = task.Clock()
    scheduler = MicroScheduler(reactor=clock)
    forever, exiting = Counter(), Counter(exit_after=4)
    scheduler.add_microthread(forever)
    scheduler.add_microthread(exiting)
    ended = scheduler.start()
    for _ in range(100):
        if ended.called:
            break
        clock.advance(scheduler.interval)
    assert ended.called
    assert exiting.steps == 4
    assert forever.steps in (3, 4, 5)  # the current round ends
    steps = forever.steps
    assert clock.getDelayedCalls() == []  # no round is scheduled any more
    clock.pump([scheduler.interval] * 100)
    assert forever.steps == steps  # nothing runs after the end


@pytest_twisted.inlineCallbacks
def test_a_thread_added_to_a_running_scheduler_runs(components, tools):
    scheduler = components.scheduler(autoquit=True)
    scheduler.add_microthread(Counter(stop_after=50))
    ended = scheduler.start()
    late = Counter(stop_after=2)
    scheduler.add_microthread(late)
    yield tools.within(ended, FAST)
    assert (late.created, late.steps) == (1, 2)


@pytest_twisted.inlineCallbacks
def test_a_failing_thread_leaves_and_the_others_go_on(components, log_events, tools):
    class Broken(MicroThread):
        def step(self):
            raise RuntimeError("broken step")

    scheduler = components.scheduler(autoquit=True)
    survivor = Counter(stop_after=5)
    scheduler.add_microthread(Broken())
    scheduler.add_microthread(survivor)
    yield tools.within(scheduler.start(), FAST)
    assert survivor.steps == 5
    assert any(event["log_failure"].check(RuntimeError) for event in log_events.failures())


@pytest_twisted.inlineCallbacks
def test_stop_ends_the_scheduler_and_its_processors(components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Pinger, eqk=[(exchange, [(queue, "k")])])
    scheduler = components.scheduler()
    scheduler.add_microthread(processor)
    scheduler.add_microthread(Counter())
    ended = scheduler.start()
    yield consuming(broker, queue, tools)
    producer = components.producer(eks=[(exchange, "k")])
    result = yield producer.rpc_ping(_timeout=FAST)
    assert result.value == "pong"
    yield tools.within(scheduler.stop(), FAST)
    assert ended.called
    assert not processor.consumer.connection.is_open


@pytest_twisted.inlineCallbacks
def test_dispatch_does_not_wait_for_a_tick(components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Pinger, eqk=[(exchange, [(queue, "k")])])
    scheduler = components.scheduler()
    scheduler.interval = 10  # a tick every 10 s
    scheduler.add_microthread(Counter())
    scheduler.add_microthread(processor)
    scheduler.start()
    producer = components.producer(eks=[(exchange, "k")])
    yield tools.within(producer.ready, FAST)
    yield consuming(broker, queue, tools)
    started = time.monotonic()
    result = yield producer.rpc_ping(_timeout=FAST, _max_retry=0)
    assert time.monotonic() - started < 1
    assert result.value == "pong"


@pytest_twisted.inlineCallbacks
def test_an_idle_processor_does_not_spin_the_cpu(components, names, broker, tools):
    exchange = names.exchange_class()
    queue = names.queue()
    processor = components.processor(Pinger, eqk=[(exchange, [(queue, "k")])])
    scheduler = components.scheduler()
    scheduler.add_microthread(processor)
    scheduler.start()
    yield consuming(broker, queue, tools)
    producer = components.producer(eks=[(exchange, "k")])
    result = yield producer.rpc_ping(_timeout=FAST)  # it runs
    assert result.value == "pong"
    # No round is scheduled for a scheduler that runs only processors: they are driven by
    # their deliveries, so nothing wakes the reactor while no message comes.
    assert pending_rounds(scheduler) == []
    # ... and what the process spends idling, measured (CPU time, not wall-clock time).
    before = resource.getrusage(resource.RUSAGE_SELF)
    yield tools.sleep(5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.25, f"{cpu:.3f} s of CPU in 5 s of idling"


@pytest_twisted.inlineCallbacks
def test_quit_to_one_processor_stops_every_thread_of_the_scheduler(components, names,
                                                                   broker, tools):
    exchange = names.exchange_class()
    queues = [names.queue("one"), names.queue("two")]
    processors = [components.processor(Pinger, label=f"p{i}", eqk=[(exchange, [(queue, q)])])
                  for i, (queue, q) in enumerate(zip(queues, ("one", "two")))]
    scheduler = components.scheduler()
    for processor in processors:
        scheduler.add_microthread(processor)
    ticker = Counter()
    scheduler.add_microthread(ticker)
    ended = scheduler.start()
    for queue in queues:
        yield consuming(broker, queue, tools)
    producer = components.producer(eks=[(exchange, "one")])
    assert pending_rounds(scheduler) != []  # the ticker runs
    yield producer.message_quit()
    yield tools.within(ended, FAST)
    assert [p.consumer.connection.is_open for p in processors] == [False, False]
    assert pending_rounds(scheduler) == []  # the ticker's thread gets no further round


@pytest_twisted.inlineCallbacks
def test_start_errbacks_when_a_processor_cannot_start(components, names, tools):
    from postage import AuthenticationError

    processor = components.processor(
        Pinger, eqk=[(names.exchange_class(), [(names.queue(), "k")])],
        hup={"host": "127.0.0.1", "user": "guest", "password": "wrong"})
    scheduler = components.scheduler()
    scheduler.add_microthread(processor)
    ticker = Counter()
    scheduler.add_microthread(ticker)
    started = scheduler.start()
    assert pending_rounds(scheduler) != []  # the ticker runs
    with pytest.raises(AuthenticationError):
        yield tools.within(started, FAST)
    assert pending_rounds(scheduler) == []  # the other threads were stopped


@pytest_twisted.inlineCallbacks
def test_start_does_not_end_when_a_processor_reconnects(components, names, broker, proxy,
                                                       tools):
    queue = names.queue()
    processor = components.processor(Pinger, hup=proxy.hup,
                                     eqk=[(names.exchange_class(), [(queue, "k")])])
    scheduler = components.scheduler()
    scheduler.add_microthread(processor)
    ended = scheduler.start()
    yield consuming(broker, queue, tools)
    name = processor.fingerprint["name"]
    (old,) = yield tools.wait_for(lambda: tools.connection_pids(name), timeout=10,
                                  what="the first connection")
    proxy.cut()
    # Only a new connection has another pid on the broker; the old one is gone.
    pids = yield tools.wait_for(
        lambda: tools.connection_pids(name).addCallback(
            lambda found: found if found and old not in found else None),
        timeout=15, what="a new connection")
    assert old not in pids
    yield consuming(broker, queue, tools)  # consuming again, on it
    assert not ended.called

