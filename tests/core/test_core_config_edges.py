"""config: the edges of the settings rules (empty variables, URL corners, host lists, the
safe description) and the vhost a Fingerprint takes from them."""

import pytest

from postage import Fingerprint, config

ENV_NAMES = (
    "POSTAGE_VHOST",
    "POSTAGE_RMQ_USER",
    "POSTAGE_RMQ_PASSWORD",
    "POSTAGE_RMQ_HOST",
    "POSTAGE_RMQ_PORT",
    "POSTAGE_RMQ_URL",
    "POSTAGE_DEBUG_MODE",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


# ---- an empty variable means unset -----------------------------------------------------------

@pytest.mark.parametrize("name", ["POSTAGE_VHOST", "POSTAGE_RMQ_USER", "POSTAGE_RMQ_PASSWORD",
                                  "POSTAGE_RMQ_HOST", "POSTAGE_RMQ_PORT", "POSTAGE_RMQ_URL"])
def test_an_empty_variable_means_unset(monkeypatch, name):
    monkeypatch.setenv(name, "")
    found = config.settings()
    assert found.hosts == (("localhost", 5672),)
    assert (found.user, found.password, found.vhost, found.tls) == ("guest", "guest", "/", False)


def test_an_empty_postage_vhost_is_the_default_vhost_for_a_fingerprint(monkeypatch):
    monkeypatch.setenv("POSTAGE_VHOST", "")
    assert config.default_vhost() == "/"
    assert Fingerprint().vhost == "/"


# ---- the vhost a fingerprint reports -----------------------------------------------------------

def test_fingerprint_vhost_comes_from_the_url_when_one_is_set(monkeypatch):
    """POSTAGE_RMQ_URL overrides POSTAGE_VHOST for the connection, so for the fingerprint."""
    monkeypatch.setenv("POSTAGE_VHOST", "from-variable")
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://u:p@rabbit/from%2Furl")
    assert config.default_vhost() == "from/url"
    assert Fingerprint().vhost == "from/url"
    assert config.settings().vhost == "from/url"


def test_fingerprint_vhost_is_slash_for_a_url_without_a_path(monkeypatch):
    monkeypatch.setenv("POSTAGE_VHOST", "from-variable")
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://rabbit")
    assert Fingerprint().vhost == "/"


# ---- URL corners -----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "vhost"), [("", "/"), ("/", "/"), ("/a", "a"), ("/ab", "ab")])
def test_url_path_names_the_vhost(monkeypatch, path, vhost):
    monkeypatch.setenv("POSTAGE_RMQ_URL", f"amqp://rabbit{path}")
    assert config.settings().vhost == vhost


def test_url_without_a_host_means_localhost(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp:///v")
    found = config.settings()
    assert found.hosts == (("localhost", 5672),)
    assert found.vhost == "v"


def test_url_without_credentials_means_guest(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_USER", "alice")
    monkeypatch.setenv("POSTAGE_RMQ_PASSWORD", "secret")
    monkeypatch.setenv("POSTAGE_RMQ_URL", "amqp://rabbit/")
    found = config.settings()
    assert (found.user, found.password) == ("guest", "guest")


def test_bad_url_scheme_error_says_what_is_expected(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_URL", "http://rabbit/")
    with pytest.raises(ValueError, match=r"^POSTAGE_RMQ_URL must start with amqp:// or amqps://$"):
        config.settings()


# ---- host lists ------------------------------------------------------------------------------

def test_parse_hosts_skips_empty_entries_anywhere_in_the_list():
    assert config.parse_hosts("a,, ,b:1,", 5) == (("a", 5), ("b", 1))


@pytest.mark.parametrize(("entry", "parsed"), [
    ("[::1]:5673", ("::1", 5673)),
    ("[::1]", ("::1", 5)),
    ("[fe80::2]", ("fe80::2", 5)),
    ("X1:7", ("X1", 7)),
    ("[X2]", ("X2", 5)),
    ("1234", ("1234", 5)),
])
def test_parse_hosts_reads_brackets_ports_and_bare_names(entry, parsed):
    assert config.parse_hosts(entry, 5) == (parsed,)


def test_parse_hosts_with_nothing_in_it_says_so():
    with pytest.raises(ValueError, match=r"^no broker host given$"):
        config.parse_hosts(" , ", 5672)


def test_hup_without_a_host_means_localhost():
    found = config.settings(hup={"user": "u", "password": "p"})
    assert found.hosts == (("localhost", 5672),)
    assert (found.user, found.password) == ("u", "p")


def test_hup_without_credentials_means_guest(monkeypatch):
    monkeypatch.setenv("POSTAGE_RMQ_USER", "alice")
    found = config.settings(hup={"host": "h"})
    assert (found.user, found.password) == ("guest", "guest")


# ---- connect_timeout -------------------------------------------------------------------------

def test_connect_timeout_defaults_to_10_seconds():
    assert config.settings().connect_timeout == 10.0


def test_connect_timeout_argument_is_kept_as_a_float():
    found = config.settings(connect_timeout=3)
    assert found.connect_timeout == 3.0
    assert type(found.connect_timeout) is float


# ---- describe() and replace() ----------------------------------------------------------------

def test_describe_lists_every_host_and_quotes_user_and_vhost():
    found = config.ConnectionSettings(hosts=(("h1", 1), ("h2", 2)), user="a/b:c",
                                      password="secret", vhost="/")
    assert found.describe() == "amqp://a%2Fb%3Ac@h1:1,h2:2/%2F"


def test_describe_says_amqps_for_tls():
    found = config.ConnectionSettings(hosts=(("h", 5671),), tls=True, vhost="v")
    assert found.describe() == "amqps://guest@h:5671/v"


def test_replace_changes_only_what_it_is_given():
    found = config.ConnectionSettings(hosts=(("h", 1),), user="u", password="p", vhost="v",
                                      tls=True, heartbeat=7, connect_timeout=2.5)
    changed = found.replace(user="other")
    assert changed == config.ConnectionSettings(hosts=(("h", 1),), user="other", password="p",
                                                vhost="v", tls=True, heartbeat=7,
                                                connect_timeout=2.5)
    assert found.user == "u"
