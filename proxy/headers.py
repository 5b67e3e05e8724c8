"""Header rules shared by the request and response paths (RFC 9110 section 7.6.1)."""
from __future__ import annotations

#: always hop-by-hop, never forwarded either way
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
))

#: set by the gateway itself on the way to the upstream
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-forwarded-for", "x-forwarded-proto",
                             "x-forwarded-port", "x-forwarded-host", "forwarded"}


def connection_tokens(headers) -> frozenset | None:
    """Names listed in Connection headers (lower-case), or None when there is none."""
    toks = None
    for k, v in headers:
        if len(k) == 10 and k.lower() == "connection":
            if toks is None:
                toks = set()
            for t in v.split(","):
                t = t.strip().lower()
                if t:
                    toks.add(t)
    return frozenset(toks) if toks is not None else None


def strip_request(headers, named: frozenset | None, drop=REQUEST_DROP) -> list:
    """Client headers minus hop-by-hop ones, those named in Connection (``named``, from
    :func:`connection_tokens`), and those the gateway sets itself (names are lower-case
    here, as granian gives them)."""
    if named:
        return [(k, v) for k, v in headers if k not in drop and k not in named]
    return [(k, v) for k, v in headers if k not in drop]


def strip_response(headers) -> list:
    """Upstream response headers minus hop-by-hop ones and those named in Connection, and
    minus Content-Length (the server recomputes framing)."""
    named = connection_tokens(headers)
    out = []
    for k, v in headers:
        lk = k.lower()
        if lk in HOP_BY_HOP or lk == "content-length" or (named and lk in named):
            continue
        out.append((k, v))
    return out
