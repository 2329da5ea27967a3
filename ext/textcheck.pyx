# cython: language_level=3, boundscheck=False, wraparound=False
"""Syntax of the wire's text fields, checked in C after msgspec has decoded a request.

msgspec checks a ``Meta(pattern=...)`` with Python's ``re`` (``re.search``),
about 3,700 instructions per field; a new order has five such fields, which
made the patterns 6% of an order's whole path through the engine. The
languages are simple enough to check by hand in a single pass over the
string's bytes. One bug went with the patterns: ``$`` also matches before a
final newline, so ``"abc\\n"`` passed as a ``cl_ord_id`` and ``"10\\n"`` as a
quantity; here the whole string must match.

The reference for every kind is ``re.fullmatch`` of the pattern in
:data:`PATTERNS` (the property tests compare the two).
"""

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    const unsigned char* PyUnicode_1BYTE_DATA(object text)

#: The regular expression each kind stands for (documentation and tests).
PATTERNS = {
    TEXT_ID: r"[\x21-\x7e]{1,64}",
    TEXT_SYMBOL: r"[\x21-\x7e]{1,32}",
    TEXT_POSITIVE_DECIMAL: r"(?=[0-9.]*[1-9])[0-9]{1,20}(\.[0-9]{1,18})?",
    TEXT_DECIMAL: r"[0-9]{1,20}(\.[0-9]{1,18})?",
}


cdef inline bint _token(const unsigned char* s, Py_ssize_t n, Py_ssize_t max_len) noexcept nogil:
    cdef Py_ssize_t i
    if n < 1 or n > max_len:
        return False
    for i in range(n):
        if s[i] < 0x21 or s[i] > 0x7e:
            return False
    return True


cdef inline bint _decimal(const unsigned char* s, Py_ssize_t n, bint positive) noexcept nogil:
    cdef Py_ssize_t i = 0, whole, frac
    cdef bint nonzero = False
    cdef unsigned char c
    while i < n and s[i] >= 0x30 and s[i] <= 0x39:
        nonzero |= s[i] != 0x30
        i += 1
    whole = i
    if whole < 1 or whole > 20:
        return False
    if i == n:
        return nonzero or not positive
    if s[i] != 0x2e:  # '.'
        return False
    i += 1
    while i < n and s[i] >= 0x30 and s[i] <= 0x39:
        nonzero |= s[i] != 0x30
        i += 1
    frac = i - whole - 1
    if i != n or frac < 1 or frac > 18:
        return False
    return nonzero or not positive


cpdef bint matches(str text, int kind) except -1:
    """Whether ``text`` is in the language of ``kind`` (a :class:`TextKind`), all of it."""
    if not PyUnicode_IS_ASCII(text):
        return False  # every kind is ASCII; any other character fails
    cdef const unsigned char* s = PyUnicode_1BYTE_DATA(text)
    cdef Py_ssize_t n = len(text)
    if kind == TEXT_ID:
        return _token(s, n, 64)
    if kind == TEXT_SYMBOL:
        return _token(s, n, 32)
    if kind == TEXT_POSITIVE_DECIMAL:
        return _decimal(s, n, True)
    if kind == TEXT_DECIMAL:
        return _decimal(s, n, False)
    raise ValueError(f"unknown text kind {kind}")


cpdef Py_ssize_t first_bad_field(object msg, tuple spec) except -2:
    """Index in ``spec`` of ``msg``'s first text field that breaks its syntax, or -1.

    ``spec`` is a tuple of ``(field name, TextKind)`` pairs; a field that is
    ``None`` (optional and absent) passes.
    """
    cdef Py_ssize_t i
    cdef object value
    for i in range(len(spec)):
        name, kind = <tuple>spec[i]
        value = getattr(msg, name)
        if value is not None and not matches(value, kind):
            return i
    return -1
