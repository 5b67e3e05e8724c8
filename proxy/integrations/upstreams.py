"""The gateway-wide registry of upstream pools: one pool per target, shared by routes."""
from __future__ import annotations

SERVICE_NAME = "upstreams"


class Upstreams:
    def __init__(self, options: dict):
        self.options = options
        self.settings = None
        self._pools: dict = {}

    def pool(self, host: str, port: int, unix_path: str | None = None, source_address=None):
        from ..upstream import PoolSettings, UpstreamPool
        if self.settings is None:
            self.settings = PoolSettings(**self.options)
        key = (host, port, unix_path, source_address)
        p = self._pools.get(key)
        if p is None:
            p = self._pools[key] = UpstreamPool(host, port, unix_path=unix_path,
                                                settings=self.settings, source_address=source_address)
        return p

    def stats(self) -> dict:
        return {f"{k[2] or f'{k[0]}:{k[1]}'}": p.stats() for k, p in self._pools.items()}

    async def close(self) -> None:
        for p in list(self._pools.values()):
            try:
                await p.close()
            except Exception:
                pass
        self._pools.clear()


def build_service(gateway):
    u = gateway.cfg.get("upstream") or {}
    return Upstreams({k: u[k] for k in ("max_connections", "idle_timeout", "connect_timeout", "max_idle") if k in u})
