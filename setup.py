"""Install metadata for Postage.

The twistd plugin lives in ``twisted/plugins/postage_plugin.py``. ``twisted`` and
``twisted/plugins`` have no ``__init__.py`` on purpose: Twisted's own ``twisted.plugins``
package scans every ``twisted/plugins`` folder on ``sys.path`` that is *not* a package, so the
file must land beside Twisted's plugins (a normal install) or the checkout must be on
``sys.path`` (an editable install, hence ``package_dir={"": "."}``, which makes setuptools
write a plain ``.pth`` file instead of an import hook that only knows whole packages).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version():
    text = (HERE / "postage" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("postage/__init__.py has no __version__ = \"...\" line")
    return match.group(1)


setup(
    name="postage",
    version=read_version(),
    description="Components talking through AMQP on RabbitMQ, on Twisted and pika",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="GPL-2.0-or-later",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Operating System :: POSIX",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Communications",
        "Topic :: System :: Networking",
    ],
    python_requires=">=3.11",
    package_dir={"": "."},
    packages=[*find_packages(include=["postage", "postage.*"]), "twisted.plugins"],
    include_package_data=False,
    install_requires=[
        "pika>=1.4.4,<2",
        "Twisted[tls]>=24.3,<27",
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            "ruff>=0.5",
            # scripts/test type-checks postage/ (pyproject [tool.mypy]); mypy-zope lets mypy
            # see Twisted's zope interfaces
            "mypy>=1.11,<2",
            "mypy-zope>=1.0,<2",
            "opentelemetry-api>=1.25,<2",
            "opentelemetry-sdk>=1.25,<2",
            # scripts/test measures branch coverage; 7.10 added `patch = subprocess`.
            "coverage>=7.10,<8",
        ],
        "otel": [
            "opentelemetry-api>=1.25,<2",
        ],
        # scripts/docs: the documentation site (docs/), built with warnings as errors.
        "docs": [
            "sphinx>=8.1,<10",
            "furo>=2024.8.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "postage = postage.cli:main",
        ],
    },
    zip_safe=False,
)
