"""Compile a loaded config into the frozen runtime table the request path reads.

``compile_gateway(cfg, locator)`` does every check and every decision that can be made at
config time: API/stage resolution tables, one router per stage with each route's handler
chain already built (stage variables substituted, stages that do not apply left out).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gwcore
from gwcore.errors import RouteConflictError, RouteSyntaxError

from . import pipeline
from .config import ConfigError, Locator

_router = gwcore.load("router")

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")


@dataclass
class RouteBuild:
    """Everything a feature needs to build one route's stage or integration (config time)."""
    gateway: "Gateway"
    api_name: str
    api: dict
    stage_name: str
    stage: dict
    route: dict
    route_index: int
    method: str          # "GET", ..., "ANY", or "$default"
    path: str            # route path template ("" for $default)
    locator: Locator

    @property
    def where(self) -> tuple:
        return ("apis", self.api_name, "routes", self.route_index)

    @property
    def route_key(self) -> str:
        return "$default" if self.method == "$default" else f"{self.method} {self.path}"

    @property
    def stage_variables(self) -> dict:
        return self.stage.get("variables") or {}


class CompiledRoute:
    __slots__ = ("api_name", "stage_name", "route_key", "method", "path", "handler", "cfg", "index",
                 "start", "lane", "lane_checks", "plan")

    def __init__(self, rb: RouteBuild, handler):
        self.api_name = rb.api_name
        self.stage_name = rb.stage_name
        self.route_key = rb.route_key
        self.method = rb.method
        self.path = rb.path
        self.handler = handler
        self.cfg = rb.route
        self.index = rb.route_index
        # an integration's callback-mode entry, when nothing runs before it on this route
        self.start = getattr(handler, "start", None)
        # a forwarding lane's parts (gwcore.lane), when the integration has one and every
        # stage can be asked without a Request; the app makes the Plan on first use
        self.lane = getattr(handler, "lane", None)
        self.lane_checks = getattr(handler, "lane_checks", ())
        self.plan = None


class CompiledStage:
    __slots__ = ("name", "api", "cfg", "router", "variables", "prefix")

    def __init__(self, name: str, api: "CompiledApi", cfg: dict, prefix: str):
        self.name = name
        self.api = api
        self.cfg = cfg
        self.variables = cfg.get("variables") or {}
        self.router = _router.Router()
        self.prefix = prefix     # path prefix stripped before routing ("/prod" or "")


class CompiledApi:
    __slots__ = ("name", "type", "cfg", "host", "base_path", "stages", "default_stage",
                 "not_found", "bad_path", "gate")

    def __init__(self, name: str, cfg: dict):
        self.name = name
        self.type = cfg.get("type", "rest")
        self.cfg = cfg
        self.host = (cfg.get("host") or "").lower() or None
        self.base_path = (cfg.get("base_path") or "").rstrip("/")
        self.stages: dict[str, CompiledStage] = {}
        self.default_stage: CompiledStage | None = None
        from .policy import api_gate
        self.gate = api_gate(cfg)   # API-wide source lists, asked before a "no such route"


