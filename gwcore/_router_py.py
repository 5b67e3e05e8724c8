"""Route matching for gwproxy: API Gateway's rules on a trie (pure-Python twin).

``gwcore.router`` (Cython) and this module have the same API and the same behaviour;
``gwcore.load("router")`` picks one. The template parser (:func:`parse_template`,
:func:`check_method`) is config-time code shared by both; matching is implemented twice.

API::

    MATCH, NOT_FOUND, METHOD_NOT_ALLOWED, BAD_PATH = 0, 1, 2, 3
    r = Router()
    r.add("GET", "/pets/{id}", value, label="shop.yaml:12 GET /pets/{id}")
    r.set_default(value)                # HTTP API "$default" route
    r.freeze()                          # add()/set_default() now raise RuntimeError
    r.match("GET", "/pets/7")           # -> (MATCH, value, {"id": "7"})
    r.routes()                          # -> [("GET", "/pets/{id}", value)], insertion order

``match`` returns ``(MATCH, value, params)``, ``(NOT_FOUND, None, None)``,
``(METHOD_NOT_ALLOWED, None, None)`` or ``(BAD_PATH, None, None)``. ``params`` is a new
dict on every call (the caller may keep or change it).

Route templates
---------------
* A template starts with "/" and is split on "/" into segments. "/" alone is the root.
  A single trailing slash is ignored ("/pets/" is the same route as "/pets"); any other
  empty segment ("/a//b", "//") is a :class:`RouteSyntaxError`.
* A segment is one of:

  - static text, compared with the *decoded* request segment. Write it decoded
    ("/café", "/a b"): "%" is rejected in templates, and so are "{", "}", "?", "#", "\\",
    control characters and the segments "." and ".." (they could never match);
  - ``{name}``: exactly one whole segment; ``name`` matches ``[A-Za-z0-9_.-]+``;
  - ``{name+}`` (greedy, e.g. ``{proxy+}``): only as the last segment; it matches one or
    more remaining segments, so "/files/{proxy+}" matches "/files/a" and "/files/a/b" but
    NOT "/files" or "/files/" (as in API Gateway).

  Text around a parameter in one segment ("/a{b}", "/{a}.json") and a name used twice
  in one template are :class:`RouteSyntaxError`.
* Methods are upper-case HTTP tokens ("GET", "POST", "PURGE", ...) or "ANY". Methods are
  compared exactly: HEAD is *not* implied by GET and OPTIONS is not answered
  automatically; add "HEAD"/"OPTIONS" (or use "ANY") if you want them.

Conflicts (RouteConflictError, raised by ``add``; the message names both labels)
--------------------------------------------------------------------------------
Two routes conflict when they have the same method (two "ANY" count as the same method)
and the same *shape*: the same static segments, parameters and greedy parameter at the
same positions, whatever the parameter names. So "GET /pets/{id}" and
"GET /pets/{petId}" conflict, and so do "GET /pets" and "GET /pets/".

Parameter names belong to each route, not to the trie: different names at the same
position are allowed when the routes are otherwise distinguishable, i.e. "GET /pets/{id}"
with "DELETE /pets/{petId}" (different methods), or "GET /a/{x}/b" with "GET /a/{y}/c"
(different shapes). Each match returns the names of the route that matched.
"GET /pets/{id}" and "ANY /pets/{id}" do not conflict (the exact method wins).
``set_default`` twice is a conflict too.

Matching
--------
* Priority is decided segment by segment: static > ``{param}`` > ``{greedy+}``, with
  backtracking. With routes "/a/b/c" and "/a/{x}/d", "/a/b/d" matches the second, and
  "/a/b/c" the first. The first route found in that order whose node has the request's
  method, or else "ANY", wins; so the most specific *path* wins first and, at the same
  path, the exact method beats "ANY" (a more specific "ANY /a/b" beats "GET /a/{x}" for
  GET /a/b). A path whose nodes hold routes, none for this method and no ANY, is
  METHOD_NOT_ALLOWED; a path that reaches no route at all is NOT_FOUND.
* The cost does not grow with the number of routes: one lookup per segment in that
  node's static children (plus backtracking into the param/greedy child where both
  exist), never a scan of the route list; a route whose template is all static is found
  with one lookup of the whole raw path first. (The compiled twin scans a node's static
  children linearly when there are at most 8, and a node's methods, which do not grow
  with the table either.)

Request paths
-------------
``match`` gets the RAW request path, still percent-encoded, without the query string.

* It must start with "/"; otherwise BAD_PATH.
* A single trailing slash is ignored ("/pets/" matches "/pets"); the root "/" is the root.
* Slashes are never merged: an empty segment ("//admin", "/a//b", "/a//") matches
  nothing, i.e. NOT_FOUND (or the default route).
* Each segment is percent-decoded as UTF-8. BAD_PATH when: a "%" is not followed by two
  hex digits; the bytes are not valid UTF-8; the raw path holds a lone surrogate; or a
  decoded segment is "." or "..", or contains "/", "\\", NUL or another control character
  (U+0000-U+001F, U+007F). So "/a/..%2fadmin", "/a/%2e%2e/admin", "/a/./b", "/a%00" are
  BAD_PATH, never matched (not even by the default route). A path is checked completely
  before it is matched, so a bad segment anywhere makes it BAD_PATH, even after an
  empty one.
* Static segments compare the decoded segment with the template's text, so
  "/caf%C3%A9" and "/café" both match the route "/café". "+" is not a space in paths.
* Parameter values are decoded segments. A greedy value is the decoded remaining
  segments joined with "/" (without the ignored trailing slash): "/files/a%20b/c/" gives
  {"proxy": "a b/c"}. A decoded "/" cannot occur inside a segment (it is BAD_PATH), so
  the joined value is unambiguous.

$default
--------
``set_default(value)`` is API Gateway HTTP APIs' "$default" route: when nothing else
matches (NOT_FOUND or METHOD_NOT_ALLOWED), ``match`` returns ``(MATCH, value, {})``.
BAD_PATH stays BAD_PATH. ``routes()`` lists the added routes only, not the default.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from gwcore.errors import RouteConflictError, RouteSyntaxError

__all__ = [
    "MATCH", "NOT_FOUND", "METHOD_NOT_ALLOWED", "BAD_PATH",
    "Router", "RouteConflictError", "RouteSyntaxError",
]

MATCH = 0
NOT_FOUND = 1
METHOD_NOT_ALLOWED = 2
BAD_PATH = 3

ANY = "ANY"

# segment kinds in a parsed template
STATIC = 0
PARAM = 1
GREEDY = 2

_METHOD_RE = re.compile(r"[A-Z0-9!#$%&'*+.^_`|~-]+\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
# characters a raw request path may never hold: controls, DEL, backslash, lone surrogates
_BAD_RAW_RE = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff]")
# a decoded segment may additionally never hold "/"
_BAD_DECODED_RE = re.compile("[\x00-\x1f\x7f\\\\/]")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BAD_TEMPLATE_CHARS_RE = re.compile("[\x00-\x1f\x7f\\\\%?#{}\ud800-\udfff]")

_BAD = (BAD_PATH, None, None)
_NOT_FOUND = (NOT_FOUND, None, None)
_NOT_ALLOWED = (METHOD_NOT_ALLOWED, None, None)


def check_method(method: object) -> str:
    """Return ``method`` if it is an acceptable route method, else raise RouteSyntaxError."""
    if not isinstance(method, str) or not _METHOD_RE.match(method):
        raise RouteSyntaxError(
            f"invalid method {method!r}: expected an upper-case HTTP method or ANY")
    return method


def parse_template(path: object) -> tuple[tuple[tuple[int, str], ...], str]:
    """Parse a route template into ``((kind, text), ...)`` and its shape string.

    ``kind`` is STATIC (text = the literal), PARAM or GREEDY (text = the name). The shape
    ("/pets/{}" for "/pets/{id}", "/files/{+}" for "/files/{proxy+}") is what conflicts
    compare. Raises RouteSyntaxError.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise RouteSyntaxError(f"invalid route path {path!r}: must start with '/'")
    if path == "/":
        return (), "/"
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    raw = body.split("/")
    segs: list[tuple[int, str]] = []
    names: set[str] = set()
    shape: list[str] = []
    last = len(raw) - 1
    for i, seg in enumerate(raw):
        if seg == "":
            raise RouteSyntaxError(f"invalid route path {path!r}: empty segment")
        if seg.startswith("{") and seg.endswith("}") and len(seg) >= 2:
            inner = seg[1:-1]
            greedy = inner.endswith("+")
            name = inner[:-1] if greedy else inner
            if not name:
                raise RouteSyntaxError(f"invalid route path {path!r}: empty parameter name")
            if not _NAME_RE.match(name):
                raise RouteSyntaxError(
                    f"invalid route path {path!r}: bad parameter name {name!r} "
                    "(allowed: letters, digits, '_', '.', '-')")
            if name in names:
                raise RouteSyntaxError(
                    f"invalid route path {path!r}: parameter {name!r} used twice")
            names.add(name)
            if greedy:
                if i != last:
                    raise RouteSyntaxError(
                        f"invalid route path {path!r}: greedy {{{name}+}} must be the "
                        "last segment")
                segs.append((GREEDY, name))
                shape.append("{+}")
            else:
                segs.append((PARAM, name))
                shape.append("{}")
            continue
        if "{" in seg or "}" in seg:
            raise RouteSyntaxError(
                f"invalid route path {path!r}: segment {seg!r}: a parameter must be a "
                "whole segment like {name} or {name+}")
        if seg in (".", ".."):
            raise RouteSyntaxError(f"invalid route path {path!r}: dot segment {seg!r}")
        bad = _BAD_TEMPLATE_CHARS_RE.search(seg)
        if bad:
            raise RouteSyntaxError(
                f"invalid route path {path!r}: character {bad.group()!r} not allowed in "
                "a static segment (write static text decoded, without '%')")
        segs.append((STATIC, seg))
        shape.append(seg)
    return tuple(segs), "/" + "/".join(shape)


