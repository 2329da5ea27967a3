"""Journal record framing, compiled: the engine writes two or three records per order.

The record format belongs to ``engine/journal.py`` (and docs/journal.md):

    u32 payload length | u32 CRC-32 | u64 seq | i64 ts_ns | u16 kind | u16 0 |
    32-byte chain hash | payload

all little-endian. The CRC covers every byte of the record but itself (the
length, then bytes 8 to the end); the chain hash is BLAKE2b-256 over the
previous record's hash, bytes 8..28 and the payload.

In Python each record cost three struct packs, two joins, two CRC calls, a
hash object and three bytearray appends, each an interpreter round of its
own. Here the fields are written with C stores and one resize of the
output, and both digests are computed by C libraries called from C, over
the record's pieces where they lie (no joined copy): the CRC by
libdeflate's ``libdeflate_crc32`` (zlib's CRC-32, what Python's
``zlib.crc32`` computes, by carry-less multiplication where the CPU has
it: zlib's own table-driven one took 2% of an order's instructions) and
the BLAKE2b by
libsodium's ``crypto_generichash_blake2b``, which picks an AVX2 or SSE4.1
implementation for the CPU at ``sodium_init``. CPython's own BLAKE2b is the
portable reference code, which was 6% of an order's instructions; the
digests are the same bytes (the reader, ``kronos-exec journal verify`` and
the tests recompute them with ``hashlib`` and ``zlib``).
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp

from ext.slots cimport offset_of, slot, slot_set

import time as _time


cdef enum:
    HASH_SIZE = 32
    FIXED_SIZE = 20      # seq, ts_ns, kind, reserved: bytes 8..28 of the header
    HEADER_SIZE = 60

#: bytes before a record's payload
RECORD_HEADER_SIZE = HEADER_SIZE

cdef extern from "libdeflate.h" nogil:
    uint32_t libdeflate_crc32(uint32_t crc, const void* buffer, size_t len)


cdef extern from "sodium.h" nogil:
    ctypedef struct crypto_generichash_blake2b_state:
        pass
    int sodium_init()
    int crypto_generichash_blake2b_init(crypto_generichash_blake2b_state* state,
                                        const unsigned char* key, size_t keylen, size_t outlen)
    int crypto_generichash_blake2b_update(crypto_generichash_blake2b_state* state,
                                          const unsigned char* data, unsigned long long inlen)
    int crypto_generichash_blake2b_final(crypto_generichash_blake2b_state* state,
                                         unsigned char* out, size_t outlen)


# Picks the fastest BLAKE2b for this CPU (without it libsodium uses its
# portable code); 1 means another module had already called it.
if sodium_init() < 0:
    raise ImportError("libsodium failed to initialise")


cdef inline void _chain_digest(const unsigned char* prev_hash, const unsigned char* fixed,
                               const unsigned char* payload, size_t n,
                               unsigned char* out) noexcept nogil:
    """BLAKE2b-256 of prev_hash (32 bytes) | fixed (20 bytes) | payload, into ``out``."""
    cdef crypto_generichash_blake2b_state state
    crypto_generichash_blake2b_init(&state, NULL, 0, HASH_SIZE)
    crypto_generichash_blake2b_update(&state, prev_hash, HASH_SIZE)
    crypto_generichash_blake2b_update(&state, fixed, FIXED_SIZE)
    crypto_generichash_blake2b_update(&state, payload, n)
    crypto_generichash_blake2b_final(&state, out, HASH_SIZE)


cdef inline uint32_t _record_crc(const unsigned char* record, size_t n) noexcept nogil:
    """CRC-32 of a framed record of payload size ``n``: its length field, then bytes 8..end."""
    cdef uint32_t crc = libdeflate_crc32(0, record, 4)
    return libdeflate_crc32(crc, record + 8, HEADER_SIZE - 8 + n)



cdef inline void _put_u16(char* p, unsigned int v) noexcept nogil:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)


cdef inline void _put_u32(char* p, uint32_t v) noexcept nogil:
    cdef int i
    for i in range(4):
        p[i] = <char>((v >> (8 * i)) & 0xFF)


cdef inline void _put_u64(char* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <char>((v >> (8 * i)) & 0xFF)


cdef inline void _put_fixed(char* p, uint64_t seq, int64_t ts_ns, unsigned int kind) noexcept nogil:
    _put_u64(p, seq)
    _put_u64(p + 8, <uint64_t>ts_ns)
    _put_u16(p + 16, kind)
    _put_u16(p + 18, 0)


def frame_record(bytearray out, bytes prev_hash, uint64_t seq, int64_t ts_ns,
                 unsigned int kind, bytes payload):
    """Append one framed record to ``out``; returns its chain hash (32 bytes).

    Parameters
    ----------
    out : bytearray
        Grows by ``RECORD_HEADER_SIZE + len(payload)`` bytes.
    prev_hash : bytes
        The previous record's chain hash (32 bytes; zeros before the first).
    seq, ts_ns, kind : int
        The record's sequence number, timestamp (ns) and kind.
    payload : bytes
        The record body.
    """
    return _frame(out, prev_hash, seq, ts_ns, kind, b"", payload)


cdef bytes _frame(bytearray out, bytes prev_hash, uint64_t seq, int64_t ts_ns, unsigned int kind,
                  bytes head, bytes payload):
    # (frame_record's body: the appends below call it as C, not through a Python call.)
    # The record's payload is ``head`` then ``payload``, copied into place one after the
    # other: a sent frame's record is its session's envelope and the frame, not joined first.
    if out is None or prev_hash is None or head is None or payload is None:
        raise TypeError("out, prev_hash and payload must be given")
    if kind > 0xFFFF:  # (the header holds a u16: a larger one was written cut, in silence)
        raise ValueError(f"record kind {kind} does not fit the header's 16 bits")
    if PyBytes_GET_SIZE(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes, got {len(prev_hash)}")
    cdef Py_ssize_t h = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t n = h + PyBytes_GET_SIZE(payload)
    if n > 0xFFFFFFFF:
        raise ValueError(f"payload of {n} bytes does not fit a record")
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, start + HEADER_SIZE + n)
    cdef unsigned char* o = <unsigned char*>PyByteArray_AS_STRING(out) + start
    _put_u32(<char*>o, <uint32_t>n)
    _put_fixed(<char*>o + 8, seq, ts_ns, kind)
    memcpy(o + HEADER_SIZE, PyBytes_AS_STRING(head), h)
    memcpy(o + HEADER_SIZE + h, PyBytes_AS_STRING(payload), n - h)
    _chain_digest(<const unsigned char*>PyBytes_AS_STRING(prev_hash), o + 8, o + HEADER_SIZE, n,
                  o + 28)
    _put_u32(<char*>o + 4, _record_crc(o, n))
    return PyBytes_FromStringAndSize(<char*>o + 28, HASH_SIZE)


cdef inline uint32_t _get_u32(const unsigned char* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _get_u64(const unsigned char* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


def read_record(bytes data, Py_ssize_t offset, uint64_t expected_seq, bytes prev_hash,
                bint check_chain):
    """The record at ``offset`` of a segment's bytes, if it is whole and checks out.

    Returns ``(seq, ts_ns, kind, payload, hash, record_end)`` for a record
    whose header, length, CRC, sequence number (``expected_seq``; 0: any)
    and, with ``check_chain``, chain hash from ``prev_hash`` are all right;
    ``None`` for anything else (a short header, a length past the data, a bad
    checksum, sequence or chain), which the caller then examines itself to
    tell a torn tail from corruption. The reading path of a journal that is
    fine, in compiled code: readers, recovery and the gateways read every
    record this way.
    """
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    if offset < 0 or end - offset < HEADER_SIZE or PyBytes_GET_SIZE(prev_hash) != HASH_SIZE:
        return None
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data) + offset
    cdef uint32_t length = _get_u32(p)
    if <Py_ssize_t>length > end - offset - HEADER_SIZE:
        return None
    cdef uint64_t seq = _get_u64(p + 8)
    if expected_seq != 0 and seq != expected_seq:
        return None
    if _record_crc(p, length) != _get_u32(p + 4):
        return None
    cdef unsigned char digest[HASH_SIZE]
    if check_chain:
        _chain_digest(<const unsigned char*>PyBytes_AS_STRING(prev_hash), p + 8, p + HEADER_SIZE,
                      length, digest)
        if memcmp(digest, p + 28, HASH_SIZE) != 0:
            return None
    cdef bytes stored = PyBytes_FromStringAndSize(<const char*>p + 28, HASH_SIZE)
    cdef bytes payload = PyBytes_FromStringAndSize(<const char*>p + HEADER_SIZE, length)
    return (seq, <int64_t>_get_u64(p + 16), <unsigned int>(p[24] | (p[25] << 8)), payload, stored,
            offset + HEADER_SIZE + length)


# ---------------------------------------------------------------- the writer's appends
# ``JournalWriter.append`` and ``append_msg`` (engine/journal.py), three or four calls an
# order. In Python each was two method frames and six slot reads and three slot writes
# of the writer, about 1k instructions a record; here the writer's and its segment's
# slots (``__slots__``: each a member descriptor at a fixed offset) are read and written
# in place and the record framed by the code above. What is not the per-record path (a
# rotation, an unbuffered write and its sync) is the writer's own Python methods.

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        pass
    bint PyObject_TypeCheck(object o, PyTypeObject* t)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    Py_ssize_t PY_SSIZE_T_MAX
    Py_ssize_t PY_SSIZE_T_MIN


_WRITER_FIELDS = ("_closed", "_segment", "_out", "rotate_bytes", "buffered", "_last_seq",
                  "_last_hash", "_out_seq", "_encoder")
cdef enum:
    W_CLOSED, W_SEGMENT, W_OUT, W_ROTATE_BYTES, W_BUFFERED, W_LAST_SEQ, W_LAST_HASH, \
        W_OUT_SEQ, W_ENCODER, N_WRITER_FIELDS

cdef Py_ssize_t _w_offsets[N_WRITER_FIELDS]
cdef Py_ssize_t _size_offset = 0      # the segment's ``size``
cdef object _writer_cls = None
cdef object _segment_cls = None
cdef object _error = None              # JournalError, for a closed journal
cdef Py_ssize_t _max_payload = 0
cdef Py_ssize_t _file_header_size = 0


def configure_writer(writer_cls, segment_cls, error, Py_ssize_t max_payload,
                     Py_ssize_t file_header_size):
    """Set the writer's and its segment's types (their slots are read in place here), the
    error a closed journal raises and the format's limits (``engine.journal`` does, once)."""
    global _writer_cls, _segment_cls, _error, _max_payload, _file_header_size, _size_offset
    for i, name in enumerate(_WRITER_FIELDS):
        _w_offsets[i] = offset_of(writer_cls, name)
    _size_offset = offset_of(segment_cls, "size")
    _writer_cls, _segment_cls, _error = writer_cls, segment_cls, error
    _max_payload, _file_header_size = max_payload, file_header_size


