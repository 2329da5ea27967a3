"""A gateway whose stored cursor is past the end of its journal refuses to go on.

The journal lost records that were delivered: restored from an older copy, its
``durable.seq`` removed to start on what was left (the engine's own advice for
a journal cut short), a tail lost to a power cut under ``fsync = "none"``. Its
next records take seqs the destination already holds. The gateway resumed
after its cursor: it skipped them without a word (consumers would have dropped
them as repeats anyway), and carried on once the journal had grown past the
cursor. It now reports ``CursorAheadError`` and delivers nothing, at every
retry, however far the journal grows meanwhile, as for another journal's cursor.
"""
import shutil

import pytest

from engine.journal import JournalWriter
from gateways import from_config
from tests.unit.gateways.helpers import wait_until, write_fills


def zmq_table():
    return {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
            "poll_interval_ms": 1, "backoff_initial_ms": 20, "backoff_max_ms": 50,
            "isolation": "thread", "cursor_interval_ms": 0}


def test_a_cursor_past_a_restored_journal_is_refused_and_stays_refused(tmp_path):
    journal = tmp_path / "journal"
    writer = JournalWriter(journal, fsync="always")
    write_fills(writer, 1, 5)
    writer.close()
    shutil.copytree(journal, tmp_path / "backup")          # the copy an operator keeps
    writer = JournalWriter(journal, fsync="always")
    write_fills(writer, 6, 5)                              # seqs 11..20
    [gateway] = from_config([zmq_table()], journal, tmp_path / "gw")
    gateway.start()
    try:
        assert gateway.wait_for(writer.last_seq, 10)
    finally:
        gateway.stop()
        writer.close()
    delivered = gateway.metrics.cursor
    assert delivered == 20
    # The journal restored from the copy: same journal, 10 records shorter.
    shutil.rmtree(journal)
    shutil.copytree(tmp_path / "backup", journal)
    writer = JournalWriter(journal, fsync="always")
    [restarted] = from_config([zmq_table()], journal, tmp_path / "gw")
    restarted.start()
    try:
        assert wait_until(lambda: "CursorAheadError" in restarted.metrics.last_error, 5), \
            restarted.metrics.snapshot()
        assert "seq 20" in restarted.metrics.last_error and "seq 10" in restarted.metrics.last_error
        # New records take seqs 11.. (the consumers' 11..20 were others): never skipped
        # in silence, also once the journal is past the old cursor.
        write_fills(writer, 100, 20)
        failures = restarted.metrics.failures
        assert wait_until(lambda: restarted.metrics.failures >= failures + 3, 5)
        assert restarted.metrics.delivered == 0
        assert "CursorAheadError" in restarted.metrics.last_error
    finally:
        restarted.stop()
        writer.close()


def test_a_cursor_within_the_journal_is_not_refused(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="always")
    write_fills(writer, 1, 5)
    [gateway] = from_config([zmq_table()], tmp_path / "journal", tmp_path / "gw")
    gateway.start()
    try:
        assert gateway.wait_for(writer.last_seq, 10)
    finally:
        gateway.stop()
    write_fills(writer, 6, 5)
    [restarted] = from_config([zmq_table()], tmp_path / "journal", tmp_path / "gw")
    restarted.start()
    try:
        assert restarted.wait_for(writer.last_seq, 10), restarted.metrics.last_error
        assert restarted.metrics.failures == 0
    finally:
        restarted.stop()
        writer.close()
