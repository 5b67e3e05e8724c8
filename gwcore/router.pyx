# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Route matching for gwproxy, compiled (Cython twin of gwcore._router_py).

Same API and behaviour as ``gwcore._router_py``; the rules (templates, priority,
conflicts, path decoding, ``$default``, HEAD not implied by GET) are documented in that
module's docstring. Config-time parsing of templates is shared with the twin; matching is
implemented here without allocating anything per segment:

* A route whose template is all static is also entered, by its raw path (and the same
  with a trailing "/"), in a dict of full paths. A request path found there is valid as
  it is (template text holds no "%", control, "\\" or dot segment) and decodes to itself,
  and the trie walk would reach that same node first; so when that node has a route for
  the method (or ANY) it is the answer, with one dict lookup. Otherwise (a miss, or the
  node lacks the method and the walk must backtrack) the general path below decides.
* The general path works on the request's UTF-8 bytes (for an ASCII str, its own
  buffer): one pass validates them and counts segments, a second records each segment as
  (offset, length). Only when the path holds a "%" are the segments percent-decoded, into
  one buffer that keeps the "/" separators (so a greedy value is one contiguous slice).
* Each trie node indexes its static children in a C table of (hash, UTF-8 key, child):
  a linear scan for a few children, open addressing above that; the walk looks segments
  up by (pointer, length). Method routes are a short tuple scanned by string equality.
* Parameter strs and the params dict are built only for the route that matched.
"""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_Next
from cpython.list cimport PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_CheckExact
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches
from libc.stdint cimport uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memchr, memcmp, memcpy

from gwcore.errors import RouteConflictError, RouteSyntaxError
from gwcore._router_py import (
    check_method as _check_method,
    parse_template as _parse_template,
    STATIC as _PY_STATIC,
    PARAM as _PY_PARAM,
    GREEDY as _PY_GREEDY,
)

cdef extern from "Python.h":
    # declared here without an exception clause: a NULL result is handled in match()
    const char* _utf8 "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* size)

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

cdef enum:
    SMALL_TABLE = 8     # up to this many static children: linear scan, no hashing
    STACK_SEGS = 32     # segments recorded on the C stack before falling back to malloc
    STACK_BUF = 256     # bytes of decoded path on the C stack before falling back to malloc

assert (_PY_STATIC, _PY_PARAM, _PY_GREEDY) == (K_STATIC, K_PARAM, K_GREEDY)

cdef str ANY = "ANY"
cdef object _MATCH = MATCH
cdef tuple _BAD = (BAD_PATH, None, None)
cdef tuple _NOT_FOUND = (NOT_FOUND, None, None)
cdef tuple _NOT_ALLOWED = (METHOD_NOT_ALLOWED, None, None)


cdef inline uint64_t _hash(const char* s, Py_ssize_t n) noexcept:
    """Hash of the bytes s[:n], eight at a time, with a murmur3-style finaliser.

    Only the trie's own tables use it (keys come from the config, so a request can only
    land in the probe sequences the config made; load factor <= 1/2 keeps them short).
    """
    cdef uint64_t h = <uint64_t>n * 0x9E3779B97F4A7C15ULL
    cdef uint64_t w
    cdef Py_ssize_t i
    while n >= 8:
        memcpy(&w, s, 8)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
        h ^= h >> 29
        s += 8
        n -= 8
    if n:
        w = 0
        for i in range(n):
            w |= (<uint64_t><unsigned char>s[i]) << (8 * i)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
    h ^= h >> 32
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 29
    return h


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
        self.cpos = NULL
        for i, (kind, text) in enumerate(segs):
            if kind == K_PARAM:
                names.append(text)
                positions.append(i)
            elif kind == K_GREEDY:
                self.greedy_pos = i
                names.append(text)
        self.names = tuple(names)
        self.positions = tuple(positions)
        self.npos = len(positions)
        if self.npos:
            self.cpos = <Py_ssize_t*>malloc(self.npos * sizeof(Py_ssize_t))
            if self.cpos == NULL:
                raise MemoryError()
            for i in range(self.npos):
                self.cpos[i] = positions[i]

    def __dealloc__(self):
        free(self.cpos)

    cdef dict params(self, const char* buf, const Py_ssize_t* st, const Py_ssize_t* ln,
                     Py_ssize_t n):
        """The params dict: decoded segments are buf[st[k]:st[k] + ln[k]] (valid UTF-8)."""
        cdef dict out = {}
        cdef Py_ssize_t k, pos, g
        for k in range(self.npos):
            pos = self.cpos[k]
            PyDict_SetItem(out, <object>PyTuple_GET_ITEM(self.names, k),
                           PyUnicode_DecodeUTF8(<char*>buf + st[pos], ln[pos], NULL))
        g = self.greedy_pos
        if g >= 0:
            # the decoded segments g..n-1 are contiguous in buf, joined by "/"
            PyDict_SetItem(out, <object>PyTuple_GET_ITEM(self.names, self.npos),
                           PyUnicode_DecodeUTF8(<char*>buf + st[g], st[n - 1] + ln[n - 1] - st[g],
                                                NULL))
        return out


cdef class _Node:

    def __cinit__(self):
        self.static = {}
        self.methods = {}
        self.mroutes = ()
        self.slots = NULL
        self.nslots = 0
        self.mask = 0
        self.dirty = False

    def __dealloc__(self):
        free(self.slots)


cdef int _index(_Node node) except -1:
    """(Re)build node's C table of static children from node.static."""
    cdef Py_ssize_t count = len(node.static)
    cdef Py_ssize_t size, pos = 0, k = 0, klen
    cdef size_t mask, j
    cdef PyObject* key
    cdef PyObject* child
    cdef const char* kbytes
    cdef uint64_t h
    cdef _Slot* slots
    if count <= SMALL_TABLE:
        size = count
        mask = 0
    else:
        size = 16
        while size < 2 * count:        # load factor <= 1/2
            size <<= 1
        mask = size - 1
    slots = NULL
    if size:
        slots = <_Slot*>calloc(size, sizeof(_Slot))
        if slots == NULL:
            raise MemoryError()
    try:
        while PyDict_Next(node.static, &pos, &key, &child):
            # template text is surrogate-free, so this cannot fail; the UTF-8 is cached on
            # the key str, which node.static keeps alive (keys are never removed)
            kbytes = _utf8(<object>key, &klen)
            if kbytes == NULL:
                raise RuntimeError("router: static segment is not encodable as UTF-8")
            h = _hash(kbytes, klen)
            if mask == 0:
                j = k
            else:
                j = <size_t>h & mask
                while slots[j].child != NULL:
                    j = (j + 1) & mask
            slots[j].hash = h
            slots[j].key = kbytes
            slots[j].size = klen
            slots[j].child = child
            k += 1
    except BaseException:
        free(slots)
        raise
    free(node.slots)
    node.slots = slots
    node.nslots = count
    node.mask = mask
    return 0


