"""loadtests/floor_proxy.py's floor proxy really passes traffic through.

The floor is the README's measure of what uvloop and the kernel cost a Python proxy before
any gateway work: if its protocol stopped forwarding (or mixed up connections), the figure
would be meaningless. Here it runs in its serving mode against a loopback backend: keep-alive
requests on two client connections get their own answers, in order, byte for byte.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_floor_proxy_forwards_verbatim():
    async def main():
        async def backend(r, w):
            while True:
                line = await r.readline()
                if not line:
                    break
                while (await r.readline()) not in (b"\r\n", b""):
                    pass
                body = line.split(b" ")[1]
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await w.drain()
            w.close()

        srv = await asyncio.start_server(backend, "127.0.0.1", 0)
        bport = srv.sockets[0].getsockname()[1]
        port = _free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "loadtests" / "floor_proxy.py"),
                                 "--serve", str(port), str(bport)], cwd=str(ROOT))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    await asyncio.sleep(0.1)
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            for i in range(3):
                for r, w, tag in ((r1, w1, b"a"), (r2, w2, b"b")):
                    path = b"/%s/%d" % (tag, i)
                    w.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                    want = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)
                    got = await asyncio.wait_for(r.readexactly(len(want)), 10)
                    assert got == want
            w1.close()
            w2.close()
        finally:
            proc.terminate()
            proc.wait(10)
            srv.close()

    asyncio.run(main())
