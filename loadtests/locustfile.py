"""locust scenarios against a gateway running the config that
``loadtests/locust_scenarios.py`` writes (one REST API per scenario, base path = the
scenario's name, stage ``b``).

Run them through the runner, which starts the backend and the gateway and writes the CSV
and HTML reports under loadtests/results/::

    python loadtests/locust_scenarios.py plain          # or inline, process, cached,
                                                        # throttled, mix, all

or by hand against a gateway you started on that config::

    locust -f loadtests/locustfile.py --headless -u 64 -r 64 -t 30s \
        --host http://127.0.0.1:8080 PlainProxyUser

User classes (one per scenario; pass the class name to pick one):

- ``PlainProxyUser``      GET /plain/b/pets/{id}: http_proxy to the nginx backend
- ``InlineFunctionUser``  GET /inline/b/pets/{id}: aws_proxy, inline runtime
- ``ProcessFunctionUser`` GET /process/b/pets/{id}: aws_proxy, warm process pool
- ``CachedUser``          GET /cached/b/pets/{id}: stage cache on; ids from a small set,
                          so after warm-up nearly every request is a hit
- ``ThrottledUser``       GET /throttled/b/pets/{id} with an API key; the route's usage plan
                          throttles (rate/burst in locust_scenarios.py), so both 200 and
                          429 are expected: 429s are reported under their own name
- ``MixUser``             all of the above, weighted like a real API (reads 4 : cached 3 :
                          inline 2 : process 1 : keyed 2), plus a POST with a JSON body

Users have no wait time (closed loop, as fast as they can): requests/s is what the
gateway plus locust sustain. Locust itself is the limit well below the gateway's
saturation on 2 cores; use compare.py / wrk for saturation numbers and these for
behaviour under a realistic mix (failures, status mix, latency distribution).
"""
from __future__ import annotations

import os
import random

from locust import FastHttpUser, constant, task

#: the API key the runner's config registers for the throttled route's usage plan
API_KEY = os.environ.get("GWPROXY_LOCUST_API_KEY", "locust-bench-key-0123456789abcdef")
IDS = [str(i) for i in range(1, 51)]


def _get(user, path, name, headers=None, ok=(200,), renamed=None):
    """GET and judge: statuses in ``ok`` pass; ``renamed`` maps other expected statuses to a
    report name of their own (e.g. 429 -> "throttled")."""
    with user.client.get(path, name=name, headers=headers, catch_response=True) as r:
        if r.status_code in ok:
            r.success()
        elif renamed and r.status_code in renamed:
            r.request_meta["name"] = renamed[r.status_code]
            r.success()
        else:
            r.failure(f"status {r.status_code}")


class PlainProxyUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def pet(self):
        _get(self, f"/plain/b/pets/{random.choice(IDS)}", "/plain/b/pets/{id}")


class InlineFunctionUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def pet(self):
        _get(self, f"/inline/b/pets/{random.choice(IDS)}", "/inline/b/pets/{id}")


class ProcessFunctionUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def pet(self):
        _get(self, f"/process/b/pets/{random.choice(IDS)}", "/process/b/pets/{id}")


class CachedUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def pet(self):
        _get(self, f"/cached/b/pets/{random.choice(IDS)}", "/cached/b/pets/{id}")


class ThrottledUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def pet(self):
        _get(self, f"/throttled/b/pets/{random.choice(IDS)}", "/throttled/b/pets/{id}",
             headers={"x-api-key": API_KEY}, renamed={429: "/throttled/b/pets/{id} (429 throttled)"})


class MixUser(FastHttpUser):
    wait_time = constant(0)

    @task(4)
    def plain(self):
        _get(self, f"/plain/b/pets/{random.choice(IDS)}", "/plain/b/pets/{id}")

    @task(3)
    def cached(self):
        _get(self, f"/cached/b/pets/{random.choice(IDS)}", "/cached/b/pets/{id}")

    @task(2)
    def inline(self):
        _get(self, f"/inline/b/pets/{random.choice(IDS)}", "/inline/b/pets/{id}")

    @task(1)
    def process(self):
        _get(self, f"/process/b/pets/{random.choice(IDS)}", "/process/b/pets/{id}")

    @task(2)
    def keyed(self):
        _get(self, f"/throttled/b/pets/{random.choice(IDS)}", "/throttled/b/pets/{id}",
             headers={"x-api-key": API_KEY}, renamed={429: "/throttled/b/pets/{id} (429 throttled)"})

    @task(1)
    def create(self):
        with self.client.post("/plain/b/pets", json={"name": "rex", "tags": ["a", "b"]},
                              name="POST /plain/b/pets", catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            else:
                r.failure(f"status {r.status_code}")
