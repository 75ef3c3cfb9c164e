"""``postage dead list | replay | purge`` end to end, and retries that survive a component
killed with ``kill -9`` while they wait in a delay queue: ``postage run`` subprocesses of
``failing_component.FailingProcessor`` against the real broker."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from postage.retry import dead_queue, delay_queue

PREFIX = "postage-test.tools."


class Failing:
    """Names and files of one FailingProcessor run."""

    def __init__(self, tmp_path, attempts=2, delay=0.2):
        self.uid = uuid.uuid4().hex[:10]
        self.queue = f"{PREFIX}{self.uid}.orders"
        self.log = tmp_path / "runs.log"
        self.log.touch()
        self.fixed = tmp_path / "fixed"
        self.attempts, self.delay = attempts, delay

    def env(self, tk):
        return tk.env(POSTAGE_TEST_QUEUE=self.queue, POSTAGE_TEST_LOG=str(self.log),
                      POSTAGE_TEST_FIXED=str(self.fixed),
                      POSTAGE_TEST_ATTEMPTS=str(self.attempts),
                      POSTAGE_TEST_DELAY=str(self.delay))

    def runs(self):
        return self.log.read_text().splitlines()

    def side_queues(self):
        return [delay_queue(self.queue, round(self.delay * 1000 * 2 ** n))
                for n in range(self.attempts - 1)] + [dead_queue(self.queue)]


@pytest.fixture
def failing_factory(tmp_path, admin, spawn):
    made = []

    def make(**kwds):
        made.append(Failing(tmp_path, **kwds))
        return made[-1]

    yield make
    spawn.stop_all()  # first: a running consumer declares a deleted queue again
    for failing in made:
        for queue in [failing.queue, *failing.side_queues()]:
            admin.delete_queue(queue)


def start_component(spawn, tk, failing):
    child = spawn(tk.POSTAGE, "run", "failing_component:FailingProcessor", "--name",
                  f"{PREFIX}{failing.uid}.c", env=failing.env(tk))
    tk.wait_for_output(child, "consuming: FailingProcessor", timeout=30)
    return child


def charge(admin, failing, order):
    body = {"type": "command", "name": "charge", "category": "message", "version": 2,
            "fingerprint": {}, "content": {"parameters": {"order": order}}, "_reserved": {}}
    admin.publish("", failing.queue, json.dumps(body), content_type="application/json",
                  delivery_mode=2)


def count(admin, queue):
    return admin.message_count(queue)


def test_dead_list_shows_without_removing_replay_brings_back_purge_empties(
        spawn, run_tool, admin, tk, failing_factory):
    failing = failing_factory()
    start_component(spawn, tk, failing)
    dead = dead_queue(failing.queue)
    for order in (1, 2):
        charge(admin, failing, order)
    tk.wait_for(lambda: count(admin, dead) == 2, timeout=30, what="two dead messages")

    listed = run_tool(tk.POSTAGE, "dead", "list", failing.queue, env=failing.env(tk))
    assert listed.returncode == 0, listed.stderr
    assert f"{dead}: 2 dead messages (nothing removed)" in listed.stdout
    assert "command/charge" in listed.stdout
    assert "CardDeclined: card declined for order 1" in listed.stdout
    as_json = run_tool(tk.POSTAGE, "dead", "list", failing.queue, "--json",
                       env=failing.env(tk))
    assert as_json.returncode == 0, as_json.stderr
    entries = json.loads(as_json.stdout)
    assert [entry["body"]["content"]["parameters"]["order"] for entry in entries] == [1, 2]
    assert [entry["attempts"] for entry in entries] == [2, 2]
    assert entries[0]["errors"] == ["CardDeclined: card declined for order 1"] * 2
    assert entries[0]["reason"] == "failed 2 of 2 attempts"
    # nothing removed: both are still there (the listing returned them to the queue)
    tk.wait_for(lambda: count(admin, dead) == 2, timeout=10, what="both still dead")

    failing.fixed.touch()  # the bug is fixed: put them back
    replayed = run_tool(tk.POSTAGE, "dead", "replay", failing.queue, env=failing.env(tk))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == f"replayed 2 messages from {dead} to {failing.queue}\n"
    tk.wait_for(lambda: len(failing.runs()) == 6, timeout=30, what="both handled again")
    assert failing.runs()[-2:] in (["run 5 1", "run 6 2"], ["run 5 2", "run 6 1"])
    tk.wait_for(lambda: count(admin, dead) == 0 and count(admin, failing.queue) == 0,
                timeout=10, what="nothing left")

    failing.fixed.unlink()
    for order in (3, 4):
        charge(admin, failing, order)
    tk.wait_for(lambda: count(admin, dead) == 2, timeout=30, what="two dead again")
    one = run_tool(tk.POSTAGE, "dead", "replay", failing.queue, "--count", "1",
                   env=failing.env(tk))
    assert one.stdout == f"replayed 1 message from {dead} to {failing.queue}\n", one.stderr
    # the oldest (order 3) is back: it runs again (and, still failing, goes back to dead)
    tk.wait_for(lambda: sum(line.endswith(" 3") for line in failing.runs()) >= 3, timeout=30,
                what="the replayed one again")
    assert sum(line.endswith(" 4") for line in failing.runs()) == 2  # not replayed
    tk.wait_for(lambda: count(admin, dead) == 2, timeout=30, what="dead again")
    purged = run_tool(tk.POSTAGE, "dead", "purge", failing.queue, env=failing.env(tk))
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == f"purged 2 messages from {dead}\n"
    assert count(admin, dead) == 0
    empty = run_tool(tk.POSTAGE, "dead", "list", failing.queue, env=failing.env(tk))
    assert empty.stdout == f"{dead}: no dead messages\n"


def test_dead_commands_on_a_queue_without_a_dead_queue_exit_1(run_tool, tk):
    missing = f"{PREFIX}{uuid.uuid4().hex[:10]}.nothing"
    done = run_tool(tk.POSTAGE, "dead", "list", missing)
    assert done.returncode == 1
    assert f"there is no dead queue '{missing}.dead'" in done.stderr


def test_retries_waiting_in_a_delay_queue_survive_kill_9_of_the_component(
        spawn, admin, tk, failing_factory):
    failing = failing_factory(attempts=3, delay=3.0)
    child = start_component(spawn, tk, failing)
    charge(admin, failing, 7)
    waiting = delay_queue(failing.queue, 3000)
    tk.wait_for(lambda: count(admin, waiting) == 1, timeout=20, what="a retry waiting")
    assert failing.runs() == ["run 1 7"]
    os.killpg(child.pid, signal.SIGKILL)  # no clean stop: the process just dies
    child.wait(timeout=10)
    failing.fixed.touch()
    # the broker sends it back to the queue after 3 s, nobody consuming it
    tk.wait_for(lambda: count(admin, failing.queue) == 1, timeout=30, what="back in the queue")
    start_component(spawn, tk, failing)
    tk.wait_for(lambda: failing.runs() == ["run 1 7", "run 2 7"], timeout=30,
                what="retried after the restart")
    tk.wait_for(lambda: count(admin, failing.queue) == 0 and count(admin, waiting) == 0,
                timeout=10, what="nothing left")


def test_replay_to_a_queue_that_does_not_exist_removes_nothing(run_tool, admin, tk):
    queue = f"{PREFIX}{uuid.uuid4().hex[:10]}.gone"
    dead = dead_queue(queue)
    admin.declare_queue(dead, durable=True)
    try:
        admin.publish("", dead, b'{"not": "an envelope"}', headers={"x-postage-attempt": 1})
        tk.wait_for(lambda: count(admin, dead) == 1, what="the dead message")
        done = run_tool(tk.POSTAGE, "dead", "replay", queue)
        assert done.returncode == 1
        assert "returned" in done.stderr or "Unroutable" in done.stderr, done.stderr
        # the publish was not confirmed, so the dead copy was never acked
        tk.wait_for(lambda: count(admin, dead) == 1, timeout=10, what="still dead")
        listed = run_tool(tk.POSTAGE, "dead", "list", queue)
        assert "(malformed)" in listed.stdout
    finally:
        admin.delete_queue(dead)
