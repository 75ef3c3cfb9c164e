"""TLS on the private cluster: amqps with our CA works (also with a client certificate); a
broker whose certificate the system store does not know, one signed by another CA, one
connected to under a name its certificate does not hold, and a client without the certificate
the broker requires each fail the first connection at once with a clear, permanent
TLSVerificationError, never retried (not even on the next host of the list)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import BrokerConnectionError, TLSVerificationError, config, decode_envelope
from postage.twisted.connection import Session

import clusterbed

FAST = 5.0  # seconds: "at once", with room for a loaded machine
SECRET = "guest"  # the cluster's guest password: it must not show in any message


def tls_url(node: int, host: str = "127.0.0.1", **query: str) -> str:
    text = "&".join(f"{key}={value}" for key, value in query.items())
    return f"amqps://guest:{SECRET}@{host}:{clusterbed.tls_port(node)}/" + (
        f"?{text}" if text else "")


def certs() -> dict[str, str]:
    return clusterbed.certificates()


@pytest.fixture
def url(monkeypatch):
    """``url(value)``: set POSTAGE_RMQ_URL for this test (and nothing else of POSTAGE_*)."""
    for var in [var for var in os.environ if var.startswith("POSTAGE_")]:
        monkeypatch.delenv(var)

    def use(value: str) -> str:
        monkeypatch.setenv("POSTAGE_RMQ_URL", value)
        return value

    return use


@pytest_twisted.inlineCallbacks
def test_amqps_with_our_ca_publishes_and_the_message_arrives(url, name, admin, closing, tools):
    from postage.twisted import GenericProducer

    queue = admin(1).declare_durable(name())
    url(tls_url(1, cacertfile=certs()["ca"]))
    producer = closing.add(GenericProducer())
    yield tools.within(producer.message_hello("over tls", _key=queue), 10)
    assert producer.settings.tls and producer.settings.verify
    bodies = admin(2).drain(queue)
    assert [decode_envelope(body)["content"]["parameters"] for body in bodies] == ["over tls"]


@pytest_twisted.inlineCallbacks
def test_amqps_by_host_name_with_a_client_certificate_works(url, name, admin, closing, tools):
    from postage.twisted import GenericProducer

    queue = admin(1).declare_durable(name())
    paths = certs()
    url(tls_url(2, host="localhost", cacertfile=paths["ca"], certfile=paths["client"],
                keyfile=paths["client-key"]))
    producer = closing.add(GenericProducer())
    yield tools.within(producer.message_hello("with a client certificate", _key=queue), 10)
    assert len(admin(1).drain(queue)) == 1


FAILURES = {
    # case: (URL, a phrase of the reason the error must give)
    "the system store does not know our CA": (
        lambda: tls_url(1), "does not verify"),
    "a certificate signed by another CA": (
        lambda: tls_url(3, cacertfile=certs()["ca"]), "does not verify"),
    "a host name the certificate does not hold": (
        lambda: tls_url(1, cacertfile=certs()["ca"], server_name_indication="wrong.example"),
        "not issued for the host name"),
    "no client certificate where the broker requires one": (
        lambda: tls_url(2, host="localhost", cacertfile=certs()["ca"]),
        "refused this client's TLS certificate"),
}


@pytest.mark.parametrize("case", list(FAILURES))
@pytest_twisted.inlineCallbacks
def test_a_certificate_that_does_not_verify_fails_at_once_and_is_permanent(url, closing,
                                                                          tools, case):
    from twisted.internet import reactor

    make_url, reason = FAILURES[case]
    url(make_url())
    settings = config.settings(connect_timeout=20)
    session = Session(settings, reactor, "postage-test.tls", lambda connection: None,
                      lambda error: None, lambda error: None)
    closing.add(session)
    started = time.monotonic()
    with pytest.raises(TLSVerificationError) as raised:
        yield tools.within(session.start(), 30)
    took = time.monotonic() - started
    print(f"{case}: {type(raised.value).__name__} after {took:.2f}s: {raised.value}")
    error = raised.value
    assert isinstance(error, BrokerConnectionError) and error.permanent
    assert reason in str(error)
    assert SECRET not in str(error).replace("guest@", "")  # the user may show, not a password
    assert took < FAST  # long before connect_timeout (20 s): no retry was made
    assert session.endpoint.attempts == 1
    # and none is scheduled: the service is stopped (a pending retry would leave this waiting)
    with pytest.raises(defer.CancelledError):
        yield tools.within(session._service.whenConnected(), 1)


@pytest_twisted.inlineCallbacks
def test_a_permanent_tls_error_on_the_first_host_is_not_retried_on_the_next(
        monkeypatch, name, admin, closing, tools):
    """The rogue node first, a good one second: permanence ends the attempt at once (the
    next host would present what it presents, but an impostor is no outage)."""
    from postage.twisted import GenericProducer

    for var in [var for var in os.environ if var.startswith("POSTAGE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("POSTAGE_RMQ_URL", tls_url(3, cacertfile=certs()["ca"]))
    monkeypatch.setenv("POSTAGE_RMQ_CACERTFILE", certs()["ca"])
    producer = closing.add(GenericProducer(hup={
        "user": "guest", "password": SECRET,
        "host": [f"127.0.0.1:{clusterbed.tls_port(3)}", f"127.0.0.1:{clusterbed.tls_port(1)}"]}))
    with pytest.raises(TLSVerificationError):
        yield tools.within(producer.ready, FAST * 2)


def test_postage_run_exits_non_zero_at_once_for_a_certificate_that_does_not_verify(tmp_path):
    """Under `postage run` (twistd's service), a TLS verification failure is permanent: the
    process exits 1 with the reason logged, instead of retrying forever; the URL comes from
    --url-file and its password is never printed."""
    url_file = tmp_path / "url"
    url_file.write_text(tls_url(3, cacertfile=certs()["ca"]).replace(
        f"guest:{SECRET}@", "guest:s3cret-pw@") + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("POSTAGE_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "postage.cli", "run", "postage.twisted.processor:MessageProcessor",
         "--url-file", str(url_file)], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    print(f"postage run exited {result.returncode} after {took:.1f}s")
    assert result.returncode == 1, result.stderr
    assert "does not verify" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
