"""A real HTTP/1.1 test upstream, in a thread of the test process, recording what it got.

Paths:
  /echo...        200 JSON {method, path, query, headers, body_len, body_sha256, body}
  /big?n=N        N bytes, chunked (or Content-Length with &cl=1), produced on the fly
  /upload         reads the body in 64 KiB pieces; returns {"len", "sha256"}
  /garbage        sends a non-HTTP answer
  /stall?s=S      sleeps S seconds before answering
  /reset          closes the connection without answering
  /status/N       answers status N
  /truncated?n=N  declares 2N bytes, sends N, closes
"""
from __future__ import annotations

import hashlib
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.helpers import ThreadedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _read_body(self, sink=None):
        te = self.headers.get("Transfer-Encoding", "")
        h = hashlib.sha256()
        n = 0
        keep = []
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                left = size
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    left -= len(piece)
                    n += len(piece)
                    h.update(piece)
                    if sink is None and n <= 1 << 20:
                        keep.append(piece)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, 65536))
                if not piece:
                    break
                left -= len(piece)
                n += len(piece)
                h.update(piece)
                if sink is None and n <= 1 << 20:
                    keep.append(piece)
        return n, h.hexdigest(), b"".join(keep)

    def _record(self, n, digest, body):
        u = urlsplit(self.path)
        rec = {"method": self.command, "path": u.path, "query": u.query, "target": self.path,
               "headers": [[k.lower(), v] for k, v in self.headers.items()],
               "body_len": n, "body_sha256": digest,
               "body": body.decode("latin-1") if n <= 65536 else None,
               "connection_id": id(self.connection)}
        self.server.received.append(rec)
        return rec

    def _json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _any(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/garbage":
            self._read_body()
            self.wfile.write(b"this is not http\r\n\r\n")
            self.close_connection = True
            return
        if u.path == "/reset":
            self._read_body()
            self.server.received.append({"method": self.command, "path": u.path})
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True
            return
        if u.path == "/stall":
            self._read_body()
            time.sleep(float(q.get("s", ["5"])[0]))
            self._json(200, {"stalled": True})
            return
        if u.path == "/big":
            self._read_body()
            n = int(q.get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if q.get("cl"):
                self.send_header("Content-Length", str(n))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = bytes(range(256)) * 256  # 64 KiB
            left = n
            while left:
                piece = block[: min(left, len(block))]
                left -= len(piece)
                if q.get("cl"):
                    self.wfile.write(piece)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not q.get("cl"):
                self.wfile.write(b"0\r\n\r\n")
            return
        if u.path == "/truncated":
            self._read_body()
            n = int(q.get("n", ["1000"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(2 * n))
            self.end_headers()
            self.wfile.write(b"t" * n)
            self.wfile.flush()
            self.close_connection = True
            return
        if u.path.startswith("/status/"):
            self._read_body()
            code = int(u.path.rsplit("/", 1)[1])
            if code in (204, 304):
                self.send_response(code)
                self.end_headers()
                return
            self._json(code, {"status": code})
            return
        if u.path == "/upload":
            n, digest, _ = self._read_body(sink=True)
            self._record(n, digest, b"")
            self._json(200, {"len": n, "sha256": digest})
            return
        n, digest, body = self._read_body()
        rec = self._record(n, digest, body)
        self._json(200, rec, extra=[("Connection", "keep-alive, X-Upstream-Secret"),
                                    ("X-Upstream-Secret", "hidden"), ("Keep-Alive", "timeout=5"),
                                    ("X-Upstream", "yes")])

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any


class UpstreamServer(ThreadedServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.server.received = []
        super().__init__()

    @property
    def received(self) -> list:
        return self.server.received

