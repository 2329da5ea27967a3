"""An IOC or market order in flight at a kill -9 ends after the restart; a DAY order works on.

"Immediate" means at the market its sender saw. The embedded venues die
with the engine, so after a restart an order whose child was on its way has
nothing at any venue: a DAY order is routed again for its remainder, an
immediate one (IOC or market, not on a schedule) is canceled and its client
told why, never sent to the market of seconds or hours later.

The engine runs as a subprocess that the test kills with SIGKILL (journal
fsync left at its default: the process dies, the OS keeps what it wrote).
Its market has resting offers from the simulator's warm-up on (liquidity
providers only, nobody takes them) and every venue is 1 s away, so the
orders' children are still on their way out when the engine dies, and
whatever is sent after the restart fills about 2 s later. The client sees
everything over the wire, resuming its session after the restart.
"""

from engine.client import Client
from engine.messages import (ExecType, ExecutionReport, HeartbeatAck, OrderStatusReply,
                             OrdStatus)
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port, kill_9,
                                              slow_sim, start_subprocess)

ACCOUNT = "DEMO1"
#: A dollar and more through any offer the warm-up leaves around 50.00 (there is no collar).
MARKETABLE = "55.00"


def _config(tmp_path):
    """A market with resting offers and venues 1 s away; returns (path, endpoint)."""
    sim = slow_sim(tmp_path, 1_000_000)
    sim.write_text(sim.read_text().replace("lp_rate = 0.0", "lp_rate = 20.0"))
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", sim=sim))
    return path, f"tcp://127.0.0.1:{port}"


def _accepted(client, cl_ord_id, tif, price=MARKETABLE):
    client.new_order("AAA", "buy", "1", price, account=ACCOUNT, cl_ord_id=cl_ord_id,
                     time_in_force=tif)
    return client.recv_until(lambda m: isinstance(m, ExecutionReport)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def _status(client, cl_ord_id) -> OrderStatusReply:
    client.status(cl_ord_id, account=ACCOUNT)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def test_an_ioc_in_flight_at_kill_9_is_canceled_not_sent_again_a_day_order_is(tmp_path):
    path, endpoint = _config(tmp_path)
    proc = start_subprocess(path, tmp_path / "engine.log")
    try:
        with Client(endpoint) as client:
            client.heartbeat()
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            assert _accepted(client, "ioc-1", "IOC").exec_type == ExecType.NEW
            # A market order is immediate whatever its time in force.
            assert _accepted(client, "mkt-1", "DAY", price=None).exec_type == ExecType.NEW
            assert _accepted(client, "day-1", "DAY").exec_type == ExecType.NEW
            # Every child is on its way: nothing has come back from a venue yet.
            before = [_status(client, c) for c in ("ioc-1", "mkt-1", "day-1")]
            assert [len(s.children) for s in before] == [1, 1, 1]
            assert not any(c.done or c.cum_qty != "0" for s in before for c in s.children)
            session_id, last_seq = client.session_id, client.last_seq
    finally:
        kill_9(proc)

    with ThreadedEngine(path), Client(endpoint) as client:
        client.resume(session_id, last_seq)
        got = client.recv_until(lambda m: isinstance(m, HeartbeatAck) and m.seq > last_seq, 5)
        # What was sent after the restart has come back from the venues by now.
        got += client.drain(2.5)
        reports = [m for m in got if isinstance(m, ExecutionReport)]
        for cl_ord_id in ("ioc-1", "mkt-1"):
            ended = [m for m in reports if m.cl_ord_id == cl_ord_id]
            assert [(m.exec_type, m.cum_qty, m.leaves_qty) for m in ended] == \
                [(ExecType.CANCELED, "0", "0")], cl_ord_id
            assert "restarted" in ended[0].text
            after = _status(client, cl_ord_id)
            assert after.report.ord_status == OrdStatus.CANCELED
            # Only the child sent before the kill (journaled), gone with its
            # venue: not sent to a venue again.
            sent = before[("ioc-1", "mkt-1").index(cl_ord_id)].children
            assert [(c.child_id, c.venue, c.cum_qty, c.done) for c in after.children] == \
                [(sent[0].child_id, sent[0].venue, "0", True)]
        assert [m.exec_type for m in reports if m.cl_ord_id == "day-1"] == [ExecType.FILL]

        day = _status(client, "day-1")
        assert day.report.ord_status == OrdStatus.FILLED
        # The child before the kill, then the one sent again, which filled.
        assert [(c.cum_qty, c.done) for c in day.children] == [("0", True), ("1", True)]
        assert day.children[0].child_id == before[2].children[0].child_id
