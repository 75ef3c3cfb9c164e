"""Sphinx configuration of the Postage documentation (built by ``scripts/docs``).

The API reference is made here: ``reference/modules.txt`` lists the modules, and for each
one :func:`write_reference_pages` writes ``reference/api/MODULE.rst`` with an autodoc entry
for every name of the module's ``__all__`` (so the reference follows ``__all__``, never a
hand-kept list of names). An object exported by several modules is documented in full once,
at the first module of the list that exports it, and by a short entry pointing there at the
others: ``postage.messaging.Message`` and ``postage.Message`` are one class.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import postage  # noqa: E402 - the checkout first, so the reference is of this source

project = "Postage"
author = "the Postage authors"
copyright = "the Postage authors; GPL-2.0-or-later"  # noqa: A001 - Sphinx's setting name
release = postage.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["_build", "tutorial/*.py", "reference/modules.txt"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"Postage {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The broker is never needed to build: importing Postage opens no connection.
autodoc_mock_imports: list[str] = []

REFERENCE_LIST = DOCS / "reference" / "modules.txt"
API_DIR = DOCS / "reference" / "api"


def reference_modules() -> list[str]:
    """The modules of ``reference/modules.txt``, in its order."""
    lines = REFERENCE_LIST.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _kind(obj: Any) -> tuple[str, str]:
    """(autodoc directive, Python domain directive) for an exported object."""
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "autoexception", "py:exception"
        return "autoclass", "py:class"
    if inspect.isroutine(obj):
        return "autofunction", "py:function"
    return "autodata", "py:data"


def module_page(module_name: str, canonical: dict[int, str]) -> str:
    """The reST of one module's page; ``canonical`` (id -> full name) is shared between
    pages, so the first module exporting an object documents it."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise RuntimeError(f"{module_name} has no __all__: the reference documents __all__")
    title = f"``{module_name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {module_name}",
             "   :no-members:", ""]
    for name in names:
        obj = getattr(module, name)
        full = f"{module_name}.{name}"
        auto, plain = _kind(obj)
        first = canonical.get(id(obj))
        if first is None:
            canonical[id(obj)] = full
            lines += [f".. {auto}:: {full}", ""]
        else:
            role = plain.split(":")[1]
            role = {"exception": "exc", "function": "func"}.get(role, role)
            lines += [f".. {plain}:: {name}", f"   :module: {module_name}", "",
                      f"   The same object as :{role}:`{first}`.", ""]
    return "\n".join(lines)


def write_reference_pages(_app: Any = None) -> None:
    """Write ``reference/api/*.rst`` (only the files whose text changed, so an incremental
    build stays incremental) and remove pages of modules no longer listed."""
    API_DIR.mkdir(exist_ok=True)
    canonical: dict[int, str] = {}
    wanted = set()
    for module_name in reference_modules():
        path = API_DIR / f"{module_name}.rst"
        wanted.add(path)
        text = module_page(module_name, canonical)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for path in API_DIR.glob("*.rst"):
        if path not in wanted:
            path.unlink()


def _owner(name: str) -> Any:
    """The object whose member ``name`` (a dotted path) is: its module or class."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:-1]:
            obj = getattr(obj, part)
        return obj
    return None


def drop_foreign_docstrings(_app: Any, what: str, name: str, obj: Any, _options: Any,
                            lines: list[str]) -> None:
    """Keep the reference to what Postage says: a value without a doc comment would show
    its type's docstring (a dict's), and a method without a docstring of its own would show
    the one it overrides in Twisted (epytext, not reST)."""
    if what in ("data", "attribute"):
        doc = inspect.getdoc(type(obj))
        if doc and lines and lines[0] == doc.splitlines()[0]:
            lines[:] = []
        return
    if what != "method" or getattr(getattr(obj, "__func__", obj), "__doc__", None):
        return
    owner = _owner(name)
    member = name.rpartition(".")[2]
    for klass in inspect.getmro(owner)[1:] if inspect.isclass(owner) else ():
        attr = vars(klass).get(member)
        if attr is not None and getattr(attr, "__doc__", None):
            if not klass.__module__.startswith("postage"):
                lines[:] = []
            return


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", write_reference_pages)
    app.connect("autodoc-process-docstring", drop_foreign_docstrings)
    return {"parallel_read_safe": True}
