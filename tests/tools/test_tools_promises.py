"""README promises of the tools that need a test of their own: ``twistd postage`` retries
its first connection forever (daemons may start before the broker)."""

from __future__ import annotations

import signal
import socket


def free_port() -> int:
    """A local port nobody listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_twistd_postage_retries_its_first_connection_forever(spawn, tk):
    port = free_port()
    component = spawn(tk.TWISTD, "-n", "--pidfile=", "postage", "--processor",
                      "examples.rpc_echo:EchoProcessor", "--url",
                      f"amqp://guest:guest@127.0.0.1:{port}/")
    # Three failed attempts, each followed by the next: it keeps trying, it does not exit.
    tk.wait_for(lambda: tk.output(component).count("connecting again in") >= 3, 30,
                what="three connection attempts")
    assert component.poll() is None, tk.output(component)
    assert f"cannot reach the broker at amqp://guest@127.0.0.1:{port}" in tk.output(component)

    component.send_signal(signal.SIGTERM)
    status = component.wait(timeout=10)  # it stops when told, still without a broker
    assert status == -signal.SIGTERM, tk.output(component)  # twistd re-raises the signal
    assert "Server Shut Down." in tk.output(component)
    assert "cannot run" not in tk.output(component)
