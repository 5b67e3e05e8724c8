"""Master and worker processes of the native front end.

The master checks the listen address (bind, no listen), forks ``workers`` processes and
watches them: a worker that dies is replaced (at most once a second), SIGTERM / SIGINT are
passed on, and the master exits when every worker has drained. SIGHUP reloads: the master
validates the config file; if it is good, a new generation of workers starts, and once all
of them listen the old generation drains (both listen meanwhile, so no connection is
refused); if it is not, the errors are printed and the running workers stay. Each worker binds its own
listening socket with SO_REUSEPORT, so the kernel spreads new connections evenly over the
workers (a shared accept socket lets the busiest worker take most of them), builds its
gateway from the config file and runs it on uvloop.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time

log = logging.getLogger("gwproxy.frontend")

RESPAWN_MIN_S = 1.0
READY_TIMEOUT_S = 60.0     # a new worker must be listening within this (config load included)


def _listen_socket(host: str, port: int, listen: bool, backlog: int = 2048) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def run_worker(settings, index: int, ready_fd: int = -1) -> int:
    """One worker: build the gateway, listen, say so on ``ready_fd``, serve until
    SIGTERM/SIGINT, drain, exit."""
    import uvloop

    from ..app import create_app
    import gwcore
    FrontendServer = gwcore.load("http1").FrontendServer

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # reload is the master's business
    os.environ["GWPROXY_WORKER_INDEX"] = str(index)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app()
    app.raw_paths = True
    srv = app.gw.server
    app.__rsgi_init__(loop)
    front = FrontendServer(app, loop,
                           max_header_bytes=int(srv.get("max_header_bytes", 16384)),
                           keepalive_timeout=float(srv.get("keepalive_timeout", 75.0)),
                           header_timeout=float(srv.get("header_timeout", 60.0)))
    sock = _listen_socket(settings.host, settings.port, listen=True)
    loop.run_until_complete(front.start(sock))
    # the compiled config (router tries, buckets, pools) lives as long as the worker: keep it
    # out of the collector's generations so full collections do not walk it again and again
    gc.collect()
    gc.freeze()
    if ready_fd >= 0:
        try:
            os.write(ready_fd, b"1")
        except OSError:
            pass        # nobody waits for it (a respawn)
        os.close(ready_fd)
    stop = loop.create_future()

    def on_signal():
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.run_until_complete(stop)
    loop.run_until_complete(front.drain(settings.kill_timeout))
    app.__rsgi_del__(loop)
    loop.close()
    return 0


def _spawn(settings, index: int) -> tuple[int, int]:
    """Fork worker ``index``; returns (pid, fd that becomes readable once it listens)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            code = run_worker(settings, index, w)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    return pid, r


def _wait_ready(fds: dict[int, int], timeout: float) -> set[int]:
    """pids (keys of ``fds``) whose worker said it is listening within ``timeout``."""
    import select
    ready: set[int] = set()
    pending = dict(fds)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        r, _, _ = select.select(list(pending.values()), [], [], max(0.0, deadline - time.monotonic()))
        for pid, fd in list(pending.items()):
            if fd in r:
                if os.read(fd, 1) == b"1":
                    ready.add(pid)
                del pending[pid]      # EOF: it died before listening
    for fd in fds.values():
        os.close(fd)
    return ready


class Supervisor:
    """The master: workers by generation; SIGHUP reloads, SIGTERM/SIGINT stop."""

    def __init__(self, settings):
        self.settings = settings
        self.workers: dict[int, tuple[int, int]] = {}   # pid -> (index, generation)
        self.generation = 0
        self.started: dict[int, float] = {}             # index -> last start
        self.stopping = False
        self.reload_requested = False

    def _signal_workers(self, sig, generation: int | None = None) -> None:
        for pid, (_, gen) in list(self.workers.items()):
            if generation is None or gen == generation:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def start_generation(self, wait: bool = True) -> bool:
        """Start ``workers`` new workers. With ``wait`` (a reload): True when all of them
        listen, else they are stopped again and the running generation stays. Without (the
        first start): a worker that dies while starting is replaced like any other."""
        gen = self.generation + 1
        fds = {}
        for i in range(self.settings.workers):
            pid, fd = _spawn(self.settings, i)
            self.workers[pid] = (i, gen)
            self.started[i] = time.monotonic()
            fds[pid] = fd
        if not wait:
            for fd in fds.values():
                os.close(fd)
            self.generation = gen
            return True
        ready = _wait_ready(fds, READY_TIMEOUT_S)
        if len(ready) != len(fds):
            self._signal_workers(signal.SIGTERM, gen)
            return False
        self.generation = gen
        return True

    def reload(self) -> None:
        """Validate the config file; when it is good, start a new generation of workers and
        then drain the old one (no connection is refused meanwhile: both listen)."""
        from ..config import ConfigError
        from ..gateway import load_gateway
        try:
            load_gateway(os.environ["GWPROXY_CONFIG"])
        except ConfigError as e:
            print(f"gwproxy: reload refused, the running config stays:\n{e}", file=sys.stderr, flush=True)
            return
        except Exception as e:  # noqa: BLE001 - unreadable file and the like
            print(f"gwproxy: reload refused, the running config stays: {e}", file=sys.stderr, flush=True)
            return
        old = self.generation
        if not self.start_generation():
            print("gwproxy: reload failed: new workers did not start; the running ones stay",
                  file=sys.stderr, flush=True)
            return
        self._signal_workers(signal.SIGTERM, old)
        print(f"gwproxy: reloaded (generation {self.generation})", file=sys.stderr, flush=True)

    def run(self) -> int:
        def on_stop(signum, frame):
            self.stopping = True
            self._signal_workers(signal.SIGTERM)

        def on_hup(signum, frame):
            self.reload_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        self.start_generation(wait=False)
        deadline = None
        while self.workers:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.settings.kill_timeout + 5
            if self.reload_requested and not self.stopping:
                self.reload_requested = False
                self.reload()
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if deadline is not None and time.monotonic() > deadline:
                    self._signal_workers(signal.SIGKILL)
                time.sleep(0.05)
                continue
            entry = self.workers.pop(pid, None)
            if entry is None:
                continue
            index, gen = entry
            if self.stopping or gen != self.generation:
                continue      # stopped on purpose (shutdown, or an old generation drained)
            rc = os.waitstatus_to_exitcode(status)
            log.error("worker %d (pid %d) exited with %s; starting a new one", index, pid, rc)
            print(f"gwproxy: worker {index} (pid {pid}) exited with {rc}; restarting", file=sys.stderr)
            wait = RESPAWN_MIN_S - (time.monotonic() - self.started[index])
            if wait > 0:
                time.sleep(wait)
            if self.stopping:
                continue
            new, fd = _spawn(self.settings, index)
            os.close(fd)
            self.workers[new] = (index, gen)
            self.started[index] = time.monotonic()
        return 0


def serve_native(settings) -> int:
    """The master process: check the address, fork the workers, supervise them."""
    try:
        probe = _listen_socket(settings.host, settings.port, listen=False)
    except OSError as e:
        print(f"gwproxy: cannot listen on {settings.host}:{settings.port}: {e.strerror}", file=sys.stderr)
        return 1
    # keep the address bound (not listening: it takes no connections) while we run
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return Supervisor(settings).run()
    finally:
        probe.close()
