"""A small threaded HTTP upstream for the cache e2e tests: counts requests per path and
answers according to the path:

- ``/reflect``: 200, body names the X-Evil-Host / X-Forwarded-Host it received
- ``/odd``: 400 when the request has X-Odd, else 200
- ``/slow``: 200 after 0.3 s
- ``/who``: 200, body is the x-api-key it received
- anything else: 200 "n=<count> path=<path>"
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.counts[path] += 1
            n = srv.counts[path]
        status, headers = 200, [("Content-Type", "text/plain")]
        if path.endswith("/reflect"):
            host = self.headers.get("X-Evil-Host") or self.headers.get("X-Forwarded-Host") or "good.example"
            body = f'<script src="https://{host}/app.js"></script>'
        elif path.endswith("/odd"):
            if self.headers.get("X-Odd"):
                status, body = 400, "odd request"
            else:
                body = "fine"
        elif path.endswith("/slow"):
            time.sleep(0.3)
            body = f"slow n={n}"
        elif path.endswith("/who"):
            body = f"who={self.headers.get('X-Api-Key')} n={n}"
        else:
            body = f"n={n} path={self.path}"
        data = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_HEAD = do_GET


class CountingUpstream:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.counts = Counter()
        self.httpd.lock = threading.Lock()
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def counts(self) -> Counter:
        return self.httpd.counts

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
