"""`size` and `read_prefix` on both stores (moto over HTTP, a directory), the URI forms of them, and
the callers that must size a file without reading it: the planner and the attempt's preflight."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support import job_body

from trainyard.platform import storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.planning import DATASET_SAMPLE_BYTES, Planner
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import MB, ObjectNotFound, ObjectStore, open_store
from trainyard.settings import get_settings


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    return open_store(request.getfixturevalue("s3_bucket"))


def test_size_and_read_prefix(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MB
    store.put_bytes("d/blob.bin", data)
    store.put_bytes("d/empty.bin", b"")
    assert store.size("d/blob.bin") == len(data)
    assert store.size("d/empty.bin") == 0
    assert store.read_prefix("d/blob.bin", 1000) == data[:1000]
    assert store.read_prefix("d/blob.bin", 10 * MB) == data, "a shorter object is read whole"
    assert store.read_prefix("d/blob.bin", 0) == b""
    assert store.read_prefix("d/empty.bin", 100) == b""
    for key in ("d/missing.bin", "d"):  # nothing there; a prefix is not an object
        with pytest.raises(ObjectNotFound):
            store.size(key)
        with pytest.raises(ObjectNotFound):
            store.read_prefix(key, 10)
        with pytest.raises(ObjectNotFound):
            store.read_prefix(key, 0)


def test_uri_size_and_read_uri_prefix(s3_bucket: str, tmp_path: Path) -> None:
    uri = open_store(s3_bucket).put_bytes("x.jsonl", b"0123456789")
    assert storage.uri_size(uri) == 10
    assert storage.read_uri_prefix(uri, 4) == b"0123"
    local = tmp_path / "x.jsonl"
    local.write_bytes(b"abcdef")
    for form in (str(local), f"file://{local}"):
        assert storage.uri_size(form) == 6
        assert storage.read_uri_prefix(form, 3) == b"abc"
    with pytest.raises(ObjectNotFound):
        storage.uri_size(str(tmp_path))
    with pytest.raises(ObjectNotFound):
        storage.read_uri_prefix(str(tmp_path / "absent"), 3)
    with pytest.raises(storage.InvalidURI):
        storage.uri_size(s3_bucket.split("/store")[0])  # a bucket without a key


def test_a_fifo_is_not_an_object_and_reading_it_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ObjectNotFound):
        storage.uri_size(str(fifo))
    with pytest.raises(ObjectNotFound):
        storage.read_uri_prefix(str(fifo), 10)


def _forbid_whole_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> bytes:
        raise AssertionError("a whole file was read")

    monkeypatch.setattr(storage, "read_uri", refuse)
    monkeypatch.setattr(storage.S3Store, "get_bytes", refuse)
    monkeypatch.setattr(storage.LocalStore, "get_bytes", refuse)


def _planner() -> Planner:
    return Planner(load_deployment(get_settings(catalog_path=None, pools=None)))


def _spec(training_file: str, **overrides: Any) -> JobSpec:
    return JobSpec(
        **job_body(
            base_model="sshleifer/tiny-gpt2",
            training_file=training_file,
            hyperparameters={"batch_size": 4, "seq_len": 512, "max_steps": 20},
            **overrides,
        )
    )


def test_the_planner_counts_a_small_file_whole_and_samples_a_large_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_bucket: str
) -> None:
    line = b'{"text": "' + b"y" * 87 + b'"}\n'  # 100 bytes
    small = tmp_path / "small.jsonl"
    small.write_bytes(line * 1000)
    large = open_store(s3_bucket).put_bytes("large.jsonl", line * (DATASET_SAMPLE_BYTES // 100 + 5000))
    _forbid_whole_reads(monkeypatch)
    planner = _planner()

    tokens, source = planner._tokens(_spec(str(small)))
    assert (tokens, source) == (round(1000 * 87 / 4.0), "counted"), "small files: exactly as before"

    tokens, source = planner._tokens(_spec(large))
    size = storage.uri_size(large)
    assert source == f"sampled 8.0 MB of {size / MB:.1f} MB, extrapolated"
    sample_lines = DATASET_SAMPLE_BYTES // 100  # the 8 MB sample ends inside a line: it is dropped
    assert tokens == round(round(sample_lines * 87 / 4.0) * size / (sample_lines * 100))
    assert tokens == pytest.approx(size / 100 * 87 / 4.0, abs=2), "a uniform file extrapolates exactly"

    assert planner._tokens(_spec(large, dataset_tokens=1234)) == (1234, "dataset_tokens")
    assert planner._tokens(_spec(str(tmp_path / "absent.jsonl")))[1] == "max_steps"


def test_a_line_longer_than_the_sample_gives_no_count(tmp_path: Path) -> None:
    path = tmp_path / "one-line.jsonl"
    path.write_bytes(b'{"text": "' + b"z" * (DATASET_SAMPLE_BYTES + 10) + b'"}\n')
    assert _planner()._tokens(_spec(str(path))) == (0, "max_steps")


def test_preflight_sizes_the_files_without_reading_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from trainyard.workers.preflight import UserError, check_readable

    big = tmp_path / "big.jsonl"
    with big.open("wb") as fh:
        fh.truncate(4 * 1024 * MB)  # sparse: 4 GB on paper
    _forbid_whole_reads(monkeypatch)
    check_readable(_spec(str(big)))
    with pytest.raises(UserError, match="validation_file"):
        check_readable(_spec(str(big), validation_file=str(tmp_path / "absent.jsonl")))
