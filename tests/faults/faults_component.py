"""The component the SIGTERM fault tests run with ``postage run`` (not a test module).

Settings come from the environment, so each test has its own:

- ``POSTAGE_FAULTS_QUEUE``: the durable queue it consumes (on the nameless exchange);
- ``POSTAGE_FAULTS_RECORD``: a file the ``item`` handler appends each handled ``n`` to, one
  line per message, when its work is done (before the ack): what the process handled is
  known even after it was killed;
- ``POSTAGE_FAULTS_WORK``: seconds of (reactor-friendly) work per message;
- ``POSTAGE_FAULTS_STOP_TIMEOUT``: the processor's ``stop_timeout``.
"""

import os

from twisted.internet import task

from postage import MessageHandler
from postage.twisted import MessageProcessor

QUEUE = os.environ.get("POSTAGE_FAULTS_QUEUE", "postage-test.faults.component.q")
RECORD = os.environ.get("POSTAGE_FAULTS_RECORD", os.devnull)
WORK = float(os.environ.get("POSTAGE_FAULTS_WORK", "0.02"))


class Recorder(MessageProcessor):
    eqk = [("", [({"name": QUEUE, "flags": {"durable": True}}, QUEUE)])]
    stop_timeout = float(os.environ.get("POSTAGE_FAULTS_STOP_TIMEOUT", "3"))
    prefetch_count = 10

    @MessageHandler("command", "item")
    async def item(self, content):
        from twisted.internet import reactor  # the one postage run runs

        await task.deferLater(reactor, WORK, lambda: None)
        # one write() of one line to a file opened for appending: lines never interleave
        with open(RECORD, "a") as record:
            record.write(f"{content['parameters']['n']}\n")
