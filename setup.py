"""Build the Cython core (``ext/``).

Every ``ext/*.pyx`` is one extension module, so a new core module needs no
edit here. ``KRONOS_DEBUG=1`` builds with bounds checks and line tracing on
(``make debug``), for tests under a debugger or coverage; ``KRONOS_ONLY=book``
builds only the named modules.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from Cython.Compiler import Options
from setuptools import Extension, setup

DEBUG = os.environ.get("KRONOS_DEBUG") == "1"
ANNOTATE = os.environ.get("KRONOS_ANNOTATE") == "1"

directives = {
    "language_level": 3,
    "embedsignature": True,
    "cdivision": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "linetrace": DEBUG,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

# Cython warnings are errors: a silent type fallback is a bug here.
Options.warning_errors = True

# C libraries a module links against (Debian's -dev packages, installed by
# the Makefile): the journal's framing hashes with libsodium and libdeflate.
LIBRARIES = {"journalframe": ["sodium", "deflate"]}

extensions = [
    Extension(
        f"ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[numpy.get_include(), "ext"],
        libraries=LIBRARIES.get(pyx.stem, []),
        define_macros=macros,
        extra_compile_args=compile_args + ["-Wno-unused-function"],
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
    # KRONOS_ONLY=book,risk rebuilds just those modules while another is mid-edit.
    if not os.environ.get("KRONOS_ONLY") or pyx.stem in os.environ["KRONOS_ONLY"].split(",")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=ANNOTATE,
        # Annotation files are only written when Cython runs, so force it.
        force=ANNOTATE,
        nthreads=os.cpu_count() or 1,
    ),
)
