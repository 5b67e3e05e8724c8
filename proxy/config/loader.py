"""Read a gateway config file, validate it, and return plain Python data.

Loading is: parse YAML (ruamel round-trip, for line numbers) -> plain dicts and lists
-> validate against the JSON Schema (config/schema.json) -> a few shape checks the schema
cannot say well -> apply defaults and normalise (durations become float seconds). Every
problem found becomes one line "FILE:LINE: field.path: what is wrong"; all of them are
raised together in one ConfigError, sorted by line.
"""
from __future__ import annotations

import copy
import datetime
import difflib
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

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
    if "if" in schema and "then" in schema and _sub_validator(schema["if"], root).is_valid(value):
        out.extend(_applicable(schema["then"], value, root))
    for key in ("oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            if _sub_validator(sub, root).is_valid(value):
                out.extend(_applicable(sub, value, root))
                break
    return out


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
