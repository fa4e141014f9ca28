"""Where a running `trainyard up` says what it serves, so the commands that talk to the database
directly (`trainyard admin`, `trainyard migrate`) reach the embedded Postgres without being told.

`stack.json` sits beside the SDK's credentials file (`$TRAINYARD_CREDENTIALS`, else
`~/.config/trainyard/`): the API URL, the database URL, the store and the stack's process id.
`trainyard up` writes it once it is up and removes it when it stops; a file whose process is
gone is ignored. An explicit `TRAINYARD_DATABASE_URL` always wins over it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

from trainyard.sdk import credentials_path
from trainyard.sdk._credentials import write_private

FILE_NAME = "stack.json"


@dataclass(frozen=True)
class StackInfo:
    base_url: str
    database_url: str
    storage_uri: str
    data_dir: str
    pid: int


def stack_file() -> Path:
    return credentials_path().parent / FILE_NAME


def write(info: StackInfo) -> Path:
    """Record the running stack (owner-only: it names the database and its socket)."""
    target = stack_file()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(target, (json.dumps(asdict(info), indent=2) + "\n").encode("utf-8"))
    return target


def read() -> StackInfo | None:
    """The stack that is running now, or None (no file, an unreadable one, or its process gone)."""
    try:
        data = json.loads(stack_file().read_text(encoding="utf-8"))
        info = StackInfo(**{k: data[k] for k in StackInfo.__dataclass_fields__})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return info if _alive(info.pid) else None


def remove(pid: int) -> None:
    """Remove the file if it is this process's (a second stack elsewhere may have replaced it)."""
    target = stack_file()
    try:
        if json.loads(target.read_text(encoding="utf-8")).get("pid") == pid:
            target.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, if not ours to signal
        return True
    return True


def display_url(url: str) -> str:
    """A database URL as psql and other tools take it: plain `postgresql://`, password hidden."""
    from sqlalchemy.engine import URL, make_url  # only here: the user commands load no server packages

    u = make_url(url)
    u = URL.create("postgresql", u.username, u.password or None, u.host, u.port, u.database, u.query)
    text = u.render_as_string(hide_password=True)
    # The embedded server listens on a socket directory; show its path as a path.
    base, sep, query = text.partition("?")
    return base + sep + unquote(query)
