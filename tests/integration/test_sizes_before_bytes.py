"""Sizes before bytes: submit and estimate size a training file by HEAD/stat and read a bounded
sample of it, so a file far larger than the API's memory answers quickly and costs it no memory.

The API runs as a uvicorn subprocess (its own RSS, read from /proc) against the moto S3 server.
The S3 object is 512 MB, not 2 GB: moto holds a completed multipart upload in memory about four
times over (2 GB took 58 s and 8.5 GB of moto's memory to upload, and each ranged GET of it 1.5 s,
because moto reads the whole object to serve a range). The file:// case is a real sparse 2 GB file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key

import trainyard
from trainyard.platform.planning import DATASET_SAMPLE_BYTES
from trainyard.platform.scheduling.constants import default_constants

MB = 1024 * 1024
# 256 bytes a line (a short text example): a 64 MB part, the 8 MB sample and the file are all
# whole numbers of lines.
LINE = b'{"text": "' + b"x" * 243 + b'"}\n'
PART = 64 * MB
S3_OBJECT_BYTES = 512 * MB
SPARSE_FILE_BYTES = 2048 * MB
MAX_SECONDS = 2.0
MAX_RSS_BYTES = 300 * MB


def _line_tokens() -> float:
    return 243 / default_constants().chars_per_token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS: the next peak is this request's.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture
def api(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Path, s3_env: Any
) -> Iterator[tuple[str, int]]:
    """The API as a process of its own: its base URL and pid."""
    port = _free_port()
    root = str(Path(trainyard.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "TRAINYARD_DATABASE_URL": db_url,
        "TRAINYARD_STORAGE_URI": f"file://{tmp_path}/store",
        "TRAINYARD_DATA_DIR": str(tmp_path),
        "TRAINYARD_ALLOW_LOCAL_PATHS": "true",
        "TRAINYARD_LOCAL_ROOTS": str(tmp_path),
        "TRAINYARD_MIGRATE_ON_START": "false",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "trainyard.api.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _upload_repeated(s3_client: Any, bucket: str, key: str, size: int) -> None:
    """`size` bytes of LINE at `key`: one 64 MB source object copied part by part on the server, so
    the test sends 64 MB, not `size`."""
    source = f"{key}.part"
    s3_client.put_object(Bucket=bucket, Key=source, Body=LINE * (PART // len(LINE)))
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for number in range(1, size // PART + 1):
        copied = s3_client.upload_part_copy(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": source},
        )
        parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    s3_client.delete_object(Bucket=bucket, Key=source)


def _timed_post(client: httpx.Client, pid: int, path: str, body: dict[str, Any]) -> tuple[Any, float, int]:
    """POST and return (response, seconds, the API's peak RSS during the request)."""
    _reset_peak(pid)
    start = time.perf_counter()
    response = client.post(path, json=body)
    seconds = time.perf_counter() - start
    return response, seconds, _proc_status(pid)["VmHWM"]


def _check(figures: dict[str, Any], seconds: float, peak: int, baseline: int) -> None:
    figures.update(seconds=round(seconds, 3), peak_rss_mb=peak // MB, growth_mb=(peak - baseline) // MB)
    print(f"\nsizes before bytes: {figures}")
    assert seconds < MAX_SECONDS, figures
    assert peak < MAX_RSS_BYTES, figures


def _expected_tokens(size: int) -> int:
    """The sample's lines counted, then scaled by the size: the planner's arithmetic."""
    sample_lines = DATASET_SAMPLE_BYTES // len(LINE)
    return round(round(sample_lines * _line_tokens()) * size / (sample_lines * len(LINE)))


def test_a_large_s3_training_file_is_sampled_not_read(
    api: tuple[str, int], sessions: sessionmaker[Session], s3_client: Any, s3_bucket: str
) -> None:
    base, pid = api
    bucket = s3_bucket.removeprefix("s3://").split("/")[0]
    _upload_repeated(s3_client, bucket, "data/big.jsonl", S3_OBJECT_BYTES)
    s3_client.put_object(Bucket=bucket, Key="data/small.jsonl", Body=LINE * 10)
    member = make_key(sessions)
    admin = headers(make_key(sessions, "ops", role="admin"))
    grant = httpx.put(f"{base}/v1/teams/research/grants", json={"uri": f"s3://{bucket}/data"}, headers=admin)
    assert grant.status_code == 200, grant.text
    body = job_body(base_model="sshleifer/tiny-gpt2", hyperparameters={"batch_size": 4, "seq_len": 512})
    try:
        with httpx.Client(base_url=base, headers=headers(member), timeout=60) as client:
            # Warm up: the first request imports boto3 and makes the bucket's client.
            small = client.post(
                "/v1/estimates", json={**body, "training_file": f"s3://{bucket}/data/small.jsonl"}
            )
            assert small.status_code == 200, small.text
            assert small.json()["dataset_tokens"] == round(10 * _line_tokens())
            assert small.json()["chosen"]["dataset_tokens_source"] == "counted"
            baseline = _proc_status(pid)["VmRSS"]
            big = {**body, "training_file": f"s3://{bucket}/data/big.jsonl"}

            created, seconds, peak = _timed_post(client, pid, "/v1/jobs", big)
            _check(
                {"route": "/v1/jobs", "bytes": S3_OBJECT_BYTES, "baseline_rss_mb": baseline // MB},
                seconds,
                peak,
                baseline,
            )
            assert created.status_code == 201, created.text
            plan = created.json()["plan"]
            assert plan["dataset_tokens_source"] == "sampled 8.0 MB of 512.0 MB, extrapolated"
            assert plan["tokens"] == _expected_tokens(S3_OBJECT_BYTES)

            estimated, seconds, peak = _timed_post(client, pid, "/v1/estimates", big)
            _check({"route": "/v1/estimates", "bytes": S3_OBJECT_BYTES}, seconds, peak, baseline)
            assert estimated.status_code == 200, estimated.text
            assert estimated.json()["dataset_tokens"] == _expected_tokens(S3_OBJECT_BYTES)
    finally:
        s3_client.delete_object(Bucket=bucket, Key="data/big.jsonl")


def test_a_sparse_2gb_local_training_file_is_sampled_not_read(
    api: tuple[str, int], sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    base, pid = api
    path = tmp_path / "big.jsonl"
    # Real lines where the sample reads, then a hole: 2 GB on paper, 8 MB on disk.
    with path.open("wb") as fh:
        fh.write(LINE * (DATASET_SAMPLE_BYTES // len(LINE)))
        fh.truncate(SPARSE_FILE_BYTES)
    body = job_body(
        base_model="sshleifer/tiny-gpt2",
        training_file=f"file://{path}",
        hyperparameters={"batch_size": 4, "seq_len": 512},
    )
    with httpx.Client(base_url=base, headers=headers(make_key(sessions)), timeout=60) as client:
        warm = client.post("/v1/estimates", json={**body, "dataset_tokens": 1000})
        assert warm.status_code == 200, warm.text
        baseline = _proc_status(pid)["VmRSS"]
        created, seconds, peak = _timed_post(client, pid, "/v1/jobs", body)
        _check(
            {"route": "/v1/jobs", "bytes": SPARSE_FILE_BYTES, "baseline_rss_mb": baseline // MB},
            seconds,
            peak,
            baseline,
        )
    assert created.status_code == 201, created.text
    plan = created.json()["plan"]
    assert plan["dataset_tokens_source"] == "sampled 8.0 MB of 2.0 GB, extrapolated"
    # The hole holds no lines, but the estimate cannot know that without reading it: it scales
    # the sample's density to the whole size, which is the point.
    assert plan["tokens"] == _expected_tokens(SPARSE_FILE_BYTES)
