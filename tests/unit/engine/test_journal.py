"""Journal: records come back as written, damage is found where it is, a torn
tail is dropped and repaired, and what was acknowledged survives kill -9."""
import asyncio
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from engine import cmd_journal
from engine.journal import (
    FILE_HEADER_SIZE, RECORD_HEADER_SIZE, JournalCorruptError, JournalReader, JournalWriter,
    RecordKind, chain_hash, list_segments, verify,
)
from engine.messages import JournalCommand, NewOrder, Side

ROOT = Path(__file__).resolve().parents[3]


def payload(i: int) -> bytes:
    return msgspec.msgpack.encode({"i": i, "pad": "x" * (i % 7)})


def write(path, n, **kw):
    kw.setdefault("fsync", "none")
    with JournalWriter(path, **kw) as writer:
        for i in range(1, n + 1):
            assert writer.append(RecordKind.EVENT, payload(i), ts_ns=1000 + i) == i
    return path


def offsets(path):
    """(segment, offset, size) of every record, from the reader."""
    return [(r.path, r.offset, RECORD_HEADER_SIZE + len(r.payload)) for r in JournalReader(path)]


# ---------------------------------------------------------------- basics
def test_append_and_read_back(tmp_path):
    order = NewOrder(cl_ord_id="c1", account="A", symbol="AAPL", side=Side.BUY, qty="1", price="2")
    command = JournalCommand(session_id="s", principal="", received_ns=5, request=order)
    with JournalWriter(tmp_path, fsync="always") as writer:
        assert writer.append_msg(RecordKind.COMMAND, command) == 1
        assert writer.append(RecordKind.EVENT, b"raw bytes", ts_ns=42) == 2
        assert writer.durable_seq == 2
    records = list(JournalReader(tmp_path))
    assert [r.seq for r in records] == [1, 2]
    assert records[0].kind == RecordKind.COMMAND
    assert records[0].decode(msgspec.msgpack.Decoder(JournalCommand)) == command
    assert (records[1].payload, records[1].ts_ns, records[1].kind) == (b"raw bytes", 42, RecordKind.EVENT)
    assert records[1].hash == chain_hash(records[0].hash, struct.pack("<QqHH", 2, 42, 2, 0), b"raw bytes")


def test_reopen_continues_sequence_and_chain(tmp_path):
    write(tmp_path, 5)
    with JournalWriter(tmp_path, fsync="always") as writer:
        assert writer.last_seq == 5
        assert writer.append(RecordKind.EVENT, b"six") == 6
    result = verify(tmp_path)
    assert result.ok and result.records == 6 and result.last_seq == 6


def test_reopening_under_a_sync_policy_syncs_every_segment(tmp_path, monkeypatch):
    # A run under "none" rotates without syncing: its earlier segments may be
    # dirty in the page cache when an engine restarted under "always" treats
    # their records as durable (gateways publish them).
    from engine import journal as journal_module
    write(tmp_path, 200, rotate_bytes=2048, fsync="none")
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    synced = []
    real = os.fdatasync

    def fdatasync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)
    monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
    with JournalWriter(tmp_path, fsync="always", rotate_bytes=2048):
        assert set(synced) == {p.name for p in segments}


def test_rotation_and_reading_from_a_seq(tmp_path):
    write(tmp_path, 200, rotate_bytes=2048)
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    assert all(p.stat().st_size <= 2048 for p in segments)
    assert [int(p.stem) for p in segments][0] == 1
    assert [r.seq for r in JournalReader(tmp_path)] == list(range(1, 201))
    assert [r.seq for r in JournalReader(tmp_path).records(start_seq=150)] == list(range(150, 201))
    assert [r.seq for r in JournalReader(tmp_path).records(start_ns=1010, end_ns=1020)] == list(range(10, 20))
    assert verify(tmp_path).ok


def test_rejects_bad_policy(tmp_path):
    with pytest.raises(ValueError, match="always, group or none"):
        JournalWriter(tmp_path, fsync="sometimes")


