"""Journal operations: sync times reach ``on_sync``, and ``verify`` names a break by what it is."""
import threading

import pytest

from engine.journal import JournalReader, JournalWriter, RecordKind, list_segments, verify


@pytest.mark.parametrize("buffered", [False, True])
def test_every_fdatasync_is_timed_under_always(tmp_path, buffered):
    seconds = []
    with JournalWriter(tmp_path, fsync="always", buffered=buffered, on_sync=seconds.append) as j:
        for i in range(3):
            j.append(RecordKind.EVENT, b"x%d" % i)
            j.flush()
        synced = len(seconds)
    assert synced == 3                     # one per record unbuffered, one per flush buffered
    assert len(seconds) == 4               # and the sync at close
    assert all(isinstance(s, float) and 0 <= s < 5 for s in seconds)


def test_a_group_commit_is_timed_from_the_committer(tmp_path):
    threads, done = [], threading.Event()

    def on_sync(seconds):
        threads.append(threading.current_thread().name)
        done.set()

    with JournalWriter(tmp_path, fsync="group", group_commit_us=200, on_sync=on_sync) as j:
        seq = j.append(RecordKind.EVENT, b"x")
        assert done.wait(5)
        assert j.durable_seq >= seq
    assert threads[0] == "journal-commit"


def test_no_sync_no_call(tmp_path):
    seconds = []
    with JournalWriter(tmp_path, fsync="none", on_sync=seconds.append) as j:
        for _ in range(10):
            j.append(RecordKind.EVENT, b"x")
    assert seconds == []


def _journal(path, n=40):
    with JournalWriter(path, fsync="none", rotate_bytes=1024) as j:
        for i in range(n):
            j.append(RecordKind.EVENT, b"payload %04d " % i + bytes(40), ts_ns=i)
    segments = list_segments(path)
    assert len(segments) >= 3
    return segments


def test_a_flipped_byte_in_the_last_record_of_a_middle_segment_is_a_checksum_break(tmp_path):
    segments = _journal(tmp_path)
    last = [r for r in JournalReader(tmp_path) if r.path == segments[1]][-1]
    data = bytearray(segments[1].read_bytes())
    data[last.offset + 70] ^= 0x40          # a payload byte; the file keeps its size
    segments[1].write_bytes(data)
    result = verify(tmp_path)
    assert not result.ok
    assert (result.problem.problem, result.problem.seq, result.problem.offset) == \
        ("checksum", last.seq, last.offset)
    assert "another segment follows" in result.problem.detail


def test_a_middle_segment_cut_short_is_a_length_break(tmp_path):
    segments = _journal(tmp_path)
    last = [r for r in JournalReader(tmp_path) if r.path == segments[1]][-1]
    with open(segments[1], "r+b") as handle:
        handle.truncate(last.offset + 30)
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq) == ("length", last.seq)


def test_a_damaged_segment_header_names_the_seq_it_should_start_at(tmp_path):
    segments = _journal(tmp_path)
    first = int(segments[2].stem)
    data = bytearray(segments[2].read_bytes())
    data[20] ^= 0x40
    segments[2].write_bytes(data)
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq) == ("header", first)
    # Also for the first segment read, from its name.
    data = bytearray(segments[0].read_bytes())
    data[20] ^= 0x40
    segments[0].write_bytes(data)
    assert (verify(tmp_path).problem.problem, verify(tmp_path).problem.seq) == ("header", 1)
