"""Master and worker processes of the native front end.

The master checks the listen address (bind, no listen), forks ``workers`` processes and
watches them: a worker that dies is replaced (at most once a second), SIGTERM / SIGINT are
passed on, and the master exits when every worker has drained. Each worker binds its own
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


def run_worker(settings, index: int) -> int:
    """One worker: build the gateway, listen, serve until SIGTERM/SIGINT, drain, exit."""
    import uvloop

    from ..app import create_app
    import gwcore
    FrontendServer = gwcore.load("http1").FrontendServer

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
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


def _spawn(settings, index: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = run_worker(settings, index)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


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
    workers: dict[int, int] = {}
    started: dict[int, float] = {}
    for i in range(settings.workers):
        pid = _spawn(settings, i)
        workers[pid] = i
        started[i] = time.monotonic()

    stopping = False

    def on_stop(signum, frame):
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    deadline = None
    code = 0
    while workers:
        if stopping and deadline is None:
            deadline = time.monotonic() + settings.kill_timeout + 5
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if deadline is not None and time.monotonic() > deadline:
                for p in list(workers):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
            continue
        index = workers.pop(pid, None)
        if index is None:
            continue
        rc = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        log.error("worker %d (pid %d) exited with %s; starting a new one", index, pid, rc)
        print(f"gwproxy: worker {index} (pid {pid}) exited with {rc}; restarting", file=sys.stderr)
        wait = RESPAWN_MIN_S - (time.monotonic() - started[index])
        if wait > 0:
            time.sleep(wait)
        if stopping:
            continue
        new = _spawn(settings, index)
        workers[new] = index
        started[index] = time.monotonic()
    probe.close()
    return code
