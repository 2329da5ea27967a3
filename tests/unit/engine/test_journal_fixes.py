"""The journal under disk failures: a short write is undone, a failed sync fails stop,
and a segment whose header never reached the disk is a torn tail.

Short writes are real ones: the process's file size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored) makes the kernel cut a write short, as a full disk does.
A failing ``fdatasync`` is injected (no portable way to make a disk fail).
"""
import contextlib
import errno
import os
import resource
import signal
import threading

import pytest

import engine.journal as journal_module
from engine.cli import main as cli_main
from engine.journal import (
    FILE_HEADER_SIZE,
    JournalCorruptError,
    JournalFailedError,
    JournalReader,
    JournalWriter,
    RecordKind,
    _pack_file_header,
    list_segments,
    segment_name,
    verify,
)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files of this process cannot grow past ``limit`` bytes: writes beyond it are cut short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _append(writer, first, count):
    for i in range(first, first + count):
        writer.append_msg(RecordKind.EVENT, {"i": i, "pad": "x" * 60})


# ---------------------------------------------------------------- short writes
@pytest.mark.parametrize("fsync", ["always", "group", "none"])
def test_a_short_write_is_undone_and_the_retry_writes_the_batch_whole(tmp_path, fsync):
    writer = JournalWriter(tmp_path, fsync=fsync, buffered=True)
    _append(writer, 0, 5)
    writer.flush()
    segment = writer._segment.path
    good_size = segment.stat().st_size
    _append(writer, 5, 3)
    with file_size_limit(good_size + 100):  # the disk fills up part way through the batch
        with pytest.raises(OSError, match="short journal write .* undone"):
            writer.flush()
    assert segment.stat().st_size == good_size  # no fragment left behind
    assert writer.durable_seq <= 5 and writer.failure is None
    assert writer.flush() == 8  # space again: the held batch goes out whole
    writer.close()
    result = verify(tmp_path)
    assert result.ok and result.torn is None and (result.first_seq, result.last_seq) == (1, 8)
    assert [r.decode()["i"] for r in JournalReader(tmp_path)] == list(range(8))
    JournalWriter(tmp_path, fsync=fsync).close()  # and the engine can open it


def test_a_short_write_that_cannot_be_undone_fails_the_journal(tmp_path, monkeypatch):
    failures = []
    writer = JournalWriter(tmp_path, fsync="always", buffered=True, on_failure=failures.append)
    _append(writer, 0, 5)
    writer.flush()
    good_size = writer._segment.path.stat().st_size

    def no_truncate(fd, length):
        raise OSError(errno.EIO, "Input/output error (injected)")

    monkeypatch.setattr(journal_module.os, "ftruncate", no_truncate)
    _append(writer, 5, 3)
    with file_size_limit(good_size + 100):
        with pytest.raises(JournalFailedError, match="cannot undo a short write"):
            writer.flush()
    monkeypatch.undo()
    assert len(failures) == 1 and writer.failure is not None
    # Nothing is appended after the fragment: it stays a torn tail.
    with pytest.raises(JournalFailedError):
        writer.flush()
    writer.close()
    result = verify(tmp_path)
    assert result.ok and result.last_seq == 5 and result.torn.offset == good_size
    with JournalWriter(tmp_path, fsync="always") as reopened:  # repaired on open
        assert reopened.last_seq == 5


# ---------------------------------------------------------------- failed syncs: fail stop
@pytest.fixture
def failing_fdatasync(monkeypatch):
    """``fail["thread"] = name`` makes the next fdatasync on that thread raise EIO, once."""
    real = os.fdatasync
    fail = {"thread": None}

    def fdatasync(fd):
        if fail["thread"] == threading.current_thread().name:
            fail["thread"] = None
            raise OSError(errno.EIO, "Input/output error (injected)")
        return real(fd)

    monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
    return fail


