"""Cache entries, the rules that decide whether a response may be stored, and the byte
format entries have in Redis."""
from __future__ import annotations

import struct

import orjson

__all__ = ["Entry", "VaryEntry", "storable", "response_headers_for_store", "encode", "decode",
           "ENTRY_OVERHEAD"]

#: bytes charged per entry on top of its body, headers and key (Python objects, dict slot)
ENTRY_OVERHEAD = 400

#: response headers never stored (recomputed or meaningless on a hit)
_DROP = frozenset(("age", "content-length", "transfer-encoding", "connection", "keep-alive",
                   "x-cache", "proxy-connection", "trailer", "upgrade"))


class Entry:
    """One cached response. ``canon`` is the full canonical key (verified on every hit)."""

    __slots__ = ("canon", "status", "headers", "body", "stored", "expires", "size", "route", "vary")

    def __init__(self, canon: bytes, status: int, headers: list, body: bytes, stored: float,
                 expires: float, route: str, vary: tuple | None = None):
        self.canon = canon
        self.status = status
        self.headers = headers
        self.body = body
        self.stored = stored          # wall clock (time.time()), for Age
        self.expires = expires        # wall clock
        self.route = route
        self.vary = vary
        self.size = (ENTRY_OVERHEAD + len(canon) + len(body)
                     + sum(len(k) + len(v) + 16 for k, v in headers))


class VaryEntry:
    """Stored at the primary key of a response that had ``Vary``: which request headers
    select the variant (stored under ``with_vary(canon, names, headers)``)."""

    __slots__ = ("canon", "names", "expires", "size", "route")

    def __init__(self, canon: bytes, names: tuple, expires: float, route: str):
        self.canon = canon
        self.names = names
        self.expires = expires
        self.route = route
        self.size = ENTRY_OVERHEAD + len(canon) + sum(len(n) for n in names)


def _directives(value: str) -> dict:
    out = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, arg = part.partition("=")
        out[name.strip().lower()] = arg.strip().strip('"')
    return out


def storable(status: int, headers: list, statuses, ttl: float):
    """(ttl, vary_names, headers_to_store) when the response may be stored, else None.

    Not stored: statuses outside ``statuses`` (default 2xx except 206), Cache-Control
    no-store / private / no-cache, Set-Cookie (a per-client response), ``Vary: *``.
    ``s-maxage`` / ``max-age`` lower the TTL (never raise it).
    """
    if statuses is None:
        if status < 200 or status > 299 or status == 206:
            return None
    elif status not in statuses:
        return None
    vary: set | None = None
    keep = []
    for k, v in headers:
        lk = k.lower()
        if lk == "cache-control":
            d = _directives(v)
            if "no-store" in d or "private" in d or "no-cache" in d:
                return None
            age = d.get("s-maxage", d.get("max-age"))
            if age is not None:
                try:
                    ttl = min(ttl, max(0, int(age)))
                except ValueError:
                    return None
        elif lk == "set-cookie":
            return None
        elif lk == "vary":
            for n in v.split(","):
                n = n.strip().lower()
                if n == "*":
                    return None
                if n:
                    if vary is None:
                        vary = set()
                    vary.add(n)
        if lk in _DROP:
            continue
        keep.append((k, v))
    if ttl <= 0:
        return None
    return ttl, (tuple(sorted(vary)) if vary else None), keep


def response_headers_for_store(headers: list) -> list:
    return [(k, v) for k, v in headers if k.lower() not in _DROP]


# ------------------------------------------------------------------ Redis byte format
# entry:  b"E1" + struct(>HdIII) status, stored, len(canon), len(meta), len(route) + canon + meta + route + body
#         meta = orjson [headers, vary]
# vary:   b"V1" + struct(>II) len(canon), len(route) + canon + route + orjson names

_E = struct.Struct(">HdIII")
_V = struct.Struct(">II")


def encode(obj) -> bytes:
    if isinstance(obj, Entry):
        meta = orjson.dumps([obj.headers, obj.vary])
        route = obj.route.encode()
        return b"".join((b"E1", _E.pack(obj.status, obj.stored, len(obj.canon), len(meta), len(route)),
                         obj.canon, meta, route, obj.body))
    route = obj.route.encode()
    return b"".join((b"V1", _V.pack(len(obj.canon), len(route)), obj.canon, route,
                     orjson.dumps(list(obj.names))))


def decode(data: bytes, expires: float):
    """Entry / VaryEntry from ``encode`` bytes; None when the bytes are not ours."""
    tag = data[:2]
    if tag == b"E1":
        status, stored, lc, lm, lr = _E.unpack_from(data, 2)
        i = 2 + _E.size
        canon = data[i:i + lc]
        i += lc
        headers, vary = orjson.loads(data[i:i + lm])
        i += lm
        route = data[i:i + lr].decode()
        i += lr
        return Entry(canon, status, [tuple(h) for h in headers], data[i:], stored, expires, route,
                     tuple(vary) if vary else None)
    if tag == b"V1":
        lc, lr = _V.unpack_from(data, 2)
        i = 2 + _V.size
        canon = data[i:i + lc]
        i += lc
        route = data[i:i + lr].decode()
        i += lr
        return VaryEntry(canon, tuple(orjson.loads(data[i:])), expires, route)
    return None
