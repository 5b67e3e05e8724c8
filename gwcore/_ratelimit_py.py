"""Token buckets and quota counters (pure-Python twin of ``gwcore.ratelimit``).

``gwcore.ratelimit`` (Cython) and this module have the same API and the same behaviour;
``gwcore.load("ratelimit")`` picks one. API::

    b = TokenBucket(rate, burst, now)     # starts full; rate tokens/s, burst = capacity
    b.acquire(now, cost=1.0) -> float     # 0.0: taken; else seconds until `cost` tokens
                                          # are there (inf when that never happens)
    b.tokens(now) -> float                # refilled level, nothing taken

    spec = Bucket(key, rate, burst)       # config-time handle of a bucket in a Table
    ctr = Counter(key, limit=0, ttl=86400) # a counter (quota when limit > 0, else usage)
    t = Table(path=None, slots=65536)     # buckets + counters in one memory region:
                                          # path=None: private memory of this process;
                                          # path=file: mapped MAP_SHARED, so every process
                                          # of the node that maps it sees the same state
    t.take(buckets, counters, now, cost=1.0, at=-1) -> (failed, wait)
    t.read(items, now) -> list[float]     # counter values / bucket levels (0 when absent)
    t.write(counter, value, now)
    t.close()                             # the last process to close a file unlinks it

``take`` is all or nothing: it evaluates ``buckets[:at]``, then ``counters``, then
``buckets[at:]`` (``at=-1``: every bucket first) and stops at the first that refuses.
``failed`` is -1 when accepted (each bucket gave ``cost`` tokens and each counter grew by
``cost``), ``i`` when bucket ``i`` lacked tokens (``wait`` = seconds until it has them), or
``len(buckets) + j`` when counter ``j`` would pass its limit (``wait`` = 0). Nothing
changes unless the request is accepted.

Buckets refill lazily: ``tokens = min(burst, tokens + (now - last) * rate)`` on each use,
with ``now`` a monotonic clock (CLOCK_MONOTONIC is the same for every process of a
machine, so processes sharing a table agree). A clock that goes backwards adds nothing.

Table layout (little-endian; identical in both twins): a 64-byte header (magic u64,
slots u32, lock u32) then ``slots`` slots of 32 bytes ``(key u64, a f64, b f64, exp f64)``
in an open-addressing hash table (linear probing, at most ``PROBES`` slots). A bucket slot
holds ``a`` = tokens, ``b`` = last refill time, ``exp`` = when it is full again; a counter
slot holds ``a`` = value, ``exp`` = when it expires. A slot whose ``exp`` has passed is
indistinguishable from an absent one (a full bucket, an expired counter), so it may be
reused for another key: the table never needs a sweeper. When ``PROBES`` slots in a row
are live the key is not tracked (``take`` lets that bucket pass and counts an overflow).

Cross-process locking: the Cython twin uses a spin lock (atomic compare-and-swap on the
header's lock word, holding the owner's pid so a lock left by a killed process is taken
over); this twin uses ``fcntl.lockf`` on the file. The two lock protocols do not exclude
each other, so each twin maps its own file (``segment_path`` adds the implementation).
"""
from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading

__all__ = ["TokenBucket", "Bucket", "Counter", "Table", "Check", "key_hash", "segment_path",
           "PROBES", "MAGIC", "HEADER", "SLOT", "IMPLEMENTATION"]

IMPLEMENTATION = "python"
MAGIC = 0x3130304C52574700  # "\0GWRL001" little-endian
HEADER = 64
SLOT = 32
PROBES = 16
INF = math.inf

_SLOT = struct.Struct("<Qddd")
_KEY = struct.Struct("<Q")
_HDR = struct.Struct("<QII")
_VALS = struct.Struct("<ddd")
_VAL = struct.Struct("<d")


