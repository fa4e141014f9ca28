"""The README's shell examples, without running them (tests/ray/test_readme.py runs them): every
block parses into whole commands, every `trainyard` command and flag they use exists, the files
they name are there (or are what examples/make_data.py writes), no date they hold is past, and
what they show of `trainyard up` is what it prints."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import typer
from readme_blocks import README, ROOT, Block, blocks, sh_blocks, trainyard_invocations
from typer.testing import CliRunner

from trainyard.cli import app

DOCS = (README, ROOT / "examples" / "README.md")
# What examples/make_data.py writes under examples/data/ (git-ignored): its TEMPLATES, and the
# model and data files they point at.
GENERATED = {"tiny-cpu.yaml", "sweep.yaml", "tiny-gpt2", "train.jsonl", "valid.jsonl"}


def _all_sh() -> list[tuple[str, Block]]:
    return [(doc.name, block) for doc in DOCS for block in sh_blocks(doc)]


def _option_names(command: Any) -> dict[str, bool]:
    """Each option name of `command` -> whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not (param.is_flag or param.count)
    return names


def _resolve(argv: list[str]) -> tuple[list[str], list[str]]:
    """The command path `argv` reaches and the problems with its options and arguments."""
    command = typer.main.get_command(app)
    path: list[str] = []
    problems: list[str] = []
    positionals = 0
    args = iter(argv)
    for arg in args:
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            takes_value = _option_names(command).get(name)
            if takes_value is None:
                problems.append(f"{' '.join(path) or 'trainyard'} has no option {name}")
            elif takes_value and "=" not in arg:
                next(args, None)
        elif getattr(command, "commands", None):
            if arg not in command.commands:
                problems.append(f"{' '.join(path) or 'trainyard'} has no command {arg!r}")
                break
            command = command.commands[arg]
            path.append(arg)
        else:
            positionals += 1
    wanted = [p for p in command.params if p.param_type_name == "argument"]
    if positionals != len(wanted) and not getattr(command, "commands", None):
        problems.append(f"{' '.join(path)} takes {len(wanted)} argument(s), the example gives {positionals}")
    return path, problems


def test_the_readme_has_its_shell_examples_and_each_block_parses() -> None:
    found = sh_blocks()
    assert len(found) >= 5
    commands = [c for block in found for c in block.commands()]
    assert any(c.text.startswith(".venv/bin/trainyard up") for c in commands)
    assert any(c.text.startswith("curl ") and "-d '" in c.text for c in commands)
    for _, block in _all_sh():
        block.commands()  # raises on a quote or a continuation left open


def test_every_trainyard_command_and_flag_in_the_examples_exists() -> None:
    runner = CliRunner()
    checked = 0
    for doc, block in _all_sh():
        for command in block.commands():
            for argv in trainyard_invocations(command):
                path, problems = _resolve(argv)
                assert not problems, f"{doc} line {command.line}: {command.text!r}: {problems}"
                shown = runner.invoke(app, [*path, "--help"])
                assert shown.exit_code == 0, (doc, command.line, shown.output)
                checked += 1
    assert checked >= 15


def test_the_files_the_examples_name_exist() -> None:
    for doc, block in _all_sh():
        for command in block.commands():
            for word in command.words:
                if not word.startswith("examples/"):
                    continue
                if word.startswith("examples/data/"):
                    assert word.removeprefix("examples/data/") in GENERATED, (doc, command.line, word)
                else:
                    assert (ROOT / word).exists(), (doc, command.line, word)


_DATE = re.compile(r"\b(20\d\d)-(\d\d)-(\d\d)(?:T[\d:]+Z)?")


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "examples").glob("*.yaml"))], ids=lambda p: p.name)
def test_no_example_deadline_is_past(path: Any) -> None:
    # Dates in the examples are deadlines; one in the past makes the example fail or mislead.
    text = path.read_text(encoding="utf-8")
    if path == README:  # the prose has dates of its own (benchmarks); the examples are the blocks
        text = "\n".join(b.text for b in blocks(path) if b.lang in ("sh", "python", "yaml"))
    today = datetime.now(UTC).date()
    for match in _DATE.finditer(text):
        y, m, d = (int(g) for g in match.groups())
        assert datetime(y, m, d, tzinfo=UTC).date() > today, f"{path.name}: {match.group(0)} is past"


def test_the_python_example_compiles() -> None:
    [example] = [b for b in blocks() if b.lang == "python"]
    ast.parse(example.text)


def test_the_start_up_shown_is_what_trainyard_up_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from trainyard.cli.up import _announce

    shown = next(b.text for b in blocks() if b.lang == "text" and "Trainyard is up" in b.text)
    _announce("http://127.0.0.1:8000", "ty_KEY", "postgresql+psycopg://postgres:@/postgres?host=/home/you/pg")
    printed = capsys.readouterr().out.splitlines()
    assert [line[:13] for line in shown.splitlines()] == [line[:13] for line in printed]
    assert printed[2] == "  dashboard  http://127.0.0.1:8000/dashboard#key=ty_KEY"
