"""Function scenarios for loadtests/compare.py (issue 3: an ``inline`` function route at
no less than 0.8x the requests/s of nginx proxying a static backend in the same run, a
``process`` route at no less than 0.3x; p50/p99 reported).

    python loadtests/compare.py --scenarios function_inline,function_inline_async,function_process

- ``function_inline``: a plain (sync) Lambda handler in the gateway process, default
  ``inline_sync: auto`` (on threads for its first calls, then called on the event loop:
  what the measured rounds see).
- ``function_inline_thread``: the same with ``inline_sync: thread`` (a thread-pool hop per
  call: the runtime's behaviour before ``inline_sync``).
- ``function_inline_loop``: the same with ``inline_sync: loop`` (on the loop from the start).
- ``function_inline_async``: the same handler as ``async def`` (awaited on the loop).
- ``function_process``: the sync handler in the warm worker-process pool.
- ``function_process_print``: the same handler printing one line per call (the worker's
  output capture: the line is read back and logged between START and END).

Every handler returns the backend's body as a payload 1.0 proxy response; the REST API
sends the full 1.0 event. ``queue_wait`` is long so that wrk's connections queue for a
slot instead of being throttled; the function logs (START/END/REPORT) are written as in
production.
"""
from __future__ import annotations

import os


def scenarios(backend: int, root) -> list[dict]:
    code = os.path.join(str(root), "tests", "functions", "fixtures")
    functions = f"""functions:
  bench_inline: {{handler: bench_handler.handler, code: "{code}", runtime: inline, concurrency: 16,
                 queue_wait: 10s}}
  bench_inline_thread: {{handler: bench_handler.handler, code: "{code}", runtime: inline, concurrency: 16,
                        queue_wait: 10s, inline_sync: thread}}
  bench_inline_loop: {{handler: bench_handler.handler, code: "{code}", runtime: inline, concurrency: 16,
                      queue_wait: 10s, inline_sync: loop}}
  bench_inline_async: {{handler: bench_handler.async_handler, code: "{code}", runtime: inline,
                       concurrency: 256, queue_wait: 10s}}
  bench_process: {{handler: bench_handler.handler, code: "{code}", runtime: process, concurrency: 8,
                  queue_wait: 10s}}
  bench_process_print: {{handler: bench_handler.chatty, code: "{code}", runtime: process, concurrency: 8,
                        queue_wait: 10s}}
"""

    def route(fn):
        return f"""      - route: GET /pets/{{id}}
        integration: {{type: aws_proxy, function: {fn}}}
"""
    return [
        {"key": "function_inline", "name": "function, inline (sync handler)",
         "gw_routes": route("bench_inline"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
        {"key": "function_inline_thread", "name": "function, inline (sync handler, inline_sync: thread)",
         "gw_routes": route("bench_inline_thread"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
        {"key": "function_inline_loop", "name": "function, inline (sync handler, inline_sync: loop)",
         "gw_routes": route("bench_inline_loop"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
        {"key": "function_inline_async", "name": "function, inline (async handler)",
         "gw_routes": route("bench_inline_async"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
        {"key": "function_process", "name": "function, process pool",
         "gw_routes": route("bench_process"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
        {"key": "function_process_print", "name": "function, process pool (handler prints a line)",
         "gw_routes": route("bench_process_print"), "gw_path": "/b/pets/1", "nginx_path": "/pets/1",
         "extra_config": functions},
    ]
