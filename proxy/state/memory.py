"""The memory state store: a ``gwcore.ratelimit.Table`` shared by every worker of a node.

Mechanism: the front end forks N workers; each builds its own Gateway. When the environment
names the node (``GWPROXY_NODE_ID``, set by ``gwproxy serve`` to one value per
invocation and inherited by its workers), the table is a file in ``/dev/shm``
(``gwproxy-<node id>-ratelimit-<twin>``) that every worker maps ``MAP_SHARED``; a
decision takes the table's lock (a spin lock on an atomic word in the file, compiled
twin; ``lockf`` in the pure twin), refills and takes from each bucket, and releases it:
no system call on the compiled path, and the limits are exact for the whole node (not N
times over). Every worker holds a shared ``flock`` on the file while it runs; the last to
close it removes it. Without a node id (tests, embedding) the table is private to the
process. The time base is CLOCK_MONOTONIC, common to all processes of the machine.

Capacity: ``state.slots`` (default 65536, 32 bytes each). Idle buckets (full again) and
expired counters free their slot by themselves; when a key finds no slot within 16
probes it is let through and counted (``overflows`` in ``stats()``).
Quotas and usage counts are lost when the node stops (use Redis to keep them).
"""
from __future__ import annotations

import logging
import os
import time

import gwcore

_rl = gwcore.load("ratelimit")
log = logging.getLogger("gwproxy.state")

DEFAULT_SLOTS = 65536


class MemoryStore:
    kind = "memory"
    local = True

    def __init__(self, state_cfg: dict | None = None, node_id: str | None = None):
        state_cfg = state_cfg or {}
        self.on_failure = state_cfg.get("on_failure", "open")
        self.slots = int(state_cfg.get("slots", DEFAULT_SLOTS))
        self.node_id = node_id if node_id is not None else os.environ.get("GWPROXY_NODE_ID")
        self._table = None
        self.clock = time.monotonic   # tests may replace it

    @property
    def table(self):
        t = self._table
        if t is None:
            t = self._open()
        return t

    def _open(self):
        path = _rl.segment_path(self.node_id) if self.node_id else None
        try:
            self._table = _rl.Table(path, self.slots)
        except (OSError, ValueError) as e:
            log.warning("state: cannot map the node-wide table %s (%s); limits are per worker",
                        path, e)
            self._table = _rl.Table(None, self.slots)
        return self._table

    async def start(self) -> None:
        self.table

    async def close(self) -> None:
        if self._table is not None:
            self._table.close()

    def take_now(self, buckets, counters=None, cost: float = 1.0, at: int = -1):
        t = self._table     # not the property: this runs on every throttled request
        if t is None:
            t = self._open()
        return t.take(buckets, counters, self.clock(), cost, at)

    async def take(self, buckets, counters=None, cost: float = 1.0, at: int = -1):
        return self.table.take(buckets, counters, self.clock(), cost, at)

    async def read(self, items) -> list[float]:
        return self.table.read(items, self.clock())

    async def write(self, counter, value: float) -> None:
        self.table.write(counter, value, self.clock())

    def stats(self) -> dict:
        t = self.table
        return {"backend": "memory", "shared": t.path is not None, "path": t.path,
                "slots": t.slots, "overflows": t.overflows,
                "implementation": _rl.IMPLEMENTATION}
