"""What could hang a script, each run in a fresh interpreter under a timeout (a hang fails the
test instead of the suite): ``stop()`` past ``stop_timeout`` with a handler that then needs
the reactor, ``stop()`` called from a handler, a forked child's first call; and
``call_timeout`` on a link whose broker went silent (a TCP proxy the test pauses)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from postage import messaging

from brokertools import BROKER_HOST, BROKER_PORT, GUEST

pytestmark = pytest.mark.blocking

HEADER = """
import os, sys, threading, time
from postage import messaging

HUP = {"host": "127.0.0.1", "user": "guest", "password": "guest"}

class TestExchange(messaging.Exchange):
    name = os.environ["TEST_EXCHANGE"]
    exchange_type = "direct"
    durable = False
    auto_delete = True

EQK = [(TestExchange, [({"name": os.environ["TEST_QUEUE"], "flags": {"auto_delete": True}},
                        "k")])]
"""


def run(run_script: Any, names: Any, body: str, timeout: float = 40) -> Any:
    env = {"TEST_EXCHANGE": names.exchange(), "TEST_QUEUE": names.queue()}
    done = run_script(HEADER + body, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_stop_past_stop_timeout_leaves_the_reactor_free_for_the_late_handler(run_script,
                                                                              names):
    lines = run(run_script, names, """
started, finished = threading.Event(), threading.Event()
other = messaging.GenericProducer(hup=HUP)

class Slow(messaging.MessageProcessor):
    eqk = EQK
    stop_timeout = 0.5

    @messaging.MessageHandler("command", "slow")
    def msg_slow(self, content):
        started.set()
        time.sleep(1.5)  # past stop_timeout: stop() gave up waiting for it
        other.message_late(_key="postage-test.blocking.nobody")  # needs the reactor
        finished.set()

processor = Slow(messaging.Fingerprint("slow"), hup=HUP)
processor.start()
messaging.GenericProducer(eks=[(TestExchange, "k")], hup=HUP).message_slow()
assert started.wait(10)
processor.stop()
print("stopped", processor.wait(0), flush=True)
print("handler finished", finished.wait(10), flush=True)
""")

    assert lines == ["stopped True", "handler finished True"]


def test_stop_called_from_a_handler_stops_the_processor(run_script, names):
    lines = run(run_script, names, """
class Leaving(messaging.MessageProcessor):
    eqk = EQK

    @messaging.MessageHandler("command", "leave")
    def msg_leave(self, content):
        self.stop()  # must not wait for this very handler
        print("asked to stop", flush=True)

processor = Leaving(messaging.Fingerprint("leaving"), hup=HUP)
processor.start()
messaging.GenericProducer(eks=[(TestExchange, "k")], hup=HUP).message_leave()
print("stopped", processor.wait(10), processor.quit_requested, flush=True)
""")

    assert lines == ["asked to stop", "stopped True False"]


def test_forked_child_gets_a_fresh_facade_and_the_parent_keeps_its_own(run_script, names):
    lines = run(run_script, names, """
class Echo(messaging.MessageProcessor):
    eqk = [(TestExchange, [({"name": os.environ["TEST_QUEUE"], "flags": {"auto_delete": True}},
                            "echo")])]

    @messaging.RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(messaging.MessageResult(content["parameters"]))

echo = Echo(messaging.Fingerprint("fork-echo"), hup=HUP)
echo.start()
parent = messaging.GenericProducer(eks=[(TestExchange, "echo")], hup=HUP)
print("parent:", parent.rpc_echo("before", _timeout=5).value, flush=True)

from twisted.internet import reactor as inherited
pid = os.fork()
if pid == 0:
    try:
        parent.rpc_echo("inherited", _timeout=1, _max_retry=0)
    except messaging.BrokerConnectionError as exc:
        print("child: the parent's producer refuses:", "os.fork()" in str(exc), flush=True)
    child = messaging.GenericProducer(eks=[(TestExchange, "echo")], hup=HUP)
    print("child:", child.rpc_echo("from the child", _timeout=5).value, flush=True)
    from twisted.internet import reactor
    print("child: a reactor of its own:", reactor is not inherited and reactor.running,
          flush=True)
    child.close()
    sys.exit(0)  # a normal exit: the child's reactor thread is stopped at exit

deadline = time.monotonic() + 20
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        print("child: hung", flush=True)
        break
    time.sleep(0.05)
