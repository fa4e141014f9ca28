"""The embedded stack's admin key is written private from the first byte and reused on restart."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trainyard.cli.local import LocalStack
from trainyard.settings import get_settings


def test_the_admin_key_file_is_0600_from_the_start_and_reused(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = LocalStack(tmp_path)
    stack.settings = get_settings(database_url=db_url)
    modes: list[int] = []
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        modes.append(stat.S_IMODE(os.stat(src).st_mode))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    old_umask = os.umask(0)
    try:
        key = stack._bootstrap_key()
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE(stack.credentials_file.stat().st_mode) == 0o600
    saved = json.loads(stack.credentials_file.read_text())
    assert saved == {"base_url": stack.base_url, "api_key": key}
    assert stack._bootstrap_key() == key, "a restart reuses the saved key"
