"""The compiled appends (ext.journalframe: JournalWriter.append, append_msg, append_parts) write the
journal the Python ones did (tests/reference/journal_reference.py), byte for byte: the same
records, sequence, chain and segment rotations, buffered or not, for the same records and
clock; and ``kronos-exec journal verify``'s checks pass on what they write."""
import time

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from engine.journal import JournalError, JournalReader, JournalWriter, RecordKind, \
    list_segments, verify
from engine.messages import JournalSession, JournalValuation
from tests.reference.journal_reference import ReferenceWriter

records = st.lists(st.tuples(
    st.sampled_from(list(RecordKind)), st.sampled_from(["bytes", "msg", "parts"]),
    st.binary(max_size=300), st.none() | st.integers(-2**63, 2**63 - 1)), min_size=1,
    max_size=25)


def _write(cls, path, steps, buffered, rotate_bytes):
    with cls(path, fsync="none", buffered=buffered, rotate_bytes=rotate_bytes) as writer:
        seqs = []
        for kind, how, body, ts in steps:
            if how == "parts":
                # append_parts(head, rest) is append(head + rest); the reference has only that.
                head, rest = body[:len(body) // 3], body[len(body) // 3:]
                seqs.append(writer.append_parts(kind, head, rest) if cls is JournalWriter
                            else writer.append(kind, head + rest))
            elif how == "msg":
                seqs.append(writer.append_msg(kind, JournalSession(
                    session_id=body.hex()[:16], principal="P"), ts_ns=ts))
            elif ts is None:
                seqs.append(writer.append(kind, bytearray(body)))
            else:
                seqs.append(writer.append(kind, body, ts_ns=ts))
            if len(seqs) % 7 == 0:
                writer.flush()
        writer.flush()
    return seqs, {p.name: p.read_bytes() for p in list_segments(path)}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=records, buffered=st.booleans(), rotate_bytes=st.sampled_from([200, 700, 64 << 20]))
def test_the_compiled_appends_write_the_python_ones_journal(tmp_path_factory, monkeypatch, steps,
                                                            buffered, rotate_bytes):
    # One fixed clock for both: segment headers and records stamped now are then the same.
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_123_456_789)
    ours = _write(JournalWriter, tmp_path_factory.mktemp("ours"), steps, buffered, rotate_bytes)
    theirs = _write(ReferenceWriter, tmp_path_factory.mktemp("theirs"), steps, buffered,
                    rotate_bytes)
    assert ours == theirs
    seqs, files = ours
    assert seqs == list(range(1, len(steps) + 1))
    assert rotate_bytes > 700 or len(files) > 1 or sum(len(b) for b in files.values()) < 800


def test_what_the_compiled_appends_write_reads_back_and_verifies(tmp_path):
    with JournalWriter(tmp_path, fsync="always", rotate_bytes=300) as writer:
        for i in range(20):
            assert writer.append(RecordKind.EVENT, b"x" * i, ts_ns=i) == i + 1
        assert writer.append_msg(RecordKind.META, JournalSession(session_id="S", principal="P")) \
            == 21
    assert len(list_segments(tmp_path)) > 1
    read = list(JournalReader(tmp_path))
    assert [r.seq for r in read] == list(range(1, 22))
    assert [bytes(r.payload) for r in read[:20]] == [b"x" * i for i in range(20)]
    assert read[20].decode() == {"type": "JournalSession", "session_id": "S", "principal": "P"}
    result = verify(tmp_path)
    assert result.ok and result.records == 21 and result.segments > 1


def test_a_closed_journal_and_a_payload_too_big_are_refused(tmp_path):
    writer = JournalWriter(tmp_path, fsync="none")
    with pytest.raises(ValueError, match="exceeds"):
        writer.append(RecordKind.EVENT, bytes((64 << 20) + 1))
    # A kind past the header's 16 bits was written cut to them, in silence.
    with pytest.raises(ValueError, match="does not fit the header's 16 bits"):
        writer.append(70000, b"k")
    assert writer.append(RecordKind.EVENT, b"ok") == 1  # (nothing of the refused ones)
    writer.close()
    with pytest.raises(JournalError, match="closed"):
        writer.append(RecordKind.EVENT, b"x")
    with pytest.raises(TypeError):
        JournalWriter.append_msg(object(), RecordKind.EVENT, b"x")


