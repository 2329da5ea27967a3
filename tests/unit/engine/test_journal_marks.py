"""What the journal's durable mark tells verify, export and the writer (audit findings).

``durable.seq`` holds the seq the writer reached: synced (``always``, ``group``, a sealed
``none``), the journal must reach it; written only (``none`` while running), a power loss
may leave the journal short of it, and nothing else should.
"""
import contextlib
import logging
from pathlib import Path
import sys
import threading

import pytest

from engine import cmd_journal
from engine.journal import (DURABLE_NAME, DurableMark, JournalWriter, RecordKind, list_segments,
                            verify)


def _cli(*argv):
    parser = cmd_journal.argparse.ArgumentParser()
    cmd_journal.add_arguments(parser)
    return cmd_journal.run(parser.parse_args(list(argv)))


def _write(path, n, **kw):
    with JournalWriter(path, **kw) as writer:
        for i in range(1, n + 1):
            writer.append(RecordKind.EVENT, b"x" * 40, ts_ns=1000 + i)


def _set_mark(path, seq, synced):
    word = seq | (DurableMark.SYNCED if synced else 0)
    (path / DURABLE_NAME).write_bytes(word.to_bytes(8, sys.byteorder))


def test_verify_of_a_journal_being_written_reports_no_missing_records(tmp_path):
    """verify read the segments, then the mark, which a live writer had moved on past what
    was read: "BROKEN: missing" on a sound journal (audit: 21 of 23 runs). The mark is now
    read first."""
    stop, going = threading.Event(), threading.Event()

    def writer():
        with JournalWriter(tmp_path, fsync="always", rotate_bytes=4096) as w:
            while not stop.is_set():
                if w.append(RecordKind.EVENT, b"y" * 100) == 200:
                    going.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert going.wait(30)
        results = [verify(tmp_path) for _ in range(15)]
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in results), [r.problem for r in results if not r.ok][:1]
    assert results[-1].records > 0