# ---------------------------------------------------------------- torn tail
def test_torn_last_record_at_every_byte_offset(tmp_path):
    original = write(tmp_path / "orig", 6)
    segment, start, size = offsets(original)[-1]
    for cut in range(start, start + size):
        trial = tmp_path / f"cut{cut}"
        shutil.copytree(original, trial)
        os.truncate(trial / segment.name, cut)
        reader = JournalReader(trial)
        seqs = [r.seq for r in reader]
        assert seqs == [1, 2, 3, 4, 5], cut
        if cut > start:
            assert reader.torn is not None and reader.torn.offset == start
        result = verify(trial)
        assert result.ok and result.last_seq == 5
        # The writer truncates the torn record and carries on from seq 5.
        with JournalWriter(trial, fsync="none") as writer:
            assert writer.last_seq == 5
            assert (trial / segment.name).stat().st_size == start
            assert writer.append(RecordKind.EVENT, b"again") == 6
        assert verify(trial).ok and [r.payload for r in JournalReader(trial)][-1] == b"again"
        shutil.rmtree(trial)


def test_last_record_with_unwritten_data_is_torn(tmp_path):
    # A crash can leave the file extended but the data blocks zero.
    write(tmp_path, 4)
    segment, start, size = offsets(tmp_path)[-1]
    with open(segment, "r+b") as handle:
        handle.seek(start + RECORD_HEADER_SIZE)
        handle.write(bytes(size - RECORD_HEADER_SIZE))
    reader = JournalReader(tmp_path)
    assert [r.seq for r in reader] == [1, 2, 3]
    assert reader.torn.detail == "last record fails its checksum"


def test_torn_segment_header_after_rotation(tmp_path):
    write(tmp_path, 30, rotate_bytes=1024)
    last = list_segments(tmp_path)[-1]
    first_seq = int(last.stem)
    last.write_bytes(last.read_bytes()[:FILE_HEADER_SIZE - 10])
    assert [r.seq for r in JournalReader(tmp_path)][-1] == first_seq - 1
    with JournalWriter(tmp_path, fsync="none") as writer:
        assert writer.last_seq == first_seq - 1
        writer.append(RecordKind.EVENT, b"x")
    assert verify(tmp_path).ok


# ---------------------------------------------------------------- damage found where it is
def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def _rewrite_crc(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    length = struct.unpack_from("<I", data, offset)[0]
    end = offset + RECORD_HEADER_SIZE + length
    crc = zlib.crc32(data[offset + 8:end], zlib.crc32(data[offset:offset + 4]))
    struct.pack_into("<I", data, offset + 4, crc)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", [1, 5, 9])
def test_checksum_corruption_reported_at_the_record(tmp_path, victim):
    write(tmp_path, 12, rotate_bytes=700)
    segment, start, _ = offsets(tmp_path)[victim - 1]
    _flip(segment, start + RECORD_HEADER_SIZE + 1)
    result = verify(tmp_path)
    assert not result.ok
    assert (result.problem.problem, result.problem.seq) == ("checksum", victim)
    assert (result.problem.path, result.problem.offset) == (segment, start)
    assert result.records == victim - 1
    with pytest.raises(JournalCorruptError):
        list(JournalReader(tmp_path))
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)  # never writes after damage it cannot explain


def test_edited_record_breaks_the_chain_at_that_record(tmp_path):
    write(tmp_path, 10)
    segment, start, _ = offsets(tmp_path)[3]
    _flip(segment, start + RECORD_HEADER_SIZE + 1)
    _rewrite_crc(segment, start)  # the forger fixes the checksum...
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq) == ("chain", 4)  # ...the chain still tells


def test_forged_record_and_hash_breaks_the_chain_at_the_next(tmp_path):
    write(tmp_path, 10)
    records = list(JournalReader(tmp_path))
    segment, start = records[3].path, records[3].offset
    _flip(segment, start + RECORD_HEADER_SIZE + 1)
    data = bytearray(segment.read_bytes())
    forged = chain_hash(records[2].hash, data[start + 8:start + 28],
                        data[start + RECORD_HEADER_SIZE:start + RECORD_HEADER_SIZE + len(records[3].payload)])
    data[start + 28:start + 60] = forged
    segment.write_bytes(bytes(data))
    _rewrite_crc(segment, start)
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq) == ("chain", 5)


def test_removed_record_is_a_sequence_break(tmp_path):
    write(tmp_path, 6)
    (segment, start, size) = offsets(tmp_path)[2]
    data = segment.read_bytes()
    segment.write_bytes(data[:start] + data[start + size:])
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq) == ("sequence", 3)


def test_corrupt_length_mid_file_is_not_mistaken_for_a_torn_tail(tmp_path):
    write(tmp_path, 8)
    segment, start, _ = offsets(tmp_path)[4]
    with open(segment, "r+b") as handle:
        handle.seek(start)
        handle.write(struct.pack("<I", 10_000))
    result = verify(tmp_path)
    assert not result.ok and result.problem.seq == 5 and result.torn is None
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)
    assert len(segment.read_bytes()) > start  # nothing was truncated


