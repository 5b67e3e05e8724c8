"""Response-cache keys for gwproxy (pure-Python twin of ``gwcore.cachekey``).

``gwcore.cachekey`` (Cython) and this module have the same API and the same output,
byte for byte; ``gwcore.load("cachekey")`` picks one.

API::

    spec = KeySpec("shop\\0prod\\0GET /pets/{id}",          # namespace: api, stage, route
                   path_params=("id",), query=("lang",), headers=("accept",),
                   strict=True)                              # bypass on unkeyed input
    canon = spec.key("GET", "example.com", "/prod/pets/7", "lang=en&lang=fr",
                     [("accept", "application/json")], {"id": "7"},
                     identity=None, body=None)               # -> bytes, or None (bypass)
    d = digest(canon)                                        # 16 bytes, xxh3-128
    canon2 = with_vary(canon, ("accept-language",), headers) # secondary key for Vary

The canonical form
------------------
``key`` builds one unambiguous string and encodes it as UTF-8 (surrogatepass, so it is
injective): every value is written length-prefixed (``"<len>:<chars>"``), a missing value
is ``"~"``, a list of values is ``"<count>#"`` followed by its values. In order:

    "gwc1" namespace method host(lower-case) raw-path
    declared path parameters      (sorted by name; decoded values from the router)
    declared query parameters     (sorted by name: query parameter order does not matter;
                                   each with ALL its values in order of appearance, so
                                   repeated parameters do matter; names are compared
                                   after percent-decoding, values are kept raw)
    declared headers              (sorted by name; all values in order)
    identity                      (API key / principal; "~" when none or shared)
    body                          (xxh3-128 hex of the body; "~" when not keyed)

The raw request path is always part of the key (unlike API Gateway, which keys on the
resource template): two URLs never share an entry.

``strict`` (the default) makes ``key`` return ``None`` when the request carries input
the key does not cover and that could change the upstream's answer: a query parameter
that is not declared, or a header that is neither declared nor in ``allowed_headers``
(:data:`SAFE_HEADERS` by default: headers that do not change a response, or whose effect
the upstream must declare with ``Vary``). The caller then passes the request through
uncached. That is what makes unkeyed-input poisoning (X-Forwarded-Host, parameter
cloaking, fat GET) impossible by construction.

The digest is only an index: stores keep the canonical bytes with each entry and compare
them on a hit, so a hash collision (xxh3 is not a cryptographic hash) can never serve
the wrong entry.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence
from urllib.parse import unquote_plus

import xxhash

__all__ = ["KeySpec", "SAFE_HEADERS", "digest", "with_vary", "canonical_identity"]

#: request headers that do not make a request uncacheable in strict mode: transport,
#: tracing, conditional and content-negotiation headers (the upstream says ``Vary`` when
#: it negotiates), and credentials the gateway consumes itself (the caller's identity is
#: keyed when the route is authenticated). ``host`` is always keyed.
SAFE_HEADERS = frozenset((
    "host", "connection", "keep-alive", "te", "content-length",
    "user-agent", "accept", "accept-encoding", "accept-language", "accept-charset",
    "cache-control", "pragma", "if-none-match", "if-modified-since",
    "referer", "origin", "dnt", "upgrade-insecure-requests", "priority",
    "sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site", "sec-fetch-user",
    "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "x-request-id", "x-amzn-trace-id", "traceparent", "tracestate", "b3",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-forwarded-for", "x-real-ip", "via",
    "x-api-key", "authorization",
))


def _enc(s: str) -> str:
    return f"{len(s)}:{s}"


class KeySpec:
    """The compiled cache-key declaration of one route (built at config time)."""

    __slots__ = ("namespace", "path_params", "query", "headers", "strict", "allowed",
                 "_qset", "_hset", "_prefix")

    def __init__(self, namespace: str, path_params: Iterable[str] = (),
                 query: Iterable[str] = (), headers: Iterable[str] = (),
                 strict: bool = True, allowed_headers: Iterable[str] | None = None):
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

    def key(self, method: str, host: str | None, path: str, query: str | None,
            headers: Sequence[tuple[str, str]], path_params: Mapping[str, str] | None,
            identity: str | None = None, body: bytes | None = None) -> bytes | None:
        """The canonical key bytes, or ``None`` (strict mode, unkeyed input present)."""
        strict = self.strict
        parts = [self._prefix, _enc(method), _enc((host or "").lower()), _enc(path)]
        # path parameters
        for name in self.path_params:
            v = path_params.get(name) if path_params else None
            parts.append("~" if v is None else _enc(v))
        # query
        qvals: dict = {}
        if query:
            qset = self._qset
            for seg in query.split("&"):
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
                        lst.append(val)
                elif strict:
                    return None
        for name in self.query:
            lst = qvals.get(name)
            if lst is None:
                parts.append("0#")
            else:
                parts.append(f"{len(lst)}#")
                for v in lst:
                    parts.append("~" if v is None else _enc(v))
        # headers
        hvals: dict = {}
        hset = self._hset
        allowed = self.allowed
        for k, v in headers:
            if k in hset:
                lst = hvals.get(k)
                if lst is None:
                    hvals[k] = [v]
                else:
                    lst.append(v)
            elif strict and k not in allowed:
                return None
        for name in self.headers:
            lst = hvals.get(name)
            if lst is None:
                parts.append("0#")
            else:
                parts.append(f"{len(lst)}#")
                for v in lst:
                    parts.append(_enc(v))
        parts.append("~" if identity is None else _enc(identity))
        parts.append("~" if body is None else _enc(xxhash.xxh3_128_hexdigest(body)))
        return "".join(parts).encode("utf-8", "surrogatepass")


def with_vary(canonical: bytes, names: Sequence[str],
              headers: Sequence[tuple[str, str]]) -> bytes:
    """Secondary key: ``canonical`` plus the request's values of the ``Vary`` headers.

    ``names`` are lower-case header names (the order given is kept; callers pass them
    sorted). Every value of each header is included, in order.
    """
    parts = ["v", f"{len(names)}#"]
    for name in names:
        vals = [v for k, v in headers if k == name]
        parts.append(_enc(name))
        parts.append(f"{len(vals)}#")
        for v in vals:
            parts.append(_enc(v))
    return canonical + "".join(parts).encode("utf-8", "surrogatepass")


def digest(canonical: bytes) -> bytes:
    """16-byte xxh3-128 digest of a canonical key (an index, not a proof: see module doc)."""
    return xxhash.xxh3_128_digest(canonical)


def canonical_identity(api_key: str | None, principal) -> str | None:
    """One string for the caller's identity (API key name and principal), or None."""
    if api_key is None and principal is None:
        return None
    if principal is None:
        p = "~"
    elif isinstance(principal, str):
        p = _enc(principal)
    else:
        import orjson
        try:
            p = "j" + orjson.dumps(principal, option=orjson.OPT_SORT_KEYS,
                                   default=repr).decode()
        except TypeError:
            p = "r" + repr(principal)
        p = _enc(p)
    return ("~" if api_key is None else _enc(api_key)) + p
