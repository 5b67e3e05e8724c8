"""Cache scenarios for loadtests/compare.py (issue 6: a cache hit must be served at no
less than 1.2x the requests/s of nginx proxying the same backend, in the same run).

    python loadtests/compare.py --scenarios cache_hit,cache_hit_keyed

- ``cache_hit``: GET /b/pets/1 on a stage with the memory cache on; after the warm-up
  every request is a hit. nginx proxies the same path to the same backend (no cache).
- ``cache_hit_keyed``: the same with three declared key parameters (path, query,
  header) present on every request, so the key computation is exercised in full.
"""
from __future__ import annotations


def scenarios(backend: int, root) -> list[dict]:
    up = f"http://127.0.0.1:{backend}"
    stage = "        cache: {enabled: true, ttl: 3600, capacity_mb: 64}\n"
    return [
        {
            "key": "cache_hit",
            "name": "cache hit (memory)",
            "gw_routes": f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
""",
            "gw_path": "/b/pets/1",
            "nginx_path": "/pets/1",
            "stage_extra": stage,
        },
        {
            "key": "cache_hit_keyed",
            "name": "cache hit, 3 key params",
            "gw_routes": f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
        cache: {{key: [path.id, query.lang, header.accept]}}
""",
            "gw_path": "/b/pets/1?lang=en",
            "nginx_path": "/pets/1?lang=en",
            "headers": {"Accept": "application/json"},
            "stage_extra": stage,
        },
    ]