def test_a_failed_group_commit_fails_stop(tmp_path, failing_fdatasync):
    failures = []
    failed = threading.Event()
    writer = JournalWriter(tmp_path, fsync="group", group_commit_us=1000, buffered=True,
                           on_failure=lambda error: (failures.append(error), failed.set()))
    durable = threading.Event()
    _append(writer, 0, 2)
    writer.call_when_durable(writer.flush(), durable.set)
    assert durable.wait(5)
    failing_fdatasync["thread"] = "journal-commit"  # one transient I/O error
    held = threading.Event()
    _append(writer, 2, 1)
    writer.call_when_durable(writer.flush(), held.set)
    assert failed.wait(5)
    assert len(failures) == 1 and isinstance(failures[0], JournalFailedError)
    assert "fdatasync" in str(failures[0]) and "after seq 2" in str(failures[0])
    # The disk works again, but what the failed sync held is lost to the kernel:
    # nothing is acknowledged from now on, and every use says why.
    assert not held.wait(0.05) and writer.durable_seq == 2
    _append(writer, 3, 1)
    with pytest.raises(JournalFailedError, match="journal failed"):
        writer.flush()
    with pytest.raises(JournalFailedError):
        writer.call_when_durable(3, held.set)
    with pytest.raises(JournalFailedError):
        writer.sync()
    assert writer.failure == str(failures[0])
    writer.close()  # releases the files, writes nothing
    assert not held.is_set() and len(failures) == 1


def test_a_failed_sync_under_always_fails_stop(tmp_path, failing_fdatasync):
    failures = []
    writer = JournalWriter(tmp_path, fsync="always", buffered=True, on_failure=failures.append)
    _append(writer, 0, 2)
    writer.flush()
    failing_fdatasync["thread"] = threading.current_thread().name
    _append(writer, 2, 1)
    with pytest.raises(JournalFailedError, match="fdatasync of records"):
        writer.flush()
    assert writer.durable_seq == 2 and len(failures) == 1
    # A later sync that succeeds would prove nothing about the lost pages.
    _append(writer, 3, 1)
    with pytest.raises(JournalFailedError):
        writer.flush()
    assert writer.durable_seq == 2
    writer.close()
    assert verify(tmp_path).ok


def test_without_a_failure_callback_the_failure_is_logged(tmp_path, failing_fdatasync, caplog):
    writer = JournalWriter(tmp_path, fsync="always")
    failing_fdatasync["thread"] = threading.current_thread().name
    with pytest.raises(JournalFailedError):
        writer.append(RecordKind.EVENT, b"\x80")
    writer.close()
    assert [r.levelname for r in caplog.records if "journal failed" in r.getMessage()] == ["ERROR"]


# ---------------------------------------------------------------- a rotation cut by a power loss
def _rotated_journal(path):
    with JournalWriter(path, fsync="always", rotate_bytes=600) as writer:
        for i in range(12):
            writer.append_msg(RecordKind.EVENT, {"i": i})
    records = list(JournalReader(path))
    return records[-1]


