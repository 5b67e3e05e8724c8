"""Start and kill ``tests.vpc.backend`` processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import ROOT


class Backend:
    def __init__(self, name: str, listen: str | None = None, unix: str | None = None,
                 health_status: int = 200, prefix: list[str] | None = None):
        self.name = name
        self.listen = listen
        self.unix = unix
        self.args = [*(prefix or []), sys.executable, "-m", "tests.vpc.backend", "--name", name,
                     "--health-status", str(health_status)]
        self.args += ["--unix", unix] if unix else ["--listen", listen]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Backend":
        self.proc = subprocess.Popen(self.args, cwd=str(ROOT), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            self.kill()
            raise RuntimeError(f"backend {self.name} did not start: {line!r}")
        # the socket is bound and listening before "ready" is printed
        while time.monotonic() < deadline and self.unix and not os.path.exists(self.unix):
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
