"""The cache stage (lifecycle step 7): lookup, request coalescing, store.

Per request, in order:

1. methods the route does not cache pass straight through;
2. ``Cache-Control: max-age=0`` from a caller allowed to invalidate skips the lookup and
   replaces the entry ("Refresh"); from anyone else it is ignored or answered 403
   (``apis.X.cache_invalidation.unauthorized``);
3. the key (gwcore.cachekey) covers api, stage, route, method, host, raw path, the declared
   parameters, the caller's identity unless the route is ``shared``, and the body for
   methods that have one; a request carrying input the key does not cover is passed
   through uncached ("Bypass") unless the route says ``unkeyed: ignore``;
4. a hit (canonical key verified, Vary matched) is answered from the entry;
5. a miss for a key that is already being fetched waits for that fetch (coalescing) and is
   answered from its entry when it produced one; otherwise it fetches itself;
6. the response is stored when it may be (``entry.storable``) and fits ``max_entry_bytes``
   (a streamed response is buffered up to that size; past it, it is passed through as a
   stream, nothing held whole).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import gwcore

from ..context import Response, answered, gateway_response
from .entry import Entry, VaryEntry, storable
from .settings import INVALIDATE_TOKEN_HEADER, RouteCacheSettings

_ck = gwcore.load("cachekey")
_digest = _ck.digest
_with_vary = _ck.with_vary
_identity = _ck.canonical_identity

log = logging.getLogger("gwproxy.cache")

_now = time.time

__all__ = ["CacheStage", "RouteStats"]


class RouteStats:
    """Counters of one route of one stage (read by the metrics and the admin API)."""

    __slots__ = ("hits", "misses", "bypasses", "refreshes", "coalesced", "stores", "uncacheable")

    def __init__(self):
        self.hits = self.misses = self.bypasses = self.refreshes = 0
        self.coalesced = self.stores = self.uncacheable = 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def _max_age_zero(cc: str) -> bool:
    for part in cc.split(","):
        name, _, arg = part.strip().partition("=")
        if name.strip().lower() == "max-age" and arg.strip().strip('"') == "0":
            return True
    return False


async def _chain(chunks: list, rest):
    for c in chunks:
        yield c
    async for c in rest:
        yield c


def _meta(resp: Response, value: str) -> None:
    if resp.meta is None:
        resp.meta = {"cache": value}
    else:
        resp.meta["cache"] = value


class CacheStage:
    """``async (req, next) -> Response`` for one route of one stage."""

    __slots__ = ("s", "store", "sync", "kprefix", "inflight", "stats", "hh")

    def __init__(self, settings: RouteCacheSettings, store, kprefix: bytes, inflight: dict,
                 stats: RouteStats):
        self.s = settings
        self.store = store
        self.sync = store.sync
        self.kprefix = kprefix
        self.inflight = inflight
        self.stats = stats
        self.hh = settings.hit_header

    # ------------------------------------------------------------------ helpers
    def _may_invalidate(self, req) -> bool:
        s = self.s
        if not s.require_auth:
            return True
        if req.api_key is not None and req.api_key in s.invalidators:
            return True
        if s.token_sha256 is not None:
            tok = req.header(INVALIDATE_TOKEN_HEADER)
            if tok:
                got = hashlib.sha256(tok.encode("utf-8", "surrogatepass")).hexdigest()
                if hmac.compare_digest(got, s.token_sha256):
                    return True
        return False

    def _label(self, resp: Response, value: str) -> Response:
        _meta(resp, value.lower())
        if self.hh is not None:
            resp.headers.append((self.hh, value))
        return resp

    def _answer(self, e: Entry, req, value: str = "Hit") -> Response:
        h = list(e.headers)
        h.append(("age", str(max(0, int(_now() - e.stored)))))
        if self.hh is not None:
            h.append((self.hh, value))
        r = Response(e.status, h, b"" if req.method == "HEAD" else e.body)
        r.meta = {"cache": "hit"}
        self.stats.hits += 1
        return r

    async def _put(self, key: bytes, obj, ttl: float) -> bool:
        if self.sync:
            return self.store.put(key, obj)
        return await self.store.put(key, obj, ttl)

    async def _lookup(self, key: bytes, canon: bytes, headers):
        """The entry for ``key`` in a store that must be awaited (Redis); the memory store is
        asked by :meth:`_lookup_now`, without a coroutine (Redis enforces the TTL itself)."""
        get = self.store.get
        e = await get(key)
        if e is None:
            return None
        if type(e) is VaryEntry:
            if e.canon != canon:
                return None
            c2 = _with_vary(canon, e.names, headers)
            e2 = await get(self.kprefix + _digest(c2))
            return self._vary_hit(e2, c2)
        if e.canon != canon:
            return None
        return e

    def _lookup_now(self, key: bytes, canon: bytes, headers, now: float):
        """_lookup for a store answering synchronously (memory): no coroutine per hit."""
        get = self.store.get
        e = get(key, now)
        if e is None:
            return None
        if type(e) is VaryEntry:
            if e.canon != canon:
                return None
            c2 = _with_vary(canon, e.names, headers)
            return self._vary_hit(get(self.kprefix + _digest(c2), now), c2)
        if e.canon != canon:
            return None
        return e

    @staticmethod
    def _vary_hit(e2, c2: bytes):
        if e2 is None or type(e2) is not Entry or e2.canon != c2:
            return None
        return e2

    @staticmethod
    def _matches(e: Entry, canon: bytes, headers) -> bool:
        if e.vary is None:
            return e.canon == canon
        return _with_vary(canon, e.vary, headers) == e.canon

    # ------------------------------------------------------------------ the stage
    def __call__(self, req, nxt):
        """A plain function: a hit in a store that answers at once (memory) comes back as
        an already decided answer, with no coroutine; everything else is awaited."""
        s = self.s
        method = req.method
        if method not in s.methods:
            return nxt(req)
        refresh = False
        cc = req.header("cache-control")
        if cc is not None and _max_age_zero(cc):
            if self._may_invalidate(req):
                refresh = True
            elif s.unauthorized == "fail":
                return answered(gateway_response(403, "Not authorized to invalidate the cache"))
        if s.token_sha256 is not None and req.header(INVALIDATE_TOKEN_HEADER) is not None:
            req.headers = [h for h in req.headers if h[0] != INVALIDATE_TOKEN_HEADER]
        if s.keyed_body and method != "HEAD":
            return self._with_body(req, nxt, refresh)
        if req.has_body():
            return self._bypass(req, nxt)
        return self._keyed(req, nxt, refresh, None)

    async def _with_body(self, req, nxt, refresh: bool) -> Response:
        body = await req.body()
        return await self._keyed(req, nxt, refresh, body)

    async def _bypass(self, req, nxt) -> Response:
        self.stats.bypasses += 1
        return self._label(await nxt(req), "Bypass")

    def _keyed(self, req, nxt, refresh: bool, body):
        s = self.s
        identity = None if s.shared else _identity(req.api_key, req.principal)
        if identity is None and s.needs_identity:
            # an authenticated route, but no stage told us who is calling: never share
            canon = None
        else:
            canon = s.spec.key("GET" if req.method == "HEAD" else req.method, req.host, req.path,
                               req.query, req.headers, req.path_params, identity, body)
        if canon is None:
            return self._bypass(req, nxt)
        key = self.kprefix + _digest(canon)
        if self.sync and not refresh:
            e = self._lookup_now(key, canon, req.headers, _now())
            if e is not None:
                return answered(self._answer(e, req))
        return self._miss(req, nxt, canon, key, refresh)

    async def _miss(self, req, nxt, canon: bytes, key: bytes, refresh: bool) -> Response:
        """Not answered from the entry yet: look it up in a store that must be awaited,
        wait for a fetch of the same key in flight, or fetch."""
        method = req.method
        inflight = self.inflight
        if not refresh:
            if not self.sync:   # a store that answers at once was asked in _keyed
                e = await self._lookup(key, canon, req.headers)
                if e is not None:
                    return self._answer(e, req)
            fut = inflight.get(key)
            if fut is not None:
                self.stats.coalesced += 1
                e = await asyncio.shield(fut)
                if e is not None and self._matches(e, canon, req.headers):
                    return self._answer(e, req)
        if method == "HEAD":
            # a HEAD answer has no body to store; GET fills the entry HEAD is served from
            self.stats.misses += 1
            return self._label(await nxt(req), "Miss")
        if refresh:
            self.stats.refreshes += 1
        else:
            self.stats.misses += 1
        label = "Refresh" if refresh else "Miss"
        if key in inflight:          # someone else leads; fetch for ourselves
            resp, _ = await self._fetch(req, nxt, canon, key)
            return self._label(resp, label)
        fut = asyncio.get_running_loop().create_future()
        inflight[key] = fut
        entry = None
        try:
            resp, entry = await self._fetch(req, nxt, canon, key)
        finally:
            if not fut.done():
                fut.set_result(entry)
            if inflight.get(key) is fut:
                del inflight[key]
        return self._label(resp, label)

    async def _fetch(self, req, nxt, canon: bytes, key: bytes):
        """Call the integration; store what may be stored. Returns (response, entry|None)."""
        s = self.s
        resp = await nxt(req)
        ok = storable(resp.status, resp.headers, s.statuses, s.ttl)
        if ok is None:
            self.stats.uncacheable += 1
            return resp, None
        ttl, vary, keep = ok
        if resp.stream is not None:
            body = await self._buffer(resp)
            if body is None:
                self.stats.uncacheable += 1
                return resp, None
        else:
            body = resp.body or b""
            if len(body) > s.max_entry:
                self.stats.uncacheable += 1
                return resp, None
        now = _now()
        expires = now + ttl
        if vary is None:
            entry = Entry(canon, resp.status, keep, body, now, expires, s.route_key)
            await self._put(key, entry, ttl)
        else:
            c2 = _with_vary(canon, vary, req.headers)
            entry = Entry(c2, resp.status, keep, body, now, expires, s.route_key, vary)
            await self._put(self.kprefix + _digest(c2), entry, ttl)
            await self._put(key, VaryEntry(canon, vary, expires, s.route_key), ttl)
        self.stats.stores += 1
        return resp, entry

    async def _buffer(self, resp: Response) -> bytes | None:
        """Read a streamed body up to max_entry. Returns the body (and turns ``resp`` into a
        plain one), or None after re-chaining what was read in front of the rest."""
        limit = self.s.max_entry
        it = resp.stream.__aiter__()
        chunks: list = []
        size = 0
        try:
            while True:
                try:
                    c = await it.__anext__()
                except StopAsyncIteration:
                    break
                if not c:
                    continue
                chunks.append(c)
                size += len(c)
                if size > limit:
                    resp.stream = _chain(chunks, it)
                    return None
        except Exception:
            # the upstream failed mid-body: answer what the app answers for that (the
            # stream raises again, before the first byte) and store nothing
            resp.stream = _chain(chunks, _raise_again(it)) if chunks else _failing()
            return None
        body = b"".join(chunks)
        resp.stream = None
        resp.body = body
        return body


async def _failing():
    raise ConnectionError("upstream body failed")
    yield b""  # pragma: no cover  (makes this an async generator)


async def _raise_again(it):
    raise ConnectionError("upstream body failed")
    yield b""  # pragma: no cover
