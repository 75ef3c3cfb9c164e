"""A TCP proxy, on Twisted, that the fault tests put between a client and the broker.

It relays 127.0.0.1:<port> to a target (the shared broker by default) and breaks the link
the ways networks do, on connections the test owns only:

- ``cut("fin")``: an orderly close of both sockets (what a peer that exits does);
- ``cut("rst")``: a reset of both sockets, buffered data dropped (what a crashed host or a
  firewall that forgets the connection does);
- ``pause()`` / ``resume()``: a half-open link; both sockets stay open but nothing is
  relayed either way (the proxy stops reading, so the peers' data piles up in the kernel's
  buffers and then in theirs, as behind a dead route), and a close by one peer does not
  reach the other; ``pause(also_new=False)`` leaves new connections working (a route that
  died for the old connection only, as a lost NAT entry does);
- ``blackhole("to_broker" | "to_client" | None)``: what goes one way is read and dropped,
  so the sender never learns that it is lost;
- ``stairway(first, factor)``: every relayed connection is reset exactly when it has
  carried ``first`` bytes (both directions counted, the chunk that crosses the offset is cut
  at it, mid-frame), and the next offset is ``factor`` times larger: an AMQP connection is
  broken at ever later points of its life (handshake, declarations, mid-stream), as
  aio-pika's "stairway" tests do, and yet each step lets it make progress;
- ``refusing = True``: new connections are reset at once (a broker that stays down).

Counters (``accepted``, ``cuts``, ``relayed``, ``dropped``) are what the tests report.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol

__all__ = ["Proxy"]

TO_BROKER = "to_broker"
TO_CLIENT = "to_client"


class _Upstream(protocol.Protocol):
    """The proxy's side towards the target."""

    def __init__(self, pair: _Pair) -> None:
        self.pair = pair

    def dataReceived(self, data: bytes) -> None:
        self.pair.relay(data, TO_CLIENT)

    def connectionLost(self, reason: Any = None) -> None:
        self.pair.lost(self)


