"""A Replace racing its order's fills, a kill switch or risk: reports and risk stay exact.

The venues answer after a fixed 15 ms (the quiet test market with every
latency set so), so an order's child reaches its venue, and fills there,
before the cancel a Replace sends right after it: the race is certain, not
timing luck. One engine serves every test; each uses its own ids and leaves
no liquidity behind.
"""
import time

import pytest

from engine.client import Client
from engine.messages import (AdminReply, ExecType, ExecutionReport, KillSwitch, OrderStatusReply,
                             OrdStatus)
from tests.integration.engine_harness import acked_at_venue, serving, slow_sim

@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    with serving(tmp, sim=slow_sim(tmp, 15_000)) as (engine, endpoint), Client(endpoint) as client:
        yield engine, client


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` under ``cl_ord_id``; what came before it
    goes back in front of the client's next recv. (A test asks for reports in the order
    it expects; a busy machine may send two independent ones the other way round, and
    the one taken past was lost: the next ask timed out.)"""
    *before, found = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                       and m.cl_ord_id == cl_ord_id
                                       and m.exec_type == exec_type, 5)
    client._ready.extendleft(reversed(before))
    return found


def risk_view(engine, order_id):
    """Risk's working order for ``order_id`` (None once done) and DEMO1's AAA exposure."""
    risk = engine.service.pipeline.risk
    return engine.call(lambda: (risk.working_order(int(order_id)),
                                risk.exposure(risk.account_index("DEMO1"),
                                              risk.instrument_index("AAA"))))


def cancel(client, *orders):
    """Cancel each ``(cl_ord_id, account)`` and wait for its CANCELED."""
    for cl_ord_id, account in orders:
        client.cancel(cl_ord_id, account=account, cl_ord_id=f"{cl_ord_id}-x")
        report(client, f"{cl_ord_id}-x", ExecType.CANCELED)


def offer(client, cl_ord_id, qty, price):
    """DEMO2 rests a sell; returns once it is at its venue."""
    client.new_order("AAA", "sell_short", qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                     locate=True)
    report(client, cl_ord_id, ExecType.NEW)
    acked_at_venue(client, cl_ord_id, account="DEMO2")


@pytest.mark.parametrize("new_qty", ["40", "300"])
def test_fills_racing_a_replace_are_booked_and_the_replace_is_too_late(slow, new_qty):
    engine, client = slow
    tag = f"race-{new_qty}"
    _, before = risk_view(engine, 0)
    offer(client, f"{tag}-ask", "100", "50.00")
    client.new_order("AAA", "buy", "100", "50.00", account="DEMO1", cl_ord_id=tag)
    new = report(client, tag, ExecType.NEW)
    client.replace(tag, account="DEMO1", qty=new_qty, cl_ord_id=f"{tag}-r")
    # The child filled in full before its cancel arrived.
    assert report(client, tag, ExecType.FILL).cum_qty == "100"
    late = report(client, f"{tag}-r", ExecType.REJECTED)
    assert (late.reject_name, late.orig_cl_ord_id, late.ord_status) == \
        ("TOO_LATE_TO_CANCEL", tag, OrdStatus.FILLED)
    working, after = risk_view(engine, new.order_id)
    assert working is None  # nothing left reserved for a filled order
    assert after["position"] - before["position"] == 100


def test_a_replace_below_what_filled_meanwhile_cancels_the_rest(slow):
    engine, client = slow
    offer(client, "part-ask", "60", "50.00")
    _, before = risk_view(engine, 0)
    # The Replace goes right behind the order, not after its NEW comes back: it must reach
    # the engine before the fill does (15 ms each way), and a busy machine can stretch
    # the NEW's round trip through this client past that. (A fill known at the replace's
    # arrival refuses it there, and the order goes on working.)
    client.new_order("AAA", "buy", "100", "50.00", account="DEMO1", cl_ord_id="part")
    client.replace("part", account="DEMO1", qty="50", cl_ord_id="part-r")
    new = report(client, "part", ExecType.NEW)
    refused = report(client, "part-r", ExecType.REJECTED)
    assert refused.reject_name == "REPLACE_QTY_NOT_ABOVE_FILLED" and "60 filled" in refused.text
    # Buying more would pass the client's new total of 50: the rest is canceled.
    done = report(client, "part", ExecType.CANCELED)
    assert (done.cum_qty, done.leaves_qty, done.qty) == ("60", "0", "60")
    working, after = risk_view(engine, new.order_id)
    assert working is None and after["position"] - before["position"] == 60


def resting_then_replaced(client, cl_ord_id):
    """A DEMO1 bid of 100 resting at its venue, then a Replace to 50 at 47.90 (``<id>-r``)
    sent, which takes the child down (a lower qty at the same price would amend it in
    place: test_replace_in_place.py); returns the bid's NEW report."""
    client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
    new = report(client, cl_ord_id, ExecType.NEW)
    time.sleep(0.05)
    client.replace(cl_ord_id, account="DEMO1", qty="50", price="47.90",
                   cl_ord_id=f"{cl_ord_id}-r")
    return new


def test_a_kill_switch_during_a_replace_cancels_the_order(slow):
    engine, client = slow
    new = resting_then_replaced(client, "kill")
    client.send(KillSwitch(req_id="k1", action="engage", scope="account", target="DEMO1"))
    try:
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        refused = report(client, "kill-r", ExecType.REJECTED)
        assert (refused.reject_name, refused.orig_cl_ord_id) == ("KILL_SWITCH", "kill")
        done = report(client, "kill", ExecType.CANCELED)
        assert done.qty == "0" and "kill switch" in done.text
        assert risk_view(engine, new.order_id)[0] is None
        client.status("kill", account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.report.ord_status == OrdStatus.CANCELED
        assert all(child.done for child in status.children)
    finally:
        client.send(KillSwitch(req_id="k2", action="release", scope="account", target="DEMO1"))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok


def test_a_replace_risk_refuses_leaves_the_order_working_on_its_old_terms(slow):
    engine, client = slow
    client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="big")
    new = report(client, "big", ExecType.NEW)
    client.replace("big", account="DEMO1", qty="200000", cl_ord_id="big-r")
    refused = report(client, "big-r", ExecType.REJECTED)
    assert (refused.reject_name, refused.qty, refused.ord_status) == \
        ("MAX_ORDER_QTY", "100", OrdStatus.NEW)
    working, _ = risk_view(engine, new.order_id)
    assert (working["qty"], working["leaves"]) == (100, 100)
    time.sleep(0.1)
    client.status("big", account="DEMO1")
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert status.report.ord_status == OrdStatus.NEW
    live = [c for c in status.children if not c.done]
    assert [(c.price, c.qty) for c in live] == [("48", "100")]  # back at a venue, old terms
    cancel(client, ("big", "DEMO1"))



def test_a_reduce_only_replace_passes_limits_tightened_below_the_order(slow):
    # Limits cut below a working order (here DEMO1's cash): the trader can
    # still cut the order's quantity; a new price is judged and refused.
    engine, client = slow
    risk = engine.service.pipeline.risk
    client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="cut")
    new = report(client, "cut", ExecType.NEW)
    engine.call(lambda: risk.update({"accounts": {"DEMO1": {"cash": "1"}}}))
    try:
        client.replace("cut", account="DEMO1", qty="60", cl_ord_id="cut-r")
        replaced = report(client, "cut-r", ExecType.REPLACED)
        assert (replaced.qty, replaced.leaves_qty, replaced.price) == ("60", "60", "48")
        working, exposure = risk_view(engine, new.order_id)
        assert (working["qty"], working["leaves"], exposure["open_buy"]) == (60, 60, 60)
        client.replace("cut-r", account="DEMO1", qty="50", price="47.99", cl_ord_id="cut-r2")
        refused = report(client, "cut-r2", ExecType.REJECTED)
        assert (refused.reject_name, refused.qty) == ("INSUFFICIENT_BUYING_POWER", "60")
    finally:
        engine.call(lambda: risk.update({"accounts": {"DEMO1": {"cash": "10000000"}}}))
    cancel(client, ("cut-r", "DEMO1"))

def test_a_replace_keeps_the_orders_strategy(slow):
    # A passive buy above the offer rests (below the offer) instead of taking
    # it; replaced to a smaller quantity it must stay passive.
    engine, client = slow
    offer(client, "pas-ask", "100", "50.10")
    client.new_order("AAA", "buy", "100", "50.20", account="DEMO1", cl_ord_id="pas",
                     strategy="passive")
    report(client, "pas", ExecType.NEW)
    client.replace("pas", account="DEMO1", qty="80", cl_ord_id="pas-r")
    assert report(client, "pas-r", ExecType.REPLACED).qty == "80"
    time.sleep(0.2)
    client.status("pas-ask", account="DEMO2")
    ask = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert ask.report.cum_qty == "0"  # nothing was taken
    cancel(client, ("pas-r", "DEMO1"), ("pas-ask", "DEMO2"))


def test_stp_is_the_clients_choice(slow):
    engine, client = slow
    # Asked for explicitly, STP_NONE lets an account's buy meet its own sell.
    client.new_order("AAA", "sell_short", "10", "50.30", account="DEMO1", cl_ord_id="self-ask",
                     locate=True)
    report(client, "self-ask", ExecType.NEW)
    acked_at_venue(client, "self-ask")
    client.new_order("AAA", "buy", "10", "50.30", account="DEMO1", cl_ord_id="self-buy", stp=0)
    assert report(client, "self-buy", ExecType.FILL).cum_qty == "10"
    # By default the venue's own prevention applies: no trade with itself.
    client.new_order("AAA", "sell_short", "10", "50.30", account="DEMO1", cl_ord_id="self-ask2",
                     locate=True)
    # (At its venue: an IOC that found no offer there would pass the assert below too.)
    acked_at_venue(client, "self-ask2")
    client.new_order("AAA", "buy", "10", "50.30", account="DEMO1", cl_ord_id="self-buy2",
                     time_in_force="ioc")
    assert report(client, "self-buy2", ExecType.CANCELED).cum_qty == "0"
    cancel(client, ("self-ask2", "DEMO1"))


def test_a_cancel_while_a_replace_is_in_flight_wins(slow):
    engine, client = slow
    new = resting_then_replaced(client, "qc")
    client.cancel("qc", account="DEMO1", cl_ord_id="qc-c")  # the replace is not through yet
    refused = report(client, "qc-r", ExecType.REJECTED)
    assert (refused.reject_name, refused.orig_cl_ord_id) == ("ORDER_NOT_REPLACEABLE", "qc")
    done = report(client, "qc-c", ExecType.CANCELED)
    assert (done.orig_cl_ord_id, done.order_id, done.cum_qty) == ("qc", new.order_id, "0")
    assert risk_view(engine, new.order_id)[0] is None
    # A second Cancel behind the first is too late, and the order answers to the cancel's id.
    client.cancel("qc-c", account="DEMO1", cl_ord_id="qc-c2")
    assert report(client, "qc-c2", ExecType.REJECTED).reject_name == "TOO_LATE_TO_CANCEL"


def test_an_immediate_order_cannot_be_replaced(slow):
    # An IOC trades what is there on arrival; routed again with new terms it
    # would trade a second time.
    engine, client = slow
    offer(client, "ioc-ask", "10", "50.20")
    client.new_order("AAA", "buy", "20", "50.20", account="DEMO1", cl_ord_id="ioc",
                     time_in_force="ioc")
    report(client, "ioc", ExecType.NEW)  # its child is on its way to the offer
    client.replace("ioc", account="DEMO1", qty="30", cl_ord_id="ioc-r")
    refused = report(client, "ioc-r", ExecType.REJECTED)
    assert refused.reject_name == "ORDER_NOT_REPLACEABLE"
    assert report(client, "ioc", ExecType.CANCELED).cum_qty == "10"


def test_a_post_only_replace_the_market_moves_onto_keeps_the_order(slow):
    # Not crossing when asked; by the time the children are down an offer
    # sits at the new price: the replace is refused, the order stays as it was.
    engine, client = slow
    client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="po",
                     post_only=True)
    report(client, "po", ExecType.NEW)
    time.sleep(0.05)
    client.replace("po", account="DEMO1", price="50.50", cl_ord_id="po-r")
    client.new_order("AAA", "sell_short", "10", "50.50", account="DEMO2", cl_ord_id="po-ask",
                     locate=True)
    refused = report(client, "po-r", ExecType.REJECTED)
    assert (refused.reject_name, refused.price, refused.ord_status) == \
        ("POST_ONLY_WOULD_CROSS", "48", OrdStatus.NEW)
    time.sleep(0.1)
    client.status("po", account="DEMO1")
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert status.report.ord_status == OrdStatus.NEW and status.report.cum_qty == "0"
    assert [(c.price, c.done) for c in status.children][-1] == ("48", False)
    cancel(client, ("po", "DEMO1"), ("po-ask", "DEMO2"))


def test_a_cancel_or_replace_naming_an_earlier_cl_ord_id_is_refused(slow):
    """``orig_cl_ord_id`` is the order's current id: one it answered to before a replace is
    refused ``UNKNOWN_CL_ORD_ID``, naming the current one, and the order keeps its terms. (A
    Replace from a view that missed the first replace overwrote its quantity, 80 -> 120.)"""
    from engine.journal import JournalReader, RecordKind
    from engine.messages import Reject
    engine, client = slow
    client.new_order("AAA", "buy", "100", "40.00", account="DEMO1", cl_ord_id="st1")
    report(client, "st1", ExecType.NEW)
    client.replace("st1", account="DEMO1", qty="80", cl_ord_id="st1-r1")
    assert report(client, "st1-r1", ExecType.REPLACED).orig_cl_ord_id == "st1"
    for request in (lambda: client.replace("st1", account="DEMO1", qty="120", cl_ord_id="st1-r2"),
                    lambda: client.cancel("st1", account="DEMO1", cl_ord_id="st1-c")):
        sent = request()
        refused = client.recv_until(lambda m: isinstance(m, Reject)
                                    and m.cl_ord_id == sent.cl_ord_id, 5)[-1]
        assert refused.reject_name == "UNKNOWN_CL_ORD_ID"
        assert "it was replaced, and is now 'st1-r1'" in refused.text
    # Refused before it was journaled (protocol.md): its own id is still free.
    client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="st1-c")
    free = report(client, "st1-c", ExecType.NEW)
    journal = engine.service.journal
    commands = engine.call(lambda: [r for r in JournalReader(journal.data_dir)
                                    if r.kind == RecordKind.COMMAND and b"st1-r2" in r.payload])
    assert commands == []
    client.drain(0.1)
    client.status("st1", account="DEMO1")  # status still takes an earlier id
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert (status.report.cl_ord_id, status.report.qty, status.report.ord_status) == \
        ("st1-r1", "80", OrdStatus.NEW)
    cancel(client, ("st1-r1", "DEMO1"), (free.cl_ord_id, "DEMO1"))


# ---------------------------------------------------------------- review prrev
def test_another_sessions_replace_that_ends_the_order_tells_that_session(slow):
    """A Replace from another session of the account that the order's fills overtook is
    refused, and the rest of the order canceled: because of that Replace. The session that
    sent it got the refusal (its state: the order still working) and never heard of the
    CANCELED, which went to the order's own session only; now it gets it too, as it gets
    a REPLACED or CANCELED its request brought."""
    engine, client = slow
    offer(client, "other-ask", "60", "50.00")
    with Client(client.endpoint) as other:
        client.new_order("AAA", "buy", "100", "50.00", account="DEMO1", cl_ord_id="other")
        other.replace("other", account="DEMO1", qty="50", cl_ord_id="other-r")
        refused = report(other, "other-r", ExecType.REJECTED)
        assert refused.reject_name == "REPLACE_QTY_NOT_ABOVE_FILLED"
        done = report(other, "other", ExecType.CANCELED)
        assert (done.cum_qty, done.leaves_qty, done.ord_status) == ("60", "0", OrdStatus.CANCELED)
        # The order's own session gets the CANCELED (not the refusal, which is the other's).
        mine = report(client, "other", ExecType.CANCELED)
        assert mine.transact_time == done.transact_time and mine.text == done.text
