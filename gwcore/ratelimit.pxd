# Token buckets and quota counters (Cython). See gwcore/_ratelimit_py.py for the contract.
from libc.stdint cimport uint32_t, uint64_t


cdef struct Slot:
    uint64_t key
    double a        # bucket: tokens; counter: value
    double b        # bucket: last refill time
    double exp      # bucket: when full again; counter: expiry


cdef class TokenBucket:
    cdef public double rate
    cdef public double burst
    cdef double _tokens
    cdef double _last
    cdef double _refill(self, double now) noexcept
    cpdef double acquire(self, double now, double cost=*)


cdef class Bucket:
    cdef readonly str key
    cdef readonly uint64_t h
    cdef readonly double rate
    cdef readonly double burst
    cdef public Py_ssize_t hint


cdef class Counter:
    cdef readonly str key
    cdef readonly uint64_t h
    cdef readonly double limit
    cdef readonly double ttl
    cdef public Py_ssize_t hint


cdef class Table:
    cdef readonly object path
    cdef readonly Py_ssize_t slots
    cdef public Py_ssize_t overflows
    cdef readonly bint closed
    cdef object _mm
    cdef int _fd
    cdef unsigned char[::1] _view
    cdef Slot *_slots
    cdef uint32_t *_lockword
    cdef uint64_t _mask
    cdef uint32_t _pid
    cdef bint _shared
    cdef void _lock(self) noexcept
    cdef void _unlock(self) noexcept
    cdef Py_ssize_t _find(self, uint64_t h, Py_ssize_t hint, double now, bint *fresh) noexcept
    cdef tuple _take(self, object buckets, object counters, double now, double cost, Py_ssize_t at)


cdef class Check:
    cdef object store
    cdef object buckets
    cdef Table _t

    cpdef bint ok(self)
