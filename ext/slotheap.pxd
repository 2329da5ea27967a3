# cython: language_level=3
"""An indexed binary min-heap of int32 slots keyed by int64: the router's parked orders.

Each slot is in at most one heap at a time, and the caller keeps where it is
(``pos[slot]``, one array shared by all its heaps), so a slot can leave its
heap from anywhere in O(log n) when an event wakes it before its key is due.
Like ``idmap``, the functions are ``inline`` and defined here: no extension
module of its own.
"""
from cpython.mem cimport PyMem_Free
from libc.stdint cimport int32_t, int64_t

from ext.buffers cimport grow_buffer

ctypedef struct SlotHeap:
    int64_t* keys
    int32_t* slots
    int32_t n
    int32_t cap


cdef inline void slotheap_init(SlotHeap* h) noexcept nogil:
    h.keys = NULL
    h.slots = NULL
    h.n = h.cap = 0


cdef inline void slotheap_free(SlotHeap* h) noexcept:
    PyMem_Free(h.keys)
    PyMem_Free(h.slots)
    slotheap_init(h)


cdef inline void _slotheap_place(SlotHeap* h, int32_t at, int64_t key, int32_t slot,
                                 int32_t* pos) noexcept nogil:
    h.keys[at] = key
    h.slots[at] = slot
    pos[slot] = at


cdef inline void _slotheap_sift(SlotHeap* h, int32_t at, int32_t* pos) noexcept nogil:
    """Move the entry at ``at`` up or down to where its key belongs."""
    cdef int64_t key = h.keys[at]
    cdef int32_t slot = h.slots[at], parent, child
    while at > 0:
        parent = (at - 1) >> 1
        if h.keys[parent] <= key:
            break
        _slotheap_place(h, at, h.keys[parent], h.slots[parent], pos)
        at = parent
    while True:
        child = 2 * at + 1
        if child >= h.n:
            break
        if child + 1 < h.n and h.keys[child + 1] < h.keys[child]:
            child += 1
        if key <= h.keys[child]:
            break
        _slotheap_place(h, at, h.keys[child], h.slots[child], pos)
        at = child
    _slotheap_place(h, at, key, slot, pos)


cdef inline int slotheap_push(SlotHeap* h, int64_t key, int32_t slot, int32_t* pos) except -1:
    cdef Py_ssize_t cap
    if h.n == h.cap:
        # (Two arrays, one capacity: each grows from the old one; h.cap moves once both did.)
        cap = h.cap
        h.keys = <int64_t*>grow_buffer(h.keys, &cap, h.n + 1, sizeof(int64_t))
        cap = h.cap
        h.slots = <int32_t*>grow_buffer(h.slots, &cap, h.n + 1, sizeof(int32_t))
        h.cap = <int32_t>cap
    _slotheap_place(h, h.n, key, slot, pos)
    h.n += 1
    _slotheap_sift(h, h.n - 1, pos)
    return 0


cdef inline void slotheap_remove(SlotHeap* h, int32_t at, int32_t* pos) noexcept nogil:
    """Take out the entry at index ``at`` (``pos[slot]``; the top is 0)."""
    h.n -= 1
    if at < h.n:
        _slotheap_place(h, at, h.keys[h.n], h.slots[h.n], pos)
        _slotheap_sift(h, at, pos)
