"""postage.twisted.logs: one level switch for every Postage logger."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from postage.twisted import logs


@pytest.fixture
def own_level(monkeypatch):
    """A level of the test's own: the process-wide one is left as it was."""
    monkeypatch.setattr(logs, "_threshold", [])


def test_set_level_refuses_an_unknown_level_and_names_the_known_ones(own_level):
    with pytest.raises(ValueError) as info:
        logs.set_level("loud")
    assert str(info.value) == ("log level is one of debug, info, warn, error, critical, "
                               "not 'loud'")


@pytest.mark.parametrize(("level", "shown"), [
    ("debug", ["debug", "info", "error"]),
    ("info", ["info", "error"]),
    ("error", ["error"]),
])
def test_events_below_the_level_are_dropped(own_level, level, shown):
    logs.set_level(level)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        log = logs.PostageLogger(namespace="postage.test")
        log.debug("d")
        log.info("i")
        log.error("e")
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [event["log_level"] for event in events if event.get("log_namespace") == "postage.test"]
    assert mine == [LogLevel.levelWithName(name) for name in shown]
