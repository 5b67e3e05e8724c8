"""Pure-Python twin of gwcore.http1: the very same source (gwcore/http1.py), run uncompiled.

http1 is written in Cython's pure-Python mode (C types come from http1.pxd at compile
time), so there is one source to keep right; this module only makes the uncompiled run
importable under the twin's name, as gwcore.load() expects.
"""
from gwcore import exec_source as _exec_source

_exec_source("http1", globals())
