"""The Postage side of the Node.js peer's test (tests/tools/test_tools_node_peer.py); not a
test module.

- ``WireComponent``, run with ``postage run wire_peers:WireComponent``: a component on the
  exchange ``POSTAGE_TEST_EXCHANGE`` (direct, not durable) and the queue
  ``POSTAGE_TEST_QUEUE`` (auto-delete, key ``wire``) answering ``echo`` and ``divide``, and
  printing the ``note`` commands it gets;
- ``python wire_peers.py call EXCHANGE KEY``: a Postage producer calling the Node.js peer
  (``hello``, ``add``, ``fail``, ``missing``) once over direct reply-to and once with an
  exclusive reply queue per call, sending it a ``note``, then ``quit``; one printed line per
  result.
"""

import os
import sys

from postage import messaging


class WireExchange(messaging.Exchange):
    name = os.environ.get("POSTAGE_TEST_EXCHANGE", "postage-test.wire.x")
    exchange_type = "direct"
    durable = False


class WireComponent(messaging.MessageProcessor):
    eqk = [(WireExchange, [({"name": os.environ.get("POSTAGE_TEST_QUEUE", "postage-test.wire.q"),
                             "flags": {"auto_delete": True}}, "wire")])]

    @messaging.RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(messaging.MessageResult(content["parameters"]))

    @messaging.RpcHandler("command", "divide")
    def divide(self, content, reply_func):
        reply_func(messaging.MessageResult(content["parameters"]["a"] /
                                           content["parameters"]["b"]))

    @messaging.MessageHandler("command", "note")
    def note(self, content):
        print("note:", content["parameters"]["text"], flush=True)


def call_the_peer(exchange: str, key: str) -> None:
    for reply_to in ("direct", "exclusive"):
        producer = messaging.GenericProducer(
            messaging.Fingerprint("wire-caller", "test"), eks=[(exchange, key)],
            rpc_reply_to=reply_to, rpc_timeout=10, max_retry=0)
        for name, parameters in (("hello", {"who": "Ada"}), ("add", {"a": 2, "b": 40}),
                                 ("fail", {}), ("missing", {})):
            reply = producer.call(name, parameters)
            print(reply_to, name, type(reply).__name__, repr(reply.value), reply.message)
        producer.close()
    producer = messaging.GenericProducer(eks=[(exchange, key)])
    producer.message_note(text="from Python", _mandatory=True)
    producer.message_quit()
    producer.close()


if __name__ == "__main__":
    call_the_peer(sys.argv[2], sys.argv[3])
