"""The quickstart: `trainyard up` in a subprocess on a temp data dir, a job through the SDK,
Ctrl-C, a restart on the same data, and the job is still there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port

from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir
from trainyard.sdk import Trainyard


def _up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_ADDRESS"))}
    env["TRAINYARD_CREDENTIALS"] = str(data_dir / "sdk-credentials.json")
    env["TRAINYARD_LOCAL_ROOTS"] = str(data_dir.parent)  # the test's model and dataset sit beside it
    return subprocess.Popen(
        [sys.executable, "-m", "trainyard.cli", "up", "--data-dir", str(data_dir), "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _client(data_dir: Path, proc: subprocess.Popen[bytes], log: Path) -> Trainyard:
    creds = data_dir / "credentials.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if creds.exists():
            saved = json.loads(creds.read_text())
            client = Trainyard(saved["base_url"], saved["api_key"], max_retries=0)
            try:
                client.health()
                return client
            except Exception:
                pass
        time.sleep(1)
    pytest.fail("trainyard up did not come up:\n" + log.read_text()[-3000:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_runs_a_job_hands_it_back_on_ctrl_c_and_finishes_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "ty"
    log = tmp_path / "up.log"
    port = free_port()
    model = make_tiny_model_dir(tmp_path / "model")
    dataset = make_dataset(tmp_path / "train.jsonl", 64)

    proc = _up(data_dir, port, log)
    try:
        client = _client(data_dir, proc, log)
        job = client.jobs.create(
            name="quickstart",
            base_model=str(model),
            training_file=str(dataset),
            hyperparameters={"max_steps": 60, "batch_size": 4, "seq_len": 32},
            checkpoint={"every_steps": 4, "keep": 1},
        )
        assert job.plan is not None and job.plan.instance_type == "local-cpu"
        deadline = time.monotonic() + 240
        while not list(client.jobs.checkpoints(job.id)):
            assert time.monotonic() < deadline, "no checkpoint before Ctrl-C"
            time.sleep(1)
    finally:
        _stop(proc)  # Ctrl-C: the running attempt checkpoints and hands the job back

    proc = _up(data_dir, port, log)
    try:
        client = _client(data_dir, proc, log)
        assert [j.id for j in client.jobs.list()] == [job.id]
        events = [e.message for e in client.jobs.events(job.id)]
        assert any("handed back" in m for m in events), events
        handed_back_at = max(c.step for c in client.jobs.checkpoints(job.id))
        deadline = time.monotonic() + 240
        while max(c.step for c in client.jobs.checkpoints(job.id)) <= handed_back_at:
            assert time.monotonic() < deadline, "attempt 2 recorded no checkpoint"
            time.sleep(1)
        # Ctrl-C twice: no waiting for the run to checkpoint; the stack is down within 10 s and the
        # job waits in the queue at its last recorded checkpoint.
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        forced = time.monotonic()
        assert proc.wait(timeout=30) == 0
        took = time.monotonic() - forced
        assert took <= 10, f"a second Ctrl-C stopped the stack in {took:.1f}s"
        print(f"second Ctrl-C: stack down in {took:.1f}s")
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = _up(data_dir, port, log)
    try:
        client = _client(data_dir, proc, log)
        done = client.jobs.wait(job.id, poll_interval=1.0, timeout=300)
        assert done.status == "succeeded", done
        assert done.attempts == 3 and done.progress.step == 60
        assert [c.step for c in client.jobs.checkpoints(job.id)] == [60]
    finally:
        _stop(proc)
