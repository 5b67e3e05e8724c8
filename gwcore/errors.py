"""Exceptions raised by gwcore modules (plain Python; the compiled modules import them)."""
from __future__ import annotations

__all__ = ["RouteConflictError", "RouteSyntaxError"]


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
