"""Shared fixtures for the opt-in micro benchmarks (pytest.ini ignores tests/bench).

Run them on purpose, all or one file::

    python -m pytest tests/bench -o addopts="" -p no:cacheprovider --benchmark-group-by=group
    python -m pytest tests/bench/bench_app.py -o addopts="" -p no:cacheprovider

This conftest makes ``bench_*.py`` files collectable when the directory is given, and
provides ``drive`` (run a coroutine that never really suspends, without an event loop, so
the loop's own cost is not measured) and ``gateway_app`` (a GatewayApp compiled from a
YAML string, its services started).
"""
from __future__ import annotations

import asyncio
import textwrap

import pytest

pytest.importorskip("pytest_benchmark")


def pytest_configure(config):
    files = config.getini("python_files")
    if "bench_*.py" not in files:
        files.append("bench_*.py")


def drive(coro):
    """Run ``coro`` to completion synchronously; fail if it really waits on I/O."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    coro.close()
    raise RuntimeError("the coroutine suspended: this benchmark needs a path without I/O")


@pytest.fixture
def drive_coro():
    return drive


@pytest.fixture
def gateway_app(tmp_path):
    """Factory: ``gateway_app(yaml_text) -> GatewayApp`` with services started; closed after."""
    from proxy.app import GatewayApp
    from proxy.gateway import load_gateway

    loop = asyncio.new_event_loop()
    made = []

    def make(text: str) -> GatewayApp:
        p = tmp_path / f"gw{len(made)}.yaml"
        p.write_text(textwrap.dedent(text))
        app = GatewayApp(load_gateway(str(p)))
        loop.run_until_complete(app.gw.start())
        made.append(app)
        return app

    yield make
    for app in made:
        try:
            loop.run_until_complete(app.gw.close())
        except Exception:
            pass
    loop.close()


def new_loop():
    """uvloop when installed (the gateway's loop), else asyncio's."""
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
