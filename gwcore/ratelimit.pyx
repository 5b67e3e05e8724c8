# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Token buckets and quota counters (Cython twin of ``gwcore._ratelimit_py``).

Same API and behaviour as the pure-Python twin, whose docstring is the contract. The
table's cross-process lock is a spin lock on the header's lock word (compare-and-swap of
the owner's pid; a lock whose owner died is taken over), so a decision costs no system
call.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.math cimport INFINITY
from libc.errno cimport errno, ESRCH
from posix.signal cimport kill

from gwcore._clock cimport monotonic_now

from gwcore._ratelimit_py import (
    key_hash, segment_path as _segment_path, _open_segment, _close_segment, PROBES as _PROBES,
    MAGIC, HEADER, SLOT,
)

cdef extern from "sched.h":
    int sched_yield() nogil

cdef extern from "unistd.h":
    int getpid() nogil

# this process's pid, for the lock word: getpid() is a system call on every call (glibc
# does not cache it), so it is read once here and again in each forked child
cdef uint32_t _PID = <uint32_t>getpid()


def _after_fork():
    global _PID
    _PID = <uint32_t>getpid()


import os as _os
from time import monotonic as _monotonic
_os.register_at_fork(after_in_child=_after_fork)

cdef extern from *:
    """
    static inline int gw_trylock(uint32_t *p, uint32_t v) {
        uint32_t e = 0;
        return __atomic_compare_exchange_n(p, &e, v, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline int gw_steal(uint32_t *p, uint32_t old, uint32_t v) {
        return __atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline uint32_t gw_owner(uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void gw_unlock(uint32_t *p) { __atomic_store_n(p, 0, __ATOMIC_RELEASE); }
    """
    int gw_trylock(uint32_t *p, uint32_t v) nogil
    int gw_steal(uint32_t *p, uint32_t old, uint32_t v) nogil
    uint32_t gw_owner(uint32_t *p) nogil
    void gw_unlock(uint32_t *p) nogil

IMPLEMENTATION = "cython"
cdef tuple _ACCEPTED = (-1, 0.0)     # the common answer, not allocated per call
PROBES = _PROBES
cdef enum:
    NPROBES = 16
    MAXN = 16           # buckets / counters per take() kept on the stack

__all__ = ["TokenBucket", "Bucket", "Counter", "Table", "Check", "key_hash", "segment_path",
           "PROBES", "MAGIC", "HEADER", "SLOT", "IMPLEMENTATION"]


def segment_path(node_id, name="ratelimit", impl=IMPLEMENTATION):
    return _segment_path(node_id, name, impl)


cdef inline void _check(double rate, double burst) except *:
    if not (rate >= 0.0) or rate == INFINITY:
        raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
    if not (burst >= 0.0) or burst == INFINITY:
        raise ValueError(f"burst must be a finite number >= 0, got {burst!r}")


cdef inline double _wait(double tokens, double rate, double burst, double cost) noexcept:
    if cost > burst or rate <= 0.0:
        return INFINITY
    return (cost - tokens) / rate


cdef inline double _full_at(double tokens, double last, double rate, double burst) noexcept:
    if tokens >= burst:
        return last
    if rate <= 0.0:
        return INFINITY
    return last + (burst - tokens) / rate


cdef class TokenBucket:
    """One token bucket in this process's memory."""

    def __init__(self, rate, burst, double now=0.0):
        cdef double r = float(rate), b = float(burst)
        _check(r, b)
        self.rate = r
        self.burst = b
        self._tokens = b
        self._last = now

    cdef double _refill(self, double now) noexcept:
        cdef double t
        if now > self._last:
            t = self._tokens + (now - self._last) * self.rate
            self._tokens = t if t < self.burst else self.burst
            self._last = now
        return self._tokens

    def tokens(self, double now):
        return self._refill(now)

    cpdef double acquire(self, double now, double cost=1.0):
        cdef double t = self._refill(now)
        if t >= cost:
            self._tokens = t - cost
            return 0.0
        return _wait(t, self.rate, self.burst, cost)

    def __repr__(self):
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self._tokens:.3f})"


cdef class Bucket:
    """A bucket in a Table: its key and limits (config-time; shared by every request)."""

    def __init__(self, str key, rate, burst):
        cdef double r = float(rate), b = float(burst)
        _check(r, b)
        self.key = key
        self.h = key_hash(key)
        self.rate = r
        self.burst = b
        self.hint = -1

    def __repr__(self):
        return f"Bucket({self.key!r}, rate={self.rate}, burst={self.burst})"


