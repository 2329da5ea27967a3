"""A Replace to fewer lots at the same price amends the resting child: it keeps its queue place.

Over real sockets, on the quiet test market with every venue 15 ms away, so
that a fill sent before the Replace reaches the venue before the amend: the
races below are certain, not timing luck. Every other replace (a new price,
more lots) still takes the children down and routes the order again
(test_engine_replace.py).
"""
import time

from engine.messages import ExecType, OrderStatusReply, OrdStatus
# (the same engine fixture and report helper as the take-down path's tests)
from tests.integration.engine_harness import acked_at_venue
from tests.integration.test_engine_replace import report, slow  # noqa: F401


def status(client, cl_ord_id):
    client.status(cl_ord_id, account="DEMO1")
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def resting_bid(client, tag, qty, price):
    """DEMO1's buy resting at its venue (acknowledged there); returns its one child."""
    client.new_order("AAA", "buy", qty, price, account="DEMO1", cl_ord_id=tag)
    report(client, tag, ExecType.NEW)
    (child,) = acked_at_venue(client, tag).children
    assert not child.done and child.qty == qty
    return child


def position(engine):
    risk = engine.service.pipeline.risk
    return engine.call(lambda: risk.exposure(risk.account_index("DEMO1"),
                                             risk.instrument_index("AAA"))["position"])


def test_fewer_lots_at_the_same_price_amend_the_child_where_it_rests(slow):
    engine, client = slow
    child = resting_bid(client, "cut", "100", "48.00")
    client.replace("cut", account="DEMO1", qty="60", cl_ord_id="cut-r")
    done = report(client, "cut-r", ExecType.REPLACED)
    assert (done.qty, done.leaves_qty, done.orig_cl_ord_id) == ("60", "60", "cut")
    (after,) = status(client, "cut-r").children
    # The same child, now 60: it was not canceled and sent again.
    assert (after.child_id, after.qty, after.price, after.done) == \
        (child.child_id, "60", "48", False)
    risk = engine.service.pipeline.risk
    working = engine.call(lambda: risk.working_order(int(done.order_id)))
    assert (working["qty"], working["leaves"]) == (60, 60)
    client.cancel("cut-r", account="DEMO1", cl_ord_id="cut-x")
    report(client, "cut-x", ExecType.CANCELED)


def test_a_new_price_still_takes_the_child_down(slow):
    engine, client = slow
    child = resting_bid(client, "move", "100", "48.00")
    client.replace("move", account="DEMO1", qty="60", price="47.90", cl_ord_id="move-r")
    report(client, "move-r", ExecType.REPLACED)
    time.sleep(0.1)
    children = status(client, "move-r").children
    assert [c.child_id for c in children if c.done] == [child.child_id]
    assert [(c.qty, c.price) for c in children if not c.done] == [("60", "47.9")]
    client.cancel("move-r", account="DEMO1", cl_ord_id="move-x")
    report(client, "move-x", ExecType.CANCELED)


def sell_into(client, tag, qty, price):
    """DEMO2 sells ``qty`` at ``price`` against DEMO1's bid (sent now, filled 15 ms later)."""
    client.new_order("AAA", "sell_short", qty, price, account="DEMO2", cl_ord_id=tag,
                     locate=True, time_in_force="ioc")


def test_a_fill_that_reaches_the_venue_first_is_kept_and_the_amend_still_takes(slow):
    engine, client = slow
    before = position(engine)
    child = resting_bid(client, "race1", "100", "48.00")
    sell_into(client, "race1-s", "30", "48.00")
    client.replace("race1", account="DEMO1", qty="50", cl_ord_id="race1-r")
    assert report(client, "race1", ExecType.PARTIAL_FILL).last_qty == "30"
    done = report(client, "race1-r", ExecType.REPLACED)
    assert (done.qty, done.cum_qty, done.leaves_qty) == ("50", "30", "20")
    (after,) = status(client, "race1-r").children
    assert (after.child_id, after.qty, after.cum_qty) == (child.child_id, "50", "30")
    assert position(engine) - before == 30
    client.cancel("race1-r", account="DEMO1", cl_ord_id="race1-x")
    assert report(client, "race1-x", ExecType.CANCELED).cum_qty == "30"


