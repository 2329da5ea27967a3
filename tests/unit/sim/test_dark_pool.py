"""The dark pool's waiting orders: what a mid move touches, one-sided books, cancels, the close.

A dark book keeps the orders the mid may flip (parked outside the book,
tracked inside it with a limit) in heaps keyed so that a move looks only at
the orders it flips (``DarkBook.visited`` counts what it looked at). The
scenarios run on both books (``book_class``); a hypothesis test holds the loop
to the pure-Python model in ``tests/reference/dark_reference.py``.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext.book import OrderBook
from ext.simloop import ReportKind as K
from ext.types import CancelReason, RejectReason
from tests.reference.book_reference import ReferenceBook
from tests.reference.dark_reference import DarkPoolReference
from tests.unit.sim.helpers import (
    BUY, DAY, GTC, IOC, LIMIT, QUIET, SELL, US, Recorder, add, cancel, quiet_market,
)

#: The quiet venues, with a pool that closes after one second.
VENUES = [dict(v, hours=["10:00:00", "10:00:01"]) if v["name"] == "POOL" else v
          for v in QUIET["venues"]]


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["cython", "reference"])
def book_class(request):
    return request.param


def pool_of(m):
    b = m.book_index("POOL", "AAA")
    return b, m.loop.dark_book(b)


def quote(m, bid_id, bid, ask_id, ask):
    """One bid on FAST and one ask on BPS (so a locked or crossed NBBO does not trade)."""
    add(m, "FAST", bid_id, BUY, bid, 100)
    add(m, "BPS", ask_id, SELL, ask, 100)


def pool_trades(m):
    trades, _ = m.tape()
    pool = m.book_index("POOL", "AAA")
    return [(int(t["price_x2"]), int(t["qty"]), int(t["aggressor_side"]))
            for t in trades if t["book"] == pool]


# ---------------------------------------------------------------- cost of a mid move

def test_a_mid_move_looks_only_at_the_orders_it_flips(book_class):
    m = quiet_market(book_class)
    quote(m, 1, 5000, 2, 5002)                              # mid 5001
    add(m, "INV", 3, SELL, 5004, 100)                       # keeps the NBBO two-sided
    pool, dk = pool_of(m)
    for k in range(300):                                    # far below: parked, stay parked
        add(m, "POOL", 100 + k, BUY, 4900, 1, account=3)
    for k in range(300):                                    # far above: tracked, stay in
        add(m, "POOL", 1000 + k, BUY, 5100, 1, account=3)
    assert m.loop.dark_waiting(pool) == (300, 300)
    before, mids = dk.visited, [m.mid_x2("AAA")]
    for k in range(10):                                     # the BPS ask comes and goes
        cancel(m, "BPS", 2 + k)
        mids.append(m.mid_x2("AAA"))
        add(m, "BPS", 3 + k, SELL, 5002 + k % 2, 100)
        mids.append(m.mid_x2("AAA"))
    moves = sum(a != b for a, b in zip(mids, mids[1:]))
    assert moves == 20 and 0 not in mids
    # Each move looks at the top of each of the four heaps, at most (the
    # walk over every waiting order looked at 600).
    assert dk.visited - before <= 4 * moves
    # A one-sided NBBO flips every order with a limit: those 300, out and back.
    before = dk.visited
    cancel(m, "FAST", 1)
    add(m, "FAST", 50, BUY, 5000, 100)
    assert 600 <= dk.visited - before <= 600 + 8
    assert m.loop.dark_waiting(pool) == (300, 300)
    dk.check()


def test_parked_orders_enter_in_arrival_order_across_sides(book_class):
    """Two parked orders the same move lets in enter oldest first, whatever their side
    (and whatever their limit): the older rests, the newer takes it."""
    for first, second in ((BUY, SELL), (SELL, BUY)):
        m = quiet_market(book_class, record_tape=True)
        add(m, "FAST", 1, BUY, 5000, 100)                   # one-sided: no mid
        limits = {BUY: 5001, SELL: 0}                       # a limit and a pure peg
        add(m, "POOL", 10, first, limits[first], 5, account=3)
        add(m, "POOL", 11, second, limits[second], 5, account=4)
        assert m.loop.dark_waiting(m.book_index("POOL", "AAA")) == (2, 0)
        add(m, "BPS", 2, SELL, 5002, 100)                   # mid 5001: both, in one move
        assert pool_trades(m) == [(10002, 5, second)]
        assert m.loop.dark_waiting(m.book_index("POOL", "AAA")) == (0, 0)


# ---------------------------------------------------------------- one-sided books

def test_a_one_sided_nbbo_takes_limit_orders_out_and_the_mid_brings_them_back(book_class):
    m = quiet_market(book_class, record_tape=True)
    quote(m, 1, 5000, 2, 5002)                              # mid 5001
    pool, dk = pool_of(m)
    add(m, "POOL", 10, BUY, 0, 10, account=3)               # pure peg: stays in the book
    add(m, "POOL", 11, BUY, 5005, 10, account=3)            # tracked
    add(m, "POOL", 12, BUY, 5006, 10, account=3)            # tracked
    book = m.loop.book(pool)
    assert book.snapshot()["order_id"].tolist() == [10, 11, 12]
    cancel(m, "BPS", 2)                                     # one-sided: no mid
    assert m.mid_x2("AAA") == 0
    assert m.loop.dark_waiting(pool) == (2, 0)
    assert book.snapshot()["order_id"].tolist() == [10]
    add(m, "POOL", 13, BUY, 5007, 10, account=3)            # arrives: waits outside
    add(m, "POOL", 14, SELL, 0, 5, account=4, tif=IOC)      # nothing can trade
    cancel(m, "POOL", 12)                                   # cancel while outside
    assert dk.waiting() == ([11, 13], [])
    assert pool_trades(m) == []
    add(m, "BPS", 3, SELL, 5002, 100)                       # the mid is back
    # Back in arrival order behind the pure peg, which kept its place.
    assert book.snapshot()["order_id"].tolist() == [10, 11, 13]
    assert dk.waiting() == ([], [11, 13])
    add(m, "POOL", 15, SELL, 0, 25, account=4, tif=IOC)
    assert pool_trades(m) == [(10002, 10, SELL), (10002, 10, SELL), (10002, 5, SELL)]
    assert m.loop.dark_waiting(pool) == (0, 1)              # 13 has 5 left, 11 is gone
    dk.check()


def test_a_child_canceled_while_the_nbbo_is_one_sided_hears_its_limit(book_class):
    m = quiet_market(book_class)
    quote(m, 1, 5000, 2, 5002)
    rec = Recorder()
    child = m.submit("POOL", "AAA", SELL, 30, 5001, LIMIT, GTC, on_report=rec)
    m.run_until(m.now + 1_000 * US)
    pool, dk = pool_of(m)
    assert dk.waiting() == ([], [child])
    cancel(m, "FAST", 1)                                    # one-sided: out of the book
    assert dk.waiting() == ([child], [])
    m.cancel(child)
    m.run_until(m.now + 1_000 * US)
    assert [(r.kind, r.price_x2, r.reason) for r in rec.reports] == [
        (K.RPT_ACCEPTED, 10002, 0), (K.RPT_CANCELED, 10002, CancelReason.CXL_USER)]
    assert m.loop.dark_waiting(pool) == (0, 0)
    dk.check()


# ---------------------------------------------------------------- bookkeeping

def test_tracked_count_drops_as_soon_as_the_order_leaves_the_book(book_class):
    """Filled, or canceled, a tracked order is forgotten at once, not at the next mid move."""
    m = quiet_market(book_class)
    quote(m, 1, 5000, 2, 5002)
    pool, dk = pool_of(m)
    add(m, "POOL", 10, BUY, 5005, 10, account=3)
    add(m, "POOL", 11, BUY, 5005, 10, account=3)
    assert m.loop.dark_waiting(pool) == (0, 2)
    add(m, "POOL", 12, SELL, 0, 10, account=4, tif=IOC)     # fills 10 in full
    assert m.loop.dark_waiting(pool) == (0, 1)
    cancel(m, "POOL", 11)
    assert m.loop.dark_waiting(pool) == (0, 0)
    dk.check()


def test_cancel_of_one_parked_order_among_many_leaves_the_rest_in_order(book_class):
    m = quiet_market(book_class, record_tape=True)
    quote(m, 1, 5000, 2, 5002)
    pool, dk = pool_of(m)
    ids = list(range(100, 400))
    for k, oid in enumerate(ids):                           # limits 4990..4999, mixed
        add(m, "POOL", oid, BUY, 4990 + (k * 7) % 10, 1, account=3)
    for oid in ids[::3]:
        assert cancel(m, "POOL", oid) == 0
        dk.check()
    left = [i for i in ids if (i - 100) % 3]
    assert dk.waiting() == (left, [])
    assert cancel(m, "POOL", ids[0]) != 0                   # gone: unknown to the book
    # The mid falls to 4990: every one left enters, oldest first.
    cancel(m, "FAST", 1)
    cancel(m, "BPS", 2)
    quote(m, 3, 4989, 4, 4991)
    assert dk.waiting() == ([], left)
    assert m.loop.book(pool).snapshot()["order_id"].tolist() == left


def test_close_expires_day_orders_waiting_outside_in_arrival_order(book_class):
    m = quiet_market(book_class, venues=VENUES)
    quote(m, 1, 5000, 2, 5002)
    recs = [Recorder() for _ in range(4)]
    kids = [m.submit("POOL", "AAA", BUY, 5, px, LIMIT, tif, on_report=r)
            for (px, tif), r in zip([(4990, DAY), (4995, GTC), (4980, DAY), (5005, DAY)], recs)]
    m.run_until(m.now + 1_000 * US)
    pool, dk = pool_of(m)
    assert dk.waiting() == (kids[:3], [kids[3]])
    m.run_until(m.session_start + 2_000_000_000)
    assert [r.kinds()[-1] for r in recs] == [K.RPT_EXPIRED, K.RPT_ACCEPTED, K.RPT_EXPIRED,
                                             K.RPT_EXPIRED]
    assert recs[0].reports[-1].ts == recs[2].reports[-1].ts
    assert dk.waiting() == ([kids[1]], [])
    dk.check()


def test_pool_refuses_an_order_id_it_already_holds(book_class):
    m = quiet_market(book_class)
    quote(m, 1, 5000, 2, 5002)
    assert add(m, "POOL", 10, BUY, 4990, 5, account=3) == 0       # parked
    assert add(m, "POOL", 10, BUY, 4990, 5, account=3) == RejectReason.DUPLICATE_ORDER_ID
    assert add(m, "POOL", 11, BUY, 5005, 5, account=3) == 0       # tracked
    assert add(m, "POOL", 11, BUY, 4990, 5, account=3) == RejectReason.DUPLICATE_ORDER_ID
    assert m.loop.dark_waiting(m.book_index("POOL", "AAA")) == (1, 1)


# ---------------------------------------------------------------- against the model

steps = st.lists(st.one_of(
    st.tuples(st.just("bid"), st.one_of(st.none(), st.integers(4996, 5004))),
    st.tuples(st.just("ask"), st.one_of(st.none(), st.integers(4996, 5004))),
    st.tuples(st.just("dark"), st.sampled_from([BUY, SELL]),
              st.one_of(st.just(0), st.integers(4996, 5004)), st.integers(1, 20),
              st.sampled_from([GTC, DAY, IOC])),
    st.tuples(st.just("cancel"), st.integers(0, 1_000)),
), min_size=20, max_size=80)


def _check_against_model(book_class, script):
    m = quiet_market(book_class, record_tape=True, venues=VENUES)
    pool, dk = pool_of(m)
    model = DarkPoolReference(DAY, GTC)
    lit = {"bid": None, "ask": None}                        # resting lit order id
    next_id, dark_ids = 1, []
    for step in script:
        if step[0] in lit:
            venue, side = ("FAST", BUY) if step[0] == "bid" else ("BPS", SELL)
            if lit[step[0]] is not None:
                cancel(m, venue, lit[step[0]])
                model.refresh(m.mid_x2("AAA"))
                lit[step[0]] = None
            if step[1] is not None:
                add(m, venue, next_id, side, step[1], 100)
                lit[step[0]] = next_id
                next_id += 1
                model.refresh(m.mid_x2("AAA"))
        elif step[0] == "dark":
            _, side, limit, qty, tif = step
            add(m, "POOL", next_id, side, limit, qty, account=3, tif=tif)
            model.new(next_id, side, limit, qty, tif, m.mid_x2("AAA"))
            dark_ids.append(next_id)
            next_id += 1
        elif dark_ids:
            oid = dark_ids[step[1] % len(dark_ids)]
            cancel(m, "POOL", oid)
            model.cancel(oid)
        dk.check()
        assert pool_trades(m) == model.trades
        assert dk.waiting() == (model.parked_ids(), model.tracked_ids())
        snap = m.loop.book(pool).snapshot()
        assert list(zip(snap["order_id"].tolist(), snap["leaves_qty"].tolist())) == \
            model.book_rows()
    m.run_until(m.session_start + 2_000_000_000)            # the pool's close
    model.close(DAY)
    dk.check()
    assert dk.waiting() == (model.parked_ids(), model.tracked_ids())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_cython_loop_matches_the_dark_pool_model(script):
    _check_against_model(OrderBook, script)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_reference_book_loop_matches_the_dark_pool_model(script):
    _check_against_model(ReferenceBook, script)
