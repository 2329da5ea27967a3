"""Sessions intake lets go (evicted at max_sessions, or past session_retention_s) leave the
pipeline too: its table of sessions, each with its resend ring, grew with every connection
that ever sent a request, past max_sessions, for the life of the process."""
import time

from engine.client import Client
from engine.messages import OrderStatusReply, OrderStatusRequest
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port


def test_the_pipelines_sessions_stay_within_max_sessions(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000",
        "heartbeat_timeout_ms = 200\nheartbeat_interval_ms = 100\nmax_sessions = 5"))
    with ThreadedEngine(path) as engine:
        for n in range(40):  # short connections, each asking once, then gone
            if n % 4 == 0:
                time.sleep(0.25)  # silent past the timeout: the oldest may be evicted
            with Client(endpoint) as client:
                client.send(OrderStatusRequest(cl_ord_id="nope", account="DEMO1"))
                assert isinstance(client.recv(5), OrderStatusReply)
        held = engine.call(lambda: (len(engine.service.intake.sessions),
                                    set(engine.service.pipeline.sessions)))
        assert held[0] <= 5
        assert held[1] <= set(engine.call(lambda: list(engine.service.intake.sessions)))
