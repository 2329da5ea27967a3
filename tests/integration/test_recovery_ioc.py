"""After a restart, an IOC or market order that was in flight ends; it is not traded again.

"Immediate" means at the market its sender saw. The embedded venues do not
outlive the engine, so an order whose child was in flight at a stop has
nothing at any venue after the restart: a DAY order is routed again for its
remainder (it is meant to work all day), an immediate one is canceled and
its client told why, never sent to a market seconds or hours later.

The market has liquidity from the start (liquidity providers only, during
the simulator's warm-up) and its venues are 0.75 s away (1.5 s there and back), so the children are
still in flight when the engine stops without a grace period: the journal
is left as a kill -9 leaves it (see test_recovery_fixes.py).
"""
import time
from decimal import Decimal

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck
from engine.orders import Stage
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port, slow_sim


def _config(tmp_path):
    sim = slow_sim(tmp_path, 750_000)
    # Resting offers from the warm-up on (no takers, no cancels): the orders below cross them.
    sim.write_text(sim.read_text().replace("lp_rate = 0.0", "lp_rate = 20.0"))
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", sim=sim, fsync="always").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 60000\nshutdown_grace_ms = 0"))
    return path, f"tcp://127.0.0.1:{port}"


def _order(engine, cl_ord_id):
    pipeline = engine.service.pipeline
    return engine.call(lambda: pipeline.orders.find("DEMO1", cl_ord_id))


def test_an_immediate_order_in_flight_at_a_stop_is_canceled_a_day_order_routed_again(tmp_path):
    path, endpoint = _config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.heartbeat()
        client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        ask = engine.call(lambda: engine.service.venues.market.nbbo("AAA"))[1]  # ticks of 0.01
        assert ask, "the warm-up left no offer to cross"
        price = str(Decimal(ask + 100) / 100)  # a dollar through the best offer: marketable
        for cl_ord_id, tif in (("ioc-1", "IOC"), ("day-1", "DAY")):
            client.new_order("AAA", "buy", "1", price, account="DEMO1", cl_ord_id=cl_ord_id,
                             time_in_force=tif)
            client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                              m.cl_ord_id == cl_ord_id and m.exec_type == ExecType.NEW, 5)
        # An IOC on a schedule: its slices trade on arrival, the parent works to its end.
        client.new_order("AAA", "buy", "2", price, account="DEMO1", cl_ord_id="twap-1",
                         time_in_force="IOC", strategy="twap",
                         end_time=time.time_ns() + 600 * 10**9)
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                          m.cl_ord_id == "twap-1" and m.exec_type == ExecType.NEW, 5)
        for cl_ord_id in ("ioc-1", "day-1"):  # both children still on their way
            order = _order(engine, cl_ord_id)
            assert order.stage == Stage.ROUTED and len(order.children) == 1
    with ThreadedEngine(path) as engine:
        ioc, day = _order(engine, "ioc-1"), _order(engine, "day-1")
        # Each keeps the child it had (journaled), done: gone with its venue.
        assert ioc.stage == Stage.CANCELED
        assert [c.done for c in ioc.children.values()] == [True]
        assert "restart" in ioc.last_report.text
        assert day.stage in (Stage.ROUTED, Stage.PARTIALLY_FILLED, Stage.FILLED)
        assert len(day.children) == 2  # sent again
        assert not _order(engine, "twap-1").done  # its schedule goes on
        time.sleep(2.0)  # the round trip of what was sent after the restart
        ioc = _order(engine, "ioc-1")
        assert ioc.stage == Stage.CANCELED and ioc.cum_qty == 0
        assert [(c.cum_qty, c.done) for c in ioc.children.values()] == [(0, True)]  # not sent again
        assert _order(engine, "day-1").cum_qty == 1  # the DAY order traded at its venue
