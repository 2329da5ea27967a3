"""The event loop's money on a fine grid, dark minimum quantity under self-trade
prevention, and the prices dark-pool reports carry.

Expected numbers are computed here independently: notionals with Python ints,
fees from the published schedule in ``Decimal`` and with ``sim.fees.fee_units``.
Loop-level scenarios run on the Cython book and on the pure-Python reference.
"""
from decimal import Decimal

import numpy as np
import pytest

from ext.book import OP_ADD, OrderBook
from ext.simloop import Liquidity, MarketLoop, ReportKind as K, StrategyCore
from ext.simstrat import PeriodicTakerCore
from ext.types import CancelReason, RejectReason, StpMode
from sim.fees import fee_units, units_to_currency
from sim.market import Market
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import (
    BUY, DAY, IOC, LIMIT, MARKET, SELL, SMALL, US, Recorder, add, config, quiet_market,
)

MAKER, TAKER = int(Liquidity.LIQ_MAKER), int(Liquidity.LIQ_TAKER)
#: Fractional shares at a 0.0001 tick: a price times a quantity passes 2^63.
FINE = [{"symbol": "AAA", "tick_size": "0.0001", "lot_size": "0.000001", "price": "500.00"}]
PX_500 = 5_000_000                          # 500.00 in 0.0001 ticks
SHARE = 1_000_000                           # lots per share


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["cython", "reference"])
def book_class(request):
    return request.param


def step(m, us=1_000):
    m.run_until(m.now + us * US)


# ---------------------------------------------------------------- market notional

def test_market_notional_and_vwap_are_exact_past_int64(book_class):
    m = quiet_market(book_class, record_tape=True, instruments=FINE)
    assert isinstance(m.loop.samples(), np.ndarray)     # nothing wide yet: the plain array
    q1, q2 = 1_000_000 * SHARE, 300_000 * SHARE + 7     # lots
    px1, px2 = PX_500, PX_500 + 123                     # ticks
    add(m, "FAST", 1, SELL, px1, q1)
    add(m, "FAST", 2, BUY, px1, q1, account=2, tif=IOC)
    add(m, "BPS", 3, SELL, px2, q2)
    add(m, "BPS", 4, BUY, px2, q2, account=2, tif=IOC)
    notional_x2 = 2 * px1 * q1 + 2 * px2 * q2           # Python ints: exact
    assert notional_x2 > 2**63
    trades, _ = m.tape()
    assert sum(int(t["price_x2"]) * int(t["qty"]) for t in trades) == notional_x2
    assert m.market_volume("AAA") == (q1 + q2, notional_x2)
    # The backtest's market VWAP is notional_x2 / qty / 2 ticks: ~500.00, not negative.
    vwap = notional_x2 / (q1 + q2) / 2 * 0.0001
    assert vwap == pytest.approx(500.0028, abs=1e-4)
    step(m, 2_000_000)                                  # two samples after the trades
    s = m.samples()["AAA"]
    assert int(s["cum_qty"][-1]) == q1 + q2
    assert s["cum_notional_x2"][-1] == notional_x2
    assert s["bid"].dtype == np.int64 and s["ts"].dtype == np.int64    # plots read these
    assert [int(x) for x in s["cum_notional_x2"]] == sorted(int(x) for x in s["cum_notional_x2"])
    assert np.asarray(m.loop.samples())[-1, 4] == notional_x2


# ---------------------------------------------------------------- fees

