"""Venue mechanics of the event loop, with exact times, prices, fills and fees.

Every scenario runs on the Cython book and on the pure-Python reference book
(the ``book_class`` fixture), so the loop is held to the same result both
ways; a hypothesis test compares the two on random order streams.
"""
import importlib.machinery
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ext.simflow
import ext.simloop
from ext.book import OrderBook
from ext.simloop import CHILD_ID_BASE, Liquidity, ReportKind as K
from ext.types import CancelReason, RejectReason
from sim.fees import fee_units
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import (
    BUY, DAY, FOK, GTC, IOC, LIMIT, MARKET, SELL, US, Recorder, add, cancel, quiet_market,
)

MAKER, TAKER = int(Liquidity.LIQ_MAKER), int(Liquidity.LIQ_TAKER)


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["cython", "reference"])
def book_class(request):
    return request.param


def test_extensions_are_compiled():
    for mod in (ext.simloop, ext.simflow):
        assert isinstance(mod.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert ext.simloop.TRADE_DTYPE.itemsize == 32 and ext.simloop.QUOTE_DTYPE.itemsize == 48


# ---------------------------------------------------------------- queue position

def test_child_waits_behind_the_quantity_already_at_its_price(book_class):
    m = quiet_market(book_class)
    t0 = m.now
    add(m, "FAST", 1, SELL, 5000, 100)
    add(m, "FAST", 2, SELL, 5000, 50)
    rec = Recorder()
    child = m.submit("FAST", "AAA", SELL, 30, 5000, LIMIT, GTC, on_report=rec)
    assert child == CHILD_ID_BASE + 1
    m.run_until(t0 + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED]
    ack = rec.reports[0]
    assert (ack.ts, ack.recv_ts, ack.leaves_qty, ack.cum_qty) == (t0 + 100 * US, t0 + 200 * US,
                                                                   30, 0)
    # A later background order queues behind the child.
    add(m, "FAST", 3, SELL, 5000, 70)
    # 150 lots were there first: a taker for 150 does not reach the child.
    add(m, "FAST", 10, BUY, 5000, 150, account=2, tif=IOC)
    m.run_until(t0 + 2_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED]
    add(m, "FAST", 11, BUY, 5000, 20, account=2, tif=IOC)
    m.run_until(t0 + 3_000 * US)
    fill = rec.reports[-1]
    assert fill.kind == K.RPT_FILL
    assert (fill.last_qty, fill.leaves_qty, fill.cum_qty, fill.order_qty) == (20, 10, 20, 30)
    assert (fill.price_x2, fill.liquidity, fill.fee) == (10000, MAKER, -2000 * 20)
    assert fill.recv_ts == fill.ts + 100 * US
    # The child, then order 3, are next in line.
    add(m, "FAST", 12, BUY, 5000, 15, account=2, tif=IOC)
    m.run_until(t0 + 4_000 * US)
    assert [(r.last_qty, r.leaves_qty) for r in rec.reports[2:]] == [(10, 0)]
    assert m.loop.book(m.book_index("FAST", "AAA")).order(3)["leaves_qty"] == 65
    assert m.loop.child(child)["state"] == "done"


def test_taker_child_walks_the_book_and_the_rest_is_canceled(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, SELL, 5001, 10)
    add(m, "FAST", 2, SELL, 5002, 10)
    rec = Recorder()
    m.submit("FAST", "AAA", BUY, 25, 5002, LIMIT, IOC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED, K.RPT_FILL, K.RPT_FILL, K.RPT_CANCELED]
    f1, f2, cxl = rec.reports[1:]
    assert (f1.price_x2, f1.last_qty, f1.leaves_qty, f1.liquidity) == (10002, 10, 15, TAKER)
    assert (f2.price_x2, f2.last_qty, f2.leaves_qty, f2.fee) == (10004, 10, 5, 3000 * 10)
    assert (cxl.reason, cxl.cum_qty, cxl.leaves_qty) == (CancelReason.CXL_IOC_REMAINDER, 20, 0)
    # One venue answer is one batch: every report arrives at the same time.
    assert len({r.recv_ts for r in rec.reports}) == 1


# ---------------------------------------------------------------- fees

@pytest.mark.parametrize("qty,price,liquidity,expected", [
    (7, 5001, TAKER, 8752),      # 10002 * 7 * 25 / 200 = 8751.75
    (2, 5001, TAKER, 2501),      # 2500.5 rounds away from zero
    (3, 5001, MAKER, -1500),     # -1500.3
    (1, 5001, MAKER, -500),      # -500.1
])
def test_basis_point_fees_are_exact_integers(book_class, qty, price, liquidity, expected):
    m = quiet_market(book_class)
    rec = Recorder()
    if liquidity == TAKER:
        add(m, "BPS", 1, SELL, price, qty)
        m.submit("BPS", "AAA", BUY, qty, price, LIMIT, IOC, on_report=rec)
        m.run_until(m.now + 2_000 * US)
    else:
        m.submit("BPS", "AAA", SELL, qty, price, LIMIT, GTC, on_report=rec)
        m.run_until(m.now + 2_000 * US)
        add(m, "BPS", 1, BUY, price, qty, account=2, tif=IOC)
        m.run_until(m.now + 2_000 * US)
    fills = [r for r in rec.reports if r.kind == K.RPT_FILL]
    assert [(f.liquidity, f.fee) for f in fills] == [(liquidity, expected)]
    rates = m.fee_rates("BPS", "AAA")
    cbps = rates[2] if liquidity == MAKER else rates[3]
    assert fee_units(0, cbps, 2 * price, qty) == expected == m.fee("BPS", "AAA", liquidity,
                                                                    2 * price, qty)


def test_rebates_are_negative_fees_and_inverted_venues_pay_takers(book_class):
    m = quiet_market(book_class)
    assert m.fee_rates("FAST", "AAA") == (-2000, 3000, 0, 0)
    assert m.fee_rates("INV", "AAA") == (1000, -500, 0, 0)
    assert m.fee_rates("BPS", "AAA") == (0, 0, -10, 25)
    rec = Recorder()
    add(m, "INV", 1, SELL, 5000, 40)
    m.submit("INV", "AAA", BUY, 40, 5000, LIMIT, IOC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    fill = [r for r in rec.reports if r.kind == K.RPT_FILL][0]
    assert fill.fee == -500 * 40
    assert m.fee_currency(fill.fee, "AAA") == Decimal("-0.02")


# ---------------------------------------------------------------- latency

def test_reports_arrive_in_latency_order_not_send_order(book_class):
    m = quiet_market(book_class)
    t0 = m.now
    order = []
    slow = m.submit("BPS", "AAA", BUY, 10, 4000, on_report=lambda r: order.append(("slow", r)))
    m.run_until(t0 + 10 * US)
    fast = m.submit("FAST", "AAA", BUY, 10, 4000, on_report=lambda r: order.append(("fast", r)))
    m.run_until(t0 + 1_000 * US)
    assert [name for name, _ in order] == ["fast", "slow"]
    (_, rf), (_, rs) = order
    assert (rf.child_id, rf.ts, rf.recv_ts) == (fast, t0 + 110 * US, t0 + 210 * US)
    assert (rs.child_id, rs.ts, rs.recv_ts) == (slow, t0 + 300 * US, t0 + 600 * US)
    assert m.latency("FAST") == (200_000.0, 200_000.0, 1)
    assert m.latency("BPS") == (600_000.0, 600_000.0, 1)


def test_lower_latency_wins_the_race_for_liquidity(book_class):
    m = quiet_market(book_class)
    t0 = m.now
    add(m, "FAST", 1, SELL, 5000, 10)
    add(m, "BPS", 1, SELL, 5000, 10)
    rec_a, rec_b = Recorder(), Recorder()
    # A is sent first to the slow venue, B later to the fast one; a taker
    # that takes everything arrives on each between the two.
    m.submit("BPS", "AAA", BUY, 10, 5000, LIMIT, IOC, on_report=rec_a)
    m.run_until(t0 + 150 * US)
    m.submit("FAST", "AAA", BUY, 10, 5000, LIMIT, IOC, on_report=rec_b)
    m.run_until(t0 + 260 * US)        # B arrived at 250 us and filled
    add(m, "FAST", 2, BUY, 5000, 10, account=2, tif=IOC)
    add(m, "BPS", 2, BUY, 5000, 10, account=2, tif=IOC)   # takes A's liquidity at 260 us
    m.run_until(t0 + 2_000 * US)
    assert [r.kind for r in rec_b.reports] == [K.RPT_ACCEPTED, K.RPT_FILL]
    assert [r.kind for r in rec_a.reports] == [K.RPT_ACCEPTED, K.RPT_CANCELED]
    assert rec_a.reports[0].ts == t0 + 300 * US


def test_a_venue_channel_never_reorders_messages():
    m = quiet_market(venues=[{"name": "JIT", "latency": {"model": "normal", "mean_us": 100.0,
                                                         "std_us": 90.0, "min_us": 1.0,
                                                         "seed": 3}}])
    rec = Recorder()
    ids = [m.submit("JIT", "AAA", BUY, 1, 4000 + k, on_report=rec) for k in range(200)]
    m.run_until(m.now + 10_000 * US)
    acks = {r.child_id: r for r in rec.reports}
    arrival = [acks[c].ts for c in ids]
    assert arrival == sorted(arrival)
    assert len(set(arrival)) > 1            # the draws did vary


# ---------------------------------------------------------------- dark pool

def test_dark_pool_fills_at_the_lit_midpoint_and_shows_no_depth(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "BPS", 1, SELL, 5001, 100)
    add(m, "POOL", 1, SELL, 0, 100, account=3)             # resting pure peg
    assert m.bbo("POOL", "AAA") == (0, 0, 0, 0)
    bids, asks = m.depth("POOL", "AAA")
    assert len(bids) == len(asks) == 0
    assert m.nbbo("AAA") == (5000, 5001) and m.mid_x2("AAA") == 10001
    rec = Recorder()
    m.submit("POOL", "AAA", BUY, 40, 0, LIMIT, IOC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED, K.RPT_FILL]
    fill = rec.reports[1]
    assert (fill.price_x2, fill.last_qty, fill.liquidity, fill.fee) == (10001, 40, TAKER, 40_000)
    assert fill.ts == rec.reports[0].ts and fill.recv_ts == fill.ts + 50 * US


def test_dark_minimum_quantity_is_all_or_at_least_min(book_class):
    """An IOC with min_qty at a dark pool fills only if at least min_qty can fill at once
    (the router's dark pings carry it); resting orders and lit books refuse it."""
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "BPS", 1, SELL, 5001, 100)
    add(m, "POOL", 1, SELL, 0, 30, account=3)               # 30 lots at the mid
    short, enough, lit, resting, above = (Recorder() for _ in range(5))
    m.submit("POOL", "AAA", BUY, 40, 0, LIMIT, IOC, on_report=short, min_qty=31)
    m.submit("POOL", "AAA", BUY, 40, 0, LIMIT, IOC, on_report=enough, min_qty=30)
    m.submit("FAST", "AAA", BUY, 5, 5001, LIMIT, IOC, on_report=lit, min_qty=5)
    m.submit("POOL", "AAA", BUY, 5, 0, LIMIT, DAY, on_report=resting, min_qty=5)
    m.submit("POOL", "AAA", BUY, 5, 0, LIMIT, IOC, on_report=above, min_qty=6)
    m.run_until(m.now + 1_000 * US)
    assert [(r.kind, r.last_qty, r.reason) for r in short.reports] == [
        (K.RPT_ACCEPTED, 0, 0), (K.RPT_CANCELED, 0, CancelReason.CXL_MIN_QTY_UNFILLABLE)]
    assert [(r.kind, r.last_qty, r.reason) for r in enough.reports] == [
        (K.RPT_ACCEPTED, 0, 0), (K.RPT_FILL, 30, 0),
        (K.RPT_CANCELED, 0, CancelReason.CXL_IOC_REMAINDER)]
    assert [(r.kind, r.reason) for r in lit.reports] == [(K.RPT_REJECTED, RejectReason.INVALID_FIELD)]
    assert [(r.kind, r.reason) for r in resting.reports] == [(K.RPT_REJECTED, RejectReason.INVALID_TIF)]
    assert [(r.kind, r.reason) for r in above.reports] == [(K.RPT_REJECTED, RejectReason.INVALID_QTY)]
    # The lit book was not touched by the refused child.
    assert m.bbo("FAST", "AAA")[:2] == (5000, 100)


def test_dark_limit_order_waits_until_the_mid_reaches_it(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "FAST", 2, SELL, 5001, 100)
    add(m, "POOL", 1, SELL, 0, 60, account=3)
    rec = Recorder()
    child = m.submit("POOL", "AAA", BUY, 30, 5000, LIMIT, GTC, on_report=rec)  # mid 5000.5 > limit
    m.run_until(m.now + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED]
    assert m.loop.dark_waiting(m.book_index("POOL", "AAA")) == (1, 0)
    # The bid drops a tick: the mid is 5000.0, within the limit, and the
    # waiting order trades with the resting peg at once, at that mid.
    cancel(m, "FAST", 1)
    add(m, "FAST", 3, BUY, 4999, 100)
    t_move = m.now
    m.run_until(m.now + 1_000 * US)
    fill = rec.reports[-1]
    assert (fill.kind, fill.price_x2, fill.last_qty, fill.ts) == (K.RPT_FILL, 10000, 30, t_move)
    assert (fill.cum_qty, fill.leaves_qty) == (30, 0)
    assert m.loop.child(child)["state"] == "done"
    assert m.loop.dark_waiting(m.book_index("POOL", "AAA")) == (0, 0)


def test_dark_pool_does_not_trade_on_a_locked_market(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "BPS", 1, SELL, 5000, 100)                      # locked across venues
    add(m, "POOL", 1, SELL, 0, 100, account=3)
    assert m.mid_x2("AAA") == 0
    rec = Recorder()
    m.submit("POOL", "AAA", BUY, 10, 0, LIMIT, IOC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED, K.RPT_CANCELED]
    assert rec.reports[1].reason == CancelReason.CXL_IOC_REMAINDER


def test_resting_dark_order_leaves_the_book_when_the_mid_passes_its_limit(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "FAST", 2, SELL, 5002, 100)                     # mid 5001
    rec = Recorder()
    m.submit("POOL", "AAA", SELL, 50, 5001, LIMIT, GTC, on_report=rec)   # sell limit 5001: ok
    m.run_until(m.now + 1_000 * US)
    pool = m.book_index("POOL", "AAA")
    assert m.loop.dark_waiting(pool) == (0, 1)
    cancel(m, "FAST", 2)
    add(m, "FAST", 3, SELL, 5001, 100)                     # mid 5000.5 < limit: out
    assert m.loop.dark_waiting(pool) == (1, 0)
    add(m, "POOL", 5, BUY, 0, 50, account=4, tif=IOC)      # nothing eligible to sell
    m.run_until(m.now + 1_000 * US)
    assert rec.kinds() == [K.RPT_ACCEPTED]
    # The mid comes back to 5001: the order is back in, and now it trades.
    cancel(m, "FAST", 3)
    add(m, "FAST", 4, SELL, 5002, 100)
    assert m.loop.dark_waiting(pool) == (0, 1)
    add(m, "POOL", 6, BUY, 0, 20, account=4, tif=IOC)
    m.run_until(m.now + 1_000 * US)
    fill = rec.reports[-1]
    assert (fill.kind, fill.price_x2, fill.last_qty, fill.liquidity) == (K.RPT_FILL, 10002, 20,
                                                                         MAKER)
    assert (fill.cum_qty, fill.leaves_qty, fill.fee) == (20, 30, 1000 * 20)


def test_dark_pool_refuses_post_only_and_replace(book_class):
    m = quiet_market(book_class)
    rec = Recorder()
    m.submit("POOL", "AAA", BUY, 10, 0, LIMIT, GTC, post_only=True, on_report=rec)
    other = m.submit("POOL", "AAA", BUY, 10, 0, LIMIT, GTC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    m.replace(other, 0, 5)
    m.run_until(m.now + 1_000 * US)
    assert [(r.kind, r.reason) for r in rec.reports] == [
        (K.RPT_REJECTED, RejectReason.INVALID_ORD_TYPE), (K.RPT_ACCEPTED, 0),
        (K.RPT_CANCEL_REJECTED, RejectReason.ORDER_NOT_REPLACEABLE)]


# ---------------------------------------------------------------- order management and hours

def test_replace_cancel_and_cancel_reject(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 4990, 10)
    rec = Recorder()
    child = m.submit("FAST", "AAA", BUY, 50, 4990, LIMIT, DAY, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    add(m, "FAST", 2, BUY, 4990, 10)
    m.replace(child, 4990, 40)                              # down in size: keeps its place
    m.run_until(m.now + 1_000 * US)
    book = m.loop.book(m.book_index("FAST", "AAA"))
    assert book.snapshot()["order_id"].tolist() == [1, child, 2]
    m.cancel(child)
    m.run_until(m.now + 1_000 * US)
    m.cancel(child)
    m.run_until(m.now + 1_000 * US)
    assert [(r.kind, r.order_qty, r.leaves_qty) for r in rec.reports] == [
        (K.RPT_ACCEPTED, 50, 50), (K.RPT_REPLACED, 40, 40), (K.RPT_CANCELED, 40, 0),
        (K.RPT_CANCEL_REJECTED, 40, 0)]
    assert rec.reports[-1].reason == RejectReason.UNKNOWN_ORDER


def test_trading_hours_reject_and_expire(book_class):
    m = quiet_market(book_class, venues=[
        {"name": "SHORT", "hours": ["10:00:00", "10:00:01"],
         "latency": {"model": "fixed", "mean_us": 100.0}}])
    rec = Recorder()
    day = m.submit("SHORT", "AAA", BUY, 10, 4000, LIMIT, DAY, on_report=rec)
    gtc = m.submit("SHORT", "AAA", BUY, 10, 3999, LIMIT, GTC, on_report=rec)
    m.run_until(m.session_start + 2_000_000_000)
    late = m.submit("SHORT", "AAA", BUY, 10, 4000, LIMIT, DAY, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    got = [(r.child_id, r.kind, r.reason) for r in rec.reports]
    assert got == [(day, K.RPT_ACCEPTED, 0), (gtc, K.RPT_ACCEPTED, 0),
                   (day, K.RPT_EXPIRED, CancelReason.CXL_END_OF_DAY),
                   (late, K.RPT_REJECTED, RejectReason.VENUE_CLOSED)]
    expired = rec.reports[2]
    assert expired.ts == m.session_start + 1_000_000_000
    assert m.is_open("SHORT") is False
    assert gtc in m.loop.book(m.book_index("SHORT", "AAA"))


def test_fok_and_market_children(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, SELL, 5001, 10)
    rec = Recorder()
    m.submit("FAST", "AAA", BUY, 20, 5001, LIMIT, FOK, on_report=rec)
    m.submit("FAST", "AAA", BUY, 15, 0, MARKET, IOC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    assert [(r.kind, r.last_qty, r.reason) for r in rec.reports] == [
        (K.RPT_ACCEPTED, 0, 0), (K.RPT_CANCELED, 0, CancelReason.CXL_FOK_UNFILLABLE),
        (K.RPT_ACCEPTED, 0, 0), (K.RPT_FILL, 10, 0),
        (K.RPT_CANCELED, 0, CancelReason.CXL_IOC_REMAINDER)]


def test_invariant_qty_is_cum_plus_leaves_while_live(book_class):
    m = quiet_market(book_class)
    for k in range(5):
        add(m, "FAST", k + 1, SELL, 5000 + k, 7)
    rec = Recorder()
    m.submit("FAST", "AAA", BUY, 100, 5003, LIMIT, GTC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    for r in rec.reports:
        assert r.order_qty == r.cum_qty + r.leaves_qty


# ---------------------------------------------------------------- the two books agree

ops = st.lists(st.tuples(st.sampled_from(["bg_add", "bg_take", "bg_cancel", "child", "cancel",
                                          "wait"]),
                         st.integers(0, 3), st.sampled_from([BUY, SELL]), st.integers(4995, 5005),
                         st.integers(1, 40)), min_size=5, max_size=60)


def _run_script(book_class, script):
    m = quiet_market(book_class, record_tape=True)
    rec = Recorder()
    venues = ["FAST", "BPS", "INV", "POOL"]
    children, next_id = [], 1
    for kind, v, side, price, qty in script:
        venue = venues[v]
        if kind == "bg_add":
            add(m, venue, next_id, side, 0 if venue == "POOL" else price, qty)
            next_id += 1
        elif kind == "bg_take":
            add(m, venue, next_id, side, price, qty, account=2, tif=IOC)
            next_id += 1
        elif kind == "bg_cancel" and next_id > 1:
            cancel(m, venue, 1 + price % (next_id - 1))
        elif kind == "child":
            children.append(m.submit(venue, "AAA", side, qty, price % 2 * price, LIMIT,
                                     [GTC, IOC, DAY, FOK][qty % 4], on_report=rec))
        elif kind == "cancel" and children:
            m.cancel(children[price % len(children)])
        m.run_until(m.now + (qty * 13 if kind == "wait" else 1) * US)
    m.run_until(m.now + 10_000 * US)
    return [r.as_tuple() for r in rec.reports], [a.tobytes() for a in m.tape()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_cython_and_reference_books_give_the_same_reports(script):
    assert _run_script(OrderBook, script) == _run_script(ReferenceBook, script)
