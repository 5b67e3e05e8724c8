"""Shared pieces for the functions tests: the fixture code directory and gateway starters."""
from __future__ import annotations

import asyncio
import json
import os
import textwrap

import pytest

from tests.helpers import GatewayProcess

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def gateway(config: str, **kw) -> GatewayProcess:
    """Start a gateway on ``config`` (YAML; ``{fixtures}`` is replaced by the code dir)."""
    text = textwrap.dedent(config).replace("{fixtures}", FIXTURES)
    return GatewayProcess(text, **kw).start()


def jbody(resp) -> object:
    return json.loads(resp[2])


@pytest.fixture
def fixtures_dir():
    return FIXTURES


@pytest.fixture
def devnull():
    fd = os.open(os.devnull, os.O_WRONLY)
    yield fd
    os.close(fd)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on a fresh loop of each kind the gateway may use."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def run_(coro):
        loop = factory()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    return run_
