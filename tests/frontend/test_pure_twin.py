"""The front end's pure-Python twin (gwcore/http1.py run uncompiled) passes the same tests.

gwcore.http1 is compiled from the very same source in Cython's pure-Python mode, with C
types from gwcore/http1.pxd; GWCORE_PURE=1 makes every gateway the tests start use the
uncompiled module instead.
"""
import os

import pytest

import gwcore
from tests.helpers import assert_suite_passes_pure


def test_twins_are_both_importable_and_distinct():
    kinds = dict(gwcore.twins("http1"))
    assert "python" in kinds
    assert kinds["python"].__file__.endswith("_http1_py.py")
    assert kinds["python"].Connection is not getattr(kinds.get("cython"), "Connection", None)
    if os.environ.get("CI") == "true":
        # CI builds the extensions: the compiled one must be there and be used by default
        assert "cython" in kinds
        assert gwcore.load("http1").__file__.endswith(".so")


@pytest.mark.slow
def test_front_end_suite_passes_on_the_pure_twin():
    assert_suite_passes_pure("tests/frontend/test_http1.py")
