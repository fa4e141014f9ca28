"""Private files from the start: the credentials file, the local store's objects and directories,
and the embedded stack's data directory are the owner's only, whatever the umask, at every moment."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainyard.platform.storage import LocalStore
from trainyard.platform.storage import local as local_store
from trainyard.sdk import _credentials
from trainyard.sdk._credentials import load_credentials, save_credentials


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: anything not created private on purpose would come out world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def modes_at_rename(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The mode of each file at the moment it is renamed into place."""
    seen: list[int] = []
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_credentials_are_0600_from_the_first_byte(
    tmp_path: Path, open_umask: None, modes_at_rename: list[int]
) -> None:
    target = tmp_path / "config" / "trainyard" / "credentials.json"
    save_credentials("http://127.0.0.1:8000", "sk-secret", target)
    assert _mode(target) == 0o600
    assert modes_at_rename == [0o600], "the temporary file was private before it was renamed"
    assert _mode(target.parent) == 0o700
    assert load_credentials(target) is not None
    assert load_credentials(target).api_key == "sk-secret"  # type: ignore[union-attr]
    # Replacing it keeps it private; nothing is left beside it.
    save_credentials("http://127.0.0.1:8000", "sk-other", target)
    assert _mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["credentials.json"]


def test_a_failed_credentials_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_credentials.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_credentials("http://x", "sk", tmp_path / "credentials.json")
    assert list(tmp_path.iterdir()) == []


def test_local_store_objects_are_0600_and_its_directories_0700(
    tmp_path: Path, open_umask: None, modes_at_rename: list[int]
) -> None:
    store = LocalStore(tmp_path / "data" / "store")
    store.put_bytes("datasets/team/a.jsonl", b"{}\n")
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 100)
    store.put_file("jobs/j1/final/model.bin", source)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("f")
    store.upload_dir("jobs/j1/upload", tree)
    store.get_file("datasets/team/a.jsonl", tmp_path / "down" / "deep" / "a.jsonl")
    store.ray_storage("jobs/j2/checkpoints")

    assert modes_at_rename and set(modes_at_rename) == {0o600}
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()] + [tmp_path / "down/deep/a.jsonl"]
    assert len(files) == 4 and {_mode(p) for p in files} == {0o600}
    made = [p for p in (tmp_path / "data").rglob("*") if p.is_dir()] + [tmp_path / "data"]
    made += [tmp_path / "down", tmp_path / "down" / "deep"]
    assert {_mode(p) for p in made} == {0o700}, {str(p): oct(_mode(p)) for p in made}


def test_private_dirs_leave_existing_directories_as_they_are(tmp_path: Path, open_umask: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    local_store.private_dirs(shared / "a" / "b")
    assert _mode(shared) == 0o755
    assert _mode(shared / "a") == _mode(shared / "a" / "b") == 0o700
    assert local_store.private_dirs(shared / "a" / "b") == shared / "a" / "b"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("exists", [False, True])
def test_the_embedded_stack_data_directory_is_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    from trainyard.cli.local import LocalStack

    data_dir = tmp_path / "data"
    if exists:
        data_dir.mkdir()
        os.chmod(data_dir, 0o755)

    def stop(self: LocalStack) -> str:
        raise _Stop  # the directory is made before the database starts: stop there

    monkeypatch.setattr(LocalStack, "_database", stop)
    with pytest.raises(_Stop):
        LocalStack(data_dir).start()
    assert _mode(data_dir) == 0o700
