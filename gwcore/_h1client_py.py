"""Pure-Python twin of gwcore.h1client: the very same source (gwcore/h1client.py), run uncompiled.

h1client is written in Cython's pure-Python mode (C types come from h1client.pxd at compile
time), so there is one source to keep right; this module only makes the uncompiled run
importable under the twin's name, as gwcore.load() expects.
"""
import os as _os

_path = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "h1client.py")
with open(_path, encoding="utf-8") as _f:
    exec(compile(_f.read(), _path, "exec"), globals())  # noqa: S102 - our own source file