def key_hash(key: str) -> int:
    """Stable 64-bit hash of a key (the same in every process and both twins); never 0."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    return h or 1


def _check(rate: float, burst: float) -> None:
    if not (rate >= 0.0) or rate == INF:
        raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
    if not (burst >= 0.0) or burst == INF:
        raise ValueError(f"burst must be a finite number >= 0, got {burst!r}")


def _wait(tokens: float, rate: float, burst: float, cost: float) -> float:
    if cost > burst or rate <= 0.0:
        return INF
    return (cost - tokens) / rate


def _full_at(tokens: float, last: float, rate: float, burst: float) -> float:
    if tokens >= burst:
        return last
    if rate <= 0.0:
        return INF
    return last + (burst - tokens) / rate


class TokenBucket:
    """One token bucket in this process's memory."""

    __slots__ = ("rate", "burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: float, now: float = 0.0):
        rate = float(rate)
        burst = float(burst)
        _check(rate, burst)
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = float(now)

    def _refill(self, now: float) -> float:
        if now > self._last:
            t = self._tokens + (now - self._last) * self.rate
            self._tokens = t if t < self.burst else self.burst
            self._last = now
        return self._tokens

    def tokens(self, now: float) -> float:
        return self._refill(now)

    def acquire(self, now: float, cost: float = 1.0) -> float:
        t = self._refill(now)
        if t >= cost:
            self._tokens = t - cost
            return 0.0
        return _wait(t, self.rate, self.burst, cost)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self._tokens:.3f})"


class Bucket:
    """A bucket in a Table: its key and limits (config-time; shared by every request)."""

    __slots__ = ("key", "h", "rate", "burst", "hint")

    def __init__(self, key: str, rate: float, burst: float):
        rate = float(rate)
        burst = float(burst)
        _check(rate, burst)
        self.key = key
        self.h = key_hash(key)
        self.rate = rate
        self.burst = burst
        self.hint = -1

    def __repr__(self) -> str:
        return f"Bucket({self.key!r}, rate={self.rate}, burst={self.burst})"


class Counter:
    """A counter in a Table: a quota (``limit`` > 0) or a plain usage count (``limit`` 0).

    ``ttl`` (seconds) is how long the counter lives after it is created; put the period
    in the key (``q:plan:key:<period start>``) so that a new period is a new counter.
    """

    __slots__ = ("key", "h", "limit", "ttl", "hint")

    def __init__(self, key: str, limit: float = 0.0, ttl: float = 86400.0):
        self.key = key
        self.h = key_hash(key)
        self.limit = float(limit)
        self.ttl = float(ttl)
        self.hint = -1

    def __repr__(self) -> str:
        return f"Counter({self.key!r}, limit={self.limit}, ttl={self.ttl})"