def test_a_bad_block_over_several_records_is_not_mistaken_for_a_torn_tail(tmp_path):
    """Garbage over three whole records mid-segment (a bad disk block): only the next two
    seqs were looked for after it, so it passed as a torn tail, verify said OK, and the
    writer cut the acknowledged records behind it (audit: 5 of them, 1,151 behind 4 KiB)."""
    write(tmp_path, 12)
    rows = offsets(tmp_path)
    segment, start, _ = rows[4]
    _, last_start, last_size = rows[7]
    with open(segment, "r+b") as handle:  # records 5, 6, 7 and 8, from their length fields on
        handle.seek(start)
        handle.write(b"\xa5" * (last_start + last_size - start))
    result = verify(tmp_path)
    assert not result.ok and result.problem.seq == 5 and result.torn is None
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)
    assert len(segment.read_bytes()) > last_start + last_size  # nothing was truncated


def test_segment_that_does_not_chain_from_the_previous(tmp_path):
    write(tmp_path, 40, rotate_bytes=1024)
    second = list_segments(tmp_path)[1]
    data = bytearray(second.read_bytes())
    data[32:64] = bytes(32)  # prev_hash of the segment header
    crc = zlib.crc32(bytes(data[16:FILE_HEADER_SIZE]), zlib.crc32(bytes(data[:12])))
    struct.pack_into("<I", data, 12, crc)
    second.write_bytes(bytes(data))
    result = verify(tmp_path)
    assert result.problem.problem == "chain" and result.problem.path == second


# ---------------------------------------------------------------- group commit
def test_group_commit_syncs_records_together(tmp_path):
    writer = JournalWriter(tmp_path, fsync="group", group_commit_us=200_000)
    try:
        seen = {}
        done = threading.Event()
        for i in range(1, 51):
            seq = writer.append(RecordKind.EVENT, payload(i))
            writer.call_when_durable(seq, lambda seq=seq: seen.__setitem__(seq, writer.durable_seq))
        writer.call_when_durable(50, done.set)
        # Inside the window nothing is durable yet: acks must wait.
        assert writer.durable_seq == 0 and not seen
        assert done.wait(5)
        # One sync covered all fifty: every callback saw the same durable_seq.
        assert set(seen.values()) == {50} and sorted(seen) == list(range(1, 51))
        writer.call_when_durable(3, lambda: seen.__setitem__("late", True))
        assert seen["late"]  # already durable: called at once
    finally:
        writer.close()
    assert verify(tmp_path).records == 50


def test_group_commit_wait_durable_on_a_loop(tmp_path):
    async def main():
        with JournalWriter(tmp_path, fsync="group", group_commit_us=2_000) as writer:
            seqs = [writer.append(RecordKind.EVENT, payload(i)) for i in range(10)]
            await asyncio.wait_for(writer.wait_durable(seqs[-1]), 5)
            assert writer.durable_seq >= seqs[-1]

    asyncio.run(main())


def test_group_commit_across_rotation(tmp_path):
    with JournalWriter(tmp_path, fsync="group", group_commit_us=500, rotate_bytes=1024) as writer:
        for i in range(100):
            writer.append(RecordKind.EVENT, payload(i))
        assert writer.sync() == 100
    assert verify(tmp_path).records == 100 and len(list_segments(tmp_path)) > 3


# ---------------------------------------------------------------- buffered (the engine's mode)
def test_buffered_records_are_written_by_flush_only(tmp_path):
    with JournalWriter(tmp_path, fsync="none", buffered=True) as writer:
        seqs = [writer.append(RecordKind.EVENT, payload(i), ts_ns=1000 + i) for i in range(1, 11)]
        assert seqs == list(range(1, 11)) and writer.last_seq == 10
        # Sequenced and chained, but not in the file: nothing may ack them yet.
        assert list(JournalReader(tmp_path)) == [] and writer.durable_seq == 0
        size = list_segments(tmp_path)[0].stat().st_size
        assert writer.flush() == 10 and writer.durable_seq == 10
        assert list_segments(tmp_path)[0].stat().st_size > size
        assert [r.payload for r in JournalReader(tmp_path)] == [payload(i) for i in range(1, 11)]
        assert writer.flush() == 10  # nothing buffered: a no-op
        writer.append(RecordKind.EVENT, payload(11))
    # close() flushes what is left
    result = verify(tmp_path)
    assert result.ok and result.records == 11