cdef class Counter:
    """A counter in a Table: a quota (``limit`` > 0) or a plain usage count (``limit`` 0)."""

    def __init__(self, str key, limit=0.0, ttl=86400.0):
        self.key = key
        self.h = key_hash(key)
        self.limit = float(limit)
        self.ttl = float(ttl)
        self.hint = -1

    def __repr__(self):
        return f"Counter({self.key!r}, limit={self.limit}, ttl={self.ttl})"


cdef class Table:
    """Buckets and counters in one memory region, private or shared by the node."""

    def __init__(self, path=None, Py_ssize_t slots=65536):
        self.path = path
        self._fd = -1
        mm, fd, n = _open_segment(path, slots)
        self._mm = mm
        self._fd = fd
        self.slots = n
        self._mask = <uint64_t>(n - 1)
        self._view = mm
        self._lockword = <uint32_t *>(&self._view[12])
        self._slots = <Slot *>(&self._view[HEADER])
        self._pid = _PID
        self._shared = fd >= 0
        self.overflows = 0
        self.closed = False

    cdef void _lock(self) noexcept:
        cdef uint32_t me
        cdef uint32_t owner
        cdef long spins = 0
        if not self._shared:
            return
        me = _PID
        while not gw_trylock(self._lockword, me):
            spins += 1
            if spins & 63 == 0:
                sched_yield()
            if spins & 0x3FFF == 0:
                # a process killed while holding the lock would block the node: take it over
                owner = gw_owner(self._lockword)
                if owner != 0 and owner != me and kill(<int>owner, 0) != 0 and errno == ESRCH:
                    if gw_steal(self._lockword, owner, me):
                        return
                elif owner == me:
                    # our own pid (a fork copied a held lock, or a previous crash): reclaim
                    if gw_steal(self._lockword, owner, me):
                        return

    cdef void _unlock(self) noexcept:
        if self._shared:
            gw_unlock(self._lockword)

    cdef Py_ssize_t _find(self, uint64_t h, Py_ssize_t hint, double now, bint *fresh) noexcept:
        cdef Slot *s = self._slots
        cdef uint64_t i
        cdef Py_ssize_t free = -1
        cdef int p
        fresh[0] = False
        if hint >= 0 and <uint64_t>hint <= self._mask and s[hint].key == h:
            return hint
        i = h & self._mask
        for p in range(NPROBES):
            if s[i].key == h:
                return <Py_ssize_t>i
            if s[i].key == 0:
                if free < 0:
                    free = <Py_ssize_t>i
                break
            if free < 0 and s[i].exp <= now:
                free = <Py_ssize_t>i
            i = (i + 1) & self._mask
        if free >= 0:
            fresh[0] = True
        return free

    def take(self, buckets, counters=None, double now=0.0, double cost=1.0, Py_ssize_t at=-1):
        return self._take(buckets, counters, now, cost, at)

    cdef tuple _take(self, object buckets, object counters, double now, double cost, Py_ssize_t at):
        cdef Py_ssize_t nb = len(buckets)
        cdef Py_ssize_t nc = len(counters) if counters else 0
        cdef Py_ssize_t i, j, s, failed = -1
        cdef double wait = 0.0, tok, last, t
        cdef bint fresh
        cdef Bucket b
        cdef Counter c
        cdef Slot *sl
        cdef Py_ssize_t bslots[MAXN]
        cdef double btok[MAXN]
        cdef Py_ssize_t cslots[MAXN]
        cdef double cval[MAXN]
        if self.closed:
            raise ValueError("table is closed")
        if nb > MAXN or nc > MAXN:
            raise ValueError(f"at most {MAXN} buckets and {MAXN} counters per take()")
        if at < 0 or at > nb:
            at = nb
        # type-check outside the lock
        for i in range(nb):
            b = <Bucket?>buckets[i]
        for j in range(nc):
            c = <Counter?>counters[j]
        self._lock()
        sl = self._slots
        for i in range(nb):
            b = <Bucket>buckets[i]
            s = self._find(b.h, b.hint, now, &fresh)
            bslots[i] = s
            if s < 0:
                self.overflows += 1
                continue
            b.hint = s
            if fresh:
                tok = b.burst
                last = now
                sl[s].key = b.h
                sl[s].a = tok
                sl[s].b = last
                sl[s].exp = now
            else:
                tok = sl[s].a
                last = sl[s].b
                if now > last:
                    t = tok + (now - last) * b.rate
                    tok = t if t < b.burst else b.burst
                    last = now
                if tok > b.burst:
                    tok = b.burst
                sl[s].a = tok
                sl[s].b = last
                sl[s].exp = _full_at(tok, last, b.rate, b.burst)
            btok[i] = tok
        for j in range(nc):
            c = <Counter>counters[j]
            s = self._find(c.h, c.hint, now, &fresh)
            cslots[j] = s
            if s < 0:
                self.overflows += 1
                continue
            c.hint = s
            if fresh:
                sl[s].key = c.h
                sl[s].a = 0.0
                sl[s].b = 0.0
                sl[s].exp = now + c.ttl
            cval[j] = sl[s].a
        for i in range(at):
            if bslots[i] >= 0 and btok[i] < cost:
                b = <Bucket>buckets[i]
                failed = i
                wait = _wait(btok[i], b.rate, b.burst, cost)
                break
        if failed < 0:
            for j in range(nc):
                c = <Counter>counters[j]
                if cslots[j] >= 0 and c.limit > 0.0 and cval[j] + cost > c.limit:
                    failed = nb + j
                    wait = 0.0
                    break
        if failed < 0:
            for i in range(at, nb):
                if bslots[i] >= 0 and btok[i] < cost:
                    b = <Bucket>buckets[i]
                    failed = i
                    wait = _wait(btok[i], b.rate, b.burst, cost)
                    break
        if failed < 0:
            for i in range(nb):
                s = bslots[i]
                if s >= 0:
                    b = <Bucket>buckets[i]
                    tok = btok[i] - cost
                    sl[s].a = tok
                    sl[s].b = now
                    sl[s].exp = _full_at(tok, now, b.rate, b.burst)
            for j in range(nc):
                s = cslots[j]
                if s >= 0:
                    sl[s].a = cval[j] + cost
        self._unlock()
        if failed < 0:
            return _ACCEPTED
        return failed, wait

    def read(self, items, double now=0.0):
        cdef list out = []
        cdef uint64_t h, i
        cdef int p
        cdef double val, t
        cdef bint found
        cdef Slot *sl = self._slots
        if self.closed:
            raise ValueError("table is closed")
        self._lock()
        try:
            for it in items:
                h = it.h
                i = h & self._mask
                found = False
                for p in range(NPROBES):
                    if sl[i].key == h:
                        found = True
                        break
                    if sl[i].key == 0:
                        break
                    i = (i + 1) & self._mask
                if isinstance(it, Counter):
                    val = (sl[i].a if sl[i].exp > now else 0.0) if found else 0.0
                else:
                    if found:
                        t = sl[i].a + (now - sl[i].b) * it.rate if now > sl[i].b else sl[i].a
                        val = t if t < it.burst else it.burst
                    else:
                        val = it.burst
                out.append(val)
        finally:
            self._unlock()
        return out

    def write(self, Counter counter, double value, double now=0.0):
        cdef bint fresh
        cdef Py_ssize_t s
        if self.closed:
            raise ValueError("table is closed")
        self._lock()
        s = self._find(counter.h, counter.hint, now, &fresh)
        if s >= 0:
            counter.hint = s
            self._slots[s].key = counter.h
            self._slots[s].a = value
            self._slots[s].b = 0.0
            self._slots[s].exp = now + counter.ttl
        else:
            self.overflows += 1
        self._unlock()
        return s >= 0

    def used(self):
        cdef Py_ssize_t n = 0, s
        if self.closed:
            raise ValueError("table is closed")
        for s in range(self.slots):
            if self._slots[s].key:
                n += 1
        return n

    def close(self):
        if self.closed:
            return
        self.closed = True
        self._slots = NULL
        self._lockword = NULL
        self._view = None
        _close_segment(self._mm, self._fd, self.path)


cdef class Check:
    """``check()``: one token from each of ``buckets`` now, in ``store``'s table at
    ``store.clock()`` (store: proxy.state.memory.MemoryStore, or anything with ``table``
    and ``clock``); True when every bucket had one. What ``store.take_now(buckets)[0] < 0``
    says, without two Python calls on the way (forwarding lanes ask it per request: a C
    call to :meth:`ok` when compiled). Fields in ratelimit.pxd."""

    def __init__(self, store, buckets):
        self.store = store
        self.buckets = buckets
        self._t = None      # the store's table, once it was asked (a store opens one, once)

    def __call__(self):
        return self.ok()

    cpdef bint ok(self):
        """What calling it says."""
        cdef Table t = self._t
        cdef double now
        if t is None:
            store = self.store
            o = store._table
            if o is None:
                o = store.table
            t = self._t = <Table?>o
        clock = self.store.clock
        # the store's usual clock read in C (it may be replaced: tests do)
        now = monotonic_now() if clock is _monotonic else clock()
        return t._take(self.buckets, None, now, 1.0, -1)[0] < 0
