"""Pure-Python twin of gwcore.lane: the very same source (gwcore/lane.py), run uncompiled.

lane is written in Cython's pure-Python mode (C types come from lane.pxd at compile time),
so there is one source to keep right; this module only makes the uncompiled run importable
under the twin's name, as gwcore.load() expects.
"""
from gwcore import exec_source as _exec_source

_exec_source("lane", globals())
