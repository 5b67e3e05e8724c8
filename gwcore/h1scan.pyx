# cython: language_level=3
"""Strict one-pass scanners for the commonest HTTP/1.1 heads (compiled twin of
``gwcore._h1scan_py``; the rules are in that module's docstring).

They accept a deliberately narrow subset of what llhttp accepts and return None for
everything else, and the caller then parses the same bytes with llhttp (httptools) as
before: an accepted input must give exactly what llhttp would have given, which
tests/gwcore/test_h1scan.py checks differentially against llhttp on both twins.

The bytes object's terminating NUL (CPython keeps one after every bytes' data) is the
sentinel: no table admits byte 0, so every scanning loop stops at the end of the data.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport (PyUnicode_1BYTE_DATA, PyUnicode_1BYTE_KIND, PyUnicode_DecodeLatin1,
                              PyUnicode_GET_LENGTH, PyUnicode_KIND)
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcmp, memcpy

DEF MAX_FIELDS = 256

__all__ = ["scan_request", "scan_response", "scan_response_block", "fields", "answer"]

cdef unsigned char TCHAR[256]     # header-name characters (RFC 9110 token), lower-cased
cdef unsigned char VCHAR[256]     # header-value / reason characters: SP and VCHAR (0x20-0x7E)
cdef unsigned char UCHAR[256]     # request-target characters: VCHAR minus '#'

cdef void _tables():
    cdef int c
    for c in range(256):
        TCHAR[c] = 0
        VCHAR[c] = 1 if 0x20 <= c <= 0x7E else 0
        UCHAR[c] = 1 if (0x21 <= c <= 0x7E and c != 0x23) else 0
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz":
        TCHAR[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        TCHAR[c] = c + 32

_tables()

# the methods taken (interned str); anything else goes to llhttp
cdef str _GET = "GET", _HEAD = "HEAD", _POST = "POST", _PUT = "PUT", _DELETE = "DELETE"
cdef str _OPTIONS = "OPTIONS", _PATCH = "PATCH"
cdef str _V11 = "1.1"


cdef inline str _method(const unsigned char* s, Py_ssize_t n):
    if n == 3:
        if memcmp(s, b"GET", 3) == 0:
            return _GET
        if memcmp(s, b"PUT", 3) == 0:
            return _PUT
    elif n == 4:
        if memcmp(s, b"HEAD", 4) == 0:
            return _HEAD
        if memcmp(s, b"POST", 4) == 0:
            return _POST
    elif n == 5:
        if memcmp(s, b"PATCH", 5) == 0:
            return _PATCH
    elif n == 6:
        if memcmp(s, b"DELETE", 6) == 0:
            return _DELETE
    elif n == 7:
        if memcmp(s, b"OPTIONS", 7) == 0:
            return _OPTIONS
    return None


#: request header names common enough to hand out one str for each (no new str per request)
cdef tuple _COMMON = ("accept", "accept-encoding", "accept-language", "authorization",
                      "cache-control", "connection", "content-length", "content-type", "cookie",
                      "if-modified-since", "if-none-match", "origin", "pragma", "referer",
                      "user-agent", "x-api-key", "x-forwarded-for", "x-forwarded-proto",
                      "x-request-id")


cdef inline str _name(const unsigned char* lname, Py_ssize_t nl):
    """The str for a lower-cased header name: a shared one when it is a common name."""
    cdef str name
    for name in _COMMON:
        if PyUnicode_GET_LENGTH(name) == nl and \
                memcmp(PyUnicode_1BYTE_DATA(name), lname, nl) == 0:
            return name
    return PyUnicode_DecodeLatin1(<const char*>lname, nl, NULL)


cdef inline bint _ieq(const unsigned char* s, Py_ssize_t n, const char* lower):
    """s[:n] equals ``lower`` (lower-case, NUL-terminated) ignoring ASCII case."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if 0x41 <= c <= 0x5A:
            c += 32
        if c != <unsigned char>lower[i]:
            return False
    return lower[n] == 0


cdef inline int _conn_value(const unsigned char* s, Py_ssize_t n):
    """A Connection value taken here: 1 keep-alive, 0 close, -1 anything else."""
    if n == 10 and _ieq(s, n, b"keep-alive"):
        return 1
    if n == 5 and _ieq(s, n, b"close"):
        return 0
    return -1


