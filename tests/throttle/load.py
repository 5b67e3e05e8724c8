"""A small closed-loop load generator for the timed throttle tests (threads, keep-alive)."""
from __future__ import annotations

import http.client
import threading
import time
from collections import Counter


def hammer(targets: list[tuple[str, int]], path: str, seconds: float, conns: int = 12,
           headers: dict | None = None, timeline: list | None = None) -> Counter:
    """Send GET ``path`` as fast as ``conns`` keep-alive connections can, spread over
    ``targets`` (host, port), for ``seconds``. Returns a Counter of statuses ("err" for
    connection errors). When ``timeline`` is a list, (t, status) pairs are appended."""
    counts: Counter = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def worker(i: int) -> None:
        host, port = targets[i % len(targets)]
        conn = None
        local: Counter = Counter()
        events = []
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=5)
                conn.request("GET", path, headers=headers or {})
                r = conn.getresponse()
                r.read()
                st = r.status
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                st = "err"
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
            local[st] += 1
            if timeline is not None:
                events.append((time.monotonic() - start, st))
        if conn is not None:
            conn.close()
        with lock:
            counts.update(local)
            if timeline is not None:
                timeline.extend(events)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return counts
