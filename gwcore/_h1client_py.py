"""Pure-Python twin of gwcore.h1client: the very same source (gwcore/h1client.py), run uncompiled.

h1client is written in Cython's pure-Python mode (C types come from h1client.pxd at compile
time), so there is one source to keep right; this module only makes the uncompiled run
importable under the twin's name, as gwcore.load() expects.
"""
from gwcore import exec_source as _exec_source

_exec_source("h1client", globals())