class _Pair(protocol.Protocol):
    """One relayed connection: this protocol is the side towards the client; it connects
    to the target and relays both ways, under the proxy's current faults."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.upstream: _Upstream | None = None
        self.carried = 0  # bytes relayed both ways, for the stairway
        self.offset = proxy.next_offset
        self.gone = False
        self.paused = False
        self.side_lost = False  # one peer closed while paused: the other is not told yet

    # -- set-up

    def connectionMade(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: PLC0415

        if self.proxy.refusing:
            self.gone = True
            self.transport.abortConnection()
            return
        self.proxy.accepted += 1
        self.proxy.pairs.append(self)
        self.transport.pauseProducing()  # nothing is read before the target answers
        endpoint = TCP4ClientEndpoint(self.proxy.reactor, self.proxy.target_host,
                                      self.proxy.target_port, timeout=10)
        connectProtocol(endpoint, _Upstream(self)).addCallbacks(self._linked, self._failed)

    def _linked(self, upstream: _Upstream) -> None:
        if self.gone:  # cut while connecting
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        if self.paused or self.proxy.paused:  # paused while connecting, or born paused
            self.paused = True
            upstream.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def _failed(self, _failure: Any) -> None:
        self.close("rst")

    # -- relaying

    def dataReceived(self, data: bytes) -> None:
        self.relay(data, TO_BROKER)

    def relay(self, data: bytes, direction: str) -> None:
        if self.gone or self.upstream is None:
            return
        proxy = self.proxy
        if proxy.blackholed == direction:
            proxy.dropped += len(data)
            return
        cut_here = False
        if self.offset is not None and self.carried + len(data) >= self.offset:
            data = data[:max(self.offset - self.carried, 0)]  # (0: already past it)
            cut_here = True
        self.carried += len(data)
        proxy.relayed += len(data)
        sink = self.upstream.transport if direction == TO_BROKER else self.transport
        if data:
            sink.write(data)
        if cut_here:
            # Twisted sends written bytes on the next reactor turn and a reset drops them:
            # send them now, so the cut falls exactly at the offset.
            sink.doWrite()
            proxy.stair_cuts += 1
            proxy.cut_pair(self, "rst")

    # -- pausing

    def pause(self) -> None:
        self.paused = True
        self.transport.pauseProducing()
        if self.upstream is not None:
            self.upstream.transport.pauseProducing()

    def resume(self) -> None:
        self.paused = False
        if self.side_lost:  # what a peer did meanwhile reaches the other one now
            self.close("fin")
            self.proxy.forget(self)
        elif self.upstream is not None:  # (before that, _linked resumes)
            self.transport.resumeProducing()
            self.upstream.transport.resumeProducing()

    # -- ending

    def close(self, how: str) -> None:
        """End both sockets: ``fin`` (orderly, buffered data sent first) or ``rst``."""
        if self.gone:
            return
        self.gone = True
        for transport in (self.transport, self.upstream and self.upstream.transport):
            if transport is None:
                continue
            if how == "fin":
                # a paused socket would never flush what it still has to send
                transport.resumeProducing()
                transport.loseConnection()
            else:
                transport.abortConnection()

    def lost(self, _side: Any) -> None:
        """One side closed by itself: close the other (a FIN, as a relay does); while paused,
        the other side is not told (a dead route carries no FIN either)."""
        if self.paused and not self.gone:
            self.side_lost = True
            return
        self.close("fin")
        self.proxy.forget(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost(self)


class Proxy(protocol.Factory):
    """Relays ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring.

    ``listen()`` picks a free port (``port``, ``hup``, ``url()`` say where clients go);
    ``stop()`` resets every connection and stops listening."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLC0415
        self.reactor = reactor
        self.target_host = target_host
        self.target_port = target_port
        self.pairs: list[_Pair] = []
        self.paused = False
        self.refusing = False
        self.blackholed: str | None = None
        self.port = 0
        # counters
        self.accepted = 0  # client connections relayed
        self.cuts = 0  # connections cut by cut() or the stairway
        self.stair_cuts = 0
        self.relayed = 0  # bytes relayed, both ways
        self.dropped = 0  # bytes blackholed
        self._stair: tuple[int, float] | None = None
        self.next_offset: int | None = None  # the stairway's offset for new connections
        self._listening: Any = None

    # -- where clients connect

    def listen(self) -> int:
        self._listening = self.reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    @property
    def hup(self) -> dict[str, Any]:
        """A Postage ``hup`` that connects through the proxy (guest/guest)."""
        return {"host": "127.0.0.1", "port": self.port, "user": "guest", "password": "guest"}

    def url(self, vhost: str = "%2F") -> str:
        """An ``amqp://`` URL through the proxy (for ``postage run --url``)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def buildProtocol(self, addr: Any) -> _Pair:
        return _Pair(self)

    @property
    def live(self) -> list[Any]:
        """The relayed connections still open."""
        return [pair for pair in self.pairs if not pair.gone]

    # -- faults

    def cut(self, how: str = "rst") -> int:
        """Cut every relayed connection (``"fin"`` or ``"rst"``); the number cut. New
        connections are relayed again (unless ``refusing``), not paused."""
        if how not in ("fin", "rst"):
            raise ValueError(f"cut how: 'fin' or 'rst', not {how!r}")
        self.paused = False
        pairs = self.live
        for pair in pairs:
            self.cut_pair(pair, how)
        return len(pairs)

    def cut_pair(self, pair: _Pair, how: str) -> None:
        if not pair.gone:
            self.cuts += 1
            pair.close(how)
        self.forget(pair)
        if self._stair is not None and pair.offset is not None:
            _first, factor = self._stair
            self.next_offset = int(max(self.next_offset or 0, pair.offset) * factor)

    def forget(self, pair: _Pair) -> None:
        if pair in self.pairs:
            self.pairs.remove(pair)

    def pause(self, also_new: bool = True) -> None:
        """Half-open: relay nothing either way, keep every socket open. With ``also_new``
        false, connections made from now on are relayed as usual."""
        self.paused = also_new
        for pair in self.live:
            pair.pause()

    def resume(self) -> None:
        self.paused = False
        for pair in self.live:
            pair.resume()

    def blackhole(self, direction: str | None) -> None:
        """Drop what goes ``"to_broker"`` or ``"to_client"`` (None: relay both again)."""
        if direction not in (TO_BROKER, TO_CLIENT, None):
            raise ValueError(f"blackhole direction: {TO_BROKER!r}, {TO_CLIENT!r} or None")
        self.blackholed = direction

    def stairway(self, first: int | None, factor: float = 2.0) -> None:
        """Reset each connection when it has carried ``first`` bytes, then ``factor`` times
        more for the next connection, and so on (``None`` turns it off). Connections open
        now get the offset too (counted from their first byte)."""
        self._stair = None if first is None else (first, factor)
        self.next_offset = first
        for pair in self.live:
            pair.offset = first

    # -- the end

    def stop(self) -> defer.Deferred[Any]:
        self.refusing = True
        self.cut("rst")
        listening, self._listening = self._listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
