"""Where the client finds its server and key: arguments, then the environment, then the saved
credentials file that `trainyard up` writes."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.sdk._errors import TrainyardError

__all__ = [
    "DEFAULT_BASE_URL",
    "Credentials",
    "credentials_path",
    "load_credentials",
    "resolve",
    "save_credentials",
    "write_private",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
ENV_BASE_URL = "TRAINYARD_BASE_URL"
ENV_API_KEY = "TRAINYARD_API_KEY"
ENV_CREDENTIALS = "TRAINYARD_CREDENTIALS"


@dataclass(frozen=True)
class Credentials:
    base_url: str | None
    # Kept out of repr so that logging a Credentials never prints the secret.
    api_key: str | None = field(default=None, repr=False)


def credentials_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The credentials file: `path`, else $TRAINYARD_CREDENTIALS, else
    $XDG_CONFIG_HOME (default ~/.config)/trainyard/credentials.json."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_CREDENTIALS)
    if env:
        return Path(env).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(config_home).expanduser() / "trainyard" / "credentials.json"


def load_credentials(path: str | os.PathLike[str] | None = None) -> Credentials | None:
    """The saved credentials, or None when there is no file. A file that exists but cannot be
    read as `{"base_url": ..., "api_key": ...}` raises, rather than silently sending no key."""
    target = credentials_path(path)
    try:
        raw = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TrainyardError(f"cannot read credentials file {target}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrainyardError(f"credentials file {target} is not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise TrainyardError(f"credentials file {target} must hold a JSON object")
    base_url, api_key = data.get("base_url"), data.get("api_key")
    if not isinstance(base_url, str | None) or not isinstance(api_key, str | None):
        raise TrainyardError(f"credentials file {target}: base_url and api_key must be strings")
    return Credentials(base_url=base_url or None, api_key=api_key or None)


def save_credentials(base_url: str, api_key: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the credentials file (owner-only permissions, replaced atomically); returns its path."""
    target = credentials_path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = json.dumps({"base_url": base_url, "api_key": api_key}, indent=2) + "\n"
    write_private(target, payload.encode("utf-8"))
    return target


def write_private(target: Path, data: bytes) -> None:
    """Write `data` to `target` readable by its owner only, from the first byte, whatever the umask.

    A temporary file next to the target is created 0600 (O_EXCL, so never someone else's) and
    renamed over it, so a reader never sees half a file and the key is never world-readable, not
    even for a moment, as it would be between a write and a chmod.
    """
    tmp = target.with_name(f".{target.name}-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _same_server(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Pick the base URL and key: arguments, then the environment, then the credentials file.

    A saved key is used only for the server it was saved for, so pointing the client at another
    server (by argument or $TRAINYARD_BASE_URL) never sends it the local stack's key.
    """
    url = base_url or os.environ.get(ENV_BASE_URL) or None
    key = api_key or os.environ.get(ENV_API_KEY) or None
    if url is None or key is None:
        saved = load_credentials()
        if saved is not None:
            saved_url = saved.base_url or DEFAULT_BASE_URL
            if url is None:
                url = saved_url
            if key is None and _same_server(url, saved_url):
                key = saved.api_key
    return (url or DEFAULT_BASE_URL).rstrip("/"), key
