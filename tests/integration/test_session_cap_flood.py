"""A connection refused a session (its key at ``intake.max_sessions_per_key``, or the engine
at ``intake.max_sessions``, every session connected) cannot flood the log, and its frames
are charged to its key's ``intake.request_rate`` like every other refusal of intake's.

Before, each frame on such a connection was tried as a new session again, and each was
refused with an ERROR line and an answer: 2000 heartbeats gave 2000 ERROR lines and 2000
answers within a second, whatever the key's ``request_rate`` (100 here). Any allowed key
could fill the log at line rate; on a plaintext endpoint, any peer.
"""
import logging

import pytest

from engine.config import IntakeConfig
from engine.intake import IntakeServer, IntakeThread
from engine.messages import Heartbeat, HeartbeatAck, Reject
from tests.integration.test_intake_curve import connect, keys, security_for  # noqa: F401 - fixture
from tests.unit.engine.test_intake import EchoHandler

FRAMES = 2000


def _drain(client) -> list:
    out = []
    try:
        while True:
            out.append(client.recv(1))
    except TimeoutError:
        return out


@pytest.mark.parametrize("limit", [{"max_sessions_per_key": 1}, {"max_sessions": 1}])
def test_frames_of_a_connection_refused_a_session_are_charged_and_logged_sparsely(
        keys, caplog, limit):
    config = IntakeConfig(endpoints=["tcp://127.0.0.1:*"], heartbeat_interval_ms=200,
                          heartbeat_timeout_ms=60_000, request_rate=100, **limit)
    thread = IntakeThread(IntakeServer(config, security_for(keys), EchoHandler())).start()
    first = connect(thread, keys, "alice")
    second = connect(thread, keys, "alice")
    try:
        first.heartbeat()
        assert isinstance(first.recv(5), HeartbeatAck)  # the one session: connected
        with caplog.at_level(logging.INFO, logger="engine.intake"):
            for _ in range(FRAMES):
                second.send(Heartbeat(v=1))
            answers = _drain(second)
        assert all(isinstance(m, Reject) and m.seq == 0 for m in answers)
        names = [m.reject_name for m in answers]
        refused = names.count("NOT_AUTHORIZED")
        # Charged to alice's request_rate: past its bucket, THROTTLED (a refusal's own answer).
        assert 0 < refused <= config.request_bucket + 100 and "THROTTLED" in names
        refusal_lines = [r for r in caplog.records if "refusing a new one" in r.getMessage()]
        assert 1 <= len(refusal_lines) <= 10
        # The session it has is still served.
        first.heartbeat()
        assert any(isinstance(m, HeartbeatAck) for m in _drain(first))
    finally:
        first.close()
        second.close()
        thread.stop()