cdef inline PyObject* _find(_Node node, const char* s, Py_ssize_t size) noexcept:
    """The static child of node named by the UTF-8 bytes s[:size], or NULL."""
    cdef _Slot* slot
    cdef Py_ssize_t k
    cdef uint64_t h
    cdef size_t j, mask = node.mask
    if mask == 0:
        for k in range(node.nslots):
            slot = &node.slots[k]
            if slot.size == size and memcmp(slot.key, s, size) == 0:
                return slot.child
        return NULL
    h = _hash(s, size)
    j = <size_t>h & mask
    while True:
        slot = &node.slots[j]
        if slot.child == NULL:
            return NULL
        if slot.hash == h and slot.size == size and memcmp(slot.key, s, size) == 0:
            return slot.child
        j = (j + 1) & mask


cdef inline _Route _lookup(_Node node, str method, bint* seen):
    """The route for method at node (exact, then ANY); flags seen when only others exist."""
    cdef tuple ms = node.mroutes
    cdef Py_ssize_t k, m = PyTuple_GET_SIZE(ms)
    cdef _Route r
    for k in range(m):
        r = <_Route>PyTuple_GET_ITEM(ms, k)
        if r.method is method or r.method == method:
            return r
    if m and node.any_route is None:
        seen[0] = True
    return node.any_route


cdef _Route _walk(_Node node, const char* buf, const Py_ssize_t* st, const Py_ssize_t* ln,
                  Py_ssize_t i, Py_ssize_t n, str method, bint* seen):
    """Depth-first in priority order (static, param, greedy); first route for method wins."""
    cdef PyObject* p
    cdef _Route route
    cdef _Node child
    if i == n:
        return _lookup(node, method, seen)
    if node.nslots:
        p = _find(node, buf + st[i], ln[i])
        if p != NULL:
            route = _walk(<_Node>p, buf, st, ln, i + 1, n, method, seen)
            if route is not None:
                return route
    child = node.param
    if child is not None:
        route = _walk(child, buf, st, ln, i + 1, n, method, seen)
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


