"""Read a gateway config file, validate it, and return plain Python data.

Loading is: parse YAML (libyaml via PyYAML when installed, else ruamel round-trip; either way
with YAML 1.2 rules and a line number for every field) -> plain dicts and lists
-> validate against the JSON Schema (config/schema.json) -> a few shape checks the schema
cannot say well -> apply defaults and normalise (durations become float seconds). Every
problem found becomes one line "FILE:LINE: field.path: what is wrong"; all of them are
raised together in one ConfigError, sorted by line.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import difflib
import gc
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode as _RScalarNode

from .schema import FORMAT_EXPECTED, make_validator, parse_duration

__all__ = ["ConfigError", "Locator", "load_config", "load_config_text", "format_path", "load_schema"]



class ConfigError(Exception):
    """One or more problems with a config; str() is one line per problem."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def format_path(path: Iterable[str | int]) -> str:
    """('apis', 'shop', 'routes', 0, 'uri') -> 'apis.shop.routes[0].uri'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _plain_name(part):
            out += ("." if out else "") + part
        else:
            out += "[" + json.dumps(part) + "]"
    return out


def _plain_name(s: str) -> bool:
    return bool(s) and all(c.isalnum() or c in "_-$" for c in s) and not s[0].isdigit()


class Locator:
    """Maps field paths of a loaded config to line numbers in its file."""

    def __init__(self, file: str, lines: dict[tuple, int] | None = None):
        self.file = file
        self._lines: dict[tuple, int] = lines or {}

    def line(self, path: Iterable[str | int]) -> int:
        """1-based line of the field, or of the nearest enclosing field that has one."""
        path = tuple(path)
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return self._lines.get((), 1)

    def where(self, path: Iterable[str | int], at: Iterable[str | int] | None = None) -> str:
        """'FILE:LINE: dotted.path' (just 'FILE:LINE:' for the top level).

        ``at`` is the path whose line is used, when it differs from the one shown
        (an unknown key is reported on its own line but under its parent's path).
        """
        path = tuple(path)
        head = f"{self.file}:{self.line(path if at is None else at)}:"
        return f"{head} {format_path(path)}" if path else head

    def problem(self, path: Iterable[str | int], text: str, at: Iterable[str | int] | None = None) -> str:
        """One full message line: 'FILE:LINE: dotted.path: text'."""
        return f"{self.where(path, at)}: {text}" if tuple(path) else f"{self.where(path, at)} {text}"

    def sort(self, problems: Iterable[tuple[tuple, str] | tuple[tuple, str, tuple]]) -> list[str]:
        """(path, text[, at]) tuples -> message lines sorted by line, duplicates dropped."""
        keyed = set()
        for p in problems:
            path, text = p[0], p[1]
            at = p[2] if len(p) > 2 else None
            keyed.add((self.line(path if at is None else at), self.problem(path, text, at)))
        return [msg for _, msg in sorted(keyed)]


# ---------------------------------------------------------------- schema


_SCHEMA_CACHE: dict[str, Any] = {}


def load_schema() -> dict:
    """The config JSON Schema: proxy/schema.json when installed, else <repo>/config/schema.json."""
    if "schema" not in _SCHEMA_CACHE:
        text = None
        try:
            res = resources.files("proxy").joinpath("schema.json")
            if res.is_file():
                text = res.read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            text = None
        if text is None:
            text = (Path(__file__).resolve().parents[2] / "config" / "schema.json").read_text(encoding="utf-8")
        _SCHEMA_CACHE["schema"] = json.loads(text)
    return _SCHEMA_CACHE["schema"]


def _validator():
    if "validator" not in _SCHEMA_CACHE:
        _SCHEMA_CACHE["validator"] = make_validator(load_schema())
    return _SCHEMA_CACHE["validator"]


# ---------------------------------------------------------------- loading


def load_config(path: str | os.PathLike) -> tuple[dict, Locator]:
    """Load and validate a config file. Raises ConfigError listing every problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{name}: cannot read the config file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{name}:{line}: the config file is not valid UTF-8") from None
    base_dir = os.path.dirname(os.path.abspath(name))
    return _load(text, name, base_dir)


def load_config_text(text: str, filename: str = "<string>") -> tuple[dict, Locator]:
    """Load and validate config text; ``filename`` is only used in messages.

    Relative function code directories stay relative (to the current directory).
    """
    return _load(text, filename, None)


def _load(text: str, filename: str, base_dir: str | None) -> tuple[dict, Locator]:
    with _gc_paused():  # parsing makes many objects and no garbage: spare the cyclic GC passes
        parsed = _parse_fast(text)
        if parsed is None:
            parsed = _parse_ruamel(text, filename)
    data, lines, problems = parsed
    loc = Locator(filename, lines)
    if data is None:
        raise ConfigError(f"{filename}:1: the config is empty; expected a mapping with at least 'apis'")
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:{loc.line(())}: expected a mapping at the top level, got {_kind(data)}")

    problems.extend(_schema_problems(data))
    problems.extend(_shape_problems(data))
    if problems:
        raise ConfigError(loc.sort(problems))

    _apply_defaults(data, load_schema(), load_schema())
    _normalise(data, base_dir)
    return data, loc


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection inside (a big config's node tree made the collector
    rescan a growing heap over and over: over half of the parse time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_ruamel(text: str, filename: str) -> tuple[Any, dict, list]:
    """Parse with ruamel's round-trip loader (pure Python, slow): the reference behaviour.

    Returns (plain data, {path: line}, problems); a YAML error becomes a ConfigError.
    """
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        raise ConfigError(_yaml_message(filename, e)) from None
    except YAMLError as e:  # unmarked (rare): keep it on one line
        raise ConfigError(f"{filename}:1: invalid YAML: {_one_line(str(e))}") from None
    lines: dict[tuple, int] = {}
    problems: list[tuple] = []
    data = _plain(doc, (), lines, problems)
    return data, lines, problems


def _yaml_message(filename: str, e: MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else f"{filename}:1"
    problem = _one_line(e.problem or "")
    dup = re.match(r'found duplicate key "(.*?)" with value', problem)
    if dup:
        problem = f"duplicate key {dup.group(1)!r}"
    if e.context and e.context_mark is not None and e.problem:
        what = f"{problem} ({e.context} started at line {e.context_mark.line + 1})"
    elif e.context and e.problem:
        what = f"{e.context}: {problem}"
    else:
        what = problem or _one_line(e.context or "") or "syntax error"
    return f"{where}: invalid YAML: {what}"


def _one_line(s: str) -> str:
    return " ".join(s.strip().splitlines()[0].split()) if s.strip() else ""


def _plain(node: Any, path: tuple, lines: dict, problems: list) -> Any:
    """ruamel round-trip data -> plain dict/list/str/int/float/bool/None, recording lines."""
    if isinstance(node, CommentedMap):
        if path == ():
            try:
                lines[()] = node.lc.line + 1
            except (AttributeError, TypeError):
                pass
        out: dict = {}
        for key, value in node.items():
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):  # merged (<<) keys have no own position
                line = None
            if isinstance(key, bool) or key is None or not isinstance(key, (str, int, float)):
                shown = _show(_plain(key, (), {}, []))
                if line is not None:
                    lines[path + (shown,)] = line
                problems.append((path, f"keys must be strings, got {shown} (put it in quotes)", path + (shown,)))
                continue
            k = key if isinstance(key, str) else str(key)  # 200: -> "200"; name patterns still apply
            kpath = path + (k,)
            if line is not None:
                lines[kpath] = line
            out[k] = _plain(value, kpath, lines, problems)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                lines[path + (i,)] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            items.append(_plain(value, path + (i,), lines, problems))
        return items
    if isinstance(node, dict):
        return {str(k): _plain(v, path + (str(k),), lines, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, path + (i,), lines, problems) for i, v in enumerate(node)]
    if node is None or type(node) is bool:
        return node
    if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()  # unquoted 2024-01-01 in a string field means the string
    return node


# ---------------------------------------------------------------- fast YAML path (libyaml)
#
# ruamel's round-trip parser is pure Python and was most of the load time of a big config
# (seconds for 10,000 routes). When PyYAML's libyaml binding is installed, libyaml (C) parses
# and composes the text into a node tree, and _FastBuilder turns that tree into exactly what
# ruamel + _plain() give: the same data, line table and problems. Scalars that could be
# anything but a string are resolved and constructed by ruamel's own YAML 1.2 resolver and
# round-trip constructor (so `yes`/`on` stay strings, `0o17` is 15, `2024-01-01` a date...),
# and mappings follow ruamel's merge-key (<<) rules and key order. Whatever the fast path
# cannot vouch for -- any YAML error, a duplicate key, a tag, a complex key, a %-directive,
# an anchored scalar, tabs, unusual line breaks, very deep nesting, ... -- makes it give up
# (None), and the text is parsed by ruamel as before: errors read exactly as they always did.

try:
    from yaml import __with_libyaml__ as _WITH_LIBYAML
    from yaml.nodes import MappingNode as _YMappingNode, ScalarNode as _YScalarNode

    if _WITH_LIBYAML:
        from yaml._yaml import CParser as _CParser
    else:  # pure-Python PyYAML is no faster than ruamel: keep ruamel
        _CParser = None
except Exception:  # PyYAML not installed (or broken): ruamel does it all
    _CParser = None

_MAX_DEPTH = 200  # deeper nesting goes to ruamel (which gives up a little past 300)


class _GiveUp(Exception):
    """The fast path will not vouch for this text; parse it with ruamel."""


# Text the fast path leaves to ruamel, found by comparing the two on many thousands of
# generated and mutated documents: where libyaml would accept what ruamel refuses or read
# it differently, or where ruamel's data would keep a trace of the syntax:
# - a %-directive (%YAML 1.1 changes the rules) and the document end marker '...';
# - tabs (ruamel refuses some that libyaml takes as white space), CR-only, NEL, LS and PS
#   line breaks and a BOM (counted or stripped differently);
# - tags: libyaml does not tell the non-specific '!' apart from no tag, and ruamel keeps
#   the others; explicit keys ('? ');
# - an anchor on a scalar (ruamel keeps an anchored scalar as its own str/int/bool type,
#   which shows when it is a key); anchor and alias names beyond [A-Za-z0-9_-] (ruamel
#   reads more characters into a name);
# - a block scalar header with anything but indicators after | or >, or followed by a line
#   of only spaces; a quoted key with its value right after the colon ("a":1).
# Each branch starts with its character and looks behind after it: that keeps the search
# through a megabyte of config at a few tens of milliseconds.
_FAST_UNSAFE = re.compile(
    r"[\t\x85\u2028\u2029\ufeff]|\r(?!\n)|['\"]:\S"
    r"|[|>](?<!\S[|>])[-+0-9]*(?:[ ]*(?:#[^\r\n]*)?\r?\n[ ]+\r?$|[^-+0-9\s])"
    r"|!(?<![^\s,\[{]!)"
    r"|\?(?<![^\s,\[{]\?)(?![^\s,\]}])"
    r"|&\S+[ ]+[^\s\[{#]"
    r"|[&*](?<![^\s,\[\]{}][&*])[A-Za-z0-9_-]*[^A-Za-z0-9_\s,\[\]{}-]",
    re.M,
)


def _fast_unsafe(text: str) -> bool:
    if text.startswith(("%", "...")) or "\n%" in text or "\n..." in text:  # a directive, '...'
        return True
    return _FAST_UNSAFE.search(text) is not None


if _CParser is not None:
    class _Composer(_CParser):
        """libyaml's parser and composer, tags left unresolved. A node's tag says what it is:
        'p' plain scalar, 'q' quoted or block scalar, 'm' mapping, 's' sequence, '?' an
        unknown kind; an explicit tag (!!str, !foo) stays as written."""

        _depth = 0

        def resolve(self, kind, value, implicit):
            if kind is _YScalarNode:
                return "p" if implicit[0] else "q" if implicit[1] else "?"
            if not implicit:
                return "?"
            return "m" if kind is _YMappingNode else "s"

        def descend_resolver(self, parent, index):
            self._depth += 1
            if self._depth > _MAX_DEPTH:
                raise _GiveUp("nested too deeply")

        def ascend_resolver(self, *args):
            self._depth -= 1


def _parse_fast(text: str) -> tuple[Any, dict, list] | None:
    """(plain data, {path: line}, problems) as _parse_ruamel gives them, or None to use ruamel."""
    if _CParser is None or not isinstance(text, str) or _fast_unsafe(text):
        return None
    try:
        composer = _Composer(text)
        try:
            root = composer.get_single_node()
        finally:
            composer.dispose()
        return _FastBuilder().build(root)
    except Exception:  # a YAML error, a duplicate key, recursion, ...: ruamel decides and words it
        return None


_YAML_TAG = "tag:yaml.org,2002:"
_STR_TAG = _YAML_TAG + "str"
_MERGE_TAG = _YAML_TAG + "merge"
_CONSTRUCTED_TAGS = frozenset(_YAML_TAG + t for t in ("null", "bool", "int", "float", "timestamp"))
_MERGE = object()    # the plain scalar << (a merge key)
_MISSING = object()


class _FastBuilder:
    """libyaml node tree -> what ruamel round-trip loading + _plain() would give."""

    def __init__(self):
        rt = YAML(typ="rt")
        self._resolver = rt.resolver
        self._constructor = rt.constructor
        if getattr(self._resolver, "yaml_path_resolvers", None):
            raise _GiveUp("path resolvers are registered")
        first = set(self._resolver.versioned_resolver)  # YAML 1.2 rules by first character
        self._resolve_all = None in first
        self._first = frozenset(first - {None})
        self._scalars: dict[str, Any] = {}  # plain scalar text -> ruamel's value for it
        self._values: dict[str, Any] = {}   # plain scalar text -> _plain() of that value

    def build(self, root) -> tuple[Any, dict, list]:
        lines: dict[tuple, int] = {}
        problems: list[tuple] = []
        if root is None:
            return None, lines, problems
        if root.tag != "m":
            # An error anyway. And ruamel builds the items of a top-level list in an order of
            # its own (a << can merge a mapping before it is filled in), and a top-level block
            # scalar may read differently. Under a top-level mapping everything is built at
            # once, in document order, as here.
            raise _GiveUp("the document is not a mapping")
        lines[()] = root.start_mark.line + 1
        return self._value(root, (), lines, problems), lines, problems

    def _scalar(self, text: str) -> Any:
        """A plain scalar as ruamel's YAML 1.2 round-trip loader constructs it."""
        if not self._resolve_all and text[:1] not in self._first:
            return text
        obj = self._scalars.get(text, _MISSING)
        if obj is _MISSING:
            tag = self._resolver.resolve(_RScalarNode, text, (True, False))
            name = str(tag)
            if name == _STR_TAG:
                obj = text
            elif name == _MERGE_TAG:
                obj = _MERGE
            elif name in _CONSTRUCTED_TAGS:
                obj = self._constructor.construct_non_recursive_object(_RScalarNode(tag, text))
            else:
                raise _GiveUp(f"scalar resolves to {name}")
            self._scalars[text] = obj
        return obj

    def _value(self, node, path: tuple, lines: dict, problems: list) -> Any:
        tag = node.tag
        if tag == "p":
            text = node.value
            if not self._resolve_all and text[:1] not in self._first:
                return text
            value = self._values.get(text, _MISSING)
            if value is _MISSING:
                obj = self._scalar(text)
                if obj is _MERGE:
                    raise _GiveUp("<< as a value")
                value = self._values[text] = _plain(obj, (), {}, [])
            return value
        if tag == "q":
            return node.value
        if tag == "m":
            out: dict = {}
            for key, (line, vnode) in self._pairs(node).items():
                # as in _plain()
                if isinstance(key, bool) or key is None or not isinstance(key, (str, int, float)):
                    shown = _show(_plain(key, (), {}, []))
                    if line is not None:
                        lines[path + (shown,)] = line
                    problems.append((path, f"keys must be strings, got {shown} (put it in quotes)", path + (shown,)))
                    self._value(vnode, (), {}, [])  # unused, but ruamel built it: same errors
                    continue
                k = key if isinstance(key, str) else str(key)
                kpath = path + (k,)
                if line is not None:
                    lines[kpath] = line
                out[k] = self._value(vnode, kpath, lines, problems)
            return out
        if tag == "s":
            items = []
            for i, child in enumerate(node.value):
                ipath = path + (i,)
                lines[ipath] = child.start_mark.line + 1
                items.append(self._value(child, ipath, lines, problems))
            return items
        raise _GiveUp(f"node tagged {tag!r}")

    def _pairs(self, node) -> dict:
        """A mapping's {key: (line or None, value node)} in ruamel's order: its own keys as
        written, then the keys merged in with << that it does not have (first merge wins);
        merged keys have no line of their own."""
        own: dict = {}
        merge = None
        for knode, vnode in node.value:
            ktag = knode.tag
            if ktag == "p":
                key = self._scalar(knode.value)
                if key is _MERGE:
                    if merge is not None:
                        raise _GiveUp("duplicate <<")
                    merge = vnode
                    continue
            elif ktag == "q":
                key = knode.value
            else:
                raise _GiveUp("a key that is not a scalar")
            if key in own:
                raise _GiveUp("duplicate key")  # ruamel words the error
            own[key] = (knode.start_mark.line + 1, vnode)
        if merge is None:
            return own
        if merge.tag == "m":
            sources = [merge]
        elif merge.tag == "s" and all(sub.tag == "m" for sub in merge.value):
            sources = merge.value
        else:
            raise _GiveUp("<< of something that is not a mapping")
        for source in sources:
            self._value(source, (), {}, [])  # ruamel builds all of it, even what is overridden
            for key, (_line, vnode) in self._pairs(source).items():
                if key not in own:
                    own[key] = (None, vnode)
        return own


# ---------------------------------------------------------------- schema errors -> messages

_TYPE_NAMES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean",
               "object": "mapping", "array": "list", "null": "null"}


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list" if v else "an empty list"
    return _show(v)


def _show(v: Any) -> str:
    """A value as it would be written in YAML, short; containers are not dumped."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        s = v if len(v) <= 60 else v[:57] + "..."
        return repr(s)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (dict, list)):
        return _kind(v)
    return f"a {type(v).__name__} value"


def _quoted_list(values: Iterable[Any]) -> str:
    return ", ".join(_show(v) for v in values)


def _schema_problems(data: dict) -> list[tuple]:
    out: list[tuple] = []
    for err in _validator().iter_errors(data):
        out.extend(_translate(err))
    return out


def _translate(err) -> list[tuple]:
    """One jsonschema error -> [(path, text[, at])]."""
    path = tuple(err.absolute_path)
    inst = err.instance
    schema = err.schema if isinstance(err.schema, dict) else {}
    kw = err.validator
    val = err.validator_value

    if kw == "additionalProperties" and isinstance(inst, dict):
        known = list(schema.get("properties", {}))
        out = []
        for key in inst:
            if key in known:
                continue
            text = f"unknown field {_show(key)}"
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            if near:
                text += f" (did you mean {_show(near[0])}?)"
            elif known and len(known) <= 12:
                text += f" (expected one of {_quoted_list(known)})"
            out.append((path, text, path + (key,)))
        return out
    if kw == "required" and isinstance(inst, dict):
        when = schema.get("x-when")
        if when and "{" in when:
            try:
                when = when.format_map({k: v for k, v in inst.items() if isinstance(v, str)})
            except (KeyError, ValueError, IndexError):
                when = None
        return [(path, f"missing required field {_show(name)}" + (f" (required {when})" if when else ""))
                for name in val if name not in inst]
    if kw == "type":
        types = [val] if isinstance(val, str) else list(val)
        text = f"expected {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}, got {_kind(inst)}"
        if "string" in types and isinstance(inst, (bool, int, float)):
            text += " (put it in quotes)"
        return [(path, text)]
    if kw == "enum":
        unsupported = schema.get("x-unsupported", {})
        if isinstance(inst, str) and inst in unsupported:
            return [(path, f"{unsupported[inst]} (expected one of {_quoted_list(val)}, got {_show(inst)})")]
        text = f"expected one of {_quoted_list(val)}, got {_kind(inst)}"
        if isinstance(inst, (int, float)) and any(isinstance(v, str) and v == str(inst) for v in val):
            text += " (put it in quotes)"
        return [(path, text)]
    if kw == "const":
        return [(path, f"expected {_show(val)}, got {_kind(inst)}")]
    if kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        noun = "an integer" if schema.get("type") == "integer" else "a number"
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None:
            return [(path, f"expected {noun} between {lo} and {hi}, got {_show(inst)}")]
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kw]
        return [(path, f"expected {noun} {op} {val}, got {_show(inst)}")]
    if kw == "minItems":
        return [(path, f"expected a list with at least {val} item{'s' if val != 1 else ''}, got {_kind(inst)}")]
    if kw == "maxItems":
        return [(path, f"expected a list with at most {val} item{'s' if val != 1 else ''}")]
    if kw == "minLength":
        return [(path, "expected a non-empty string" if val == 1 else f"expected at least {val} characters, got {_show(inst)}")]
    if kw == "pattern":
        expected = schema.get("x-expected") or f"a string matching {val!r}"
        if _is_property_name(err):
            return [(path, f"invalid name {_show(inst)}: expected {expected}", path + (inst,))]
        return [(path, f"expected {expected}, got {_show(inst)}")]
    if kw == "format":
        expected = FORMAT_EXPECTED.get(val, f"a {val}")
        return [(path, f"expected {expected}, got {_show(inst)}")]
    if kw == "duration":
        return [(path, err.message)]
    if kw in ("oneOf", "anyOf"):
        if isinstance(schema, dict) and schema.get("x-expected"):
            return [(path, f"expected {schema['x-expected']}, got {_show(inst)}")]
        return _translate_choice(err)
    # Fallback: jsonschema's own words, kept to one line.
    return [(path, _one_line(err.message))]


def _is_property_name(err) -> bool:
    return "propertyNames" in err.schema_path


def _translate_choice(err) -> list[tuple]:
    """oneOf/anyOf: report the errors of the one branch whose type fits the value."""
    branches: dict[int, list] = {}
    for sub in err.context or ():
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = {
        i: errs for i, errs in branches.items()
        if not any(e.validator == "type" and not e.relative_path for e in errs)
    }
    if len(fitting) == 1:
        out = []
        for sub in next(iter(fitting.values())):
            out.extend(_translate(sub))
        return out
    types = []
    for option in err.validator_value:
        t = option.get("type") if isinstance(option, dict) else None
        for name in [t] if isinstance(t, str) else (t or []):
            if _TYPE_NAMES.get(name, name) not in types:
                types.append(_TYPE_NAMES.get(name, name))
    path = tuple(err.absolute_path)
    if types and not fitting:
        return [(path, f"expected {' or '.join(types)}, got {_kind(err.instance)}")]
    return [(path, _one_line(err.message) if len(err.message) < 120 else "does not match any allowed form")]


# ---------------------------------------------------------------- checks the schema cannot say well


def _shape_problems(data: dict) -> list[tuple]:
    out: list[tuple] = []
    apis = data.get("apis")
    if not isinstance(apis, dict):
        return out
    for name, api in apis.items():
        if not isinstance(api, dict) or api.get("type") != "rest":
            continue
        stages = api.get("stages")
        if isinstance(stages, dict) and "$default" in stages:
            out.append((("apis", name, "stages"),
                        "the '$default' stage is only for http APIs; name the stage (e.g. 'prod')",
                        ("apis", name, "stages", "$default")))
        routes = api.get("routes")
        if isinstance(routes, list):
            for i, r in enumerate(routes):
                if isinstance(r, dict) and r.get("route") == "$default":
                    out.append((("apis", name, "routes", i, "route"),
                                "the '$default' route is only for http APIs; use 'ANY /{proxy+}'"))
    return out


# ---------------------------------------------------------------- defaults and normalisation


def _resolve(schema: dict, root: dict) -> dict:
    if isinstance(schema, dict) and "$ref" in schema:  # memoised: called for every value
        cache = _SCHEMA_CACHE.setdefault("resolved", {})
        hit = cache.get(id(schema))
        if hit is not None and hit[0] is schema and hit[1] is root:
            return hit[2]
        resolved = _resolve_refs(schema, root)
        if len(cache) > 10_000:
            cache.clear()
        cache[id(schema)] = (schema, root, resolved)  # holds schema, so its id is not reused
        return resolved
    return schema


def _resolve_refs(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **merged}
    return schema


def _applicable(schema: dict, value: Any, root: dict) -> list[dict]:
    """The schema plus the allOf members and if/then branches that apply to value."""
    schema = _resolve(schema, root)
    out = [schema]
    for sub in schema.get("allOf", ()):
        out.extend(_applicable(sub, value, root))
    if "if" in schema and "then" in schema and _is_valid(schema["if"], value, root):
        out.extend(_applicable(schema["then"], value, root))
    for key in ("oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            if _is_valid(sub, value, root):
                out.extend(_applicable(sub, value, root))
                break
    return out


def _is_valid(sub: Any, value: Any, root: dict) -> bool:
    """_sub_validator(sub, root).is_valid(value), memoised where that is sound.

    A piece that only says "properties" and "required" (every 'if' in the schema) is decided
    by the value's properties it names: the result is kept per piece and per those values
    (types included), so 10,000 routes cost a handful of validations, not 30,000.
    """
    if not (isinstance(sub, dict) and isinstance(value, dict) and sub and sub.keys() <= {"properties", "required"}):
        return _sub_validator(sub, root).is_valid(value)
    names = list(sub.get("properties", {}))
    names += [n for n in sub.get("required", ()) if n not in names]
    try:
        key = (id(sub), tuple((n, _frozen(value[n])) if n in value else (n,) for n in names))
        hash(key)
    except TypeError:  # not JSON-like data: no memo
        return _sub_validator(sub, root).is_valid(value)
    cache = _SCHEMA_CACHE.setdefault("is_valid", {})
    hit = cache.get(key)
    if hit is None or hit[0] is not sub:
        if len(cache) > 10_000:
            cache.clear()
        hit = cache[key] = (sub, _sub_validator(sub, root).is_valid(value))
    return hit[1]


def _frozen(v: Any) -> Any:
    """A hashable stand-in for JSON-like data; equal only for the same values of the same types."""
    if isinstance(v, dict):
        return (dict, tuple((k, _frozen(x)) for k, x in v.items()))
    if isinstance(v, list):
        return (list, tuple(_frozen(x) for x in v))
    return (type(v), v)


def _sub_validator(sub: dict, root: dict):
    """A validator for a piece of the schema (an if, a oneOf branch); cached per piece."""
    cache = _SCHEMA_CACHE.setdefault("sub", {})
    v = cache.get(id(sub))
    if v is None:
        full = {**sub, "$defs": root.get("$defs", {})} if isinstance(sub, dict) else sub
        v = cache[id(sub)] = (_validator().evolve(schema=full), sub)
    return v[0]


def _apply_defaults(value: Any, schema: dict, root: dict) -> Any:
    """Fill defaults in place and convert durations; returns the (possibly new) value."""
    schemas = _applicable(schema, value, root)
    for s in schemas:
        if "duration" in s:
            return parse_duration(value)
        if s.get("type") == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)
    if isinstance(value, dict):
        for s in schemas:
            for key, sub in s.get("properties", {}).items():
                sub_r = _resolve(sub, root)
                if key not in value and "default" in sub_r:
                    value[key] = copy.deepcopy(sub_r["default"])
        for key in list(value):
            subs = [s["properties"][key] for s in schemas if key in s.get("properties", {})]
            if not subs:
                subs = [s["additionalProperties"] for s in schemas if isinstance(s.get("additionalProperties"), dict)]
            for sub in subs:
                value[key] = _apply_defaults(value[key], sub, root)
    elif isinstance(value, list):
        for s in schemas:
            if isinstance(s.get("items"), dict):
                for i in range(len(value)):
                    value[i] = _apply_defaults(value[i], s["items"], root)
    return value


def _normalise(data: dict, base_dir: str | None) -> None:
    """Shapes the rest of the code can rely on without re-checking."""
    server = data["server"]
    server.setdefault("admin", None)
    for link in data["vpc_links"].values():
        link["targets"] = [t if isinstance(t, dict) else {"address": t, "weight": 1} for t in link["targets"]]
    for name, fn in data["functions"].items():
        if base_dir is not None and not os.path.isabs(fn["code"]):
            fn["code"] = os.path.normpath(os.path.join(base_dir, fn["code"]))
        if fn["runtime"] == "remote":
            fn.setdefault("function_name", name)
    for api in data["apis"].values():
        if api["type"] == "http" and "stages" not in api:
            api["stages"] = {"$default": _apply_defaults({}, {"$ref": "#/$defs/stage"}, load_schema())}
        for route in api["routes"]:
            integ = route["integration"]
            if integ["type"] == "aws_proxy":
                integ.setdefault("payload_format", "1.0" if api["type"] == "rest" else "2.0")
