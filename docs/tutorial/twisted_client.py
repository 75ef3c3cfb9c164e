"""The same calls from a Twisted program: every call returns a Deferred."""

from twisted.internet import defer, task

from postage.twisted import GenericProducer

from greeter import TutorialExchange


class GreeterClient(GenericProducer):
    eks = [(TutorialExchange, "greeter")]


async def main(reactor):
    client = GreeterClient({"name": "twisted-client", "type": "script"})
    calls = [client.rpc_hello(who=who) for who in ("Ada", "Grace", "Alan")]
    for reply in await defer.gatherResults(calls):  # three calls in flight at once
        print(reply.value)
    await client.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
