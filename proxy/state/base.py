"""The state store interface: what throttling, quotas and API-key flags need from a store.

Two implementations: ``MemoryStore`` (``proxy.state.memory``; the default, no server;
node-wide across the workers of one ``gwproxy serve``) and ``RedisStore``
(``proxy.state.redisstore``; shared by every node using the same Redis). The gateway has
one, as ``gateway.services.state``.

The interface is deliberately small. Items are ``gwcore.ratelimit`` handles, built once
at config time and reused by every request::

    Bucket(key, rate, burst)          a token bucket (rate tokens/s, capacity burst)
    Counter(key, limit=0, ttl=86400)  a counter: a quota when limit > 0, else a usage
                                      count; it lives ttl seconds after its creation, so
                                      put the period in the key ("q:gold:alice:20240501")

Store methods:

``take_now(buckets, counters=None, cost=1, at=-1) -> (failed, wait)``
    Only when ``store.local`` is true (no I/O: memory). One atomic, all-or-nothing
    decision: evaluates ``buckets[:at]``, then ``counters``, then ``buckets[at:]``;
    ``failed`` -1 = accepted (every bucket gave ``cost`` tokens, every counter grew by
    ``cost``); ``i`` = bucket ``i`` is empty (``wait`` = seconds until it is not);
    ``len(buckets) + j`` = counter ``j`` would pass its limit. Nothing changes unless
    the whole decision is accepted.
``await take(...)``
    The same for any store; one round trip at most. ``failed == UNAVAILABLE`` when the
    backend cannot decide (Redis unreachable): the caller applies ``store.on_failure``.
``await read(items) -> list[float]``
    Current counter values (0 when absent/expired) or bucket levels (full when absent).
    Raises ``StoreUnavailable`` when the backend cannot answer.
``await write(counter, value) -> None``
    Set a counter (expires ``counter.ttl`` seconds from now). May raise ``StoreUnavailable``.
``await start()`` / ``await close()``
    Run in each worker process. ``start`` never fails because the backend is down.

Attributes: ``kind`` ("memory" | "redis"), ``local`` (bool), ``on_failure`` ("open" |
``closed``), ``stats()`` -> dict for the admin API and metrics (errors, failures...).

Other features (response cache, WebSocket registry) may add their own operations; keep
each one atomic and one round trip, and keep this docstring the reference.
"""
from __future__ import annotations

from typing import Protocol, Sequence

UNAVAILABLE = -2   # ``failed`` value: the backend could not decide


class StoreUnavailable(Exception):
    """The state backend cannot be reached (Redis down, timeout)."""


class Store(Protocol):
    kind: str
    local: bool
    on_failure: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def take_now(self, buckets: Sequence, counters: Sequence | None = None,
                 cost: float = 1.0, at: int = -1) -> tuple[int, float]: ...
    async def take(self, buckets: Sequence, counters: Sequence | None = None,
                   cost: float = 1.0, at: int = -1) -> tuple[int, float]: ...
    async def read(self, items: Sequence) -> list[float]: ...
    async def write(self, counter, value: float) -> None: ...
    def stats(self) -> dict: ...
