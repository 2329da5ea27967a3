"""One journal, one writer: a second engine on a journal directory in use refuses to start,
naming the engine that holds it, and a killed engine leaves no lock behind.

Both engines used to start: they interleaved their records (both numbered from the same
seq), accepted the same cl_ord_id twice, and left a journal no engine could start on.
"""
import os
import signal
import subprocess
import sys

import pytest

from engine.client import Client
from engine.journal import JournalLockedError, JournalWriter, RecordKind, segment_name, verify
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import config_text, free_port, start_subprocess


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    with JournalWriter(tmp_path, fsync="none"):
        with pytest.raises(JournalLockedError, match=rf"in use by another engine \(pid {os.getpid()}"):
            JournalWriter(tmp_path, fsync="none")
    JournalWriter(tmp_path, fsync="none").close()  # released


def test_a_second_engine_on_a_journal_in_use_refuses_to_start(tmp_path):
    journal = tmp_path / "journal"
    first_port, second_port = free_port(), free_port()
    (tmp_path / "a.toml").write_text(config_text(first_port, journal, fsync="always"))
    (tmp_path / "b.toml").write_text(config_text(second_port, journal, fsync="always"))
    first = start_subprocess(tmp_path / "a.toml", tmp_path / "a.log")
    try:
        with Client(f"tcp://127.0.0.1:{first_port}") as client:
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="one")
            acked = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            assert acked.exec_type == ExecType.NEW
        second = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config",
                                 str(tmp_path / "b.toml"), "--duration", "1"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"kronos-exec serve: cannot start on journal {journal}: {journal} is in use by "
            f"another engine (pid {first.pid}, which holds {journal}/journal.lock); one "
            f"journal has one writer")
        assert verify(journal).ok  # untouched by the refused engine
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # kill -9 leaves no lock: an engine starts on the journal at once, with the order.
    second = start_subprocess(tmp_path / "b.toml", tmp_path / "b.log")
    try:
        with Client(f"tcp://127.0.0.1:{second_port}") as client:
            client.status("one", account="DEMO1")
            assert client.recv(5).found
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(10)


def test_an_engine_refuses_a_journal_whose_first_segments_are_gone(tmp_path):
    """No checkpoints: the engine's state is the whole journal's replay. Started on what was
    left after the first segment was deleted, it missed a resting order and its fills, and
    took the order's cl_ord_id for a new one."""
    from engine.journal import list_segments
    from engine.recovery import RecoveryError
    from tests.integration.engine_harness import ThreadedEngine
    port = free_port()
    path, journal = tmp_path / "engine.toml", tmp_path / "journal"
    path.write_text(config_text(port, journal).replace('fsync = "none"',
                                                       'fsync = "none"\nrotate_bytes = 4096'))
    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}") as client:
        for n in range(30):
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=f"o{n}")
            client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
    segments = list_segments(journal)
    assert len(segments) > 2
    segments[0].unlink()
    assert verify(journal).ok  # what is left still verifies, from its first header
    with pytest.raises(RecoveryError, match=r"the journal begins at seq \d+ .*: its first "
                                            r"segments were archived or deleted"):
        with ThreadedEngine(path):
            pass


def refusal_of(config_path) -> str:
    """``serve`` on a configuration it must refuse: exit 1, no traceback; its last line."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config",
                           str(config_path), "--duration", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1]


def test_a_journal_directory_that_cannot_be_made_is_one_line_not_a_traceback(tmp_path):
    in_the_way = tmp_path / "journal"
    in_the_way.write_text("a file where the journal's directory should be")
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), in_the_way))
    assert refusal_of(path) == (
        f"kronos-exec serve: cannot start on journal {in_the_way}: cannot make the journal "
        f"directory {in_the_way}: File exists")


def test_a_lock_file_that_cannot_be_opened_is_one_line_not_a_traceback(tmp_path):
    journal = tmp_path / "journal"
    (journal / "journal.lock").mkdir(parents=True)  # a directory where the lock file goes
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), journal))
    assert refusal_of(path) == (
        f"kronos-exec serve: cannot start on journal {journal}: cannot open the journal's "
        f"lock file {journal / 'journal.lock'}: Is a directory")


@pytest.mark.parametrize("fsync", ["group", "always"])
def test_reopening_syncs_what_a_killed_writer_left_before_calling_it_durable(
        tmp_path, monkeypatch, fsync):
    """A writer killed inside its group window left records written, perhaps not on disk;
    the next writer marks them durable (gateways publish them), so it syncs them first."""
    import engine.journal as journal_module
    writer = JournalWriter(tmp_path, fsync="none")  # written, never synced: as at a kill
    for n in range(5):
        writer.append(RecordKind.META, b"x%d" % n)
    last = writer.last_seq
    writer.close()
    synced = []
    real = journal_module.os.fdatasync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(journal_module.os, "fdatasync", spy)
    reopened = JournalWriter(tmp_path, fsync=fsync)
    try:
        assert reopened.durable_seq == last == 5
        assert str(tmp_path / segment_name(1)) in synced
    finally:
        reopened.close()
