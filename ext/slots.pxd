# cython: language_level=3
"""A Python object's slots read and written in place, at their member descriptors' offsets.

``engine.orders.Order`` and its children (msgspec structs) and the journal's writer
(``__slots__``) keep each field in a slot at a fixed offset, named by the class's member
descriptor. The compiled helpers (``orderstate``, ``journalframe``) take the offsets once,
at configuration, and then read and write the slots directly: a Python ``setattr`` on a
msgspec struct falls back to the generic one (130 instructions or more a field). The
caller checks the object's type before it touches a slot. The functions are ``inline``
and defined here, so every module that cimports them compiles its own copy; there is no
``slots`` extension module.
"""
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member


cdef inline Py_ssize_t offset_of(object cls, str name) except -1:
    """The offset of ``cls``'s slot ``name``; TypeError if it is not a slot."""
    member = getattr(cls, name)
    if type(member).__name__ != "member_descriptor":
        raise TypeError(f"{cls.__name__}.{name} is not a slot")
    return (<PyMemberDescrObject*><PyObject*>member).d_member.offset


cdef inline PyObject* slot_ptr(object obj, Py_ssize_t offset) noexcept:
    """The slot at ``offset``, borrowed (NULL: never set)."""
    return (<PyObject**>(<char*><PyObject*>obj + offset))[0]


cdef inline object slot(object obj, Py_ssize_t offset, str name):
    """The slot at ``offset`` as a new reference; AttributeError(name) if never set."""
    cdef PyObject* value = slot_ptr(obj, offset)
    if value == NULL:
        raise AttributeError(name)
    return <object>value


cdef inline void slot_set(object obj, Py_ssize_t offset, object value):
    """Set the slot at ``offset`` to ``value`` (its old value released)."""
    cdef PyObject** at = <PyObject**>(<char*><PyObject*>obj + offset)
    cdef PyObject* old = at[0]
    Py_INCREF(value)
    at[0] = <PyObject*>value
    Py_XDECREF(old)
