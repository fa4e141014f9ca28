"""The object store against a real moto server over HTTP and against a local directory.
unit/test_storage_local.py covers keys, layout and the local store on its own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainyard.platform.storage import (
    MB,
    InvalidKey,
    InvalidURI,
    ObjectNotFound,
    ObjectStore,
    S3Options,
    S3Store,
    StorageError,
    checkpoints_prefix,
    download_uri_dir,
    open_store,
    read_uri,
)
from trainyard.platform.storage.transfers import MAX_PART_SIZE

# Small parts so that a 12 MB file goes up in three parts.
SMALL_PARTS = S3Options(multipart_threshold=5 * MB, multipart_chunksize=5 * MB)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    return open_store(request.getfixturevalue("s3_bucket"), options=SMALL_PARTS)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ round trips


def test_bytes_round_trip(store: ObjectStore) -> None:
    uri = store.put_bytes("jobs/j1/cost_report.json", b'{"usd": 1.5}', content_type="application/json")
    assert uri == store.uri_for("jobs/j1/cost_report.json")
    assert uri.startswith(store.root_uri + "/")
    assert store.get_bytes("jobs/j1/cost_report.json") == b'{"usd": 1.5}'
    assert store.exists("jobs/j1/cost_report.json")
    assert not store.exists("jobs/j1/other.json")
    assert not store.exists("jobs/j1")  # a prefix is not an object

    store.put_bytes("jobs/j1/cost_report.json", b"replaced")
    assert store.get_bytes("jobs/j1/cost_report.json") == b"replaced"
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_missing_object_raises_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope/missing.bin")
    with pytest.raises(ObjectNotFound):
        store.get_file("nope/missing.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(ObjectNotFound):
        store.download_dir("nope", tmp_path / "dir")
    with pytest.raises(ObjectNotFound):
        read_uri(store.uri_for("nope/missing.bin"))


def test_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(100_000))
    uri = store.put_file("jobs/j1/final/model.safetensors", source)
    assert uri == store.uri_for("jobs/j1/final/model.safetensors")
    target = tmp_path / "new" / "nested" / "out.bin"
    store.get_file("jobs/j1/final/model.safetensors", target)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.put_file("x", tmp_path / "no-such-file")


def test_dir_round_trip_and_list(store: ObjectStore, tmp_path: Path) -> None:
    local = tmp_path / "model"
    (local / "sub" / "deeper").mkdir(parents=True)
    (local / "config.json").write_text('{"n_layer": 2}')
    (local / "model.safetensors").write_bytes(os.urandom(50_000))
    (local / "sub" / "empty.txt").write_bytes(b"")
    (local / "sub" / "deeper" / "x.bin").write_bytes(b"x")

    uri = store.upload_dir("jobs/j1/final", local)
    assert uri == store.uri_for("jobs/j1/final")
    expected = ["config.json", "model.safetensors", "sub/deeper/x.bin", "sub/empty.txt"]
    assert store.list("jobs/j1/final") == [f"jobs/j1/final/{name}" for name in expected]
    assert store.list("jobs/j1/final/") == store.list("jobs/j1/final")
    assert store.list() == store.list("jobs")

    out = store.download_dir("jobs/j1/final", tmp_path / "copy")
    assert out == tmp_path / "copy"
    assert _tree(out) == _tree(local)

    assert _tree(download_uri_dir(uri, tmp_path / "by_uri")) == _tree(local)


def test_list_and_delete_use_directory_semantics(store: ObjectStore) -> None:
    for key in ("jobs/j1/a", "jobs/j1/ckpt/b", "jobs/j10/c", "jobs/j1x", "datasets/d"):
        store.put_bytes(key, b"1")
    assert store.list("jobs/j1") == ["jobs/j1/a", "jobs/j1/ckpt/b"]
    assert store.list() == ["datasets/d", "jobs/j1/a", "jobs/j1/ckpt/b", "jobs/j10/c", "jobs/j1x"]
    assert store.list("nothing") == []

    assert store.delete_prefix("jobs/j1") == 2
    assert store.list() == ["datasets/d", "jobs/j10/c", "jobs/j1x"]
    assert store.delete_prefix("jobs/j1") == 0
    with pytest.raises(InvalidKey):
        store.delete_prefix("")
    with pytest.raises(InvalidKey):
        store.delete_prefix("/")


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a\\b", "a\x00", ""])
def test_store_methods_validate_keys(store: ObjectStore, tmp_path: Path, bad: str) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    calls = [
        lambda: store.put_bytes(bad, b"x"),
        lambda: store.get_bytes(bad),
        lambda: store.put_file(bad, source),
        lambda: store.get_file(bad, tmp_path / "out"),
        lambda: store.exists(bad),
        lambda: store.uri_for(bad),
    ]
    if bad:  # "" is the root for prefixes
        calls += [
            lambda: store.list(bad),
            lambda: store.upload_dir(bad, tmp_path),
            lambda: store.download_dir(bad, tmp_path / "d"),
            lambda: store.delete_prefix(bad),
            lambda: store.ray_storage(bad),
        ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------- S3 only


def test_s3_multipart_upload_of_a_large_file(s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    store = open_store(s3_bucket, options=SMALL_PARTS)
    assert isinstance(store, S3Store)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MB))
    store.put_file("jobs/j1/checkpoints/big.bin", source)

    head = s3_client.head_object(Bucket=store.bucket, Key=store.prefix + "/jobs/j1/checkpoints/big.bin")
    # A multipart object's ETag ends in "-<parts>": 12 MB in 5 MB parts is three.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == 12 * MB

    store.get_file("jobs/j1/checkpoints/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()

    data = os.urandom(6 * MB)  # above the threshold: put_bytes goes through the transfer manager
    store.put_bytes("blob", data, content_type="application/octet-stream")
    assert store.get_bytes("blob") == data


def test_s3_a_large_object_moves_in_one_round_of_parts(
    s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    # Four transfers at a time: 24 MB goes up in four 6 MB parts, not five of the 5 MB minimum.
    store = open_store(s3_bucket, options=S3Options(5 * MB, 5 * MB, max_concurrency=4))
    assert isinstance(store, S3Store)
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(24 * MB))
    store.put_file("jobs/j1/checkpoints/model.bin", source)
    head = s3_client.head_object(Bucket=store.bucket, Key=store.prefix + "/jobs/j1/checkpoints/model.bin")
    assert head["ETag"].strip('"').endswith("-4")
    store.get_file("jobs/j1/checkpoints/model.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_s3_part_sizes_follow_the_object_within_bounds() -> None:
    options = S3Options()
    assert options.part_size(None) == options.multipart_chunksize
    assert options.part_size(50 * MB) == 8 * MB  # never under the configured size
    assert options.part_size(200 * MB) == 20 * MB  # ten parts, one round of ten
    assert options.part_size(201 * MB) == 21 * MB  # whole MiB
    assert options.part_size(100_000 * MB) == MAX_PART_SIZE  # a retried part stays cheap


def test_s3_download_dir_takes_sizes_from_the_listing(s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_bucket, options=SMALL_PARTS)
    assert isinstance(store, S3Store)
    local = tmp_path / "final"
    (local / "sub").mkdir(parents=True)
    files = {"config.json": b"{}", "sub/weights.bin": os.urandom(11 * MB), "empty": b""}
    for name, data in files.items():
        (local / name).write_bytes(data)
    store.upload_dir("jobs/j1/final", local)
    heads: list[str] = []
    store.client.meta.events.register("before-call.s3.HeadObject", lambda **kw: heads.append("head"))
    out = store.download_dir("jobs/j1/final", tmp_path / "copy")
    assert {name: (out / name).read_bytes() for name in files} == files
    assert heads == []


def test_s3_client_is_lazy_and_configured(s3_env: dict[str, str]) -> None:
    store = open_store("s3://not-created-yet/prefix")
    assert isinstance(store, S3Store)
    assert store._s3 is None  # opening a store makes no client
    assert store.client.meta.endpoint_url == s3_env["AWS_ENDPOINT_URL_S3"]
    assert store.client.meta.config.retries == {"total_max_attempts": 10, "mode": "standard"}


def test_s3_honours_the_standard_endpoint_variables(
    s3_bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(s3_bucket).put_bytes("k", b"v")

    # The global variable alone is enough ...
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert open_store(s3_bucket).get_bytes("k") == b"v"

    # ... and the S3-specific one wins over it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env["AWS_ENDPOINT_URL_S3"])
    assert open_store(s3_bucket).get_bytes("k") == b"v"


def test_s3_errors_become_storage_errors(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError) as info:
        open_store("s3://no-such-bucket-here/p").put_bytes("k", b"v")
    assert not isinstance(info.value, ObjectNotFound)

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StorageError):
        open_store("s3://b/p", options=S3Options(max_attempts=1)).get_bytes("k")


def test_s3_list_ignores_directory_markers(s3_bucket: str) -> None:
    store = open_store(s3_bucket)
    store.put_bytes("jobs/j1/a", b"1")
    path, fs = store.ray_storage("jobs/j1")
    fs.create_dir(f"{path}/empty_dir")  # pyarrow writes a "jobs/j1/empty_dir/" marker object
    assert store.list("jobs/j1") == ["jobs/j1/a"]
    assert store.delete_prefix("jobs/j1") == 1
    assert store.list() == []


def test_s3_download_refuses_keys_that_escape(s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    store = open_store(s3_bucket)
    assert isinstance(store, S3Store)
    s3_client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/model/../../evil", Body=b"x")
    with pytest.raises(InvalidKey):
        store.download_dir("model", tmp_path / "out")
    assert not (tmp_path / "evil").exists()


# ------------------------------------------------------------------------------------- ray storage


def test_ray_storage_filesystem_writes_objects_the_store_sees(store: ObjectStore) -> None:
    path, fs = store.ray_storage(checkpoints_prefix("j1"))
    fs.create_dir(f"{path}/checkpoint_000000")
    with fs.open_output_stream(f"{path}/checkpoint_000000/state.pt") as out:
        out.write(b"weights")
    assert store.get_bytes("jobs/j1/checkpoints/checkpoint_000000/state.pt") == b"weights"
    assert store.list("jobs/j1/checkpoints") == ["jobs/j1/checkpoints/checkpoint_000000/state.pt"]

    store.put_bytes("jobs/j1/checkpoints/from_store.txt", b"hello")
    with fs.open_input_stream(f"{path}/from_store.txt") as src:
        assert src.read() == b"hello"


def test_ray_train_persists_a_checkpoint_into_the_store(store: ObjectStore, tmp_path: Path) -> None:
    # Ray Train's own storage layer, without a Ray cluster: it validates the storage path with a
    # marker file and copies the checkpoint directory through the filesystem we hand it. The module
    # is internal to Ray: if an upgrade moves it, this import fails and says so.
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution import storage as execution_storage

    path, fs = store.ray_storage(checkpoints_prefix("j1"))
    context = execution_storage.StorageContext(path, "run", storage_filesystem=fs)
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "model.pt").write_bytes(b"weights")
    context.persist_current_checkpoint(Checkpoint.from_directory(str(local)), "checkpoint_000001")
    assert store.get_bytes("jobs/j1/checkpoints/run/checkpoint_000001/model.pt") == b"weights"


def test_s3_ray_filesystem_works_in_another_process_without_aws_env(s3_bucket: str) -> None:
    # Ray ships the filesystem to worker processes; it must carry endpoint, region and keys itself.
    store = open_store(s3_bucket)
    store.put_bytes("jobs/j1/checkpoints/x", b"payload")
    path, fs = store.ray_storage("jobs/j1/checkpoints")
    import pyarrow.fs

    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    assert path == s3_bucket.removeprefix("s3://") + "/jobs/j1/checkpoints"
    code = (
        # Importing pyarrow.fs registers its S3 finalizer; unpickling alone imports only pyarrow._s3fs
        # and the process would crash at exit.
        "import pickle, sys, pyarrow.fs\n"
        "fs = pickle.loads(sys.stdin.buffer.read())\n"
        f"sys.stdout.buffer.write(fs.open_input_stream({path + '/x'!r}).read())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(fs),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"payload"


# ------------------------------------------------------------------------------------------- file://


def test_read_uri(s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_bucket)
    uri = store.put_bytes("datasets/train.jsonl", b'{"text": "hi"}\n')
    assert read_uri(uri) == b'{"text": "hi"}\n'

    local = tmp_path / "config.json"
    local.write_text("{}")
    assert read_uri(f"file://{local}") == b"{}"
    assert read_uri(str(local)) == b"{}"
    with pytest.raises(ObjectNotFound):
        read_uri(str(tmp_path / "absent.json"))
    with pytest.raises(ObjectNotFound):
        read_uri(str(tmp_path))  # a directory is not an object
    with pytest.raises(InvalidURI):
        read_uri(s3_bucket.split("/store")[0])  # a bucket without a key
