"""The Twisted suite's teardown (``Components.close_all``): a component whose stop fails or
hangs fails its test, instead of passing unseen."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer


class Closers:
    def __init__(self) -> None:
        self.closed: list[str] = []

    def ok(self) -> None:
        self.closed.append("ok")

    def broken(self) -> None:
        self.closed.append("broken")
        raise RuntimeError("stop blew up")

    def hangs(self) -> defer.Deferred[None]:
        self.closed.append("hangs")
        return defer.Deferred()


@pytest_twisted.ensureDeferred
async def test_close_all_passes_when_every_stop_ends(components, names):
    made, closers = type(components)(names, close_timeout=0.2), Closers()
    made.add(closers.ok)
    await made.close_all()
    assert closers.closed == ["ok"]


@pytest_twisted.ensureDeferred
async def test_close_all_fails_for_a_stop_that_raises_or_hangs_after_trying_every_stop(
        components, names):
    # A Components of its own (the fixture's class), so the fixture's teardown stays clean.
    made, closers = type(components)(names, close_timeout=0.2), Closers()
    for closer in (closers.ok, closers.broken, closers.hangs):
        made.add(closer)
    with pytest.raises(AssertionError) as info:
        await made.close_all()
    assert closers.closed == ["hangs", "broken", "ok"]  # newest first, none skipped
    text = str(info.value)
    assert "Closers.hangs() did not end within 0.2s" in text
    assert "Closers.broken() failed: RuntimeError: stop blew up" in text
    assert "ok()" not in text
