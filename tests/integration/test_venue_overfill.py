"""A venue that fills a child past its leaves: every lot is booked, none is routed again.

The simulated venues cannot overfill, so the test plays a real venue
adapter: it hands the engine's pipeline, on its loop, a fill report through
the callback the pipeline gave the venue with the child (``on_report``), for
a child resting at the simulator over real sockets. The order, the router
and risk must then agree on every lot bought, and the order says
``overfilled``.
"""
import logging
import re
import time
from types import SimpleNamespace

from engine.client import Client
from engine.messages import ExecType, OrderStatusReply, OrdStatus
from ext.simloop import ReportKind
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port, http_get
from tests.integration.test_engine_replace import report


def status(client, cl_ord_id):
    client.status(cl_ord_id, account="DEMO1")
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def venue_fill(engine, child_id, *fills):
    """Deliver a venue's fills ``(last_qty, leaves_qty, price_x2)`` of engine child
    ``child_id`` as a venue adapter would, in one turn of the engine's loop."""
    pipeline = engine.service.pipeline

    def deliver():
        sim_id = pipeline._child_to_sim[child_id]
        venue = pipeline.venue_names.index(pipeline.orders.by_id[
            pipeline._child_parent[child_id]].children[child_id].venue)
        for last_qty, leaves_qty, price_x2 in fills:
            # (the fields of ext.simloop.Report, which only the simulator can make)
            pipeline._on_report(SimpleNamespace(
                kind=int(ReportKind.RPT_FILL), child_id=sim_id, venue=venue, book=0, side=1,
                ts=time.time_ns(), recv_ts=time.time_ns(), price_x2=price_x2,
                last_qty=last_qty, order_qty=last_qty + leaves_qty, leaves_qty=leaves_qty,
                cum_qty=last_qty, liquidity=0, fee=0, reason=0))
    engine.call(deliver)


def test_a_venue_overfill_is_booked_everywhere_and_flagged(tmp_path, caplog):
    port, metrics_port = free_port(), free_port()
    text = config_text(port, tmp_path / "journal").replace(
        "[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}")
    (tmp_path / "engine.toml").write_text(text)
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    with ThreadedEngine(tmp_path / "engine.toml") as engine, \
            Client(f"tcp://127.0.0.1:{port}") as client:
        risk = engine.service.pipeline.risk
        router = engine.service.pipeline.router

        def position():
            return engine.call(lambda: risk.exposure(risk.account_index("DEMO1"),
                                                     risk.instrument_index("AAA"))["position"])
        before = position()
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="over")
        report(client, "over", ExecType.NEW)
        time.sleep(0.1)         # the child's ack reaches the engine
        (child,) = status(client, "over").children
        assert child.acked and not child.done
        cid = int(child.child_id)
        venues = engine.service.pipeline.venues

        def resting_at_4800():
            bids, _ = engine.call(lambda: venues.depth(child.venue, "AAA"))
            return sum(int(qty) for px, qty, *_ in bids if px == 4800)
        resting = resting_at_4800()
        assert resting >= 100   # the child, really resting at the simulator

        # A fill of more lots than the router takes (2^40) is an adapter's fault, not a
        # trade: refused, nothing booked (booked, it could wrap risk's position).
        venue_fill(engine, cid, (2**62, 100, 2 * 4800))
        assert position() == before and status(client, "over").report.cum_qty == "0"

        # The venue says it filled 130 of the child's 100 and still works 5, and fills
        # those 5 before the engine's cancel of them reaches it (one turn of the loop).
        venue_fill(engine, cid, (130, 5, 2 * 4800), (5, 0, 2 * 4800))
        fill = report(client, "over", ExecType.FILL)
        assert (fill.last_qty, fill.cum_qty, fill.leaves_qty) == ("130", "130", "0")
        assert fill.ord_status == OrdStatus.FILLED
        fill = report(client, "over", ExecType.FILL)
        assert (fill.last_qty, fill.cum_qty) == ("5", "135")
        st = status(client, "over")
        assert st.overfilled and st.report.cum_qty == "135"
        assert position() == before + 135
        # The router booked the same 135: the order is done there too, and
        # nothing was routed for the lots it thought the child still had.
        assert engine.call(lambda: (router.n_active, router.pending_actions)) == (0, 0)
        assert [c.child_id for c in st.children] == [child.child_id]
        assert st.children[0].done
        # What the venue still worked of the child was canceled there: the simulator's
        # real child (resting 100, since the fills above were the adapter's) is gone.
        deadline = time.monotonic() + 5
        while resting_at_4800() != resting - 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert resting_at_4800() == resting - 100

        code, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        counted = re.search(r'^kronos_overfills_total\{venue="[^"]+"\} (\S+)$', body, re.M)
        assert counted and float(counted.group(1)) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "overfilled order" in r.getMessage()]
    assert len(warned) == 2 and "130 lots filled of 100" in warned[0]
    assert any("still works 5 lots of child" in r.getMessage() for r in caplog.records)
    blamed = [r.getMessage() for r in caplog.records if "past its quantity" in r.getMessage()]
    assert len(blamed) == 2 and f"child {cid} past its quantity: 130 lots of 100" in blamed[0]

    # A restart on the journal books the same: the order, and risk's position.
    with ThreadedEngine(tmp_path / "engine.toml") as engine, \
            Client(f"tcp://127.0.0.1:{port}") as client:
        st = status(client, "over")
        assert st.overfilled and st.report.cum_qty == "135"
        assert st.report.ord_status == OrdStatus.FILLED
        risk = engine.service.pipeline.risk
        assert engine.call(lambda: risk.exposure(risk.account_index("DEMO1"),
                                                 risk.instrument_index("AAA"))["position"]) == \
            before + 135
