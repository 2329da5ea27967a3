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
output; the hash and the CRC are still computed by the standard library
(``hashlib``, ``zlib``), called once each, so the digests are the ones the
reader and ``kronos-exec journal verify`` recompute.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import hashlib
import zlib

cdef object _crc32 = zlib.crc32
# An empty BLAKE2b-256 state: each record's hash starts from a copy of it,
# which costs less than a constructor call with its keyword argument.
cdef object _blake2b_256 = hashlib.blake2b(digest_size=32)


cdef inline bytes _chain_digest(bytes hashed):
    """BLAKE2b-256 of ``hashed`` (what ``hashlib.blake2b(hashed, digest_size=32)`` gives)."""
    h = _blake2b_256.copy()
    h.update(hashed)
    return h.digest()

cdef enum:
    HASH_SIZE = 32
    FIXED_SIZE = 20      # seq, ts_ns, kind, reserved: bytes 8..28 of the header
    HEADER_SIZE = 60

#: bytes before a record's payload
RECORD_HEADER_SIZE = HEADER_SIZE


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
    if PyBytes_GET_SIZE(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes, got {len(prev_hash)}")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if n > 0xFFFFFFFF:
        raise ValueError(f"payload of {n} bytes does not fit a record")
    cdef const char* body = PyBytes_AS_STRING(payload)
    # BLAKE2b-256(prev_hash | fixed | payload)
    cdef bytes hashed = PyBytes_FromStringAndSize(NULL, HASH_SIZE + FIXED_SIZE + n)
    cdef char* h = PyBytes_AS_STRING(hashed)
    memcpy(h, PyBytes_AS_STRING(prev_hash), HASH_SIZE)
    _put_fixed(h + HASH_SIZE, seq, ts_ns, kind)
    memcpy(h + HASH_SIZE + FIXED_SIZE, body, n)
    cdef bytes digest = _chain_digest(hashed)
    # What the CRC covers, contiguous: the length, then bytes 8..end.
    cdef bytes covered = PyBytes_FromStringAndSize(NULL, HEADER_SIZE - 4 + n)
    cdef char* c = PyBytes_AS_STRING(covered)
    _put_u32(c, <uint32_t>n)
    _put_fixed(c + 4, seq, ts_ns, kind)
    memcpy(c + 4 + FIXED_SIZE, PyBytes_AS_STRING(digest), HASH_SIZE)
    memcpy(c + 4 + FIXED_SIZE + HASH_SIZE, body, n)
    cdef uint32_t crc = _crc32(covered)
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, start + HEADER_SIZE + n)
    cdef char* o = PyByteArray_AS_STRING(out) + start
    memcpy(o, c, 4)
    _put_u32(o + 4, crc)
    memcpy(o + 8, c + 4, HEADER_SIZE - 8 + n)
    return digest


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
    # What the CRC covers, contiguous: the length, then bytes 8..end.
    cdef bytes covered = PyBytes_FromStringAndSize(NULL, HEADER_SIZE - 4 + length)
    cdef char* c = PyBytes_AS_STRING(covered)
    memcpy(c, p, 4)
    memcpy(c + 4, p + 8, HEADER_SIZE - 8 + length)
    cdef uint32_t crc = _crc32(covered)
    if crc != _get_u32(p + 4):
        return None
    cdef bytes stored = PyBytes_FromStringAndSize(<const char*>p + 28, HASH_SIZE)
    cdef bytes payload = PyBytes_FromStringAndSize(<const char*>p + HEADER_SIZE, length)
    cdef bytes hashed
    cdef char* h
    if check_chain:
        hashed = PyBytes_FromStringAndSize(NULL, HASH_SIZE + FIXED_SIZE + length)
        h = PyBytes_AS_STRING(hashed)
        memcpy(h, PyBytes_AS_STRING(prev_hash), HASH_SIZE)
        memcpy(h + HASH_SIZE, p + 8, FIXED_SIZE)
        memcpy(h + HASH_SIZE + FIXED_SIZE, p + HEADER_SIZE, length)
        if _chain_digest(hashed) != stored:
            return None
    return (seq, <int64_t>_get_u64(p + 16), <unsigned int>(p[24] | (p[25] << 8)), payload, stored,
            offset + HEADER_SIZE + length)
