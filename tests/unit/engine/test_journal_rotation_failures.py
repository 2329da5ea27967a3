"""The journal on a disk that refuses a rotation, and waiters on a journal that fails.

The engine's writer is buffered: records are framed in memory by ``append``
in the middle of a request's handling, and written by ``flush``. A disk
problem at a segment rotation (the new file cannot be made, or the batch
written first is cut short) must not raise out of ``append``: the handler
would stop half-way through an order. The records go on in the current
segment, the rotation is tried again, and nothing is lost or repeated.
"""
import asyncio
import errno

import pytest

import engine.journal as journal_module
from engine.journal import JournalFailedError, JournalReader, JournalWriter, RecordKind, verify

PAYLOAD = b"x" * 200


def _records(path):
    return [(r.seq, r.payload) for r in JournalReader(path)]


def test_a_new_segment_the_disk_refuses_leaves_append_working(tmp_path, monkeypatch):
    real_open = journal_module.os.open
    refusing = {"on": False}

    def open_(path, flags, *args):
        if refusing["on"] and flags & journal_module.os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", open_)
    journal = JournalWriter(tmp_path, fsync="always", rotate_bytes=4096, buffered=True)
    refusing["on"] = True
    seqs = [journal.append(RecordKind.EVENT, PAYLOAD + bytes([n])) for n in range(40)]
    journal.flush()  # written into the first segment, past rotate_bytes
    assert seqs == list(range(1, 41))
    assert len(journal_module.list_segments(tmp_path)) == 1
    refusing["on"] = False
    seqs += [journal.append(RecordKind.EVENT, PAYLOAD + bytes([n])) for n in range(40, 60)]
    journal.flush()
    journal.close()
    assert len(journal_module.list_segments(tmp_path)) >= 2  # rotation resumed
    assert _records(tmp_path) == [(n + 1, PAYLOAD + bytes([n])) for n in range(60)]
    assert verify(tmp_path).ok


def test_a_short_write_before_a_rotation_is_retried_by_the_flush(tmp_path, monkeypatch):
    journal = JournalWriter(tmp_path, fsync="always", rotate_bytes=4096, buffered=True)
    real_write = journal_module.os.write
    cut = {"left": 1}

    def write(fd, data):
        if cut["left"] and len(data) > 1000:  # the batch written before the rotation
            cut["left"] -= 1
            return real_write(fd, bytes(data)[:100])
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", write)
    for n in range(40):  # crosses rotate_bytes while everything is buffered
        journal.append(RecordKind.EVENT, PAYLOAD + bytes([n]))
    assert cut["left"] == 0  # the cut happened inside append, which did not raise
    journal.flush()
    for n in range(40, 60):
        journal.append(RecordKind.EVENT, PAYLOAD + bytes([n]))
    journal.flush()
    journal.close()
    assert _records(tmp_path) == [(n + 1, PAYLOAD + bytes([n])) for n in range(60)]
    assert verify(tmp_path).ok


def test_an_unbuffered_writer_is_told_at_once(tmp_path, monkeypatch):
    journal = JournalWriter(tmp_path, fsync="none", rotate_bytes=4096)
    real_open = journal_module.os.open

    def open_(path, flags, *args):
        if flags & journal_module.os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", open_)
    with pytest.raises(OSError):
        for n in range(40):
            journal.append(RecordKind.EVENT, PAYLOAD)


def test_waiters_learn_that_the_journal_failed(tmp_path, monkeypatch):
    def fdatasync(fd):
        raise OSError(errno.EIO, "Input/output error")

    async def run():
        journal = JournalWriter(tmp_path, fsync="group", group_commit_us=1000, buffered=True)
        monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
        seq = journal.append(RecordKind.EVENT, PAYLOAD)
        journal.flush()  # the committer's sync fails
        with pytest.raises(JournalFailedError):
            await asyncio.wait_for(journal.wait_durable(seq), 5)
        with pytest.raises(JournalFailedError):  # after the failure: at once
            await asyncio.wait_for(journal.wait_durable(seq + 1), 1)
        assert journal.failure is not None

    asyncio.run(run())
