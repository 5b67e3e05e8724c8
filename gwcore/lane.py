# cython: annotation_typing=False
"""Forwarding lanes: the plain proxy path without the gateway's per-request Python.

Compiled by Cython with the C types declared in lane.pxd (pure-Python mode); uncompiled,
the same file is the pure-Python twin (gwcore/_lane_py.py runs it).

A route whose integration is a plain ``http_proxy`` and whose stages can each say "let it
through" without a Request (the account, stage and route token buckets; no API keys,
authorizers, policies, validation or cache) has a :class:`Plan`. Once the app has routed a
(method, raw path, Host) to such a route, it keeps a :class:`Lane` for it under
``h1scan.lane_key``: the plan and the upstream path already rendered from the path
parameters (a bounded table, like the router result cache of Kong). The front end's scanner
(``h1scan.scan_lane``: no body, HTTP/1.1) finds the lane from the raw request head, and the
Exchange it makes keeps that head (query and headers are read from it only if the app's
path needs them: ``Exchange.unpack``). :meth:`Lane.forward` does what the app's path would
do: the route's checks, a request id, the upstream request written from the raw head
(``h1scan.lane_head``: query passed on, hop-by-hop headers dropped, Host and X-Forwarded-*
set) on an idle keep-alive connection in callback mode. The upstream's first read goes to
:func:`_relay`: a whole ``200`` answer is written to the client from it in one pass
(``h1scan.relay``: forwarded headers, the request id header, the body) and the upstream
connection given back, without a response object; any other answer goes to
:func:`_answered` in the scanner's block form or as lists.

Anything else goes back to the app at the point reached, with a Request made then: no
idle connection (the integration's own entry, the checks already passed), an answer that
is not whole and small (streamed, HEAD-like, 204/304), an error or a stale keep-alive
connection (the integration's callback: retries, 502/504). A check that refuses (429)
returns False before anything happened: the app's path answers it, as it would have.
tests/integration/test_lane.py checks that both ways give the same bytes.
"""
from __future__ import annotations

import logging
import time

import gwcore

log = logging.getLogger("gwproxy")

# (compiled, the request id, the two h1scan writers and the throttle check are C calls and
# a C type: cimported in lane.pxd; uncompiled, the modules')
globals().setdefault("_new_request_id", gwcore.load("reqid").new_request_id)
_h1client = gwcore.load("h1client")
_outgoing_headers = _h1client.outgoing_headers
_body_framing = _h1client.body_framing
_IDEMPOTENT = _h1client._IDEMPOTENT
_h1scan = gwcore.load("h1scan")
globals().setdefault("_lane_head", _h1scan.lane_head)
globals().setdefault("_relay_answer", _h1scan.relay)
globals().setdefault("_Check", gwcore.load("ratelimit").Check)
_http1 = gwcore.load("http1")
from gwcore.http1 import LaneBase  # (compiled: the C type, cimported in lane.pxd)
_CLOCK = _http1.CLOCK
_OK_LINE = _http1.status_line(200)
# compiled, _now_ns is the C clock (gwcore/_clock.pxd, cimported in lane.pxd); uncompiled (the
# twin), the same clock read through Python:
globals().setdefault("_now_ns", time.perf_counter_ns)

#: answers up to this size (with a Content-Length) arrive whole and are written at once
SMALL_RESPONSE = 256 * 1024
#: lanes remembered per app (one per method, path and Host); the table is emptied when full
LANES_MAX = 8192


class Plan:
    """What forwarding needs of one route (made by the app once per route)."""

    __slots__ = ("pool_of", "pool", "checks", "timeout", "host_header", "pass_host", "fwd_port",
                 "fixed_query", "rid_header", "rid_line", "start", "on_upstream", "make_request",
                 "serve", "log")

    def __init__(self, pool_of, checks: tuple, timeout: float, host_header: str, pass_host: bool,
                 fwd_port: str, fixed_query: str, rid_header: str, start, on_upstream,
                 make_request, serve, log):
        self.pool_of = pool_of            # () -> the route's UpstreamPool (made on first use)
        self.pool = None
        self.checks = checks              # () -> True when the request may go on
        self.timeout = timeout
        self.host_header = host_header
        self.pass_host = pass_host
        self.fwd_port = fwd_port
        self.fixed_query = fixed_query
        self.rid_header = rid_header
        self.rid_line = (rid_header + ": ").encode("latin-1")
        self.start = start                # the integration's callback-mode entry: start(req)
        self.on_upstream = on_upstream    # ... and its upstream callback (req, resp, exc, retry)
        self.make_request = make_request  # (ex, peer, rid, start_ns) -> the routed Request
        self.serve = serve                # (ex, req, awaitable) -> the app's coroutine
        self.log = log                    # (ex, peer, status, rid, start_ns) or None


