"""config.settings(): the URL query's connection options (heartbeat, connection_timeout, TLS),
their environment variables, and the URL read from a file (POSTAGE_RMQ_URL_FILE)."""

import pytest

from postage import config

ENV_NAMES = (
    "POSTAGE_VHOST", "POSTAGE_RMQ_USER", "POSTAGE_RMQ_PASSWORD", "POSTAGE_RMQ_HOST",
    "POSTAGE_RMQ_PORT", "POSTAGE_RMQ_URL", "POSTAGE_RMQ_URL_FILE", "POSTAGE_RMQ_HEARTBEAT",
    "POSTAGE_RMQ_CACERTFILE", "POSTAGE_RMQ_CERTFILE", "POSTAGE_RMQ_KEYFILE",
)
SECRET = "pa55-very-SECRET"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_heartbeat_defaults_to_60_seconds_and_tls_to_verified():
    found = config.settings()
    assert found.heartbeat == 60
    assert found.verify is True
    assert (found.cacertfile, found.certfile, found.keyfile, found.server_name) == (
        None, None, None, None)


def test_heartbeat_comes_from_the_url_query(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://u:p@h:5682/v?heartbeat=2")
    assert config.settings().heartbeat == 2


def test_heartbeat_comes_from_the_environment_and_the_url_wins(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HEARTBEAT", "7")
    assert config.settings().heartbeat == 7
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://h/?heartbeat=3")
    assert config.settings().heartbeat == 3


def test_heartbeat_zero_turns_heartbeats_off(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://h/?heartbeat=0")
    assert config.settings().heartbeat == 0


@pytest.mark.parametrize("query", ["heartbeat=soon", "heartbeat=-1", "connection_timeout=x",
                                   "verify=yes", "hearbeat=5"])
def test_a_bad_or_unknown_query_option_is_a_clear_error(monkeypatch, query):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqps://u:{SECRET}@h/?{query}")
    with pytest.raises(ValueError) as raised:
        config.settings()
    assert query.partition("=")[0] in str(raised.value)
    assert SECRET not in str(raised.value)


def test_connection_timeout_is_in_milliseconds_as_rabbitmq_uris_say(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://h/?connection_timeout=2500")
    assert config.settings().connect_timeout == 2.5


def test_an_explicit_connect_timeout_wins_over_the_url(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://h/?connection_timeout=2500")
    assert config.settings(connect_timeout=4).connect_timeout == 4


def test_tls_options_come_from_the_url_query(monkeypatch):
    monkeypatch.setenv(
        "POSTAGE_RMQ_URL",
        "amqps://u:p@broker:5691/v?cacertfile=/etc/ca.pem&certfile=/c.pem&keyfile=/k.pem"
        "&verify=verify_none&server_name_indication=rabbit.example")
    found = config.settings()
    assert found.tls is True
    assert found.hosts == (("broker", 5691),)
    assert (found.cacertfile, found.certfile, found.keyfile) == ("/etc/ca.pem", "/c.pem",
                                                                 "/k.pem")
    assert found.verify is False
    assert found.server_name == "rabbit.example"


def test_verify_peer_keeps_verification_on(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqps://h/?verify=verify_peer")
    assert config.settings().verify is True


def test_tls_files_come_from_the_environment_and_the_url_wins(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_CACERTFILE", "/env/ca.pem")
    monkeypatch.setenv("POSTAGE_RMQ_CERTFILE", "/env/c.pem")
    monkeypatch.setenv("POSTAGE_RMQ_KEYFILE", "/env/k.pem")
    found = config.settings()
    assert (found.cacertfile, found.certfile, found.keyfile) == ("/env/ca.pem", "/env/c.pem",
                                                                 "/env/k.pem")
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqps://h/?cacertfile=/url/ca.pem")
    found = config.settings()
    assert (found.cacertfile, found.certfile) == ("/url/ca.pem", "/env/c.pem")


def test_the_url_is_read_from_the_file_postage_rmq_url_file_names(monkeypatch, tmp_path):
    path = tmp_path / "url"
    path.write_text(f"amqps://alice:{SECRET}@filehost:5691/files?heartbeat=5\n")
    monkeypatch.setenv("POSTAGE_RMQ_URL_FILE", str(path))
    found = config.settings()
    assert (found.hosts, found.user, found.password) == ((("filehost", 5691),), "alice",
                                                         SECRET)
    assert (found.vhost, found.heartbeat, found.tls) == ("files", 5, True)
    assert config.default_vhost() == "files"
    assert SECRET not in repr(found)


def test_postage_rmq_url_wins_over_the_url_file(monkeypatch, tmp_path):
    path = tmp_path / "url"
    path.write_text("amqp://filehost/")
    monkeypatch.setenv("POSTAGE_RMQ_URL_FILE", str(path))
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://envhost/")
    assert config.settings().hosts == (("envhost", 5672),)


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_url_file_is_a_clear_error(monkeypatch, tmp_path, content):
    path = tmp_path / "url"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("POSTAGE_RMQ_URL_FILE", str(path))
    with pytest.raises(ValueError) as raised:
        config.settings()
    assert str(path) in str(raised.value)
