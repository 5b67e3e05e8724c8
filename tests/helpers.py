"""Test helpers: start a real `gwproxy serve` on free loopback ports, free ports, HTTP calls."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open in {timeout}s")


class GatewayProcess:
    """A real gateway (`python -m proxy.cli serve`) in a subprocess.

    ``config`` is YAML text; the strings ``{port}`` / ``{admin_port}`` are not special:
    the listen address is given on the command line, the admin address is added when
    ``admin=True``.
    """

    def __init__(self, config: str, *, workers: int = 1, admin: bool = False,
                 env: dict | None = None, extra_args: list[str] | None = None,
                 cwd: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="gwtest-")
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        text = config
        if admin:
            text = _with_admin(text, self.admin_port)
        self.config_path = os.path.join(self.dir, "gateway.yaml")
        Path(self.config_path).write_text(text)
        self.log_path = os.path.join(self.dir, "gateway.log")
        self.workers = workers
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.extra_args = extra_args or []
        self.cwd = cwd or str(ROOT)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 20.0) -> "GatewayProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "-c", self.config_path,
             "--listen", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        try:
            wait_port("127.0.0.1", self.port, timeout, self.proc)
            if self.admin_port:
                wait_port("127.0.0.1", self.admin_port, timeout, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + self.logs())
        return self

    def logs(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                timeout: float = 30.0, admin: bool = False):
        """One request on a fresh connection; returns (status, headers dict lower-case, body bytes)."""
        port = self.admin_port if admin else self.port
        return http_request("127.0.0.1", port, method, path, body, headers, timeout)


def http_request(host, port, method, path, body=None, headers=None, timeout=30.0):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def _with_admin(text: str, port: int) -> str:
    line = f"  admin: 127.0.0.1:{port}\n"
    if "\nserver:\n" in "\n" + text:
        return text.replace("server:\n", "server:\n" + line, 1)
    return f"server:\n{line}" + text


class ThreadedServer:
    """A socketserver run in a daemon thread, as a context manager (test backends).

    Subclasses set ``self.server`` (a socketserver with ``daemon_threads``) before calling
    ``ThreadedServer.__init__``."""

    def __init__(self):
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def assert_suite_passes_pure(test_file: str, timeout: float = 300) -> None:
    """Run one test file in a subprocess with GWCORE_PURE=1 (every gwcore module, and every
    gateway the tests start, uses the uncompiled twins) and assert that it passes."""
    env = dict(os.environ, GWCORE_PURE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", test_file],
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout



class InProcessGateway:
    """The real app on the config at ``config_path``, behind the native front end
    (gwcore.http1, the twin gwcore.load picks) on a loopback socket, in the test's own
    process and event loop: ``await start()``, then ``port``; ``await close()``."""

    def __init__(self, config_path):
        from proxy.app import GatewayApp
        from proxy.gateway import load_gateway
        self.app = GatewayApp(load_gateway(str(config_path)))
        self.app.raw_paths = True
        self.srv = None
        self.port = 0

    async def start(self) -> None:
        import asyncio

        import gwcore
        await self.app.gw.start()
        self.srv = gwcore.load("http1").FrontendServer(self.app, asyncio.get_running_loop())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        await self.srv.start(sock)
        self.port = sock.getsockname()[1]

    async def close(self) -> None:
        self.srv.server.close()
        for c in list(self.srv.connections):
            c.transport.abort()
        await self.app.gw.close()
