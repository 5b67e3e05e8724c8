"""gwcore: the native core of gwproxy.

Every native module ``gwcore/<name>.pyx`` has a pure-Python twin ``gwcore/_<name>_py.py``
with the same behaviour. A module written in Cython's pure-Python mode (``<name>.py`` plus
an augmenting ``<name>.pxd``, like ``http1``) is its own twin: compiled, it is the
extension; ``_<name>_py.py`` runs the same source uncompiled. The compiled one is used unless it is missing or ``GWCORE_PURE=1``
is set (aiohttp's AIOHTTP_NO_EXTENSIONS habit). ``IMPLEMENTATIONS`` says which one each
module uses; ``IMPLEMENTATION`` sums it up ("cython", "python" or "mixed").
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("GWCORE_PURE", "") not in ("", "0")

#: native modules gwcore knows about; each has a twin
MODULES = ("router", "ratelimit", "cachekey", "http1", "h1client", "h1scan", "reqid", "lane")

IMPLEMENTATIONS: dict[str, str] = {}


def load(name: str) -> ModuleType:
    """Return the module chosen for ``name`` (compiled unless missing or forced pure)."""
    if not PURE:
        try:
            mod = importlib.import_module(f"gwcore.{name}")
            if getattr(mod, "__file__", "").endswith((".so", ".pyd")):
                IMPLEMENTATIONS[name] = "cython"
                return mod
        except ImportError:
            pass
    mod = importlib.import_module(f"gwcore._{name}_py")
    IMPLEMENTATIONS[name] = "python"
    return mod


def exec_source(name: str, namespace: dict) -> None:
    """Run ``gwcore/<name>.py`` uncompiled in ``namespace``: the pure-Python twin of a module
    written in Cython's pure-Python mode is its own source, run as plain Python."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), namespace)  # noqa: S102 - our own source file


def twins(name: str) -> list[tuple[str, ModuleType]]:
    """Both implementations of ``name`` that are importable, for tests that run on each."""
    out = []
    try:
        mod = importlib.import_module(f"gwcore.{name}")
        if getattr(mod, "__file__", "").endswith((".so", ".pyd")):
            out.append(("cython", mod))
    except ImportError:
        pass
    out.append(("python", importlib.import_module(f"gwcore._{name}_py")))
    return out


def implementation() -> str:
    """'cython', 'python' or 'mixed', over the modules that exist in this tree."""
    for name in MODULES:
        if name not in IMPLEMENTATIONS:
            try:
                load(name)
            except ImportError:
                continue
    kinds = set(IMPLEMENTATIONS.values())
    if not kinds:
        return "python"
    return kinds.pop() if len(kinds) == 1 else "mixed"


IMPLEMENTATION = "pure-forced" if PURE else None  # refined by implementation()
