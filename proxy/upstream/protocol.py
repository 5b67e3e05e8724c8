"""One upstream HTTP/1.1 connection and its response (gwcore.h1client, compiled or its twin)."""
from __future__ import annotations

import gwcore

_h1 = gwcore.load("h1client")

Connection = _h1.Connection
UpstreamResponse = _h1.UpstreamResponse
HIGH_WATER = _h1.HIGH_WATER
DETACHED, IDLE, ACTIVE, CLOSED = _h1.DETACHED, _h1.IDLE, _h1.ACTIVE, _h1.CLOSED

__all__ = ["Connection", "UpstreamResponse", "HIGH_WATER"]
