"""gwcore h1scan: the strict request/response fast paths, checked differentially against
llhttp (httptools) on both twins (compiled and pure).

For every input a scanner accepts, llhttp fed the same bytes in one feed_data call must
parse exactly one whole message without error and give the same method / target /
headers / host / keep-alive (requests) or status / headers / Content-Length / body /
keep-alive (responses); and the two twins must give equal results (None-ness included)
for every input. A scanner that takes what llhttp would frame differently is a
request-smuggling hole, so this runs over a hand-written corpus of common traffic (which
must be accepted), a corpus of near misses (which must be rejected), inputs that hit
llhttp's special-cased headers, and a seeded mutation fuzz of the accepted corpus.
"""
from __future__ import annotations

import os
import random

import httptools
import pytest

import gwcore
from tests.h1wire import mutate

TWINS = gwcore.twins("h1scan")
IMPLS = {name: mod for name, mod in TWINS}
LIMIT = 16384

#: what gwcore.h1client does not forward (compared case-insensitively)
NOT_FORWARDED = frozenset((
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization", "content-length",
))


@pytest.fixture(params=[name for name, _ in TWINS])
def h1(request):
    return IMPLS[request.param]


def test_compiled_twin_is_built():
    if os.environ.get("CI") == "true" or os.environ.get("GWCORE_REQUIRE_EXT") == "1":
        assert "cython" in IMPLS, "gwcore.h1scan is not compiled (python setup.py build_ext --inplace)"


def test_load_picks_an_implementation():
    mod = gwcore.load("h1scan")
    assert hasattr(mod, "scan_request") and hasattr(mod, "scan_response")
    assert gwcore.IMPLEMENTATIONS["h1scan"] in ("cython", "python")


# ---------------------------------------------------------------- the llhttp oracle

class _Recorder:
    """httptools callbacks, recorded. The parser state (keep-alive, method, version,
    status) is read in on_headers_complete, as gwcore.http1 / gwcore.h1client do: once a
    message is complete llhttp clears its flags, so should_keep_alive() after feed_data
    no longer reflects a ``Connection: close``."""

    def __init__(self):
        self.parser = None
        self.begin = self.headers_done = self.complete = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep_alive = self.method = self.version = self.status = None

    def on_message_begin(self):
        self.begin += 1

    def on_url(self, url):
        self.url += url                     # pieces, concatenated

    def on_header(self, name, value):
        # httptools joins a name's / value's split pieces before calling on_header
        self.headers.append((bytes(name), bytes(value)))

    def on_headers_complete(self):
        self.headers_done += 1
        p = self.parser
        self.keep_alive = p.should_keep_alive()
        self.version = p.get_http_version()
        if isinstance(p, httptools.HttpRequestParser):
            self.method = p.get_method()
        else:
            self.status = p.get_status_code()

    def on_body(self, body):
        self.body.append(bytes(body))

    def on_message_complete(self):
        self.complete += 1


def llhttp(cls, data: bytes):
    """Feed ``data`` in one feed_data call; the recorder and the exception raised, if any."""
    rec = _Recorder()
    parser = cls(rec)
    rec.parser = parser
    try:
        parser.feed_data(data)
    except Exception as e:  # noqa: BLE001 - any llhttp complaint is a disagreement
        return rec, e
    return rec, None


def check_request(data: bytes, got) -> None:
    """``got`` (a scanner's tuple for ``data``) is what llhttp makes of ``data``."""
    method, path, query, headers, host, keep = got
    rec, err = llhttp(httptools.HttpRequestParser, data)
    assert err is None, f"llhttp rejects what the scanner took: {err!r}"
    assert (rec.begin, rec.headers_done, rec.complete) == (1, 1, 1), \
        "llhttp does not see exactly one whole message"
    assert not any(rec.body), f"llhttp sees a body: {rec.body!r}"
    assert rec.version == "1.1"
    assert rec.method.decode() == method
    want_path, _, want_query = rec.url.partition(b"?")
    assert (path, query) == (want_path.decode("latin-1"), want_query.decode("latin-1"))
    want = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in rec.headers]
    assert headers == want
    assert host == next((v for n, v in want if n == "host"), "")
    assert keep == rec.keep_alive, f"keep_alive {keep!r}, llhttp says {rec.keep_alive!r}"
    assert type(keep) is bool


