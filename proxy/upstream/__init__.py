"""Upstream HTTP/1.1 client: one keep-alive pool per target.

    pool = UpstreamPool("127.0.0.1", 9001, settings=PoolSettings(max_connections=64))
    resp = await pool.request("GET", "/pets/1?x=1", [("Host", "pets")], None, timeout=29.0)
    async for chunk in resp: ...        # or: body = await resp.read(limit)
    await resp.aclose()

Failures raise :class:`UpstreamError` subclasses carrying the status the gateway
answers with (502/504); their text is for logs, never for clients.
"""

from .errors import (
    BodyLengthError,
    ConnectError,
    ProtocolError,
    ResetError,
    ResponseTooLarge,
    TimeoutError_,
    UpstreamError,
    UpstreamTimeout,
)
from .pool import PoolSettings, UpstreamPool, encode_head
from .protocol import UpstreamResponse

__all__ = [
    "BodyLengthError",
    "ConnectError",
    "PoolSettings",
    "ProtocolError",
    "ResetError",
    "ResponseTooLarge",
    "TimeoutError_",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
    "encode_head",
]
