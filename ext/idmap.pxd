# cython: language_level=3
"""A map from positive int64 ids to int32 slots: the book's and the router's id index.

Open addressing with linear probing, load kept at or below one half, and
backward-shift deletion (no tombstones, so lookups never slow down as ids
come and go). The functions are ``inline`` and defined here, so every module
that cimports them compiles its own copy and the lookups stay inlined in its
hot loops; there is no ``idmap`` extension module.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memset

ctypedef struct IdMap:
    int64_t* keys             # 0: empty slot (ids are positive)
    int32_t* vals
    int64_t mask              # slots - 1; slots is a power of two
    int64_t used


cdef inline uint64_t idmap_hash(int64_t key) noexcept nogil:
    # Fibonacci hashing: sequential ids (the common case) spread evenly.
    cdef uint64_t x = (<uint64_t>key) * <uint64_t>0x9E3779B97F4A7C15
    return x ^ (x >> 29)


cdef inline int idmap_init(IdMap* m, int64_t slots) except -1:
    """Allocate ``slots`` (a power of two) empty slots; ``m`` is untouched on failure."""
    cdef int64_t* keys = <int64_t*>PyMem_Malloc(slots * sizeof(int64_t))
    cdef int32_t* vals = <int32_t*>PyMem_Malloc(slots * sizeof(int32_t))
    if keys == NULL or vals == NULL:
        PyMem_Free(keys)
        PyMem_Free(vals)
        raise MemoryError()
    memset(keys, 0, slots * sizeof(int64_t))
    m.keys, m.vals, m.mask, m.used = keys, vals, slots - 1, 0
    return 0


cdef inline void idmap_free(IdMap* m) noexcept:
    PyMem_Free(m.keys)
    PyMem_Free(m.vals)
    m.keys = NULL
    m.vals = NULL


cdef inline int32_t idmap_get(IdMap* m, int64_t key) noexcept nogil:
    """The slot of ``key``, or -1."""
    cdef int64_t i = <int64_t>(idmap_hash(key) & <uint64_t>m.mask)
    cdef int64_t k
    while True:
        k = m.keys[i]
        if k == key:
            return m.vals[i]
        if k == 0:
            return -1
        i = (i + 1) & m.mask


cdef inline int idmap_put(IdMap* m, int64_t key, int32_t val) except -1:
    """Insert ``key`` (not present); doubles the table first when it would pass half full."""
    cdef IdMap grown
    cdef int64_t i
    if (m.used + 1) * 2 > m.mask + 1:
        idmap_init(&grown, (m.mask + 1) * 2)  # on MemoryError the map is unchanged
        for i in range(m.mask + 1):
            if m.keys[i] != 0:
                idmap_put(&grown, m.keys[i], m.vals[i])
        idmap_free(m)
        m[0] = grown
    i = <int64_t>(idmap_hash(key) & <uint64_t>m.mask)
    while m.keys[i] != 0:
        i = (i + 1) & m.mask
    m.keys[i] = key
    m.vals[i] = val
    m.used += 1
    return 0


cdef inline void idmap_set(IdMap* m, int64_t key, int32_t val) noexcept nogil:
    """Point ``key`` (present) at ``val``."""
    cdef int64_t i = <int64_t>(idmap_hash(key) & <uint64_t>m.mask)
    while m.keys[i] != key:
        i = (i + 1) & m.mask
    m.vals[i] = val


cdef inline void idmap_del(IdMap* m, int64_t key) noexcept nogil:
    """Remove ``key`` if present."""
    cdef int64_t mask = m.mask
    cdef int64_t i = <int64_t>(idmap_hash(key) & <uint64_t>mask)
    cdef int64_t j, home
    while m.keys[i] != key:
        if m.keys[i] == 0:
            return
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if m.keys[j] == 0:
            break
        home = <int64_t>(idmap_hash(m.keys[j]) & <uint64_t>mask)
        # Move keys[j] into the hole unless its home lies cyclically in (i, j].
        if ((j - home) & mask) >= ((j - i) & mask):
            m.keys[i] = m.keys[j]
            m.vals[i] = m.vals[j]
            i = j
    m.keys[i] = 0
    m.used -= 1