def check_response(data: bytes, got) -> None:
    """``got`` (a scanner's tuple for ``data``) is what llhttp makes of ``data``."""
    status, headers, forward, cl, keep, start = got
    rec, err = llhttp(httptools.HttpResponseParser, data)
    assert err is None, f"llhttp rejects what the scanner took: {err!r}"
    assert (rec.begin, rec.headers_done, rec.complete) == (1, 1, 1), \
        "llhttp does not see exactly one whole message"
    assert rec.version == "1.1"
    assert status == rec.status
    want = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in rec.headers]
    assert headers == want
    lengths = [v for n, v in want if n.lower() == "content-length"]
    assert len(lengths) == 1 and cl == int(lengths[0])
    body = b"".join(rec.body)
    assert body == data[start:] and len(body) == cl
    assert keep == rec.keep_alive, f"keep_alive {keep!r}, llhttp says {rec.keep_alive!r}"
    assert type(keep) is bool
    assert forward == [(n, v) for n, v in want if n.lower() not in NOT_FORWARDED]


def scan_all_requests(data: bytes, limit: int = LIMIT):
    """Both twins' results, asserted equal; the common result."""
    results = [(name, mod.scan_request(data, limit)) for name, mod in TWINS]
    first = results[0][1]
    for name, r in results[1:]:
        assert r == first, f"twins disagree on {data!r}: {results!r}"
    return first


def scan_all_responses(data: bytes):
    results = [(name, mod.scan_response(data)) for name, mod in TWINS]
    first = results[0][1]
    for name, r in results[1:]:
        assert r == first, f"twins disagree on {data!r}: {results!r}"
    return first


# ---------------------------------------------------------------- corpus: requests

WRK_GET = b"GET /b/pets/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"

