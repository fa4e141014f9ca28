"""Attempt output into the store while the attempt runs (see :mod:`trainyard.platform.logs`).

The daemon gives every attempt process a local file for its stdout and stderr and ships what is
new from the daemon's loop, so the log survives an attempt that crashes or is killed. A store
outage only delays shipping: the file keeps everything until a shipment succeeds, and the last
shipment after the attempt ends is retried on later passes until it does.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from trainyard.platform.logs import end_key, segment_key
from trainyard.platform.storage import ObjectStore

SHIP_EVERY_S = 2.0
MAX_SEGMENT_BYTES = 1024 * 1024


class LogShipper:
    def __init__(self, store: ObjectStore, path: Path, job_id: str, attempt: int) -> None:
        self.store = store
        self.path = path
        self.job_id = job_id
        self.attempt = attempt
        self.shipped = 0
        self._last = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def ship(self, *, final: bool = False) -> None:
        """Upload what was written since the last shipment (at most every `SHIP_EVERY_S` unless
        ``final``); raises what the store raises, having shipped nothing twice."""
        now = time.monotonic()
        if not final and now - self._last < SHIP_EVERY_S:
            return
        with self.path.open("rb") as f:
            f.seek(self.shipped)
            while data := f.read(MAX_SEGMENT_BYTES):
                self.store.put_bytes(
                    segment_key(self.job_id, self.attempt, self.shipped), data, content_type="text/plain"
                )
                self.shipped += len(data)
        if final:
            # Readers learn the log is whole; a retried final shipment writes the same.
            self.store.put_bytes(
                end_key(self.job_id, self.attempt),
                json.dumps({"bytes": self.shipped}).encode(),
                "application/json",
            )
        self._last = now

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
