"""A client that reconnects under a routing id of its own keeps its session.

When the engine's send to a connection fails (the client went), the session is kept
under that routing id for requests still unread from it. A client that set its own
routing id and reconnected with it was taken for that departed session but never
given the route back: the engine answered nothing on the new connection, not even
a resume's replay.
"""
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, OrderStatusReply, OrdStatus
from tests.integration.engine_harness import serving, slow_sim

ROUTING_ID = b"algo-7-fixed"


def test_a_reconnect_under_the_same_routing_id_is_answered_and_replayed(tmp_path):
    with serving(tmp_path, sim=slow_sim(tmp_path, 300_000)) as (_, endpoint):
        with Client(endpoint, routing_id=ROUTING_ID, auto_resume=False) as first:
            first.heartbeat()
            session = first.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1].session_id
            first.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="r1")
            first.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
            first.drain(0.8)  # resting at its venue
            first.cancel("r1", account="DEMO1", cl_ord_id="r1-c")
        # Gone before the venue confirms the cancel: the engine's CANCELED finds no
        # connection, and the session is kept under this routing id.
        # The CANCELED is sent (and fails) while no connection has the id: the venue's
        # round trip is 600 ms, so ask the engine (on a connection of its own) rather than
        # sleep about that long.
        with Client(endpoint) as observer:
            deadline = time.monotonic() + 5
            while True:
                observer.status("r1", account="DEMO1")
                reply = observer.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
                if reply.report.ord_status == OrdStatus.CANCELED or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        with Client(endpoint, routing_id=ROUTING_ID, auto_resume=False) as second:
            second.heartbeat()
            ack = second.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
            assert ack.session_id == session
            second.resume(session, 1)
            replayed = second.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            canceled = [m for m in replayed if isinstance(m, ExecutionReport)]
            assert ("r1-c", ExecType.CANCELED) in [(m.cl_ord_id, m.exec_type) for m in canceled]
            assert replayed[-1].session_id == session
