# cython: language_level=3
"""Types of gwcore.router (see router.pyx and the docstring of gwcore._router_py)."""


cdef class _Route:
    cdef readonly str method
    cdef readonly str path
    cdef readonly object value
    cdef readonly str label
    cdef tuple names            # param names in order; the greedy name last
    cdef tuple positions        # segment index of each {param}
    cdef Py_ssize_t greedy_pos  # segment index where {greedy+} starts, -1 when none

    cdef dict params(self, list segs)


cdef class _Node:
    cdef dict static            # decoded literal -> _Node
    cdef _Node param            # the {param} child
    cdef _Node greedy           # the {greedy+} child (always a leaf)
    cdef dict methods           # method -> _Route (not ANY)
    cdef _Route any_route       # the ANY route, or None


cdef class Router:
    cdef _Node _root
    cdef list _routes
    cdef bint _frozen
    cdef bint _has_default
    cdef object _default
    cdef str _default_label
