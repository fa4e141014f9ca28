"""Every shell example of README.md, run against the embedded stack as a reader runs them: in a
fresh directory holding a copy of `examples/`, one shell for all the blocks in their order
(so `JOB_ID=...` and `KEY=...` carry over), each command checked for the exit status its
comment promises (0 unless it says `exits N`). About two minutes, most of it the tiny job's run.

What cannot run as written, and what runs instead:
- `make demo`, `make test`: not run (the second is this suite; the first starts its own stack).
- `.venv/bin/trainyard up`: started first, as written plus `--port`, with the session's Ray
  cluster as RAY_ADDRESS (a second local Ray on one host confuses `ray.init`).
- `trainyard api`: started with `--port`, checked to answer `/healthz`, then stopped.
- `localhost:8000` / `127.0.0.1:8000`: the stack's port; the placeholder database URL
  `postgresql://user@dbhost:5432/trainyard`: the stack's own database.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from readme_blocks import ROOT, Command, sh_blocks
from support import free_port

from trainyard.cli.stackfile import display_url
from trainyard.sdk import Trainyard

NOT_RUN = {"make demo", "make test"}
PLACEHOLDER_DATABASE = "postgresql://user@dbhost:5432/trainyard"


def _shims(bin_dir: Path) -> None:
    """`.venv/bin/{python,trainyard,activate}` of the directory the examples run in, for this
    interpreter. Wrappers, not symlinks: a symlinked venv python outside its venv loses the venv."""
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "trainyard").write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m trainyard.cli "$@"\n'
    )
    (bin_dir / "activate").write_text(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n')
    for name in ("python", "trainyard"):
        (bin_dir / name).chmod(0o755)


def _commands() -> list[Command]:
    return [c for block in sh_blocks() for c in block.commands()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "reader"
    shutil.copytree(
        ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    _shims(work / ".venv" / "bin")
    return work


@pytest.fixture
def stack(workdir: Path, ray_address: str) -> Iterator[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_ADDRESS"))}
    env.update(
        TRAINYARD_CREDENTIALS=str(workdir / "config" / "credentials.json"),
        RAY_ADDRESS=ray_address,
        COLUMNS="200",
    )
    [up] = [c for c in _commands() if c.words[:2] == [".venv/bin/trainyard", "up"]]
    port = free_port()
    log = workdir / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {shlex.join(up.words)} --port {port}"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while "admin key" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield {"env": env, "port": port, "log": log, "work": workdir}
    finally:
        # One Ctrl-C, so any run still going stops softly (a forced stop can leave its placement
        # group holding the shared cluster's CPUs); a second one if that takes too long.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _script(commands: list[Command], *, port: int, api_port: int, database_url: str) -> str:
    lines = [
        "readme_serve() {  # a server: start it, see it answer, stop it",
        f'  "$@" --port {api_port} & local pid=$!',
        "  for _ in $(seq 300); do",
        f"    if curl -sf http://127.0.0.1:{api_port}/healthz >/dev/null; then",
        "      kill -TERM $pid; wait $pid || true; return 0",
        "    fi",
        "    sleep 0.2",
        "  done",
        "  kill -KILL $pid; return 1",
        "}",
    ]
    for command in commands:
        words = command.words
        if " ".join(words[:2]) in NOT_RUN or words[:2] == [".venv/bin/trainyard", "up"]:
            continue
        code = command.text
        if words[:2] == ["trainyard", "api"]:
            code = "readme_serve " + shlex.join(words)
        code = code.replace("localhost:8000", f"localhost:{port}").replace(
            "127.0.0.1:8000", f"127.0.0.1:{port}"
        )
        code = code.replace(PLACEHOLDER_DATABASE, shlex.quote(database_url))
        first = command.text.splitlines()[0]
        lines += [
            f"# README line {command.line}",
            code,
            "__rc=$?",
            f'if [ "$__rc" != "{command.expected_exit}" ]; then',
            f"  echo {shlex.quote(f'README line {command.line}: {first}')} exited $__rc, "
            f"not {command.expected_exit} >&2",
            "  exit 90",
            "fi",
        ]
    return "\n".join(lines) + "\n"


def test_every_readme_shell_example_runs_against_the_embedded_stack(stack: dict[str, Any]) -> None:
    work = stack["work"]
    started = stack["log"].read_text().splitlines()
    assert started[0] == "Trainyard is up; Ctrl-C stops it.", (
        "nothing before the key and URLs:\n" + "\n".join(started[:20])
    )
    assert not [line for line in started if " INFO " in line], started

    info = json.loads((work / "config" / "stack.json").read_text())
    script = work / "readme.sh"
    script.write_text(
        _script(
            _commands(),
            port=stack["port"],
            api_port=free_port(),
            database_url=display_url(info["database_url"]),
        )
    )
    ran = subprocess.run(
        ["bash", str(script)], cwd=work, env=stack["env"], capture_output=True, text=True, timeout=540
    )
    assert ran.returncode == 0, f"{ran.stderr[-4000:]}\n--- stdout ---\n{ran.stdout[-3000:]}"

    # `trainyard logs $JOB_ID -f`, run as the job was queued, followed its training as it went:
    # the rank-0 step lines, and the attempt's end, after which it returned by itself.
    assert re.search(r"\bstep \d+/\d+ ", ran.stdout), ran.stdout[-3000:]
    assert "ended: succeeded" in ran.stdout, ran.stdout[-3000:]

    saved = json.loads((work / ".trainyard" / "credentials.json").read_text())
    client = Trainyard(saved["base_url"], saved["api_key"], max_retries=0)
    jobs = {j.name: j for j in client.jobs.list()}
    assert jobs["tiny-gpt2-cpu"].status == "succeeded", jobs["tiny-gpt2-cpu"]
    assert "gpt2-ft" in jobs, "the curl example created its job"
    assert jobs["gpt2-ft"].base_model == "gpt2" and jobs["gpt2-ft"].instance_type == "local-cpu"
    # That job names a hub model and a bucket this stack cannot read: cancel it, and let its run
    # (if the worker started one) stop before the stack does.
    client.jobs.cancel(jobs["gpt2-ft"].id)
    deadline = time.monotonic() + 120
    while not client.jobs.get(jobs["gpt2-ft"].id).is_settled:
        assert time.monotonic() < deadline, client.jobs.get(jobs["gpt2-ft"].id)
        time.sleep(1)
