"""Microthreads: create once, step each round; StopIteration, ExitScheduler, autoquit."""

from itertools import islice

from postage import ExitScheduler, MicroScheduler, MicroThread


class Recorder(MicroThread):
    """Counts its calls; stops (StopIteration) or exits the scheduler after some steps."""

    def __init__(self, stop_after=None, exit_after=None, on_step=None):
        self.log = []
        self.stop_after = stop_after
        self.exit_after = exit_after
        self.on_step = on_step

    @property
    def steps(self):
        return self.log.count("step")

    def create(self):
        self.log.append("create")

    def step(self):
        self.log.append("step")
        if self.on_step is not None:
            self.on_step(self)
        if self.steps == self.stop_after:
            raise StopIteration
        if self.steps == self.exit_after:
            raise ExitScheduler


def run_rounds(scheduler, rounds):
    return len(list(islice(scheduler.main(), rounds)))


def test_scheduler_default_is_autoquit_false():
    assert MicroScheduler().autoquit is False


def test_create_is_called_once_before_any_step():
    thread = Recorder()
    scheduler = MicroScheduler()
    scheduler.add_microthread(thread)
    run_rounds(scheduler, 6)
    assert thread.log[0] == "create"
    assert thread.log.count("create") == 1


def test_step_is_called_once_each_round_after_create():
    thread = Recorder()
    scheduler = MicroScheduler()
    scheduler.add_microthread(thread)
    rounds = scheduler.main()
    next(rounds)
    counts = []
    for _ in range(5):
        next(rounds)
        counts.append(thread.steps)
    assert counts == [1, 2, 3, 4, 5]


def test_stop_iteration_in_step_removes_the_thread():
    stopping = Recorder(stop_after=2)
    scheduler = MicroScheduler()
    scheduler.add_microthread(stopping)
    assert run_rounds(scheduler, 10) == 10  # no RuntimeError (PEP 479), the scheduler goes on
    assert stopping.steps == 2
    assert stopping not in scheduler.microthreads


def test_stop_iteration_leaves_other_threads_running():
    stopping, running = Recorder(stop_after=1), Recorder()
    scheduler = MicroScheduler()
    scheduler.add_microthread(stopping)
    scheduler.add_microthread(running)
    run_rounds(scheduler, 6)
    assert stopping.steps == 1
    assert running.steps == 5
    assert scheduler.microthreads == [running]


def test_exit_scheduler_ends_the_scheduler_after_the_current_round():
    before, exiting, after = Recorder(), Recorder(exit_after=3), Recorder()
    scheduler = MicroScheduler(autoquit=False)
    for thread in (before, exiting, after):
        scheduler.add_microthread(thread)
    rounds = list(islice(scheduler.main(), 100))  # ends by itself long before 100
    assert len(rounds) == 3  # create round + two full step rounds; the fourth round ends it
    assert (before.steps, exiting.steps, after.steps) == (3, 3, 3)


def test_autoquit_ends_when_no_thread_is_left():
    short, longer = Recorder(stop_after=1), Recorder(stop_after=3)
    scheduler = MicroScheduler(autoquit=True)
    scheduler.add_microthread(short)
    scheduler.add_microthread(longer)
    rounds = list(islice(scheduler.main(), 100))
    assert len(rounds) < 100
    assert (short.steps, longer.steps) == (1, 3)
    assert scheduler.microthreads == []


def test_autoquit_with_no_thread_ends_at_once():
    assert list(MicroScheduler(autoquit=True).main()) == []


def test_without_autoquit_the_scheduler_keeps_yielding_with_no_threads():
    assert run_rounds(MicroScheduler(autoquit=False), 7) == 7


def test_without_autoquit_the_scheduler_keeps_yielding_after_the_last_thread_left():
    scheduler = MicroScheduler(autoquit=False)
    scheduler.add_microthread(Recorder(stop_after=1))
    assert run_rounds(scheduler, 8) == 8
    assert scheduler.microthreads == []


def test_thread_added_while_running_starts_next_round():
    added = Recorder()
    scheduler = MicroScheduler()

    def add_once(thread):
        if thread.steps == 1:
            scheduler.add_microthread(added)

    scheduler.add_microthread(Recorder(on_step=add_once))
    rounds = scheduler.main()
    next(rounds)  # round 1: the first thread is created
    next(rounds)  # round 2: its first step adds the second thread
    assert added.log == []
    next(rounds)  # round 3: the added thread is created
    assert added.log == ["create"]
    next(rounds)
    assert added.log == ["create", "step"]


def test_thread_added_between_rounds_is_run():
    scheduler = MicroScheduler()
    rounds = scheduler.main()
    next(rounds)
    late = Recorder()
    scheduler.add_microthread(late)
    next(rounds)
    next(rounds)
    assert late.log == ["create", "step"]


def test_autoquit_keeps_the_value_it_was_given():
    assert MicroScheduler(autoquit=True).autoquit is True


def test_autoquit_does_not_end_a_scheduler_whose_threads_still_run():
    thread = Recorder(stop_after=5)
    scheduler = MicroScheduler(autoquit=True)
    scheduler.add_microthread(thread)
    rounds = list(islice(scheduler.main(), 100))
    assert thread.steps == 5
    assert len(rounds) == 6  # the create round and five step rounds; the next step stops it
