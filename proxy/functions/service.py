"""The functions service: one runtime per configured function, per gateway worker.

``gateway.services.functions`` maps a function name to its runtime; every runtime has
``async invoke(event, request_id, client_context=None, identity=None) -> Result`` (raises
:class:`~proxy.functions.invocation.Throttled`) and ``async close()``.

Reserved concurrency is shared out between gateway worker processes: each of ``W``
workers allows ``max(1, concurrency // W)`` invocations at once (Lambda's reserved
concurrency is a ceiling; so is this, except that each worker gets at least one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .invocation import FunctionLog
from .spec import FunctionSpec, config_dir, spec_from_config

SERVICE_NAME = "functions"

#: the runtime-api command when none is configured: AWS's own Python runtime client
DEFAULT_RUNTIME_COMMAND = ("{python}", "-m", "awslambdaric", "{handler}")


def specs(cfg: dict, locator) -> dict[str, FunctionSpec]:
    base = config_dir(locator)
    return {name: spec_from_config(name, fc, base) for name, fc in (cfg.get("functions") or {}).items()}


def worker_count(gateway) -> int:
    for v in (os.environ.get("GWPROXY_WORKERS"), (gateway.server or {}).get("workers")):
        try:
            if v:
                from ..cli import resolve_workers
                return max(1, resolve_workers(v))
        except (TypeError, ValueError):
            pass
    return 1


class FunctionsService:
    def __init__(self, specs: dict[str, FunctionSpec], workers: int = 1):
        self.specs = specs
        self.runtimes: dict = {}
        for name, spec in specs.items():
            share = max(1, spec.concurrency // workers)
            self.runtimes[name] = make_runtime(spec, share)

    def get(self, name: str):
        return self.runtimes.get(name)

    async def close(self) -> None:
        for rt in self.runtimes.values():
            try:
                await rt.close()
            except Exception:
                pass


def make_runtime(spec: FunctionSpec, concurrency: int):
    log = FunctionLog(spec.name, spec.memory_mb)
    if spec.runtime == "inline":
        from .inline import InlineRuntime
        return InlineRuntime(spec, log, concurrency)
    if spec.runtime == "process":
        from .process import ProcessRuntime
        return ProcessRuntime(spec, log, concurrency)
    if spec.runtime == "runtime-api":
        from .runtime_api import RuntimeApiRuntime
        return RuntimeApiRuntime(spec, log, concurrency)
    if spec.runtime == "remote":
        from .remote import RemoteRuntime
        return RemoteRuntime(spec, log, concurrency)
    raise ValueError(f"unknown runtime {spec.runtime!r}")


def runtime_command(spec: FunctionSpec) -> list[str]:
    cmd = spec.command or DEFAULT_RUNTIME_COMMAND
    return [c.replace("{python}", sys.executable).replace("{handler}", spec.handler) for c in cmd]


def build_service(gateway) -> FunctionsService:
    return FunctionsService(specs(gateway.cfg, gateway.locator), worker_count(gateway))


# ----------------------------------------------------------------------------- checks

def check(cfg: dict, locator) -> list[str]:
    """Problems with functions that can be found before the first request: a missing code
    directory, a handler that does not import (missing module, syntax error, import error
    inside it, no such attribute), a runtime command that does not exist.

    Handlers are imported in child processes (one per function, in parallel), so checking
    runs their init code but leaves nothing imported in the gateway."""
    problems: list[str] = []
    fns = cfg.get("functions") or {}
    if not fns:
        return problems
    base = config_dir(locator)
    pending = []
    for name, fc in fns.items():
        where = ("functions", name)
        try:
            spec = spec_from_config(name, fc, base)
        except (TypeError, ValueError) as e:
            problems.append(locator.problem(where, str(e)))
            continue
        if spec.runtime in ("inline", "process", "runtime-api") and not os.path.isdir(spec.code):
            problems.append(locator.problem(where + ("code",), f"code directory {spec.code!r} does not exist"))
            continue
        if spec.runtime == "runtime-api":
            cmd = runtime_command(spec)
            exe = cmd[0]
            if not (os.path.isabs(exe) and os.access(exe, os.X_OK)) and shutil.which(exe) is None \
                    and not os.access(os.path.join(spec.code, exe), os.X_OK):
                problems.append(locator.problem(where + ("command",), f"command {exe!r} not found"))
                continue
            if spec.command:
                continue     # a runtime of its own: its handler is its business
        if spec.runtime == "remote":
            continue
        if spec.runtime in ("inline", "process", "runtime-api") and spec.handler:
            pending.append((where, spec, _start_import_check(spec)))
    for where, spec, proc in pending:
        err = _finish_import_check(proc)
        if err:
            problems.append(locator.problem(where + ("handler",), err))
    return problems


def _start_import_check(spec: FunctionSpec):
    from .process import WORKER
    env = spec.lambda_env()
    return subprocess.Popen([sys.executable, WORKER, "--check"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=spec.code or None)


def _finish_import_check(proc, timeout: float = 30.0) -> str | None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return f"importing the handler took longer than {timeout:.0f}s"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.startswith("GWPROXY-CHECK: ")]
    if lines:
        return lines[-1][len("GWPROXY-CHECK: "):]
    return f"importing the handler failed (exit status {proc.returncode})"


# ----------------------------------------------------------------------------- admin

def admin_routes(gateway) -> list:
    from . import invoke_api
    return invoke_api.routes(gateway)
