"""The shell examples of README.md as data: its ```sh blocks, split into commands (a command
may run over several lines: a trailing backslash, or a quoted JSON body), and the `trainyard`
invocations inside them. tests/unit/test_readme_commands.py checks that each parses and names
commands and flags that exist; tests/ray/test_readme.py runs them against the embedded stack.

A command is expected to exit 0 unless its comment says otherwise (`# exits 2 here: ...`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\s*$")
_EXITS = re.compile(r"#.*\bexits (\d+)\b")
# `trainyard ...` or `.venv/bin/trainyard ...`, at the start, after `$(`, or after whitespace;
# the invocation runs to the end of the line, a `)` closing the substitution, or a comment.
_TRAINYARD = re.compile(r"(?:^|\$\(|\s)(?:\.venv/bin/)?trainyard((?:\s+[^\s)#]+)*)")


@dataclass(frozen=True)
class Command:
    text: str  # as written, comments included, possibly several lines
    line: int  # README line of its first line
    expected_exit: int

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def code(self) -> str:
        """The command without its trailing comments, for running with arguments appended."""
        return " ".join(shlex.quote(w) if not w.startswith("$") else w for w in self.words)


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # README line of its first content line

    def commands(self) -> list[Command]:
        out: list[Command] = []
        pending: list[str] = []
        first = 0
        for offset, raw in enumerate(self.text.splitlines()):
            if not pending:
                if not raw.strip() or raw.lstrip().startswith("#"):
                    continue
                first = self.line + offset
            pending.append(raw)
            joined = "\n".join(pending)
            if raw.rstrip().endswith("\\") or not _closed(joined):
                continue
            exits = _EXITS.search(pending[-1])
            out.append(Command(joined, first, int(exits.group(1)) if exits else 0))
            pending = []
        if pending:
            raise ValueError(f"README line {first}: an unfinished command: {pending[0]!r}")
        return out


def _closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation": the command goes on on the next line
        return False
    return True


def blocks(path: Path = README, lang: str | None = None) -> list[Block]:
    found: list[Block] = []
    current: list[str] | None = None
    kind, start = "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line)
        if current is None and fence:
            current, kind, start = [], fence.group(1), number + 1
        elif current is not None and line.startswith("```"):
            found.append(Block(kind, "\n".join(current), start))
            current = None
        elif current is not None:
            current.append(line)
    return [b for b in found if lang is None or b.lang == lang]


def sh_blocks(path: Path = README) -> list[Block]:
    return blocks(path, "sh")


def trainyard_invocations(command: Command) -> list[list[str]]:
    """The arguments of each `trainyard` run in the command (also inside `$(...)`)."""
    text = " ".join(command.text.replace("\\\n", " ").split("\n"))
    return [shlex.split(m.group(1), comments=True) for m in _TRAINYARD.finditer(text)]
