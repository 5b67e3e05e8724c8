"""Strict one-pass scanners for the commonest HTTP/1.1 heads (pure-Python twin of
gwcore.h1scan).

The front end and the upstream client parse with llhttp (httptools), whose callbacks cost
a Python-level call per header. Most traffic is a handful of shapes: a body-less GET in
one read, a response with a Content-Length and its whole body in one read. These
scanners take exactly those, in one pass, and return None for anything else; the caller
then feeds the same bytes to llhttp as before. So they may only ever be stricter than
llhttp, never looser, and what they return for an input they take must equal what the
llhttp path makes of it (tests/gwcore/test_h1scan.py checks both twins against llhttp).

Taken (``scan_request(data, limit)``): ``data`` is exactly one request head, at most
``limit`` bytes (and at most ``limit`` as the front end counts a head for its 431: the
target plus name, value and 4 per header), ending in the empty line, nothing after it:
- ``METHOD SP target SP HTTP/1.1 CRLF`` with METHOD one of GET HEAD POST PUT DELETE
  OPTIONS PATCH, and an origin-form target (``/`` then bytes 0x21-0x7E except ``#``);
- header lines ``name ":" OWS value CRLF``: name a token, value non-empty, bytes 0x20-0x7E,
  no trailing whitespace (no obs-fold, no bare LF, no control bytes, no obs-text);
- no Transfer-Encoding, Upgrade, Expect or Proxy-Connection (llhttp reads the last like
  Connection); Content-Length only as one ``0``; Connection only ``keep-alive`` or
  ``close``.
It gives ``(method, path, query, headers, host, keep_alive)``: the target split at the
first ``?``; header names lower-cased, values as sent (latin-1); ``host`` the first Host
value or "".

Taken (``scan_response(data)``): exactly one response: ``HTTP/1.1 DDD reason CRLF`` with a
final status other than 204 and 304, header lines as above, exactly one Content-Length
(1-15 digits), no Transfer-Encoding or Proxy-Connection, Connection only ``keep-alive`` or ``close``, and then
exactly Content-Length body bytes. It gives ``(status, headers, forward, content_length,
keep_alive, body_start)``: headers as received, ``forward`` without the hop-by-hop ones,
Connection and Content-Length (what gwcore.h1client forwards).

``fields(headers, drop, flag)`` writes header pairs as they go out (see its docstring): the
one copy of the bytes both encoders (client answers, upstream requests) need.
"""
from __future__ import annotations

import re

__all__ = ["scan_request", "scan_lane", "lane_key", "lane_head", "scan_response",
           "scan_response_block", "relay", "fields", "answer"]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([ -~]*[!-~])\r\n")
_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[!-\"$-~]*) HTTP/1\.1\r\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([0-9]{3}) [ -~]*\r\n")
_HOP = frozenset(("te", "trailer", "upgrade", "keep-alive", "proxy-connection",
                  "proxy-authenticate", "proxy-authorization"))
