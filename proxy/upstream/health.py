"""Active health checks of a VPC link's targets.

Every ``interval`` each target gets ``GET <path>`` through its own pool (so it also proves
the source address and the keep-alive path work), bounded by ``timeout``. A 2xx or 3xx
answer is a pass; anything else (another status, connect failure, reset, timeout) a fail.
``unhealthy_threshold`` fails in a row take a target out of rotation,
``healthy_threshold`` passes in a row bring it back. The link (``Link.health_result``)
owns the state; this module only probes and reports, with a reason an operator can read.

One checker runs per link per worker, started by the links service's ``start()``.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from .errors import UpstreamError, UpstreamTimeout

log = logging.getLogger("gwproxy.vpc_link")

__all__ = ["HealthSettings", "HealthChecker", "probe"]

#: bytes of a health-check answer read before it is judged (the rest is dropped)
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class HealthSettings:
    path: str = "/"
    interval: float = 10.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3

    @classmethod
    def from_config(cls, hc: dict | None) -> "HealthSettings | None":
        if not hc:
            return None
        return cls(path=hc.get("path", "/"), interval=float(hc.get("interval", 10.0)),
                   timeout=float(hc.get("timeout", 2.0)),
                   healthy_threshold=int(hc.get("healthy_threshold", 2)),
                   unhealthy_threshold=int(hc.get("unhealthy_threshold", 3)))


async def probe(target, settings: HealthSettings) -> tuple[bool, str]:
    """One check of one target: (passed, reason)."""
    headers = [("host", target.host_header), ("user-agent", "gwproxy-health-check"),
               ("connection", "keep-alive")]
    try:
        resp = await target.pool.request("GET", settings.path, headers, None, timeout=settings.timeout)
        try:
            if resp.has_body():
                await resp.read(MAX_BODY)
        except UpstreamError:
            pass  # the status decides; a truncated body does not
        finally:
            await resp.aclose()
    except UpstreamTimeout:
        return False, f"health check timed out after {settings.timeout:g}s"
    except UpstreamError as e:
        return False, f"health check failed: {e}"
    except Exception as e:  # never let one probe kill the checker
        return False, f"health check error: {type(e).__name__}"
    status = resp.status
    if 200 <= status < 400:
        return True, f"health check passed (status {status})"
    return False, f"health check got status {status}"


class HealthChecker:
    """Probes every target of one link at a fixed interval until closed."""

    def __init__(self, link, settings: HealthSettings):
        self.link = link
        self.settings = settings
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"health:{self.link.name}")

    async def _run(self) -> None:
        s = self.settings
        # a little jitter so that several workers do not probe in lockstep
        await asyncio.sleep(random.uniform(0, min(0.05, s.interval / 10)))
        while True:
            try:
                await self.check_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive
                log.exception("vpc_link %s: health check round failed", self.link.name)
            await asyncio.sleep(s.interval)

    async def check_all(self) -> None:
        targets = self.link.targets
        results = await asyncio.gather(*(probe(t, self.settings) for t in targets))
        for t, (ok, reason) in zip(targets, results):
            self.link.health_result(t, ok, reason)

    async def close(self) -> None:
        t = self._task
        self._task = None
        if t is not None:
            t.cancel()
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