def segment_path(node_id: str, name: str = "ratelimit", impl: str = IMPLEMENTATION) -> str:
    """Where the node-wide table of ``node_id`` lives (``/dev/shm`` when there is one)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_id)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else __import__("tempfile").gettempdir()
    return os.path.join(base, f"gwproxy-{safe}-{name}-{impl}")


def _open_segment(path: str | None, slots: int):
    """(mmap, fd or -1, slots) for a table; creates and sizes the file when new.

    A shared ``flock`` is held on the file for the table's lifetime; ``_close_segment``
    unlinks the file when it can take the lock exclusively (nobody else has it open).
    """
    if slots < PROBES or slots & (slots - 1):
        raise ValueError(f"slots must be a power of two >= {PROBES}, got {slots}")
    if path is None:
        size = HEADER + slots * SLOT
        mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        _HDR.pack_into(mm, 0, MAGIC, slots, 0)
        return mm, -1, slots
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 8, 0)  # serialize creation (POSIX lock on the magic)
        st = os.fstat(fd)
        if st.st_size == 0:
            os.ftruncate(fd, HEADER + slots * SLOT)
            hdr = _HDR.pack(MAGIC, slots, 0)
            os.pwrite(fd, hdr, 0)
        else:
            magic, slots, _ = _HDR.unpack(os.pread(fd, _HDR.size, 0))
            if magic != MAGIC or st.st_size != HEADER + slots * SLOT:
                raise ValueError(f"{path} is not a gwproxy rate-limit table")
        fcntl.flock(fd, fcntl.LOCK_SH)      # "in use" until close
        mm = mmap.mmap(fd, HEADER + slots * SLOT, flags=mmap.MAP_SHARED)
        fcntl.lockf(fd, fcntl.LOCK_UN, 8, 0)
        return mm, fd, slots
    except BaseException:
        os.close(fd)
        raise


def _close_segment(mm, fd: int, path: str | None) -> None:
    try:
        mm.close()
    except BufferError:
        pass
    if fd < 0:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass                                 # another process still uses it
    else:
        try:
            if path and os.path.exists(path):
                os.unlink(path)
        except OSError:
            pass
    os.close(fd)


class Table:
    """Buckets and counters in one memory region, private or shared by the node."""

    def __init__(self, path: str | None = None, slots: int = 65536):
        self.path = path
        self._mm, self._fd, self.slots = _open_segment(path, slots)
        self._mask = self.slots - 1
        self._tlock = threading.Lock()
        self.overflows = 0
        self.closed = False

    # -- locking ------------------------------------------------------------------------
    def _lock(self) -> None:
        self._tlock.acquire()
        if self._fd >= 0:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 12)

    def _unlock(self) -> None:
        if self._fd >= 0:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 12)
        self._tlock.release()

    # -- slots --------------------------------------------------------------------------
    def _find(self, h: int, hint: int, now: float) -> tuple[int, bool]:
        """(slot, fresh): the slot holding ``h``, else a claimed one (fresh), else (-1, False)."""
        mm = self._mm
        if 0 <= hint <= self._mask and _KEY.unpack_from(mm, HEADER + hint * SLOT)[0] == h:
            return hint, False
        i = h & self._mask
        free = -1
        for _ in range(PROBES):
            k, _a, _b, exp = _SLOT.unpack_from(mm, HEADER + i * SLOT)
            if k == h:
                return i, False
            if k == 0:
                if free < 0:
                    free = i
                break
            if free < 0 and exp <= now:
                free = i
            i = (i + 1) & self._mask
        if free < 0:
            return -1, False
        return free, True

    def take(self, buckets, counters=None, now: float = 0.0, cost: float = 1.0,
             at: int = -1) -> tuple[int, float]:
        nb = len(buckets)
        nc = len(counters) if counters else 0
        if at < 0 or at > nb:
            at = nb
        mm = self._mm
        bslots = [-1] * nb
        btok = [0.0] * nb
        cslots = [-1] * nc
        cval = [0.0] * nc
        failed = -1
        wait = 0.0
        self._lock()
        try:
            for i in range(nb):
                b = buckets[i]
                s, fresh = self._find(b.h, b.hint, now)
                if s < 0:
                    self.overflows += 1
                    continue
                b.hint = s
                off = HEADER + s * SLOT
                if fresh:
                    tok, last = b.burst, now
                    _SLOT.pack_into(mm, off, b.h, tok, last, now)
                else:
                    _k, tok, last, _e = _SLOT.unpack_from(mm, off)
                    if now > last:
                        t = tok + (now - last) * b.rate
                        tok = t if t < b.burst else b.burst
                        last = now
                    if tok > b.burst:        # limits lowered by a reload
                        tok = b.burst
                    _SLOT.pack_into(mm, off, b.h, tok, last, _full_at(tok, last, b.rate, b.burst))
                bslots[i] = s
                btok[i] = tok
            for j in range(nc):
                c = counters[j]
                s, fresh = self._find(c.h, c.hint, now)
                if s < 0:
                    self.overflows += 1
                    continue
                c.hint = s
                off = HEADER + s * SLOT
                if fresh:
                    _SLOT.pack_into(mm, off, c.h, 0.0, 0.0, now + c.ttl)
                    v = 0.0
                else:
                    v = _SLOT.unpack_from(mm, off)[1]
                cslots[j] = s
                cval[j] = v
            # evaluate in order: buckets[:at], counters, buckets[at:]
            for i in range(at):
                if bslots[i] >= 0 and btok[i] < cost:
                    b = buckets[i]
                    failed, wait = i, _wait(btok[i], b.rate, b.burst, cost)
                    break
            if failed < 0:
                for j in range(nc):
                    c = counters[j]
                    if cslots[j] >= 0 and c.limit > 0.0 and cval[j] + cost > c.limit:
                        failed, wait = nb + j, 0.0
                        break
            if failed < 0:
                for i in range(at, nb):
                    if bslots[i] >= 0 and btok[i] < cost:
                        b = buckets[i]
                        failed, wait = i, _wait(btok[i], b.rate, b.burst, cost)
                        break
            if failed < 0:
                for i in range(nb):
                    s = bslots[i]
                    if s >= 0:
                        b = buckets[i]
                        off = HEADER + s * SLOT
                        tok = btok[i] - cost
                        _VALS.pack_into(mm, off + 8, tok, now, _full_at(tok, now, b.rate, b.burst))
                for j in range(nc):
                    s = cslots[j]
                    if s >= 0:
                        _VAL.pack_into(mm, HEADER + s * SLOT + 8, cval[j] + cost)
        finally:
            self._unlock()
        return failed, wait

    def read(self, items, now: float = 0.0) -> list[float]:
        """Values of counters (0 when absent or expired) or levels of buckets (full when absent)."""
        out = []
        mm = self._mm
        self._lock()
        try:
            for it in items:
                i = it.h & self._mask
                val = None
                for _ in range(PROBES):
                    k, a, b, exp = _SLOT.unpack_from(mm, HEADER + i * SLOT)
                    if k == it.h:
                        if isinstance(it, Counter):
                            val = a if exp > now else 0.0
                        else:
                            t = a + (now - b) * it.rate if now > b else a
                            val = t if t < it.burst else it.burst
                        break
                    if k == 0:
                        break
                    i = (i + 1) & self._mask
                if val is None:
                    val = 0.0 if isinstance(it, Counter) else it.burst
                out.append(val)
        finally:
            self._unlock()
        return out

    def write(self, counter: Counter, value: float, now: float = 0.0) -> bool:
        """Set a counter (creating it, expiring ``counter.ttl`` from now). False: table full."""
        self._lock()
        try:
            s, fresh = self._find(counter.h, counter.hint, now)
            if s < 0:
                self.overflows += 1
                return False
            counter.hint = s
            _SLOT.pack_into(self._mm, HEADER + s * SLOT, counter.h, float(value), 0.0, now + counter.ttl)
            return True
        finally:
            self._unlock()

    def used(self) -> int:
        """How many slots hold a key (live or expired); for stats and tests."""
        n = 0
        for s in range(self.slots):
            if _KEY.unpack_from(self._mm, HEADER + s * SLOT)[0]:
                n += 1
        return n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _close_segment(self._mm, self._fd, self.path)


class Check:
    """``check()``: one token from each of ``buckets`` now, in ``store``'s table at
    ``store.clock()`` (store: proxy.state.memory.MemoryStore, or anything with ``table``
    and ``clock``); True when every bucket had one. What ``store.take_now(buckets)[0] < 0``
    says, without two Python calls on the way (forwarding lanes ask it per request)."""

    __slots__ = ("store", "buckets")

    def __init__(self, store, buckets):
        self.store = store
        self.buckets = buckets

    def __call__(self) -> bool:
        return self.ok()

    def ok(self) -> bool:
        """What calling it says."""
        store = self.store
        t = store._table
        if t is None:
            t = store.table
        return t.take(self.buckets, None, store.clock())[0] < 0
