"""One function's settings, decided once at config time (``FunctionSpec``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_MB = 128
DEFAULT_CONCURRENCY = 10
DEFAULT_REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
#: how long an invocation waits for a free concurrency slot before it is throttled (429)
DEFAULT_QUEUE_WAIT = 1.0
#: AWS's limit on the init phase of a cold start
INIT_TIMEOUT = 10.0
RUNTIMES = ("inline", "process", "runtime-api", "remote")
#: how the ``inline`` runtime runs a plain (sync) handler (see proxy/functions/inline.py)
INLINE_SYNC_MODES = ("auto", "thread", "loop")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    runtime: str = "process"
    handler: str = ""
    code: str = ""                  # absolute directory
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    concurrency: int = DEFAULT_CONCURRENCY
    queue_wait: float = DEFAULT_QUEUE_WAIT
    environment: dict = field(default_factory=dict)
    command: tuple = ()
    endpoint: str = ""
    function_name: str = ""         # the remote function's name (default: ours)
    credentials: dict | None = None
    region: str = DEFAULT_REGION
    inline_sync: str = "auto"       # inline runtime, sync handlers: auto | thread | loop

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"

    @property
    def log_group(self) -> str:
        return "/aws/lambda/" + self.name

    def lambda_env(self) -> dict:
        """The environment AWS gives a function (plus the configured variables)."""
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name(self.name),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "LAMBDA_TASK_ROOT": self.code,
            "LAMBDA_RUNTIME_DIR": self.code,
            "_HANDLER": self.handler,
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MALLOC_ARENA_MAX": "2",
        }
        # what a process needs from the gateway's environment to run at all; nothing else
        # (the gateway's own secrets stay out of the function)
        for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONHOME",
                  "SSL_CERT_FILE", "SSL_CERT_DIR"):
            v = os.environ.get(k)
            if v is not None:
                env[k] = v
        pp = [self.code] if self.code else []
        if os.environ.get("PYTHONPATH"):
            pp.append(os.environ["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pp)
        env.update({str(k): str(v) for k, v in (self.environment or {}).items()})
        return env


def log_stream_name(name: str) -> str:
    import time
    return time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{os.getpid():08x}{abs(hash(name)) % (1 << 32):08x}"


def spec_from_config(name: str, fc: dict, base_dir: str) -> FunctionSpec:
    code = fc.get("code") or "."
    if not os.path.isabs(code):
        code = os.path.normpath(os.path.join(base_dir, code))
    creds = fc.get("credentials") or None
    region = (creds or {}).get("region") or fc.get("region") or DEFAULT_REGION
    return FunctionSpec(
        name=name,
        runtime=fc.get("runtime", "process"),
        handler=fc.get("handler", ""),
        code=code,
        timeout=float(fc.get("timeout", DEFAULT_TIMEOUT)),
        memory_mb=int(fc.get("memory_mb", DEFAULT_MEMORY_MB)),
        concurrency=int(fc.get("concurrency", DEFAULT_CONCURRENCY)),
        queue_wait=float(fc.get("queue_wait", DEFAULT_QUEUE_WAIT)),
        environment=dict(fc.get("environment") or {}),
        command=tuple(str(c) for c in (fc.get("command") or ())),
        endpoint=fc.get("endpoint", ""),
        function_name=fc.get("function_name") or name,
        credentials=creds,
        region=region,
        inline_sync=str(fc.get("inline_sync") or "auto"),
    )


def config_dir(locator) -> str:
    f = getattr(locator, "file", None) or ""
    return os.path.dirname(os.path.abspath(f)) if f else os.getcwd()
