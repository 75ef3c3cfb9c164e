"""A script that talks to the greeter with the blocking API."""

from postage import messaging

from greeter import TutorialExchange


class GreeterClient(messaging.GenericProducer):
    eks = [(TutorialExchange, "greeter")]


producer = GreeterClient(messaging.Fingerprint("client", "script"))

producer.message_note(text="a client is here")  # returns once the broker has it

reply = producer.rpc_hello(who="Ada")  # waits for the answer
print("hello ->", reply.value)

reply = producer.rpc_hello(who="")
if not reply:  # MessageResultError and MessageResultException are false
    print("failed ->", type(reply).__name__, reply.value, reply.message)

producer.close()
