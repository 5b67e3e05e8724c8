"""The Redis state store: buckets and counters shared by every gateway node.

Each decision is one atomic Lua script (``TAKE``) evaluated on the Redis server with the
server's clock (``TIME``), so nodes with skewed clocks still agree. Decisions made on one
event-loop turn are sent together in one ``EVALSHA`` (a batch): a decision never costs
more than one round trip, and under load many decisions share it. There is no local
shortcut: every accepted request was accepted by Redis, so the limits are exact for the
whole fleet (the only slack is a decision racing a bucket's refill by the network delay).

Failures: every call has ``state.timeout``. When Redis cannot be reached the store marks
itself down (one warning log line, ``errors`` and ``down`` in ``stats()``), answers
``UNAVAILABLE`` at once for every decision without trying Redis (no per-request timeout),
and a background probe PINGs every 0.2 s; when Redis answers again the store is up again
(one info log line). The throttle stage turns ``UNAVAILABLE`` into ``on_failure``: ``open``
lets the request through, ``closed`` answers 503.

Keys: ``<prefix>b:<bucket key>`` hashes ``{t: tokens, l: last}`` expiring once the
bucket is full again; ``<prefix>c:<counter key>`` integers expiring ``ttl`` after creation.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time

from .base import UNAVAILABLE, StoreUnavailable

log = logging.getLogger("gwproxy.state")

MAX_BATCH = 200

# ARGV: ndecisions, then per decision: nb, nc, at, cost, (rate, burst) * nb, (limit, ttl_ms) * nc
# KEYS: per decision: nb bucket keys then nc counter keys
# returns per decision two items: failed (integer), wait (string, "inf" when never)
TAKE = r"""
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local out = {}
local ai = 2
local ki = 1
for d = 1, tonumber(ARGV[1]) do
  local nb = tonumber(ARGV[ai]); local nc = tonumber(ARGV[ai + 1])
  local at = tonumber(ARGV[ai + 2]); local cost = tonumber(ARGV[ai + 3])
  ai = ai + 4
  local rate, burst, tok, limit, ttl, cur = {}, {}, {}, {}, {}, {}
  for i = 1, nb do
    rate[i] = tonumber(ARGV[ai]); burst[i] = tonumber(ARGV[ai + 1]); ai = ai + 2
    local v = redis.call('HMGET', KEYS[ki + i - 1], 't', 'l')
    local t = tonumber(v[1])
    if t == nil then
      t = burst[i]
    else
      local last = tonumber(v[2])
      if now > last then t = t + (now - last) * rate[i] end
      if t > burst[i] then t = burst[i] end
    end
    tok[i] = t
  end
  for j = 1, nc do
    limit[j] = tonumber(ARGV[ai]); ttl[j] = tonumber(ARGV[ai + 1]); ai = ai + 2
    cur[j] = tonumber(redis.call('GET', KEYS[ki + nb + j - 1]) or '0')
  end
  local failed, wait = -1, '0'
  local function check_buckets(a, b)
    for i = a, b do
      if tok[i] < cost then
        failed = i - 1
        if cost > burst[i] or rate[i] <= 0 then wait = 'inf'
        else wait = string.format('%.6f', (cost - tok[i]) / rate[i]) end
        return
      end
    end
  end
  check_buckets(1, at)
  if failed < 0 then
    for j = 1, nc do
      if limit[j] > 0 and cur[j] + cost > limit[j] then failed = nb + j - 1; break end
    end
  end
  if failed < 0 then check_buckets(at + 1, nb) end
  if failed < 0 then
    for i = 1, nb do
      local k = KEYS[ki + i - 1]
      local t = tok[i] - cost
      redis.call('HSET', k, 't', string.format('%.17g', t), 'l', string.format('%.6f', now))
      local idle = 1000
      if rate[i] > 0 then idle = math.ceil((burst[i] - t) / rate[i] * 1000) + 1000 else idle = 86400000 end
      redis.call('PEXPIRE', k, idle)
    end
    for j = 1, nc do
      local k = KEYS[ki + nb + j - 1]
      local v = redis.call('INCRBYFLOAT', k, cost)
      if tonumber(v) == cost then redis.call('PEXPIRE', k, ttl[j]) end
    end
  end
  out[#out + 1] = failed
  out[#out + 1] = wait
  ki = ki + nb + nc
end
return out
"""


def _import_redis():
    try:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise RuntimeError("state.backend 'redis' needs the 'redis' package "
                           "(pip install 'redis[hiredis]')") from e
    return aioredis, Retry, NoBackoff


class RedisStore:
    kind = "redis"
    local = False

    def __init__(self, state_cfg: dict):
        self.url = state_cfg["url"]
        self.timeout = float(state_cfg.get("timeout", 0.25))
        self.on_failure = state_cfg.get("on_failure", "open")
        self.prefix = state_cfg.get("prefix", "gwproxy:")
        self.probe_interval = 0.2
        self._client = None
        self._script = None
        self._pending: list = []
        self._scheduled = False
        self.up = True
        self._probe_task: asyncio.Task | None = None
        self._tasks: set = set()
        self._errors = 0
        self._down_since: float | None = None
        self._outages = 0
        self._failed_open = 0
        self._failed_closed = 0
        self._decisions = 0
        self._batches = 0
        self._last_error = ""

    # -- lifecycle -------------------------------------------------------------------------
    def _ensure(self):
        if self._client is None:
            aioredis, Retry, NoBackoff = _import_redis()
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                # one immediate retry: a pooled connection may be stale (Redis restarted,
                # idle timeout); a real outage still fails fast (refused, or timeout)
                retry=Retry(NoBackoff(), 1), health_check_interval=0,
                decode_responses=False)
            self._script = self._client.register_script(TAKE)
        return self._client

    async def start(self) -> None:
        self._ensure()
        try:
            await asyncio.wait_for(self._client.ping(), self.timeout)
            log.info("state: redis store %s reachable", _safe_url(self.url))
        except Exception as e:
            self._mark_down(e)

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:
                pass

    # -- up / down -------------------------------------------------------------------------
    def _mark_down(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = type(exc).__name__
        if not self.up:
            return
        self.up = False
        self._outages += 1
        self._down_since = time.time()
        log.warning("state: redis %s unreachable (%s); on_failure=%s until it returns",
                    _safe_url(self.url), type(exc).__name__, self.on_failure)
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        while not self.up:
            await asyncio.sleep(self.probe_interval)
            try:
                # drop every pooled connection: they point at the Redis that went away, and
                # each would fail once more after recovery (flapping up/down)
                await self._client.connection_pool.disconnect()
                await asyncio.wait_for(self._client.ping(), self.timeout)
                # the script cache is empty after a restart: the script object reloads it
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._errors += 1
                self._last_error = type(e).__name__
                continue
            down = time.time() - (self._down_since or time.time())
            self.up = True
            self._down_since = None
            log.info("state: redis %s reachable again after %.1fs", _safe_url(self.url), down)

    def count_failure(self) -> None:
        if self.on_failure == "open":
            self._failed_open += 1
        else:
            self._failed_closed += 1

    # -- decisions ---------------------------------------------------------------------------
    def take_now(self, buckets, counters=None, cost: float = 1.0, at: int = -1):
        raise RuntimeError("the redis store has no local decisions; use 'await take()'")

    async def take(self, buckets, counters=None, cost: float = 1.0, at: int = -1):
        if not self.up:
            return UNAVAILABLE, 0.0
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((buckets, counters or (), cost, at, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for i in range(0, len(pending), MAX_BATCH):
            t = loop.create_task(self._run(pending[i:i + MAX_BATCH]))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _run(self, batch) -> None:
        keys: list = []
        argv: list = [len(batch)]
        p = self.prefix
        for buckets, counters, cost, at, _ in batch:
            nb = len(buckets)
            argv += (nb, len(counters), nb if at < 0 or at > nb else at, repr(float(cost)))
            for b in buckets:
                keys.append(f"{p}b:{b.key}")
                argv += (repr(b.rate), repr(b.burst))
            for c in counters:
                keys.append(f"{p}c:{c.key}")
                argv += (repr(c.limit), max(1, int(c.ttl * 1000)))
        try:
            self._ensure()
            res = await asyncio.wait_for(self._script(keys=keys, args=argv), self.timeout)
        except asyncio.CancelledError:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_result((UNAVAILABLE, 0.0))
            raise
        except Exception as e:
            self._mark_down(e)
            for *_, fut in batch:
                if not fut.done():
                    fut.set_result((UNAVAILABLE, 0.0))
            return
        self._batches += 1
        self._decisions += len(batch)
        for k, (*_, fut) in enumerate(batch):
            if fut.done():
                continue
            failed = int(res[2 * k])
            w = res[2 * k + 1]
            w = w.decode() if isinstance(w, bytes) else str(w)
            fut.set_result((failed, math.inf if w == "inf" else float(w)))

    async def read(self, items) -> list[float]:
        if not items:
            return []
        from gwcore import load
        rl = load("ratelimit")
        try:
            self._ensure()
            pipe = self._client.pipeline(transaction=False)
            for it in items:
                if isinstance(it, rl.Counter):
                    pipe.get(f"{self.prefix}c:{it.key}")
                else:
                    pipe.hmget(f"{self.prefix}b:{it.key}", "t", "l")
            res = await asyncio.wait_for(pipe.execute(), self.timeout)
        except Exception as e:
            self._mark_down(e)
            raise StoreUnavailable(str(type(e).__name__)) from None
        out = []
        for it, v in zip(items, res):
            if isinstance(it, rl.Counter):
                out.append(float(v) if v is not None else 0.0)
            else:
                out.append(float(v[0]) if v and v[0] is not None else it.burst)
        return out

    async def write(self, counter, value: float) -> None:
        try:
            self._ensure()
            await asyncio.wait_for(
                self._client.set(f"{self.prefix}c:{counter.key}", repr(float(value)),
                                 px=max(1, int(counter.ttl * 1000))), self.timeout)
        except Exception as e:
            self._mark_down(e)
            raise StoreUnavailable(str(type(e).__name__)) from None

    def stats(self) -> dict:
        return {"backend": "redis", "url": _safe_url(self.url), "up": self.up,
                "on_failure": self.on_failure, "errors": self._errors,
                "outages": self._outages, "down_since": self._down_since,
                "last_error": self._last_error,
                "failed_open": self._failed_open, "failed_closed": self._failed_closed,
                "decisions": self._decisions, "batches": self._batches}


def _safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
