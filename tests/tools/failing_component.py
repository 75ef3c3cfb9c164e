"""A processor with a retry policy that the tools tests run with ``postage run`` (not a test
module): for ``postage dead`` and for a component killed while retries wait.

From the environment:

- ``POSTAGE_TEST_QUEUE``: the queue it consumes (nameless exchange: send straight to it);
  not auto-delete, so messages wait in it while the component is down;
- ``POSTAGE_TEST_LOG``: a file the ``charge`` handler appends ``run N <order>`` lines to;
- ``POSTAGE_TEST_FIXED``: a file; while it does not exist, ``charge`` raises;
- ``POSTAGE_TEST_DELAY`` (seconds, default 0.2) and ``POSTAGE_TEST_ATTEMPTS`` (default 2):
  the policy.
"""

import os

from postage import MessageHandler, RetryPolicy
from postage.twisted import MessageProcessor

QUEUE = os.environ.get("POSTAGE_TEST_QUEUE", "postage-test.failing-component.q")
LOG = os.environ.get("POSTAGE_TEST_LOG", os.devnull)
FIXED = os.environ.get("POSTAGE_TEST_FIXED", os.devnull + ".missing")


class CardDeclined(Exception):
    pass


class FailingProcessor(MessageProcessor):
    eqk = [("", [(QUEUE, QUEUE)])]
    retry = RetryPolicy(attempts=int(os.environ.get("POSTAGE_TEST_ATTEMPTS", "2")),
                        delay=float(os.environ.get("POSTAGE_TEST_DELAY", "0.2")))

    @MessageHandler("command", "charge")
    def charge(self, content):
        order = content["parameters"]["order"]
        with open(LOG, "a") as log:
            runs = sum(1 for _ in open(LOG)) + 1
            log.write(f"run {runs} {order}\n")
        if not os.path.exists(FIXED):
            raise CardDeclined(f"card declined for order {order}")
