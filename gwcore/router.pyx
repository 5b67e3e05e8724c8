# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Route matching for gwproxy, compiled (Cython twin of gwcore._router_py).

Same API and behaviour as ``gwcore._router_py``; the rules (templates, priority,
conflicts, path decoding, ``$default``, HEAD not implied by GET) are documented in that
module's docstring. Config-time parsing of templates is shared with the twin; matching
(path validation, percent-decoding, the trie walk) is implemented here with cdef classes
and typed attributes, and skips decoding when the path has no '%'.
"""
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport malloc, free

from gwcore.errors import RouteConflictError, RouteSyntaxError
from gwcore._router_py import (
    check_method as _check_method,
    parse_template as _parse_template,
    STATIC as _PY_STATIC,
    PARAM as _PY_PARAM,
    GREEDY as _PY_GREEDY,
)

__all__ = [
    "MATCH", "NOT_FOUND", "METHOD_NOT_ALLOWED", "BAD_PATH",
    "Router", "RouteConflictError", "RouteSyntaxError",
]

MATCH = 0
NOT_FOUND = 1
METHOD_NOT_ALLOWED = 2
BAD_PATH = 3

cdef enum:
    K_STATIC = 0
    K_PARAM = 1
    K_GREEDY = 2

assert (_PY_STATIC, _PY_PARAM, _PY_GREEDY) == (K_STATIC, K_PARAM, K_GREEDY)

cdef str ANY = "ANY"
cdef tuple _BAD = (BAD_PATH, None, None)
cdef tuple _NOT_FOUND = (NOT_FOUND, None, None)
cdef tuple _NOT_ALLOWED = (METHOD_NOT_ALLOWED, None, None)


cdef class _Route:

    def __cinit__(self, str method, str path, object value, str label, tuple segs):
        cdef list names = []
        cdef list positions = []
        cdef Py_ssize_t i
        self.method = method
        self.path = path
        self.value = value
        self.label = label
        self.greedy_pos = -1
        for i, (kind, text) in enumerate(segs):
            if kind == K_PARAM:
                names.append(text)
                positions.append(i)
            elif kind == K_GREEDY:
                self.greedy_pos = i
                names.append(text)
        self.names = tuple(names)
        self.positions = tuple(positions)

    cdef dict params(self, list segs):
        cdef dict out = {}
        cdef Py_ssize_t k, npos = len(self.positions)
        cdef tuple names = self.names
        cdef tuple positions = self.positions
        for k in range(npos):
            out[names[k]] = segs[<Py_ssize_t>positions[k]]
        if self.greedy_pos >= 0:
            out[names[npos]] = "/".join(segs[self.greedy_pos:])
        return out


cdef class _Node:

    def __cinit__(self):
        self.static = {}
        self.methods = {}


cdef inline _Route _lookup(_Node node, str method, bint* seen):
    """The route for method at node (exact, then ANY); flags seen when only others exist."""
    cdef PyObject* p
    if node.methods:
        p = PyDict_GetItem(node.methods, method)
        if p != NULL:
            return <_Route>p
        if node.any_route is None:
            seen[0] = True
    return node.any_route


cdef _Route _walk(_Node node, list segs, Py_ssize_t i, Py_ssize_t n, str method, bint* seen):
    """Depth-first in priority order (static, param, greedy); first route for method wins."""
    cdef PyObject* p
    cdef _Route route
    cdef _Node child
    if i == n:
        return _lookup(node, method, seen)
    if node.static:
        p = PyDict_GetItem(node.static, <object>PyList_GET_ITEM(segs, i))
        if p != NULL:
            route = _walk(<_Node>p, segs, i + 1, n, method, seen)
            if route is not None:
                return route
    child = node.param
    if child is not None:
        route = _walk(child, segs, i + 1, n, method, seen)
        if route is not None:
            return route
    child = node.greedy
    if child is not None:
        return _lookup(child, method, seen)
    return None


cdef inline int _hexval(unsigned char c) noexcept:
    if c >= 48 and c <= 57:      # 0-9
        return c - 48
    if c >= 65 and c <= 70:      # A-F
        return c - 55
    if c >= 97 and c <= 102:     # a-f
        return c - 87
    return -1


cdef object _decode_segment(str seg):
    """Percent-decode one raw segment (already free of controls, '\\' and surrogates).

    Returns the decoded str, or None when it is BAD_PATH.
    """
    cdef bytes raw = seg.encode("utf-8")
    cdef const char* s = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t i = 0, j = 0
    cdef int hi, lo
    cdef char* buf = <char*>malloc(n + 1)
    cdef str out
    cdef Py_UCS4 c
    if buf == NULL:
        raise MemoryError()
    try:
        while i < n:
            if s[i] == b'%':
                if i + 2 >= n:
                    return None
                hi = _hexval(<unsigned char>s[i + 1])
                lo = _hexval(<unsigned char>s[i + 2])
                if hi < 0 or lo < 0:
                    return None
                buf[j] = <char>((hi << 4) | lo)
                i += 3
            else:
                buf[j] = s[i]
                i += 1
            j += 1
        try:
            out = PyUnicode_DecodeUTF8(buf, j, "strict")
        except UnicodeDecodeError:
            return None
    finally:
        free(buf)
    for c in out:
        if c < 0x20 or c == 0x7f or c == 0x5c or c == 0x2f:
            return None
    return out


cdef class Router:
    """A method + path router with API Gateway's rules. See gwcore._router_py's docstring."""

    def __cinit__(self):
        self._root = _Node()
        self._routes = []
        self._frozen = False
        self._has_default = False
        self._default = None
        self._default_label = None

    def add(self, method, path, value, label=None):
        """Add a route; raises RouteSyntaxError, RouteConflictError, or RuntimeError when frozen."""
        cdef _Node node, child
        cdef object p
        if self._frozen:
            raise RuntimeError("router is frozen: routes cannot be added")
        _check_method(method)
        segs, shape = _parse_template(path)
        if label is None:
            label = f"{method} {path}"
        node = self._root
        for kind, text in segs:
            if node is None:
                break
            if kind == K_STATIC:
                node = node.static.get(text)
            elif kind == K_PARAM:
                node = node.param
            else:
                node = node.greedy
        if node is not None:
            old = node.any_route if method == ANY else node.methods.get(method)
            if old is not None:
                raise RouteConflictError(
                    f"route {label!r} conflicts with {(<_Route>old).label!r}: same method "
                    f"{method} and same path shape {shape}")
        route = _Route(method, path, value, label, segs)
        node = self._root
        for kind, text in segs:
            if kind == K_STATIC:
                p = node.static.get(text)
                if p is None:
                    child = _Node()
                    node.static[text] = child
                else:
                    child = <_Node>p
            elif kind == K_PARAM:
                child = node.param
                if child is None:
                    child = node.param = _Node()
            else:
                child = node.greedy
                if child is None:
                    child = node.greedy = _Node()
            node = child
        if method == ANY:
            node.any_route = route
        else:
            node.methods[method] = route
        self._routes.append(route)

    def set_default(self, value, label=None):
        """Set the "$default" route, returned when nothing else matches (not for BAD_PATH)."""
        if self._frozen:
            raise RuntimeError("router is frozen: the default route cannot be set")
        if label is None:
            label = "$default"
        if self._has_default:
            raise RouteConflictError(
                f"route {label!r} conflicts with {self._default_label!r}: "
                "there can be only one $default route")
        self._default = value
        self._default_label = label
        self._has_default = True

    def freeze(self):
        """Refuse further add()/set_default() calls."""
        self._frozen = True

    def routes(self):
        """(method, path, value) of every added route, in insertion order."""
        cdef _Route r
        return [(r.method, r.path, r.value) for r in self._routes]

    def match(self, method_, path_):
        """Match a request; see gwcore._router_py's docstring for the result and the rules."""
        if not isinstance(method_, str) or not isinstance(path_, str):
            raise TypeError("match() takes two str arguments: method and path")
        cdef str method = <str>method_
        cdef str path = <str>path_
        cdef Py_ssize_t n = len(path)
        cdef Py_ssize_t end, k, nseg, L
        cdef Py_UCS4 c
        cdef bint has_pct = False
        cdef bint empty = False
        cdef bint seen = False
        cdef list segs
        cdef str seg
        cdef object dec
        cdef _Route route
        if n == 0 or path[0] != u'/':
            return _BAD
        for c in path:
            if c < 0x20 or c == 0x7f or c == 0x5c or (c >= 0xD800 and c <= 0xDFFF):
                return _BAD
            if c == 0x25:
                has_pct = True
        if n == 1:
            segs = []
        else:
            end = n - 1 if path[n - 1] == u'/' else n
            segs = path[1:end].split("/")
        nseg = PyList_GET_SIZE(segs)
        for k in range(nseg):
            seg = <str>PyList_GET_ITEM(segs, k)
            if has_pct and "%" in seg:
                dec = _decode_segment(seg)
                if dec is None:
                    return _BAD
                segs[k] = dec
                seg = <str>dec
            L = len(seg)
            if L == 0:
                empty = True
            elif L <= 2 and (seg == "." or seg == ".."):
                return _BAD
        route = None
        if not empty:
            route = _walk(self._root, segs, 0, nseg, method, &seen)
        if route is not None:
            return (MATCH, route.value, route.params(segs))
        if self._has_default:
            return (MATCH, self._default, {})
        return _NOT_ALLOWED if seen else _NOT_FOUND
