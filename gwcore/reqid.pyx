# cython: language_level=3
"""Request ids (compiled twin of ``gwcore._reqid_py``): random version-4 UUID strings.

xoshiro256** (Blackman and Vigna's generator, 2^256 - 1 period) seeded from os.urandom
at import and again in every forked child, formatted straight into the 36 characters;
no Python integers on the way. Like the twin's Mersenne Twister it is not a
cryptographic generator: ids are unique and unpredictable enough to label requests, not
secrets.
"""
import os

from libc.stdint cimport uint64_t

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)

__all__ = ["new_request_id", "seed"]

cdef uint64_t _s[4]
cdef const char* _HEX = b"0123456789abcdef"


cdef inline uint64_t _rotl(uint64_t x, int k):
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _next():
    cdef uint64_t result = _rotl(_s[1] * 5, 7) * 9
    cdef uint64_t t = _s[1] << 17
    _s[2] ^= _s[0]
    _s[3] ^= _s[1]
    _s[1] ^= _s[2]
    _s[0] ^= _s[3]
    _s[2] ^= t
    _s[3] = _rotl(_s[3], 45)
    return result


def seed():
    """Draw a new state from os.urandom (done at import and after fork)."""
    cdef bytes b = os.urandom(32)
    cdef int i
    for i in range(4):
        _s[i] = int.from_bytes(b[i * 8:i * 8 + 8], "little")
    if _s[0] == 0 and _s[1] == 0 and _s[2] == 0 and _s[3] == 0:   # pragma: no cover
        _s[0] = 1


seed()
if hasattr(os, "register_at_fork"):
    # gateway workers are forked: each must draw its own ids
    os.register_at_fork(after_in_child=seed)


cdef inline void _put(char* out, uint64_t v, int pos, int n):
    """The low ``n`` hex digits of ``v`` at ``out[pos:pos + n]``."""
    cdef int i
    for i in range(n - 1, -1, -1):
        out[pos + i] = _HEX[v & 15]
        v >>= 4


cpdef str new_request_id():
    """A random version-4 UUID string, as str(uuid.uuid4()) formats one."""
    cdef uint64_t hi = _next()
    cdef uint64_t lo = _next()
    s = PyUnicode_New(36, 127)      # an ASCII str, written in place
    cdef char* out = <char*>PyUnicode_DATA(s)
    hi = (hi & ~(<uint64_t>0xF000)) | <uint64_t>0x4000                       # version 4
    lo = (lo & ~(<uint64_t>0xC000 << 48)) | (<uint64_t>0x8000 << 48)          # RFC 4122 variant
    _put(out, hi >> 32, 0, 8)
    out[8] = 45
    _put(out, (hi >> 16) & 0xFFFF, 9, 4)
    out[13] = 45
    _put(out, hi & 0xFFFF, 14, 4)
    out[18] = 45
    _put(out, lo >> 48, 19, 4)
    out[23] = 45
    _put(out, lo & 0xFFFFFFFFFFFF, 24, 12)
    return s