cdef inline Py_ssize_t _size(object value) except? -1:
    """A byte count or bound held as a Python int, in C; one past ``Py_ssize_t`` (a
    ``rotate_bytes`` that means never) as the largest, which no journal reaches."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow > 0:
        return PY_SSIZE_T_MAX
    if overflow < 0:
        return PY_SSIZE_T_MIN
    return <Py_ssize_t>x


cdef object _append(object self, object kind, bytes head, bytes payload, object ts_ns):
    """Sequence and frame one record of ``head`` then ``payload``: into the flush buffer
    when buffered (the engine's per-message path), else written now and synced per the
    policy."""
    if _writer_cls is None:
        raise RuntimeError("ext.journalframe.configure_writer was not called")
    if not PyObject_TypeCheck(self, <PyTypeObject*>_writer_cls):
        raise TypeError(f"append needs a journal writer, not {type(self).__name__}")
    if slot(self, _w_offsets[W_CLOSED], "_closed"):
        raise _error("journal is closed")
    if head is None or payload is None:  # (a ``bytes`` argument of a cdef function admits None)
        raise TypeError("payload must be given")
    cdef Py_ssize_t payload_len = PyBytes_GET_SIZE(head) + PyBytes_GET_SIZE(payload)
    if payload_len > _max_payload:
        raise ValueError(f"payload of {payload_len} bytes exceeds {_max_payload}")
    cdef object segment = slot(self, _w_offsets[W_SEGMENT], "_segment")
    cdef object size = (slot(segment, _size_offset, "size")
                        if PyObject_TypeCheck(segment, <PyTypeObject*>_segment_cls)
                        else segment.size)
    cdef bytearray out = slot(self, _w_offsets[W_OUT], "_out")
    # (In C: the sum and comparisons of Python ints cost about 300 instructions a record.)
    cdef Py_ssize_t pending = _size(size) + PyByteArray_GET_SIZE(out)
    if pending + (HEADER_SIZE + payload_len) > _size(
            slot(self, _w_offsets[W_ROTATE_BYTES], "rotate_bytes")) \
            and pending > _file_header_size:
        self._rotate_now()
        out = slot(self, _w_offsets[W_OUT], "_out")
    cdef object seq = slot(self, _w_offsets[W_LAST_SEQ], "_last_seq") + 1
    cdef object last_hash = _frame(
        out, slot(self, _w_offsets[W_LAST_HASH], "_last_hash"), seq,
        _time.time_ns() if ts_ns is None else ts_ns, kind, head, payload)
    slot_set(self, _w_offsets[W_LAST_HASH], last_hash)
    slot_set(self, _w_offsets[W_LAST_SEQ], seq)
    slot_set(self, _w_offsets[W_OUT_SEQ], seq)
    if not slot(self, _w_offsets[W_BUFFERED], "buffered"):
        self._write_out()
        self._written(seq)
    return seq


def append(self, kind, payload, *, ts_ns=None):
    """Append one record; returns its sequence number (``JournalWriter.append``).

    Parameters
    ----------
    kind : RecordKind or int
        What the record holds.
    payload : bytes-like
        The record body (msgpack of a message struct, by convention).
    ts_ns : int, optional
        Timestamp; defaults to ``time.time_ns()``.

    Returns
    -------
    int
        The record's ``seq``. Under ``always`` it is durable on return.
    """
    # (The engine's payloads are bytes already: no call of the bytes type for them.)
    return _append(self, kind, b"", payload if type(payload) is bytes else bytes(payload), ts_ns)


def append_parts(self, kind, bytes head, bytes payload):
    """Append one record whose body is ``head`` followed by ``payload``
    (``JournalWriter.append_parts``): the record ``append(kind, head + payload)`` writes,
    without the joined copy. The engine journals each frame it sends this way, after its
    session's envelope (``Pipeline.record_sent``).

    Parameters
    ----------
    kind : RecordKind or int
        What the record holds.
    head, payload : bytes
        The record body's two parts.

    Returns
    -------
    int
        The record's ``seq``, stamped now (``time.time_ns()``).
    """
    return _append(self, kind, head, payload, None)


def append_msg(self, kind, msg, *, ts_ns=None):
    """Append a msgspec struct (or any msgpack-able value) as one record
    (``JournalWriter.append_msg``)."""
    if not PyObject_TypeCheck(self, <PyTypeObject*>_writer_cls):
        raise TypeError(f"append_msg needs a journal writer, not {type(self).__name__}")
    return _append(self, kind, b"", slot(self, _w_offsets[W_ENCODER], "_encoder").encode(msg),
                   ts_ns)


def append_as(self, kind, cls, tuple values, *, ts_ns=None):
    """Append the struct ``cls`` of field values ``values`` (all of them, in definition
    order) as one record, without making it (``JournalWriter.append_as``): the record
    ``append_msg(kind, cls(**dict(zip(cls.__struct_fields__, values))))`` writes. The
    engine's command records, one an order, are written this way
    (``ext.msgframe.FrameEncoder.encode_as``)."""
    if not PyObject_TypeCheck(self, <PyTypeObject*>_writer_cls):
        raise TypeError(f"append_as needs a journal writer, not {type(self).__name__}")
    return _append(self, kind, b"",
                   slot(self, _w_offsets[W_ENCODER], "_encoder").encode_as(cls, values), ts_ns)
