"""Where a job may read from: one parser for every source (`parse`), one policy (`policy`).

`SourcePolicy.check_spec` is called by submission (jobs, fine-tuning jobs, estimates) and again
by the attempt before it reads; nothing else decides whether a source may be read.
"""

from __future__ import annotations

from trainyard.platform.sources.parse import (
    SOURCE_FIELDS,
    Source,
    SourceKind,
    SourceRefused,
    is_local_path,
    parse_source,
)
from trainyard.platform.sources.policy import Reader, SourcePolicy

__all__ = [
    "SOURCE_FIELDS",
    "Reader",
    "Source",
    "SourceKind",
    "SourcePolicy",
    "SourceRefused",
    "is_local_path",
    "parse_source",
]
