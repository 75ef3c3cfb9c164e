"""The greeter: a component that prints the notes it is sent and answers ``hello`` calls."""

from postage import messaging


class TutorialExchange(messaging.Exchange):
    name = "tutorial"
    exchange_type = "direct"
    durable = False


class Greeter(messaging.MessageProcessor):
    # one queue, bound to the exchange with the routing key "greeter"
    eqk = [(TutorialExchange, [({"name": "tutorial.greeter", "flags": {"auto_delete": True}},
                                "greeter")])]

    @messaging.MessageHandler("command", "note")
    def note(self, content):
        print("note:", content["parameters"]["text"], flush=True)

    @messaging.RpcHandler("command", "hello")
    def hello(self, content, reply_func):
        who = content["parameters"].get("who")
        if not who:
            raise ValueError("whom should I greet?")
        reply_func(messaging.MessageResult(f"Hello, {who}!"))
