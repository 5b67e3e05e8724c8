"""A backend in its own Linux network namespace, reachable only through the link's address.

Network (created here, removed in a finally; nothing else is touched):

    root namespace                         namespace gwvpc-<pid>
    veth gvr<k>  10.231.K.1/32  <------->  veth gvn<k>  10.231.K.2/32   backend :18080

In the root namespace 10.231.K.2 is ``unreachable`` in the main table; only packets *from*
10.231.K.1 (a policy rule to a private table) are routed over the veth. So a connection
that does not bind the link's ``source_address`` cannot reach the backend at all, and
packets never leave through the default route.

What the tests show:
- a VPC-link route with ``source_address: 10.231.K.1`` reaches the backend (which sees that
  address as its peer);
- a plain ``http_proxy`` route naming the same address fails (502), and so does a direct
  connection from the test process;
- when the link is ``private`` (the default), naming its target in a plain URI is a config
  error: ``gwproxy check`` exits 1 with the file, line and field, and ``serve`` refuses to start.

Needs root and ``ip`` (iproute2). Skipped otherwise, except under ``CI=true``, where these
tests must run and fail instead of skipping.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, GatewayProcess
from tests.vpc.procs import Backend

pytestmark = pytest.mark.netns

K = os.getpid() % 200 + 20
NS = f"gwvpc-{os.getpid()}"
VETH_ROOT = f"gvr{os.getpid() % 100000}"
VETH_NS = f"gvn{os.getpid() % 100000}"
GW_ADDR = f"10.231.{K}.1"
BACKEND_ADDR = f"10.231.{K}.2"
BACKEND_PORT = 18080
TABLE = str(23100 + K)
PREF = str(23100 + K)


def _can_run() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2 ('ip')"
    return None


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns():
    why = _can_run()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"netns tests must run under CI=true: {why}")
        pytest.skip(why)
    backend = None
    try:
        _ip("netns", "add", NS)
        _ip("link", "add", VETH_ROOT, "type", "veth", "peer", "name", VETH_NS, "netns", NS)
        _ip("addr", "add", f"{GW_ADDR}/32", "dev", VETH_ROOT)
        _ip("link", "set", VETH_ROOT, "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        _ip("-n", NS, "addr", "add", f"{BACKEND_ADDR}/32", "dev", VETH_NS)
        _ip("-n", NS, "link", "set", VETH_NS, "up")
        _ip("-n", NS, "route", "add", f"{GW_ADDR}/32", "dev", VETH_NS)
        # root namespace: the backend is unreachable, except from the link's source address
        _ip("route", "add", "unreachable", f"{BACKEND_ADDR}/32")
        _ip("route", "add", f"{BACKEND_ADDR}/32", "dev", VETH_ROOT, "src", GW_ADDR, "table", TABLE)
        _ip("rule", "add", "from", f"{GW_ADDR}/32", "lookup", TABLE, "pref", PREF)
        backend = Backend("in-netns", listen=f"{BACKEND_ADDR}:{BACKEND_PORT}",
                          prefix=["ip", "netns", "exec", NS]).start()
        yield backend
    finally:
        if backend is not None:
            backend.kill()
        _ip("rule", "del", "pref", PREF, check=False)
        _ip("route", "flush", "table", TABLE, check=False)
        _ip("route", "del", "unreachable", f"{BACKEND_ADDR}/32", check=False)
        _ip("link", "del", VETH_ROOT, check=False)
        _ip("netns", "del", NS, check=False)


def _config(private: bool) -> str:
    return f"""
vpc_links:
  inside:
    targets: ["{BACKEND_ADDR}:{BACKEND_PORT}"]
    source_address: {GW_ADDR}
    private: {str(private).lower()}
    health_check: {{path: /health, interval: 0.5s}}
apis:
  shop:
    type: rest
    stages: {{prod: {{}}}}
    routes:
      - route: ANY /linked/{{proxy+}}
        integration: {{type: http_proxy, vpc_link: inside, uri: "http://inside.svc/{{proxy}}", timeout: 3s}}
      - route: GET /direct
        integration: {{type: http_proxy, uri: "http://{BACKEND_ADDR}:{BACKEND_PORT}/echo/direct", timeout: 3s}}
"""


def test_backend_reachable_through_link_only(netns):
    # the test process itself cannot reach the backend without the link's source address
    with pytest.raises(OSError):
        socket.create_connection((BACKEND_ADDR, BACKEND_PORT), timeout=2).close()
    gw = GatewayProcess(_config(private=False), admin=True).start()
    try:
        status, headers, body = gw.request("GET", "/prod/linked/echo/a?x=1")
        assert status == 200, body
        assert headers["x-backend"] == "in-netns"
        assert headers["x-peer"] == GW_ADDR            # the connection came from the bound address
        rec = json.loads(body)
        assert rec["target"] == "/echo/a?x=1"
        assert ["host", "inside.svc"] in rec["headers"]
        status, _, body = gw.request("POST", "/prod/linked/echo/b", body=b"hello")
        assert status == 200 and json.loads(body)["body"] == "hello"
        # the same address named in a plain URI: no route to it
        t0 = time.monotonic()
        status, _, body = gw.request("GET", "/prod/direct")
        assert status == 502 and json.loads(body) == {"message": "Bad Gateway"}
        assert BACKEND_ADDR.encode() not in body
        assert time.monotonic() - t0 < 2.5
        # health checks go through the link's address too
        status, _, body = gw.request("GET", "/vpc_links", admin=True)
        t = json.loads(body)["inside"]["targets"][0]
        assert t["state"] == "healthy"
        assert json.loads(body)["inside"]["source_address"] == GW_ADDR
    finally:
        gw.stop()


def test_private_link_target_in_plain_uri_is_refused_at_load(netns, tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(_config(private=True))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check", str(path)], cwd=str(ROOT),
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"{path}:16: apis.shop.routes[1].integration.uri: the URI names a target of private "
            f"vpc_link 'inside'") in r.stderr
    with pytest.raises(RuntimeError, match="names a target of private vpc_link"):
        GatewayProcess(_config(private=True)).start(timeout=10)
    # without the plain route the private link serves normally
    text = _config(private=True).split("      - route: GET /direct")[0]
    gw = GatewayProcess(text).start()
    try:
        status, headers, _ = gw.request("GET", "/prod/linked/echo/c")
        assert status == 200 and headers["x-peer"] == GW_ADDR
    finally:
        gw.stop()


def test_source_interface_binds_the_interface_address(netns):
    text = _config(private=True).split("      - route: GET /direct")[0].replace(
        f"source_address: {GW_ADDR}", f"source_interface: {VETH_ROOT}")
    gw = GatewayProcess(text, admin=True).start()
    try:
        status, headers, _ = gw.request("GET", "/prod/linked/echo/i")
        assert status == 200 and headers["x-peer"] == GW_ADDR
        info = json.loads(gw.request("GET", "/vpc_links", admin=True)[2])["inside"]
        assert info["source_interface"] == VETH_ROOT and info["source_address"] == GW_ADDR
    finally:
        gw.stop()
    bad = text.replace(f"source_interface: {VETH_ROOT}", "source_interface: nosuch0")
    with pytest.raises(RuntimeError, match="no network interface 'nosuch0'"):
        GatewayProcess(bad).start(timeout=10)
