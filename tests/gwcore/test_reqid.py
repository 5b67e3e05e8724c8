"""gwcore.reqid on both twins: ids are version-4 UUID strings, unique, and a forked worker
draws its own (without the reseed after fork, parent and child would give the same ids)."""
from __future__ import annotations

import os
import re
import uuid

import pytest

import gwcore

TWINS = gwcore.twins("reqid")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_compiled_twin_is_built():
    assert [name for name, _ in TWINS] == ["cython", "python"]


@pytest.mark.parametrize("name,mod", TWINS)
def test_format_is_uuid4(name, mod):
    for _ in range(2000):
        s = mod.new_request_id()
        assert UUID4.fullmatch(s), s
        u = uuid.UUID(s)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == s


@pytest.mark.parametrize("name,mod", TWINS)
def test_unique_and_spread(name, mod):
    ids = [mod.new_request_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    # every hex digit position that is random takes many values (a stuck word would not)
    for pos in (0, 7, 9, 15, 20, 35):
        assert len({s[pos] for s in ids[:2000]}) == 16, pos


@pytest.mark.parametrize("name,mod", TWINS)
def test_forked_child_draws_its_own(name, mod):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:    # pragma: no cover - the child
        try:
            os.write(w, ",".join(mod.new_request_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(w)
    mine = [mod.new_request_id() for _ in range(5)]
    with os.fdopen(r) as f:
        child = f.read().split(",")
    os.waitpid(pid, 0)
    assert len(child) == 5 and all(UUID4.fullmatch(s) for s in child)
    assert not set(child) & set(mine)


@pytest.mark.parametrize("name,mod", TWINS)
def test_seed_changes_the_sequence(name, mod):
    a = mod.new_request_id()
    mod.seed()
    assert mod.new_request_id() != a
