# cython: language_level=3, boundscheck=False, wraparound=False
"""Duplicate keys in msgpack maps, found in one pass over the bytes.

msgpack allows a map to hold a key twice, and msgspec, like most decoders,
keeps the last value: ``{"qty": "1", "qty": "1000"}`` decodes as an order
for 1000. A sender whose encoder wrote both meant one of them, and the engine
cannot know which; FIX refuses a tag that appears twice for the same reason.
So intake looks for a repeated key in every map of a request (a bulk's orders
included) and refuses the message naming it.

The walk only reads: it bounds every read by the data's end and gives up
(returns None) on bytes that are not msgpack or nest deeper than
:data:`MAX_DEPTH`, which the decoder refuses on its own. String keys are
compared by their text, whatever string form carries it (a ``fixstr`` and a
``str8`` of one text are one field to the decoder); other keys by their bytes.
Maps of any size are walked.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

#: Deepest nesting walked (maps and arrays); a request nests three deep.
MAX_DEPTH = 32
DEF _MAX_DEPTH = 32
# Keys of a map compared with tables on the stack: a request has about 25
# fields; a bigger map (a reload's accounts) takes a table from the heap.
DEF _MAX_KEYS = 64
# Open addressing over the keys of one map: twice as many slots as keys, so a
# probe is about one step (a pairwise test of 25 keys cost 2,400 instructions).
DEF _SLOTS = 128

cdef struct _Walk:
    const unsigned char* data
    Py_ssize_t end
    Py_ssize_t pos
    # Where a duplicate was found: the key's bytes, and the path to its map.
    Py_ssize_t dup_key, dup_key_len
    int depth_found
    # Per level on the way down: the map key (offset, length) or array index.
    Py_ssize_t path_key[_MAX_DEPTH]
    Py_ssize_t path_len[_MAX_DEPTH]  # -1: an array index in path_key


cdef inline bint _read_be(_Walk* w, int n, unsigned long long* out) noexcept nogil:
    cdef unsigned long long v = 0
    cdef int i
    if w.pos + n > w.end:
        return False
    for i in range(n):
        v = (v << 8) | w.data[w.pos + i]
    w.pos += n
    out[0] = v
    return True


cdef inline bint _skip(_Walk* w, unsigned long long n) noexcept nogil:
    if n > <unsigned long long>(w.end - w.pos):
        return False
    w.pos += <Py_ssize_t>n
    return True


cdef int _value(_Walk* w, int depth) noexcept nogil:
    """Walk one value at ``w.pos``: 1 found a duplicate, 0 fine, -1 not msgpack (give up)."""
    cdef unsigned char b
    cdef unsigned long long n = 0
    if w.pos >= w.end:
        return -1
    b = w.data[w.pos]
    w.pos += 1
    if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
        return 0                                  # fixint, nil, bool
    if b <= 0x8f:
        return _map(w, b & 0x0f, depth)
    if b <= 0x9f:
        return _array(w, b & 0x0f, depth)
    if b <= 0xbf:
        return 0 if _skip(w, b & 0x1f) else -1    # fixstr
    if b == 0xc4 or b == 0xd9:                    # bin8, str8
        return 0 if _read_be(w, 1, &n) and _skip(w, n) else -1
    if b == 0xc5 or b == 0xda:
        return 0 if _read_be(w, 2, &n) and _skip(w, n) else -1
    if b == 0xc6 or b == 0xdb:
        return 0 if _read_be(w, 4, &n) and _skip(w, n) else -1
    if b == 0xc7:                                 # ext8/16/32: length, type, data
        return 0 if _read_be(w, 1, &n) and _skip(w, n + 1) else -1
    if b == 0xc8:
        return 0 if _read_be(w, 2, &n) and _skip(w, n + 1) else -1
    if b == 0xc9:
        return 0 if _read_be(w, 4, &n) and _skip(w, n + 1) else -1
    if b == 0xca or b == 0xce or b == 0xd2:
        return 0 if _skip(w, 4) else -1
    if b == 0xcb or b == 0xcf or b == 0xd3:
        return 0 if _skip(w, 8) else -1
    if b == 0xcc or b == 0xd0:
        return 0 if _skip(w, 1) else -1
    if b == 0xcd or b == 0xd1:
        return 0 if _skip(w, 2) else -1
    if b >= 0xd4 and b <= 0xd8:                   # fixext 1, 2, 4, 8, 16 (+ type)
        return 0 if _skip(w, (1 << (b - 0xd4)) + 1) else -1
    if b == 0xdc:
        return _array(w, n, depth) if _read_be(w, 2, &n) else -1
    if b == 0xdd:
        return _array(w, n, depth) if _read_be(w, 4, &n) else -1
    if b == 0xde:
        return _map(w, n, depth) if _read_be(w, 2, &n) else -1
    if b == 0xdf:
        return _map(w, n, depth) if _read_be(w, 4, &n) else -1
    return -1                                     # 0xc1: never used


cdef inline int _item(_Walk* w, int depth) noexcept nogil:
    """``_value``, with a map's usual items (short strings, small ints, nil, bools) read
    here: most of a request, and a call each would double the walk."""
    cdef unsigned char b
    cdef Py_ssize_t n
    if w.pos < w.end:
        b = w.data[w.pos]
        if 0xa0 <= b <= 0xbf:
            n = (b & 0x1f) + 1
            if n > w.end - w.pos:
                return -1
            w.pos += n
            return 0
        if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
            w.pos += 1
            return 0
    return _value(w, depth)


cdef int _array(_Walk* w, unsigned long long n, int depth) noexcept nogil:
    cdef unsigned long long i
    cdef int found
    if depth >= _MAX_DEPTH:
        return -1
    w.path_len[depth] = -1
    for i in range(n):
        w.path_key[depth] = <Py_ssize_t>i
        found = _value(w, depth + 1)
        if found:
            return found
    return 0


cdef inline uint64_t _head(const unsigned char* p, Py_ssize_t length) noexcept nogil:
    """A key's first 8 bytes (fewer for a shorter one, zero-padded): two keys that differ
    mostly differ there, so the pairwise test is two integer compares."""
    cdef uint64_t v = 0
    memcpy(&v, p, length if length < 8 else 8)
    return v


cdef inline Py_ssize_t _str_body(const unsigned char* p, Py_ssize_t length) noexcept nogil:
    """How many header bytes a string key has (its text follows), 0 for other keys.

    Keys are compared by their text: one text may come as a fixstr or as a
    str8/16/32, and the decoder takes both for one field.
    """
    cdef unsigned char b = p[0]
    if 0xa0 <= b <= 0xbf:
        return 1
    if b == 0xd9:
        return 2 if length >= 2 else 0
    if b == 0xda:
        return 3 if length >= 3 else 0
    if b == 0xdb:
        return 5 if length >= 5 else 0
    return 0


cdef int _map(_Walk* w, unsigned long long n, int depth) noexcept nogil:
    cdef Py_ssize_t keys_s[_MAX_KEYS]
    cdef Py_ssize_t lens_s[_MAX_KEYS]
    cdef uint64_t heads_s[_MAX_KEYS]
    cdef int32_t slots_s[_SLOTS]               # index into keys, -1 empty
    cdef Py_ssize_t* keys = keys_s
    cdef Py_ssize_t* lens = lens_s
    cdef uint64_t* heads = heads_s
    cdef int32_t* slots = slots_s
    cdef uint64_t head, mask = _SLOTS - 1, size = _SLOTS
    cdef unsigned long long i
    cdef Py_ssize_t start, length, body, slot
    cdef int32_t j
    cdef int found = 0
    cdef void* block = NULL
    if depth >= _MAX_DEPTH:
        return -1
    if n > _MAX_KEYS:
        # A big map (a reload's table of many accounts, or a request padded
        # with repeats to get past this check): every entry takes at least two
        # bytes, so the data bounds it; the table then lives on the heap.
        if n > <unsigned long long>(w.end - w.pos) // 2:
            return -1
        while size < 2 * n:
            size *= 2
        mask = size - 1
        block = malloc(n * (2 * sizeof(Py_ssize_t) + sizeof(uint64_t)) + size * sizeof(int32_t))
        if block == NULL:
            return -1
        keys = <Py_ssize_t*>block
        lens = keys + n
        heads = <uint64_t*>(lens + n)
        slots = <int32_t*>(heads + n)
    memset(slots, -1, size * sizeof(int32_t))
    for i in range(n):
        start = w.pos
        found = _item(w, depth + 1)               # the key (a map key of a map: walked too)
        if found:
            break
        length = w.pos - start
        body = _str_body(w.data + start, length)
        head = _head(w.data + start + body, length - body)
        slot = <Py_ssize_t>((((head ^ <uint64_t>(length - body)) * <uint64_t>0x9E3779B97F4A7C15)
                             >> 32) & mask)
        while slots[slot] >= 0:
            j = slots[slot]
            if heads[j] == head and lens[j] == length - body and \
                    memcmp(w.data + keys[j], w.data + start + body, length - body) == 0:
                w.dup_key, w.dup_key_len, w.depth_found = start, length, depth
                found = 1
                break
            slot = (slot + 1) & mask
        if found:
            break
        slots[slot] = <int32_t>i
        keys[i], lens[i], heads[i] = start + body, length - body, head
        w.path_key[depth], w.path_len[depth] = start, length
        found = _item(w, depth + 1)
        if found:
            break
    if block != NULL:
        free(block)
    return found


cdef str _key_text(const unsigned char* data, Py_ssize_t start, Py_ssize_t length):
    """A map key as text: its string decoded, else its msgpack bytes in hex."""
    cdef Py_ssize_t skip = _str_body(data + start, length)
    if skip:
        return (<bytes>data[start + skip:start + length]).decode("utf-8", "replace")
    return (<bytes>data[start:start + length]).hex()


cpdef object duplicate_key(bytes data):
    """The first key that a map of ``data`` holds twice, as ``(path, key)``; None if none.

    ``path`` names the map as the decoder's errors name fields (``"$"``,
    ``"$.orders[3]"``); ``key`` is the repeated key's text. None too for
    bytes that are not msgpack (or nest deeper than :data:`MAX_DEPTH`): the
    decoder says what is wrong with those.
    """
    cdef _Walk w
    cdef int level
    w.data = <const unsigned char*>PyBytes_AS_STRING(data)
    w.end = PyBytes_GET_SIZE(data)
    w.pos = 0
    w.depth_found = -1
    if _value(&w, 0) != 1:
        return None
    path = "$"
    for level in range(w.depth_found):
        if w.path_len[level] < 0:
            path += f"[{w.path_key[level]}]"
        else:
            path += "." + _key_text(w.data, w.path_key[level], w.path_len[level])
    return path, _key_text(w.data, w.dup_key, w.dup_key_len)