cdef inline Py_ssize_t _field(const unsigned char* s, Py_ssize_t i, Py_ssize_t* ns,
                              Py_ssize_t* nl, Py_ssize_t* vs, Py_ssize_t* vl):
    """One ``name:OWS value CRLF`` line at ``i``: its spans, and the index after it; -1
    when it is not one taken here (no value, trailing whitespace, any other byte)."""
    ns[0] = i
    while TCHAR[s[i]]:
        i += 1
    nl[0] = i - ns[0]
    if nl[0] == 0 or s[i] != 0x3A:
        return -1
    i += 1
    while s[i] == 0x20 or s[i] == 0x09:
        i += 1
    vs[0] = i
    while VCHAR[s[i]]:
        i += 1
    vl[0] = i - vs[0]
    if vl[0] == 0 or s[i - 1] == 0x20 or s[i] != 0x0D or s[i + 1] != 0x0A:
        return -1
    return i + 2


def scan_request(bytes data, Py_ssize_t limit):
    """``(method, path, query, headers, host, keep_alive)`` when ``data`` is exactly one
    whole HTTP/1.1 request head of the taken kind with no body; else None."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n < 18 or n > limit:
        return None
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    if s[n - 4] != 0x0D or s[n - 3] != 0x0A or s[n - 2] != 0x0D or s[n - 1] != 0x0A:
        return None
    cdef Py_ssize_t i = 0, ps, q = -1, pe, ns, nl, vs, vl, k, counted
    cdef unsigned char lname[64]
    cdef bint keep = True, seen_cl = False
    cdef int cv
    while 0x41 <= s[i] <= 0x5A:
        i += 1
    if s[i] != 0x20:
        return None
    method = _method(s, i)
    if method is None:
        return None
    i += 1
    ps = i
    if s[i] != 0x2F:
        return None
    while UCHAR[s[i]]:
        if s[i] == 0x3F and q < 0:
            q = i
        i += 1
    pe = i
    if s[i] != 0x20 or i + 11 > n or memcmp(s + i + 1, b"HTTP/1.1\r\n", 10) != 0:
        return None
    i += 11
    headers = []
    host = None
    counted = pe - ps        # the head's size as the llhttp path counts it for its limit
    while s[i] != 0x0D:
        i = _field(s, i, &ns, &nl, &vs, &vl)
        if i < 0 or nl > 64:
            return None
        counted += nl + vl + 4
        if counted > limit:
            return None      # llhttp's path answers 431
        for k in range(nl):
            lname[k] = TCHAR[s[ns + k]]
        if nl == 4 and memcmp(lname, b"host", 4) == 0:
            value = PyUnicode_DecodeLatin1(<const char*>s + vs, vl, NULL)
            if host is None:
                host = value
            headers.append(("host", value))
            continue
        if nl == 14 and memcmp(lname, b"content-length", 14) == 0:
            if seen_cl or vl != 1 or s[vs] != 0x30:
                return None      # a body (or a doubtful length): llhttp frames it
            seen_cl = True
        elif nl == 10 and memcmp(lname, b"connection", 10) == 0:
            cv = _conn_value(s + vs, vl)
            if cv < 0:
                return None
            if cv == 0:
                keep = False
        elif (nl == 17 and memcmp(lname, b"transfer-encoding", 17) == 0) or \
                (nl == 7 and memcmp(lname, b"upgrade", 7) == 0) or \
                (nl == 6 and memcmp(lname, b"expect", 6) == 0) or \
                (nl == 16 and memcmp(lname, b"proxy-connection", 16) == 0):
            # (llhttp reads Proxy-Connection like Connection: not worth a second path)
            return None
        headers.append((_name(lname, nl), PyUnicode_DecodeLatin1(<const char*>s + vs, vl, NULL)))
    if i != n - 2:
        return None      # an empty line before the end: more than one message
    if q < 0:
        path = PyUnicode_DecodeLatin1(<const char*>s + ps, pe - ps, NULL)
        query = ""
    else:
        path = PyUnicode_DecodeLatin1(<const char*>s + ps, q - ps, NULL)
        query = PyUnicode_DecodeLatin1(<const char*>s + q + 1, pe - q - 1, NULL)
    return (method, path, query, headers, "" if host is None else host, keep)


cdef inline bint _hop(const unsigned char* s, Py_ssize_t n):
    """A hop-by-hop name (as gwcore.h1client drops them from what it forwards)."""
    if n == 2:
        return _ieq(s, n, b"te")
    if n == 7:
        return _ieq(s, n, b"trailer") or _ieq(s, n, b"upgrade")
    if n == 10:
        return _ieq(s, n, b"keep-alive")
    if n == 16:
        return _ieq(s, n, b"proxy-connection")
    if n == 18:
        return _ieq(s, n, b"proxy-authenticate")
    if n == 19:
        return _ieq(s, n, b"proxy-authorization")
    return False


def scan_response(bytes data):
    """``(status, headers, forward, content_length, keep_alive, body_start)`` when ``data``
    is exactly one whole HTTP/1.1 response of the taken kind (a final status other than
    204/304, one Content-Length, the whole body and nothing after it); else None.

    ``headers`` are as received (names in their case); ``forward`` is them minus the
    hop-by-hop ones, Connection and Content-Length."""
    return _scan_response(data, False)


def scan_response_block(bytes data):
    """What :func:`scan_response` takes, as ``(status, block, has_date, content_length,
    keep_alive, body_start)``: ``block`` is the forwarded headers written as
    ``fields(forward, (), None)`` would write them, ``has_date`` whether a Date is among
    them. None when scan_response gives None."""
    return _scan_response(data, True)


cdef object _scan_response(bytes data, bint block_mode):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n < 19:
        return None
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t i, ns, nl, vs, vl, k, total = 0, nf = 0, pos = 0
    cdef long long cl = -1
    cdef bint keep = True, has_date = False
    cdef int status, cv
    cdef Py_ssize_t spans[4 * MAX_FIELDS]
    cdef char* out
    if memcmp(s, b"HTTP/1.1 ", 9) != 0:
        return None
    for k in range(9, 12):
        if not (0x30 <= s[k] <= 0x39):
            return None
    status = (s[9] - 0x30) * 100 + (s[10] - 0x30) * 10 + (s[11] - 0x30)
    if status < 200 or status == 204 or status == 304 or s[12] != 0x20:
        return None
    i = 13
    while VCHAR[s[i]]:
        i += 1
    if s[i] != 0x0D or s[i + 1] != 0x0A:
        return None
    i += 2
    headers = forward = None
    if not block_mode:
        headers = []
        forward = []
    while s[i] != 0x0D:
        i = _field(s, i, &ns, &nl, &vs, &vl)
        if i < 0:
            return None
        if not block_mode:
            name = PyUnicode_DecodeLatin1(<const char*>s + ns, nl, NULL)
            value = PyUnicode_DecodeLatin1(<const char*>s + vs, vl, NULL)
            headers.append((name, value))
        if nl == 14 and _ieq(s + ns, nl, b"content-length"):
            if cl >= 0 or vl > 15:
                return None
            cl = 0
            for k in range(vs, vs + vl):
                if not (0x30 <= s[k] <= 0x39):
                    return None
                cl = cl * 10 + (s[k] - 0x30)
        elif nl == 10 and _ieq(s + ns, nl, b"connection"):
            cv = _conn_value(s + vs, vl)
            if cv < 0:
                return None
            if cv == 0:
                keep = False
        elif (nl == 17 and _ieq(s + ns, nl, b"transfer-encoding")) or \
                (nl == 16 and _ieq(s + ns, nl, b"proxy-connection")):
            return None
        elif not _hop(s + ns, nl):
            if not block_mode:
                forward.append((name, value))
            else:
                if nf == MAX_FIELDS:
                    return None
                spans[4 * nf] = ns
                spans[4 * nf + 1] = nl
                spans[4 * nf + 2] = vs
                spans[4 * nf + 3] = vl
                nf += 1
                total += nl + vl + 4
                if nl == 4 and _ieq(s + ns, nl, b"date"):
                    has_date = True
    if s[i + 1] != 0x0A or cl < 0 or n - (i + 2) != cl:
        return None
    if not block_mode:
        return (status, headers, forward, cl, keep, i + 2)
    block = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(block)
    for k in range(nf):
        ns = spans[4 * k]
        nl = spans[4 * k + 1]
        vs = spans[4 * k + 2]
        vl = spans[4 * k + 3]
        memcpy(out + pos, s + ns, nl)
        pos += nl
        out[pos] = 0x3A
        out[pos + 1] = 0x20
        pos += 2
        memcpy(out + pos, s + vs, vl)
        pos += vl
        out[pos] = 0x0D
        out[pos + 1] = 0x0A
        pos += 2
    return (status, block, has_date, cl, keep, i + 2)


# -- writing header fields ---------------------------------------------------------------



cdef inline bint _one_of(const unsigned char* s, Py_ssize_t n, tuple names):
    """``s[:n]`` (any case) is one of ``names`` (lower-case str)."""
    cdef object name
    for name in names:
        if PyUnicode_GET_LENGTH(name) == n and \
                _ieq(s, n, <const char*>PyUnicode_1BYTE_DATA(name)):
            return True
    return False


cdef inline bint _clean(const unsigned char* s, Py_ssize_t n):
    return memchr(s, 0x0D, n) == NULL and memchr(s, 0x0A, n) == NULL and memchr(s, 0, n) == NULL


def fields(list headers, tuple drop, str flag, str head=None, str tail=None):
    """``(block, flagged)``: ``name: value CRLF`` for each of ``headers`` (``(str, str)``
    pairs) whose name is not one of ``drop`` (lower-case names, any case matches), as
    latin-1 bytes, and whether a header named ``flag`` was among them (kept). ``head`` and
    ``tail`` (latin-1 str), when given, are written before and after the lines, in the same
    bytes. None when a pair is not two latin-1 str without CR, LF or NUL, or there are more
    than 256: the caller's general path decides then."""
    cdef Py_ssize_t n = len(headers), total = 0, i, nk, nv, pos = 0, nh = 0, nt = 0
    if head is not None:
        if PyUnicode_KIND(head) != PyUnicode_1BYTE_KIND:
            return None
        nh = PyUnicode_GET_LENGTH(head)
    if tail is not None:
        if PyUnicode_KIND(tail) != PyUnicode_1BYTE_KIND:
            return None
        nt = PyUnicode_GET_LENGTH(tail)
    cdef unsigned char keep[MAX_FIELDS]
    cdef bint flagged = False
    cdef tuple kv
    cdef object k, v
    cdef const unsigned char* ks
    cdef char* out
    if n > MAX_FIELDS:
        return None
    for i in range(n):
        item = headers[i]
        if type(item) is not tuple or len(<tuple>item) != 2:
            return None
        kv = <tuple>item
        k = kv[0]
        v = kv[1]
        if type(k) is not str or type(v) is not str or \
                PyUnicode_KIND(k) != PyUnicode_1BYTE_KIND or PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND:
            return None
        nk = PyUnicode_GET_LENGTH(k)
        nv = PyUnicode_GET_LENGTH(v)
        ks = PyUnicode_1BYTE_DATA(k)
        if not _clean(ks, nk) or not _clean(PyUnicode_1BYTE_DATA(v), nv):
            return None
        if _one_of(ks, nk, drop):
            keep[i] = 0
            continue
        keep[i] = 1
        if flag is not None and not flagged and PyUnicode_GET_LENGTH(flag) == nk and \
                _ieq(ks, nk, <const char*>PyUnicode_1BYTE_DATA(flag)):
            flagged = True
        total += nk + nv + 4
    block = PyBytes_FromStringAndSize(NULL, total + nh + nt)
    out = PyBytes_AS_STRING(block)
    if nh:
        memcpy(out, PyUnicode_1BYTE_DATA(head), nh)
        pos = nh
    for i in range(n):
        if not keep[i]:
            continue
        kv = <tuple>headers[i]
        k = kv[0]
        v = kv[1]
        nk = PyUnicode_GET_LENGTH(k)
        nv = PyUnicode_GET_LENGTH(v)
        memcpy(out + pos, PyUnicode_1BYTE_DATA(k), nk)
        pos += nk
        out[pos] = 0x3A
        out[pos + 1] = 0x20
        pos += 2
        memcpy(out + pos, PyUnicode_1BYTE_DATA(v), nv)
        pos += nv
        out[pos] = 0x0D
        out[pos + 1] = 0x0A
        pos += 2
    if nt:
        memcpy(out + pos, PyUnicode_1BYTE_DATA(tail), nt)
    return (block, flagged)


