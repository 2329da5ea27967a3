"""A resend of messages older than the session's ring is answered from the journal.

The ring keeps a session's last ``[intake] resend_ring_size`` messages in
memory; every message the engine sends is also journaled exactly as sent.
A client that missed more than the ring holds (its connection dropped while
it was not reading, a backlog it could not keep up with) was refused
``RESEND_UNAVAILABLE`` for the rest, and those reports were lost for good
although the journal had them (audit: 20,720 reports after an 8 s pause).
Here the ring holds 50 messages and the client asks for thousands.
"""
import threading
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject, ResendRequest
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port, kill_9,
                                              kill_if_running, open_session, start_subprocess)

RING = 50


def small_ring_config(tmp_path):
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", f"heartbeat_timeout_ms = 60000\nresend_ring_size = {RING}"))
    return path, f"tcp://127.0.0.1:{port}"


def place(client, count, prefix) -> int:
    """``count`` resting orders in bulks of 1000, each acknowledged; returns the last seq."""
    for start in range(0, count, 1000):
        client.bulk([client.build_new_order("AAA", "buy", "1", "40.00", account="DEMO1",
                                            cl_ord_id=f"{prefix}-{i}")
                     for i in range(start, min(count, start + 1000))])
    acked = 0
    while acked < count:
        message = client.recv(10)
        if isinstance(message, ExecutionReport) and message.exec_type == ExecType.NEW:
            acked += 1
    return client.last_seq


def resumed_from(endpoint, session_id, after) -> tuple[list, Client]:
    """Resume ``session_id`` on a new connection from ``after``; every message up to the
    replay's closing HeartbeatAck, in the order the client hands them over."""
    client = Client(endpoint)
    client.resume(session_id, after)
    got = client.recv_until(lambda m: isinstance(m, HeartbeatAck)
                            and m.resend_begin_seq == after + 1, 30)
    return got, client


def check_replay(got, client, first, last):
    numbered = [m.seq for m in got[:-1]]
    assert numbered == list(range(first, last + 1))
    assert not [m for m in got if isinstance(m, Reject)]
    ack = got[-1]
    assert (ack.resend_begin_seq, ack.resend_end_seq) == (first, last)
    assert (client.gaps, client.lost, client.duplicates) == ([], [], 0)


def test_a_resume_from_far_behind_the_ring_gets_every_message_from_the_journal(tmp_path):
    path, endpoint = small_ring_config(tmp_path)
    with ThreadedEngine(path):
        with open_session(endpoint) as first:
            last = place(first, 2500, "o")
            session_id = first.session_id
        # From before the second journal mark (every 1000th message), and from the start.
        for after in (1500, 0):
            got, client = resumed_from(endpoint, session_id, after)
            with client:
                # (each resume's closing ack is one more message of the session)
                check_replay(got, client, after + 1, got[-1].seq - 1)
                assert got[-1].seq - 1 == (last if after else last + 1)


def test_after_kill_9_the_recovered_session_is_resent_from_the_journal(tmp_path):
    path, endpoint = small_ring_config(tmp_path)
    proc = start_subprocess(path, tmp_path / "engine.log")
    try:
        with open_session(endpoint) as first:
            last = place(first, 1200, "k")
            session_id = first.session_id
        time.sleep(0.2)
    finally:
        kill_9(proc)
    proc = start_subprocess(path, tmp_path / "engine.log")
    try:
        got, client = resumed_from(endpoint, session_id, 0)
        with client:
            # (the resume's closing ack ends the numbering after the first session's last)
            check_replay(got, client, 1, got[-1].seq - 1)
            assert got[-1].seq - 1 >= last
            news = [m for m in got if isinstance(m, ExecutionReport)]
            assert sorted(m.cl_ord_id for m in news) == sorted(f"k-{i}" for i in range(1200))
    finally:
        kill_if_running(proc)


def test_resends_that_reach_into_the_journal_while_it_reads_wait_for_it(tmp_path):
    """A client asking again and again (audit: 1,000 pipelined ResendRequests) made the engine
    replay the same range each time. One journal read per session runs at a time; the
    connection's other such requests wait for it (16 at most, then THROTTLED), and none is
    left unanswered: a refused one left engine.client with a gap it never asked for again."""
    path, endpoint = small_ring_config(tmp_path)
    with ThreadedEngine(path) as engine:
        with open_session(endpoint) as first:
            last = place(first, 300, "t")
            session_id = first.session_id
        pipeline = engine.service.pipeline
        release = threading.Event()
        read = pipeline.sent_frames

        def held_read(*args):
            release.wait(10)
            return read(*args)
        pipeline.sent_frames = held_read
        with Client(endpoint, auto_resend=False) as client:
            client.resume(session_id, 0)
            for _ in range(17):
                client.send(ResendRequest(begin_seq=1, end_seq=10))
            refused = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
            assert (refused.reject_name, refused.ref_type) == ("THROTTLED", "ResendRequest")
            release.set()
            acks = []
            while len(acks) < 17:
                message = client.recv(10)
                if isinstance(message, HeartbeatAck) and message.resend_begin_seq == 1:
                    acks.append(message)
            assert acks[0].resend_end_seq >= last  # the resume's, first
            assert [a.resend_end_seq for a in acks[1:]] == [10] * 16


def test_a_replay_larger_than_the_backlog_bound_reaches_a_slow_connection_whole(tmp_path):
    """ZeroMQ takes 20 messages for the connection, the backlog holds 50 more: a replay of
    thousands from the journal went through that backlog, its oldest frames were dropped, and
    the client was told by the closing ack that they were lost (audit: 3,953 of 5,003)."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000",
        f"heartbeat_timeout_ms = 60000\nresend_ring_size = {RING}\nsend_hwm = 20"))
    endpoint = f"tcp://127.0.0.1:{port}"
    with ThreadedEngine(path):
        with open_session(endpoint) as first:
            last = place(first, 2000, "s")
            session_id = first.session_id
        got, client = resumed_from(endpoint, session_id, 0)
        with client:
            check_replay(got, client, 1, got[-1].seq - 1)
            assert got[-1].seq - 1 >= last