def test_a_payload_of_any_bytes_like_is_recorded_as_it_was_appended(tmp_path):
    body = bytearray(b"abc")
    with JournalWriter(tmp_path, fsync="none", buffered=True) as writer:
        writer.append(RecordKind.EVENT, body, ts_ns=1)
        body[0] = ord("x")   # changed after the append: the record keeps what was appended
        writer.append(RecordKind.EVENT, memoryview(b"defg")[1:], ts_ns=2)
        writer.append(RecordKind.EVENT, b"hi", ts_ns=3)
        writer.flush()
    assert [bytes(r.payload) for r in JournalReader(tmp_path)] == [b"abc", b"efg", b"hi"]


def test_a_record_in_two_parts_reads_back_as_their_join(tmp_path):
    with JournalWriter(tmp_path, fsync="none", buffered=True) as writer:
        assert writer.append_parts(RecordKind.EVENT, b"head|", b"frame") == 1
        assert writer.append_parts(RecordKind.EVENT, b"", b"") == 2
        with pytest.raises(TypeError):
            writer.append_parts(RecordKind.EVENT, None, b"x")
        with pytest.raises(TypeError):
            writer.append_parts(RecordKind.EVENT, b"x", bytearray(b"y"))  # (bytes only)
        with pytest.raises(ValueError, match="exceeds"):
            writer.append_parts(RecordKind.EVENT, bytes(1 << 20), bytes(64 << 20))
        writer.flush()
    assert [bytes(r.payload) for r in JournalReader(tmp_path)] == [b"head|frame", b""]
    assert verify(tmp_path).ok


def test_a_rotate_bytes_past_64_bits_means_never(tmp_path):
    # (The compiled append compares sizes as C integers: a bound past them is the largest.)
    with JournalWriter(tmp_path, fsync="none", buffered=True, rotate_bytes=1 << 70) as writer:
        for i in range(50):
            writer.append(RecordKind.EVENT, bytes(1000), ts_ns=i)
        writer.flush()
    assert len(list_segments(tmp_path)) == 1
    assert [r.seq for r in JournalReader(tmp_path)] == list(range(1, 51))


def test_a_rotation_size_that_is_not_an_integer_is_refused_when_the_writer_is_made(tmp_path):
    # The compiled appends compare rotate_bytes as a C integer: a float given here used to
    # be taken, and then every append failed with a TypeError.
    with pytest.raises(TypeError):
        JournalWriter(tmp_path / "j", fsync="none", rotate_bytes=1e6)
    with JournalWriter(tmp_path / "k", fsync="none", rotate_bytes=10**6) as writer:
        writer.append(RecordKind.META, b"x")


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(-2**63, 2**63 - 1),
                                 st.none() | st.integers(-2**63, 2**63 - 1), st.booleans()),
                       min_size=1, max_size=20),
       buffered=st.booleans())
def test_a_record_appended_by_its_field_values_is_the_struct_appended(
        tmp_path_factory, monkeypatch, values, buffered):
    # JournalWriter.append_as (the pipeline's command and valuation records) against
    # append_msg of the struct made, as the pipeline journaled them before.
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_123_456_789)

    def write(path, as_fields):
        with JournalWriter(path, fsync="none", buffered=buffered, rotate_bytes=400) as writer:
            for order_id, value, ts, protect in values:
                if as_fields:
                    writer.append_as(RecordKind.META, JournalValuation,
                                     (order_id, value, protect), ts_ns=ts)
                else:
                    writer.append_msg(RecordKind.META, JournalValuation(
                        order_id=order_id, value_ticks=value, protect=protect), ts_ns=ts)
        return {p.name: p.read_bytes() for p in list_segments(path)}

    assert write(tmp_path_factory.mktemp("as"), True) == \
        write(tmp_path_factory.mktemp("msg"), False)
