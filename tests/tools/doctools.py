"""Reading the documentation's reST as data, for the tests that hold the docs to the code.

``code_blocks(text)`` lists the ``.. code-block::`` directives of a page (language, options,
body); ``transcript(body)`` splits a ``console`` block into ``(command, expected output)``
pairs; ``normalized(lines)`` makes output comparable (runs of spaces, durations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DIRECTIVE = re.compile(r"^\.\. code-block:: *(\S+)\s*$")
_OPTION = re.compile(r"^\s+:([\w-]+):\s*(.*)$")
_DURATION = re.compile(r"\b\d+(\.\d+)?s\b")


@dataclass
class CodeBlock:
    language: str
    options: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def code_blocks(text: str) -> list[CodeBlock]:
    """Every ``.. code-block::`` of a reST text (top-level ones, 3-space indented bodies)."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        i += 1
        if match is None:
            continue
        block = CodeBlock(match.group(1))
        while i < len(lines) and (option := _OPTION.match(lines[i])):
            block.options[option.group(1)] = option.group(2)
            i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
            block.lines.append(lines[i][3:])
            i += 1
        while block.lines and not block.lines[-1].strip():
            block.lines.pop()
        while block.lines and not block.lines[0].strip():
            block.lines.pop(0)
        blocks.append(block)
    return blocks


def transcript(block: CodeBlock) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            steps.append((line[2:].strip(), []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def normalized(lines: list[str]) -> list[str]:
    """Non-empty lines, runs of blanks made one space, durations ("1.37s") made "Ns"."""
    return [_DURATION.sub("Ns", " ".join(line.split())) for line in lines if line.strip()]