@pytest.mark.parametrize("size", [FILE_HEADER_SIZE, FILE_HEADER_SIZE + 4096, 100])
def test_a_last_segment_of_zeros_is_a_torn_tail(tmp_path, capsys, size):
    last = _rotated_journal(tmp_path)
    # The new segment's size reached the disk, its header did not.
    zeros = tmp_path / segment_name(last.seq + 1)
    zeros.write_bytes(bytes(size))
    result = verify(tmp_path)
    assert result.ok and result.last_seq == last.seq
    assert (result.torn.path, result.torn.offset, result.torn.dropped_bytes) == (zeros, 0, size)
    assert cli_main(["journal", "verify", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"torn tail: {zeros.name} @ 0, {size} bytes dropped" in out and "OK: 12 records" in out
    with JournalWriter(tmp_path, fsync="always", rotate_bytes=600) as writer:  # the engine starts
        assert writer.repaired is not None
        assert writer.append(RecordKind.EVENT, b"\x80") == last.seq + 1
    result = verify(tmp_path)
    assert result.ok and result.torn is None and result.last_seq == last.seq + 1


@pytest.mark.parametrize("content", [b"junk\n", bytes(FILE_HEADER_SIZE)])
def test_a_stray_file_named_like_a_segment_is_refused_not_repaired(tmp_path, capsys, content):
    """A file in the journal directory named for a seq that does not follow the last
    record (an audit: ``echo junk > 00000000000000099999.krj``): verify called it a torn
    tail and said OK; serve removed it, made a segment starting at seq 99999 in its place,
    and every later start failed. A crash while rotating names the new segment for the
    next seq; anything else is refused, by both, and nothing is written."""
    last = _rotated_journal(tmp_path)
    stray = tmp_path / segment_name(last.seq + 1000)
    stray.write_bytes(content)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = verify(tmp_path)
    assert not result.ok and result.problem.problem == "name"
    assert f"follows a segment that ends at seq {last.seq}" in result.problem.detail
    assert cli_main(["journal", "verify", "--data-dir", str(tmp_path)]) == 1
    with pytest.raises(journal_module.JournalError, match="not a segment started at a crash"):
        JournalWriter(tmp_path, fsync="always")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_only_segment_all_zeros_starts_the_journal_again(tmp_path):
    (tmp_path / segment_name(1)).write_bytes(bytes(FILE_HEADER_SIZE))
    assert verify(tmp_path).ok
    with JournalWriter(tmp_path, fsync="always") as writer:
        assert writer.append(RecordKind.EVENT, b"\x80") == 1
    assert verify(tmp_path).records == 1


def test_zeros_where_a_header_should_be_are_still_damage_before_the_end(tmp_path):
    _rotated_journal(tmp_path)
    middle = list_segments(tmp_path)[-2]
    middle.write_bytes(bytes(middle.stat().st_size))  # another segment follows it
    result = verify(tmp_path)
    assert not result.ok and result.problem.problem == "header"
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path, fsync="always")


def test_a_last_segment_header_not_all_zeros_is_still_damage(tmp_path):
    last = _rotated_journal(tmp_path)
    header = bytearray(_pack_file_header(last.seq + 1, last.hash))
    header[40] ^= 0x01  # one bit of the prev_hash: the header's checksum fails
    (tmp_path / segment_name(last.seq + 1)).write_bytes(bytes(header) + bytes(4096))
    result = verify(tmp_path)
    assert not result.ok and (result.problem.problem, result.problem.seq) == ("header", last.seq + 1)


@pytest.mark.parametrize("fsync", ["always", "group"])
def test_a_segment_is_synced_before_the_next_one_is_created(tmp_path, monkeypatch, fsync):
    # Otherwise a power loss right after the rotation leaves the new segment
    # (its header synced) behind a torn tail in the old one: damage, not a tail.
    events = []
    real_fdatasync, real_open = os.fdatasync, os.open

    def fdatasync(fd):
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]))
        return real_fdatasync(fd)

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            events.append(("create", os.fspath(path).rsplit("/", 1)[-1]))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
    monkeypatch.setattr(journal_module.os, "open", open_)
    with JournalWriter(tmp_path, fsync=fsync, rotate_bytes=600, group_commit_us=10**6,
                       buffered=True) as writer:
        _append(writer, 0, 12)  # the first segment's records are written by the rotation
    monkeypatch.undo()
    first, second = (p.name for p in list_segments(tmp_path)[:2])
    assert events.index(("sync", first)) < events.index(("create", second))


def _synced_journal(path, n, fsync="always", rotate_bytes=1 << 20):
    with journal_module.JournalWriter(path, fsync=fsync, rotate_bytes=rotate_bytes) as writer:
        for i in range(n):
            writer.append(journal_module.RecordKind.EVENT, b"record %d" % i)
    return path


@pytest.mark.parametrize("damage", ["cut at a record", "cut mid-record", "segment deleted"])
def test_a_journal_missing_records_its_mark_says_were_durable_is_refused(tmp_path, damage):
    """The end of a journal was cut or deleted (an audit): the engine took the damage for a
    torn tail, dropped records that had been made durable and acknowledged, and gave their
    seqs to new records. durable.seq says what was durable: the start is refused."""
    journal = _synced_journal(tmp_path / "j", 40, rotate_bytes=2048)
    segments = journal_module.list_segments(journal)
    last = segments[-1]
    if damage == "segment deleted":
        last.unlink()
    else:
        data = last.read_bytes()
        records = [r for r in journal_module.JournalReader(journal)]
        cut = len(data) - (len(records[-1].payload) + journal_module.RECORD_HEADER_SIZE)
        last.write_bytes(data[:cut - (0 if damage == "cut at a record" else 5)])
    before = {p.name: p.read_bytes() for p in journal_module.list_segments(journal)}
    result = journal_module.verify(journal)  # (verify said OK: it never read the mark)
    if damage == "cut mid-record":
        # Record 39 is there in part (cut 5 bytes short; 40 is gone): the break is reported
        # where it is (it read as a torn tail, but a crash tears no durable record).
        assert (result.problem.problem, result.problem.seq, result.problem.path) == \
            ("length", 39, last)
        assert "but seq 40 was made durable (durable.seq): not a torn tail" in \
            result.problem.detail
        assert result.torn is None
    else:
        assert not result.ok and result.problem.problem == "missing"
        assert result.problem.detail.endswith("but seq 40 was made durable: "
                                              f"{40 - result.problem.seq + 1} records are missing")
    with pytest.raises(journal_module.JournalError, match=r"but seq 40 was made durable "
                                                         r"\(durable.seq\)"):
        journal_module.JournalWriter(journal, fsync="always")
    # Refused before any repair: the journal is as the damage left it.
    assert {p.name: p.read_bytes() for p in journal_module.list_segments(journal)} == before