def answer(tuple parts, bytes body, bint close):
    """A whole response in one bytes: ``parts`` (bytes: the status line and header lines),
    then ``content-length``, ``connection: close`` when ``close``, the empty line, and
    ``body``."""
    cdef Py_ssize_t total = 0, pos = 0, nb = PyBytes_GET_SIZE(body), n
    cdef object part
    cdef char cl[24]
    cdef int ncl = snprintf(cl, 24, b"%zd", nb)
    cdef char* out
    for part in parts:
        total += PyBytes_GET_SIZE(<bytes?>part)
    total += 16 + ncl + 2 + (19 if close else 0) + 2 + nb
    res = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(res)
    for part in parts:
        n = PyBytes_GET_SIZE(<bytes>part)
        memcpy(out + pos, PyBytes_AS_STRING(<bytes>part), n)
        pos += n
    memcpy(out + pos, b"content-length: ", 16)
    pos += 16
    memcpy(out + pos, cl, ncl)
    pos += ncl
    memcpy(out + pos, b"\r\n", 2)
    pos += 2
    if close:
        memcpy(out + pos, b"connection: close\r\n", 19)
        pos += 19
    memcpy(out + pos, b"\r\n", 2)
    pos += 2
    memcpy(out + pos, PyBytes_AS_STRING(body), nb)
    return res
