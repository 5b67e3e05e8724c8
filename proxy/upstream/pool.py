"""Keep-alive connection pool for one upstream target (gwcore.h1client, compiled or its twin).

Load balancing and health checks sit above this (proxy.upstream.links): they pick a target
and call its pool's ``UpstreamPool.request``. A pool only knows its own target.
"""
from __future__ import annotations

from .protocol import _h1

PoolSettings = _h1.PoolSettings
UpstreamPool = _h1.UpstreamPool
encode_head = _h1.encode_head

__all__ = ["PoolSettings", "UpstreamPool", "encode_head"]
