"""The `gwproxy` command: serve, check, version, keys."""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__


def _load(path: str):
    """Load and compile, or print the problems (one line each) and return None."""
    from .config import ConfigError, load_config
    from .gateway import compile_gateway
    try:
        cfg, locator = load_config(path)
        return compile_gateway(cfg, locator)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return None
    except OSError as e:
        print(f"{path}: cannot read config: {e.strerror}", file=sys.stderr)
        return None


def resolve_workers(value) -> int:
    """``server.workers`` / ``--workers``: a number, or "auto" for one per CPU this process
    may run on (its affinity mask, as nginx's ``worker_processes auto`` counts)."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    return int(value)


def _workers_arg(text: str):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or auto, got {text!r}")
    return n


def cmd_check(args) -> int:
    gw = _load(args.config)
    if gw is None:
        return 1
    from .admin import route_table
    rows = route_table(gw)
    cols = ("api", "stage", "method", "url", "integration", "target")
    table = [cols] + [tuple(str(r[c]) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"{args.config}: OK, {len(rows)} routes")
    return 0


def cmd_serve(args) -> int:
    from .server import ServeSettings, parse_hostport, serve
    gw = _load(args.config)
    if gw is None:
        return 1
    srv = gw.server
    listen = args.listen or srv.get("listen", "0.0.0.0:8080")
    try:
        host, port = parse_hostport(listen)
    except ValueError as e:
        print(f"--listen: {e}", file=sys.stderr)
        return 2
    workers = resolve_workers(args.workers or srv.get("workers", 1))
    # --frontend, else $GWPROXY_FRONTEND (lets a test run the whole suite on either), else config
    frontend = args.frontend or os.environ.get("GWPROXY_FRONTEND") or srv.get("frontend", "native")
    if frontend not in ("native", "granian"):
        print(f"GWPROXY_FRONTEND: expected native or granian, got {frontend!r}", file=sys.stderr)
        return 2
    return serve(ServeSettings(config=args.config, host=host, port=port, workers=workers,
                               log_level=args.log_level, frontend=frontend))


def cmd_version(args) -> int:
    import gwcore
    impl = gwcore.implementation()
    mods = ", ".join(f"{k}={v}" for k, v in sorted(gwcore.IMPLEMENTATIONS.items()))
    print(f"gwproxy {__version__} (gwcore: {impl}; {mods})")
    return 0


def cmd_keys(args) -> int:
    try:
        from .keys_cli import main as keys_main
    except ImportError:
        print("gwproxy keys: not available in this build", file=sys.stderr)
        return 2
    return keys_main(args.rest)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gwproxy", description="Self-hosted API gateway")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--listen", help="HOST:PORT (overrides server.listen)")
    s.add_argument("--workers", type=_workers_arg, help="worker processes, or auto: one per CPU (overrides server.workers)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument("--frontend", choices=["native", "granian"],
                   help="HTTP server (overrides server.frontend; default native)")
    s.set_defaults(fn=cmd_serve)
    c = sub.add_parser("check", help="validate a config and print the route table")
    c.add_argument("config")
    c.set_defaults(fn=cmd_check)
    v = sub.add_parser("version", help="print the version and the gwcore implementation")
    v.set_defaults(fn=cmd_version)
    k = sub.add_parser("keys", help="API keys (keys create NAME)")
    k.add_argument("rest", nargs=argparse.REMAINDER)
    k.set_defaults(fn=cmd_keys)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
