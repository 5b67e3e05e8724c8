"""Shared pieces for the functions tests: the fixture code directory and gateway starters."""
from __future__ import annotations

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
