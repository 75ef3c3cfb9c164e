"""The documentation site holds to the code: it builds without a warning, its API reference
has an entry for every public name, and its command-line page names every subcommand and
option of the real parsers.

The build is ``scripts/docs`` (Sphinx, warnings as errors). ``scripts/test`` builds the docs
in a step of its own just before pytest and passes the HTML folder in ``POSTAGE_DOCS_HTML``,
so the suite builds once; run alone, these tests build into a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import posixpath
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MODULES_LIST = DOCS / "reference" / "modules.txt"


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """The built HTML folder: scripts/test's build, else one made here."""
    given = os.environ.get("POSTAGE_DOCS_HTML")
    if given and (Path(given) / "objects.inv").is_file():
        return Path(given)
    out = tmp_path_factory.mktemp("docs") / "html"
    done = subprocess.run([str(ROOT / "scripts" / "docs"), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"scripts/docs failed:\n{done.stdout}{done.stderr}"
    return out


def listed_modules() -> list[str]:
    lines = MODULES_LIST.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def public_modules() -> list[str]:
    """postage, postage.messaging, postage.twisted and every submodule of postage.twisted
    whose name does not start with an underscore."""
    import postage.twisted  # noqa: PLC0415

    found = ["postage", "postage.messaging", "postage.twisted"]
    for info in pkgutil.iter_modules(postage.twisted.__path__, "postage.twisted."):
        if not info.name.rpartition(".")[2].startswith("_"):
            found.append(info.name)
    return found


def test_every_public_module_is_in_the_reference_list():
    missing = sorted(set(public_modules()) - set(listed_modules()))
    assert not missing, (f"public modules missing from {MODULES_LIST.relative_to(ROOT)} "
                         f"(one line each): {missing}")


def test_every_public_name_has_a_reference_entry(html):
    from sphinx.util.inventory import InventoryFile  # noqa: PLC0415

    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    documented = {name for kind, entries in inventory.items() if kind.startswith("py:")
                  for name in entries}
    missing = []
    for module_name in listed_modules():
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module_name} has no __all__"
        missing += [f"{module_name}.{name}" for name in names
                    if f"{module_name}.{name}" not in documented]
    assert not missing, f"public names without a reference entry: {missing}"


def test_the_tutorial_and_the_wire_page_are_built(html):
    for page in ("tutorial.html", "concepts.html", "reference/wire.html",
                 "reference/cli.html", "howto/index.html"):
        assert (html / page).is_file(), f"{page} was not built"


def _parser_words(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Subcommand -> the words its page section must show (options, positionals)."""
    words: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words[name] = []
                for each in sub._actions:
                    if isinstance(each, argparse._HelpAction):
                        continue
                    if each.option_strings:
                        words[name] += each.option_strings
                    else:
                        words[name].append(each.metavar or each.dest.upper())
    return words


def test_the_cli_page_shows_every_subcommand_and_option_of_postage():
    from postage.cli import _parser  # noqa: PLC0415

    page = (DOCS / "reference" / "cli.rst").read_text(encoding="utf-8")
    missing = []
    for command, words in _parser_words(_parser()).items():
        if f"``postage {command}``" not in page:
            missing.append(f"postage {command}")
        missing += [f"postage {command} {word}" for word in words
                    if f"``{word}" not in page and f"{word} " not in page]
    assert not missing, f"docs/reference/cli.rst does not show: {missing}"


def test_the_cli_page_shows_every_option_of_the_twistd_plugin():
    from twisted.python import usage  # noqa: PLC0415

    from postage.twisted.service import Options  # noqa: PLC0415

    page = (DOCS / "reference" / "cli.rst").read_text(encoding="utf-8")
    options = [f"--{entry[0]}" for entry in (*Options.optParameters,
                                             *getattr(Options, "optFlags", []))]
    for attr in vars(Options):
        if attr.startswith("opt_") and not hasattr(usage.Options, attr):
            name = attr[4:].replace("_", "-")
            options.append(f"-{name}" if len(name) == 1 else f"--{name}")
    missing = [option for option in options if f"``{option}``" not in page]
    assert not missing, f"docs/reference/cli.rst does not show twistd postage {missing}"
