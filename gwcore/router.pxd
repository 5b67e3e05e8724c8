# cython: language_level=3
"""Types of gwcore.router (see router.pyx and the docstring of gwcore._router_py)."""
from libc.stdint cimport uint64_t
from cpython.object cimport PyObject


ctypedef struct _Slot:
    uint64_t hash               # _hash() of the key's UTF-8 bytes
    const char* key             # UTF-8 of a key of _Node.static (owned by that str)
    Py_ssize_t size             # its length in bytes
    PyObject* child             # the _Node (borrowed from _Node.static); NULL = empty slot


cdef class _Route:
    cdef readonly str method
    cdef readonly str path
    cdef readonly object value
    cdef readonly str label
    cdef tuple names            # param names in order; the greedy name last
    cdef tuple positions        # segment index of each {param}
    cdef Py_ssize_t* cpos       # the same positions as a C array (npos items)
    cdef Py_ssize_t npos
    cdef Py_ssize_t greedy_pos  # segment index where {greedy+} starts, -1 when none

    cdef dict params(self, const char* buf, const Py_ssize_t* st, const Py_ssize_t* ln,
                     Py_ssize_t n)


cdef class _Node:
    cdef dict static            # decoded literal -> _Node (config-time source of truth)
    cdef _Node param            # the {param} child
    cdef _Node greedy           # the {greedy+} child (always a leaf)
    cdef dict methods           # method -> _Route (not ANY), for conflicts
    cdef tuple mroutes          # the same routes, scanned by match()
    cdef _Route any_route       # the ANY route, or None
    # match-time index of `static`, rebuilt by Router._compile() when `dirty`:
    # nslots entries scanned linearly when mask == 0, else a hash table of mask + 1 slots
    cdef _Slot* slots
    cdef Py_ssize_t nslots
    cdef size_t mask
    cdef bint dirty


cdef class Router:
    cdef _Node _root
    cdef list _routes
    cdef dict _static_paths     # raw path of an all-static route (and with "/") -> its _Node
    cdef list _dirty            # nodes whose `static` changed since the last _compile()
    cdef bint _frozen
    cdef bint _has_default
    cdef object _default
    cdef str _default_label

    cdef int _compile(self) except -1
    cdef tuple _match_general(self, str method, str path)
