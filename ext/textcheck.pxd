# cython: language_level=3
"""Syntax of the wire's text fields (ids, symbols, decimal strings), checked in C."""

cpdef enum TextKind:
    # 1 to 64 printable ASCII characters without spaces (0x21-0x7e)
    TEXT_ID = 0
    # 1 to 32 of the same
    TEXT_SYMBOL = 1
    # digits{1,20} ( "." digits{1,18} )?, at least one digit non-zero
    TEXT_POSITIVE_DECIMAL = 2
    # the same, zero allowed
    TEXT_DECIMAL = 3

cpdef bint matches(str text, int kind) except -1
cpdef Py_ssize_t first_bad_field(object msg, tuple spec) except -2
