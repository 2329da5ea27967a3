"""Graceful shutdown: an order in the journal had its acknowledgement delivered.

A real engine runs as a subprocess under ``fsync = "group"`` with a 300 ms
commit window, so that the acknowledgements of the orders sent just before
SIGTERM are still held for the committer when the stop begins. The client
keeps sending orders through the stop: the early ones are taken, then they
are refused with ENGINE_SHUTTING_DOWN, and once the sockets are closed
nothing answers (and nothing is journaled). After the engine exits, every
message the journal says was sent to the client must have reached it.
"""
import signal
import time

import msgspec
import pytest

from engine.client import Client
from engine.journal import JournalReader, RecordKind, verify
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject, RejectReason
from tests.integration.engine_harness import (config_text, free_port, kill_if_running, start_subprocess,
                                             terminate)


def _journaled(journal_dir, session_id):
    """(seqs of the messages journaled as sent to the session, cl_ord_ids of its NewOrders)."""
    sent, ordered = set(), set()
    decoder = msgspec.msgpack.Decoder()
    for record in JournalReader(journal_dir):
        payload = record.decode(decoder)
        if payload.get("session_id") != session_id:
            continue
        if record.kind == RecordKind.EVENT:
            sent.add(payload["event"]["seq"])
        elif record.kind == RecordKind.COMMAND and payload["request"]["type"] == "NewOrder":
            ordered.add(payload["request"]["cl_ord_id"])
    return sent, ordered


def test_sigterm_under_group_commit_delivers_every_journaled_ack(tmp_path):
    port = free_port()
    journal_dir = tmp_path / "journal"
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, journal_dir, fsync="group").replace(
        'fsync = "group"', 'fsync = "group"\ngroup_commit_us = 300000'))
    log_path = tmp_path / "engine.log"
    proc = start_subprocess(config, log_path)
    received = []
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            client.heartbeat()
            ack = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
            for i in range(5):
                client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id=f"held-{i}")
            time.sleep(0.05)  # journaled; the acks wait for the commit window
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            late = 0
            while proc.poll() is None and time.monotonic() < deadline:
                client.new_order("AAA", "buy", "10", "49.00", account="DEMO1",
                                 cl_ord_id=f"late-{late}")
                late += 1
                received.extend(client.drain(0.005))
            received.extend(client.drain(0.5))
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    sent, ordered = _journaled(journal_dir, ack.session_id)
    got = {m.seq for m in received} | {ack.seq}
    assert sent - got == set(), "journaled as sent but never delivered"
    answered = {m.cl_ord_id for m in received if isinstance(m, (ExecutionReport, Reject))}
    assert {f"held-{i}" for i in range(5)} <= ordered
    assert ordered - answered == set(), "orders in the journal without an acknowledgement"
    news = {m.cl_ord_id for m in received
            if isinstance(m, ExecutionReport) and m.exec_type == ExecType.NEW}
    assert news >= {f"held-{i}" for i in range(5)}
    refused = [m for m in received if isinstance(m, Reject)
               and m.reject_reason == RejectReason.ENGINE_SHUTTING_DOWN]
    assert refused, "no order sent during the stop was refused with ENGINE_SHUTTING_DOWN"
    assert all(m.cl_ord_id.startswith("late-") and m.cl_ord_id not in ordered for m in refused)
    result = verify(journal_dir)
    assert result.ok and result.torn is None
    text = log_path.read_text()
    assert "Traceback" not in text and "non-socket" not in text and "ENOTSOCK" not in text
    assert "engine: stopped" in text


def test_a_graceful_stop_under_none_seals_the_journal(tmp_path):
    """Under fsync = "none" the stop syncs everything; durable.seq now says so, and a
    journal cut short after the stop is refused (it read as a crash's torn tail)."""
    from engine.journal import JournalError, JournalWriter, list_segments, written_mark
    port = free_port()
    journal_dir = tmp_path / "journal"
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, journal_dir, fsync="none"))
    proc = start_subprocess(config, tmp_path / "engine.log")
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="s1")
            client.recv_until(lambda m: isinstance(m, ExecutionReport)
                              and m.exec_type == ExecType.NEW, 5)
        assert terminate(proc) == 0
    finally:
        kill_if_running(proc)
    result = verify(journal_dir)
    assert result.ok and written_mark(journal_dir) == (result.last_seq, True) and result.last_seq > 0
    last = list_segments(journal_dir)[-1]
    last.write_bytes(last.read_bytes()[:-3])
    assert not verify(journal_dir).ok
    with pytest.raises(JournalError, match="was made durable"):
        JournalWriter(journal_dir, fsync="none")
