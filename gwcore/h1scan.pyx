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
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport (PyUnicode_1BYTE_DATA, PyUnicode_1BYTE_KIND, PyUnicode_DecodeLatin1,
                              PyUnicode_GET_LENGTH, PyUnicode_KIND)
from libc.string cimport memchr, memcmp, memcpy

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

DEF MAX_FIELDS = 256

__all__ = ["scan_request", "scan_lane", "lane_key", "lane_head", "scan_response",
           "scan_response_block", "relay", "fields", "answer"]

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


cdef struct _Req:
    PyObject* method        # one of the module's method str (they live as long as it)
    Py_ssize_t ps, q, pe    # path start, its first '?' (-1: none), target end
    Py_ssize_t hs, hl       # the first Host value's span (hs -1: none)
    Py_ssize_t fields       # where the header lines start
    Py_ssize_t nf           # how many there are
    bint keep               # keep-alive (no Connection: close)


cdef bint _scan_req(const unsigned char* s, Py_ssize_t n, Py_ssize_t limit, _Req* r):
    """The one pass every request scan makes: whether ``s[:n]`` is a head taken here (the
    rules in gwcore._h1scan_py), and where its parts are."""
    if n < 18 or n > limit:
        return False
    if s[n - 4] != 0x0D or s[n - 3] != 0x0A or s[n - 2] != 0x0D or s[n - 1] != 0x0A:
        return False
    cdef Py_ssize_t i = 0, ns, nl, vs, vl, k, counted
    cdef unsigned char lname[64]
    cdef bint seen_cl = False
    cdef int cv
    cdef str m
    while 0x41 <= s[i] <= 0x5A:
        i += 1
    if s[i] != 0x20:
        return False
    m = _method(s, i)
    if m is None:
        return False
    r.method = <PyObject*>m
    i += 1
    r.ps = i
    r.q = -1
    if s[i] != 0x2F:
        return False
    while UCHAR[s[i]]:
        if s[i] == 0x3F and r.q < 0:
            r.q = i
        i += 1
    r.pe = i
    if s[i] != 0x20 or i + 11 > n or memcmp(s + i + 1, b"HTTP/1.1\r\n", 10) != 0:
        return False
    i += 11
    r.fields = i
    r.nf = 0
    r.hs = -1
    r.hl = 0
    r.keep = True
    counted = r.pe - r.ps    # the head's size as the llhttp path counts it for its limit
    while s[i] != 0x0D:
        i = _field(s, i, &ns, &nl, &vs, &vl)
        if i < 0 or nl > 64:
            return False
        r.nf += 1
        counted += nl + vl + 4
        if counted > limit:
            return False     # llhttp's path answers 431
        for k in range(nl):
            lname[k] = TCHAR[s[ns + k]]
        if nl == 4 and memcmp(lname, b"host", 4) == 0:
            if r.hs < 0:
                r.hs = vs
                r.hl = vl
        elif nl == 14 and memcmp(lname, b"content-length", 14) == 0:
            if seen_cl or vl != 1 or s[vs] != 0x30:
                return False     # a body (or a doubtful length): llhttp frames it
            seen_cl = True
        elif nl == 10 and memcmp(lname, b"connection", 10) == 0:
            cv = _conn_value(s + vs, vl)
            if cv < 0:
                return False
            if cv == 0:
                r.keep = False
        elif (nl == 17 and memcmp(lname, b"transfer-encoding", 17) == 0) or \
                (nl == 7 and memcmp(lname, b"upgrade", 7) == 0) or \
                (nl == 6 and memcmp(lname, b"expect", 6) == 0) or \
                (nl == 16 and memcmp(lname, b"proxy-connection", 16) == 0):
            # (llhttp reads Proxy-Connection like Connection: not worth a second path)
            return False
    return i == n - 2        # else an empty line before the end: more than one message


#: the last head scan_lane found a lane for, and its scan: lane_head, asked for that same
#: bytes object next (Lane.forward), reuses the scan instead of making it again
cdef object _lane_data = None
cdef _Req _lane_req