def test_fee_of_a_large_fill_is_exact():
    m = quiet_market(instruments=FINE)
    inst = m.instrument("AAA")
    price_x2 = 2 * PX_500
    # Published schedule, by hand: BPS takes 0.25 bps and pays 0.10 bps.
    for shares in (10_000, 40_000, 100_000, 1_000_000):
        notional = Decimal(500) * shares
        lots = shares * SHARE
        taker = m.fee("BPS", "AAA", TAKER, price_x2, lots)
        maker = m.fee("BPS", "AAA", MAKER, price_x2, lots)
        assert units_to_currency(taker, inst) == notional * Decimal("0.000025")
        assert units_to_currency(maker, inst) == -notional * Decimal("0.000010")
    # Every venue and side against the Python-int reference.
    for venue in ("FAST", "BPS", "INV", "POOL"):
        mpl, tpl, mcb, tcb = m.fee_rates(venue, "AAA")
        for lots in (1, 10**10 + 3, 4 * 10**10, 10**12 + 1):
            for px in (price_x2, price_x2 + 1):
                assert m.fee(venue, "AAA", TAKER, px, lots) == fee_units(tpl, tcb, px, lots)
                assert m.fee(venue, "AAA", MAKER, px, lots) == fee_units(mpl, mcb, px, lots)
    # A fee that itself cannot be an int64 is an error (naming the exact fee), not a
    # wrapped number: a charge and a rebate.
    mpl, tpl, mcb, tcb = m.fee_rates("FAST", "AAA")
    for liq, per_lot, cbps in ((TAKER, tpl, tcb), (MAKER, mpl, mcb)):
        exact = fee_units(per_lot, cbps, price_x2, 2**62)
        assert abs(exact) > 2**63
        with pytest.raises(OverflowError, match=f"is {exact} fee units, beyond int64"):
            m.fee("FAST", "AAA", liq, price_x2, 2**62)


def test_child_fill_reports_the_exact_fee(book_class):
    m = quiet_market(book_class, instruments=FINE)
    inst = m.instrument("AAA")
    lots = 40_000 * SHARE
    add(m, "BPS", 1, SELL, PX_500, lots)
    rec = Recorder()
    m.submit("BPS", "AAA", BUY, lots, PX_500, LIMIT, IOC, on_report=rec)
    step(m)
    fill = [r for r in rec.reports if r.kind == K.RPT_FILL][0]
    assert (fill.price_x2, fill.last_qty) == (2 * PX_500, lots)
    assert units_to_currency(fill.fee, inst) == Decimal(500)       # $20M at 0.25 bps


