"""Shared by the HTTP/1 scanner tests (tests/gwcore/test_h1scan.py, tests/frontend/
test_scan_path.py, tests/frontend/test_scan_fuzz.py): the front end's fake client
transport, what the app sees of a request, and the seeded mutations of HTTP messages."""
from __future__ import annotations

import random


class Transport:
    """What the front end writes and does to the client's transport, in order."""

    def __init__(self):
        self.events: list = []
        self.closed = False

    def write(self, data):
        self.events.append(("write", bytes(data)))

    def written(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "write")

    def close(self):
        self.events.append(("close",))
        self.closed = True

    def abort(self):
        self.events.append(("abort",))
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self):
        self.events.append(("pause",))

    def resume_reading(self):
        self.events.append(("resume",))

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.events.append(("eof",))


def request_view(ex, peer) -> dict:
    """Everything the app can see of a request (gwcore.http1.Exchange) at serve_now."""
    return {
        "method": ex.method, "path": ex.path, "query": ex.query, "headers": list(ex.headers),
        "host": ex.host, "http_version": ex.http_version, "keep_alive": ex.keep_alive,
        "head": ex.head, "body_complete": ex.body_complete, "expect_continue": ex.expect_continue,
        "buffered_body": b"".join(ex._chunks or ()), "peer": peer,
    }


# -- mutations --------------------------------------------------------------------------------

#: bytes that matter to HTTP/1 framing (drawn often by the mutations)
INTERESTING = b"\r\n\t \x00\x7f\x80\xff:;,?#/\"0"

#: whole header lines that hit the scanners' and llhttp's special cases
HEADER_LINES = [
    b"Host: b.example", b"Content-Length: 0", b"Content-Length: 1", b"Content-Length: 2",
    b"content-length: 00", b"Transfer-Encoding: chunked", b"Connection: close",
    b"Connection: keep-alive", b"Connection: upgrade", b"connection: Close",
    b"Proxy-Connection: close", b"Proxy-Connection: keep-alive", b"Upgrade: websocket",
    b"Expect: 100-continue", b"Keep-Alive: timeout=5", b"TE: trailers", b"X-A: b",
    b"X-A:", b"X-A: b ", b" X-A: b", b"X-A : b", b"X-A: b\tc",
]


def _byte(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.45:
        return rng.choice(INTERESTING)
    if r < 0.8:
        return rng.randrange(0x21, 0x7F)     # mostly harmless: keeps many mutants acceptable
    return rng.randrange(256)


def mutate(rng: random.Random, data: bytes, seeds: list, header_lines: list = HEADER_LINES) -> bytes:
    """One seeded mutation of an HTTP message: a byte replaced, inserted or deleted, a line
    duplicated, dropped or its name's case swapped, one of ``header_lines`` inserted, the
    message truncated, or one of ``seeds`` appended."""
    n = len(data)
    op = rng.randrange(10)
    if op in (0, 1) and n:                  # replace a byte
        i = rng.randrange(n)
        return data[:i] + bytes([_byte(rng)]) + data[i + 1:]
    if op == 2:                             # insert a byte
        i = rng.randrange(n + 1)
        return data[:i] + bytes([_byte(rng)]) + data[i:]
    if op == 3 and n:                       # delete a byte
        i = rng.randrange(n)
        return data[:i] + data[i + 1:]
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if op == 4 and sep:                     # duplicate a line
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return b"\r\n".join(lines) + sep + body
    if op == 5 and sep and len(lines) > 1:  # swap the case of a header name
        i = rng.randrange(1, len(lines))
        name, colon, value = lines[i].partition(b":")
        lines[i] = name.swapcase() + colon + value
        return b"\r\n".join(lines) + sep + body
    if op == 6 and sep:                     # add a special header line
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(header_lines))
        return b"\r\n".join(lines) + sep + body
    if op == 7 and sep and len(lines) > 1:  # drop a header line
        del lines[rng.randrange(1, len(lines))]
        return b"\r\n".join(lines) + sep + body
    if op == 8:                             # truncate
        return data[:rng.randrange(n + 1)]
    return data + rng.choice(seeds)         # append another message
