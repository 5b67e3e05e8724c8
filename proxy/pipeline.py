"""The request lifecycle, in order, in one place.

Each feature module may provide any of these hooks (all optional):

- ``check(cfg, locator) -> list[str]``: semantic problems found at load time, one message
  line each (``locator.problem(path, text)``), so ``gwproxy check`` reports them.
- ``build_service(gateway) -> object``: a gateway-wide service (a store, a function pool),
  stored as ``gateway.services.<SERVICE_NAME>``. It may have ``async start()`` (called in
  each worker before serving) and ``async close()`` (on shutdown).
- ``build_stage(rb: RouteBuild) -> Stage | None``: the per-route stage, decided at config
  time; ``None`` when the route does not need it (no cost per request then). A stage is
  ``async def stage(req, next) -> Response``: it answers, or returns ``await next(req)``;
  or a plain function returning ``next(req)`` itself or ``context.answered(resp)``. Such a
  stage that returns ``next(req)`` unchanged whenever it does not answer may say so with
  ``stage.passes_through = True``: the route then keeps its integration's callback entry
  (``handler.start``, the native front end's fast path; see ``gateway._build_route``).
- ``admin_routes(gateway) -> list[(method, path, handler)]``: endpoints on the admin
  listener; ``path`` may end with ``*`` for a prefix; ``handler(areq) -> Response``.

``FEATURES`` lists the modules in lifecycle order (DESIGN.md "The request lifecycle");
``INTEGRATIONS`` maps an integration type to the module whose ``build_integration(rb)``
returns the innermost handler.
"""
from __future__ import annotations

FEATURES: tuple[str, ...] = (
    # 3. resource policy           (proxy.policy)
    "proxy.policy",
    # 4. authorize (API keys, JWT)  (proxy.auth)
    "proxy.auth.apikeys",
    # 5. throttle                   (proxy.throttle)
    "proxy.throttle",
    # 6. validate                   (proxy.validate)
    # 7. cache lookup / store       (proxy.cache)
    "proxy.cache",
)

INTEGRATIONS: dict[str, str] = {
    "http_proxy": "proxy.integrations.http",
    "http": "proxy.integrations.http",
    "mock": "proxy.integrations.mock",
    "aws_proxy": "proxy.functions.integration",
}

#: modules that only provide services / checks / admin routes (no per-route stage)
SERVICES: tuple[str, ...] = (
    "proxy.state",
    "proxy.integrations.upstreams",
    "proxy.upstream.links",
    "proxy.functions.service",
)