_REFUSED = frozenset(("transfer-encoding", "upgrade", "expect", "proxy-connection"))
_CONN = {"keep-alive": True, "close": False}
#: what gwcore.h1client.REQUEST_DROP names (h1client imports this module, so it is written
#: again here; tests/gwcore/test_h1scan_lane.py checks that the two agree)
_REQUEST_DROP = _HOP | frozenset((
    "connection", "transfer-encoding", "host", "content-length", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host", "forwarded"))


def _fields(data: bytes, i: int):
    """The header lines from ``i`` up to the empty line, and the index of that line's CR;
    None when a line is not one taken here."""
    out = []
    match = _LINE.match
    while data[i:i + 1] != b"\r":
        m = match(data, i)
        if m is None:
            return None
        out.append((m.group(1).decode("latin-1"), m.group(2).decode("latin-1")))
        i = m.end()
    return out, i


def scan_request(data: bytes, limit: int):
    n = len(data)
    if n < 18 or n > limit or not data.endswith(b"\r\n\r\n"):
        return None
    m = _REQUEST_LINE.match(data)
    if m is None:
        return None
    got = _fields(data, m.end())
    if got is None or got[1] != n - 2:
        return None
    # the head's size as the llhttp path counts it for its limit (431 there)
    if len(m.group(2)) + sum(len(k) + len(v) + 4 for k, v in got[0]) > limit:
        return None
    headers = []
    host = None
    keep = True
    seen_cl = False
    for name, value in got[0]:
        if len(name) > 64:
            return None
        name = name.lower()
        if name == "host":
            if host is None:
                host = value
        elif name == "content-length":
            if seen_cl or value != "0":
                return None
            seen_cl = True
        elif name == "connection":
            k = _CONN.get(value.lower())
            if k is None:
                return None
            keep = keep and k
        elif name in _REFUSED:
            return None
        headers.append((name, value))
    target = m.group(2).decode("latin-1")
    path, _, query = target.partition("?")
    return (m.group(1).decode("latin-1"), path, query, headers, host or "", keep)


def scan_lane(data: bytes, limit: int, lanes: dict):
    """:func:`scan_request` for a front end that keeps forwarding lanes: ``lanes`` maps
    :func:`lane_key` bytes to lanes. None when the head is not taken; ``(lane,
    keep_alive)`` when ``lanes`` has one for its method, path and Host (nothing else is
    made of the head then); else scan_request's 6-tuple."""
    r = scan_request(data, limit)
    if r is None:
        return None
    lane = lanes.get(lane_key(r[0], r[1], r[4]))
    if lane is not None:
        return (lane, r[5])
    return r


def lane_key(method: str, path: str, host: str) -> bytes:
    """The key :func:`scan_lane` looks lanes up by: ``method SP path SP host`` (latin-1)."""
    return f"{method} {path} {host}".encode("latin-1")


def lane_head(data: bytes, path: str, fixed_query: str, host: str, peer: str, fwd_port: str,
              framing: str):
    """The upstream request head for the request head ``data`` (one scan_request takes),
    forwarded to ``path`` (the query appended after ``fixed_query``): the client's headers
    minus those gwcore.h1client.outgoing_headers drops, names lower-cased, then Host,
    X-Forwarded-For (the client's chain, then ``peer``), -Proto and -Port, and
    ``framing``; the bytes h1client.encode_head writes for outgoing_headers' list. None
    when it is not taken here (a str not latin-1, more than 256 header lines): the lists
    path decides then."""
    r = scan_request(data, 1 << 62)
    if r is None or len(r[3]) > 256:
        return None
    if not all(_latin1(x) for x in (path, fixed_query, host, peer, fwd_port, framing)):
        return None
    method, _, query, headers, _, keep = r
    q = fixed_query + "&" + query if fixed_query and query else fixed_query or query
    lines = [f"{method} {path}{'?' + q if q else ''} HTTP/1.1\r\n"]
    xff = [v for k, v in headers if k == "x-forwarded-for"]
    for k, v in headers:
        if k in _REQUEST_DROP or (k == "close" and not keep):
            continue
        lines.append(f"{k}: {v}\r\n")
    chain = ", ".join(xff + [peer])
    lines.append(f"host: {host}\r\nx-forwarded-for: {chain}\r\nx-forwarded-proto: http\r\n"
                 f"x-forwarded-port: {fwd_port}\r\n{framing}\r\n")
    return "".join(lines).encode("latin-1")


def scan_response(data: bytes):
    m = _STATUS_LINE.match(data)
    if m is None:
        return None
    status = int(m.group(1))
    if status < 200 or status == 204 or status == 304:
        return None
    got = _fields(data, m.end())
    if got is None or data[got[1]:got[1] + 2] != b"\r\n":
        return None
    headers, i = got
    forward = []
    cl = -1
    keep = True
    for name, value in headers:
        low = name.lower()
        if low == "content-length":
            if cl >= 0 or len(value) > 15 or not value.isdigit() or not value.isascii():
                return None
            cl = int(value)
        elif low == "connection":
            k = _CONN.get(value.lower())
            if k is None:
                return None
            keep = keep and k
        elif low == "transfer-encoding" or low == "proxy-connection":
            return None
        elif low not in _HOP:
            forward.append((name, value))
    start = i + 2
    if cl < 0 or len(data) - start != cl:
        return None
    return (status, headers, forward, cl, keep, start)


def scan_response_block(data: bytes):
    """What :func:`scan_response` takes, as ``(status, block, has_date, content_length,
    keep_alive, body_start)``: ``block`` is the forwarded headers written as
    ``fields(forward, (), None)`` would write them, ``has_date`` whether a Date is among
    them. None when scan_response gives None."""
    r = scan_response(data)
    if r is None:
        return None
    status, _, forward, cl, keep, start = r
    if len(forward) > 256:
        return None
    block, has_date = fields(forward, (), "date")
    return (status, block, has_date, cl, keep, start)


#: the largest body relay() writes in one buffer (as Exchange.response_lines does)
RELAY_MAX = 65535


def relay(data: bytes, ok_line: bytes, date: bytes, rid_line: bytes, rid: str, close: bool):
    """The client's answer for a whole upstream ``200`` response ``data`` (one
    scan_response_block takes, body under 64 KiB), in one bytes: ``ok_line``, ``date``
    unless the response has a Date, its forwarded header lines, ``rid_line`` + ``rid`` +
    CRLF, the Content-Length, ``connection: close`` when ``close``, the empty line, the
    body: what Exchange.response_lines writes for it. ``(answer, upstream_keep_alive)``;
    None for anything else."""
    if not _latin1(rid):
        return None
    r = scan_response_block(data)
    if r is None:
        return None
    status, block, has_date, cl, keep, start = r
    if status != 200 or cl > RELAY_MAX:
        return None
    return (answer((ok_line, b"" if has_date else date, block, rid_line, rid.encode("latin-1"),
                    b"\r\n"), data[start:], close), keep)


def fields(headers: list, drop: tuple, flag: str | None, head: str | None = None,
           tail: str | None = None):
    """``(block, flagged)``: ``name: value CRLF`` for each of ``headers`` (``(str, str)``
    pairs) whose name is not one of ``drop`` (lower-case names, any case matches), as
    latin-1 bytes, and whether a header named ``flag`` was among them (kept). ``head`` and
    ``tail`` (latin-1 str), when given, are written before and after the lines, in the same
    bytes. None when a pair is not two latin-1 str without CR, LF or NUL, or there are more
    than 256: the caller's general path decides then."""
    if len(headers) > 256:
        return None
    if (head is not None and not _latin1(head)) or (tail is not None and not _latin1(tail)):
        return None
    parts = [head] if head else []
    flagged = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            return None
        k, v = item
        if type(k) is not str or type(v) is not str or not _latin1(k) or not _latin1(v):
            return None
        if "\r" in k or "\n" in k or "\0" in k or "\r" in v or "\n" in v or "\0" in v:
            return None
        lk = k.lower()
        if lk in drop:
            continue
        if lk == flag:
            flagged = True
        parts.append(f"{k}: {v}\r\n")
    if tail:
        parts.append(tail)
    return "".join(parts).encode("latin-1"), flagged


def answer(parts: tuple, body: bytes, close: bool) -> bytes:
    """A whole response in one bytes: ``parts`` (bytes: the status line and header lines),
    then ``content-length``, ``connection: close`` when ``close``, the empty line, and
    ``body``."""
    return b"".join(parts) + b"content-length: %d\r\n%s\r\n" % (
        len(body), b"connection: close\r\n" if close else b"") + body


def _latin1(s: str) -> bool:
    return s.isascii() or max(s) <= "\xff"