def test_a_fill_past_the_new_qty_first_refuses_the_replace_and_cancels_the_rest(slow):
    engine, client = slow
    before = position(engine)
    resting_bid(client, "race2", "100", "48.00")
    sell_into(client, "race2-s", "70", "48.00")
    client.replace("race2", account="DEMO1", qty="50", cl_ord_id="race2-r")
    assert report(client, "race2", ExecType.PARTIAL_FILL).last_qty == "70"
    # The venue refused the amend (70 filled is not below 50): the usual way
    # judges it, as for a replace that raced fills while its children came down.
    refused = report(client, "race2-r", ExecType.REJECTED)
    assert refused.reject_name == "REPLACE_QTY_NOT_ABOVE_FILLED"
    done = report(client, "race2", ExecType.CANCELED)
    assert (done.cum_qty, done.ord_status) == ("70", OrdStatus.CANCELED)
    assert position(engine) - before == 70          # nothing bought past what filled
    assert all(c.done for c in status(client, "race2").children)


def test_a_cancel_right_behind_the_amend_cancels_the_replaced_order(slow):
    # The Cancel reaches the engine before the venue's answer to the amend, but
    # the venue takes the amend first: the replace happened, then the cancel.
    engine, client = slow
    resting_bid(client, "cx", "100", "48.00")
    client.replace("cx", account="DEMO1", qty="40", cl_ord_id="cx-r")
    client.cancel("cx", account="DEMO1", cl_ord_id="cx-x")
    done = report(client, "cx-r", ExecType.REPLACED)
    assert (done.qty, done.leaves_qty) == ("40", "40")
    canceled = report(client, "cx-x", ExecType.CANCELED)
    assert (canceled.cum_qty, canceled.orig_cl_ord_id, canceled.ord_status) == \
        ("0", "cx-r", OrdStatus.CANCELED)
    risk = engine.service.pipeline.risk
    assert engine.call(lambda: risk.working_order(int(canceled.order_id))) is None


def test_fills_of_the_amended_child_before_a_cancel_fill_the_replaced_order(slow):
    # (An audit: the venue amended the child to 60 and it filled 60 while a Cancel
    # was on its way; the engine refused the replace, "40 still working", and
    # called the order CANCELED with the router's parent FILLED.)
    engine, client = slow
    before = position(engine)
    resting_bid(client, "fx", "100", "48.00")
    client.replace("fx", account="DEMO1", qty="60", cl_ord_id="fx-r")
    time.sleep(0.02)        # the amend is at the venue; its answer is on its way back
    sell_into(client, "fx-s", "100", "48.00")
    client.cancel("fx", account="DEMO1", cl_ord_id="fx-x")
    done = report(client, "fx-r", ExecType.REPLACED)
    assert (done.qty, done.leaves_qty) == ("60", "60")
    filled = report(client, "fx-r", ExecType.FILL)
    assert (filled.cum_qty, filled.leaves_qty, filled.ord_status) == ("60", "0", OrdStatus.FILLED)
    late = report(client, "fx-x", ExecType.REJECTED)
    assert late.reject_name == "TOO_LATE_TO_CANCEL"
    assert position(engine) - before == 60


def test_a_kill_switch_right_behind_the_amend_cancels_the_replaced_order(slow):
    from engine.messages import AdminReply, KillSwitch
    engine, client = slow
    resting_bid(client, "ks", "100", "48.00")
    client.replace("ks", account="DEMO1", qty="70", cl_ord_id="ks-r")
    client.send(KillSwitch(req_id="ks1", action="engage", scope="account", target="DEMO1"))
    try:
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        assert report(client, "ks-r", ExecType.REPLACED).qty == "70"
        done = report(client, "ks-r", ExecType.CANCELED)
        assert done.cum_qty == "0" and "kill switch" in done.text
        risk = engine.service.pipeline.risk
        assert engine.call(lambda: risk.working_order(int(done.order_id))) is None
        assert all(c.done for c in status(client, "ks-r").children)
    finally:
        client.send(KillSwitch(req_id="ks2", action="release", scope="account", target="DEMO1"))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
