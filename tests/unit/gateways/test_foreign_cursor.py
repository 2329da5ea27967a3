"""A gateway's stored cursor counts in one journal's seqs: one of another journal (the journal
made anew, its seqs starting again at 1) is refused, never resumed from.

Resuming from it skipped the new journal's records up to the old cursor, with a lag of 0.
"""
import logging

from engine.journal import journal_identity
from gateways import from_config
from tests.unit.gateways.helpers import new_journal, wait_until


def make_gateway(tmp_path):
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "poll_interval_ms": 1, "backoff_initial_ms": 20, "backoff_max_ms": 50,
             "isolation": "thread"}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


def test_a_cursor_file_of_another_journal_is_refused_until_removed(tmp_path, caplog):
    old_last = new_journal(tmp_path, 20)
    old_id = journal_identity(tmp_path / "journal")
    gateway = make_gateway(tmp_path)
    gateway.start()
    try:
        assert gateway.wait_for(old_last, 10)
    finally:
        gateway.stop()
    assert gateway.read_cursor_file()["journal"] == old_id

    last = new_journal(tmp_path, 3)  # 6 records, far below the old cursor (40)
    assert last < old_last and journal_identity(tmp_path / "journal") != old_id
    gateway = make_gateway(tmp_path)
    with caplog.at_level(logging.ERROR, logger="gateways.base"):
        gateway.start()
        try:
            assert wait_until(lambda: "ForeignCursorError" in (gateway.metrics.last_error or ""), 5)
            assert f"belongs to journal {old_id}" in gateway.metrics.last_error
            # Nothing delivered, nothing skipped: the cursor has not moved.
            assert gateway.metrics.delivered == 0 and gateway.metrics.cursor == 0
            # (Logged just after last_error is set, by the gateway's thread.)
            assert wait_until(lambda: any("ForeignCursorError" in r.getMessage()
                                          for r in list(caplog.records)
                                          if r.levelno == logging.ERROR), 5)
            # What the error says to do: remove the cursor. The retry starts at seq 1.
            gateway.cursor_path.unlink()
            assert gateway.wait_for(last, 10)
            assert gateway.metrics.delivered == 3  # the new journal's three fills
        finally:
            gateway.stop()
    assert gateway.read_cursor_file() == {
        **gateway.read_cursor_file(), "seq": last, "journal": journal_identity(tmp_path / "journal")}


def test_a_cursor_file_naming_no_journal_is_taken_as_this_ones(tmp_path):
    """Cursor files written before cursors named their journal go on working."""
    last = new_journal(tmp_path, 5)
    gateway = make_gateway(tmp_path)
    gateway.cursor_path.parent.mkdir(parents=True)
    gateway.cursor_path.write_text('{"seq": 4, "published": 0}')  # through fill 2
    gateway.start()
    try:
        assert gateway.wait_for(last, 10)
        assert gateway.metrics.delivered == 3 and not gateway.metrics.last_error
    finally:
        gateway.stop()