@pytest.mark.parametrize("damage", ["cut mid-record", "segment deleted"])
def test_a_journal_sealed_at_a_graceful_stop_under_none_must_reach_its_mark(tmp_path, damage):
    """Under fsync = "none" a graceful stop syncs everything (EngineService.stop), but the
    mark stayed one that proves nothing: the last segment deleted, or the last record
    damaged, after a clean stop read as a crash's torn tail; verify said OK and recovery
    went on without those records. Sealed, the mark is one that proves."""
    journal = tmp_path / "j"
    with journal_module.JournalWriter(journal, fsync="none", rotate_bytes=2048) as writer:
        for i in range(40):
            writer.append(journal_module.RecordKind.EVENT, b"record %d" % i)
        assert writer.seal() == 40
    assert journal_module.written_mark(journal) == (40, True)
    last = journal_module.list_segments(journal)[-1]
    if damage == "segment deleted":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[:-5])
    result = journal_module.verify(journal)
    assert not result.ok
    assert result.problem.problem == ("length" if damage == "cut mid-record" else "missing")
    assert result.problem.seq == 40 if damage == "cut mid-record" else True
    with pytest.raises(journal_module.JournalError, match=r"but seq 40 was made durable"):
        journal_module.JournalWriter(journal, fsync="none")


def test_an_append_after_the_seal_takes_its_proof_away(tmp_path):
    journal = tmp_path / "j"
    with journal_module.JournalWriter(journal, fsync="none") as writer:
        writer.append(journal_module.RecordKind.EVENT, b"one")
        writer.seal()
        writer.append(journal_module.RecordKind.EVENT, b"two")
        writer.flush()
    assert journal_module.written_mark(journal) == (2, False)  # a crash tail may follow: repaired
    last = journal_module.list_segments(journal)[-1]
    last.write_bytes(last.read_bytes()[:-2])
    with journal_module.JournalWriter(journal, fsync="none") as writer:
        assert writer.last_seq == 1 and writer.repaired is not None


def test_a_journal_written_without_syncs_starts_on_what_is_there(tmp_path):
    """Under fsync = "none" the mark follows the writes: a power cut may take records below
    it as that policy allows, so its torn tail is repaired as before."""
    journal = _synced_journal(tmp_path / "j", 10, fsync="none")
    last = journal_module.list_segments(journal)[-1]
    last.write_bytes(last.read_bytes()[:-7])
    with journal_module.JournalWriter(journal, fsync="always") as writer:
        assert writer.last_seq == 9 and writer.repaired is not None


@pytest.mark.parametrize("fsync", ["always", "group", "none"])
def test_a_segment_deleted_under_the_writer_fails_the_journal(tmp_path, fsync):
    """The journal directory removed while the engine ran: it went on writing to the
    unlinked file and acknowledging, and every order was lost at the next restart. The
    flush after the deletion now fails stop; nothing written after it is acknowledged."""
    import shutil
    writer = journal_module.JournalWriter(tmp_path / "j", fsync=fsync, buffered=True)
    writer.append(journal_module.RecordKind.EVENT, b"before")
    writer.flush()
    shutil.rmtree(tmp_path / "j")
    writer.append(journal_module.RecordKind.EVENT, b"after")
    with pytest.raises(JournalFailedError, match="was deleted while in use"):
        writer.flush()
    assert "deleted" in writer.failure
    writer.close()
