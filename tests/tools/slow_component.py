"""Processors that the tools tests run under ``twistd`` / ``postage run`` (not a test module).

Names come from the environment, so each test gets its own exchange and queue:

- ``POSTAGE_TEST_EXCHANGE``: the exchange (direct, not durable, auto-delete);
- ``POSTAGE_TEST_QUEUE``: the queue, bound with key ``slow``; not auto-delete, so a test can
  count what is left in it after the component exited (the test deletes it);
- ``POSTAGE_TEST_LOG``: a file the ``slow`` handler appends ``started N`` / ``finished N``
  lines to.

``SlowProcessor`` is written for ``postage.twisted`` (an ``async def`` handler waiting on the
reactor); ``BlockingSlowProcessor`` is the 3.0.3 style (``postage.messaging``, a handler that
blocks in ``time.sleep``).
"""

import os
import time

from twisted.internet import task

from postage import Exchange, MessageHandler, MessageResult, RpcHandler, messaging
from postage.twisted import MessageProcessor

EXCHANGE = os.environ.get("POSTAGE_TEST_EXCHANGE", "postage-test.slow-component.x")
QUEUE = os.environ.get("POSTAGE_TEST_QUEUE", "postage-test.slow-component.q")
LOG = os.environ.get("POSTAGE_TEST_LOG", os.devnull)


class SlowExchange(Exchange):
    name = EXCHANGE
    exchange_type = "direct"
    durable = False
    auto_delete = True


EQK = [(SlowExchange, [(QUEUE, "slow")])]


def note(line):
    with open(LOG, "a") as log:
        log.write(line + "\n")


class SlowProcessor(MessageProcessor):
    eqk = EQK

    @MessageHandler("command", "slow")
    async def slow(self, content):
        number = content["parameters"]["n"]
        note(f"started {number}")
        await task.deferLater(self.reactor, content["parameters"].get("seconds", 2), lambda: None)
        note(f"finished {number}")

    @RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]))


class BlockingSlowProcessor(messaging.MessageProcessor):
    eqk = EQK

    @messaging.MessageHandler("command", "slow")
    def slow(self, content):
        number = content["parameters"]["n"]
        note(f"started {number}")
        time.sleep(content["parameters"].get("seconds", 2))
        note(f"finished {number}")

    @messaging.RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(messaging.MessageResult(content["parameters"]))


class RelayProcessor(messaging.MessageProcessor):
    """A 3.0.3-style component whose handler calls another component (``echo`` on the same
    exchange) with a blocking producer made in ``__init__``."""

    eqk = [(SlowExchange, [({"name": f"{QUEUE}.relay", "flags": {"auto_delete": True}},
                            "relay")])]

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.producer = messaging.GenericProducer(eks=[(SlowExchange, "slow")])

    @messaging.RpcHandler("command", "relay")
    def relay(self, content, reply_func):
        answer = self.producer.rpc_echo(content["parameters"], _timeout=5)
        reply_func(messaging.MessageResult({"relayed": answer.value}))


class StuckBlockingProcessor(messaging.MessageProcessor):
    """A 3.0.3-style component whose ``slow`` handler outlives ``stop_timeout`` (1 s) and then
    needs the reactor (a blocking producer call): stopping must not wait for it."""

    eqk = EQK
    stop_timeout = 1

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.producer = messaging.GenericProducer()

    @messaging.MessageHandler("command", "slow")
    def slow(self, content):
        number = content["parameters"]["n"]
        note(f"started {number}")
        time.sleep(content["parameters"].get("seconds", 2))
        self.producer.message_late(_key=f"{QUEUE}.nobody")
        note(f"finished {number}")
