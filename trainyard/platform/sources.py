"""Where a job may read from: the source fields of a spec and the policy on server-local paths.

Checked once, at submission, on what the caller named; the URIs of uploaded files are the
platform's own and are resolved afterwards, so they may be local (a file:// store).
"""

from __future__ import annotations

from trainyard.platform.errors import InvalidRequest
from trainyard.platform.spec import JobSpec

SOURCE_FIELDS = ("base_model", "training_file", "validation_file")


def is_local_path(value: str) -> bool:
    return value.startswith(("file://", "/", "./", "../", "~"))


def check_sources(spec: JobSpec, *, allow_local_paths: bool) -> None:
    """Refuse server-local paths where the deployment does not allow them."""
    if allow_local_paths:
        return
    for field in SOURCE_FIELDS:
        value = getattr(spec, field, None)
        if isinstance(value, str) and is_local_path(value):
            raise InvalidRequest(
                f"{field} names a path on the server ({value!r}); upload it to object storage "
                "(s3://...) or use a model hub id",
                code="local_paths_disabled",
                param=field,
            )