cdef tuple _request_tuple(const unsigned char* s, _Req* r):
    """scan_request's answer for a head _scan_req took."""
    cdef Py_ssize_t i = r.fields, ns, nl, vs, vl, k, j
    cdef unsigned char lname[64]
    headers = []
    for j in range(r.nf):
        i = _field(s, i, &ns, &nl, &vs, &vl)
        for k in range(nl):
            lname[k] = TCHAR[s[ns + k]]
        if nl == 4 and memcmp(lname, b"host", 4) == 0:
            headers.append(("host", PyUnicode_DecodeLatin1(<const char*>s + vs, vl, NULL)))
        else:
            headers.append((_name(lname, nl),
                            PyUnicode_DecodeLatin1(<const char*>s + vs, vl, NULL)))
    if r.q < 0:
        path = PyUnicode_DecodeLatin1(<const char*>s + r.ps, r.pe - r.ps, NULL)
        query = ""
    else:
        path = PyUnicode_DecodeLatin1(<const char*>s + r.ps, r.q - r.ps, NULL)
        query = PyUnicode_DecodeLatin1(<const char*>s + r.q + 1, r.pe - r.q - 1, NULL)
    host = "" if r.hs < 0 else PyUnicode_DecodeLatin1(<const char*>s + r.hs, r.hl, NULL)
    return (<object>r.method, path, query, headers, host, r.keep)


cdef inline Py_ssize_t _digits(char* out, long long v):
    """``v`` (>= 0) in decimal at ``out``; how many digits."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, k
    while True:
        tmp[n] = <char>(0x30 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for k in range(n):
        out[k] = tmp[n - 1 - k]
    return n


cdef inline Py_ssize_t _put(char* out, Py_ssize_t pos, const void* src, Py_ssize_t n):
    memcpy(out + pos, src, n)
    return pos + n


def scan_request(bytes data, Py_ssize_t limit):
    """``(method, path, query, headers, host, keep_alive)`` when ``data`` is exactly one
    whole HTTP/1.1 request head of the taken kind with no body; else None."""
    cdef _Req r
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    if not _scan_req(s, PyBytes_GET_SIZE(data), limit, &r):
        return None
    return _request_tuple(s, &r)


cpdef object scan_lane(bytes data, Py_ssize_t limit, dict lanes):
    """:func:`scan_request` for a front end that keeps forwarding lanes: ``lanes`` maps
    :func:`lane_key` bytes to lanes. None when the head is not taken; ``(lane,
    keep_alive)`` when ``lanes`` has one for its method, path and Host (nothing else is
    made of the head then); else scan_request's 6-tuple."""
    cdef _Req r
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t ml, pl, hl, pe
    cdef char* out
    if not _scan_req(s, PyBytes_GET_SIZE(data), limit, &r):
        return None
    # the key: method SP path SP host (none of them holds a space)
    ml = r.ps - 1
    pe = r.pe if r.q < 0 else r.q
    pl = pe - r.ps
    hl = r.hl if r.hs >= 0 else 0
    key = PyBytes_FromStringAndSize(NULL, ml + 1 + pl + 1 + hl)
    out = PyBytes_AS_STRING(key)
    memcpy(out, s, ml + 1 + pl)          # "METHOD /path"
    out[ml + 1 + pl] = 0x20
    if hl:
        memcpy(out + ml + 2 + pl, s + r.hs, hl)
    lane = lanes.get(key)
    if lane is not None:
        global _lane_data, _lane_req
        _lane_data = data
        _lane_req = r
        return (lane, r.keep)
    return _request_tuple(s, &r)


def lane_key(str method, str path, str host):
    """The key :func:`scan_lane` looks lanes up by: ``method SP path SP host`` (latin-1)."""
    return f"{method} {path} {host}".encode("latin-1")


cdef inline bint _request_drop(const unsigned char* s, Py_ssize_t n, bint close):
    """A request header name (any case) the gateway does not forward as sent: hop-by-hop
    (:func:`_hop`, Connection, Transfer-Encoding), framing and what it sets itself
    (gwcore.h1client.REQUEST_DROP), and "close" after a ``Connection: close`` (it drops the
    names Connection lists)."""
    if _hop(s, n):
        return True
    if n == 4:
        return _ieq(s, n, b"host")
    if n == 5:
        return close and _ieq(s, n, b"close")
    if n == 9:
        return _ieq(s, n, b"forwarded")
    if n == 10:
        return _ieq(s, n, b"connection")
    if n == 14:
        return _ieq(s, n, b"content-length")
    if n == 15:
        return _ieq(s, n, b"x-forwarded-for")
    if n == 16:
        return _ieq(s, n, b"x-forwarded-port") or _ieq(s, n, b"x-forwarded-host")
    if n == 17:
        return _ieq(s, n, b"x-forwarded-proto") or _ieq(s, n, b"transfer-encoding")
    return False


