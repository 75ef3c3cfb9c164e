"""The fault proxy itself, against a local server of the test's (no broker): it relays, and
each fault does what the other tests rely on."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from faults.proxy import Proxy

pytestmark = pytest.mark.faults


class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.factory.echo:
            self.transport.write(data)


class Server(protocol.Factory):
    """Echoes what it gets (or only keeps it, ``echo=False``), per connection."""

    protocol = _Server

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.connections: list[_Server] = []


class Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[Any] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(reason.value)  # (the error as a value: callback(Failure) errbacks)


@pytest_twisted.async_yield_fixture
async def relay() -> Any:
    """``(proxy, server)``: a proxy in front of a local echo server."""
    from twisted.internet import reactor  # noqa: PLC0415

    server = Server()
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    proxy = Proxy("127.0.0.1", port.getHost().port)
    proxy.listen()
    yield proxy, server
    await proxy.stop()
    await port.stopListening()


async def connect(proxy: Proxy) -> Client:
    from twisted.internet import reactor  # noqa: PLC0415

    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port),
                                 Client())


@pytest_twisted.ensureDeferred
async def test_relays_both_ways(relay, tools):
    proxy, _server = relay
    client = await connect(proxy)
    client.transport.write(b"hello")
    await tools.wait_for(lambda: client.received == b"hello", 10, what="the echo")
    assert proxy.accepted == 1 and proxy.relayed == 10


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("how", "seen"), [("fin", error.ConnectionDone),
                                           ("rst", error.ConnectionLost)])
async def test_cut_closes_or_resets_both_sides(relay, tools, how, seen):
    proxy, server = relay
    client = await connect(proxy)
    client.transport.write(b"x")
    await tools.wait_for(lambda: client.received == b"x", 10, what="the echo")
    assert proxy.cut(how) == 1
    reason = await tools.within(client.lost, 10)
    # a FIN is a clean close; a reset is a ConnectionLost (ECONNRESET), not a clean close
    assert type(reason) is seen
    await tools.wait_for(lambda: not server.connections[0].transport.connected, 10,
                         what="the server side closed")
    assert proxy.cuts == 1 and not proxy.live


@pytest_twisted.ensureDeferred
async def test_pause_relays_nothing_until_resumed_and_keeps_the_link(relay, tools):
    proxy, server = relay
    client = await connect(proxy)
    client.transport.write(b"before")
    await tools.wait_for(lambda: client.received == b"before", 10, what="the echo")
    proxy.pause()
    client.transport.write(b"-during")
    await tools.sleep(0.5)  # a while paused: what the server holds then is checked below
    held, relayed = server.connections[0].received, proxy.relayed
    assert proxy.live and not client.lost.called  # half-open, not closed
    proxy.resume()
    await tools.wait_for(lambda: client.received == b"before-during", 10, what="the echo")
    assert held == b"before" and relayed == 2 * len(b"before")
    assert server.connections[0].received == b"before-during"


@pytest_twisted.ensureDeferred
async def test_pause_of_the_current_links_only_leaves_new_ones_working(relay, tools):
    proxy, server = relay
    old = await connect(proxy)
    proxy.pause(also_new=False)
    new = await connect(proxy)
    new.transport.write(b"new")
    await tools.wait_for(lambda: new.received == b"new", 10, what="the echo on the new link")
    old.transport.write(b"old")
    # the server closes the old link: while paused, the client is not told
    server.connections[0].transport.loseConnection()
    await tools.wait_for(lambda: not server.connections[0].transport.connected, 10,
                         what="the server side closed")
    await tools.sleep(0.3)
    held = old.lost.called
    proxy.resume()  # now the close gets through
    await tools.within(old.lost, 10)
    assert not held and old.received == b"" and server.connections[0].received == b""


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("direction", ["to_broker", "to_client"])
async def test_blackhole_drops_one_direction(relay, tools, direction):
    proxy, server = relay
    client = await connect(proxy)
    proxy.blackhole(direction)
    client.transport.write(b"lost")
    # the proxy read the bytes and dropped them: the event that proves nothing was relayed
    await tools.wait_for(lambda: proxy.dropped == 4, 10, what="the bytes dropped")
    if direction == "to_broker":
        assert server.connections[0].received == b""
    else:
        await tools.wait_for(lambda: server.connections[0].received == b"lost", 10,
                             what="the server read them")
        assert proxy.dropped == 4  # its echo was dropped on the way back
    proxy.blackhole(None)
    client.transport.write(b"kept")
    await tools.wait_for(lambda: client.received == b"kept", 10, what="the echo")
    assert not client.lost.called


@pytest_twisted.ensureDeferred
async def test_stairway_cuts_at_growing_byte_offsets(tools):
    """Each connection is reset exactly when it carried the current offset (mid-chunk), and
    the next one gets twice as far."""
    from twisted.internet import reactor  # noqa: PLC0415

    sink = Server(echo=False)
    port = reactor.listenTCP(0, sink, interface="127.0.0.1")
    proxy = Proxy("127.0.0.1", port.getHost().port)
    proxy.listen()
    try:
        proxy.stairway(1000, factor=2)
        for number, offset in enumerate([1000, 2000, 4000]):
            client = await connect(proxy)
            client.transport.write(b"z" * 5000)
            reason = await tools.within(client.lost, 10)
            assert type(reason) is error.ConnectionLost
            await tools.wait_for(lambda n=number: len(sink.connections) > n and
                                 not sink.connections[n].transport.connected, 10,
                                 what="the server side reset")
            assert len(sink.connections[number].received) == offset
        assert proxy.cuts == proxy.stair_cuts == 3
        proxy.stairway(None)
        client = await connect(proxy)
        client.transport.write(b"z" * 5000)
        await tools.wait_for(lambda: len(sink.connections) == 4 and
                             len(sink.connections[3].received) == 5000, 10, what="all of it")
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_refusing_resets_new_connections(relay, tools):
    proxy, server = relay
    proxy.refusing = True
    client = await connect(proxy)
    reason = await tools.within(client.lost, 10)
    assert type(reason) is error.ConnectionLost and not server.connections
    assert proxy.accepted == 0
