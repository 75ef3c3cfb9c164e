"""Fingerprint: OS defaults read when the object is made, values kept as given."""

import getpass
import os
import socket
import warnings

import pytest

from postage import Fingerprint


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("POSTAGE_VHOST", "POSTAGE_RMQ_URL"):
        monkeypatch.delenv(name, raising=False)


def test_pid_defaults_to_os_getpid():
    assert Fingerprint().pid == os.getpid()


def test_host_defaults_to_socket_gethostname():
    assert Fingerprint().host == socket.gethostname()


def test_user_defaults_to_getpass_getuser():
    assert Fingerprint().user == getpass.getuser()


def test_name_and_type_default_to_none():
    fingerprint = Fingerprint()
    assert fingerprint.name is None
    assert fingerprint.type is None


def test_vhost_defaults_to_slash_without_postage_vhost():
    assert Fingerprint().vhost == "/"


def test_vhost_is_read_from_postage_vhost_when_the_object_is_made(monkeypatch):
    monkeypatch.setenv("POSTAGE_VHOST", "development")
    first = Fingerprint()
    monkeypatch.setenv("POSTAGE_VHOST", "production")
    second = Fingerprint()
    assert first.vhost == "development"
    assert second.vhost == "production"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_pid():
    parent_pid = Fingerprint().pid
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process; the child only writes.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, str(Fingerprint().pid).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        reported = reader.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(reported) == child
    assert int(reported) != parent_pid


def test_values_are_kept_as_given():
    fingerprint = Fingerprint(
        name="echo", type="component", pid="1234", host="box", user="alice", vhost="dev"
    )
    assert fingerprint.as_tuple() == ("echo", "component", "1234", "box", "alice", "dev")


def test_falsy_values_are_kept_not_replaced_by_defaults():
    fingerprint = Fingerprint(pid=0, host="", user="", vhost="")
    assert (fingerprint.pid, fingerprint.host, fingerprint.user, fingerprint.vhost) == (
        0,
        "",
        "",
        "",
    )


def test_as_dict_has_the_six_fields():
    fingerprint = Fingerprint("n", "t", 1, "h", "u", "v")
    assert fingerprint.as_dict() == {
        "name": "n",
        "type": "t",
        "pid": 1,
        "host": "h",
        "user": "u",
        "vhost": "v",
    }


def test_as_tuple_order_is_name_type_pid_host_user_vhost():
    fingerprint = Fingerprint(vhost="v", user="u", host="h", pid=1, type="t", name="n")
    assert fingerprint.as_tuple() == ("n", "t", 1, "h", "u", "v")


def test_fingerprints_with_the_same_values_are_equal_and_hash_alike():
    first = Fingerprint("n", "t", 1, "h", "u", "v")
    second = Fingerprint("n", "t", 1, "h", "u", "v")
    assert first == second
    assert not first != second  # noqa: SIM202 - __ne__ comes from __eq__
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_fingerprints_differing_in_one_value_are_not_equal():
    first = Fingerprint("n", "t", 1, "h", "u", "v")
    assert first != Fingerprint("n", "t", 2, "h", "u", "v")
    assert hash(first) != hash(Fingerprint("other", "t", 1, "h", "u", "v"))


def test_a_fingerprint_is_not_equal_to_its_tuple_or_dict():
    first = Fingerprint("n", "t", 1, "h", "u", "v")
    assert first != first.as_tuple()
    assert first != first.as_dict()
    assert first.__eq__(first.as_tuple()) is NotImplemented


def test_repr_shows_every_field_in_order():
    assert repr(Fingerprint("n", "t", 1, "h", "u", "v")) == (
        "Fingerprint(name='n', type='t', pid=1, host='h', user='u', vhost='v')")


@pytest.mark.parametrize("error", [KeyError("no passwd entry"), OSError("no login")])
def test_user_is_none_when_the_os_cannot_say(monkeypatch, error):
    """A container may have no passwd entry and no LOGNAME/USER: no user, no crash."""
    def unknown():
        raise error

    monkeypatch.setattr(getpass, "getuser", unknown)
    assert Fingerprint().user is None
    assert Fingerprint(user="given").user == "given"


def test_fingerprint_dict_of_none_a_mapping_or_a_fingerprint():
    from postage.fingerprint import fingerprint_dict  # noqa: PLC0415

    assert fingerprint_dict(None) == {}
    given = {"name": "n"}
    copied = fingerprint_dict(given)
    assert copied == {"name": "n"} and copied is not given
    made = Fingerprint("n", "t", 1, "h", "u", "v")
    assert fingerprint_dict(made) == made.as_dict()