cpdef object lane_head(bytes data, str path, str fixed_query, str host, str peer, str fwd_port,
              str framing):
    """The upstream request head for the request head ``data`` (one scan_request takes),
    forwarded to ``path`` (the query appended after ``fixed_query``): the client's headers
    minus those gwcore.h1client.outgoing_headers drops, names lower-cased, then Host,
    X-Forwarded-For (the client's chain, then ``peer``), -Proto and -Port, and
    ``framing``; the bytes h1client.encode_head writes for outgoing_headers' list. None
    when it is not taken here (a str not latin-1, more than 256 header lines): the lists
    path decides then."""
    cdef _Req r
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t i, j, k, ns, nl, vs, vl, total, pos = 0, nq, nxff = 0, xffl = 0
    cdef Py_ssize_t spans[4 * MAX_FIELDS]
    cdef unsigned char keep[MAX_FIELDS]    # per line: 0 dropped, 1 forwarded, 2 X-Forwarded-For
    cdef char* out
    cdef str piece
    for piece in (path, fixed_query, host, peer, fwd_port, framing):
        if PyUnicode_KIND(piece) != PyUnicode_1BYTE_KIND:
            return None
    if data is _lane_data:
        r = _lane_req           # (scan_lane's scan of these very bytes)
    elif not _scan_req(s, PyBytes_GET_SIZE(data), PY_SSIZE_T_MAX, &r):
        return None
    if r.nf > MAX_FIELDS:
        return None
    nq = r.pe - r.q - 1 if r.q >= 0 else 0
    method = <str>r.method
    total = (PyUnicode_GET_LENGTH(method) + 1 + PyUnicode_GET_LENGTH(path) + 11
             + 6 + PyUnicode_GET_LENGTH(host) + 2
             + 17 + PyUnicode_GET_LENGTH(peer) + 2
             + 25 + 18 + PyUnicode_GET_LENGTH(fwd_port) + 2
             + PyUnicode_GET_LENGTH(framing) + 2)
    if PyUnicode_GET_LENGTH(fixed_query):
        total += 1 + PyUnicode_GET_LENGTH(fixed_query) + (1 + nq if nq else 0)
    elif nq:
        total += 1 + nq
    i = r.fields
    for j in range(r.nf):
        i = _field(s, i, &ns, &nl, &vs, &vl)
        spans[4 * j] = ns
        spans[4 * j + 1] = nl
        spans[4 * j + 2] = vs
        spans[4 * j + 3] = vl
        keep[j] = 0
        if nl == 15 and _ieq(s + ns, nl, b"x-forwarded-for"):
            keep[j] = 2
            xffl += vl + (2 if nxff else 0)
            nxff += 1
        elif not _request_drop(s + ns, nl, not r.keep):
            keep[j] = 1
            total += nl + vl + 4
    if nxff:
        total += xffl + 2
    res = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(res)
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(method), PyUnicode_GET_LENGTH(method))
    out[pos] = 0x20
    pos = _put(out, pos + 1, PyUnicode_1BYTE_DATA(path), PyUnicode_GET_LENGTH(path))
    if PyUnicode_GET_LENGTH(fixed_query):
        out[pos] = 0x3F
        pos = _put(out, pos + 1, PyUnicode_1BYTE_DATA(fixed_query), PyUnicode_GET_LENGTH(fixed_query))
        if nq:
            out[pos] = 0x26
            pos = _put(out, pos + 1, s + r.q + 1, nq)
    elif nq:
        out[pos] = 0x3F
        pos = _put(out, pos + 1, s + r.q + 1, nq)
    pos = _put(out, pos, b" HTTP/1.1\r\n", 11)
    for j in range(r.nf):
        if keep[j] != 1:
            continue
        ns = spans[4 * j]
        nl = spans[4 * j + 1]
        for k in range(nl):
            out[pos + k] = TCHAR[s[ns + k]]
        pos += nl
        out[pos] = 0x3A
        out[pos + 1] = 0x20
        pos = _put(out, pos + 2, s + spans[4 * j + 2], spans[4 * j + 3])
        out[pos] = 0x0D
        out[pos + 1] = 0x0A
        pos += 2
    pos = _put(out, pos, b"host: ", 6)
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(host), PyUnicode_GET_LENGTH(host))
    pos = _put(out, pos, b"\r\nx-forwarded-for: ", 19)
    if nxff:
        k = 0
        for j in range(r.nf):
            if keep[j] == 2:
                if k:
                    pos = _put(out, pos, b", ", 2)
                pos = _put(out, pos, s + spans[4 * j + 2], spans[4 * j + 3])
                k += 1
        pos = _put(out, pos, b", ", 2)
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(peer), PyUnicode_GET_LENGTH(peer))
    pos = _put(out, pos, b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ", 45)
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(fwd_port), PyUnicode_GET_LENGTH(fwd_port))
    pos = _put(out, pos, b"\r\n", 2)
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(framing), PyUnicode_GET_LENGTH(framing))
    pos = _put(out, pos, b"\r\n", 2)
    assert pos == total
    return res


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