ACCEPTED_REQUESTS = [
    pytest.param(WRK_GET, id="wrk-get"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n", id="minimal"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="no-headers-18-bytes"),
    pytest.param(b"GET /b/pets?limit=10&offset=0 HTTP/1.1\r\nHost: localhost:8080\r\n"
                 b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n", id="curl-query"),
    pytest.param(b"GET /search?q=what?is=this?&x=/y?z HTTP/1.1\r\nHost: a.example\r\n\r\n",
                 id="question-marks-in-query"),
    pytest.param(b"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", id="empty-query"),
    pytest.param(b"GET /?x HTTP/1.1\r\nHost: a\r\n\r\n", id="root-query"),
    pytest.param(b"GET /caf%C3%A9/%20x;p=1 HTTP/1.1\r\nHost: a\r\n\r\n", id="percent-encoded"),
    pytest.param(b"GET /!\"$%&'()*+,-./0:;<=>@AZ[\\]^_`az{|}~?!\"$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
                 b" HTTP/1.1\r\nHost: a\r\n\r\n", id="every-url-char"),
    pytest.param(b"GET / HTTP/1.1\r\n"
                 b"Host: www.example.com\r\n"
                 b"Connection: keep-alive\r\n"
                 b"Cache-Control: max-age=0\r\n"
                 b"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
                 b"sec-ch-ua-mobile: ?0\r\n"
                 b"sec-ch-ua-platform: \"Linux\"\r\n"
                 b"Upgrade-Insecure-Requests: 1\r\n"
                 b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 b"Chrome/124.0.0.0 Safari/537.36\r\n"
                 b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                 b"image/webp,*/*;q=0.8\r\n"
                 b"Sec-Fetch-Site: none\r\n"
                 b"Sec-Fetch-Mode: navigate\r\n"
                 b"Sec-Fetch-User: ?1\r\n"
                 b"Sec-Fetch-Dest: document\r\n"
                 b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
                 b"Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n"
                 b"Cookie: sid=abc123; theme=dark; _ga=GA1.2.3.4\r\n"
                 b"If-None-Match: W/\"5e15153d-120f\"\r\n"
                 b"\r\n", id="chrome-get"),
    pytest.param(b"GET /api/v1/items HTTP/1.1\r\nHost: api.example.com\r\n"
                 b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x\r\n"
                 b"X-Request-Id: 2f1c-77\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n",
                 id="api-get-auth"),
    pytest.param(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n", id="head"),
    pytest.param(b"DELETE /b/pets/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dTpw\r\n\r\n", id="delete"),
    pytest.param(b"OPTIONS /b/pets HTTP/1.1\r\nHost: a\r\nOrigin: https://x.example\r\n"
                 b"Access-Control-Request-Method: POST\r\n"
                 b"Access-Control-Request-Headers: content-type, x-api-key\r\n\r\n", id="options-preflight"),
    pytest.param(b"POST /b/pets HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", id="post-cl0"),
    pytest.param(b"PUT /b/pets/1 HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n", id="put-cl0"),
    pytest.param(b"PATCH /b/pets/1 HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH:0\r\n\r\n", id="patch-cl0"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", id="get-cl0"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", id="conn-close"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", id="conn-CLOSE"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nconnection: Close\r\n\r\n", id="conn-Close"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", id="conn-keep-alive"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nCONNECTION: Keep-Alive\r\n\r\n", id="conn-Keep-Alive"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: KEEP-ALIVE\r\n\r\n", id="conn-KEEP-ALIVE"),
    pytest.param(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                 id="conn-keep-alive-then-close"),
    pytest.param(b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                 id="conn-close-then-keep-alive"),
    pytest.param(b"GET / HTTP/1.1\r\nKeep-Alive: timeout=5, max=100\r\nHost: a\r\n\r\n", id="keep-alive-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: first.example\r\nHost: second.example\r\n\r\n", id="duplicate-host"),
    pytest.param(b"GET / HTTP/1.1\r\nhOsT: MiXeD.example\r\n\r\n", id="host-mixed-case"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: a  b   c\r\nX-B:\tv\r\nX-C: \t \tw x\r\nX-D:v\r\n"
                 b"X-E: \"q\" (c) <x> [y] {z} \\ ; , = @\r\n\r\n", id="values-spaces-and-ows"),
    pytest.param(b"GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09AZaz: v\r\nX: 1\r\n\r\n", id="tchar-name"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"X" * 64 + b": v\r\n\r\n", id="name-64"),
    pytest.param(b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 8000 + b"\r\n\r\n", id="long-value"),
    pytest.param(b"GET / HTTP/1.1\r\nTE-X: 1\r\nTransfer-Encodingx: chunked\r\nUpgradex: a\r\n"
                 b"Expectx: b\r\nContent-Lengthx: 7\r\nConnectionx: Upgrade\r\n\r\n",
                 id="lookalike-names"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTrailer: X\r\n\r\n", id="te-trailers"),
]

REJECTED_REQUESTS = [
    # line ends: only CRLF is taken (llhttp takes bare LF leniently in places)
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", id="bare-lf-everywhere"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", id="bare-lf-in-header"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\r\n\r\n", id="bare-lf-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\n", id="bare-lf-final"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", id="bare-cr"),
    # obs-fold: a continuation line (SP / HTAB first) is deprecated, llhttp may join it
    pytest.param(b"GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", id="obs-fold-sp"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n", id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", id="first-header-indented"),
    # whitespace between the name and the colon is forbidden (RFC 9112 5.1)
    pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", id="tab-before-colon"),
    # empty values: not taken (what an empty Host or Content-Length means is for llhttp)
    pytest.param(b"GET / HTTP/1.1\r\nX-A:\r\n\r\n", id="empty-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: \r\n\r\n", id="blank-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: \t\r\n\r\n", id="blank-host"),
    # trailing whitespace: llhttp strips it; the scanner does not try
    pytest.param(b"GET / HTTP/1.1\r\nX-A: b \r\n\r\n", id="trailing-space"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: b\t\r\n\r\n", id="trailing-tab"),
    # HTAB inside a value is legal HTTP, but not in the taken subset
    pytest.param(b"GET / HTTP/1.1\r\nX-A: b\tc\r\n\r\n", id="inner-tab"),
    # control bytes, DEL and obs-text in the target, the values and the names
    pytest.param(b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", id="nul-in-target"),
    pytest.param(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", id="ctl-in-target"),
    pytest.param(b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", id="tab-in-target"),
    pytest.param(b"GET /a\x0cb HTTP/1.1\r\nHost: a\r\n\r\n", id="ff-in-target"),
    pytest.param(b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", id="del-in-target"),
    pytest.param(b"GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n", id="0x80-in-target"),
    pytest.param(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", id="utf8-in-target"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", id="space-in-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", id="nul-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", id="ctl-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", id="del-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: a\x80b\r\n\r\n", id="0x80-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n", id="utf8-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: \xff\r\n\r\n", id="0xff-value"),
    pytest.param(b"GET / HTTP/1.1\r\nX\x00A: b\r\n\r\n", id="nul-in-name"),
    pytest.param(b"GET / HTTP/1.1\r\nX\x80A: b\r\n\r\n", id="0x80-in-name"),
    pytest.param(b"GET / HTTP/1.1\r\nX(A): b\r\n\r\n", id="non-tchar-name"),
    pytest.param(b"GET / HTTP/1.1\r\nX/A: b\r\n\r\n", id="slash-in-name"),
    pytest.param(b"GET / HTTP/1.1\r\n: b\r\n\r\n", id="empty-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost a\r\n\r\n", id="no-colon"),
    # methods: only the seven common ones, upper-case
    pytest.param(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", id="lower-case-method"),
    pytest.param(b"Get / HTTP/1.1\r\nHost: a\r\n\r\n", id="mixed-case-method"),
    pytest.param(b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", id="unknown-method"),
    pytest.param(b"GETS / HTTP/1.1\r\nHost: a\r\n\r\n", id="method-prefix"),
    pytest.param(b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", id="webdav-method"),
    pytest.param(b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", id="trace"),
    pytest.param(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", id="connect"),
    pytest.param(b"CONNECT /x HTTP/1.1\r\nHost: a.example:443\r\n\r\n", id="connect-slash"),
    pytest.param(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", id="leading-space"),
    pytest.param(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", id="leading-crlf"),
    pytest.param(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", id="double-space"),
    pytest.param(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", id="tab-separator"),
    # versions: HTTP/1.1 only
    pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", id="http-1.0"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", id="http-2.0"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", id="http-1.2"),
    pytest.param(b"GET / http/1.1\r\nHost: a\r\n\r\n", id="lower-case-version"),
    pytest.param(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", id="space-after-version"),
    pytest.param(b"GET /\r\nHost: a\r\n\r\n", id="http-0.9"),
    # targets: origin-form only, no fragment
    pytest.param(b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", id="absolute-form"),
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", id="asterisk-form"),
    pytest.param(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", id="relative-target"),
    pytest.param(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", id="fragment"),
    pytest.param(b"GET /a?b#frag HTTP/1.1\r\nHost: a\r\n\r\n", id="fragment-after-query"),
    # framing: any Transfer-Encoding, any non-zero or doubtful Content-Length
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", id="te-chunked"),
    pytest.param(b"POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n", id="te-identity"),
    pytest.param(b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: gzip, chunked\r\n\r\n", id="te-gzip-chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
                 id="cl0-and-te"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", id="cl5-no-body"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", id="cl5-with-body"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n", id="cl1"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 00\r\n\r\n", id="cl-00"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", id="two-cl0"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 5\r\n\r\n", id="cl0-and-cl5"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: +0\r\n\r\n", id="cl-plus"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n", id="cl-minus"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0 \r\n\r\n", id="cl-trailing-space"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0 0\r\n\r\n", id="cl-inner-space"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0,0\r\n\r\n", id="cl-list"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0x0\r\n\r\n", id="cl-hex"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0.0\r\n\r\n", id="cl-decimal"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", id="cl-empty"),
    # Expect and Upgrade change what follows the head
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", id="expect"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nexpect: x\r\n\r\n", id="expect-other"),
    pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 id="websocket"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n", id="upgrade-alone"),
    # Connection: exactly one of keep-alive / close, nothing else
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
                 id="conn-keep-alive-upgrade"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE\r\n\r\n", id="conn-te"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", id="conn-upgrade"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n", id="conn-list"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keepalive\r\n\r\n", id="conn-keepalive"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", id="conn-closed"),
    # message boundaries: exactly one whole head, nothing before or after
    pytest.param(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", id="pipelined"),
    pytest.param(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", id="pipelined-no-headers"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", id="head-incomplete"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r", id="head-incomplete-cr"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a", id="header-incomplete"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nx", id="byte-after-head"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n", id="crlf-after-head"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nbody", id="body-after-head"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n\r\n\r\n", id="empty-lines"),
    pytest.param(b"GET / HTTP/1.1\r\r\n\r\n", id="cr-cr-lf"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\r\n\r\n", id="only-crlfs"),
    pytest.param(b"GET / HTTP/1.1\r\n\r", id="short"),
    # header names longer than 64 bytes are left to llhttp
    pytest.param(b"GET / HTTP/1.1\r\n" + b"X" * 65 + b": v\r\n\r\n", id="name-65"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"X" * 300 + b": v\r\n\r\n", id="name-300"),
]


def _params_values(params):
    return [p.values[0] for p in params]


@pytest.mark.parametrize("data", ACCEPTED_REQUESTS)
def test_request_corpus_is_taken_and_matches_llhttp(h1, data):
    got = h1.scan_request(data, LIMIT)
    assert got is not None, "common traffic must take the fast path"
    check_request(data, got)


@pytest.mark.parametrize("data", REJECTED_REQUESTS)
def test_request_corpus_is_left_to_llhttp(h1, data):
    assert h1.scan_request(data, LIMIT) is None


def test_request_twins_agree_on_corpus():
    for data in _params_values(ACCEPTED_REQUESTS) + _params_values(REJECTED_REQUESTS):
        scan_all_requests(data)


def test_request_wrk_get_exact(h1):
    assert h1.scan_request(WRK_GET, LIMIT) == (
        "GET", "/b/pets/1", "",
        [("host", "127.0.0.1:8080"), ("user-agent", "wrk"), ("accept", "*/*")],
        "127.0.0.1:8080", True)


def test_request_fields_exact(h1):
    data = (b"DELETE /a/b?x=1?y=2 HTTP/1.1\r\nX-Forwarded-For:\t 1.2.3.4\r\nHOST: H.example\r\n"
            b"host: second\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n")
    assert h1.scan_request(data, LIMIT) == (
        "DELETE", "/a/b", "x=1?y=2",
        [("x-forwarded-for", "1.2.3.4"), ("host", "H.example"), ("host", "second"),
         ("connection", "Close"), ("content-length", "0")],
        "H.example", False)


def test_request_limit(h1):
    n = len(WRK_GET)
    assert h1.scan_request(WRK_GET, n) is not None
    assert h1.scan_request(WRK_GET, n - 1) is None      # longer than the limit
    assert h1.scan_request(WRK_GET, 0) is None
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert h1.scan_request(big, LIMIT) is None
    assert h1.scan_request(big, len(big)) is not None


def test_request_every_single_byte_in_target_and_value():
    """Each byte 0-255 in the target and in a header value: taken only if llhttp agrees."""
    taken_target = set()
    taken_value = set()
    for c in range(256):
        b = bytes([c])
        for data, taken in ((b"GET /a" + b + b"b?q" + b + b" HTTP/1.1\r\nHost: a\r\n\r\n", taken_target),
                            (b"GET / HTTP/1.1\r\nX-A: a" + b + b"b\r\n\r\n", taken_value)):
            got = scan_all_requests(data)
            if got is not None:
                check_request(data, got)
                taken.add(c)
    assert taken_target == set(range(0x21, 0x7F)) - {0x23}
    assert taken_value == set(range(0x20, 0x7F))


# ---------------------------------------------------------------- corpus: responses

def _resp(head: bytes, body: bytes = b"") -> bytes:
    """``head`` with its ``%d`` filled with len(body), then the body."""
    return head % len(body) + body


NGINX_JSON = _resp(b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Mon, 06 May 2024 10:00:00 GMT\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n",
                   b'{"id":1,"name":"rex","tags":["a","b"]}')

ACCEPTED_RESPONSES = [
    pytest.param(NGINX_JSON, id="nginx-json"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\ndate: Mon, 06 May 2024 10:00:00 GMT\r\nserver: uvicorn\r\n"
                       b"content-length: %d\r\ncontent-type: application/json\r\n\r\n", b'{"ok":true}'),
                 id="uvicorn-json"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n"
                       b"Content-Length: %d\r\nLast-Modified: Mon, 06 May 2024 09:00:00 GMT\r\n"
                       b"ETag: \"66389a50-1a\"\r\nAccept-Ranges: bytes\r\nVary: Accept-Encoding\r\n\r\n",
                       b"<html><body>hi</body></html>\n"), id="nginx-static"),
    pytest.param(_resp(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                       b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n",
                       b"<html>\r\n<head><title>404 Not Found</title></head>\r\n</html>\r\n"), id="404"),
    pytest.param(_resp(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n", b"Internal Server Error"),
                 id="500-close"),
    pytest.param(_resp(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: %d\r\n\r\n",
                       b"busy"), id="503"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="empty-body"),
    pytest.param(b"HTTP/1.1 201 Created\r\nLocation: /b/pets/2\r\nContent-Length: 0\r\n\r\n", id="201-empty"),
    pytest.param(b"HTTP/1.1 302 Found\r\nLocation: https://a.example/login?next=/x\r\ncontent-length: 0\r\n\r\n",
                 id="302"),
    pytest.param(_resp(b"HTTP/1.1 200 \r\nContent-Length: %d\r\n\r\n", b"x"), id="empty-reason"),
    pytest.param(_resp(b"HTTP/1.1 200 Very  Much OK (really)\r\nContent-Length: %d\r\n\r\n", b"x"),
                 id="reason-with-spaces"),
    pytest.param(_resp(b"HTTP/1.1 299 Whatever\r\nContent-Length: %d\r\n\r\n", b"x"), id="299"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: Close\r\n\r\n", b"bye"),
                 id="conn-Close"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nConnection: KEEP-ALIVE\r\nKeep-Alive: timeout=5, max=1000\r\n"
                       b"Content-Length: %d\r\n\r\n", b"ok"), id="keep-alive-header"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n"
                       b"Content-Length: %d\r\n\r\n", b"ok"), id="conn-keep-alive-then-close"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\nSet-Cookie: b=2\r\n"
                       b"X-A:\tv\r\nX-B: \t a  b\r\nx-c:v\r\nContent-Length: %d\r\n\r\n", b"ok"),
                 id="dup-and-ows"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nTE: trailers\r\nTrailer: X-Sum\r\nProxy-Authenticate: Basic\r\n"
                       b"Proxy-Authorization: x\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n"
                       b"X-Keep: 1\r\nContent-Length: %d\r\n\r\n", b"ok"), id="hop-by-hop-dropped"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\n!#$%%&'*+-.^_`|~09AZaz: v\r\nContent-Length: %d\r\n\r\n", b"ok"),
                 id="tchar-name"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x00\xff"), id="body-looks-like-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nhi", id="cl-leading-zeros"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 000000000000002\r\n\r\nhi", id="cl-15-digits"),
    pytest.param(_resp(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
                       bytes(range(256)) * 40), id="binary-10k"),
]

REJECTED_RESPONSES = [
    # interim and body-less statuses: llhttp frames them without the Content-Length
    pytest.param(b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n", id="100"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="100-then-200"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n", id="101"),
    pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nContent-Length: 0\r\n\r\n", id="103"),
    pytest.param(b"HTTP/1.1 199 X\r\nContent-Length: 0\r\n\r\n", id="199"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", id="204"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nhi", id="204-cl2"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", id="304"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", id="304-cl0"),
    pytest.param(b"HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n", id="000"),
    # framing: exactly one Content-Length, no Transfer-Encoding, the exact body
    pytest.param(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil close", id="no-cl"),
    pytest.param(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", id="no-cl-no-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", id="chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi", id="cl-and-te"),
    pytest.param(b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\nContent-Length: 2\r\n\r\nhi", id="te-identity"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", id="body-short"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nhi", id="body-long"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", id="body-missing"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                 id="second-response"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\r\n", id="crlf-after-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\n", id="crlf-after-empty-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", id="two-cl-same"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nhi", id="two-cl-differ"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi", id="cl-plus"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi", id="cl-minus"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2 \r\n\r\nhi", id="cl-trailing-space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\nhi", id="cl-inner-space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nhi", id="cl-hex"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2,2\r\n\r\nhi", id="cl-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", id="cl-empty"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000002\r\n\r\nhi", id="cl-16-digits"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhi", id="cl-overflow"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhi", id="cl-superscript-two"),
    # Connection: exactly keep-alive or close
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", id="conn-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n", id="conn-upgrade"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: TE\r\nContent-Length: 0\r\n\r\n", id="conn-te"),
    # status line
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", id="http-1.0"),
    pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", id="http-2.0"),
    pytest.param(b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="lower-case-version"),
    pytest.param(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", id="no-reason-separator"),
    pytest.param(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", id="non-digit-status"),
    pytest.param(b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", id="two-digit-status"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four-digit-status"),
    pytest.param(b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", id="double-space"),
    pytest.param(b"HTTP/1.1 200\tOK\r\nContent-Length: 0\r\n\r\n", id="tab-separator"),
    pytest.param(b"HTTP/1.1 200 O\tK\r\nContent-Length: 0\r\n\r\n", id="tab-in-reason"),
    pytest.param(b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n", id="nul-in-reason"),
    pytest.param(b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 0\r\n\r\n", id="del-in-reason"),
    pytest.param(b"HTTP/1.1 200 D\xe9j\xe0 vu\r\nContent-Length: 0\r\n\r\n", id="obs-text-reason"),
    pytest.param(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="leading-crlf"),
    # header lines, as for requests
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", id="bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", id="bare-lf-final"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: b\r\n c\r\n\r\n", id="obs-fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", id="space-before-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A:\r\n\r\n", id="empty-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: b \r\n\r\n", id="trailing-space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: b\t\r\n\r\n", id="trailing-tab"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: \x80\r\n\r\n", id="obs-text-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: a\x01\r\n\r\n", id="ctl-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX A: a\r\n\r\n", id="space-in-name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", id="head-incomplete"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r", id="head-incomplete-cr"),
    pytest.param(b"HTTP/1.1 200 OK\r\n", id="status-line-only"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("data", ACCEPTED_RESPONSES)
def test_response_corpus_is_taken_and_matches_llhttp(h1, data):
    got = h1.scan_response(data)
    assert got is not None, "common traffic must take the fast path"
    check_response(data, got)


@pytest.mark.parametrize("data", REJECTED_RESPONSES)
def test_response_corpus_is_left_to_llhttp(h1, data):
    assert h1.scan_response(data) is None


def test_response_twins_agree_on_corpus():
    for data in _params_values(ACCEPTED_RESPONSES) + _params_values(REJECTED_RESPONSES):
        scan_all_responses(data)


def test_response_nginx_exact(h1):
    body = b'{"id":1,"name":"rex","tags":["a","b"]}'
    assert h1.scan_response(NGINX_JSON) == (
        200,
        [("Server", "nginx/1.24.0"), ("Date", "Mon, 06 May 2024 10:00:00 GMT"),
         ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
         ("Connection", "keep-alive")],
        [("Server", "nginx/1.24.0"), ("Date", "Mon, 06 May 2024 10:00:00 GMT"),
         ("Content-Type", "application/json")],
        len(body), True, len(NGINX_JSON) - len(body))


# ---------------------------------------------------------------- llhttp's special cases

# Headers llhttp gives meaning to beyond the spec's obvious ones. Whatever a scanner makes of
# these, if it takes one, llhttp must agree. llhttp treats Proxy-Connection exactly like
# Connection (its header-state map sends 'proxy-connection' to the CONNECTION state).
EDGE_REQUESTS = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n", id="proxy-conn-keep-alive"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n", id="proxy-conn-close"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nproxy-connection: Keep-Alive, Close\r\n\r\n",
                 id="proxy-conn-list-close"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: upgrade\r\n\r\n", id="proxy-conn-upgrade"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: upgrade\r\nUpgrade: h2c\r\n\r\n",
                 id="proxy-conn-upgrade-with-upgrade"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nProxy-Connection: keep-alive\r\n\r\n",
                 id="conn-close-proxy-conn-keep-alive"),
]

EDGE_RESPONSES = [
    pytest.param(b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
                 id="proxy-conn-keep-alive"),
    pytest.param(b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\nhi",
                 id="proxy-conn-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nProxy-Connection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi",
                 id="proxy-conn-upgrade-with-upgrade"),
    pytest.param(b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", id="upgrade-cl0"),
]


@pytest.mark.parametrize("data", EDGE_REQUESTS)
def test_request_llhttp_special_headers(h1, data):
    got = h1.scan_request(data, LIMIT)
    if got is not None:
        check_request(data, got)


@pytest.mark.parametrize("data", EDGE_RESPONSES)
def test_response_llhttp_special_headers(h1, data):
    got = h1.scan_response(data)
    if got is not None:
        check_response(data, got)


def test_edge_twins_agree():
    for data in _params_values(EDGE_REQUESTS):
        scan_all_requests(data)
    for data in _params_values(EDGE_RESPONSES):
        scan_all_responses(data)


# ---------------------------------------------------------------- seeded mutation fuzz

def _fuzz(seeds: list[bytes], scan_all, check, rounds: int, seed: int):
    rng = random.Random(seed)
    accepted = rejected = 0
    failures: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for _ in range(rounds):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(rng, data, seeds)
        if data in seen:
            continue
        seen.add(data)
        try:
            got = scan_all(data)
            if got is None:
                rejected += 1
                continue
            accepted += 1
            check(data, got)
        except AssertionError as e:
            failures.append((data, str(e).splitlines()[0]))
    return accepted, rejected, failures


def _report(failures) -> str:
    return f"{len(failures)} discrepancies, e.g.:\n" + "\n".join(
        f"  {data!r}: {msg}" for data, msg in failures[:8])


def test_request_mutation_fuzz():
    seeds = _params_values(ACCEPTED_REQUESTS)
    seeds = [s for s in seeds if len(s) < 2000]     # keep the long ones out: speed
    accepted, rejected, failures = _fuzz(
        seeds, lambda d: scan_all_requests(d, 4096), check_request, 250_000, 0x5EED1)
    assert not failures, _report(failures)
    total = accepted + rejected
    assert accepted > total // 20, (accepted, rejected)   # the fuzz reaches the accepting path
    assert rejected > total // 5, (accepted, rejected)    # and the rejecting one, plenty


def test_response_mutation_fuzz():
    seeds = [s for s in _params_values(ACCEPTED_RESPONSES) if len(s) < 2000]
    accepted, rejected, failures = _fuzz(
        seeds, scan_all_responses, check_response, 250_000, 0x5EED2)
    assert not failures, _report(failures)
    total = accepted + rejected
    assert accepted > total // 20, (accepted, rejected)
    assert rejected > total // 5, (accepted, rejected)
