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
    if PyBytes_GET_SIZE(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes, got {len(prev_hash)}")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if n > 0xFFFFFFFF:
        raise ValueError(f"payload of {n} bytes does not fit a record")
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, start + HEADER_SIZE + n)
    cdef unsigned char* o = <unsigned char*>PyByteArray_AS_STRING(out) + start
    _put_u32(<char*>o, <uint32_t>n)
    _put_fixed(<char*>o + 8, seq, ts_ns, kind)
    memcpy(o + HEADER_SIZE, PyBytes_AS_STRING(payload), n)
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
