"""Hub look-ups outside the request: each runs in a daemon thread of its own, bounded in time and
in number, and a request waits for one at most a short while.

A slow or unreachable hub costs a request at most `wait_s` (the hub client's own retries and
timeouts run on in the thread), and requests that join a look-up under way wait only what is left
of the first one's wait; a look-up that fails is not tried again for `retry_after_s`, so later
requests answer at once; one id is looked up by one thread however many requests ask.
With `HF_HUB_OFFLINE` set, only the local hub cache is read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("trainyard.registry")

FetchConfig = Callable[[str, float], Mapping[str, Any] | None]
OnFound = Callable[[Mapping[str, Any]], None]

HUB_TIMEOUT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 300.0
MAX_IN_FLIGHT = 4
MAX_REMEMBERED_FAILURES = 10_000


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_config(model_id: str, timeout_s: float) -> Mapping[str, Any] | None:
    """config.json of a hub id (`org/name[@revision]`), or None. Runs in a look-up thread."""
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = model_id.partition("@")
    local = hf_hub_download(
        repo_id,
        "config.json",
        revision=revision or None,
        local_files_only=hub_offline(),
        etag_timeout=timeout_s,
    )
    value = json.loads(Path(local).read_bytes())
    return value if isinstance(value, dict) else None


class _Lookup:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.config: Mapping[str, Any] | None = None
        self.started = time.monotonic()


class HubLookups:
    """Look-ups of config.json on the hub, shared by every request of a process."""

    def __init__(
        self,
        fetch: FetchConfig = fetch_config,
        *,
        timeout_s: float = HUB_TIMEOUT_SECONDS,
        retry_after_s: float = RETRY_AFTER_SECONDS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._running: dict[str, _Lookup] = {}
        self._failed_at: dict[str, float] = {}

    def lookup(self, model_id: str, on_found: OnFound, *, wait_s: float = 0.0) -> Mapping[str, Any] | None:
        """Start a look-up of `model_id` (or join the one running) and wait up to `wait_s` for it.
        `on_found` gets the config in the look-up's thread, before any waiter is woken, so what
        it keeps is kept by the time a request answers. None when the hub did not answer in time,
        failed recently, or too many look-ups are running."""
        key = model_id.lower()
        with self._lock:
            running = self._running.get(key)
            if running is None:
                failed = self._failed_at.get(key)
                if failed is not None and time.monotonic() - failed < self.retry_after_s:
                    return None
                if len(self._running) >= self.max_in_flight:
                    return None
                running = self._running[key] = _Lookup()
                args = (key, model_id, running, on_found)
                thread = threading.Thread(target=self._run, args=args, name="trainyard-hub", daemon=True)
                thread.start()
        # A request that joins a look-up waits no longer than the one that started it: a hub that
        # hangs costs one request the wait, not every request until the look-up gives up.
        wait = min(wait_s, running.started + wait_s - time.monotonic())
        if wait > 0:
            running.done.wait(wait)
        return running.config if running.done.is_set() else None

    def _run(self, key: str, model_id: str, lookup: _Lookup, on_found: OnFound) -> None:
        config: Mapping[str, Any] | None = None
        try:
            config = self.fetch(model_id, self.timeout_s)
        except Exception as exc:
            # Not found, gated, offline without a cached copy, or the hub is down: all the same here.
            log.info("hub look-up of %s failed: %s", model_id, type(exc).__name__)
        try:
            if config is not None:
                on_found(config)
        except Exception:
            log.exception("keeping the hub's answer for %s failed", model_id)
        finally:
            with self._lock:
                lookup.config = config
                lookup.done.set()
                self._running.pop(key, None)
                if config is None:
                    if len(self._failed_at) >= MAX_REMEMBERED_FAILURES:
                        self._failed_at.clear()  # forgetting early costs one more look-up each
                    self._failed_at[key] = time.monotonic()
                else:
                    self._failed_at.pop(key, None)
