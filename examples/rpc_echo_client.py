"""Call the RPC echo component from a plain script (the blocking API of Postage 3.0.3).

    python -m examples.rpc_echo_client [TEXT]
"""

import sys

from examples.rpc_echo import ExamplesExchange
from postage import messaging


class EchoProducer(messaging.GenericProducer):
    eks = [(ExamplesExchange, "echo")]


def main() -> int:
    producer = EchoProducer(messaging.Fingerprint("echo-client", "script"))
    reply = producer.rpc_echo({"text": " ".join(sys.argv[1:]) or "hello"}, _timeout=5)
    if reply:
        print("echo answered:", reply.value)
    else:
        print("echo failed:", reply.value, reply.message)
    reply = producer.rpc_divide(a=1, b=0, _timeout=5)
    print("divide by zero answered:", type(reply).__name__, reply.value, reply.message)
    producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
