"""Exceptions raised by gwcore modules (plain Python; the compiled modules import them)."""
from __future__ import annotations

__all__ = [
    "RouteConflictError", "RouteSyntaxError",
    "UpstreamError", "ConnectError", "ResetError", "ProtocolError", "UpstreamTimeout",
    "ResponseTooLarge", "BodyLengthError",
]


class RouteSyntaxError(ValueError):
    """A route template or method that the router cannot accept.

    Examples: a path that does not start with "/", an unclosed "{", an empty or invalid
    parameter name, ``{proxy+}`` anywhere but the last segment, a parameter name used twice
    in one template, text around a ``{param}`` inside one segment, an empty segment.
    """


class RouteConflictError(ValueError):
    """Two routes that can never be told apart (same method and same path shape).

    The message names both routes by their labels, e.g.
    ``route 'b.yaml:3 GET /pets/{petId}' conflicts with 'a.yaml:12 GET /pets/{id}' ...``.
    """


# -- the upstream client (gwcore.h1client) --------------------------------------------
#
# Every failure to get a usable response from a backend is an UpstreamError carrying the
# HTTP status the gateway should answer with (502 or 504) and a short machine-readable
# ``kind`` for logs and metrics. The message text is for operators: it may name internals
# and is never sent to clients.


class UpstreamError(Exception):
    """Base class: the integration failed. ``status`` is what the gateway answers."""

    status: int = 502
    kind: str = "upstream"

    def __init__(self, message: str = "", *, kind: str | None = None) -> None:
        super().__init__(message or self.kind)
        if kind is not None:
            self.kind = kind


class ConnectError(UpstreamError):
    """Connection refused, unreachable, name not resolved, or connect timeout."""

    kind = "connect"


class ResetError(UpstreamError):
    """The connection was reset or closed before a complete response.

    ``request_sent``: whether any byte of the request was handed to the transport.
    ``response_started``: whether any byte of the response had arrived.
    Together with whether the connection was a reused keep-alive one, these decide
    whether a retry is safe.
    """

    kind = "reset"

    def __init__(
        self,
        message: str = "",
        *,
        kind: str | None = None,
        request_sent: bool = True,
        response_started: bool = False,
    ) -> None:
        super().__init__(message, kind=kind)
        self.request_sent = request_sent
        self.response_started = response_started


class ProtocolError(UpstreamError):
    """The upstream sent something that is not a valid HTTP/1.x response."""

    kind = "protocol"


class UpstreamTimeout(UpstreamError):
    """The integration timeout (or a body read timeout) expired: 504."""

    status = 504
    kind = "timeout"


class ResponseTooLarge(UpstreamError):
    """``UpstreamResponse.read(limit)`` saw more than ``limit`` bytes."""

    kind = "response_too_large"


class BodyLengthError(ValueError):
    """A streamed request body did not match the declared ``body_length``.

    This is the caller's (the downstream client's) fault, not the upstream's, so it
    is not an :class:`UpstreamError`; the connection is closed.
    """
