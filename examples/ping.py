"""The seed's ping producer, and a component that prints each ping it gets (fire and forget).

    python -m examples.ping listen     # a processor that prints pings until it gets quit
    python -m examples.ping send [N]   # send N pings (default 3), then quit the listener
"""

import sys
import time

from postage import messaging


class PingExchange(messaging.Exchange):
    name = "ping-exchange"
    exchange_type = "direct"
    passive = False
    durable = True
    auto_delete = False


class PingProducer(messaging.GenericProducer):
    eks = [(PingExchange, "ping")]

    def build_message_ping(self):
        return messaging.MessageCommand("ping", parameters={"send_time": time.time()})


class PingListener(messaging.MessageProcessor):
    eqk = [(PingExchange, [({"name": "ping-listener", "flags": {"auto_delete": True}},
                            "ping")])]

    @messaging.MessageHandler("command", "ping")
    def msg_ping(self, content):
        delay = time.time() - content["parameters"]["send_time"]
        print(f"ping received after {delay * 1000:.1f} ms", flush=True)


def main() -> int:
    if sys.argv[1:2] == ["listen"]:
        scheduler = messaging.MicroScheduler()
        scheduler.add_microthread(PingListener(messaging.Fingerprint("ping-listener")))
        for _ in scheduler.main():  # the 3.0.3 loop; scheduler.run() does the same
            pass
        print("listener got quit", flush=True)
        return 0
    if sys.argv[1:2] == ["send"]:
        producer = PingProducer(messaging.Fingerprint("ping-sender"))
        for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
            producer.message_ping()
        producer.message_quit()
        producer.close()
        print("pings sent", flush=True)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
