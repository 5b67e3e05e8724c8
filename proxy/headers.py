"""Header rules shared by the request and response paths (RFC 9110 section 7.6.1).

They live in gwcore.h1client (compiled with the upstream client that uses them); this
module names them for the rest of the gateway."""
from __future__ import annotations

from .upstream.protocol import _h1

HOP_BY_HOP = _h1.HOP_BY_HOP
REQUEST_DROP = _h1.REQUEST_DROP
connection_tokens = _h1.connection_tokens
strip_response = _h1.strip_response
outgoing_headers = _h1.outgoing_headers

__all__ = ["HOP_BY_HOP", "REQUEST_DROP", "connection_tokens", "strip_response",
           "outgoing_headers"]
