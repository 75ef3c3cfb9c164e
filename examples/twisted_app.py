"""A Twisted application using postage.twisted directly: everything returns Deferreds.

It starts an RPC processor and a producer in one process, makes a few calls (one of them
100 at once), sends a message, and ends by sending ``quit`` to its own processor.

    python -m examples.twisted_app
"""

import uuid

from twisted.internet import defer, task

from postage import Exchange, MessageHandler, MessageResult, RpcHandler
from postage.twisted import GenericProducer, MessageProcessor, MicroScheduler


class AppExchange(Exchange):
    name = f"postage-twisted-app-{uuid.uuid4().hex[:8]}"  # this run's own
    exchange_type = "direct"
    durable = False
    auto_delete = True


class Squarer(MessageProcessor):
    eqk = [(AppExchange, [({"name": f"{AppExchange.name}-q", "flags": {"auto_delete": True}},
                           "square")])]

    @RpcHandler("command", "square")
    async def square(self, content, reply_func):
        await task.deferLater(self.reactor, 0.01)  # handlers may wait on anything
        reply_func(MessageResult(content["parameters"]["n"] ** 2))

    @MessageHandler("command", "note")
    def note(self, content):
        print("note:", content["parameters"]["text"])


class SquareClient(GenericProducer):
    eks = [(AppExchange, "square")]


@defer.inlineCallbacks
def main(reactor):
    squarer = Squarer({"name": "squarer"})
    yield squarer.start()  # consuming from here on, so no call can miss it
    scheduler = MicroScheduler()
    scheduler.add_microthread(squarer)
    done = scheduler.start()
    client = SquareClient({"name": "square-client"})
    yield client.ready
    result = yield client.rpc_square(n=7)
    print("7 squared is", result.value)
    results = yield defer.gatherResults([client.rpc_square(n=n) for n in range(100)])
    print("100 calls at once, sum of squares:", sum(r.value for r in results))
    yield client.message_note(text="sent with publisher confirms")
    yield client.message_quit()
    yield done
    print("processor quit; scheduler ended")
    yield client.close()


if __name__ == "__main__":
    task.react(main)
