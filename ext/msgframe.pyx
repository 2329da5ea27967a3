"""The engine's messages as msgpack, compiled: msgspec's bytes, written from the struct's slots.

Every order sends two execution reports or more, each numbered with its
session's ``seq`` (``engine.intake.Session.send``), and journals two
records or more (``engine.journal.JournalWriter.append_msg``). In Python
a numbered message was a copy of the struct (``msgspec.structs.replace``,
24 fields for an execution report) and msgspec's encoding of the copy,
which writes every field name as a string it measures and copies each time.
Here a struct's fields are read where msgspec keeps them (each field is a
slot at a fixed offset, named by its member descriptor), field names and
the tag are bytes prepared once per struct type, values are written with C
stores into one buffer, and a numbered message gets its ``seq`` in place of
its own: no copy of the struct is made.

The bytes are msgspec's (``msgspec.msgpack.encode(msg)``, and of
``replace(msg, seq=seq)`` for :meth:`FrameEncoder.stamped`; the tests check
both over random values): a map with the tag first, then every field in
``__struct_encode_fields__`` order. Only what that plain layout covers is
written here: str, int (an IntEnum by its int value, as msgspec writes it),
bool, None, ``msgspec.Raw`` (its bytes as they are) and nested structs of the
same kind, in structs without ``array_like`` or ``omit_defaults``. Anything
else (a list, bytes, an int past 64 bits, a str subclass) sends the whole
message to msgspec, so the output never depends on which of the two wrote it.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy

import enum

import msgspec


cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        pass
    PyTypeObject* Py_TYPE(PyObject* o)
    bint PyUnicode_IS_COMPACT_ASCII(PyObject* o)
    void* PyUnicode_DATA(PyObject* o)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* o)
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    bint PyLong_CheckExact(PyObject* o)
    bint PyLong_Check(PyObject* o)
    bint PyUnicode_CheckExact(PyObject* o)
    PyObject** PySequence_Fast_ITEMS(object o)
    bint PyBool_Check(PyObject* o)
    # Declared here without Cython's error check: a str that has no UTF-8 (a lone
    # surrogate) is left to msgspec, which says what is wrong with it.
    const char* PyUnicode_AsUTF8AndSize(PyObject* o, Py_ssize_t* size)
    long long PyLong_AsLongLongAndOverflow(PyObject* o, int* overflow)
    PyObject* Py_None
    PyObject* Py_True


# An int that fits one digit of CPython's representation (below 2**30 in size: the enums,
# quantities and flags of a message) read in place: PyLong_AsLongLongAndOverflow is a call
# of about 25 instructions, and a report has half a dozen such fields.
cdef extern from *:
    """
    static inline int kronos_compact_int(PyObject* o, long long* out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject*)o)) return 0;
        *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
        return 1;
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size == 0) { *out = 0; return 1; }
        if (size == 1) { *out = (long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        if (size == -1) { *out = -(long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        return 0;
    #endif
    }
    """
    bint kronos_compact_int(PyObject* o, long long* out) noexcept nogil


# A field's key and a short string's text copied inline: each is a few bytes, and a call
# of memcpy for each (about 150 a report) cost more than the copy. Overlapping loads
# and stores of 8 or 4 bytes cover any length up to 16 without writing past it.
cdef extern from *:
    """
    static inline void kronos_copy(char* dst, const char* src, Py_ssize_t n) {
        if (n > 16) { memcpy(dst, src, (size_t)n); return; }
        if (n >= 8) {
            uint64_t a, b;
            memcpy(&a, src, 8); memcpy(&b, src + n - 8, 8);
            memcpy(dst, &a, 8); memcpy(dst + n - 8, &b, 8);
        } else if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, src, 4); memcpy(&b, src + n - 4, 4);
            memcpy(dst, &a, 4); memcpy(dst + n - 4, &b, 4);
        } else if (n > 0) {
            dst[0] = src[0]; dst[n / 2] = src[n / 2]; dst[n - 1] = src[n - 1];
        }
    }
    """
    void kronos_copy(char* dst, const char* src, Py_ssize_t n) noexcept nogil


cdef enum:
    MAX_FIELDS = 64
    MAX_DEPTH = 8       # structs within structs: the engine's go two deep
    INITIAL_CAPACITY = 1024
    CACHED_TYPES = 8    # the message types an encoder sees: a report, a record, a request


cdef int64_t _TWO31 = (<int64_t>1) << 31
cdef int64_t _TWO32 = (<int64_t>1) << 32

cdef object _replace = msgspec.structs.replace
cdef PyTypeObject* _raw_type = <PyTypeObject*>msgspec.Raw


cdef inline char* _put_be(char* p, uint64_t v, int nbytes) noexcept nogil:
    cdef int i
    for i in range(nbytes):
        p[i] = <char>((v >> (8 * (nbytes - 1 - i))) & 0xFF)
    return p + nbytes


cdef inline char* _put_str_header(char* p, Py_ssize_t n) noexcept nogil:
    if n < 32:
        p[0] = <char>(0xA0 | n)
        return p + 1
    if n < 0x100:
        p[0] = <char>0xD9
        return _put_be(p + 1, n, 1)
    if n < 0x10000:
        p[0] = <char>0xDA
        return _put_be(p + 1, n, 2)
    p[0] = <char>0xDB
    return _put_be(p + 1, n, 4)


cdef inline char* _put_int(char* p, int64_t x) noexcept nogil:
    # msgspec's choice: the shortest form, an unsigned one for x >= 0.
    if x < 0:
        if x >= -32:
            p[0] = <char>(x & 0xFF)
            return p + 1
        if x >= -0x80:
            p[0] = <char>0xD0
            return _put_be(p + 1, <uint64_t>x, 1)
        if x >= -0x8000:
            p[0] = <char>0xD1
            return _put_be(p + 1, <uint64_t>x, 2)
        if x >= -_TWO31:
            p[0] = <char>0xD2
            return _put_be(p + 1, <uint64_t>x, 4)
        p[0] = <char>0xD3
        return _put_be(p + 1, <uint64_t>x, 8)
    if x < 0x80:
        p[0] = <char>x
        return p + 1
    if x < 0x100:
        p[0] = <char>0xCC
        return _put_be(p + 1, <uint64_t>x, 1)
    if x < 0x10000:
        p[0] = <char>0xCD
        return _put_be(p + 1, <uint64_t>x, 2)
    if x < _TWO32:
        p[0] = <char>0xCE
        return _put_be(p + 1, <uint64_t>x, 4)
    p[0] = <char>0xCF
    return _put_be(p + 1, <uint64_t>x, 8)


cdef bytes _packed_str(str text):
    """The msgpack of ``text`` (a field name, a tag)."""
    data = text.encode()
    cdef char head[5]
    cdef Py_ssize_t h = _put_str_header(head, len(data)) - head
    return PyBytes_FromStringAndSize(head, h) + data


cdef class _Layout:
    """How one struct type is written: its map's head (header, tag) and each field's key
    and slot offset, in msgspec's order; ``seq_at`` is the field ``seq``'s index (-1: none).

    ``keys`` holds the head, then every key, back to back (``key_at``, ``key_len``);
    ``fixed`` is the most a struct of the type takes but for its strings' text and nested
    structs (head, keys, a 9-byte value each). ``enum_type`` remembers per field the
    IntEnum type last found there, so that the next one costs a pointer compare.
    """

    cdef bytes keys
    cdef Py_ssize_t head_len
    cdef Py_ssize_t key_at[MAX_FIELDS]
    cdef Py_ssize_t key_len[MAX_FIELDS]
    cdef Py_ssize_t offsets[MAX_FIELDS]
    cdef PyTypeObject* enum_type[MAX_FIELDS]
    cdef Py_ssize_t count
    cdef Py_ssize_t seq_at
    cdef Py_ssize_t fixed


cdef object _layout_of(object cls):
    """The :class:`_Layout` of a msgspec struct type, or None for any other type and for a
    struct msgspec writes otherwise than this module does (see the module docstring)."""
    if not issubclass(cls, msgspec.Struct):
        return None
    config = cls.__struct_config__
    names = cls.__struct_encode_fields__
    fields = cls.__struct_fields__
    if config.array_like or config.omit_defaults or len(fields) > MAX_FIELDS:
        return None
    if config.tag is not None and not isinstance(config.tag, str):
        return None  # (an int tag: not the engine's, left to msgspec)
    cdef _Layout layout = _Layout()
    cdef Py_ssize_t entries = len(fields) + (1 if config.tag is not None else 0)
    if entries < 16:
        head = bytes((0x80 | entries,))
    else:
        head = bytes((0xDE, entries >> 8, entries & 0xFF))
    if config.tag is not None:
        head += _packed_str(config.tag_field) + _packed_str(config.tag)
    layout.head_len = len(head)
    keys = [_packed_str(name) for name in names]
    layout.keys = head + b"".join(keys)
    layout.count = len(fields)
    layout.seq_at = fields.index("seq") if "seq" in fields else -1
    layout.fixed = len(layout.keys) + 9 * len(fields)
    at = len(head)
    for i, field in enumerate(fields):
        layout.key_at[i], layout.key_len[i] = at, len(keys[i])
        at += len(keys[i])
        layout.enum_type[i] = NULL
        member = cls.__dict__.get(field)
        if member is None:
            member = getattr(cls, field, None)
        if type(member).__name__ != "member_descriptor":
            return None
        layout.offsets[i] = (<PyMemberDescrObject*><PyObject*>member).d_member.offset
    return layout


# (final: its cdef methods are called directly, not through the type's vtable, and the
# C compiler may inline the small ones, ``_room`` and ``_layout``, into the field loop)
@cython.final
cdef class FrameEncoder:
    """msgspec's msgpack of the engine's messages, written in C where their layout allows
    (see the module docstring); ``encode`` (a ``msgspec.msgpack.Encoder``'s) writes the rest.

    Not thread-safe: one per thread, as msgspec's encoders (it reuses one buffer).
    """

    cdef dict _layouts
    cdef dict _int_enums
    cdef object _encode
    cdef char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _len
    # The last types seen and their layouts (None: not writable here), ahead of
    # the dict: a dict lookup per struct cost more than the rest of a small one.
    cdef PyTypeObject* _seen[CACHED_TYPES]
    cdef object _seen_layouts
    cdef Py_ssize_t _next_seen

    def __cinit__(self):
        self._buf = <char*>PyMem_Malloc(INITIAL_CAPACITY)
        if self._buf == NULL:
            raise MemoryError()
        self._cap = INITIAL_CAPACITY

    def __dealloc__(self):
        PyMem_Free(self._buf)

    def __init__(self, encode):
        self._layouts = {}
        self._int_enums = {}
        self._encode = encode
        self._seen_layouts = [None] * CACHED_TYPES
        self._next_seen = 0

    def encode(self, msg):
        """``msg`` as msgpack (bytes)."""
        self._len = 0
        if self._write(<PyObject*>msg, -1, 0):
            return PyBytes_FromStringAndSize(self._buf, self._len)
        return self._encode(msg)

    def stamped(self, msg, int64_t seq):
        """``msg`` as msgpack with ``seq`` in place of its own (``msg`` keeps its own)."""
        self._len = 0
        if seq >= 0 and self._write(<PyObject*>msg, seq, 0):
            return PyBytes_FromStringAndSize(self._buf, self._len)
        return self._encode(_replace(msg, seq=seq))

    def writes_as(self, msg, bytes data not None):
        """Whether ``data`` is exactly ``encode(msg)``: msgspec's msgpack of ``msg``, every
        map a struct's (or a dict's) and so no key in it twice. Intake asks it of each
        request and its frame (see ``engine.intake``); no bytes object is made here."""
        self._len = 0
        if self._write(<PyObject*>msg, -1, 0):
            return self._len == PyBytes_GET_SIZE(data) and \
                memcmp(self._buf, PyBytes_AS_STRING(data), self._len) == 0
        return self._encode(msg) == data

    def encode_as(self, cls, tuple values not None):
        """The msgpack of ``cls(**dict(zip(cls.__struct_fields__, values)))``, written without
        making the struct: ``values`` are its fields, all of them, in definition order.

        The journal's records are structs made only to be encoded (``JournalCommand``, one
        an order: its making and freeing cost about as much as its writing). Written here
        when ``cls``'s layout and the values allow, as :meth:`encode` would write the struct;
        else the struct is made and handed to ``encode``'s fallback.
        """
        cdef _Layout layout = self._layout(<PyTypeObject*>cls) if isinstance(cls, type) else None
        if layout is not None and len(values) != layout.count:
            raise TypeError(f"{cls.__name__} has {layout.count} fields, got {len(values)} values")
        self._len = 0
        if layout is not None and self._write_fields(
                layout, NULL, PySequence_Fast_ITEMS(values), -1, 0):
            return PyBytes_FromStringAndSize(self._buf, self._len)
        return self._encode(cls(**dict(zip(cls.__struct_fields__, values, strict=True))))

    cdef _Layout _layout(self, PyTypeObject* t):
        cdef Py_ssize_t k
        for k in range(CACHED_TYPES):
            if self._seen[k] == t:
                return <_Layout>(<list>self._seen_layouts)[k]
        cls = <object>t
        layout = self._layouts.get(cls, self)
        if layout is self:  # (the encoder itself: not looked at yet)
            layout = self._layouts[cls] = _layout_of(cls)
        # (Held by the dict, as its type is by the layout's keys there.)
        k = self._next_seen
        self._next_seen = (k + 1) % CACHED_TYPES
        self._seen[k] = t
        (<list>self._seen_layouts)[k] = layout
        return <_Layout>layout

    cdef bint _is_int_enum(self, _Layout layout, Py_ssize_t i, PyObject* value) except -1:
        """Whether msgspec writes int subclass ``value`` as its int: an IntEnum's int is its
        value. Asked once per type; the type is remembered at field ``i`` of ``layout``."""
        cls = <object>Py_TYPE(value)
        known = self._int_enums.get(cls)
        if known is None:
            known = self._int_enums[cls] = issubclass(cls, enum.IntEnum)
        if known:
            layout.enum_type[i] = Py_TYPE(value)  # (held by _int_enums)
        return known

    cdef char* _room(self, Py_ssize_t n) except NULL:
        """Where the next ``n`` bytes go, the buffer grown if need be."""
        cdef Py_ssize_t need = self._len + n
        cdef Py_ssize_t cap = self._cap
        cdef char* grown
        if need > cap:
            while cap < need:
                cap *= 2
            grown = <char*>PyMem_Realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf, self._cap = grown, cap
        return self._buf + self._len

    cdef bint _write(self, PyObject* msg, int64_t seq, int depth) except -1:
        """Append struct ``msg`` (``seq`` >= 0: stamped with it); False: not writable here."""
        if depth >= MAX_DEPTH:
            return False
        cdef _Layout layout = self._layout(Py_TYPE(msg))
        if layout is None or (seq >= 0 and layout.seq_at < 0):
            return False
        return self._write_fields(layout, <char*>msg, NULL, seq, depth)

    cdef bint _write_fields(self, _Layout layout, char* base, PyObject** items, int64_t seq,
                            int depth) except -1:
        """Append a struct of ``layout`` whose field ``i`` is in its slot at ``base`` or, with
        ``items``, is ``items[i]`` (:meth:`encode_as`); False: not writable here."""
        # Room for all but the strings' text and nested structs, at once.
        cdef char* p = self._room(layout.fixed)
        cdef const char* keys = PyBytes_AS_STRING(layout.keys)
        memcpy(p, keys, layout.head_len)
        p += layout.head_len
        cdef PyObject* value
        cdef const char* text
        cdef Py_ssize_t i, n
        cdef int overflow
        cdef long long small
        for i in range(layout.count):
            kronos_copy(p, keys + layout.key_at[i], layout.key_len[i])
            p += layout.key_len[i]
            if i == layout.seq_at and seq >= 0:
                p = _put_int(p, seq)
                continue
            value = items[i] if items != NULL else (<PyObject**>(base + layout.offsets[i]))[0]
            if value == NULL:
                return False
            if value == Py_None:
                p[0] = <char>0xC0
                p += 1
            elif PyUnicode_CheckExact(value):
                if PyUnicode_IS_COMPACT_ASCII(value):
                    text, n = <const char*>PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value)
                else:
                    text = PyUnicode_AsUTF8AndSize(value, &n)
                    if text == NULL:
                        PyErr_Clear()
                        return False
                if n > 4:  # (4 of the value's 9 bytes reserved: the header's most)
                    self._len = p - self._buf
                    p = self._room(n + 5 + (layout.fixed - layout.key_at[i]))
                p = _put_str_header(p, n)
                kronos_copy(p, text, n)
                p += n
            elif PyBool_Check(value):
                p[0] = <char>(0xC3 if value == Py_True else 0xC2)
                p += 1
            elif PyLong_CheckExact(value) or (PyLong_Check(value) and (
                    Py_TYPE(value) == layout.enum_type[i] or self._is_int_enum(layout, i, value))):
                if not kronos_compact_int(value, &small):
                    overflow = 0
                    small = PyLong_AsLongLongAndOverflow(value, &overflow)
                    if overflow != 0:
                        return False  # (past int64: msgspec writes a uint64 or refuses)
                p = _put_int(p, small)
            elif Py_TYPE(value) == _raw_type:
                # Bytes that are msgpack already (a request's frame in its journal record),
                # written as they are, as msgspec writes a Raw.
                self._len = p - self._buf
                self._put_raw(value)
                p = self._room(layout.fixed - layout.key_at[i])
            else:
                self._len = p - self._buf
                if not self._write(value, -1, depth + 1):
                    return False
                p = self._room(layout.fixed - layout.key_at[i])
        self._len = p - self._buf
        return True

    cdef int _put_raw(self, PyObject* raw) except -1:
        """Append the bytes a ``msgspec.Raw`` holds."""
        cdef Py_buffer view
        PyObject_GetBuffer(<object>raw, &view, PyBUF_SIMPLE)
        try:
            memcpy(self._room(view.len), view.buf, view.len)
            self._len += view.len
        finally:
            PyBuffer_Release(&view)
        return 0
