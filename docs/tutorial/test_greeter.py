"""Tests of the greeter: its handler alone, then the component on a real broker."""

import uuid

from postage import messaging

from greeter import Greeter, TutorialExchange


def test_hello_greets_by_name():
    # A handler is a plain method: call it with a list's append as the reply function.
    replies = []
    Greeter.hello(None, {"parameters": {"who": "Ada"}}, replies.append)
    assert replies == [messaging.MessageResult("Hello, Ada!")]


def test_the_greeter_answers_through_the_broker():
    key = f"test-greeter-{uuid.uuid4().hex}"  # a queue of this test's own

    class TestGreeter(Greeter):
        eqk = [(TutorialExchange, [({"name": key, "flags": {"auto_delete": True}}, key)])]

    greeter = TestGreeter(messaging.Fingerprint("test-greeter", "test"))
    greeter.start()  # returns once it consumes its queue
    try:
        producer = messaging.GenericProducer(eks=[(TutorialExchange, key)])
        reply = producer.rpc_hello(who="Grace", _timeout=5, _max_retry=0)
        error = producer.rpc_hello(who="", _timeout=5, _max_retry=0)
        producer.close()
    finally:
        greeter.stop()
    assert (type(reply), reply.value) == (messaging.MessageResult, "Hello, Grace!")
    assert (type(error), error.value) == (messaging.MessageResultException, "ValueError")