class _Route:
    __slots__ = ("method", "path", "value", "label", "names", "positions", "greedy_pos")

    def __init__(self, method: str, path: str, value: Any, label: str,
                 segs: tuple[tuple[int, str], ...]) -> None:
        self.method = method
        self.path = path
        self.value = value
        self.label = label
        names = []
        positions = []
        self.greedy_pos = -1
        for i, (kind, text) in enumerate(segs):
            if kind == PARAM:
                names.append(text)
                positions.append(i)
            elif kind == GREEDY:
                self.greedy_pos = i
                names.append(text)
        self.names = tuple(names)
        self.positions = tuple(positions)

    def params(self, segs: list[str]) -> dict[str, str]:
        out = {}
        names = self.names
        for k, pos in enumerate(self.positions):
            out[names[k]] = segs[pos]
        if self.greedy_pos >= 0:
            out[names[-1]] = "/".join(segs[self.greedy_pos:])
        return out


class _Node:
    __slots__ = ("static", "param", "greedy", "methods", "any")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.greedy: _Node | None = None
        self.methods: dict[str, _Route] = {}
        self.any: _Route | None = None


def _decode_segment(seg: str) -> str | None:
    """Percent-decode one raw segment; None when it is not valid (BAD_PATH)."""
    if _BAD_PERCENT_RE.search(seg):
        return None
    try:
        out = unquote_to_bytes(seg).decode("utf-8")
    except UnicodeError:
        return None
    if _BAD_DECODED_RE.search(out):
        return None
    return out


