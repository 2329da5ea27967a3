"""The journal's disk failures at a segment rotation, and waiters on a journal that fails.

The engine's writer is buffered: ``append`` frames records in memory in the
middle of a request's handling, ``flush`` writes them at the end of the
loop's wake-up. A rotation the disk refuses inside ``append`` (the new file
cannot be made, or the batch written before it is cut short) must not raise
there, or the handler stops half-way through an order: the flush, where the
disk's failures are dealt with, tries again, and fails the journal stop if the
disk still refuses. ``wait_durable`` must learn of a failure too.

A refused file is injected (``os.open`` of a new segment raises ENOSPC while a
switch is on), as is a failing ``fdatasync``; short writes are the kernel's,
under a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored), as on a full disk.
"""
import asyncio
import errno
import logging
import os
import threading
import time

import pytest

import engine.journal as journal_module
from engine.journal import (
    JournalFailedError,
    JournalReader,
    JournalWriter,
    RecordKind,
    list_segments,
    segment_name,
    verify,
)
from tests.unit.engine.test_journal_fixes import file_size_limit

ROTATE = 4096
PAYLOAD = b"p" * 200  # 260 bytes a record: a segment holds 15


def payload(n: int) -> bytes:
    return PAYLOAD + n.to_bytes(4, "little")


def append(writer: JournalWriter, first: int, count: int) -> list[int]:
    """Append records ``first .. first + count - 1``; returns their seqs."""
    return [writer.append(RecordKind.EVENT, payload(n)) for n in range(first, first + count)]


def assert_intact(path, count: int) -> None:
    """Records 1..count, each once and in order, and a journal that verifies."""
    assert [(r.seq, r.payload) for r in JournalReader(path)] == \
        [(n + 1, payload(n)) for n in range(count)]
    result = verify(path)
    assert result.ok and result.torn is None and result.last_seq == count


@pytest.fixture
def refuse_segments(monkeypatch):
    """``refuse["left"] = n``: the next ``n`` segment files cannot be created (ENOSPC)."""
    real_open = os.open
    refuse = {"left": 0, "refused": 0}

    def open_(path, flags, *args, **kw):
        if flags & os.O_CREAT and str(path).endswith(journal_module.SEGMENT_SUFFIX) \
                and refuse["left"]:
            refuse["left"] -= 1
            refuse["refused"] += 1
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(journal_module.os, "open", open_)
    return refuse


def opened(path, fsync: str) -> tuple[JournalWriter, list]:
    """A buffered writer with small segments, 10 records in; and the failures it reports."""
    failures = []
    writer = JournalWriter(path, fsync=fsync, rotate_bytes=ROTATE, buffered=True,
                           on_failure=failures.append)
    append(writer, 0, 10)
    return writer, failures


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("fsync", ["always", "group", "none"])
def test_a_rotation_refused_at_an_append_is_done_by_the_flush(tmp_path, fsync, refuse_segments,
                                                              caplog):
    writer, failures = opened(tmp_path, fsync)
    writer.flush()
    refuse_segments["left"] = 1  # once: the disk has room again by the flush
    with caplog.at_level(logging.WARNING, logger="engine.journal"):
        assert append(writer, 10, 30) == list(range(11, 41))  # returned, none raised
    assert refuse_segments["refused"] == 1  # the appends after it left it to the flush
    assert len([r for r in caplog.records if "cannot start a new segment" in r.message]) == 1
    assert writer.flush() == 40
    # The batch went on in the first segment; the flush started the next one after it.
    assert [p.name for p in list_segments(tmp_path)] == [segment_name(1), segment_name(41)]
    append(writer, 40, 20)  # and rotation goes on as usual
    writer.flush()
    writer.close()
    assert len(list_segments(tmp_path)) >= 3
    assert failures == [] and writer.failure is None
    assert_intact(tmp_path, 60)


@pytest.mark.parametrize("fsync", ["always", "group"])
def test_a_rotation_the_disk_keeps_refusing_fails_stop_at_the_flush(tmp_path, fsync,
                                                                     refuse_segments):
    writer, failures = opened(tmp_path, fsync)
    writer.sync()
    refuse_segments["left"] = 1000
    assert append(writer, 10, 30) == list(range(11, 41))  # the handler is not interrupted
    with pytest.raises(JournalFailedError, match="cannot start the segment after "
                                                 f"{segment_name(1)}: .*No space left"):
        writer.flush()
    # Failed stop as on a failed fdatasync: reported once, nothing more acknowledged.
    assert len(failures) == 1 and writer.failure == str(failures[0])
    assert "after seq 10" in writer.failure and writer.durable_seq == 10
    append(writer, 40, 1)
    with pytest.raises(JournalFailedError):
        writer.flush()
    with pytest.raises(JournalFailedError):
        writer.call_when_durable(41, lambda: None)
    with pytest.raises(JournalFailedError):
        writer.sync()
    writer.close()
    assert len(failures) == 1
    # On disk: the acknowledged records and the last batch whole, once each, in one segment.
    assert_intact(tmp_path, 40)
    assert [p.name for p in list_segments(tmp_path)] == [segment_name(1)]
    refuse_segments["left"] = 0  # the operator makes room and restarts
    with JournalWriter(tmp_path, fsync=fsync, rotate_bytes=ROTATE, buffered=True) as reopened:
        assert reopened.last_seq == 40
        append(reopened, 40, 5)
    assert_intact(tmp_path, 45)
    assert len(list_segments(tmp_path)) == 2


