"""The pipeline's answers at the edges: ids in flight, integers past int64, child prices, seqs.

One real engine serves every test. Its venues answer after a fixed 15 ms
(the quiet test market with every latency set so), so a Cancel or Replace
sent right behind an order is still in flight when the next request
arrives: the race is certain, not timing luck. Each test uses its own ids.
"""
import time

import pytest

from engine.client import Client
from engine.messages import (ExecType, ExecutionReport, OrderStatusReply, OrdStatus,
                             Reject)
from ext.types import Side
from tests.integration.engine_harness import acked_at_venue, at_venues, serving, slow_sim

@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    with serving(tmp, sim=slow_sim(tmp, 15_000)) as (engine, endpoint), Client(endpoint) as client:
        yield engine, client


def answer(client, predicate):
    """The first message (after those already read) that ``predicate`` accepts."""
    return client.recv_until(predicate, 5)[-1]


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` under ``cl_ord_id``."""
    return answer(client, lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                  and m.exec_type == exec_type)


def reject(client, cl_ord_id):
    return answer(client, lambda m: isinstance(m, Reject) and m.cl_ord_id == cl_ord_id)


def status(client, cl_ord_id, account="DEMO1") -> OrderStatusReply:
    client.status(cl_ord_id, account=account)
    return answer(client, lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == cl_ord_id)


def resting(client, cl_ord_id, qty="10", price="40.00"):
    """A DEMO1 buy of AAA far below the market; returns its NEW report."""
    client.new_order("AAA", "buy", qty, price, account="DEMO1", cl_ord_id=cl_ord_id)
    return report(client, cl_ord_id, ExecType.NEW)


def working_at_risk(engine, order_id):
    risk = engine.service.pipeline.risk
    return engine.call(lambda: risk.working_order(int(order_id)))


def venue_submit(engine, *args, **kw):
    """Rest an order of another firm (venue account 77) directly at a venue."""
    market = engine.service.venues.market
    return engine.call(lambda: market.submit(*args, account=77, **kw))


def test_a_schedule_time_past_int64_is_refused_at_intake(slow):
    """end_time = 2**63 decodes as msgpack uint64: intake refuses it, nothing reaches risk."""
    engine, client = slow
    client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="ov-1",
                     strategy="twap", end_time=2**63)
    refused = reject(client, "ov-1")
    assert (refused.reject_name, refused.ref_type) == ("INVALID_FIELD", "NewOrder")
    assert "end_time" in refused.text
    assert not status(client, "ov-1").found
    # The largest time the core holds is taken.
    client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="ov-2",
                     strategy="twap", end_time=2**63 - 1)
    new = report(client, "ov-2", ExecType.NEW)
    client.cancel("ov-2", account="DEMO1", cl_ord_id="ov-2-x")
    report(client, "ov-2-x", ExecType.CANCELED)
    assert working_at_risk(engine, new.order_id) is None


class _FailingRouter:
    """The engine's router, except that its next ``route`` raises (an engine bug)."""

    def __init__(self, real):
        self.real, self.failed = real, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def route(self, *args, **kw):
        if not self.failed:
            self.failed = True
            raise OverflowError("injected: value too large to convert to int64_t")
        return self.real.route(*args, **kw)


def test_a_router_failure_rejects_the_order_and_gives_back_its_risk(slow):
    """An exception in routing after risk took the order: the order is REJECTED
    INTERNAL_ERROR, risk holds nothing for it, a Cancel is answered, and the rest of
    its bulk goes on."""
    engine, client = slow
    pipeline = engine.service.pipeline
    real = pipeline.router
    engine.call(lambda: setattr(pipeline, "router", _FailingRouter(real)))
    try:
        client.bulk([client.build_new_order("AAA", "buy", "10", "40.00", account="DEMO1",
                                            cl_ord_id=cl_ord_id) for cl_ord_id in ("rf-1", "rf-2")])
        failed = report(client, "rf-1", ExecType.REJECTED)
        assert (failed.reject_name, failed.ord_status) == ("INTERNAL_ERROR", OrdStatus.REJECTED)
        good = report(client, "rf-2", ExecType.NEW)
    finally:
        engine.call(lambda: setattr(pipeline, "router", real))
    assert working_at_risk(engine, failed.order_id) is None
    client.cancel("rf-1", account="DEMO1", cl_ord_id="rf-1-x")
    late = report(client, "rf-1-x", ExecType.REJECTED)
    assert late.reject_name == "TOO_LATE_TO_CANCEL"
    client.cancel("rf-2", account="DEMO1", cl_ord_id="rf-2-x")
    report(client, "rf-2-x", ExecType.CANCELED)
    assert working_at_risk(engine, good.order_id) is None


def test_a_cancels_id_is_taken_while_it_is_in_flight(slow):
    """A NewOrder under the id of a Cancel still waiting for its venue is refused; the
    id then names the canceled order."""
    engine, client = slow
    first = resting(client, "ic-1")
    client.cancel("ic-1", account="DEMO1", cl_ord_id="ic-Z")
    client.new_order("AAA", "buy", "7", "41.00", account="DEMO1", cl_ord_id="ic-Z")
    dup = reject(client, "ic-Z")
    assert (dup.reject_name, dup.ref_type) == ("DUPLICATE_CL_ORD_ID", "NewOrder")
    canceled = report(client, "ic-Z", ExecType.CANCELED)
    assert (canceled.order_id, canceled.orig_cl_ord_id) == (first.order_id, "ic-1")
    found = status(client, "ic-Z")
    assert (found.report.order_id, found.report.ord_status) == (first.order_id, OrdStatus.CANCELED)


def test_a_replaces_id_is_taken_while_it_is_in_flight(slow):
    """A NewOrder or a second Replace under the id of a Replace in flight gets a Reject
    DUPLICATE_CL_ORD_ID (not a REJECTED report from risk); the first replace goes through."""
    engine, client = slow
    first = resting(client, "ir-1")
    second = resting(client, "ir-2")
    client.replace("ir-1", account="DEMO1", qty="20", cl_ord_id="ir-Z")
    client.new_order("AAA", "buy", "7", "41.00", account="DEMO1", cl_ord_id="ir-Z")
    client.replace("ir-2", account="DEMO1", qty="30", cl_ord_id="ir-Z")
    dups = client.recv_until(lambda m: isinstance(m, Reject) and m.ref_type == "Replace", 5)
    assert [(m.reject_name, m.ref_type) for m in dups if isinstance(m, Reject)] == \
        [("DUPLICATE_CL_ORD_ID", "NewOrder"), ("DUPLICATE_CL_ORD_ID", "Replace")]
    replaced = report(client, "ir-Z", ExecType.REPLACED)
    assert (replaced.order_id, replaced.qty) == (first.order_id, "20")
    other = status(client, "ir-2").report
    assert (other.order_id, other.cl_ord_id, other.qty, other.ord_status) == \
        (second.order_id, "ir-2", "10", OrdStatus.NEW)
    for cl_ord_id in ("ir-Z", "ir-2"):
        client.cancel(cl_ord_id, account="DEMO1", cl_ord_id=f"{cl_ord_id}-x")
        report(client, f"{cl_ord_id}-x", ExecType.CANCELED)


def test_a_refused_cancel_or_replace_spends_its_id(slow):
    """Every cl_ord_id of a request about a working order is spent, refused or not; it
    still names no order. One naming no order it could act on (unknown, or done) is
    refused before it is journaled, and its id stays free: spent, a flood of them (nothing
    throttles cancels) grew the id table and the journal past [orders] max_orders."""
    engine, client = slow
    resting(client, "rs-1")
    client.replace("rs-1", account="DEMO1", price="40.005", cl_ord_id="rs-X1")
    assert report(client, "rs-X1", ExecType.REJECTED).reject_name == "OFF_TICK"
    client.cancel("rs-1", account="DEMO1", symbol="BBB", cl_ord_id="rs-X2")
    assert report(client, "rs-X2", ExecType.REJECTED).reject_name == "INVALID_FIELD"
    ids_before = engine.call(lambda: engine.service.pipeline.orders.ids_held())
    for n in range(50):
        client.cancel("nobody", account="DEMO1", cl_ord_id=f"rs-U{n}")
        assert reject(client, f"rs-U{n}").reject_name == "UNKNOWN_CL_ORD_ID"
    assert engine.call(lambda: engine.service.pipeline.orders.ids_held()) == ids_before
    client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="rs-X1")
    assert reject(client, "rs-X1").reject_name == "DUPLICATE_CL_ORD_ID"
    client.replace("rs-1", account="DEMO1", qty="11", cl_ord_id="rs-X2")
    assert reject(client, "rs-X2").reject_name == "DUPLICATE_CL_ORD_ID"
    for spent in ("rs-X1", "rs-X2"):
        assert status(client, spent).reject_name == "UNKNOWN_CL_ORD_ID"
    client.cancel("rs-1", account="DEMO1", cl_ord_id="rs-U0")  # (free: it cancels rs-1)
    report(client, "rs-U0", ExecType.CANCELED)
    # Done now: a request naming it is too late, and spends nothing either.
    client.cancel("rs-U0", account="DEMO1", cl_ord_id="rs-U1")
    assert report(client, "rs-U1", ExecType.REJECTED).reject_name == "TOO_LATE_TO_CANCEL"
    client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="rs-U1")
    report(client, "rs-U1", ExecType.NEW)


def test_a_bulk_order_refused_as_a_duplicate_is_referred_to_its_bulk(slow):
    engine, client = slow
    resting(client, "bd-1")
    client.bulk([client.build_new_order("AAA", "buy", "10", "40.00", account="DEMO1",
                                        cl_ord_id="bd-1")])
    dup = reject(client, "bd-1")
    assert (dup.reject_name, dup.ref_type) == ("DUPLICATE_CL_ORD_ID", "BulkNewOrders")
    client.cancel("bd-1", account="DEMO1", cl_ord_id="bd-1-x")
    report(client, "bd-1-x", ExecType.CANCELED)


def test_a_status_reply_carries_the_report_with_the_seq_it_was_sent_with(slow):
    engine, client = slow
    new = resting(client, "sq-1")
    assert new.seq > 0
    assert status(client, "sq-1").report == new
    client.cancel("sq-1", account="DEMO1", cl_ord_id="sq-1-x")
    canceled = report(client, "sq-1-x", ExecType.CANCELED)
    assert status(client, "sq-1").report == canceled


def test_a_repriced_passive_childs_price_is_its_new_one(slow):
    """The router moves a passive child up with the national bid; the status shows the
    price the venue confirmed."""
    engine, client = slow
    asks = venue_submit(engine, "NEXA", "AAA", Side.SELL, 50, 5005)
    bid = venue_submit(engine, "NEXA", "AAA", Side.BUY, 50, 4998)
    at_venues(engine, "AAA", bid=4998, ask=5005)  # (the bid the passive child joins)
    client.new_order("AAA", "buy", "100", "50.03", account="DEMO1", cl_ord_id="rp-1",
                     strategy="passive")
    report(client, "rp-1", ExecType.NEW)
    children = acked_at_venue(client, "rp-1").children
    assert [c.price for c in children] == ["49.98"]  # joins the bid
    better = venue_submit(engine, "BRIX", "AAA", Side.BUY, 10, 5000)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        children = status(client, "rp-1").children
        if children[0].price != "49.98":
            break
        time.sleep(0.05)
    assert [(c.price, c.qty, c.done) for c in children] == [("50", "100", False)]
    client.cancel("rp-1", account="DEMO1", cl_ord_id="rp-1-x")
    report(client, "rp-1-x", ExecType.CANCELED)
    market = engine.service.venues.market
    for sim_id in (asks, bid, better):
        engine.call(lambda: market.cancel(sim_id))


def test_a_midpoint_childs_price_is_null(slow):
    engine, client = slow
    market = engine.service.venues.market
    pool = market.loop.book(market.book_index("MIDX", "BBB"))
    resting = engine.call(lambda: len(pool))
    venue_submit(engine, "NEXA", "BBB", Side.BUY, 100, 11998)
    venue_submit(engine, "NEXA", "BBB", Side.SELL, 100, 12003)
    venue_submit(engine, "MIDX", "BBB", Side.SELL, 7, 0)
    # The dark ping finds the 7 lots only once they rest at the pool; no quote shows them.
    deadline = time.monotonic() + 5
    while engine.call(lambda: len(pool)) == resting and time.monotonic() < deadline:
        time.sleep(0.001)
    at_venues(engine, "BBB", bid=11998, ask=12003)
    client.new_order("BBB", "buy", "10", "120.03", account="DEMO1", cl_ord_id="mp-1",
                     time_in_force="ioc", strategy="dark_first")
    answer(client, lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "mp-1"
           and m.ord_status == OrdStatus.FILLED)
    children = {c.venue: c for c in status(client, "mp-1").children}
    assert children["MIDX"].price is None and children["MIDX"].cum_qty == "7"
    assert children["NEXA"].price == "120.03" and children["NEXA"].cum_qty == "3"


def test_a_spent_id_on_a_cancel_of_a_done_order_gets_a_reject_not_a_report(slow):
    """A Cancel or Replace reusing an id is refused DUPLICATE_CL_ORD_ID whatever else is wrong
    with it: an ExecutionReport under that id (TOO_LATE_TO_CANCEL for a done order, a wrong
    symbol) would read as news of the order the id already names."""
    engine, client = slow
    done = resting(client, "sp-done")
    client.cancel("sp-done", account="DEMO1", cl_ord_id="sp-done-x")
    report(client, "sp-done-x", ExecType.CANCELED)
    resting(client, "sp-live")
    client.cancel("sp-done", account="DEMO1", cl_ord_id="sp-live")  # done order, spent id
    dup = reject(client, "sp-live")
    assert (dup.reject_name, dup.ref_type) == ("DUPLICATE_CL_ORD_ID", "Cancel")
    client.replace("sp-live", account="DEMO1", qty="9", symbol="BBB", cl_ord_id="sp-done")
    dup = reject(client, "sp-done")
    assert (dup.reject_name, dup.ref_type) == ("DUPLICATE_CL_ORD_ID", "Replace")
    assert not [m for m in client.drain(0.2) if isinstance(m, ExecutionReport)
                and m.cl_ord_id in ("sp-live", "sp-done")]
    assert status(client, "sp-live").report.ord_status == OrdStatus.NEW
    assert status(client, "sp-done").report.order_id == done.order_id


def test_a_price_past_the_routers_range_is_refused_as_out_of_range_and_a_replace_keeps_its_order(slow):
    """The router takes at most 2^40 ticks (2^40 lots). Past it, with the buying power for it
    (the audit's accounts), an order was refused INVALID_PRICE ("router: INVALID_PRICE") after
    risk had passed it, and a Replace to such a price took its order down and canceled it
    ("replaced order could not be routed"). It is now a value check, before risk: here the
    old code answered INSUFFICIENT_BUYING_POWER, which named no limit."""
    _, client = slow
    largest = "10995116277.76"  # 2^40 ticks of 0.01
    client.new_order("AAA", "sell_short", "1", "10995116277.77", locate=True, account="DEMO1", cl_ord_id="big-px")
    refused = report(client, "big-px", ExecType.REJECTED)
    assert refused.reject_name == "VALUE_OUT_OF_RANGE"
    assert refused.text == (f"price 10995116277.77 is above the largest the router takes, "
                            f"{largest} (2^40 ticks of 0.01)")
    # (an offer: a bid's buying power would refuse the new price first)
    client.new_order("AAA", "sell_short", "1", "60.00", account="DEMO1", cl_ord_id="big-rpl",
                     locate=True)
    report(client, "big-rpl", ExecType.NEW)
    client.replace("big-rpl", account="DEMO1", price="20000000000", cl_ord_id="big-rpl-2")
    replace_refused = report(client, "big-rpl-2", ExecType.REJECTED)
    assert (replace_refused.reject_name, replace_refused.ord_status) == \
        ("VALUE_OUT_OF_RANGE", OrdStatus.NEW)
    assert status(client, "big-rpl").report.ord_status == OrdStatus.NEW
