"""The object store without an S3 server: key and layout rules, the local directory store and its
atomic writes, file:// URIs. integration/test_storage.py runs the store contract on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainyard.platform.storage import (
    InvalidKey,
    InvalidURI,
    LocalStore,
    ObjectNotFound,
    StorageError,
    checkpoints_prefix,
    cost_report_key,
    dataset_key,
    final_model_prefix,
    job_prefix,
    open_store,
    safe_key,
)
from trainyard.platform.storage import local as local_store

# ------------------------------------------------------------------------------------------- keys


BAD_KEYS = [
    ("",),
    ("..",),
    (".",),
    ("a/../b",),
    ("a/./b",),
    ("../escape",),
    ("/etc/passwd",),
    ("a//b",),
    ("a/",),
    ("a\\b",),
    ("..\\x",),
    ("a\x00b",),
    ("a\nb",),
    ("a\rb",),
    ("a\x7fb",),
    ("a\x85b",),
    ("x" * 1025,),
    ("jobs", ""),
    ("jobs", ".."),
    ("jobs", "/abs"),
    ("jobs", "j1/../../x"),
    ("a/.trainyard-tmp-x",),
]


@pytest.mark.parametrize("parts", BAD_KEYS, ids=repr)
def test_safe_key_rejects(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidKey):
        safe_key(*parts)


def test_safe_key_rejects_no_parts_and_non_strings() -> None:
    with pytest.raises(InvalidKey):
        safe_key()
    with pytest.raises(InvalidKey):
        safe_key("a", 3)  # type: ignore[arg-type]


def test_invalid_key_is_a_value_error_and_a_storage_error() -> None:
    with pytest.raises(ValueError):
        safe_key("..")
    assert issubclass(InvalidKey, StorageError)
    assert issubclass(ObjectNotFound, StorageError)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("jobs", "j1", "checkpoints"), "jobs/j1/checkpoints"),
        (("jobs/j1", "final/config.json"), "jobs/j1/final/config.json"),
        (("données", "a b.txt"), "données/a b.txt"),
        (("..a", "b..", ".hidden"), "..a/b../.hidden"),
        (("x" * 1024,), "x" * 1024),
    ],
)
def test_safe_key_accepts(parts: tuple[str, ...], expected: str) -> None:
    assert safe_key(*parts) == expected


def test_layout_helpers() -> None:
    assert job_prefix("job_1") == "jobs/job_1"
    assert checkpoints_prefix("job_1") == "jobs/job_1/checkpoints"
    assert final_model_prefix("job_1", 1) == "jobs/job_1/attempts/001/final"
    assert checkpoints_prefix("job_1", 3) == "jobs/job_1/attempts/003/checkpoints"
    assert cost_report_key("job_1") == "jobs/job_1/cost_report.json"
    assert dataset_key("team_a", "train.jsonl") == "datasets/team_a/train.jsonl"
    for bad in ("a/b", "..", "", "x\n"):
        with pytest.raises(InvalidKey):
            job_prefix(bad)


# ---------------------------------------------------------------------------------------- imports


def test_importing_storage_imports_neither_boto3_nor_pyarrow() -> None:
    code = (
        "import sys, trainyard.platform.storage\n"
        "sys.exit(('boto3' in sys.modules) + ('pyarrow' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ------------------------------------------------------------------------------------- ray storage


def test_local_ray_storage_is_a_local_path(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    path, fs = store.ray_storage("jobs/j1/checkpoints")
    assert path == str(tmp_path / "store" / "jobs" / "j1" / "checkpoints")
    assert type(fs).__name__ == "LocalFileSystem"
    assert Path(path).is_dir()


# ------------------------------------------------------------------------------------------- file://


def test_file_uris_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for uri in (f"file://{tmp_path}/s", str(tmp_path / "s"), f"file://localhost{tmp_path}/s"):
        store = open_store(uri)
        assert isinstance(store, LocalStore)
        assert store.root_uri == f"file://{tmp_path}/s"
    monkeypatch.chdir(tmp_path)
    # The embedded default is file://./.trainyard/store, relative to the working directory.
    relative = open_store("file://./.trainyard/store")
    assert relative.root_uri == f"file://{tmp_path}/.trainyard/store"
    assert open_store("rel/dir").root_uri == f"file://{tmp_path}/rel/dir"

    for bad in (
        "gs://bucket/x",
        "http://example.com/x",
        "file://otherhost/x",
        "s3://",
        "s3://b/a/../x",
        "s3://b//x",
    ):
        with pytest.raises(InvalidURI):
            open_store(bad)


def test_local_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("obj", b"old")
    seen: list[bool] = []
    real_replace = os.replace

    def checking_replace(src: str, dst: str | os.PathLike[str]) -> None:
        # Right before the rename, the full new content exists only under the temporary name.
        seen.append(Path(dst).read_bytes() == b"old" and Path(src).read_bytes() == b"new" * 1000)
        real_replace(src, dst)

    monkeypatch.setattr(local_store.os, "replace", checking_replace)
    store.put_bytes("obj", b"new" * 1000)
    assert seen == [True]
    monkeypatch.setattr(local_store.os, "replace", real_replace)

    # A write that fails half way leaves the old object and no temporary file behind.
    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(local_store.os, "fsync", failing_fsync)
    with pytest.raises(StorageError):
        store.put_bytes("obj", b"partial")
    with pytest.raises(StorageError):
        store.get_file("obj", tmp_path / "download.bin")
    monkeypatch.undo()
    assert store.get_bytes("obj") == b"new" * 1000
    assert not (tmp_path / "download.bin").exists()
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["obj"]
    assert list(tmp_path.glob(".trainyard-tmp-*")) == []

    # What a killed process leaves (a temporary file) is never listed as an object.
    (tmp_path / "store" / ".trainyard-tmp-abc123").write_bytes(b"half")
    assert store.list() == ["obj"]
    assert store.delete_prefix("obj") == 0  # "obj" is an object, not a prefix
    assert store.exists("obj")
