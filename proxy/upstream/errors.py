"""Upstream failure types (defined in gwcore.errors, next to the client that raises them).

Every failure to get a usable response from a backend is an :class:`UpstreamError`
carrying the HTTP status the gateway should answer with (502 or 504) and a short
machine-readable ``kind`` for logs and metrics. The message text is for operators:
it may name internals and is never sent to clients.
"""

from __future__ import annotations

from gwcore.errors import (
    BodyLengthError,
    ConnectError,
    ProtocolError,
    ResetError,
    ResponseTooLarge,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = [
    "UpstreamError",
    "ConnectError",
    "ResetError",
    "ProtocolError",
    "UpstreamTimeout",
    "ResponseTooLarge",
    "BodyLengthError",
]

# Spelling used by the original brief.
TimeoutError_ = UpstreamTimeout
