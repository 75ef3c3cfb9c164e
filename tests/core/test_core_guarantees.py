"""The guarantees name their tests: each promise of docs/reference/guarantees.rst names at
least one test, and every test it or the README names exists (a renamed or deleted test
fails here)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "reference" / "guarantees.rst").read_text(encoding="utf-8")
README = (ROOT / "README.rst").read_text(encoding="utf-8")
TEST_NAME = re.compile(r"``(test_[a-z0-9_]+)``")


def defined_tests():
    return {match for path in (ROOT / "tests").rglob("test_*.py")
            for match in re.findall(r"^\s*(?:async )?def (test_[a-z0-9_]+)\(",
                                    path.read_text(encoding="utf-8"), re.MULTILINE)}


def promises():
    section = PAGE.split("What you can count on\n=====================\n", 1)[1]
    return [item for item in re.split(r"\n(?=- \*\*)", section) if item.startswith("- **")]


def test_every_promise_names_a_test():
    found = promises()
    assert len(found) >= 8  # the section is there, and split into its promises
    unnamed = [item.splitlines()[0] for item in found if not TEST_NAME.search(item)]
    assert unnamed == []


def test_every_test_the_page_names_exists():
    named = set(TEST_NAME.findall(PAGE))
    assert len(named) >= 40
    assert sorted(named - defined_tests()) == []


def test_every_test_the_readme_names_exists():
    named = set(TEST_NAME.findall(README))
    assert len(named) >= 5  # the Guarantees section's figures name theirs
    assert sorted(named - defined_tests()) == []
