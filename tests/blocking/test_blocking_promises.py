"""README promises of the blocking facade that need a test of their own: which thread runs
the handlers of a ``postage.messaging`` processor."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from twisted.python import threadable

from postage import messaging

pytestmark = pytest.mark.blocking

WAIT = 15


def test_facade_handlers_run_one_at_a_time_in_a_worker_thread(make, names):
    """Not the caller's (main) thread and not the reactor's: a handler may block there and
    call other components with a blocking producer."""
    Exchange = names.exchange_class()  # noqa: N806
    got = queue.Queue()
    running = []

    class Where(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]

        @messaging.MessageHandler("command", "work")
        def work(self, content):
            running.append(1)
            got.put((threading.current_thread(), threadable.isInIOThread(), len(running)))
            time.sleep(0.05)  # a blocking handler: the next one waits for it
            running.pop()

    make.processor(Where)
    producer = make.producer(eks=[(Exchange, "k")])
    for n in range(3):
        producer.message_work(n=n)
    seen = [got.get(timeout=WAIT) for _ in range(3)]
    threads = {thread for thread, _, _ in seen}
    # The facade's reactor thread, asked on that thread itself (and it knows it is).
    from twisted.internet import reactor  # noqa: PLC0415
    from twisted.internet.threads import blockingCallFromThread  # noqa: PLC0415

    reactor_thread, knows = blockingCallFromThread(
        reactor, lambda: (threading.current_thread(), threadable.isInIOThread()))
    assert knows is True
    assert threading.main_thread() not in threads
    assert reactor_thread not in threads
    assert [in_reactor for _, in_reactor, _ in seen] == [False, False, False]
    assert [at_once for _, _, at_once in seen] == [1, 1, 1]  # one at a time
