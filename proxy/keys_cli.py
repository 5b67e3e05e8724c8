"""`gwproxy keys ...`: make API keys without ever storing them.

    gwproxy keys create [NAME] [--plan PLAN] [--json]
        generates a random key (40 letters and digits, like API Gateway's), prints it once,
        and prints the line to add under ``api_keys:`` (only its SHA-256 goes in the config)
    gwproxy keys hash [--name NAME]   (the key on stdin)
        the same config line for a key you already have

``main(argv)`` takes the arguments after ``keys`` and returns the exit status.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import string
import sys

ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 40
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def new_key(length: int = KEY_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def config_line(name: str, key: str) -> str:
    return f"{name}: {{sha256: {hashlib.sha256(key.encode('utf-8')).hexdigest()}}}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gwproxy keys", description="API keys for gwproxy")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="generate a key and print its config line")
    c.add_argument("name_arg", nargs="?", metavar="NAME", help="key name in api_keys")
    c.add_argument("--name", default=None, help="the same as NAME (default: key-<random>)")
    c.add_argument("--plan", default=None, help="usage plan to mention in the instructions")
    c.add_argument("--json", action="store_true", help="print {name, key, sha256} as JSON")
    h = sub.add_parser("hash", help="config line for an existing key read from stdin")
    h.add_argument("--name", default="my-key")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "keys":
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    name = getattr(args, "name_arg", None) or args.name or f"key-{secrets.token_hex(3)}"
    if not _NAME.match(name):
        print(f"gwproxy keys: --name must be letters, digits, '-' and '_', got {name!r}",
              file=sys.stderr)
        return 2
    if args.cmd == "hash":
        key = sys.stdin.readline().rstrip("\r\n")
        if not key:
            print("gwproxy keys hash: no key on stdin", file=sys.stderr)
            return 2
        print(config_line(name, key))
        return 0
    key = new_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    if args.json:
        print(json.dumps({"name": name, "key": key, "sha256": digest}))
        return 0
    print(f"API key (shown once; clients send it as 'x-api-key'):\n  {key}\n")
    print("Add under api_keys: in your config:\n  " + config_line(name, key))
    if args.plan:
        print(f"\nand add '{name}' to usage_plans.{args.plan}.keys")
    else:
        print(f"\nand add '{name}' to the keys of a usage plan covering the routes' stages")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