else:
    print("child exited", flush=True)
print("parent:", parent.rpc_echo("after", _timeout=5).value, flush=True)
parent.close()
echo.stop()
""")

    assert lines == [
        "parent: before",
        "child: the parent's producer refuses: True",
        "child: from the child",
        "child: a reactor of its own: True",
        "child exited",
        "parent: after",
    ]


# ---- call_timeout, through a proxy that stops carrying data ---------------------------------

class PausingProxy:
    """A TCP relay to the broker, in threads; ``pause()`` holds whatever arrives."""

    def __init__(self) -> None:
        self.listener = socket.create_server((BROKER_HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((BROKER_HOST, BROKER_PORT))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                if self.closed:
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            return

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for each in self.sockets:
            each.close()


@pytest.fixture
def proxy() -> Any:
    relay = PausingProxy()
    yield relay
    relay.close()


def test_call_timeout_bounds_a_call_the_broker_never_answers(proxy, make, names, admin):
    queue = names.queue("deaf")
    admin.declare_queue(queue)
    producer = make.producer(hup={**GUEST, "port": proxy.port}, call_timeout=1)
    producer.message_hello(_key=queue)  # through the proxy, confirmed
    proxy.pause()
    start = time.monotonic()

    with pytest.raises(messaging.BrokerConnectionError, match="call_timeout"):
        producer.message_hello(_key=queue)

    assert time.monotonic() - start >= 1
    proxy.resume()


def test_call_timeout_also_bounds_an_rpc_call(proxy, make, names, admin):
    queue, exchange = names.queue("deaf"), names.exchange("deaf")
    admin.declare_bound_queue(queue, exchange, "k")
    producer = make.producer(hup={**GUEST, "port": proxy.port}, eks=[(exchange, "k")],
                             call_timeout=1)
    proxy.pause()

    with pytest.raises(messaging.BrokerConnectionError, match="call_timeout"):
        producer.rpc_echo("hi", _timeout=30)  # its own bound would be 150 s and more
    proxy.resume()


def test_call_timeout_is_a_knob_of_every_facade_class():
    class Producer(messaging.GenericProducer):
        call_timeout = 3

    class Processor(messaging.MessageProcessor):
        eqk = []
        call_timeout = 4

    assert Processor().call_timeout == 4
    assert Processor(call_timeout=5).call_timeout == 5
    assert messaging.GenericConsumer(call_timeout=6).call_timeout == 6
    assert Producer.call_timeout == 3


def test_call_timeout_bounds_processor_start_and_queue_bind(proxy, names):
    Exchange = names.exchange_class()  # noqa: N806

    class Processor(messaging.MessageProcessor):
        eqk = [(Exchange, [(names.auto_queue(), "k")])]
        call_timeout = 1

    processor = Processor(messaging.Fingerprint(names.component("bounded")),
                          hup={**GUEST, "port": proxy.port})
    try:
        proxy.pause()
        with pytest.raises(messaging.BrokerConnectionError, match="call_timeout"):
            processor.start()  # the broker never answers: connect_timeout (10 s) is later
        proxy.resume()
        processor.start()  # the same start, now through
        proxy.pause()
        with pytest.raises(messaging.BrokerConnectionError, match="call_timeout"):
            processor.consumer.queue_bind(Exchange, names.auto_queue("late"), "late")
    finally:
        proxy.resume()
        processor.stop()


def test_async_handler_may_await_asyncio_under_the_asyncio_reactor(run_script, names):
    lines = run(run_script, names, """
from twisted.internet import asyncioreactor
asyncioreactor.install()  # the application's choice, before the first facade object
import asyncio

class Sleepy(messaging.MessageProcessor):
    eqk = EQK

    @messaging.RpcHandler("command", "nap")
    async def nap(self, content, reply_func):
        await asyncio.sleep(0.01)  # an asyncio awaitable, on the facade's reactor thread
        reply_func(messaging.MessageResult("rested"))

processor = Sleepy(messaging.Fingerprint("sleepy"), hup=HUP)
processor.start()
producer = messaging.GenericProducer(eks=[(TestExchange, "k")], hup=HUP)
print(producer.rpc_nap(_timeout=5, _max_retry=0).value, flush=True)
producer.close()
processor.stop()
""")

    assert lines == ["rested"]