@pytest.mark.parametrize("fsync", ["always", "none"])
def test_a_short_write_at_a_rotation_is_retried_until_the_disk_takes_it(tmp_path, fsync):
    writer = JournalWriter(tmp_path, fsync=fsync, rotate_bytes=ROTATE, buffered=True)
    append(writer, 0, 10)
    writer.flush()
    full = writer._segment.path.stat().st_size + 1000
    with file_size_limit(full):  # the disk fills up
        append(writer, 10, 5)  # 1300 bytes buffered: the write before the rotation is cut short
        assert append(writer, 15, 1) == [16]  # ... inside this append, which returns
        with pytest.raises(OSError, match="short journal write"):
            writer.flush()  # still full: undone, the records stay buffered (as any short write)
        assert append(writer, 16, 2) == [17, 18]
    assert writer.flush() == 18  # room again: the batch whole, then the rotation
    assert [p.name for p in list_segments(tmp_path)] == [segment_name(1), segment_name(19)]
    append(writer, 18, 10)
    writer.close()
    assert writer.failure is None
    assert_intact(tmp_path, 28)


def test_an_unbuffered_append_is_told_at_once(tmp_path, refuse_segments):
    """Unbuffered, ``append`` is the write (and under ``always`` the sync): it raises."""
    writer = JournalWriter(tmp_path, fsync="always", rotate_bytes=ROTATE)
    append(writer, 0, 15)
    refuse_segments["left"] = 1
    with pytest.raises(OSError, match="No space left"):
        append(writer, 15, 1)
    assert append(writer, 15, 1) == [16]  # the next one rotates
    writer.close()
    assert writer.failure is None
    assert [p.name for p in list_segments(tmp_path)] == [segment_name(1), segment_name(16)]
    assert_intact(tmp_path, 16)


# ---------------------------------------------------------------- waiters
def _waiters_fail(writer: JournalWriter, fail) -> None:
    """Waits under way on records not yet durable end with the failure; later ones at once."""
    async def run():
        durable = append(writer, 0, 2)[-1]
        writer.flush()
        await asyncio.wait_for(writer.wait_durable(durable), 5)
        seqs = append(writer, 2, 3)
        waits = [asyncio.ensure_future(writer.wait_durable(seq)) for seq in seqs]
        await asyncio.sleep(0.01)  # all registered, none done
        assert not any(w.done() for w in waits)
        fail()
        done, pending = await asyncio.wait(waits, timeout=5)
        assert not pending, "a wait_durable never learned that the journal failed"
        for wait in done:
            assert isinstance(wait.exception(), JournalFailedError)
        started = time.monotonic()
        with pytest.raises(JournalFailedError):
            await asyncio.wait_for(writer.wait_durable(seqs[-1]), 5)
        assert time.monotonic() - started < 0.5  # at once
        await writer.wait_durable(durable)  # a record durable before the failure still is

    asyncio.run(run())
    writer.close()


def _failing_fdatasync(monkeypatch):
    def fdatasync(fd):
        raise OSError(errno.EIO, "Input/output error (injected)")
    return lambda: monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)


def test_waits_under_way_fail_when_the_group_commit_fails(tmp_path, monkeypatch):
    writer = JournalWriter(tmp_path, fsync="group", group_commit_us=1000, buffered=True)
    break_disk = _failing_fdatasync(monkeypatch)

    def fail():
        break_disk()
        writer.flush()  # the committer's sync of it fails, on its thread

    _waiters_fail(writer, fail)
    assert "fdatasync of records" in writer.failure


def test_waits_under_way_fail_when_a_flush_fails(tmp_path, monkeypatch):
    writer = JournalWriter(tmp_path, fsync="always", buffered=True)
    break_disk = _failing_fdatasync(monkeypatch)

    def fail():
        break_disk()
        with pytest.raises(JournalFailedError):
            writer.flush()  # on the waiters' own thread and loop

    _waiters_fail(writer, fail)


def test_waits_under_way_fail_when_a_rotation_fails_at_the_flush(tmp_path, refuse_segments):
    writer = JournalWriter(tmp_path, fsync="group", rotate_bytes=ROTATE, buffered=True)

    def fail():
        refuse_segments["left"] = 1000
        append(writer, 10, 20)  # past rotate_bytes: refused, left to the flush
        with pytest.raises(JournalFailedError):
            writer.flush()

    _waiters_fail(writer, fail)
    assert "cannot start the segment" in writer.failure


def test_a_wait_on_a_journal_failed_from_another_thread_fails(tmp_path, monkeypatch):
    """The failure found while the loop is not waiting yet: the wait fails, it does not hang."""
    writer = JournalWriter(tmp_path, fsync="group", group_commit_us=1000, buffered=True)
    append(writer, 0, 1)
    _failing_fdatasync(monkeypatch)()
    seq = writer.flush()
    deadline = time.monotonic() + 5
    while writer.failure is None and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert writer.failure is not None

    async def run():
        with pytest.raises(JournalFailedError):
            await asyncio.wait_for(writer.wait_durable(seq), 1)

    asyncio.run(run())
    writer.close()
