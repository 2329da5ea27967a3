# cython: language_level=3
"""Growing a ``PyMem`` array by doubling: the one way the simulator's loop, its dark
pool and the router's parked-order heaps make room.

The function is ``inline`` and defined here, so every core that cimports it
compiles its own copy; there is no ``buffers`` extension module.
"""
from cpython.mem cimport PyMem_Realloc


cdef inline void* grow_buffer(void* ptr, Py_ssize_t* cap, Py_ssize_t need,
                              size_t item) except NULL:
    """Grow a PyMem buffer by doubling until it holds ``need`` items.

    ``cap[0]`` is the buffer's capacity in items (0 with ``ptr`` NULL, for the
    first call): it is updated only when the buffer is reallocated, so on a
    ``MemoryError`` the caller's buffer and capacity are as they were.
    """
    cdef Py_ssize_t new_cap = cap[0] if cap[0] > 0 else 16
    cdef void* out
    if need <= cap[0] and ptr != NULL:
        return ptr
    while new_cap < need:
        new_cap *= 2
    out = PyMem_Realloc(ptr, new_cap * item)
    if out == NULL:
        raise MemoryError()
    cap[0] = new_cap
    return out