def test_buffered_write_is_identical_to_unbuffered(tmp_path):
    write(tmp_path / "plain", 300, rotate_bytes=4096)
    with JournalWriter(tmp_path / "batched", fsync="always", buffered=True,
                       rotate_bytes=4096) as writer:
        for i in range(1, 301):
            writer.append(RecordKind.EVENT, payload(i), ts_ns=1000 + i)
            if i % 7 == 0:  # batches that straddle segment boundaries
                assert writer.flush() == i and writer.durable_seq == i
    plain, batched = list_segments(tmp_path / "plain"), list_segments(tmp_path / "batched")
    assert [p.name for p in plain] == [p.name for p in batched] and len(plain) > 5
    assert [r.hash for r in JournalReader(tmp_path / "plain")] == \
        [r.hash for r in JournalReader(tmp_path / "batched")]
    assert all(p.stat().st_size <= 4096 for p in batched) and verify(tmp_path / "batched").ok


def test_buffered_group_commit_marks_durable_after_flush(tmp_path):
    with JournalWriter(tmp_path, fsync="group", group_commit_us=1_000, buffered=True) as writer:
        done = threading.Event()
        for i in range(5):
            writer.append(RecordKind.EVENT, payload(i))
        time.sleep(0.02)
        assert writer.durable_seq == 0  # never synced what was not written
        writer.call_when_durable(writer.flush(), done.set)
        assert done.wait(5) and writer.durable_seq == 5


# ---------------------------------------------------------------- kill -9
WRITER_SCRIPT = r"""
import sys, threading
from engine.journal import JournalWriter, RecordKind
policy, directory, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
writer = JournalWriter(directory, fsync=policy, group_commit_us=300, rotate_bytes=16384,
                       buffered=batch > 1)
out = sys.stdout
lock = threading.Lock()
def acked(seq):
    with lock:
        out.write(f"{seq}\n"); out.flush()
i = 0
while True:
    i += 1
    seq = writer.append(RecordKind.EVENT, b"record-%d-" % i + b"z" * (i % 50))
    if i % batch:
        continue
    # Unbuffered: batch 1, each record on its own. Buffered: ack the batch
    # after flush (the engine's way), never before.
    writer.flush()
    for s in range(seq - batch + 1, seq + 1):
        if policy == "group":
            writer.call_when_durable(s, lambda s=s: acked(s))
        else:
            acked(s)
"""


@pytest.mark.parametrize("policy,batch", [("always", 1), ("group", 1), ("none", 8), ("group", 8)])
def test_kill_9_keeps_every_acknowledged_record(tmp_path, policy, batch):
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, policy, str(tmp_path), str(batch)],
                            stdout=subprocess.PIPE, cwd=ROOT, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 300
    records = {r.seq: r.payload for r in JournalReader(tmp_path)}
    for seq in acked:
        assert records[seq].startswith(b"record-%d-" % seq)
    assert verify(tmp_path).ok
    with JournalWriter(tmp_path, fsync="none") as writer:  # and it opens for more
        assert writer.last_seq >= max(acked)


# ---------------------------------------------------------------- command line
def test_cli_verify_and_export(tmp_path, capsys):
    import pyarrow.parquet as pq

    data = tmp_path / "j"
    order = NewOrder(cl_ord_id="c7", account="ACC1", symbol="AAPL", side=Side.SELL, qty="3", price="9.5")
    with JournalWriter(data, fsync="none") as writer:
        for i in range(20):
            writer.append_msg(RecordKind.COMMAND,
                              JournalCommand(session_id="s1", principal="", received_ns=i,
                                             request=msgspec.structs.replace(order, cl_ord_id=f"c{i}")),
                              ts_ns=1_700_000_000_000_000_000 + i * 1_000_000_000)
    parser = cmd_journal.argparse.ArgumentParser()
    cmd_journal.add_arguments(parser)
    assert cmd_journal.run(parser.parse_args(["verify", "--data-dir", str(data)])) == 0
    assert "OK: 20 records (seq 1..20)" in capsys.readouterr().out

    out = tmp_path / "slice.parquet"
    args = parser.parse_args(["export", "--data-dir", str(data), "--out", str(out),
                              "--start", "2023-11-14T22:13:25Z", "--end", "1700000010000000000"])
    assert cmd_journal.run(args) == 0
    table = pq.read_table(out)
    assert table.column("seq").to_pylist() == list(range(6, 11))
    assert set(table.column("cl_ord_id").to_pylist()) == {f"c{i}" for i in range(5, 10)}
    assert set(table.column("msg_type").to_pylist()) == {"NewOrder"}
    assert table.column("side").to_pylist() == [2] * 5 and table.column("price").to_pylist() == ["9.5"] * 5
    assert not out.with_name(out.name + ".tmp").exists()

    segment, start, _ = offsets(data)[9]
    _flip(segment, start + RECORD_HEADER_SIZE + 2)
    assert cmd_journal.run(parser.parse_args(["verify", "--data-dir", str(data)])) == 1
    assert "BROKEN: checksum" in capsys.readouterr().out


