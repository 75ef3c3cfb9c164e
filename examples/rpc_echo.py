"""An RPC echo component: answers ``echo`` calls with what it was sent.

Run it:   postage run examples.rpc_echo:EchoProcessor      (or: twistd -n postage -p ...)
Call it:  postage rpc postage-examples echo echo text=hello
          python -m examples.rpc_echo_client hello
Stop it:  postage send postage-examples echo quit
"""

from postage import messaging


class ExamplesExchange(messaging.Exchange):
    name = "postage-examples"
    exchange_type = "direct"
    durable = False
    auto_delete = False


class EchoProcessor(messaging.MessageProcessor):
    eqk = [(ExamplesExchange, [({"name": "postage-examples-echo",
                                 "flags": {"auto_delete": True}}, "echo")])]

    @messaging.RpcHandler("command", "echo")
    def echo(self, content, reply_func):
        reply_func(messaging.MessageResult(content["parameters"]))

    @messaging.RpcHandler("command", "divide")
    def divide(self, content, reply_func):
        parameters = content["parameters"]
        reply_func(messaging.MessageResult(parameters["a"] / parameters["b"]))
