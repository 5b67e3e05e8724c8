"""Type stub for gwcore.router (compiled) and its pure-Python twin gwcore._router_py.

Rules (templates, priority, conflicts, path decoding, $default) are documented in
gwcore._router_py's module docstring.
"""
from typing import Final

from gwcore.errors import RouteConflictError as RouteConflictError
from gwcore.errors import RouteSyntaxError as RouteSyntaxError

MATCH: Final[int]
NOT_FOUND: Final[int]
METHOD_NOT_ALLOWED: Final[int]
BAD_PATH: Final[int]

class Router:
    def __init__(self) -> None: ...
    def add(self, method: str, path: str, value: object, label: str | None = None) -> None: ...
    def set_default(self, value: object, label: str | None = None) -> None: ...
    def freeze(self) -> None: ...
    def match(self, method: str, path: str) -> tuple[int, object | None, dict[str, str] | None]: ...
    def routes(self) -> list[tuple[str, str, object]]: ...
