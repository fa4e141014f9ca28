"""The estimator's cache: profiles by job shape, instance type and learned-throughput version.

Keys are values, never objects by identity: the API rebuilds its ``LearnedThroughput`` every
minute from the same rows, and a key holding the object itself would miss after every refresh
and pin the old entries (and the old object) until the cache was cleared. A bounded LRU keeps
the shapes a queue is made of and forgets the rest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

DEFAULT_MAX_ENTRIES = 4096


class EstimateCache:
    """A thread-safe LRU map of at most ``max_entries`` (the API plans from many threads)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
