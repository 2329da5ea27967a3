"""JournalTail: follows a journal being written, across segments, from any
seq, and finds damage the way JournalReader does."""
import os
import threading

import pytest

from engine.journal import JournalCorruptError, JournalReader, JournalWriter, RecordKind, list_segments
from gateways.tail import JournalGapError, JournalTail


def payload(i: int) -> bytes:
    return f"record {i} ".encode() * (1 + i % 5)


def drain(tail, limit=10_000):
    out = []
    while True:
        batch = tail.read(257)
        if not batch:
            return out
        out += batch
        if len(out) >= limit:
            return out


def test_follows_a_live_writer_across_rotations(tmp_path):
    writer = JournalWriter(tmp_path, fsync="none", rotate_bytes=8192)
    tail = JournalTail(JournalReader(tmp_path))
    seen = []
    done = threading.Event()

    def write():
        for i in range(1, 3001):
            writer.append(RecordKind.EVENT, payload(i))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not (done.is_set() and len(seen) == 3000):
        seen += [(r.seq, r.payload) for r in tail.read(100)]
    thread.join()
    writer.close()
    assert len(list_segments(tmp_path)) > 10
    assert seen == [(i, payload(i)) for i in range(1, 3001)]
    assert tail.read(10) == []


def test_seek_back_and_forward(tmp_path):
    with JournalWriter(tmp_path, fsync="none", rotate_bytes=64 * 1024) as writer:
        for i in range(1, 20001):
            writer.append(RecordKind.EVENT, payload(i))
    tail = JournalTail(JournalReader(tmp_path), mark_every=100)
    assert [r.seq for r in drain(tail, 30000)] == list(range(1, 20001))
    for after in (0, 1, 9_999, 12_345, 19_999, 20_000, 25_000):
        tail.seek(after)
        got = tail.read(3)
        assert [r.seq for r in got] == list(range(after + 1, min(after + 4, 20001)))
        assert all(r.payload == payload(r.seq) for r in got)
    # Offsets are absolute: the reader agrees on where each record sits.
    tail.seek(14_000)
    record = tail.read(1)[0]
    reference = next(JournalReader(tmp_path).records(14_001))
    assert (record.path, record.offset, record.hash) == (reference.path, reference.offset, reference.hash)


def test_a_cursor_ahead_of_the_journal_waits_for_it(tmp_path):
    writer = JournalWriter(tmp_path, fsync="none")
    for i in range(1, 11):
        writer.append(RecordKind.EVENT, payload(i))
    tail = JournalTail(JournalReader(tmp_path))
    tail.seek(15)
    assert tail.read(100) == []
    for i in range(11, 21):
        writer.append(RecordKind.EVENT, payload(i))
    writer.close()
    assert [r.seq for r in tail.read(100)] == list(range(16, 21))


def test_a_record_being_written_is_picked_up_when_complete(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as writer:
        for i in range(1, 4):
            writer.append(RecordKind.EVENT, payload(i))
    [segment] = list_segments(tmp_path)
    data = segment.read_bytes()
    last = list(JournalReader(tmp_path))[-1]
    # Cut the last record in half, as a reader racing the writer sees it.
    segment.write_bytes(data[:last.offset + 30])
    tail = JournalTail(JournalReader(tmp_path))
    assert [r.seq for r in tail.read(10)] == [1, 2]
    assert tail.read(10) == []
    segment.write_bytes(data)
    assert [(r.seq, r.payload) for r in tail.read(10)] == [(3, payload(3))]


def test_a_corrupt_record_is_reported_not_skipped(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as writer:
        for i in range(1, 6):
            writer.append(RecordKind.EVENT, payload(i))
    records = list(JournalReader(tmp_path))
    segment = records[0].path
    data = bytearray(segment.read_bytes())
    data[records[2].offset + 70] ^= 0xFF  # a payload byte of seq 3
    segment.write_bytes(bytes(data))
    tail = JournalTail(JournalReader(tmp_path))
    with pytest.raises(JournalCorruptError) as info:
        tail.read(10)
    assert info.value.offset == records[2].offset and info.value.problem == "checksum"


def test_removed_segments_are_a_gap(tmp_path):
    with JournalWriter(tmp_path, fsync="none", rotate_bytes=4096) as writer:
        for i in range(1, 500):
            writer.append(RecordKind.EVENT, payload(i))
    segments = list_segments(tmp_path)
    os.unlink(segments[0])
    tail = JournalTail(JournalReader(tmp_path))
    with pytest.raises(JournalGapError, match="starts at seq"):
        tail.read(10)
    tail.seek(int(segments[1].stem) - 1)
    assert tail.read(1)[0].seq == int(segments[1].stem)


def test_a_renamed_segment_is_reported_not_skipped_past(tmp_path):
    """A tail positioning itself picks its segment by file name: one renamed below its header's
    first seq (by hand) would make it start past the seqs it was asked for, silently."""
    from engine.journal import segment_name
    with JournalWriter(tmp_path, fsync="none", rotate_bytes=4096) as writer:
        for i in range(1, 500):
            writer.append(RecordKind.EVENT, payload(i))
    second = list_segments(tmp_path)[1]
    first_seq = int(second.stem)
    second.rename(tmp_path / segment_name(first_seq - 3))   # now "holds" the 3 before it
    tail = JournalTail(JournalReader(tmp_path))
    tail.seek(first_seq - 3)   # the next seq it wants lies in the renamed segment's name range
    with pytest.raises(JournalCorruptError) as info:
        tail.read(10)
    assert info.value.problem == "name" and info.value.seq == first_seq - 2
