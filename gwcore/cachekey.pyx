# cython: language_level=3
"""Response-cache keys for gwproxy (compiled twin of ``gwcore._cachekey_py``).

Same API and byte-for-byte the same output as the pure-Python module; see its docstring
for the canonical form, strict mode and why the digest is only an index.
"""
from urllib.parse import unquote_plus

import xxhash

from gwcore._cachekey_py import SAFE_HEADERS, canonical_identity

__all__ = ["KeySpec", "SAFE_HEADERS", "digest", "with_vary", "canonical_identity"]

cdef object _xxh3_128_digest = xxhash.xxh3_128_digest
cdef object _xxh3_128_hexdigest = xxhash.xxh3_128_hexdigest


# length prefixes and counts of small sizes, made once: no allocation per field
cdef tuple _LP = tuple([f"{i}:" for i in range(512)])
cdef tuple _CNT = tuple([f"{i}#" for i in range(64)])


cdef inline str _enc(str s):
    return str(len(s)) + ":" + s


cdef inline void _add(list parts, str s):
    cdef Py_ssize_t n = len(s)
    if n < 512:
        parts.append(<str>_LP[n])
    else:
        parts.append(str(n) + ":")
    parts.append(s)


cdef inline str _count(Py_ssize_t n):
    if n < 64:
        return <str>_CNT[n]
    return str(n) + "#"


cdef class KeySpec:
    """The compiled cache-key declaration of one route (built at config time)."""

    def __init__(self, str namespace, path_params=(), query=(), headers=(),
                 strict=True, allowed_headers=None):
        self.namespace = namespace
        self.path_params = tuple(sorted(set(path_params)))
        self.query = tuple(sorted(set(query)))
        self.headers = tuple(sorted({h.lower() for h in headers}))
        self.strict = bool(strict)
        self.allowed = frozenset(SAFE_HEADERS if allowed_headers is None
                                 else (h.lower() for h in allowed_headers))
        self._qset = frozenset(self.query)
        self._hset = frozenset(self.headers)
        self._prefix = "gwc1" + _enc(namespace)

    cpdef object key(self, str method, object host, str path, object query,
                     object headers, object path_params, object identity=None,
                     object body=None):
        cdef bint strict = self.strict
        cdef list parts = [self._prefix]
        _add(parts, method)
        _add(parts, (<str>host).lower() if host else "")
        _add(parts, path)
        cdef str name, seg, q, k, v
        cdef object val, lst, pv
        cdef dict qvals, hvals
        cdef Py_ssize_t eq
        cdef frozenset qset, hset, allowed
        cdef tuple kv
        for name in self.path_params:
            pv = path_params.get(name) if path_params else None
            if pv is None:
                parts.append("~")
            else:
                _add(parts, <str>pv)
        if self.query:
            qvals = {}
        else:
            qvals = None
        if query:
            q = <str>query
            qset = self._qset
            for seg in q.split("&"):
                if not seg:
                    continue
                eq = seg.find("=")
                if eq < 0:
                    name = seg
                    val = None
                else:
                    name = seg[:eq]
                    val = seg[eq + 1:]
                if "%" in name or "+" in name:
                    name = unquote_plus(name)
                if name in qset:
                    lst = qvals.get(name)
                    if lst is None:
                        qvals[name] = [val]
                    else:
                        (<list>lst).append(val)
                elif strict:
                    return None
        for name in self.query:
            lst = qvals.get(name)
            if lst is None:
                parts.append("0#")
            else:
                parts.append(_count(len(<list>lst)))
                for val in <list>lst:
                    if val is None:
                        parts.append("~")
                    else:
                        _add(parts, <str>val)
        hset = self._hset
        allowed = self.allowed
        hvals = None
        for kv in headers:
            k = <str>kv[0]
            if k in hset:
                if hvals is None:
                    hvals = {}
                lst = hvals.get(k)
                if lst is None:
                    hvals[k] = [kv[1]]
                else:
                    (<list>lst).append(kv[1])
            elif strict and k not in allowed:
                return None
        for name in self.headers:
            lst = hvals.get(name) if hvals is not None else None
            if lst is None:
                parts.append("0#")
            else:
                parts.append(_count(len(<list>lst)))
                for val in <list>lst:
                    _add(parts, <str>val)
        if identity is None:
            parts.append("~")
        else:
            _add(parts, <str>identity)
        if body is None:
            parts.append("~")
        else:
            _add(parts, <str>_xxh3_128_hexdigest(body))
        return "".join(parts).encode("utf-8", "surrogatepass")


def with_vary(bytes canonical, names, headers):
    """Secondary key: ``canonical`` plus the request's values of the ``Vary`` headers."""
    cdef list parts = ["v", _count(len(names))]
    cdef str name
    cdef list vals
    cdef tuple kv
    for name in names:
        vals = [kv[1] for kv in headers if kv[0] == name]
        _add(parts, name)
        parts.append(_count(len(vals)))
        for v in vals:
            _add(parts, <str>v)
    return canonical + "".join(parts).encode("utf-8", "surrogatepass")


def digest(bytes canonical):
    """16-byte xxh3-128 digest of a canonical key."""
    return _xxh3_128_digest(canonical)
