# cython: language_level=3
"""Conversion of the Python API's integer arguments: enums and indices to a C int, 64-bit
numbers (timestamps, fees, latencies) to an int64.

A ``def`` parameter typed ``int`` lets Cython convert it, and Cython's C-int
conversion takes a float through ``__int__``: ``side=1.7`` became BUY, in
silence, and ``side=2**70`` raised an ``OverflowError`` that named no
argument; an ``int64_t`` parameter did the same (``run_until(2.7)`` ran to 2).
``small_arg`` and ``big_arg`` take what ``operator.index`` takes (ints, bools,
numpy integers) and refuse the rest with an error naming the argument. The
functions are ``inline`` and defined here, so every core that cimports them
compiles its own copy; there is no ``intarg`` extension module.
"""
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.number cimport PyNumber_Index
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdint cimport int64_t


cdef inline object _integer(object value, str field):
    """``value`` if it is an ``int``, else what its ``__index__`` gives; a ``TypeError``
    naming ``field`` for anything else (a float is never truncated)."""
    if PyLong_Check(value):
        return value
    try:
        return PyNumber_Index(value)
    except TypeError:
        raise TypeError(f"{field} must be an integer, not {type(value).__name__} "
                        f"({value!r})") from None


cdef inline int small_arg(object value, str field) except? -1:
    """``value`` as a C int, for the argument called ``field``.

    Parameters
    ----------
    value : object
        An integer: an ``int`` (a ``bool`` is one), a numpy integer, anything
        with ``__index__``.
    field : str
        The argument's name, for the error message.

    Returns
    -------
    int
        The value. Whether it is a known enum member is the caller's rule
        (the book answers an unknown side with ``INVALID_SIDE``).

    Raises
    ------
    TypeError
        If ``value`` is not an integer (a float, a Decimal, a string): never
        truncated.
    ValueError
        If it is beyond a C int, so it can be no member of any enum or index.
    """
    cdef int overflow = 0
    cdef long v
    value = _integer(value, field)
    # AsLongAndOverflow reports a value beyond a C long in ``overflow`` rather than raising
    # OverflowError, so one branch turns every out-of-range value into the same ValueError.
    v = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow or v < INT_MIN or v > INT_MAX:
        raise ValueError(f"{field} {value} is out of range (not a valid {field})")
    return <int>v


cdef inline int64_t big_arg(object value, str field) except? -1:
    """``value`` as an int64, for the argument called ``field``: as :func:`small_arg`
    (a ``TypeError`` for a non-integer), but for 64-bit numbers (timestamps, fees,
    latencies), whose range is the caller's rule; a ``ValueError`` naming ``field``
    beyond int64, where Cython's conversion raised an ``OverflowError`` that named no
    argument.
    """
    cdef int overflow = 0
    cdef long long v
    value = _integer(value, field)
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise ValueError(f"{field} {value} is out of range (beyond a 64-bit integer)")
    return <int64_t>v