def test_parent_sums_refuse_to_wrap():
    """A parent's notional is int64 (shared with compiled strategies): past it, an error."""
    m = quiet_market(instruments=FINE)
    lots = 1_000_000 * SHARE                             # 2 * PX_500 * lots = 1e19 > 2^63
    add(m, "FAST", 1, SELL, PX_500, 2 * lots)
    parent = StrategyCore(m.loop, 0, BUY, 2 * lots)
    parent.send(m.venue_index("FAST"), lots // 2, PX_500, LIMIT, IOC)
    step(m)
    assert (parent.filled, parent.notional_x2) == (lots // 2, PX_500 * lots)
    parent.send(m.venue_index("FAST"), lots, PX_500, LIMIT, IOC)
    with pytest.raises(OverflowError, match="coarser tick_size or lot_size"):
        step(m)
    assert (parent.filled, parent.notional_x2) == (lots // 2, PX_500 * lots)   # not wrapped


# ---------------------------------------------------------------- dark minimum quantity

def _dark_ping(book_class, resting, stp=-1):
    """Rest ``(account, qty)`` sell pegs in the pool in that order, then send an IOC
    buy of 150 with min_qty 100 from account 1000; returns its reports and the
    resting orders' reports."""
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 1000, account=2)
    add(m, "FAST", 2, SELL, 5001, 1000, account=2)
    makers = Recorder()
    for account, qty in resting:
        m.submit("POOL", "AAA", SELL, qty, 0, LIMIT, DAY, account=account, on_report=makers)
        step(m)
    ping = Recorder()
    m.submit("POOL", "AAA", BUY, 150, 0, LIMIT, IOC, account=1000, stp=stp, on_report=ping,
             min_qty=100)
    step(m)
    return ([(r.kind, r.last_qty, r.reason) for r in ping.reports],
            [(r.kind, r.last_qty, r.reason) for r in makers.reports if r.kind != K.RPT_ACCEPTED])


def test_dark_min_qty_does_not_count_own_orders_that_stp_will_not_trade(book_class):
    unfillable = [(K.RPT_ACCEPTED, 0, 0),
                  (K.RPT_CANCELED, 0, CancelReason.CXL_MIN_QTY_UNFILLABLE)]
    # Cancel-newest: 50 lots of another account, then our own 100: only 50 can trade.
    ping, makers = _dark_ping(book_class, [(2000, 50), (1000, 100)])
    assert (ping, makers) == (unfillable, [])
    # Cancel-oldest: our own 100 first would be canceled, not traded: again only 50.
    ping, makers = _dark_ping(book_class, [(1000, 100), (2000, 50)],
                              stp=int(StpMode.CANCEL_OLDEST))
    assert (ping, makers) == (unfillable, [])
    # 120 lots of others ahead of our own: the minimum is met and the ping trades.
    ping, makers = _dark_ping(book_class, [(2000, 120), (1000, 100)])
    assert ping == [(K.RPT_ACCEPTED, 0, 0), (K.RPT_FILL, 120, 0),
                    (K.RPT_CANCELED, 0, CancelReason.CXL_SELF_TRADE)]
    assert makers == [(K.RPT_FILL, 120, 0)]
    # No self-trade prevention: our own orders count (and trade).
    ping, _ = _dark_ping(book_class, [(2000, 50), (1000, 100)], stp=int(StpMode.STP_NONE))
    assert ping == [(K.RPT_ACCEPTED, 0, 0), (K.RPT_FILL, 50, 0), (K.RPT_FILL, 100, 0)]



@pytest.mark.parametrize("min_qty_ping", [True, False])
def test_dark_pool_refuses_an_unknown_stp_mode(book_class, min_qty_ping):
    # With a minimum quantity it was acknowledged, then canceled "min qty
    # unfillable" (the check took 9 for a mode); it is refused as lit books do.
    if min_qty_ping:
        ping, makers = _dark_ping(book_class, [(2000, 50)], stp=9)  # short of the minimum
    else:
        m = quiet_market(book_class)
        add(m, "FAST", 1, BUY, 5000, 1000, account=2)
        add(m, "FAST", 2, SELL, 5001, 1000, account=2)
        rec, makers = Recorder(), []
        m.submit("POOL", "AAA", BUY, 150, 0, LIMIT, DAY, account=1000, stp=9, on_report=rec)
        step(m)
        ping = [(r.kind, r.last_qty, r.reason) for r in rec.reports]
    assert (ping, makers) == ([(K.RPT_REJECTED, 0, int(RejectReason.INVALID_STP_MODE))], [])


# ---------------------------------------------------------------- dark report prices

def test_dark_reports_carry_the_order_limit_not_the_pool_price(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, BUY, 5000, 1000, account=2)
    add(m, "FAST", 2, SELL, 5002, 1000, account=2)          # mid 50.01
    resting, parked, peg_ioc, limit_ioc, market_ioc = (Recorder() for _ in range(5))
    child = m.submit("POOL", "AAA", BUY, 100, 5005, LIMIT, DAY, on_report=resting)
    m.submit("POOL", "AAA", BUY, 100, 4990, LIMIT, DAY, on_report=parked)   # below the mid
    m.submit("POOL", "AAA", BUY, 100, 0, LIMIT, IOC, on_report=peg_ioc)
    m.submit("POOL", "AAA", BUY, 100, 5005, LIMIT, IOC, on_report=limit_ioc)
    m.submit("POOL", "AAA", BUY, 100, 5005, MARKET, IOC, on_report=market_ioc)
    step(m)
    m.cancel(child)
    step(m)

    def prices(rec):
        return [(r.kind, r.price_x2) for r in rec.reports]
    assert prices(resting) == [(K.RPT_ACCEPTED, 10010), (K.RPT_CANCELED, 10010)]
    assert prices(parked) == [(K.RPT_ACCEPTED, 9980)]
    assert prices(peg_ioc) == [(K.RPT_ACCEPTED, 0), (K.RPT_CANCELED, 0)]
    assert prices(limit_ioc) == [(K.RPT_ACCEPTED, 10010), (K.RPT_CANCELED, 10010)]
    assert prices(market_ioc) == [(K.RPT_ACCEPTED, 0), (K.RPT_CANCELED, 0)]


# ---------------------------------------------------------------- integer arguments

def test_a_float_order_argument_is_refused_never_truncated():
    """submit(book, 1.7, 5.7, 5000.5) sent a BUY of 5 lots at 5000, external(...) and a
    strategy's send likewise: the int and int64_t parameters took floats through __int__
    (review). external(side=257) stored side 1 (BUY) in its byte."""
    m = quiet_market()
    b = m.book_index("FAST", "AAA")
    calls = {
        "side": lambda: m.loop.submit(b, 1.7, 5, 5000),
        "qty": lambda: m.loop.submit(b, BUY, 5.7, 5000),
        "price": lambda: m.loop.submit(b, BUY, 5, 5000.5),
        "ord_type": lambda: m.loop.submit(b, BUY, 5, 5000, ord_type=2.0),
        "tif": lambda: m.loop.submit(b, BUY, 5, 5000, tif=0.5),
        "stp": lambda: m.loop.submit(b, BUY, 5, 5000, stp=1.5),
        "book": lambda: m.loop.submit(float(b), BUY, 5, 5000),
        "min_qty": lambda: m.loop.submit(b, BUY, 5, 5000, min_qty=1.5),
        "external side": lambda: m.loop.external(b, OP_ADD, 7, 2.2, 5000, 5),
        "external op": lambda: m.loop.external(b, float(OP_ADD), 7, SELL, 5000, 5),
        "external qty": lambda: m.loop.external(b, OP_ADD, 7, SELL, 5000, 5.5),
        "strategy side": lambda: StrategyCore(m.loop, 0, 1.7, 100),
        "strategy qty": lambda: StrategyCore(m.loop, 0, BUY, 100.5),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError):
            call()
    parent = StrategyCore(m.loop, 0, BUY, 100)
    for call in (lambda: parent.send(m.venue_index("FAST"), 5.7, 5000),
                 lambda: parent.send(m.venue_index("FAST"), 5, 5000, LIMIT, 1.5),
                 lambda: parent.send(float(m.venue_index("FAST")), 5, 5000)):
        with pytest.raises(TypeError):
            call()
    for field, call in (("side", lambda: m.loop.submit(b, 2**70, 5, 5000)),
                        ("tif", lambda: m.loop.submit(b, BUY, 5, 5000, tif=256)),
                        ("side", lambda: m.loop.external(b, OP_ADD, 7, 257, 5000, 5)),
                        ("op", lambda: m.loop.external(b, OP_ADD + 256, 7, SELL, 5000, 5))):
        with pytest.raises(ValueError, match=f"^{field} "):
            call()
    step(m)
    assert m.loop.book(b).bbo() == (0, 0, 0, 0) and parent.children == []
    # numpy integers are integers
    assert m.loop.external(b, np.uint8(OP_ADD), np.int64(7), np.int8(SELL), 5000, 5) == 0


def test_a_float_index_or_time_is_refused_naming_it():
    """run_until(2.7) ran to 2, set_session(0.9, ...) set venue 0's hours, depth(b, 2.7)
    showed 2 levels, wake_at(1.5) woke at 1: the int and int64_t parameters took floats
    through __int__ (review), and a value beyond them raised an OverflowError that named
    nothing. Now TypeError and ValueError name the argument, and nothing changes."""
    m = quiet_market()
    b, fast = m.book_index("FAST", "AAA"), m.venue_index("FAST")
    now = m.loop.now
    parent = StrategyCore(m.loop, 0, BUY, 100)
    taker = PeriodicTakerCore(m.loop, 0, BUY, 100)
    floats = {
        "until": [lambda: m.loop.run_until(now + 1.5)],
        "venue": [lambda: m.loop.set_session(0.9, now, now + 10), lambda: m.loop.is_open(0.0),
                  lambda: m.loop.latency(0.5)],
        "open_ts": [lambda: m.loop.set_session(fast, float(now), now + 10)],
        "close_ts": [lambda: m.loop.set_session(fast, now, now + 10.5)],
        "book": [lambda: m.loop.depth(float(b)), lambda: m.loop.bbo(0.5),
                 lambda: m.loop.fee(0.0, MAKER, 10_000, 5), lambda: m.loop.book(0.0),
                 lambda: m.loop.dark_waiting(3.0), lambda: m.loop.dark_book(3.0)],
        "n": [lambda: m.loop.depth(b, 2.7), lambda: m.loop.depth(b, n=2.0)],
        "instrument": [lambda: m.loop.nbbo(0.0), lambda: m.loop.mid2(0.5),
                       lambda: m.loop.market_volume(0.0)],
        "liquidity": [lambda: m.loop.fee(b, 0.5, 10_000, 5)],
        "price_x2": [lambda: m.loop.fee(b, MAKER, 10_000.5, 5)],
        "qty": [lambda: m.loop.fee(b, MAKER, 10_000, 5.5)],
        "child_id": [lambda: m.loop.child(1.0)],
        "ts": [lambda: m.loop.set_timer(now + 0.5, lambda: None),
               lambda: parent.wake_at(now + 1.5)],
        "period": [lambda: parent.wake_every(1.5)],
        "first": [lambda: parent.wake_every(1_000, first=now + 0.5)],
        "child_qty": [lambda: taker.configure_taker(2.5, [fast])],
        "venues": [lambda: taker.configure_taker(5, [float(fast)])],
        "start_ts": [lambda: MarketLoop([OrderBook("X")], [0], [0], [False], [0], [0], [0], [0],
                                        m.latency_models[:1], start_ts=1.5)],
        "sample_ns": [lambda: MarketLoop([OrderBook("X")], [0], [0], [False], [0], [0], [0],
                                         [0], m.latency_models[:1], sample_ns=1e9)],
    }
    for field, calls in floats.items():
        for call in calls:
            with pytest.raises(TypeError, match=f"^{field} must be an integer, not float"):
                call()
    huge = {
        "until": [lambda: m.loop.run_until(2**63)],
        "venue": [lambda: m.loop.set_session(2**32, now, now + 10), lambda: m.loop.is_open(2**70)],
        "close_ts": [lambda: m.loop.set_session(fast, now, 2**64)],
        "book": [lambda: m.loop.depth(2**31), lambda: m.loop.book(-2**31 - 1)],
        "n": [lambda: m.loop.depth(b, 2**64)],
        "ts": [lambda: parent.wake_at(2**63)],
        "child_qty": [lambda: taker.configure_taker(2**63, [fast])],
        "venues": [lambda: taker.configure_taker(5, [2**40])],
    }
    for field, calls in huge.items():
        for call in calls:
            with pytest.raises(ValueError, match=f"^{field} -?[0-9]+ is out of range"):
                call()
    # Nothing ran, nothing was scheduled; numpy integers are integers.
    assert m.loop.now == now and m.loop.is_open(np.int8(fast))
    m.loop.external(b, OP_ADD, 7, SELL, 5000, 5)
    m.loop.external(b, OP_ADD, 8, SELL, 5001, 5)
    m.loop.run_until(np.int64(now + 1))
    assert m.loop.now == now + 1
    assert [len(side) for side in m.loop.depth(np.int16(b), np.int64(1))] == [0, 1]
    assert [len(side) for side in m.loop.depth(b, 2**63 - 1)] == [0, 2]


def test_the_flow_reference_refuses_a_float_instrument():
    """FlowAssembler.reference(0.5) priced instrument 0 (an int parameter, review)."""
    m = Market(config(SMALL), flow=True)
    assembler = m.flow.assembler
    with pytest.raises(TypeError, match="^instrument must be an integer, not float"):
        assembler.reference(0.5)
    with pytest.raises(ValueError, match=f"^instrument {2**40} is out of range"):
        assembler.reference(2**40)
    assert assembler.reference(np.int8(0)) == assembler.reference(0) > 0


@pytest.mark.parametrize("venue", ["FAST", "POOL"])
def test_a_price_past_the_bound_is_refused_by_the_venue_not_wrapped_in_its_reports(
        book_class, venue):
    # The book takes any int64 price; the venue reported it in half-ticks, 2 * price, which
    # wraps past 2^62 ticks: a limit of 2^62 + 5 came back as price_x2 -9223372036854775798,
    # and a sell there rested. Past the bound the router and risk keep to (2^40 ticks,
    # ext/types.pxd) the venue refuses the order, and a replace to such a price.
    from ext.router import MAX_PRICE
    m = quiet_market(book_class)
    for price in (2**62 + 5, MAX_PRICE + 1, -1):
        rec = Recorder()
        m.submit(venue, "AAA", SELL, 10, price, LIMIT, DAY, on_report=rec)
        step(m)
        assert [(r.kind, r.reason, r.price_x2) for r in rec.reports] == \
            [(K.RPT_REJECTED, RejectReason.INVALID_PRICE, 0)], price
    rec = Recorder()
    child = m.submit(venue, "AAA", SELL, 10, MAX_PRICE, LIMIT, DAY, on_report=rec)  # the bound
    step(m)
    assert [r.kind for r in rec.reports] == [K.RPT_ACCEPTED]
    if venue == "FAST":
        m.replace(child, 2**62 + 5, 10)
        step(m)
        assert [(r.kind, r.reason, r.price_x2) for r in rec.reports[1:]] == \
            [(K.RPT_CANCEL_REJECTED, RejectReason.INVALID_PRICE, 2 * MAX_PRICE)]
