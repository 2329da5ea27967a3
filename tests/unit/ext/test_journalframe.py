"""The compiled record framing writes exactly the format engine/journal.py documents."""
import hashlib
import struct
import zlib

import pytest
from hypothesis import given, strategies as st

from engine.journal import GENESIS_HASH, JournalReader, JournalWriter, RecordKind
from ext.journalframe import RECORD_HEADER_SIZE, frame_record


def reference_record(prev_hash: bytes, seq: int, ts_ns: int, kind: int, payload: bytes):
    """The record as docs/journal.md spells it out, with struct, hashlib and zlib."""
    fixed = struct.pack("<QqHH", seq, ts_ns, kind, 0)
    digest = hashlib.blake2b(prev_hash + fixed + payload, digest_size=32).digest()
    length = struct.pack("<I", len(payload))
    rest = fixed + digest + payload
    crc = zlib.crc32(rest, zlib.crc32(length))
    return length + struct.pack("<I", crc) + rest, digest


@given(prev=st.binary(min_size=32, max_size=32), seq=st.integers(1, 2**64 - 1),
       ts=st.integers(-2**63, 2**63 - 1), kind=st.integers(0, 0xFFFF),
       payload=st.binary(max_size=600), prefix=st.binary(max_size=50))
def test_frame_matches_the_documented_format(prev, seq, ts, kind, payload, prefix):
    out = bytearray(prefix)
    digest = frame_record(out, prev, seq, ts, kind, payload)
    record, expected_digest = reference_record(prev, seq, ts, kind, payload)
    assert digest == expected_digest
    assert bytes(out) == prefix + record  # appended, what was there kept
    assert len(record) == RECORD_HEADER_SIZE + len(payload)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        frame_record(bytearray(), b"short", 1, 0, 1, b"x")
    with pytest.raises(OverflowError):
        frame_record(bytearray(), GENESIS_HASH, -1, 0, 1, b"x")


@pytest.mark.parametrize("buffered", [False, True])
def test_writer_records_read_back_with_their_chain(tmp_path, buffered):
    writer = JournalWriter(tmp_path, fsync="none", buffered=buffered)
    payloads = [bytes([i]) * i for i in range(1, 50)]
    for p in payloads:
        writer.append(RecordKind.EVENT, p, ts_ns=7)
    writer.flush()
    writer.close()
    records = list(JournalReader(tmp_path).records(1))
    assert [r.payload for r in records] == payloads
    prev = GENESIS_HASH
    for r in records:
        assert r.hash == reference_record(prev, r.seq, 7, RecordKind.EVENT, r.payload)[1]
        prev = r.hash


@given(payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=5),
       flip=st.integers(0, 10_000), chain=st.booleans())
def test_read_record_takes_exactly_the_records_that_check_out(payloads, flip, chain):
    from ext.journalframe import read_record
    prefix = b"H" * 64  # where a segment header would be
    out = bytearray(prefix)
    prev, hashes = GENESIS_HASH, []
    for seq, p in enumerate(payloads, 1):
        prev = frame_record(out, prev, seq, 1000 + seq, 2, p)
        hashes.append(prev)
    data = bytes(out)
    offset, prev = len(prefix), GENESIS_HASH
    for seq, p in enumerate(payloads, 1):
        got = read_record(data, offset, seq, prev, chain)
        assert got == (seq, 1000 + seq, 2, p, hashes[seq - 1], offset + RECORD_HEADER_SIZE + len(p))
        assert read_record(data, offset, seq + 1, prev, chain) is None  # wrong seq
        prev, offset = hashes[seq - 1], got[-1]
    assert read_record(data, offset, len(payloads) + 1, prev, chain) is None  # at the end
    # One flipped bit anywhere in the first record: it no longer checks out.
    first_end = len(prefix) + RECORD_HEADER_SIZE + len(payloads[0])
    at = len(prefix) + flip % (first_end - len(prefix))
    bad = bytearray(data)
    bad[at] ^= 0x01
    assert read_record(bytes(bad), len(prefix), 1, GENESIS_HASH, chain) is None
    # The chain: the right record after the wrong previous hash.
    if chain and len(payloads) > 1:
        assert read_record(data, len(prefix) + RECORD_HEADER_SIZE + len(payloads[0]), 2,
                           GENESIS_HASH, True) is None


def test_frame_refuses_none_for_its_buffers():
    # (Typed arguments let None through in Cython; the framing would read through it.)
    for args in ((None, GENESIS_HASH, 1, 0, 1, b"x"), (bytearray(), None, 1, 0, 1, b"x"),
                 (bytearray(), GENESIS_HASH, 1, 0, 1, None)):
        with pytest.raises(TypeError):
            frame_record(*args)
