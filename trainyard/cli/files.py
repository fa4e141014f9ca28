"""`trainyard files upload|list|get|delete`: JSONL training files kept by the API (`/v1/files`).
A file's id works as a job's `training_file` or `validation_file`."""

from __future__ import annotations

import itertools
from pathlib import Path

import typer
from rich.markup import escape

from trainyard.cli import rendering as show
from trainyard.cli import tables
from trainyard.cli.client import JSON_OPT, api, echo_json, fail
from trainyard.sdk import FileObject


def _line(f: FileObject) -> str:
    lines = f" ({f.line_count:,} records)" if f.line_count is not None else ""
    return f"{escape(f.id)}  {escape(f.filename or '')}  {f.bytes:,} bytes{lines}"


def upload(
    path: Path = typer.Argument(..., help="A JSONL file: text, prompt/completion or chat messages."),
    as_json: bool = JSON_OPT,
) -> None:
    """Upload a JSONL file; every line is checked. Prints the id to name in a job."""
    if not path.is_file():
        raise fail(f"no such file: {path}")
    with api() as client:
        f = client.files.upload(path)
    if as_json:
        echo_json(f.to_dict())
    else:
        show.out().print(f"uploaded {_line(f)}")


def list_files(
    limit: int = typer.Option(100, "--limit", min=1, help="Show at most this many files (newest first)."),
    as_json: bool = JSON_OPT,
) -> None:
    """List the team's uploaded files, newest first."""
    with api() as client:
        files = list(itertools.islice(client.files.list(limit=min(limit, 1000)), limit))
    if as_json:
        echo_json([f.to_dict() for f in files])
    elif not files:
        show.err().print("no files")
    else:
        show.out().print(tables.files_table(files))


def get(
    file_id: str = typer.Argument(..., help="File id (file-...)."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the file's content here."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show one file; with --output, download its content too."""
    with api() as client:
        f = client.files.retrieve(file_id)
        if output is not None:
            client.files.download(file_id, output)
    if as_json:
        echo_json(f.to_dict())
    else:
        show.out().print(_line(f) + (f", saved to {escape(str(output))}" if output is not None else ""))


def delete(file_id: str = typer.Argument(..., help="File id (file-...)."), as_json: bool = JSON_OPT) -> None:
    """Delete a file (refused while an unfinished job still reads it)."""
    with api() as client:
        gone = client.files.delete(file_id)
    if as_json:
        echo_json(gone.to_dict())
    else:
        show.out().print(f"deleted {escape(gone.id)}")


def register(app: typer.Typer) -> None:
    files_app = typer.Typer(no_args_is_help=True, help="Upload, list, show and delete training files.")
    files_app.command("upload")(upload)
    files_app.command("list")(list_files)
    files_app.command("get")(get)
    files_app.command("delete")(delete)
    app.add_typer(files_app, name="files")