def test_export_refuses_a_journal_missing_durable_records(tmp_path, capsys):
    """verify says BROKEN: missing; export wrote the rest and said it had succeeded."""
    data = tmp_path / "j"
    _write(data, 60, fsync="always", rotate_bytes=1024)
    list_segments(data)[-1].unlink()
    assert not verify(data).ok
    out = tmp_path / "all.parquet"
    assert _cli("export", "--data-dir", str(data), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "records are missing" in err and "nothing written" in err
    assert not out.exists()


def test_a_journal_short_of_its_unsynced_mark_is_noted(tmp_path, capsys, caplog):
    """Under fsync none the mark follows the writes: a journal ending before it lost records
    to a power loss, or to someone. Not refused (the policy allows the first), but said, by
    verify, export and the engine's writer at start."""
    data = tmp_path / "j"
    _write(data, 20, fsync="none")
    _set_mark(data, 25, synced=False)        # the writer had written through 25
    result = verify(data)
    assert result.ok and result.unsynced_mark == 25
    assert _cli("verify", "--data-dir", str(data)) == 0
    note = ("note: the journal ends at seq 20, but its writer (fsync none) had written through "
            "seq 25: 5 records are gone")
    assert note in capsys.readouterr().out
    out = tmp_path / "all.parquet"
    assert _cli("export", "--data-dir", str(data), "--out", str(out)) == 0
    assert note in capsys.readouterr().out and out.exists()
    with caplog.at_level(logging.WARNING, logger="engine.journal"):
        with JournalWriter(data, fsync="none") as writer:
            assert writer.last_seq == 20
    assert any("had written through seq 25" in r.getMessage() for r in caplog.records)


def test_a_synced_mark_the_journal_reaches_says_nothing(tmp_path, capsys):
    data = tmp_path / "j"
    _write(data, 20, fsync="always")
    assert _cli("verify", "--data-dir", str(data)) == 0
    assert "note:" not in capsys.readouterr().out


def test_a_time_that_is_neither_form_is_quoted_as_given():
    with pytest.raises(cmd_journal.argparse.ArgumentTypeError,
                       match=r"^'1704205800\.5' is neither ISO 8601 nor integer nanoseconds"):
        cmd_journal.parse_time("1704205800.5")


def test_export_writes_row_groups_as_it_reads(tmp_path, monkeypatch, capsys):
    """The export held every row in Python lists to the end (audit: 570 MB for 200k
    records); it writes a row group per EXPORT_BATCH records now, the same rows."""
    import pyarrow.parquet as pq

    data = tmp_path / "j"
    _write(data, 25, fsync="none", rotate_bytes=1024)
    monkeypatch.setattr(cmd_journal, "EXPORT_BATCH", 10)
    out = tmp_path / "all.parquet"
    assert _cli("export", "--data-dir", str(data), "--out", str(out)) == 0
    assert "wrote 25 records" in capsys.readouterr().out
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups == 3
    assert parquet.read().column("seq").to_pylist() == list(range(1, 26))
    empty = tmp_path / "none.parquet"
    assert _cli("export", "--data-dir", str(data), "--out", str(empty), "--start", "5000") == 0
    assert "wrote 0 records" in capsys.readouterr().out
    assert pq.read_table(empty).num_rows == 0


def test_a_rotation_with_no_descriptor_left_uses_the_spare_ones(tmp_path, caplog):
    """A flood of half-open connections took every descriptor the process may have; the
    next segment could not be opened and the journal failed, stopping the engine (audit).
    The writer keeps two spare descriptors for it."""
    with JournalWriter(tmp_path, fsync="always", rotate_bytes=1024) as writer:
        with out_of_descriptors():
            with caplog.at_level(logging.WARNING, logger="engine.journal"):
                for _ in range(30):  # several rotations
                    writer.append(RecordKind.EVENT, b"z" * 100)
            assert writer.last_seq == 30 and len(list_segments(tmp_path)) > 2
            assert any("out of file descriptors" in r.getMessage() for r in caplog.records)
    assert verify(tmp_path).ok


@contextlib.contextmanager
def out_of_descriptors():
    """Lower the process's open-files limit to a few above what it holds and take them all;
    yields the list of descriptors taken (closed, and the limit restored, at the end)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, hard))
        with pytest.raises(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield fillers
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_rotation_while_another_thread_takes_every_freed_descriptor(tmp_path, monkeypatch,
                                                                       caplog):
    """Under a flood of connections ZeroMQ's I/O thread retries its accept without pause and
    took the spare descriptors the journal closed for its next segment before the journal
    could open it: the rotation failed and the engine stopped (failure audit). The file
    opened ahead for the next segment needs no descriptor at the rotation."""
    import os

    import engine.journal as journal_module

    real_close = os.close
    with JournalWriter(tmp_path, fsync="always", rotate_bytes=1024) as writer:
        with out_of_descriptors() as fillers:
            def close_and_lose_it(fd):
                # The thief: every descriptor closed is taken again at once.
                real_close(fd)
                fillers.append(os.open(os.devnull, os.O_RDONLY))

            monkeypatch.setattr(journal_module.os, "close", close_and_lose_it)
            try:
                first = writer._segment.first_seq   # (listing the directory needs a descriptor)
                with caplog.at_level(logging.WARNING, logger="engine.journal"):
                    while writer._segment.first_seq == first:
                        writer.append(RecordKind.EVENT, b"t" * 100)
                assert any("file opened ahead" in r.getMessage() for r in caplog.records)
            finally:
                monkeypatch.undo()
        writer.append(RecordKind.EVENT, b"after")
    assert verify(tmp_path).ok


def test_a_file_opened_ahead_that_cannot_be_named_leaves_the_spares_to_do_it(tmp_path,
                                                                             monkeypatch):
    """Out of descriptors, with no /proc to link the file opened ahead through (a sandbox):
    the rotation raised that error and the journal failed, the spare descriptors unused
    (review). It falls back to them, and opens no more files ahead."""
    import errno
    import os

    import engine.journal as journal_module

    real_open, real_link = os.open, os.link
    writer = JournalWriter(tmp_path, fsync="always", rotate_bytes=400, buffered=True)

    def exhausted_open(path, flags, *args, **kw):
        # A segment cannot be created while the spare descriptors are held.
        if journal_module.is_segment_name(Path(str(path))) and flags & os.O_CREAT \
                and writer._spare_fds:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args, **kw)

    def no_proc_link(src, dst, **kw):
        if str(src).startswith("/proc/self/fd/"):
            raise OSError(errno.ENOENT, "No such file or directory", src)
        return real_link(src, dst, **kw)

    monkeypatch.setattr(journal_module.os, "open", exhausted_open)
    monkeypatch.setattr(journal_module.os, "link", no_proc_link)
    try:
        for _ in range(20):
            writer.append(RecordKind.EVENT, b"x" * 50)
            writer.flush()
        assert writer.failure is None and len(list_segments(tmp_path)) > 3
        assert writer._next_file is None
    finally:
        monkeypatch.undo()
        writer.close()
    assert verify(tmp_path).ok


def test_spare_descriptors_short_at_open_are_taken_at_the_next_rotation(tmp_path, monkeypatch):
    """Only the out-of-descriptors path took spares again: a writer that got fewer than two
    at open kept that many for good (review)."""
    with JournalWriter(tmp_path, fsync="none", rotate_bytes=1024) as writer:
        writer._release_spare_fds()
        for _ in range(20):
            writer.append(RecordKind.EVENT, b"s" * 100)
        assert len(writer._spare_fds) == writer.SPARE_FDS


def test_a_large_torn_last_record_is_told_in_milliseconds(tmp_path):
    """Looking for any of the next 4,096 seqs with one search each cost seconds behind a
    megabytes-long torn record (review: 3.5 s for 4 MB, 18.6 s over a zero tail)."""
    import time
    with JournalWriter(tmp_path, fsync="none") as writer:
        for _ in range(3):
            writer.append(RecordKind.EVENT, b"a" * 100)
        writer.append(RecordKind.EVENT, b"b" * 4_000_000)
    segment = list_segments(tmp_path)[-1]
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:     # cut the big record in half, zeros after it
        handle.truncate(size - 2_000_000)
        handle.truncate(size)
    started = time.perf_counter()
    result = verify(tmp_path)
    assert result.ok and result.torn is not None and result.records == 3
    assert time.perf_counter() - started < 1.0


def test_an_export_that_cannot_write_mid_journal_says_so_and_leaves_nothing(tmp_path, monkeypatch,
                                                                            capsys):
    """Written a row group at a time, a failing write came out as "cannot read" the
    journal (pyarrow names no file), and a value pyarrow refused left the .tmp (review)."""
    import msgspec
    data = tmp_path / "j"
    with JournalWriter(data, fsync="none") as writer:
        for i in range(30):
            writer.append(RecordKind.EVENT, msgspec.msgpack.encode({"type": "X", "side": 1}))
        writer.append(RecordKind.EVENT, msgspec.msgpack.encode({"type": "X", "side": 2**40}))
    monkeypatch.setattr(cmd_journal, "EXPORT_BATCH", 10)
    out = tmp_path / "nodir" / "x.parquet"
    assert cmd_journal._export(data, None, None, out) == 1
    assert capsys.readouterr().err.startswith(f"kronos-exec journal: cannot write {out}: ")
    out = tmp_path / "x.parquet"
    assert cmd_journal._export(data, None, None, out) == 0      # side 2**40: no int32, null
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "x.parquet"]