def test_cli_registered_and_runs_as_a_command(tmp_path):
    write(tmp_path, 3)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "verify", "--data-dir",
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OK: 3 records" in out.stdout


# ---------------------------------------------------------------- zero-filled tails
# A power loss can leave a file whose size reached the disk before its data
# did: the end reads as zeros, from part of a record to several pages.
def _zero_from(path: Path, offset: int) -> None:
    """Zero the file from ``offset`` to its end, keeping its size."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(size - offset))


def _append_zeros(path: Path, count: int) -> None:
    with open(path, "ab") as handle:
        handle.write(bytes(count))


def _reopen_and_append(path: Path, last_seq: int, more: int = 3) -> None:
    """The writer repairs the tail and continues; the reader gets every record back, chained."""
    with JournalWriter(path, fsync="always") as writer:
        assert writer.repaired is not None
        assert writer.last_seq == last_seq
        for i in range(1, more + 1):
            assert writer.append(RecordKind.EVENT, b"after-%d" % i) == last_seq + i
    records = list(JournalReader(path))
    assert [r.seq for r in records] == list(range(1, last_seq + more + 1))
    assert [r.payload for r in records[last_seq:]] == [b"after-%d" % i for i in range(1, more + 1)]
    for previous, record in zip(records, records[1:]):
        fixed = struct.pack("<QqHH", record.seq, record.ts_ns, record.kind, 0)
        assert record.hash == chain_hash(previous.hash, fixed, record.payload)
    result = verify(path)
    assert result.ok and result.torn is None and result.last_seq == last_seq + more


@pytest.mark.parametrize("zeros", [1, 60, 61, 4096, 100_000])
def test_zero_filled_tail_after_good_records_is_torn(tmp_path, zeros, capsys):
    write(tmp_path, 6)
    segment = list_segments(tmp_path)[-1]
    good_size = segment.stat().st_size
    _append_zeros(segment, zeros)
    reader = JournalReader(tmp_path)
    assert [r.seq for r in reader] == [1, 2, 3, 4, 5, 6]
    assert reader.torn is not None
    assert (reader.torn.path, reader.torn.offset, reader.torn.dropped_bytes) == (segment, good_size, zeros)
    result = verify(tmp_path)
    assert result.ok and result.last_seq == 6 and result.torn.offset == good_size
    parser = cmd_journal.argparse.ArgumentParser()
    cmd_journal.add_arguments(parser)
    assert cmd_journal.run(parser.parse_args(["verify", "--data-dir", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert f"torn tail: {segment.name} @ {good_size}, {zeros} bytes dropped" in out
    assert "OK: 6 records (seq 1..6)" in out
    _reopen_and_append(tmp_path, 6)
    assert segment.stat().st_size > good_size  # truncated, then appended to


def test_last_two_records_zeroed_in_place_are_torn(tmp_path):
    write(tmp_path, 6)
    segment, start, _ = offsets(tmp_path)[4]
    size = segment.stat().st_size
    _zero_from(segment, start)
    reader = JournalReader(tmp_path)
    assert [r.seq for r in reader] == [1, 2, 3, 4]
    assert (reader.torn.offset, reader.torn.dropped_bytes) == (start, size - start)
    assert verify(tmp_path).ok
    _reopen_and_append(tmp_path, 4)


def test_zeroed_payload_followed_by_zeros_is_torn(tmp_path):
    # The last record's header landed, its payload and the pages after it did not.
    write(tmp_path, 5)
    segment, start, _ = offsets(tmp_path)[-1]
    _zero_from(segment, start + RECORD_HEADER_SIZE)
    _append_zeros(segment, 8192)
    assert [r.seq for r in JournalReader(tmp_path)] == [1, 2, 3, 4]
    _reopen_and_append(tmp_path, 4)


@pytest.mark.parametrize("trailing_zeros", [0, 4096])
def test_zeroed_record_followed_by_a_good_record_is_corruption(tmp_path, trailing_zeros):
    write(tmp_path, 6)
    segment, start, size = offsets(tmp_path)[3]
    with open(segment, "r+b") as handle:
        handle.seek(start)
        handle.write(bytes(size))  # record 4 is zeros, 5 and 6 are intact
    _append_zeros(segment, trailing_zeros)
    before = segment.read_bytes()
    result = verify(tmp_path)
    assert not result.ok and result.torn is None
    assert (result.problem.problem, result.problem.seq, result.problem.offset) == ("checksum", 4, start)
    with pytest.raises(JournalCorruptError):
        list(JournalReader(tmp_path))
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)
    assert segment.read_bytes() == before  # nothing was truncated


def test_damaged_length_reaching_into_a_zero_tail_is_corruption(tmp_path):
    # Record 5's length, damaged, spans the good record 6 and ends in zeros
    # after it: dropping "the tail" from record 5 would lose record 6.
    write(tmp_path, 6)
    (segment, start5, size5), (_, _, size6) = offsets(tmp_path)[4:6]
    _append_zeros(segment, 4096)
    with open(segment, "r+b") as handle:
        handle.seek(start5)
        handle.write(struct.pack("<I", size5 + size6 + 100 - RECORD_HEADER_SIZE))
    result = verify(tmp_path)
    assert not result.ok and result.problem.seq == 5 and result.torn is None
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)


def test_zero_tail_in_a_segment_before_the_last_is_corruption(tmp_path):
    write(tmp_path, 30, rotate_bytes=1024)
    first, second = list_segments(tmp_path)[:2]
    _append_zeros(first, 4096)
    result = verify(tmp_path)
    assert not result.ok and result.problem.path == first
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)


# ---------------------------------------------------------------- ending group commit (shutdown)
def test_stop_group_commit_leaves_durability_to_sync(tmp_path):
    writer = JournalWriter(tmp_path, fsync="group", group_commit_us=5_000_000, buffered=True)
    try:
        calls = []
        for i in range(3):
            writer.append(RecordKind.EVENT, payload(i))
        writer.call_when_durable(writer.flush(), lambda: calls.append(threading.get_ident()))
        started = time.monotonic()
        writer.stop_group_commit()  # inside a 5 s window: must not wait it out
        assert time.monotonic() - started < 1
        assert writer.fsync == "group" and writer.durable_seq == 0 and not calls
        assert writer.sync() == 3
        assert calls == [threading.get_ident()]  # released by the caller's sync, on its thread
        writer.append(RecordKind.EVENT, payload(3))
        writer.call_when_durable(writer.flush(), lambda: calls.append("second"))
        time.sleep(0.05)
        assert writer.durable_seq == 3 and calls[1:] == []  # no committer any more
        assert writer.switch_to_always() == 4 and calls[1:] == ["second"]
        assert writer.fsync == "always"
        writer.append(RecordKind.EVENT, payload(4))
        assert writer.flush() == 5 and writer.durable_seq == 5  # durable when flush returns
    finally:
        writer.close()
    result = verify(tmp_path)
    assert result.ok and result.records == 5


@pytest.mark.parametrize("policy", ["always", "none"])
def test_switch_to_always_from_other_policies(tmp_path, policy):
    with JournalWriter(tmp_path, fsync=policy, buffered=True) as writer:
        writer.append(RecordKind.EVENT, payload(1))
        writer.stop_group_commit()  # nothing to stop
        assert writer.switch_to_always() == 1
        assert writer.fsync == "always"
        writer.append(RecordKind.EVENT, payload(2))
        assert writer.flush() == 2 and writer.durable_seq == 2
    assert verify(tmp_path).records == 2


def test_the_docs_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/journal.md's example writes one command and reads it back (it used to name a
    ``command`` it never made: a NameError for whoever ran it)."""
    import re
    from pathlib import Path as _Path
    text = (_Path(__file__).resolve().parents[3] / "docs" / "journal.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/journal.md", "exec"), {"__name__": "docs_example"})
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("1 1 {'type': 'JournalCommand'") and "'principal': 'algo-1'" in line
