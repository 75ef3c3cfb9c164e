"""The main job of the README: a component answering RPC calls through the local broker.

It starts the RPC echo component (``postage run examples.rpc_echo:EchoProcessor``) as a
separate process, calls it from a script with the blocking API and from the shell with the
``postage`` command, then stops it with a ``quit`` command and checks that it exited cleanly.

    python -m examples.rpc_echo_demo
"""

import subprocess
import sys
import time

from examples.rpc_echo import ExamplesExchange
from postage import messaging

POSTAGE = [sys.executable, "-m", "postage.cli"]


class EchoProducer(messaging.GenericProducer):
    eks = [(ExamplesExchange, "echo")]


def wait_until_answering(producer, component, deadline=30.0):
    """Call until the component answers (it may still be connecting)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if component.poll() is not None:
            raise SystemExit(f"the component exited early with status {component.returncode}")
        if producer.rpc_echo("are you there?", _timeout=2, _max_retry=0):
            return
        time.sleep(0.2)
    raise SystemExit("the component did not answer in time")


def shell(*args):
    """Run the postage command and show it as a person would see it."""
    print("$ postage", " ".join(repr(a) if " " in a else a for a in args), flush=True)
    done = subprocess.run([*POSTAGE, *args], capture_output=True, text=True, timeout=60)
    for line in (done.stdout + done.stderr).splitlines():
        print("  ", line)
    print(f"   (exit status {done.returncode})", flush=True)
    return done.returncode


def main() -> int:
    print("starting: postage run examples.rpc_echo:EchoProcessor", flush=True)
    component = subprocess.Popen([*POSTAGE, "run", "examples.rpc_echo:EchoProcessor",
                                  "--name", "echo-demo", "--log-level", "critical"])
    try:
        producer = EchoProducer(messaging.Fingerprint("echo-demo-client", "script"))
        wait_until_answering(producer, component)

        print("\nfrom Python, with the blocking API:", flush=True)
        reply = producer.rpc_echo({"text": "hello, Postage"})
        print("   rpc_echo ->", type(reply).__name__, reply.value, flush=True)
        reply = producer.rpc_divide(a=1, b=0)
        print("   rpc_divide(1, 0) ->", type(reply).__name__, reply.value, "-", reply.message,
              flush=True)
        reply = producer.rpc_missing()
        print("   rpc_missing ->", type(reply).__name__, "-", reply.message, flush=True)
        producer.close()

        print("\nfrom the shell, with the postage command:", flush=True)
        shell("rpc", ExamplesExchange.name, "echo", "echo", "text=hello from the shell", "n=3")
        shell("rpc", ExamplesExchange.name, "echo", "divide", "a=7", "b=2")
        shell("rpc", ExamplesExchange.name, "echo", "divide", "a=7", "b=0")

        print("\nstopping the component:", flush=True)
        shell("send", ExamplesExchange.name, "echo", "quit")
        status = component.wait(timeout=30)
        print(f"the component exited with status {status}", flush=True)
        return 0 if status == 0 else 1
    finally:
        if component.poll() is None:
            component.terminate()
            component.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
