"""The per-worker in-memory store: LRU with a capacity in bytes.

Each worker process has its own (workers do not share memory); with ``state.backend:
redis`` the shared store in ``proxy.cache.redis_store`` is used instead. Every entry is
charged its body, headers, key and a fixed overhead, so memory stays bounded whatever the
number of distinct keys: inserting past the capacity evicts least-recently-used entries.
"""
from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["MemoryStore"]


class MemoryStore:
    sync = True

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 0
        self.evictions = 0
        self._d: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: bytes, now: float | None = None):
        e = self._d.get(key)
        if e is None:
            return None
        if e.expires <= (time.time() if now is None else now):
            del self._d[key]
            self.size -= e.size
            return None
        self._d.move_to_end(key)
        return e

    def put(self, key: bytes, entry) -> bool:
        if entry.size > self.capacity:
            return False
        d = self._d
        old = d.pop(key, None)
        if old is not None:
            self.size -= old.size
        d[key] = entry
        self.size += entry.size
        while self.size > self.capacity:
            _, ev = d.popitem(last=False)
            self.size -= ev.size
            self.evictions += 1
        return True

    def delete(self, key: bytes) -> None:
        e = self._d.pop(key, None)
        if e is not None:
            self.size -= e.size

    def flush(self, route: str | None = None) -> int:
        if route is None:
            n = len(self._d)
            self._d.clear()
            self.size = 0
            return n
        doomed = [k for k, e in self._d.items() if e.route == route]
        for k in doomed:
            self.delete(k)
        return len(doomed)

    def stats(self) -> dict:
        return {"entries": len(self._d), "bytes": self.size, "capacity": self.capacity,
                "evictions": self.evictions}
