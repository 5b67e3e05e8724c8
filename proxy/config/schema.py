"""The config schema's vocabulary beyond standard JSON Schema: durations and formats.

- ``duration``: ``{"min": "50ms", "max": "29s"}`` (both optional). The value is a number of
  seconds or a string such as ``500ms``, ``3s``, ``1m``, ``1h``, ``1.5s``; the error message
  quotes the bounds as written in the schema.
- formats ``host-port`` (``host:port``, ``[v6]:port``), ``target`` (``host:port`` or
  ``unix:/path``), ``cidr``, ``ip``.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_EXPECTED = "a duration such as '3s', '500ms', '1m' or a number of seconds"


def parse_duration(value: Any) -> float:
    """'500ms' -> 0.5, '3s' -> 3.0, '1m' -> 60.0, 2 -> 2.0. Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"not a duration: {value!r}")


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return repr(v)


def _duration_keyword(validator, bounds, instance, schema):
    try:
        seconds = parse_duration(instance)
    except ValueError:
        yield ValidationError(f"expected {DURATION_EXPECTED}, got {_show(instance)}")
        return
    bounds = bounds or {}
    lo, hi = bounds.get("min"), bounds.get("max")
    lo_s = parse_duration(lo) if lo is not None else None
    hi_s = parse_duration(hi) if hi is not None else None
    eps = 1e-9
    if (lo_s is not None and seconds < lo_s - eps) or (hi_s is not None and seconds > hi_s + eps):
        if lo is not None and hi is not None:
            rng = f"between {lo} and {hi}"
        elif lo is not None:
            rng = f"of at least {lo}"
        else:
            rng = f"of at most {hi}"
        yield ValidationError(f"expected a duration {rng}, got {_show(instance)}")


# ---------------------------------------------------------------- formats

FORMAT_EXPECTED = {
    "host-port": "host:port (or [ipv6]:port)",
    "target": "host:port or unix:/path",
    "cidr": "a network such as '10.0.0.0/8' or an IP address",
    "ip": "an IP address",
}

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def split_host_port(s: str) -> tuple[str, int]:
    """'127.0.0.1:8080' -> ('127.0.0.1', 8080); '[::1]:80' -> ('::1', 80). Raises ValueError."""
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1: end + 2] != ":":
            raise ValueError(s)
        host, port = s[1:end], s[end + 2:]
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = s.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(s)
        if not _HOST_RE.match(host):
            raise ValueError(s)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(s)
    return host, int(port)


format_checker = FormatChecker(formats=())


@format_checker.checks("host-port", raises=ValueError)
def _is_host_port(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    split_host_port(value)
    return True


@format_checker.checks("target", raises=ValueError)
def _is_target(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    if value.startswith("unix:"):
        return value[5:].startswith("/") and len(value) > 6
    split_host_port(value)
    return True


@format_checker.checks("cidr", raises=ValueError)
def _is_cidr(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    ipaddress.ip_network(value, strict=False)
    return True


@format_checker.checks("ip", raises=ValueError)
def _is_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    ipaddress.ip_address(value)
    return True


GatewayValidator = validators.extend(Draft202012Validator, {"duration": _duration_keyword})


def make_validator(schema: dict):
    return GatewayValidator(schema, format_checker=format_checker)
