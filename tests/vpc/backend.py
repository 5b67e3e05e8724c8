"""A test backend in its own process (so tests can kill it, or run it in a network namespace).

    python -m tests.vpc.backend --name a --listen 10.231.0.2:18080
    python -m tests.vpc.backend --name u --unix /tmp/x.sock
    python -m tests.vpc.backend --name b --listen 127.0.0.1:9002 --health-status 503

Serves the paths of ``tests.upstream`` (``/echo``, ``/stall``, ``/reset``, ``/status/N``...),
adds ``X-Backend: <name>`` and ``X-Peer: <client address>`` to every answer, and answers ``GET /health`` with
``--health-status`` (default 200). Prints "ready" once listening.
"""
from __future__ import annotations

import argparse
import os
import socketserver
import sys
from http.server import ThreadingHTTPServer

from tests.upstream import _Handler


def handler_class(name: str, health_status: int):
    class Handler(_Handler):
        def end_headers(self):
            self.send_header("X-Backend", name)
            peer = self.client_address[0] if isinstance(self.client_address, tuple) else "unix"
            self.send_header("X-Peer", str(peer))
            super().end_headers()

        def _any(self):
            if self.path.split("?", 1)[0] == "/health":
                self._json(health_status, {"backend": name})
                return
            super()._any()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

        def address_string(self):  # unix sockets have no (host, port)
            return "unix"

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen")
    ap.add_argument("--unix")
    ap.add_argument("--health-status", type=int, default=200)
    a = ap.parse_args(argv)
    h = handler_class(a.name, a.health_status)
    if a.unix:
        try:
            os.unlink(a.unix)
        except FileNotFoundError:
            pass
        srv = UnixHTTPServer(a.unix, h)
    else:
        host, _, port = a.listen.rpartition(":")
        ThreadingHTTPServer.allow_reuse_address = True
        srv = ThreadingHTTPServer((host, int(port)), h)
        srv.daemon_threads = True
    srv.received = []
    print("ready", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
