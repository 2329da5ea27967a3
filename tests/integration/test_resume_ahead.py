"""A client that has seen more of a session than the engine sent (the engine's journal lost
its tail: fsync "none" and a power cut, a restored backup) is told so, never numbered over.

The engine clamped the resume to what it had and went on from its own last seq: its closing
HeartbeatAck and the next acknowledgements reused seqs the client already had, which the
client dropped as repeats, so the resume never completed and new orders' acks vanished.
A refused resume itself reached the client only if it resumed from seq 0.
"""
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject
from tests.integration.engine_harness import serving


def test_a_resume_from_past_the_sessions_end_is_refused_and_the_client_goes_on(tmp_path):
    with serving(tmp_path) as (_, endpoint):
        with Client(endpoint) as first:
            first.heartbeat()
            first.recv(5)
            first.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a1")
            acked = first.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            session_id = first.session_id
        assert acked.seq == 2
        with Client(endpoint) as again:
            again.resume(session_id, 9)  # "I have seen 9": the engine sent 2
            refused = again.recv(5)
            assert isinstance(refused, Reject) and refused.reject_name == "RESUME_REFUSED"
            assert refused.text.startswith(f"session {session_id} has sent 2 messages and you "
                                           f"have seen 9: this engine lost messages")
            assert not again.resuming and again.session_id is None
            # The connection goes on in a session of its own; nothing is dropped as a repeat.
            again.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a2")
            ack = again.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            assert (ack.cl_ord_id, ack.exec_type) == ("a2", ExecType.NEW)
            assert again.duplicates == 0


def test_a_refused_resume_of_an_unknown_session_reaches_a_client_resuming_from_far(tmp_path):
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        client.resume("0123456789abcdef", 500)
        refused = client.recv(5)
        assert isinstance(refused, Reject) and refused.reject_name == "RESUME_REFUSED"
        client.heartbeat()
        assert isinstance(client.recv(5), HeartbeatAck) and client.session_id is not None


def test_a_resend_from_past_the_sessions_end_is_refused_outside_the_numbering(tmp_path):
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        client.heartbeat()
        client.recv(5)
        client.resend(99)
        refused = client.recv(5)
        assert isinstance(refused, Reject) and refused.seq == 0
        assert (refused.reject_name, refused.ref_type, refused.text) == (
            "INVALID_FIELD", "ResendRequest",
            "begin_seq 99 is past this session's last message, seq 1")


def test_resumes_from_past_the_end_are_logged_sparsely_as_warnings(tmp_path, caplog):
    """Audit (stop 33): 200 such resumes wrote 200 ERROR lines saying the engine had lost
    messages, which any client can make it write at will."""
    import logging
    caplog.set_level(logging.INFO, logger="engine.intake")
    with serving(tmp_path) as (_, endpoint):
        with Client(endpoint) as first:
            first.heartbeat()
            first.recv(5)
            session_id = first.session_id
        for _ in range(15):
            with Client(endpoint, auto_resume=False) as again:
                again.resume(session_id, 9)
                assert again.recv(5).reject_name == "RESUME_REFUSED"
    lines = [r for r in caplog.records if f"resume of session {session_id}" in r.getMessage()]
    assert len(lines) == 10 and {r.levelno for r in lines} == {logging.WARNING}
    assert "a client's error, or messages lost" in lines[0].getMessage()