@dataclass
class Gateway:
    cfg: dict
    locator: Locator
    services: SimpleNamespace = field(default_factory=SimpleNamespace)
    apis: list[CompiledApi] = field(default_factory=list)
    by_host: dict[str | None, list[CompiledApi]] = field(default_factory=dict)
    admin_routes: list = field(default_factory=list)
    feature_modules: list = field(default_factory=list)
    _hosts: dict = field(default_factory=dict)   # Host header as sent -> candidate APIs
    #: ``reply(req, answer)``: how a callback answers a request the native front end's
    #: ``serve_now`` left pending (set by the app; a Response, or an awaitable giving one)
    reply: Any = None

    @property
    def server(self) -> dict:
        return self.cfg.get("server") or {}

    def resolve(self, host: str | None, path: str):
        """(api, stage, rest_of_path) for a request, or (api_or_None, None, None)."""
        cands = self._hosts.get(host)
        if cands is None:
            cands = self._candidates(host)
        for api in cands:
            bp = api.base_path
            if bp:
                if path == bp:
                    rest = "/"
                elif path.startswith(bp) and path[len(bp)] == "/":
                    rest = path[len(bp):]
                else:
                    continue
            else:
                rest = path
            # stage is the first segment, unless the API serves a $default stage at the root
            if api.stages:
                end = rest.find("/", 1)
                first = rest[1:] if end < 0 else rest[1:end]
                st = api.stages.get(first)
                if st is not None:
                    return api, st, (rest[end:] if end >= 0 else "/")
            if api.default_stage is not None:
                return api, api.default_stage, rest
            return api, None, None
        return (cands[0] if cands else (self.apis[0] if self.apis else None)), None, None

    def _candidates(self, host: str | None):
        """The APIs a Host header may address (memoized per header value: clients send the
        same one on every request; bounded, cleared when full)."""
        cands = None
        if host:
            cands = self.by_host.get(host.split(":", 1)[0].lower())
        if cands is None:
            cands = self.by_host.get(None, ())
        if len(self._hosts) >= 4096:
            self._hosts.clear()
        self._hosts[host] = cands
        return cands

    async def start(self) -> None:
        for name, svc in vars(self.services).items():
            start = getattr(svc, "start", None)
            if start is not None:
                await start()

    async def close(self) -> None:
        for name, svc in reversed(list(vars(self.services).items())):
            close = getattr(svc, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # closing must not mask the others
                    pass


def _modules(names) -> list:
    return [importlib.import_module(n) for n in names]


def check(cfg: dict, locator: Locator) -> list[str]:
    """Semantic checks beyond the schema; returns problem lines."""
    problems: list[str] = []
    for mod in _modules(pipeline.SERVICES + pipeline.FEATURES) + _modules(sorted(set(pipeline.INTEGRATIONS.values()))):
        fn = getattr(mod, "check", None)
        if fn is not None:
            problems.extend(fn(cfg, locator))
    problems.extend(_check_routes(cfg, locator))
    return problems


def _split_route(route: str) -> tuple[str, str]:
    if route == "$default":
        return "$default", ""
    method, _, path = route.partition(" ")
    return method.upper(), path.strip()


def _check_routes(cfg: dict, locator: Locator) -> list[str]:
    problems = []
    for api_name, api in (cfg.get("apis") or {}).items():
        r = _router.Router()
        for i, route in enumerate(api.get("routes") or []):
            method, path = _split_route(route["route"])
            where = ("apis", api_name, "routes", i, "route")
            label = f"{locator.file}:{locator.line(where)} {route['route']}"
            if method == "$default":   # only in http APIs: the loader checks that
                continue
            try:
                r.add(method, path, i, label)
            except (RouteConflictError, RouteSyntaxError) as e:
                problems.append(locator.problem(where, str(e)))
    return problems


def compile_gateway(cfg: dict, locator: Locator) -> Gateway:
    """Check and compile; raises ConfigError with every problem."""
    problems = check(cfg, locator)
    if problems:
        raise ConfigError(problems)
    gw = Gateway(cfg=cfg, locator=locator)
    features = _modules(pipeline.FEATURES)
    services = _modules(pipeline.SERVICES)
    integrations = {t: importlib.import_module(m) for t, m in pipeline.INTEGRATIONS.items()}
    gw.feature_modules = services + features + list({id(m): m for m in integrations.values()}.values())
    for mod in gw.feature_modules:
        build = getattr(mod, "build_service", None)
        if build is not None:
            setattr(gw.services, getattr(mod, "SERVICE_NAME", mod.__name__.rsplit(".", 1)[-1]), build(gw))

    for api_name, api_cfg in (cfg.get("apis") or {}).items():
        api = CompiledApi(api_name, api_cfg)
        gw.apis.append(api)
        stages = api_cfg.get("stages") or ({"$default": {}} if api.type == "http" else {})
        for stage_name, stage_cfg in stages.items():
            if stage_name == "$default":
                st = CompiledStage(stage_name, api, stage_cfg, "")
                api.default_stage = st
            else:
                st = CompiledStage(stage_name, api, stage_cfg, "/" + stage_name)
                api.stages[stage_name] = st
            for i, route_cfg in enumerate(api_cfg.get("routes") or []):
                method, path = _split_route(route_cfg["route"])
                rb = RouteBuild(gw, api_name, api_cfg, stage_name, stage_cfg, route_cfg, i,
                                method, path, locator)
                handler = _build_route(rb, features, integrations)
                cr = CompiledRoute(rb, handler)
                if method == "$default":
                    st.router.set_default(cr)
                else:
                    st.router.add(method, path, cr)
            st.router.freeze()
    # candidates per host: longest base path first
    hosts = {a.host for a in gw.apis}
    for h in hosts:
        gw.by_host[h] = sorted([a for a in gw.apis if a.host == h], key=lambda a: -len(a.base_path))
    if None not in gw.by_host:
        gw.by_host[None] = []
    for mod in gw.feature_modules:
        adm = getattr(mod, "admin_routes", None)
        if adm is not None:
            gw.admin_routes.extend(adm(gw))
    return gw


def _build_route(rb: RouteBuild, features, integrations):
    """The route's handler chain. When the integration has a callback-mode entry
    (``handler.start(req)``: True when it will answer through ``gateway.reply``, else an
    awaitable) and every stage before it passes through (a plain function returning
    ``nxt(req)`` unchanged or a decided answer: ``stage.passes_through``), the chain gets
    one too, built the same way over the stages. When the integration has a forwarding
    lane (``handler.lane``) and every stage a ``lane_check`` (asked without a Request),
    the chain keeps the lane and gets the checks (``handler.lane_checks``)."""
    itype = rb.route["integration"]["type"]
    handler = integrations[itype].build_integration(rb)
    start = getattr(handler, "start", None)
    lane = getattr(handler, "lane", None)
    checks = []
    for mod in reversed(features):
        build = getattr(mod, "build_stage", None)
        if build is None:
            continue
        stage = build(rb)
        if stage is not None:
            handler = _chain(stage, handler)
            if start is not None:
                start = _chain(stage, start) if getattr(stage, "passes_through", False) else None
            check = getattr(stage, "lane_check", None)
            if check is None:
                lane = None
            else:
                checks.append(check)
    if start is not None:
        handler.start = start
    if lane is not None:
        handler.lane = lane
        handler.lane_checks = tuple(reversed(checks))    # in the order the stages run
    return handler


def _chain(stage, nxt):
    # returns the stage's own coroutine (awaited by the caller): one coroutine per stage,
    # not two
    def handler(req):
        return stage(req, nxt)
    handler.__qualname__ = getattr(stage, "__qualname__", "stage")
    return handler


def load_gateway(path: str) -> Gateway:
    from .config import load_config
    cfg, locator = load_config(path)
    return compile_gateway(cfg, locator)
