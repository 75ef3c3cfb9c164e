"""Run by the memory fault test in a process of its own (not a test module): a producer
publishes MESSAGES confirmed messages in batches to a processor of the same process, with
some RPC calls per batch, and after each batch (everything consumed, ``gc.collect()``) notes
the process's memory: RSS and the interpreter's allocated blocks
(``sys.getallocatedblocks()``, which counts every live object, however small). The samples
go to stdout as one JSON object.

    python memory_soak.py QUEUE RPC_QUEUE MESSAGES [--mandatory]
"""

import gc
import json
import sys

from twisted.internet import defer, task

from postage import Fingerprint, MessageHandler, MessageResult, RpcHandler
from postage.twisted import GenericProducer, MessageProcessor

BATCH = 10_000
RPC_PER_BATCH = 100
HUP = {"host": "127.0.0.1", "port": 5672, "user": "guest", "password": "guest"}


def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Sink(MessageProcessor):
    prefetch_count = 200

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.count = 0

    @MessageHandler("command", "item")
    def item(self, content):
        self.count += 1

    @RpcHandler("command", "echo")
    def echo(self, content, reply):
        reply(MessageResult(content["parameters"]))


async def soak(reactor, queue, rpc_queue, total, mandatory):
    flags = {"auto_delete": True}
    processor = Sink(Fingerprint(name=f"{queue}.sink"), hup=HUP, eqk=[
        ("", [({"name": queue, "flags": flags}, queue),
              ({"name": rpc_queue, "flags": flags}, rpc_queue)])])
    await processor.start()
    producer = GenericProducer(Fingerprint(name=f"{queue}.producer"), hup=HUP)
    await producer.ready
    options = {"_mandatory": True} if mandatory else {}
    samples = []
    sent = 0
    while sent < total:
        await defer.gatherResults([producer.message_item({"n": n}, _key=queue, **options)
                                   for n in range(sent, sent + BATCH)])
        results = await defer.gatherResults([producer.rpc_echo(n=n, _key=rpc_queue, _timeout=30)
                                             for n in range(RPC_PER_BATCH)])
        assert all(results), [r for r in results if not r][:3]
        sent += BATCH
        while processor.count < sent:
            await task.deferLater(reactor, 0.02, lambda: None)
        gc.collect()
        samples.append({"messages": sent, "rss_kb": rss_kb(), "blocks": sys.getallocatedblocks()})
    await producer.close()
    await processor.stop()
    sys.stdout.write(json.dumps({"samples": samples, "consumed": processor.count}) + "\n")


def main(argv):
    queue, rpc_queue, total = argv[1], argv[2], int(argv[3])
    mandatory = "--mandatory" in argv
    task.react(lambda reactor: defer.ensureDeferred(
        soak(reactor, queue, rpc_queue, total, mandatory)))


if __name__ == "__main__":
    main(sys.argv)
