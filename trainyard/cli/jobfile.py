"""Job files: a job spec in YAML or JSON, in the shape of the API body."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
import yaml

from trainyard.cli.client import fail

FILE_ARG = typer.Argument(..., help="A job file, YAML or JSON, in the shape of the API body.")

LOCAL_PATH_FIELDS = ("base_model", "training_file", "validation_file")
# `policy.deadline: +48h` (or `in 48h`) in a job file: that long after the file is read (so a
# committed example never expires). The API takes the same spelling, resolved when it reads the
# request; this is its rule (`platform.spec.RELATIVE_DEADLINE`, which the user commands do not
# import), and a unit test holds the two the same.
RELATIVE = re.compile(r"^(?:\+|in\s+)\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def load_job_file(path: Path) -> dict[str, Any]:
    """Read a job spec from YAML or JSON (the API body's shape). Raises typer.Exit(2) with a
    message that names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(f"{path}: no such file") from None
    except IsADirectoryError:
        raise fail(f"{path} is a directory, not a job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(f"{path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise fail(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise fail(f"{path} must hold a mapping of job fields (name, base_model, ...); it is {kind}")
    return resolve_relative_deadline(absolutize_local_paths(data, path.parent), path)


def resolve_relative_deadline(
    data: dict[str, Any], path: Path, now: datetime | None = None
) -> dict[str, Any]:
    """`policy.deadline: +48h` or `in 48h` (m, h, d or w) becomes the RFC 3339 time that long
    from `now`."""
    policy = data.get("policy")
    deadline = policy.get("deadline") if isinstance(policy, dict) else None
    if not isinstance(policy, dict) or not isinstance(deadline, str):
        return data
    if not deadline.strip().lower().startswith(("+", "in ")):
        return data
    match = RELATIVE.match(deadline.strip())
    if not match:
        raise fail(
            f"{path}: policy.deadline {deadline!r}: write +<number><m|h|d|w> or in <number><m|h|d|w> "
            "(+48h, in 2h) or an RFC 3339 time"
        )
    delta = timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    at = (now or datetime.now(UTC)) + delta
    return {
        **data,
        "policy": {**policy, "deadline": at.replace(microsecond=0).isoformat().replace("+00:00", "Z")},
    }


def absolutize_local_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths to local files absolute. Workers run elsewhere (Ray moves each into
    a working directory of its own), so a relative path means nothing by the time it is read.
    A value is taken as a local path only if it exists, relative to the job file or to the
    current directory; hub ids like `gpt2` and URIs pass through untouched."""
    out = dict(data)
    for field in LOCAL_PATH_FIELDS:
        value = out.get(field)
        if not isinstance(value, str) or "://" in value or value.startswith(("/", "file-")):
            continue
        for root in (base, Path.cwd()):
            candidate = (root / value).resolve()
            if candidate.exists():
                out[field] = str(candidate)
                break
    return out
