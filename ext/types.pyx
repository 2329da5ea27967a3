# cython: language_level=3
"""Python face of the shared enums declared in ``types.pxd``.

``cpdef enum`` makes each enum an ``IntEnum``-like class in this module, so
Python code, tests and the wire layer use the same names and values as the
Cython core.
"""
