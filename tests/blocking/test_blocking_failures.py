"""A facade processor's handler past ``handler_timeout``: its thread cannot be killed, so the
delivery is treated as failed (retried or parked per the policy) and whatever the thread
returns later is ignored."""

from __future__ import annotations

import threading
import time

import pytest

from postage import messaging
from postage.retry import ERROR_HEADER, dead_queue

pytestmark = pytest.mark.blocking


def test_a_thread_past_handler_timeout_fails_its_delivery_and_its_result_is_ignored(
        make, names, admin):
    queue = names.queue("work")
    names.queues.append(dead_queue(queue))
    release = threading.Event()
    finished = threading.Event()

    class Sleepy(messaging.MessageProcessor):
        eqk = [("", [(queue, queue)])]
        retry = messaging.RetryPolicy(attempts=1)
        handler_timeout = 0.3

        @messaging.MessageHandler("command", "sleepy")
        def sleepy(self, content):
            release.wait(30)  # a blocking handler: no Deferred to cancel
            finished.set()

    make.processor(Sleepy)
    make.producer(routing_key=queue).message_sleepy()
    deadline = time.monotonic() + 20
    while admin.message_count(dead_queue(queue)) < 1:
        assert time.monotonic() < deadline, "the delivery never reached the dead queue"
        time.sleep(0.05)
    assert not finished.is_set()  # parked while the thread still runs
    release.set()
    assert finished.wait(10)
    properties, _body = admin.get_message(dead_queue(queue))
    assert properties.headers[ERROR_HEADER].startswith("HandlerTimeout: handler sleepy")
