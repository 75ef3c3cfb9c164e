"""Connecting with the blocking facade: a producer connects when made, so bad settings fail
there, with an error of the Postage family that never holds the password; importing the
facade installs no reactor; a script exits by itself when it is done."""

from __future__ import annotations

import time
import traceback
import uuid

import pytest

from postage import messaging

pytestmark = pytest.mark.blocking


def all_text(error: BaseException) -> str:
    """Everything a user could see of an error: str, repr, the whole chained traceback."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def test_bad_password_raises_authentication_error_when_the_producer_is_made():
    password = f"not-the-password-{uuid.uuid4().hex}"
    start = time.monotonic()

    with pytest.raises(messaging.AuthenticationError) as caught:
        messaging.GenericProducer(hup={"host": "127.0.0.1", "user": "guest",
                                       "password": password})

    assert time.monotonic() - start < 5
    assert isinstance(caught.value, messaging.PostageError)
    assert "guest" in str(caught.value)
    assert password not in all_text(caught.value)


def test_bad_password_from_the_environment_raises_authentication_error(monkeypatch):
    password = f"env-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", password)

    with pytest.raises(messaging.AuthenticationError) as caught:
        messaging.GenericProducer()

    assert password not in all_text(caught.value)


def test_bad_password_in_the_url_raises_authentication_error(monkeypatch):
    password = f"url-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://guest:{password}@127.0.0.1:5672/")

    with pytest.raises(messaging.AuthenticationError) as caught:
        messaging.GenericProducer()

    assert password not in all_text(caught.value)


def test_processor_start_with_bad_password_raises_authentication_error():
    password = f"proc-secret-{uuid.uuid4().hex}"

    class Processor(messaging.MessageProcessor):
        eqk = []

    processor = Processor(hup={"host": "127.0.0.1", "user": "guest", "password": password})

    with pytest.raises(messaging.AuthenticationError) as caught:
        processor.start()

    assert password not in all_text(caught.value)


def test_unreachable_broker_raises_broker_connection_error_quickly():
    start = time.monotonic()

    with pytest.raises(messaging.BrokerConnectionError) as caught:
        messaging.GenericProducer(hup={"host": "127.0.0.1", "port": 5999, "user": "guest",
                                       "password": "guest"}, connect_timeout=3)

    assert not isinstance(caught.value, messaging.AuthenticationError)
    assert "127.0.0.1:5999" in str(caught.value)
    assert time.monotonic() - start < 5


def test_missing_vhost_raises_virtual_host_error():
    vhost = f"postage-test-no-such-vhost-{uuid.uuid4().hex[:8]}"

    with pytest.raises(messaging.VirtualHostError) as caught:
        messaging.GenericProducer(hup={"host": "127.0.0.1", "user": "guest",
                                       "password": "guest"}, vhost=vhost)

    assert vhost in str(caught.value)


@pytest.mark.parametrize("module", ["postage", "postage.messaging"])
def test_import_installs_no_reactor(module, run_script):
    done = run_script(f"""
        import sys
        import {module}
        print("twisted.internet.reactor" in sys.modules)
    """, timeout=30)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_application_can_choose_its_reactor_after_importing_the_facade(run_script):
    done = run_script("""
        from postage import messaging
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        from twisted.internet import reactor
        print(type(reactor).__name__)
    """, timeout=30)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "AsyncioSelectorReactor"


def test_script_exits_by_itself_with_a_producer_left_open(run_script):
    done = run_script("""
        from postage import messaging
        producer = messaging.GenericProducer(hup={"host": "127.0.0.1", "user": "guest",
                                                  "password": "guest"})
        producer.message_hello(_key="postage-test.blocking.nobody")
        print("done")
    """, timeout=20)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
