"""A client waiting in ``recv`` keeps its session alive at the engine, and with it a
cancel-on-disconnect session's orders.

The engine times a session out after ``heartbeat_timeout_ms`` without a message from it,
and cancels the working orders of one that opted in to cancel on disconnect. ZeroMQ's
pings, which ``engine.client`` sent before, are libzmq's and never reach the engine's
loop: a client that only waited for its fills had them canceled under it. Its liveness
probes (``Heartbeat`` requests on a silent connection) are the session's own messages.
"""
import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrdStatus, OrderStatusReply
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port


@pytest.mark.parametrize("heartbeat_s, kept", [(0.3, True), (0, False)])
def test_a_client_waiting_in_recv_keeps_its_cancel_on_disconnect_orders(tmp_path, heartbeat_s,
                                                                      kept):
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 1000\nheartbeat_interval_ms = 300"))
    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}", heartbeat_s=heartbeat_s,
                                      heartbeat_timeout_s=0.9) as client:
        client.heartbeat(cancel_on_disconnect=True)
        client.recv(5)
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="cod-1")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.exec_type == ExecType.NEW, 5)
        got = client.drain(2.5)  # the caller waits: nothing to send, nothing from the engine
        if kept:
            assert got == [] and client.probes >= 3 and client.reconnects == 0
        else:  # (the control: the engine does time such a session out)
            assert [(m.cl_ord_id, m.exec_type) for m in got
                    if isinstance(m, ExecutionReport)] == [("cod-1", ExecType.CANCELED)]
        client.status("cod-1", account="DEMO1")
        reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert reply.report.ord_status == (OrdStatus.NEW if kept else OrdStatus.CANCELED)
