"""VPC-link scenarios for loadtests/compare.py (issue 4: balancing across two targets costs
no more than 5% requests/s against a single-target route, in the same run).

    python loadtests/compare.py --scenarios plain,vpc_single,vpc_two_rr,vpc_two_least

- ``vpc_single``: a VPC-link route with one target (health checks on, every 10 s);
- ``vpc_two_rr``: the same link with two targets, round robin;
- ``vpc_two_least``: two targets, least outstanding requests.

The two targets are two pools to the same nginx backend (``127.0.0.1:PORT`` listed twice):
the gateway keeps a target, a pool, counters and a health state for each, so it does all
the per-request work of balancing across two machines, while the backend side stays the
one nginx every scenario uses. The criterion is ``vpc_two_*`` req/s >= 0.95 x
``vpc_single`` req/s (and, for context, both against ``plain`` and against nginx).
"""
from __future__ import annotations


def scenarios(backend: int, root) -> list[dict]:
    route = """      - route: GET /pets/{id}
        integration: {type: http_proxy, vpc_link: LINK, uri: "http://pets.internal/pets/{id}"}
"""
    target = f'"127.0.0.1:{backend}"'
    hc = "health_check: {path: /health, interval: 10s, timeout: 2s}"
    links = f"""vpc_links:
  one:
    targets: [{target}]
    {hc}
  two_rr:
    targets: [{target}, {target}]
    balance: round_robin
    {hc}
  two_least:
    targets: [{target}, {target}]
    balance: least_request
    {hc}
"""
    out = []
    for key, link, name in (("vpc_single", "one", "vpc link, 1 target"),
                            ("vpc_two_rr", "two_rr", "vpc link, 2 targets round robin"),
                            ("vpc_two_least", "two_least", "vpc link, 2 targets least request")):
        out.append({
            "key": key,
            "name": name,
            "gw_routes": route.replace("LINK", link),
            "gw_path": "/b/pets/1",
            "nginx_path": "/pets/1",
            "extra_config": links,
        })
    return out
