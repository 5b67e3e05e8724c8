"""Type stubs for gwcore.ratelimit (and its twin gwcore._ratelimit_py)."""
from typing import Sequence

IMPLEMENTATION: str
MAGIC: int
HEADER: int
SLOT: int
PROBES: int

def key_hash(key: str) -> int: ...
def segment_path(node_id: str, name: str = ..., impl: str = ...) -> str: ...

class TokenBucket:
    rate: float
    burst: float
    def __init__(self, rate: float, burst: float, now: float = ...) -> None: ...
    def tokens(self, now: float) -> float: ...
    def acquire(self, now: float, cost: float = ...) -> float: ...

class Bucket:
    key: str
    h: int
    rate: float
    burst: float
    hint: int
    def __init__(self, key: str, rate: float, burst: float) -> None: ...

class Counter:
    key: str
    h: int
    limit: float
    ttl: float
    hint: int
    def __init__(self, key: str, limit: float = ..., ttl: float = ...) -> None: ...

class Table:
    path: str | None
    slots: int
    overflows: int
    closed: bool
    def __init__(self, path: str | None = ..., slots: int = ...) -> None: ...
    def take(self, buckets: Sequence[Bucket], counters: Sequence[Counter] | None = ...,
             now: float = ..., cost: float = ..., at: int = ...) -> tuple[int, float]: ...
    def read(self, items: Sequence[Bucket | Counter], now: float = ...) -> list[float]: ...
    def write(self, counter: Counter, value: float, now: float = ...) -> bool: ...
    def used(self) -> int: ...
    def close(self) -> None: ...