#: the largest body relay() writes in one buffer (as Exchange.response_lines does)
DEF RELAY_MAX = 65535


cpdef object relay(bytes data, bytes ok_line, bytes date, bytes rid_line, str rid, bint close):
    """The client's answer for a whole upstream ``200`` response ``data`` (one
    scan_response_block takes, body under 64 KiB), in one bytes: ``ok_line``, ``date``
    unless the response has a Date, its forwarded header lines, ``rid_line`` + ``rid`` +
    CRLF, the Content-Length, ``connection: close`` when ``close``, the empty line, the
    body: what Exchange.response_lines writes for it. ``(answer, upstream_keep_alive)``;
    None for anything else."""
    if PyUnicode_KIND(rid) != PyUnicode_1BYTE_KIND:
        return None
    return _scan_response(data, True, ok_line, date, rid_line, rid, close)


cdef object _scan_response(bytes data, bint block_mode, bytes ok_line=None, bytes date=None,
                           bytes rid_line=None, str rid=None, bint close=False):
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
    cdef Py_ssize_t ncl = 0, nrid = 0
    cdef char clbuf[24]
    if ok_line is not None:
        # relay(): the whole answer around the header lines
        if status != 200 or cl > RELAY_MAX:
            return None
        ncl = _digits(clbuf, cl)
        nrid = PyUnicode_GET_LENGTH(rid)
        block = PyBytes_FromStringAndSize(
            NULL, PyBytes_GET_SIZE(ok_line) + (0 if has_date else PyBytes_GET_SIZE(date)) + total
            + PyBytes_GET_SIZE(rid_line) + nrid + 2 + 16 + ncl + 2 + (19 if close else 0) + 2 + cl)
        out = PyBytes_AS_STRING(block)
        pos = _put(out, 0, PyBytes_AS_STRING(ok_line), PyBytes_GET_SIZE(ok_line))
        if not has_date:
            pos = _put(out, pos, PyBytes_AS_STRING(date), PyBytes_GET_SIZE(date))
    else:
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
    if ok_line is None:
        return (status, block, has_date, cl, keep, i + 2)
    pos = _put(out, pos, PyBytes_AS_STRING(rid_line), PyBytes_GET_SIZE(rid_line))
    pos = _put(out, pos, PyUnicode_1BYTE_DATA(rid), nrid)
    pos = _put(out, pos, b"\r\ncontent-length: ", 18)
    pos = _put(out, pos, clbuf, ncl)
    pos = _put(out, pos, b"\r\n", 2)
    if close:
        pos = _put(out, pos, b"connection: close\r\n", 19)
    pos = _put(out, pos, b"\r\n", 2)
    pos = _put(out, pos, s + i + 2, cl)
    assert pos == PyBytes_GET_SIZE(block)
    return (block, keep)


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
    cdef Py_ssize_t ncl = _digits(cl, nb)
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
