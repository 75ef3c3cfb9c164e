"""A private 3-node RabbitMQ cluster with TLS listeners, beside the shared broker, for the
cluster and TLS tests (``scripts/cluster`` is its command line; the tests start it).

    scripts/cluster start | stop | status | kill NODE | restart NODE | stop-app NODE |
                    start-app NODE | env | certs

Everything lives under one directory (``POSTAGE_CLUSTER_DIR``, default
``/tmp/postage-cluster-<hash of the checkout>``) and one block of ports (``POSTAGE_CLUSTER_PORT``,
default derived from the checkout, so two checkouts do not collide): a private ``HOME`` and
Erlang cookie, a private epmd, an empty ``RABBITMQ_CONF_ENV_FILE`` (the system's names the
shared node), no plugins. The shared ``rabbit@localhost`` on 5672 is never touched: every
process started here carries ``POSTAGE_CLUSTER_DIR`` in its environment, and only a process
whose ``/proc/PID/environ`` holds it (and, for a node, its node name) is ever killed. ``start``
first removes what a previous, interrupted run left.

Nodes ``1``, ``2``, ``3`` (``pc<port>n1@localhost`` ...) each have a plain AMQP listener and a
TLS one: node 1 presents the server certificate of our CA (CN/SAN ``localhost`` and
``127.0.0.1``) and asks for no client certificate; node 2 presents the same and *requires* a
client certificate of our CA; node 3 presents a certificate for the same names signed by
another CA (a server a client must refuse). Certificates are made with ``openssl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SBIN = Path("/usr/lib/rabbitmq/bin")
NODES = (1, 2, 3)
BOOT_TIMEOUT = 90


def _default_base() -> int:
    digest = int(hashlib.sha1(str(ROOT).encode()).hexdigest(), 16)
    return 21000 + (digest % 200) * 50


BASE = int(os.environ.get("POSTAGE_CLUSTER_PORT") or _default_base())
DIR = Path(os.environ.get("POSTAGE_CLUSTER_DIR")
           or f"/tmp/postage-cluster-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]}")
CERTS = DIR / "certs"


def node_name(node: int) -> str:
    return f"pc{BASE}n{node}@localhost"


def amqp_port(node: int) -> int:
    return BASE + 10 + node


def tls_port(node: int) -> int:
    return BASE + 20 + node


def dist_port(node: int) -> int:
    return BASE + 30 + node


def _node_dir(node: int) -> Path:
    return DIR / f"n{node}"


def pid_file(node: int) -> Path:
    return _node_dir(node) / "rabbit.pid"


def environment(node: int) -> dict[str, str]:
    """The environment a node, and the CLI talking to it, runs with."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RABBITMQ_", "ERL_"))}
    nd = _node_dir(node)
    env.update({
        "POSTAGE_CLUSTER_DIR": str(DIR),
        "HOME": str(DIR / "home"),
        "RABBITMQ_CONF_ENV_FILE": str(DIR / "rabbitmq-env.conf"),
        "RABBITMQ_NODENAME": node_name(node),
        "RABBITMQ_CONFIG_FILE": str(nd / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(nd / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(DIR / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(nd / "mnesia"),
        "RABBITMQ_LOG_BASE": str(nd / "log"),
        "RABBITMQ_PID_FILE": str(pid_file(node)),
        "RABBITMQ_DIST_PORT": str(dist_port(node)),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(BASE + 40),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(BASE + 49),
        "ERL_EPMD_PORT": str(BASE),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    })
    return env


# ---- certificates ------------------------------------------------------------------------

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(name: str, subject: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-keyout", str(CERTS / f"{name}.key"), "-out", str(CERTS / f"{name}.pem"),
             "-subj", f"/CN={subject}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(name: str, ca: str, cn: str, usage: str, san: str | None) -> None:
    key, csr, pem = (str(CERTS / f"{name}.{ext}") for ext in ("key", "csr", "pem"))
    ext = CERTS / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={cn}")
    _openssl("x509", "-req", "-in", csr, "-CA", str(CERTS / f"{ca}.pem"),
             "-CAkey", str(CERTS / f"{ca}.key"), "-CAcreateserial", "-days", "30",
             "-out", pem, "-extfile", str(ext))


def make_certificates() -> dict[str, str]:
    """A CA, its server and client certificates; a rogue CA and its server certificate
    for the same names. Returns the paths by name."""
    CERTS.mkdir(parents=True, exist_ok=True)
    _ca("ca", "Postage test CA")
    _ca("rogue-ca", "Postage rogue CA")
    names = "DNS:localhost,IP:127.0.0.1"
    _leaf("server", "ca", "localhost", "serverAuth", names)
    _leaf("rogue-server", "rogue-ca", "localhost", "serverAuth", names)
    _leaf("client", "ca", "guest", "clientAuth", None)
    _leaf("rogue-client", "rogue-ca", "guest", "clientAuth", None)
    return certificates()


def certificates() -> dict[str, str]:
    return {name: str(CERTS / f"{name}.{ext}")
            for name in ("ca", "rogue-ca", "server", "rogue-server", "client", "rogue-client")
            for ext in ("pem",)} | {
        f"{name}-key": str(CERTS / f"{name}.key") for name in ("client", "rogue-client")}


# ---- configuration -------------------------------------------------------------------------

def _config(node: int) -> str:
    server = "rogue-server" if node == 3 else "server"
    ca = "rogue-ca" if node == 3 else "ca"
    verify = ("ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
              if node == 2 else
              "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")
    peers = "".join(f"cluster_formation.classic_config.nodes.{n} = {node_name(n)}\n"
                    for n in NODES)
    return (
        f"listeners.tcp.1 = 127.0.0.1:{amqp_port(node)}\n"
        f"listeners.ssl.1 = 127.0.0.1:{tls_port(node)}\n"
        f"ssl_options.cacertfile = {CERTS / f'{ca}.pem'}\n"
        f"ssl_options.certfile = {CERTS / f'{server}.pem'}\n"
        f"ssl_options.keyfile = {CERTS / f'{server}.key'}\n"
        f"{verify}"
        "cluster_formation.peer_discovery_backend = classic_config\n"
        f"{peers}"
        "log.file.level = warning\n"
        "log.console = false\n"
    )


def _write_configuration() -> None:
    (DIR / "home").mkdir(parents=True, exist_ok=True)
    cookie = DIR / "home" / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(10).upper())
        cookie.chmod(0o400)
    (DIR / "rabbitmq-env.conf").write_text("")
    (DIR / "enabled_plugins").write_text("[].\n")
    for node in NODES:
        nd = _node_dir(node)
        (nd / "log").mkdir(parents=True, exist_ok=True)
        (nd / "rabbitmq.conf").write_text(_config(node))
        (nd / "advanced.config").write_text("[].\n")


# ---- processes -----------------------------------------------------------------------------

def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _ours(pid: int) -> bool:
    return _environ(pid).get("POSTAGE_CLUSTER_DIR") == str(DIR)


def node_pid(node: int) -> int | None:
    """The OS pid of a running node, read from its pid file and checked in /proc."""
    try:
        pid = int(pid_file(node).read_text().strip())
    except (OSError, ValueError):
        return None
    env = _environ(pid)
    if env.get("POSTAGE_CLUSTER_DIR") == str(DIR) and env.get("RABBITMQ_NODENAME") == \
            node_name(node):
        return pid
    return None


def our_processes() -> list[int]:
    """Every process of this test bed (nodes, epmd, CLI children), by its environment."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _ours(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def ctl(node: int, *args: str, timeout: float = 60, tool: str = "rabbitmqctl") -> str:
    """Run ``rabbitmqctl -n NODE ARGS`` (or ``rabbitmq-queues``) against one of our nodes."""
    result = subprocess.run([str(SBIN / tool), "-n", node_name(node), *args],
                            env=environment(node), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{tool} -n {node_name(node)} {' '.join(args)} exited "
                           f"{result.returncode}: {result.stderr.strip() or result.stdout}")
    return result.stdout


_CHILDREN: list[subprocess.Popen[bytes]] = []  # kept, and reaped at stop()


def _launch(node: int) -> None:
    log = open(_node_dir(node) / "log" / "console.log", "ab")  # noqa: SIM115 - kept by child
    _CHILDREN.append(subprocess.Popen(
        [str(SBIN / "rabbitmq-server")], env=environment(node), stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        cwd=str(DIR)))
    log.close()


def _port_open(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_booted(node: int, timeout: float = BOOT_TIMEOUT) -> None:
    """Until the node answers AMQP on both listeners (and rabbitmqctl says it runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(amqp_port(node)) and _port_open(tls_port(node)):
            return
        if node_pid(node) is None and pid_file(node).exists() and time.monotonic() > \
                deadline - timeout + 20:
            break  # the VM died: its log says why
        time.sleep(0.25)
    log = _node_dir(node) / "log" / "console.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"node {node_name(node)} did not boot within {timeout:g}s:\n{tail}")


def start_node(node: int) -> None:
    """Boot one node (again: after a kill it rejoins with its data)."""
    if node_pid(node) is not None:
        return
    pid_file(node).unlink(missing_ok=True)
    _launch(node)
    wait_booted(node)


def kill_node(node: int) -> int:
    """``kill -9`` one node (its VM, found by pid file and checked in /proc)."""
    pid = node_pid(node)
    if pid is None:
        raise RuntimeError(f"node {node_name(node)} is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node_pid(node) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def stop() -> None:
    """Kill every process of the test bed and remove its directory."""
    for _ in range(3):
        pids = our_processes()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for child in [child for child in _CHILDREN if child.poll() is not None]:
        _CHILDREN.remove(child)
    for child in list(_CHILDREN):  # scripts whose VM we killed: reap them
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        _CHILDREN.remove(child)
    shutil.rmtree(DIR, ignore_errors=True)


def start() -> dict[str, object]:
    """A fresh 3-node cluster (what a previous run left is removed first)."""
    if not (SBIN / "rabbitmq-server").exists():
        raise RuntimeError(f"RabbitMQ is not installed ({SBIN} is missing): "
                           "scripts/ensure-broker installs it")
    stop()
    DIR.mkdir(parents=True)
    make_certificates()
    _write_configuration()
    _launch(1)
    wait_booted(1)
    for node in NODES[1:]:
        _launch(node)
    for node in NODES[1:]:
        wait_booted(node)
    wait_clustered()
    return status()


def running_nodes(node: int = 1) -> list[str]:
    """The running members of the cluster, as ``node`` sees them."""
    out = ctl(node, "cluster_status", "--formatter", "json", timeout=30)
    return sorted(json.loads(out).get("running_nodes", []))


def wait_clustered(nodes: tuple[int, ...] = NODES, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    want = sorted(node_name(n) for n in nodes)
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = running_nodes(nodes[0])
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            seen = []
        if all(name in seen for name in want):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the cluster did not form within {timeout:g}s: running {seen}")


def status() -> dict[str, object]:
    return {
        "dir": str(DIR),
        "nodes": {node_name(n): {"pid": node_pid(n), "amqp": amqp_port(n), "tls": tls_port(n)}
                  for n in NODES},
        "certificates": certificates(),
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__ or "")
        return 0 if argv else 2
    action, args = argv[0], argv[1:]
    if action == "start":
        sys.stdout.write(json.dumps(start(), indent=2) + "\n")
    elif action == "stop":
        stop()
    elif action in ("status", "env"):
        sys.stdout.write(json.dumps(status(), indent=2) + "\n")
    elif action == "certs":
        sys.stdout.write(json.dumps(make_certificates(), indent=2) + "\n")
    elif action in ("kill", "restart", "stop-app", "start-app") and len(args) == 1:
        node = int(args[0])
        if action == "kill":
            kill_node(node)
        elif action == "restart":
            if node_pid(node) is not None:
                kill_node(node)
            start_node(node)
            wait_clustered()
        else:
            ctl(node, action.replace("-", "_"))
    else:
        sys.stderr.write(f"scripts/cluster: unknown command {' '.join(argv)!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