cdef bint _valid_utf8(const unsigned char* s, Py_ssize_t n) noexcept:
    """True when s[:n] is what Python's strict UTF-8 decoder accepts.

    That is well-formed UTF-8 (RFC 3629): no stray continuation byte, no overlong form,
    no encoded surrogate (U+D800-U+DFFF), nothing above U+10FFFF, no truncated sequence.
    """
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:                           # continuation byte, or overlong C0/C1
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if c == 0xE0 and c1 < 0xA0:          # overlong
                return False
            if c == 0xED and c1 >= 0xA0:         # surrogate
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if ((c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80
                    or (s[i + 3] & 0xC0) != 0x80):
                return False
            if c == 0xF0 and c1 < 0x90:          # overlong
                return False
            if c == 0xF4 and c1 >= 0x90:         # above U+10FFFF
                return False
            i += 4
        else:
            return False
    return True


cdef Py_ssize_t _decode_segment(const char* s, Py_ssize_t n, char* out) noexcept:
    """Percent-decode the raw segment s[:n] into out; its length, or -1 when BAD_PATH.

    The raw bytes were already checked (no control, DEL or "\\"); a decoded byte may in
    addition not be "/", and the result must be valid UTF-8.
    """
    cdef Py_ssize_t i = 0, j = 0
    cdef int hi, lo
    cdef unsigned char c
    while i < n:
        c = <unsigned char>s[i]
        if c == 0x25:            # '%'
            if i + 2 >= n:
                return -1
            hi = _hexval(<unsigned char>s[i + 1])
            lo = _hexval(<unsigned char>s[i + 2])
            if hi < 0 or lo < 0:
                return -1
            c = <unsigned char>((hi << 4) | lo)
            if c < 0x20 or c == 0x7f or c == 0x5c or c == 0x2f:
                return -1
            i += 3
        else:
            i += 1
        out[j] = <char>c
        j += 1
    if not _valid_utf8(<const unsigned char*>out, j):
        return -1
    return j


cdef enum:
    C_BAD = 1           # control character, DEL, "\\": BAD_PATH anywhere in a raw path
    C_SLASH = 2
    C_PERCENT = 3

cdef unsigned char _BYTE_CLASS[256]     # 0 for every other byte (all bytes >= 0x80 too)


cdef void _init_byte_class() noexcept:
    cdef int b
    for b in range(256):
        _BYTE_CLASS[b] = (C_BAD if b < 0x20 or b == 0x7f or b == 0x5c else
                          C_SLASH if b == 0x2f else C_PERCENT if b == 0x25 else 0)


_init_byte_class()


cdef Py_ssize_t _scan(const char* raw, Py_ssize_t blen, Py_ssize_t* st, Py_ssize_t* ln,
                      unsigned char* pc, Py_ssize_t cap, bint* has_pct) noexcept:
    """Validate the raw UTF-8 path raw[:blen] and split it into segments, in one pass.

    Returns the number of segments, or -1 for BAD_PATH (empty, no leading "/", a control
    character, DEL or "\\"; in UTF-8 bytes < 0x80 are only ASCII characters). The first
    `cap` segments are recorded: offset st[k] and length ln[k] in raw, pc[k] true when
    the segment holds a "%" (has_pct is set then). A single trailing "/" is ignored.
    """
    cdef Py_ssize_t i, k = 0, seg_start = 1
    cdef unsigned char c
    cdef bint seg_pct = False
    if blen == 0 or raw[0] != b'/':
        return -1
    for i in range(1, blen):
        c = _BYTE_CLASS[<unsigned char>raw[i]]
        if c == 0:
            continue
        if c == C_SLASH:
            if k < cap:
                st[k] = seg_start
                ln[k] = i - seg_start
                pc[k] = seg_pct
            k += 1
            seg_start = i + 1
            seg_pct = False
        elif c == C_PERCENT:
            seg_pct = True
            has_pct[0] = True
        else:
            return -1
    if blen == 1 or raw[blen - 1] == b'/':
        return k              # "/" has no segment; a trailing "/" closed the last one
    if k < cap:
        st[k] = seg_start
        ln[k] = blen - seg_start
        pc[k] = seg_pct
    return k + 1


cdef inline int _propagate() except -1:
    """Make the caller raise the exception already set (used after a failed C-API call)."""
    return -1


cdef class Router:
    """A method + path router with API Gateway's rules. See gwcore._router_py's docstring."""

    def __cinit__(self):
        self._root = _Node()
        self._routes = []
        self._static_paths = {}
        self._dirty = []
        self._frozen = False
        self._has_default = False
        self._default = None
        self._default_label = None

    def add(self, method, path, value, label=None):
        """Add a route; raises RouteSyntaxError, RouteConflictError, or RuntimeError when frozen."""
        cdef _Node node, child
        cdef object p
        cdef _Route route
        cdef list texts
        cdef bint all_static = True
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
        texts = []
        node = self._root
        for kind, text in segs:
            if kind == K_STATIC:
                texts.append(text)
                p = node.static.get(text)
                if p is None:
                    child = _Node()
                    node.static[text] = child
                    if not node.dirty:
                        node.dirty = True
                        self._dirty.append(node)
                else:
                    child = <_Node>p
            elif kind == K_PARAM:
                all_static = False
                child = node.param
                if child is None:
                    child = node.param = _Node()
            else:
                all_static = False
                child = node.greedy
                if child is None:
                    child = node.greedy = _Node()
            node = child
        if method == ANY:
            node.any_route = route
        else:
            node.methods[method] = route
            node.mroutes = node.mroutes + (route,)
        if all_static:
            key = "/" + "/".join(texts)
            self._static_paths[key] = node
            if texts:
                self._static_paths[key + "/"] = node
        self._routes.append(route)

    cdef int _compile(self) except -1:
        """Index the static children of every node changed by add() since the last call."""
        cdef _Node node
        while self._dirty:
            node = <_Node>self._dirty.pop()
            _index(node)
            node.dirty = False
        return 0

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
        self._compile()

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
        cdef PyObject* p
        cdef _Route route
        cdef bint seen = False
        if PyList_GET_SIZE(self._dirty):
            self._compile()
        # all-static routes: one dict lookup of the raw path (see the module docstring)
        if PyUnicode_CheckExact(path):
            p = PyDict_GetItem(self._static_paths, path)
            if p != NULL:
                route = _lookup(<_Node>p, method, &seen)
                if route is not None:
                    return (_MATCH, route.value, {})
                seen = False
        return self._match_general(method, path)

    cdef tuple _match_general(self, str method, str path):
        """match() for everything but a hit in _static_paths: validate, split, decode, walk."""
        cdef Py_ssize_t blen, i, k, a, L, nseg, j
        cdef const char* raw
        cdef const char* buf
        cdef const char* q
        cdef bint has_pct = False
        cdef bint empty = False
        cdef bint seen = False
        cdef Py_ssize_t sst[STACK_SEGS]
        cdef Py_ssize_t sln[STACK_SEGS]
        cdef unsigned char spc[STACK_SEGS]
        cdef char sbuf[STACK_BUF]
        cdef Py_ssize_t* st = sst
        cdef Py_ssize_t* ln = sln
        cdef unsigned char* pc = spc
        cdef char* dbuf = NULL
        cdef _Route route
        raw = _utf8(path, &blen)
        if raw == NULL:
            # a lone surrogate cannot be encoded: BAD_PATH; anything else (MemoryError) raises
            if PyErr_ExceptionMatches(UnicodeEncodeError):
                PyErr_Clear()
                return _BAD
            _propagate()
        nseg = _scan(raw, blen, st, ln, pc, STACK_SEGS, &has_pct)
        if nseg < 0:
            return _BAD
        try:
            if nseg > STACK_SEGS:
                # a long path: record its segments in the heap (scanning it again)
                st = <Py_ssize_t*>malloc(nseg * (2 * sizeof(Py_ssize_t) + 1))
                if st == NULL:
                    raise MemoryError()
                ln = st + nseg
                pc = <unsigned char*>(ln + nseg)
                _scan(raw, blen, st, ln, pc, nseg, &has_pct)
            buf = raw
            if has_pct:
                # decode into dbuf, keeping "/" between segments (and one after the last);
                # decoded <= raw in length, so blen + 1 bytes are enough
                if blen < STACK_BUF:
                    dbuf = sbuf
                else:
                    dbuf = <char*>malloc(blen + 1)
                    if dbuf == NULL:
                        raise MemoryError()
                dbuf[0] = b'/'
                j = 1
                for k in range(nseg):
                    a = st[k]
                    L = ln[k]
                    st[k] = j
                    if pc[k]:
                        L = _decode_segment(raw + a, L, dbuf + j)
                        if L < 0:
                            return _BAD
                    else:
                        memcpy(dbuf + j, raw + a, L)
                    ln[k] = L
                    j += L
                    dbuf[j] = b'/'
                    j += 1
                buf = dbuf
            for k in range(nseg):
                L = ln[k]
                if L == 0:
                    empty = True
                elif L <= 2:
                    q = buf + st[k]
                    if q[0] == b'.' and (L == 1 or q[1] == b'.'):
                        return _BAD
            route = None
            if not empty:
                route = _walk(self._root, buf, st, ln, 0, nseg, method, &seen)
            if route is not None:
                return (_MATCH, route.value, route.params(buf, st, ln, nseg))
        finally:
            if st != sst:
                free(st)
            if dbuf != NULL and dbuf != sbuf:
                free(dbuf)
        if self._has_default:
            return (_MATCH, self._default, {})
        return _NOT_ALLOWED if seen else _NOT_FOUND
