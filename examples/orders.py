"""A component whose handler fails: retries with backoff, then the dead queue.

Run it:     postage run examples.orders:Orders
Send work:  postage send "" postage-examples-orders charge order=17
Look:       postage dead list postage-examples-orders
Fix, then:  POSTAGE_EXAMPLE_FIXED=1 postage run examples.orders:Orders
            postage dead replay postage-examples-orders
"""

import os

from postage import MessageHandler, RetryPolicy
from postage.twisted import MessageProcessor

QUEUE = "postage-examples-orders"


class PaymentDeclined(Exception):
    pass


class Orders(MessageProcessor):
    eqk = [("", [({"name": QUEUE, "flags": {"durable": True}}, QUEUE)])]
    # three runs: at once, 1 s later, 2 s after that; then postage-examples-orders.dead
    retry = RetryPolicy(attempts=3, delay=1.0, multiplier=2.0)
    handler_timeout = 30  # a charge that hangs counts as failed
    max_concurrency = 10  # at most 10 charges at once

    @MessageHandler("command", "charge")
    def charge(self, content):
        order = content["parameters"]["order"]
        if not os.environ.get("POSTAGE_EXAMPLE_FIXED"):
            raise PaymentDeclined(f"card declined for order {order}")
