"""config.settings(): defaults, POSTAGE_RMQ_* variables, POSTAGE_RMQ_URL, hup and vhost."""

import pytest

from postage import config

ENV_NAMES = (
    "POSTAGE_VHOST",
    "POSTAGE_RMQ_USER",
    "POSTAGE_RMQ_PASSWORD",
    "POSTAGE_RMQ_HOST",
    "POSTAGE_RMQ_PORT",
    "POSTAGE_RMQ_URL",
    "POSTAGE_DEBUG_MODE",
)
SECRET = "pa55-very-SECRET"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_localhost_5672_guest_guest_slash():
    found = config.settings()
    assert found.hosts == (("localhost", 5672),)
    assert (found.user, found.password, found.vhost) == ("guest", "guest", "/")
    assert found.tls is False


def test_environment_is_read_when_settings_is_called(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "first")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "alice")
    first = config.settings()
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "second")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "bob")
    second = config.settings()
    assert (first.hosts, first.user) == ((("first", 5672),), "alice")
    assert (second.hosts, second.user) == ((("second", 5672),), "bob")


def test_rmq_variables_set_host_port_user_password_and_vhost(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "rabbit.example")
    monkeypatch.setenv("POSTAGE_RMQ_PORT", "5999")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "alice")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", SECRET)
    monkeypatch.setenv("POSTAGE_VHOST", "development")
    found = config.settings()
    assert found.hosts == (("rabbit.example", 5999),)
    assert (found.user, found.password, found.vhost) == ("alice", SECRET, "development")


def test_rmq_host_comma_list_with_host_port_entries(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "node1, node2:5673,node3")
    assert config.settings().hosts == (("node1", 5672), ("node2", 5673), ("node3", 5672))


def test_rmq_port_applies_to_host_entries_without_a_port(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "node1,node2:5673")
    monkeypatch.setenv("POSTAGE_RMQ_PORT", "5700")
    assert config.settings().hosts == (("node1", 5700), ("node2", 5673))


def test_url_overrides_the_other_variables(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "ignored-host")
    monkeypatch.setenv("POSTAGE_RMQ_PORT", "1111")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "ignored-user")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "ignored-password")
    monkeypatch.setenv("POSTAGE_VHOST", "ignored-vhost")
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://alice:{SECRET}@broker.example:5673/prod")
    found = config.settings()
    assert found.hosts == (("broker.example", 5673),)
    assert (found.user, found.password, found.vhost) == ("alice", SECRET, "prod")
    assert found.tls is False


def test_amqp_url_default_port_is_5672(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://broker.example/")
    found = config.settings()
    assert found.hosts == (("broker.example", 5672),)
    assert found.tls is False


def test_amqps_url_default_port_is_5671_with_tls(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqps://broker.example/")
    found = config.settings()
    assert found.hosts == (("broker.example", 5671),)
    assert found.tls is True


@pytest.mark.parametrize(
    ("path", "vhost"),
    [("/%2F", "/"), ("/%2Fprod", "/prod"), ("/my%20vhost", "my vhost"), ("/", "/"), ("", "/")],
)
def test_url_vhost_is_percent_decoded(monkeypatch, path, vhost):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://broker.example{path}")
    assert config.settings().vhost == vhost


def test_url_credentials_are_percent_decoded(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://al%40ice:p%40ss%3Aword@broker.example/")
    found = config.settings()
    assert (found.user, found.password) == ("al@ice", "p@ss:word")


def test_invalid_url_scheme_raises_value_error(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "http://broker.example/")
    with pytest.raises(ValueError, match="amqp"):
        config.settings()


def test_hup_replaces_host_user_and_password(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "env-host")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "env-user")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "env-password")
    found = config.settings(hup={"host": "hup-host", "user": "hup-user", "password": SECRET})
    assert found.hosts == (("hup-host", 5672),)
    assert (found.user, found.password) == ("hup-user", SECRET)


def test_hup_is_taken_as_a_whole_not_mixed_with_the_environment(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_HOST", "env-host")
    monkeypatch.setenv("POSTAGE_RMQ_USER", "env-user")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "env-password")
    found = config.settings(hup={"host": "hup-host"})
    assert found.hosts == (("hup-host", 5672),)
    assert (found.user, found.password) == ("guest", "guest")


def test_hup_also_replaces_url_credentials(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://url-user:url-password@url-host/urlvhost")
    found = config.settings(hup={"host": "hup-host", "user": "hup-user", "password": SECRET})
    assert found.hosts == (("hup-host", 5672),)
    assert (found.user, found.password) == ("hup-user", SECRET)
    assert found.vhost == "urlvhost"


def test_hup_port_is_used_when_given():
    found = config.settings(hup={"host": "h", "user": "u", "password": "p", "port": 5999})
    assert found.hosts == (("h", 5999),)


def test_hup_without_port_takes_the_environment_port(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_PORT", "5111")
    found = config.settings(hup={"host": "h", "user": "u", "password": "p"})
    assert found.hosts == (("h", 5111),)


def test_hup_without_port_takes_the_url_port(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://url-host:5222/")
    found = config.settings(hup={"host": "h", "user": "u", "password": "p"})
    assert found.hosts == (("h", 5222),)


def test_hup_host_may_be_a_list_of_host_and_host_port_entries():
    found = config.settings(hup={"host": ["a", "b:5680"], "user": "u", "password": "p"})
    assert found.hosts == (("a", 5672), ("b", 5680))


def test_hup_keeps_the_environment_vhost(monkeypatch):
    monkeypatch.setenv("POSTAGE_VHOST", "development")
    found = config.settings(hup={"host": "h", "user": "u", "password": "p"})
    assert found.vhost == "development"


def test_vhost_argument_wins_over_postage_vhost(monkeypatch):
    monkeypatch.setenv("POSTAGE_VHOST", "development")
    assert config.settings(vhost="explicit").vhost == "explicit"


def test_vhost_argument_wins_over_the_url(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://broker.example/urlvhost")
    assert config.settings(vhost="explicit").vhost == "explicit"


def test_repr_never_contains_the_password(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", SECRET)
    found = config.settings()
    assert found.password == SECRET
    assert SECRET not in repr(found)
    assert SECRET not in str(found)


def test_repr_never_contains_a_url_or_hup_password(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqps://alice:{SECRET}@broker.example/")
    from_url = config.settings()
    from_hup = config.settings(hup={"host": "h", "user": "u", "password": SECRET})
    assert from_url.password == from_hup.password == SECRET
    assert SECRET not in repr(from_url)
    assert SECRET not in repr(from_hup)


def test_describe_never_contains_the_password_but_names_user_and_host(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://alice:{SECRET}@broker.example:5673/prod")
    description = config.settings().describe()
    assert SECRET not in description
    assert "alice" in description
    assert "broker.example:5673" in description


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("True", True), ("false", False), ("", False), (None, False)],
)
def test_debug_mode_follows_postage_debug_mode(monkeypatch, value, expected):
    if value is not None:
        monkeypatch.setenv("POSTAGE_DEBUG_MODE", value)
    assert config.debug_mode() is expected


def test_debug_mode_is_read_when_called(monkeypatch):
    monkeypatch.setenv("POSTAGE_DEBUG_MODE", "true")
    first = config.debug_mode()
    monkeypatch.setenv("POSTAGE_DEBUG_MODE", "false")
    assert (first, config.debug_mode()) == (True, False)