class Lane(LaneBase):
    """A (method, path, Host) known to go to a planned route, and its upstream path."""

    __slots__ = ("plan", "path", "framing", "is_head", "idempotent")

    def __init__(self, plan: Plan, path: str, method: str, client_path: str, client_host: str):
        # (the client's request line and Host, the key: LaneBase's)
        LaneBase.__init__(self, method, client_path, client_host)
        self.plan = plan
        self.path = path                  # the upstream path, rendered from the parameters
        self.framing = _body_framing(method)
        self.is_head = method == "HEAD"
        self.idempotent = method in _IDEMPOTENT

    def forward(self, ex, peer: str):
        """Forward the scanned request ``ex`` (the front end's Exchange). The serve_now
        contract: True when it will be answered from a callback, an awaitable for the
        connection's task, or False: nothing was done, the app's path takes it."""
        plan = self.plan
        pool = plan.pool
        if pool is None:
            pool = plan.pool = plan.pool_of()
        if not pool.ready():
            return False
        for check in plan.checks:
            if type(check) is _Check:
                c = check
                if not c.ok():          # (compiled: a C call)
                    return False
            elif not check():
                return False
        rid = ex.rid = _new_request_id()
        if plan.log is not None:
            ex.start_ns = _now_ns()     # (else read when a Request is made: _start_ns)
        host = plan.host_header
        if plan.pass_host and ex.host:
            host = ex.host
        raw = ex.raw
        head = None
        if raw is not None:
            # the upstream head written from the client's raw head in one pass
            head = _lane_head(raw, self.path, plan.fixed_query, host, peer, plan.fwd_port,
                              self.framing)
        if head is not None:
            sent = pool.start_taken(head, self.is_head, self.idempotent, plan.timeout, _answered,
                                    ex, True, True)
        else:
            ex.unpack()
            q = ex.query
            fq = plan.fixed_query
            if fq:
                q = fq + "&" + q if q else fq
            sent = pool.start(ex.method, self.path + "?" + q if q else self.path,
                              _outgoing_headers(ex.headers, host, peer, "http", plan.fwd_port),
                              plan.timeout, _answered, ex)
        if sent:
            return True
        # no usable idle connection after all: the integration's own entry (the checks
        # passed already and must not run twice)
        req = plan.make_request(ex, peer, rid, _start_ns(ex))
        r = plan.start(req)
        if r is True:
            return True
        return plan.serve(ex, req, r)


def _answered(ex, resp, exc, retry) -> None:
    """The upstream callback (gwcore.h1client callback mode) for the forwarded request
    ``ex`` (its lane, request id and start time set by Lane.forward): a whole, small answer
    is written here; anything else is the integration's, with a Request made now."""
    lane = ex.lane
    plan = lane.plan
    try:
        if resp is not None:
            status = resp.status
            if resp.block is not None:
                # taken whole by the scanner (block mode): forwarded headers come as lines
                ex.response_lines(status, (resp.block, plan.rid_line, ex.rid.encode("ascii"),
                                           b"\r\n"), resp.block_date, resp.body_now())
                _done(ex, status)
                return
            cl = resp.content_length
            # (has_body() is False for HEAD, 204 and 304 answers)
            if resp.has_body() and cl is not None and cl <= SMALL_RESPONSE:
                body = resp.body_now()
                if body is not None:
                    headers = resp.forward_headers()
                    headers.append((plan.rid_header, ex.rid))
                    ex.response_bytes(status, headers, body)
                    _done(ex, status)
                    return
        req = plan.make_request(ex, ex.conn.peer, ex.rid, _start_ns(ex))
    except Exception:       # never into the upstream connection's protocol callbacks
        log.exception("request %s: forwarding the answer failed", ex.rid)
        ex.complete()       # the front end answers 500 when nothing was written
        return
    plan.on_upstream(req, resp, exc, retry)


def _relay(conn, data: bytes) -> bool:
    """gwcore.h1client's relay_hook: the upstream connection ``conn`` of a forwarded
    request got its first read ``data``. When it is a whole ``200`` answer of the
    scanner's kind, the client's answer is written from it in one pass (h1scan.relay: the
    bytes Exchange.response_lines writes), the connection is given back and the request
    finished: True. Else False, with nothing done (the block-mode path then)."""
    ex = conn._cb_arg
    lane = ex.lane
    try:
        r = _relay_answer(data, _OK_LINE, _CLOCK.date, lane.plan.rid_line, ex.rid,
                          not ex.conn._keep(ex))
        if r is None or ex.started:
            return False
        ex.started = True
        ex.conn._write(r[0])
    except Exception:       # never into the upstream connection's protocol callbacks
        log.exception("request %s: forwarding the answer failed", ex.rid)
        return False
    conn._relayed(r[1])
    try:
        _done(ex, 200)
    except Exception:
        log.exception("request %s: forwarding the answer failed", ex.rid)
        ex.complete()
    return True


_h1client.relay_hook = _relay


def _start_ns(ex) -> int:
    """The request's start (perf ns) for a Request made of it: read by Lane.forward when
    the plan logs, else now (a few µs later: nothing timed it)."""
    if ex.start_ns == 0:
        ex.start_ns = _now_ns()
    return ex.start_ns


def _done(ex, status: int) -> None:
    lane = ex.lane
    log_line = lane.plan.log
    if log_line is not None:
        log_line(ex, ex.conn.peer, status, ex.rid, ex.start_ns)
    ex.complete()
