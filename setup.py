"""Build the gwcore Cython extensions.

One Extension per .pyx (httptools' habit), and one per pure-Python-mode module (a .py
with an augmenting .pxd: gwcore/http1.py). When Cython or a compiler is missing the
pure-Python twins are used at run time, so the build does not fail hard unless
GWCORE_REQUIRE_EXT=1 is set. GWCORE_DEBUG=1 adds annotate HTML and line tracing.
"""
import glob
import os

from setuptools import setup

ext_modules = []
try:
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("GWCORE_DEBUG") == "1"
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if debug else []
    exts = [
        Extension(
            "gwcore." + os.path.splitext(os.path.basename(p))[0],
            [p],
            define_macros=macros,
            extra_compile_args=["-O3"] if not debug else ["-O0", "-g"],
        )
        # .pyx modules, and pure-Python-mode modules (a .py with an augmenting .pxd)
        for p in sorted(glob.glob("gwcore/*.pyx")) + sorted(
            f for f in glob.glob("gwcore/*.py") if os.path.exists(f[:-3] + ".pxd") and not os.path.exists(f + "x"))
    ]
    directives = {"language_level": 3, "boundscheck": False, "wraparound": False}
    if debug:
        directives.update(linetrace=True, profile=True)
    ext_modules = cythonize(exts, compiler_directives=directives, annotate=debug)
except ImportError:
    if os.environ.get("GWCORE_REQUIRE_EXT") == "1":
        raise

setup(ext_modules=ext_modules)
