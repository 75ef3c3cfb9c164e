"""The public names of ``postage`` and the purity of the core (no reactor, no pika)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import postage

REPO_ROOT = Path(__file__).resolve().parents[2]

PUBLIC_NAMES = [
    "AuthenticationError",
    "BrokerConnectionError",
    "EncodeError",
    "Encoder",
    "Exchange",
    "ExitScheduler",
    "FilterError",
    "Fingerprint",
    "Handler",
    "JsonEncoder",
    "Message",
    "MessageCommand",
    "MessageFilter",
    "MessageFormatError",
    "MessageHandler",
    "MessageHandlerFullBody",
    "MessageResult",
    "MessageResultError",
    "MessageResultException",
    "MessageStatus",
    "MicroScheduler",
    "MicroThread",
    "NackError",
    "PostageError",
    "PublishError",
    "RetryPolicy",
    "RpcCommand",
    "RpcHandler",
    "TLSVerificationError",
    "UnroutableError",
    "VirtualHostError",
    "__version__",
    "decode_envelope",
]


def test_public_names_are_pinned():
    assert sorted(postage.__all__) == PUBLIC_NAMES


def test_public_names_have_no_duplicates():
    assert len(postage.__all__) == len(set(postage.__all__))


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_importable(name):
    namespace = {}
    exec(f"from postage import {name}", namespace)
    assert namespace[name] is getattr(postage, name)


def test_star_import_gives_every_public_name():
    namespace = {}
    exec("from postage import *", namespace)
    assert set(PUBLIC_NAMES) <= set(namespace)


def test_version_is_a_dotted_string():
    assert isinstance(postage.__version__, str)
    assert all(part.isdigit() for part in postage.__version__.split(".")[:2])


def test_importing_the_core_loads_no_reactor_and_no_pika():
    code = (
        "import json, sys\n"
        "import postage, postage.microthreads, postage.config\n"
        "print(json.dumps(sorted(m for m in ('twisted.internet.reactor', 'pika')"
        " if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
