"""`gwproxy serve`: validate the config in the master, then run the front end on uvloop.

Two front ends serve the same app (``proxy.app.GatewayApp``):
- ``native`` (default): gwproxy's own HTTP/1.1 server (``proxy.frontend``), uvloop +
  httptools; faster than granian here and lighter per idle connection (README, "Front
  ends" and "Performance").
- ``granian``: granian's RSGI server.
Either forks the workers; each builds its gateway from the same file
(``proxy.app:create_app``). SIGTERM / SIGINT stop it: stop accepting, let in-flight
requests finish, and the workers close their services.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    config: str
    host: str
    port: int
    workers: int
    log_level: str = "info"
    kill_timeout: int = 30   # seconds a worker may take to drain on stop
    frontend: str = "native"


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(settings: ServeSettings) -> int:
    os.environ["GWPROXY_CONFIG"] = os.path.abspath(settings.config)
    os.environ["GWPROXY_LISTEN"] = f"{settings.host}:{settings.port}"
    os.environ["GWPROXY_WORKERS"] = str(settings.workers)
    os.environ.setdefault("GWPROXY_NODE_ID", f"{os.getpid()}-{time.time_ns()}")
    # the worker processes import proxy from wherever this one did
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = here + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    if here not in sys.path:
        sys.path.insert(0, here)
    if settings.frontend == "granian":
        return _serve_granian(settings)
    import logging
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GWPROXY_LOG_LEVEL", settings.log_level.upper())
    from .frontend.supervisor import serve_native
    return serve_native(settings)


def _serve_granian(settings: ServeSettings) -> int:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    # granian caps the connections a worker holds at `backpressure` (default: backlog);
    # idle keep-alive clients must not be turned away at 2,048
    extra = {"backpressure": 16384}
    # experiment hooks for benchmarking granian's own settings (GWPROXY_GRANIAN="k=v,k=v")
    for kv in filter(None, os.environ.get("GWPROXY_GRANIAN", "").split(",")):
        k, _, v = kv.partition("=")
        extra[k] = int(v) if v.isdigit() and k != "http" else v
    srv = Server(
        "proxy.app:create_app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=settings.log_level,
        backlog=2048,
        workers_kill_timeout=settings.kill_timeout,
        websockets=False,
        **extra,
    )
    srv.serve()
    return 0