def split_path(path: str) -> list[str] | None:
    """Validate and decode a raw request path into segments; None means BAD_PATH.

    The result may contain "" (an empty segment), which matches nothing.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    if _BAD_RAW_RE.search(path):
        return None
    if path == "/":
        return []
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    segs = body.split("/")
    if "%" in body:
        for i, seg in enumerate(segs):
            if "%" in seg:
                dec = _decode_segment(seg)
                if dec is None:
                    return None
                segs[i] = dec
    for seg in segs:
        if seg == "." or seg == "..":
            return None
    return segs


class Router:
    """A method + path router with API Gateway's rules. See the module docstring."""

    __slots__ = ("_root", "_routes", "_static_paths", "_frozen", "_default", "_default_label",
                 "_has_default")

    def __init__(self) -> None:
        self._root = _Node()
        self._routes: list[_Route] = []
        # raw path of every all-static route, and the same with a trailing "/" -> its node
        self._static_paths: dict[str, _Node] = {}
        self._frozen = False
        self._default: Any = None
        self._default_label: str | None = None
        self._has_default = False

    def add(self, method: str, path: str, value: object, label: str | None = None) -> None:
        """Add a route; raises RouteSyntaxError, RouteConflictError, or RuntimeError when frozen."""
        if self._frozen:
            raise RuntimeError("router is frozen: routes cannot be added")
        check_method(method)
        segs, shape = parse_template(path)
        if label is None:
            label = f"{method} {path}"
        node = self._root
        # find the node without creating anything, so a conflict leaves the trie unchanged
        for kind, text in segs:
            if node is None:
                break
            if kind == STATIC:
                node = node.static.get(text)
            elif kind == PARAM:
                node = node.param
            else:
                node = node.greedy
        if node is not None:
            old = node.any if method == ANY else node.methods.get(method)
            if old is not None:
                raise RouteConflictError(
                    f"route {label!r} conflicts with {old.label!r}: same method {method} "
                    f"and same path shape {shape}")
        route = _Route(method, path, value, label, segs)
        node = self._root
        texts = []
        for kind, text in segs:
            if kind == STATIC:
                texts.append(text)
                child = node.static.get(text)
                if child is None:
                    child = node.static[text] = _Node()
            elif kind == PARAM:
                child = node.param
                if child is None:
                    child = node.param = _Node()
            else:
                child = node.greedy
                if child is None:
                    child = node.greedy = _Node()
            node = child
        if method == ANY:
            node.any = route
        else:
            node.methods[method] = route
        if len(texts) == len(segs):
            key = "/" + "/".join(texts)
            self._static_paths[key] = node
            if texts:
                self._static_paths[key + "/"] = node
        self._routes.append(route)

    def set_default(self, value: object, label: str | None = None) -> None:
        """Set the "$default" route, returned when nothing else matches (not for BAD_PATH)."""
        if self._frozen:
            raise RuntimeError("router is frozen: the default route cannot be set")
        if label is None:
            label = "$default"
        if self._has_default:
            raise RouteConflictError(
                f"route {label!r} conflicts with {self._default_label!r}: "
                "there can be only one $default route")
        self._default = value
        self._default_label = label
        self._has_default = True

    def freeze(self) -> None:
        """Refuse further add()/set_default() calls."""
        self._frozen = True

    def routes(self) -> list[tuple[str, str, object]]:
        """(method, path, value) of every added route, in insertion order."""
        return [(r.method, r.path, r.value) for r in self._routes]

    def match(self, method: str, path: str) -> tuple[int, object | None, dict[str, str] | None]:
        """Match a request; see the module docstring for the result and the path rules."""
        if not isinstance(method, str) or not isinstance(path, str):
            raise TypeError("match() takes two str arguments: method and path")
        # Fast path for all-static routes. A raw path equal to one of their templates is
        # valid and decodes to itself (template text has no "%", control, "\\" or dot
        # segment), and the walk below would reach that same node first; so if the node
        # has a route for the method it is the answer. Otherwise the walk decides (it may
        # backtrack into a {param} route, or answer 405).
        if type(path) is str:
            node = self._static_paths.get(path)
            if node is not None:
                route = node.methods.get(method) or node.any
                if route is not None:
                    return (MATCH, route.value, {})
        segs = split_path(path)
        if segs is None:
            return _BAD
        seen = [False]
        route = None
        if "" not in segs:
            route = _walk(self._root, segs, 0, len(segs), method, seen)
        if route is not None:
            return (MATCH, route.value, route.params(segs))
        if self._has_default:
            return (MATCH, self._default, {})
        return _NOT_ALLOWED if seen[0] else _NOT_FOUND


def _walk(node: _Node, segs: list[str], i: int, n: int, method: str,
          seen: list[bool]) -> _Route | None:
    """Depth-first in priority order (static, param, greedy); first route for method wins."""
    if i == n:
        route = node.methods.get(method) or node.any
        if route is None and node.methods:
            seen[0] = True
        return route
    child = node.static.get(segs[i])
    if child is not None:
        route = _walk(child, segs, i + 1, n, method, seen)
        if route is not None:
            return route
    child = node.param
    if child is not None:
        route = _walk(child, segs, i + 1, n, method, seen)
        if route is not None:
            return route
    child = node.greedy
    if child is not None:
        route = child.methods.get(method) or child.any
        if route is None and child.methods:
            seen[0] = True
        return route
    return None
