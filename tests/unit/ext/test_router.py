"""Unit tests of the smart order router, with exact children, fills and records.

Every test runs against both the Cython router and the pure-Python reference
(the ``R`` fixture is parametrized), so each rule is pinned down twice. Lit
venues are real ``ext.book.OrderBook`` instances driven by ``Venues`` below:
the router's actions are executed on them and their fills and events are
reported back, as the engine will do with real venues.
"""
import contextlib
import importlib.machinery
import io
import math
import pathlib
import re
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st
import pytest

import ext.router
from ext.book import OrderBook
from ext.router import (
    ACT_CANCEL, ACT_NEW, ACT_REPLACE, ACTION_DTYPE, BESTEX_DTYPE, CF_ISO, CF_MID_PEG,
    CF_POST_ONLY, PARENT_DTYPE, PH_POST, ROLE_DARK, ROLE_POST, ROLE_SWEEP, STRAT_DARK_FIRST,
    STRAT_PASSIVE, STRAT_POV, STRAT_SWEEP, STRAT_TWAP, STRAT_VWAP, Router, VenueHealth,
)
from ext.types import EventKind, OrdStatus, OrdType, RejectReason as RR, Side, TimeInForce as T
from tests.reference.router_reference import ReferenceRouter

BUY, SELL = int(Side.BUY), int(Side.SELL)
OFFSET = 1_000_000          # book order id = child id + OFFSET (background ids stay below)
OURS = 999                  # our account in the venue books


@pytest.fixture(params=["cython", "reference"])
def R(request):
    """The router class under test."""
    return Router if request.param == "cython" else ReferenceRouter


class Venues:
    """Venues for instrument 0: ``OrderBook``s for lit venues, midpoint pools for dark ones.

    ``run()`` drains the router's actions, executes each on its venue and
    reports what happened (ack, fills at the book's price, IOC remainders,
    rejects with the book's code), republishing the depth after every round,
    until the router has nothing more to send.
    """

    def __init__(self, router, lit, dark=(), levels=10):
        self.router = router
        self.books = {v: OrderBook(f"V{v}") for v in lit}
        self.pool = {v: 0 for v in dark}          # lots available at the midpoint
        self.levels = levels
        self.next_id = 1
        self.fills = []                          # (child_id, venue, qty, px_x2)
        self.sent = []                           # every action executed
        self.silent = set()                      # venues that swallow orders (no reports)
        for v in dark:
            router.set_venue(v, dark=True)

    def rest(self, v, side, price, qty, account=1):
        """Add background liquidity (a resting limit order of someone else)."""
        self.books[v].add(self.next_id, side, price, qty, account=account)
        self.next_id += 1
        self.books[v].drain_fills()
        self.books[v].drain_events()

    def publish(self):
        for v, book in self.books.items():
            bids, asks = book.depth(self.levels)
            assert self.router.update_book(0, v, bids, asks) == 0

    def take(self, v, side, qty, price, now=0):
        """Background flow trading against venue ``v`` (it may fill our resting children)."""
        self.books[v].add(self.next_id, side, price, qty, account=2, tif=T.IOC)
        self.next_id += 1
        self._report(v, now)

    def run(self, now=0, rounds=50):
        for _ in range(rounds):
            actions = self.router.drain_actions()
            if len(actions) == 0:
                return
            for a in actions:
                self.sent.append(a)
                self._execute(a, now)
            self.publish()
        raise AssertionError("the router kept sending after 50 rounds")

    def _execute(self, a, now):
        r, v, cid, kind = self.router, int(a["venue"]), int(a["child_id"]), int(a["kind"])
        if v in self.silent:
            return
        if v in self.pool:
            if kind != ACT_NEW:
                return
            bid, _, ask, _ = r.nbbo(0)
            mid2, price, qty = bid + ask, int(a["price"]), int(a["qty"])
            assert a["flags"] & CF_MID_PEG and a["tif"] == T.IOC
            within = price == 0 or (mid2 <= 2 * price if a["side"] == BUY else mid2 >= 2 * price)
            fill = min(self.pool[v], qty) if within else 0
            if fill < int(a["min_qty"]):
                fill = 0
            assert r.on_ack(cid, now) == 0
            if fill:
                self.pool[v] -= fill
                self.fills.append((cid, v, fill, mid2))
                assert r.on_fill(cid, fill, mid2, now) == 0
            if fill < qty:
                assert r.on_canceled(cid, now) == 0
            return
        book, oid = self.books[v], cid + OFFSET
        if kind == ACT_NEW:
            code = book.add(oid, int(a["side"]), int(a["price"]), int(a["qty"]), account=OURS,
                            ord_type=int(a["ord_type"]), tif=int(a["tif"]),
                            post_only=bool(a["flags"] & CF_POST_ONLY), ts=now)
            if code:
                book.drain_events()
                assert r.on_reject(cid, code, now) == 0
                return
            assert r.on_ack(cid, now) == 0
        elif kind == ACT_CANCEL:
            if book.cancel(oid, now):
                return                      # already gone; its end was reported
        elif kind == ACT_REPLACE:
            code = book.replace(oid, int(a["price"]), int(a["qty"]), now)
            if code:
                assert r.on_replace_rejected(cid, now) == 0
                return
            assert r.on_replaced(cid, now) == 0
        self._report(v, now)

    def _report(self, v, now):
        book, r = self.books[v], self.router
        out = [(int(f["seq"]), "fill", f) for f in book.drain_fills()]
        out += [(int(e["seq"]), "event", e) for e in book.drain_events()]
        for _, what, rec in sorted(out, key=lambda x: x[0]):
            if what == "fill":
                for oid in (int(rec["taker_id"]), int(rec["maker_id"])):
                    if oid >= OFFSET:
                        qty, px_x2 = int(rec["qty"]), 2 * int(rec["price"])
                        self.fills.append((oid - OFFSET, v, qty, px_x2))
                        assert r.on_fill(oid - OFFSET, qty, px_x2, now) == 0
            elif int(rec["order_id"]) >= OFFSET:
                cid = int(rec["order_id"]) - OFFSET
                if rec["kind"] == EventKind.EV_CANCELED:
                    self._canceled(cid, rec, now)
                elif rec["kind"] == EventKind.EV_EXPIRED:
                    assert r.on_expired(cid, now) == 0

    def _canceled(self, cid, rec, now):
        """The venue canceled child ``cid`` (event ``rec``): tell the router."""
        assert self.router.on_canceled(cid, now) == 0


def news(actions):
    """New-order actions as (venue, side, price, qty, tif, flags)."""
    return [(int(a["venue"]), int(a["side"]), int(a["price"]), int(a["qty"]), int(a["tif"]),
             int(a["flags"])) for a in actions if a["kind"] == ACT_NEW]


def three_venues(R, **config):
    """Three lit venues with known asks and taker fees (fee units per lot)."""
    r = R(3, config=config)
    r.set_venue(0, taker_fee=3000, latency_ns=300)
    r.set_venue(1, taker_fee=2000, latency_ns=200)
    r.set_venue(2, taker_fee=1000, latency_ns=100)
    venues = Venues(r, lit=[0, 1, 2])
    for v, px, qty in [(0, 100, 30), (0, 101, 50), (1, 100, 20), (1, 102, 100),
                       (2, 101, 40), (2, 103, 100)]:
        venues.rest(v, SELL, px, qty)
    for v in range(3):
        venues.rest(v, BUY, 98, 10)
    venues.publish()
    return r, venues


# ---------------------------------------------------------------- build
def test_extension_is_compiled():
    assert isinstance(ext.router.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert ACTION_DTYPE.itemsize == 64 and PARENT_DTYPE.itemsize == 32


# ---------------------------------------------------------------- best price sweep
def test_sweep_across_three_venues_exact_children_fills_and_no_trade_through(R):
    r, venues = three_venues(R)
    assert r.nbbo(0) == (98, 30, 100, 50)
    assert r.route(1, 0, BUY, 120, 103, now=5, strategy=STRAT_SWEEP, tif=T.IOC) == 0
    actions = r.drain_actions()
    # Price 100 first (B's fee is lower than A's), then 101 (C's fee is lower
    # than A's); one child per venue at the worst price taken there, in the
    # order the venues were first used. Beyond the best price: ISO.
    assert news(actions) == [(1, BUY, 100, 20, T.IOC, 0),
                             (0, BUY, 101, 60, T.IOC, CF_ISO),
                             (2, BUY, 101, 40, T.IOC, CF_ISO)]
    assert list(actions["child_id"]) == [1, 2, 3]
    assert set(actions["parent_id"]) == {1} and set(actions["ts"]) == {5}
    venues.router.drain_actions()
    for a in actions:
        venues._execute(a, 6)
    assert sorted(venues.fills) == [(1, 1, 20, 200), (2, 0, 30, 200), (2, 0, 30, 202),
                                    (3, 2, 40, 202)]
    st = r.parent(1)
    assert st["status"] == OrdStatus.FILLED and st["done"]
    assert st["cum_qty"] == 120 and st["leaves_qty"] == 0 and st["working_qty"] == 0
    assert st["avg_px"] == (1207, 12)                 # 12070 ticks x lots / 120 lots
    assert st["fees"] == 60 * 3000 + 20 * 2000 + 40 * 1000
    # No trade-through: no venue has a price left better than the worst one paid.
    assert min(b.best_ask for b in venues.books.values()) == 101
    assert r.drain_actions().size == 0


def test_sweep_takes_only_the_best_venue_when_it_suffices(R):
    r, venues = three_venues(R)
    assert r.route(1, 0, BUY, 15, 0, now=0) == 0     # market order, AUTO -> sweep
    assert news(r.drain_actions()) == [(1, BUY, 100, 15, T.IOC, 0)]


def test_sweep_respects_the_limit_and_rests_the_rest_for_a_day_order(R):
    r, venues = three_venues(R)
    assert r.route(1, 0, BUY, 80, 100, now=0) == 0   # only 50 lots at or below 100
    assert news(r.drain_actions()) == [(1, BUY, 100, 20, T.IOC, 0), (0, BUY, 100, 30, T.IOC, 0)]
    r2, venues2 = three_venues(R)
    r2.route(1, 0, BUY, 80, 100, now=0)
    venues2.run(now=1)
    st = r2.parent(1)
    assert st["cum_qty"] == 50 and st["phase"] == PH_POST and st["working_qty"] == 30
    posted = [s for s in venues2.sent if s["kind"] == ACT_NEW and s["role"] == ROLE_POST]
    assert len(posted) == 1 and posted[0]["flags"] == CF_POST_ONLY and posted[0]["tif"] == T.DAY
    # Posted while the router's view still showed the 100 offers it had just
    # taken: one tick inside them. Fresh data shows 101: reprice to the limit.
    assert int(posted[0]["price"]) == 99 and int(posted[0]["qty"]) == 30
    assert r2.tick(1 + 1_000_000) == 1
    venues2.run(now=1 + 1_000_000)
    assert (venues2.sent[-1]["kind"], int(venues2.sent[-1]["price"])) == (ACT_REPLACE, 100)
    assert r2.live_children(1)[0]["price"] == 100
    assert venues2.books[posted[0]["venue"]].order(int(posted[0]["child_id"]) + OFFSET)["price"] \
        == 100


def test_ioc_parent_without_liquidity_is_canceled_with_no_liquidity(R):
    r, venues = three_venues(R)
    assert r.route(1, 0, BUY, 10, 99, now=0, tif=T.IOC) == 0
    assert r.drain_actions().size == 0
    rec = r.drain_finished()
    assert len(rec) == 1 and rec[0]["status"] == OrdStatus.CANCELED
    assert rec[0]["reason"] == RR.NO_LIQUIDITY and rec[0]["cum_qty"] == 0


def test_sell_sweep_mirrors_buy(R):
    r = R(2)
    r.update_book(0, 0, bids=[(100, 10), (99, 10)], asks=[(102, 5)])
    r.update_book(0, 1, bids=[(101, 5), (98, 50)], asks=[(103, 5)])
    assert r.route(7, 0, SELL, 22, 99, now=0) == 0
    assert news(r.drain_actions()) == [(1, SELL, 101, 5, T.IOC, 0),
                                       (0, SELL, 99, 17, T.IOC, CF_ISO)]


def test_fees_order_venues_at_equal_price_and_latency_breaks_ties(R):
    r = R(4)
    for v in range(4):
        r.update_book(0, v, asks=[(100, 10)])
    r.set_venue(0, taker_fee=2500, latency_ns=10)
    r.set_venue(1, taker_fee=2000, latency_ns=900)
    r.set_venue(2, taker_fee=2500, latency_ns=5)
    r.set_venue(3, taker_fee=2500, latency_ns=5)       # ties with 2: lower index first
    r.route(1, 0, BUY, 40, 100, now=0)
    assert [v for v, *_ in news(r.drain_actions())] == [1, 2, 3, 0]
    # A better price always comes first, whatever the fees.
    r2 = R(2)
    r2.set_venue(0, taker_fee=90_000)                  # 9 ticks per lot
    r2.update_book(0, 0, asks=[(99, 10)])
    r2.update_book(0, 1, asks=[(100, 10)])
    r2.route(2, 0, BUY, 15, 100, now=0)
    assert news(r2.drain_actions()) == [(0, BUY, 99, 10, T.IOC, 0),
                                        (1, BUY, 100, 5, T.IOC, CF_ISO)]


def test_fees_are_per_instrument(R):
    # Fee units are per tick x lot: the same per-share fee is a different
    # number of units per lot for an instrument with other tick or lot sizes.
    r = R(2, n_instruments=2)
    r.set_venue(0, taker_fee=1000)
    r.set_venue(1, taker_fee=2000)
    r.set_fees(1, 0, taker_fee=5000)                   # instrument 1 only
    assert r.get_fees(0, 0)["taker_fee"] == 1000 and r.get_fees(1, 0)["taker_fee"] == 5000
    for i in range(2):
        for v in range(2):
            r.update_book(i, v, asks=[(100, 10)])
    r.route(1, 0, BUY, 10, 0, now=0)
    r.route(2, 1, BUY, 10, 0, now=0)
    a = r.drain_actions()
    assert [(int(x["instrument"]), int(x["venue"])) for x in a] == [(0, 0), (1, 1)]
    assert r.on_fill(int(a[1]["child_id"]), 10, 200) == 0
    assert r.parent(2)["fees"] == 10 * 2000


def test_rate_fees_compare_exactly_against_per_lot_fees(R):
    # Venue 0 charges 30 cbps of notional, venue 1 a flat 0.01 tick per lot.
    # At 10,000 ticks 30 cbps is 30 ticks per lot, far above 0.01; at 3 ticks it is 0.009.
    for price, first in ((10_000, 1), (3, 0)):
        r = R(2)
        r.set_venue(0, taker_cbps=30)
        r.set_venue(1, taker_fee=100)
        r.update_book(0, 0, asks=[(price, 5)])
        r.update_book(0, 1, asks=[(price, 5)])
        r.route(1, 0, BUY, 5, 0, now=0)
        assert [v for v, *_ in news(r.drain_actions())] == [first]


@pytest.mark.parametrize("per_lot, cbps, px_x2, qty, fee", [
    (-7, 3, 667, 7, -49 + 70),      # 667 * 7 * 3 / 200 = 70.035 -> 70
    (0, 1, 100, 1, 1),              # +0.5 -> 1: half away from zero
    (0, -1, 100, 1, -1),            # -0.5 -> -1
    (0, -1, 99, 1, 0),              # -0.495 -> 0
    (3000, 0, 201, 9, 27_000),      # per-lot only: 0.3 tick x 9 lots
])
def test_fee_of_a_fill_from_the_schedule(R, per_lot, cbps, px_x2, qty, fee):
    # The simulator's rule (docs/sim.md): per_lot * qty + round(px_x2 * qty * cbps / 200).
    r = R(1)
    r.set_venue(0, taker_fee=per_lot, taker_cbps=cbps)
    r.update_book(0, 0, asks=[(100, 10)])
    r.route(1, 0, BUY, qty, 0, now=0)
    assert r.on_fill(int(r.drain_actions()[0]["child_id"]), qty, px_x2, 1) == 0
    assert r.parent(1)["fees"] == fee


def test_fee_reported_by_the_venue_wins(R):
    r = R(1)
    r.set_venue(0, taker_fee=3000)
    r.update_book(0, 0, asks=[(333, 10)])
    r.route(1, 0, BUY, 7, 0, now=0)
    assert r.on_fill(int(r.drain_actions()[0]["child_id"]), 7, 666, 1, fee=-12345) == 0
    assert r.parent(1)["fees"] == -12345


# ---------------------------------------------------------------- own liquidity
def test_fill_reported_after_a_book_update_does_not_hide_the_fresh_book(R):
    """A child executes, the venue's fresh depth arrives, then the fill report: the
    update already shows the book without our lots, so the fill must not hide
    the lots it still shows (else the next parent trades through them)."""
    r = R(2)
    r.update_book(0, 0, asks=[(100, 20)])
    r.update_book(0, 1, asks=[(101, 50)])
    r.route(1, 0, BUY, 10, 101, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    (a,) = r.drain_actions()
    assert int(a["venue"]) == 0 and r.book_state(0, 0)["reserved_asks"] == 10
    r.update_book(0, 0, asks=[(100, 10)])           # already without our 10 lots...
    assert r.book_state(0, 0)["reserved_asks"] == 0
    assert r.on_fill(int(a["child_id"]), 10, 200, now=2) == 0      # ...then the report
    assert r.book_state(0, 0)["reserved_asks"] == 0
    r.route(2, 0, BUY, 10, 101, now=3, strategy=STRAT_SWEEP, tif=T.IOC)
    assert news(r.drain_actions()) == [(0, BUY, 100, 10, T.IOC, 0)]  # not venue 1 at 101


def test_own_claims_and_fills_hide_lots_until_the_next_update(R):
    """Without a fresh update in between, two parents never chase the same lots."""
    r = R(2)
    r.update_book(0, 0, asks=[(100, 20)])
    r.update_book(0, 1, asks=[(101, 50)])
    r.route(1, 0, BUY, 10, 101, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    (a,) = r.drain_actions()
    r.route(2, 0, BUY, 15, 101, now=1, strategy=STRAT_SWEEP, tif=T.IOC)   # 10 claimed
    assert news(r.drain_actions()) == [(0, BUY, 100, 10, T.IOC, 0),
                                       (1, BUY, 101, 5, T.IOC, CF_ISO)]
    assert r.on_fill(int(a["child_id"]), 10, 200, now=2) == 0   # claimed -> filled
    assert r.book_state(0, 0)["reserved_asks"] == 20
    r.route(3, 0, BUY, 5, 101, now=3, strategy=STRAT_SWEEP, tif=T.IOC)
    assert news(r.drain_actions()) == [(1, BUY, 101, 5, T.IOC, 0)]


def test_level_beyond_max_qty_is_held_as_max_qty(R):
    r = R(1)
    assert r.update_book(0, 0, bids=[(99, 1 << 62)], asks=[(101, 5), (102, (1 << 63) - 1)]) == 0
    assert r.depth(0, 0) == ([(99, 1 << 40)], [(101, 5), (102, 1 << 40)])
    assert r.nbbo(0) == (99, 1 << 40, 101, 5)


def test_update_book_from_a_book_with_a_huge_level():
    """The engine's path: a venue level above MAX_QTY is not a reason to keep old depth."""
    book = OrderBook("TEST")
    assert book.add(1, SELL, 100, 1 << 62, account=1) == 0
    assert book.add(2, SELL, 100, 1 << 62, account=1) == RR.VALUE_OUT_OF_RANGE
    r = Router(1)
    assert r.update_book_from(0, 0, book) == 0
    assert r.depth(0, 0) == ([], [(100, 1 << 40)])


# ---------------------------------------------------------------- accounting
def test_avg_px_is_an_exact_rational_and_leaves_follow_fills(R):
    r = R(1)
    r.update_book(0, 0, asks=[(100, 100)])
    r.route(1, 0, BUY, 100, 0, now=0)
    cid = int(r.drain_actions()[0]["child_id"])
    assert r.on_fill(cid, 1, 201, 1) == 0
    assert r.on_fill(cid, 2, 200, 1) == 0
    st = r.parent(1)
    assert st["avg_px"] == (601, 6) and Fraction(*st["avg_px"]) == Fraction(601, 6)
    assert st["cum_qty"] == 3 and st["leaves_qty"] == 97 and st["working_qty"] == 97
    assert st["qty"] == st["cum_qty"] + st["leaves_qty"]
    assert st["status"] == OrdStatus.PARTIALLY_FILLED


def test_reports_for_unknown_children_and_bad_fills_change_nothing(R):
    r = R(1)
    r.update_book(0, 0, asks=[(100, 100)])
    r.route(1, 0, BUY, 10, 0, now=0)
    cid = int(r.drain_actions()[0]["child_id"])
    assert r.on_fill(cid + 1, 1, 200) == RR.UNKNOWN_ORDER
    assert r.on_fill(cid, (1 << 40) + 1, 200) == RR.INVALID_QTY    # past MAX_QTY: no fill
    assert r.on_fill(cid, 0, 200) == RR.INVALID_QTY
    assert r.on_fill(cid, 1, 0) == RR.INVALID_PRICE
    assert r.on_ack(99) == RR.UNKNOWN_ORDER and r.on_canceled(99) == RR.UNKNOWN_ORDER
    assert r.on_reject(99, RR.VENUE_REJECT) == RR.UNKNOWN_ORDER
    assert r.parent(1)["cum_qty"] == 0 and r.parent(1)["working_qty"] == 10
    assert r.on_fill(cid, 10, 200) == 0
    assert r.on_fill(cid, 1, 200) == RR.UNKNOWN_ORDER      # the child is done


@pytest.mark.parametrize("args, code", [
    ((0, 0, BUY, 10, 100), RR.INVALID_ORDER_ID),
    ((1, 5, BUY, 10, 100), RR.UNKNOWN_INSTRUMENT),
    ((1, 0, 9, 10, 100), RR.INVALID_SIDE),
    ((1, 0, BUY, 0, 100), RR.INVALID_QTY),
    ((1, 0, BUY, 10, -1), RR.INVALID_PRICE),
])
def test_route_validation_codes(R, args, code):
    r = R(1)
    assert r.route(*args) == code
    assert r.n_active == 0 and r.pending_actions == 0


def test_route_refusals_for_tif_strategy_schedule_and_routes(R):
    r = R(2)
    r.update_book(0, 0, bids=[(99, 5)], asks=[(101, 5)])
    assert r.route(1, 0, BUY, 10, 100, tif=T.FOK) == RR.INVALID_TIF
    assert r.route(1, 0, BUY, 10, 100, strategy=42) == RR.INVALID_STRATEGY
    assert r.route(1, 0, BUY, 10, 0, strategy=STRAT_PASSIVE) == RR.INVALID_STRATEGY
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_PASSIVE, tif=T.IOC) == RR.INVALID_STRATEGY
    assert r.route(1, 0, BUY, 10, 100, now=10, strategy=STRAT_TWAP, end_ns=10) \
        == RR.INVALID_SCHEDULE
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_VWAP, end_ns=10, profile=[0, 0]) \
        == RR.INVALID_SCHEDULE
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_VWAP, end_ns=10) == RR.INVALID_SCHEDULE
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_POV, pov_ppm=0) == RR.INVALID_SCHEDULE
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_POV, pov_ppm=1_000_001) \
        == RR.INVALID_SCHEDULE
    r.set_open(0, False)
    r.set_open(1, False)
    assert r.route(1, 0, BUY, 10, 0) == RR.NO_ROUTE
    r.set_open(1, True)
    assert r.route(1, 0, BUY, 10, 100, strategy=STRAT_PASSIVE) == 0
    assert r.route(1, 0, BUY, 10, 100) == RR.DUPLICATE_ORDER_ID
    assert r.n_active == 1


def test_book_updates_must_be_best_first(R):
    r = R(1)
    assert r.update_book(0, 0, bids=[(99, 1), (99, 1)]) == RR.INVALID_PRICE
    assert r.update_book(0, 0, asks=[(101, 1), (100, 1)]) == RR.INVALID_PRICE
    assert r.update_book(0, 0, asks=[(101, 0)]) == RR.INVALID_QTY
    assert r.update_book(0, 0, bids=[(-1, 5)]) == RR.INVALID_PRICE
    assert r.depth(0, 0) == ([], [])
    bids, asks = OrderBook().depth(5)                   # numpy DEPTH_DTYPE is accepted
    assert r.update_book(0, 0, bids, asks) == 0


def test_fill_outside_the_child_limit_is_booked_and_counted(R):
    """A fill worse than the child's limit is a venue fault, but it happened: the parent
    books it (as the engine's order and risk do) and the venue's count shows it."""
    r = R(2)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(100, 10)])
    r.update_book(0, 1, bids=[(99, 10)], asks=[(100, 10)])
    r.route(1, 0, BUY, 20, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    a, b = (int(x["child_id"]) for x in r.drain_actions())
    assert r.on_fill(a, 5, 200, now=1) == 0                 # at the limit
    assert r.on_fill(a, 5, 199, now=1) == 0                 # better: price improvement
    assert r.venue_state(0)["fills_outside_limit"] == 0
    assert r.on_fill(b, 10, 201, now=2) == 0                # half a tick through the limit
    assert r.venue_state(1)["fills_outside_limit"] == 1
    assert r.parent(1)["cum_qty"] == 20 and r.parent(1)["notional_x2"] == 5 * 200 + 5 * 199 + 2010
    r.route(2, 0, SELL, 10, 99, now=3, strategy=STRAT_SWEEP, tif=T.IOC)
    (c,) = r.drain_actions()
    assert r.on_fill(int(c["child_id"]), 10, 197, now=4) == 0
    assert r.venue_state(int(c["venue"]))["fills_outside_limit"] == 1 + (int(c["venue"]) == 1)
    # A reprice in flight: the venue may fill at either price.
    r.update_book(0, 0, bids=[(99, 10)], asks=[(102, 10)])
    r.update_book(0, 1, bids=[(99, 10)], asks=[(102, 10)])
    r.route(3, 0, BUY, 10, 101, now=10, strategy=STRAT_PASSIVE, tif=T.DAY)
    (post,) = r.drain_actions()
    assert int(post["price"]) == 99
    r.on_ack(int(post["child_id"]), 11)
    v = int(post["venue"])
    r.update_book(0, v, bids=[(100, 10)], asks=[(102, 10)])
    r.tick(10_000_000)
    (rep,) = r.drain_actions()
    assert rep["kind"] == ACT_REPLACE and int(rep["price"]) == 100
    before = r.venue_state(v)["fills_outside_limit"]
    assert r.on_fill(int(post["child_id"]), 1, 200, now=10_000_001) == 0
    assert r.venue_state(v)["fills_outside_limit"] == before
    assert r.on_fill(int(post["child_id"]), 1, 201, now=10_000_002) == 0
    assert r.venue_state(v)["fills_outside_limit"] == before + 1


# ---------------------------------------------------------------- dark first
def test_dark_first_pings_the_midpoint_then_sweeps_the_rest(R):
    r = R(3)
    venues = Venues(r, lit=[0, 1], dark=[2])
    r.set_venue(2, taker_fee=500)
    venues.rest(0, BUY, 100, 50)
    venues.rest(0, SELL, 101, 40)
    venues.rest(1, SELL, 101, 40)
    venues.publish()
    venues.pool[2] = 30
    assert r.route(1, 0, BUY, 100, 102, now=0, strategy=STRAT_DARK_FIRST, dark_min_qty=10) == 0
    first = r.drain_actions()
    assert len(first) == 1
    a = first[0]
    assert (int(a["venue"]), int(a["qty"]), int(a["min_qty"]), int(a["price"])) == (2, 100, 10, 102)
    assert a["flags"] == CF_MID_PEG and a["tif"] == T.IOC and a["role"] == ROLE_DARK
    venues._execute(a, 1)                       # 30 lots at the midpoint 100.5, the rest canceled
    lit = r.drain_actions()
    assert news(lit) == [(0, BUY, 101, 40, T.IOC, 0), (1, BUY, 101, 30, T.IOC, 0)]
    for a in lit:
        venues._execute(a, 2)
    st = r.parent(1)
    assert st["status"] == OrdStatus.FILLED
    # 30 @ 100.5 + 70 @ 101 = 10085 ticks x lots
    assert st["avg_px"] == (2017, 20) and st["notional_x2"] == 20170
    rec = r.bestex(1)
    assert rec["venue_filled"][:3] == [40, 30, 30] and rec["venues_used"] == 0b111
    assert rec["pi_x2"] == 2 * 101 * 100 - 20170       # 15 ticks x lots better than the NBO


def test_dark_first_skips_a_ping_below_the_minimum_or_outside_the_limit(R):
    r = R(2)
    r.set_venue(1, dark=True)
    r.update_book(0, 0, bids=[(100, 5)], asks=[(102, 50)])
    assert r.route(1, 0, BUY, 5, 102, strategy=STRAT_DARK_FIRST, dark_min_qty=10) == 0
    assert [int(a["venue"]) for a in r.drain_actions()] == [0]      # 5 < 10: straight to lit
    assert r.route(2, 0, BUY, 20, 100, strategy=STRAT_DARK_FIRST, tif=T.IOC) == 0
    assert r.drain_actions().size == 0                              # mid 101 above the limit 100


# ---------------------------------------------------------------- passive post
def passive_setup(R, **config):
    r = R(3, config=config)
    venues = Venues(r, lit=[0, 1, 2])
    r.set_venue(0, maker_fee=-2000)          # 0.2 tick rebate
    r.set_venue(1, maker_fee=-3000)          # 0.3 tick rebate
    r.set_venue(2, maker_fee=0)
    for v, queue in ((0, 100), (1, 2000)):
        venues.rest(v, BUY, 99, queue)
    for v in range(3):
        venues.rest(v, SELL, 101, 10)
    venues.publish()
    return r, venues


def test_passive_post_weighs_rebate_against_queue_ahead(R):
    r, venues = passive_setup(R)
    # score = fill estimate * (1 tick - maker fee): venue 0 (100 ahead, 0.2
    # rebate) 454545 * 1.2e6 beats venue 2 (empty, no rebate) 500000 * 1.0e6
    # and venue 1 (2000 ahead, 0.3 rebate) 166666 * 1.3e6.
    assert r.route(1, 0, BUY, 50, 99, now=0) == 0                  # AUTO, not marketable
    assert news(r.drain_actions()) == [(0, BUY, 99, 50, T.DAY, CF_POST_ONLY)]
    r2, venues2 = passive_setup(R)
    venues2.books[1].cancel(2)                                      # venue 1's queue empties
    venues2.publish()
    assert r2.route(1, 0, BUY, 50, 99, now=0, strategy=STRAT_PASSIVE, tif=T.GTC) == 0
    assert news(r2.drain_actions()) == [(1, BUY, 99, 50, T.GTC, CF_POST_ONLY)]


@pytest.mark.parametrize("queue, latency0, venue", [(250, 1, 0), (250, 9, 1), (251, 1, 1)])
def test_passive_score_is_exact_at_a_tie(R, queue, latency0, venue):
    # Venue 0: 0.25 tick rebate, edge 1.25e6; venue 1: no rebate, edge 1e6, empty queue,
    # fill estimate 500000. With 250 lots ahead venue 0's estimate is exactly
    # 500000 * 1000 / 1250 = 400000 and both score 5e11: latency decides. One
    # more lot ahead and venue 0 loses.
    r = R(2)
    r.set_venue(0, maker_fee=-2500, latency_ns=latency0)
    r.set_venue(1, latency_ns=5)
    r.update_book(0, 0, bids=[(99, queue)], asks=[(101, 5)])
    r.update_book(0, 1, asks=[(101, 5)])
    r.route(1, 0, BUY, 10, 99, now=0, strategy=STRAT_PASSIVE)
    assert news(r.drain_actions()) == [(venue, BUY, 99, 10, T.DAY, CF_POST_ONLY)]


def test_passive_post_learns_the_venue_fill_rate(R):
    r, venues = passive_setup(R, fill_rate_prior_lots=10)
    r.route(1, 0, BUY, 50, 99, now=0)
    venues.run(now=0)
    assert r.cancel_parent(1, now=1).tolist() == [1]
    venues.run(now=1)                                   # canceled unfilled: venue 0's rate drops
    assert r.venue_state(0)["fill_rate_ppm"] == 500_000 * 10 // 60
    r.route(2, 0, BUY, 50, 99, now=2)
    assert [v for v, *_ in news(r.drain_actions())] == [2]


def test_passive_reprices_when_the_nbbo_moves_away(R):
    r, venues = passive_setup(R, reprice_interval_ns=1000)
    r.route(1, 0, BUY, 50, 100, now=0, strategy=STRAT_PASSIVE)
    venues.run(now=0)
    child = r.live_children(1)[0]
    assert child["price"] == 99 and child["venue"] == 0 and child["acked"]
    venues.rest(2, BUY, 100, 5)                         # someone bids 100 elsewhere
    venues.publish()
    assert r.tick(500) == 0                             # too soon after the last (re)price
    assert r.tick(1000) == 1
    (a,) = r.drain_actions()
    assert (a["kind"], int(a["child_id"]), int(a["price"]), int(a["qty"])) == \
        (ACT_REPLACE, child["child_id"], 100, 50)
    assert r.live_children(1)[0]["pending_price"] == 100
    venues._execute(a, 1000)
    assert r.live_children(1)[0]["price"] == 100
    venues.rest(2, BUY, 101, 5, account=3)              # crosses the 101 offers: NBBO moves on
    venues.publish()
    r.tick(5000)
    assert r.drain_actions().size == 0                  # already at the limit: nothing to do


def test_a_report_that_triggers_a_reprice_still_returns_zero(R):
    r = R(2, config={"reprice_interval_ns": 0})
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    r.route(1, 0, BUY, 10, 100, now=0, strategy=STRAT_PASSIVE)
    (a,) = r.drain_actions()
    assert int(a["price"]) == 99
    r.update_book(0, 1, bids=[(100, 5)], asks=[(101, 10)])    # the bid moves away from us
    assert r.on_fill(int(a["child_id"]), 4, 198, now=1) == 0  # and the fill acks the child
    (b,) = r.drain_actions()
    assert (b["kind"], int(b["price"]), int(b["qty"])) == (ACT_REPLACE, 100, 10)


def test_passive_fills_from_flow_then_completes(R):
    r, venues = passive_setup(R)
    r.route(1, 0, BUY, 50, 99, now=0)
    venues.run(now=0)
    venues.take(0, SELL, 130, 99, now=5)                # 100 ahead of us, then 30 of ours
    st = r.parent(1)
    assert st["cum_qty"] == 30 and st["working_qty"] == 20 and st["avg_px"] == (99, 1)
    venues.take(0, SELL, 20, 99, now=6)
    assert r.parent(1)["status"] == OrdStatus.FILLED
    assert r.venue_state(0)["passive_filled"] == 50
    rec = r.drain_finished()[0]
    assert rec["cum_qty"] == 50 and rec["done_ts"] == 6 and rec["venue_fill_rate"][0] == 1.0


def test_day_child_expiry_expires_the_parent(R):
    r, venues = passive_setup(R)
    r.route(1, 0, BUY, 50, 99, now=0)
    venues.run(now=0)
    venues.books[0].expire_day(100)
    venues._report(0, 100)
    rec = r.drain_finished()
    assert rec[0]["status"] == OrdStatus.EXPIRED and rec[0]["leaves_qty"] == 50


# ---------------------------------------------------------------- residuals
def test_rejected_child_is_rerouted_and_the_venue_marked_stale(R):
    r = R(2)
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10), (101, 10)])
    r.set_venue(0, taker_fee=0)
    r.set_venue(1, taker_fee=10)
    r.route(1, 0, BUY, 15, 101, now=0, tif=T.IOC)
    a = r.drain_actions()
    assert news(a) == [(0, BUY, 100, 10, T.IOC, 0), (1, BUY, 100, 5, T.IOC, 0)]
    assert r.on_reject(int(a[0]["child_id"]), RR.VENUE_REJECT, 1) == 0
    # Venue 0's book is stale now; venue 1's first 5 lots are claimed by the live child.
    assert news(r.drain_actions()) == [(1, BUY, 101, 10, T.IOC, CF_ISO)]
    assert r.book_state(0, 0)["stale"] and r.book_state(0, 1)["reserved_asks"] == 15
    r.update_book(0, 0, asks=[(100, 10)])
    assert not r.book_state(0, 0)["stale"]


def test_partial_ioc_fill_reroutes_the_residual_elsewhere(R):
    r = R(2)
    venues = Venues(r, lit=[0, 1])
    venues.rest(0, SELL, 100, 30)
    venues.rest(1, SELL, 101, 30)
    venues.publish()
    venues.books[0].cancel(1)                           # 30 lots vanish before we arrive...
    venues.rest(0, SELL, 100, 10)                       # ...10 are still there
    r.route(1, 0, BUY, 30, 101, now=0, tif=T.IOC)       # the router still sees 30 at venue 0
    venues.run(now=1)
    assert [(int(a["venue"]), int(a["price"]), int(a["qty"])) for a in venues.sent] == \
        [(0, 100, 30), (1, 101, 20)]
    assert sorted(venues.fills) == [(1, 0, 10, 200), (2, 1, 20, 202)]
    assert r.parent(1)["status"] == OrdStatus.FILLED


def test_reroutes_stop_after_max_reroutes_without_a_fill(R):
    r = R(2, config={"max_reroutes": 2})
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10)])
    r.route(1, 0, BUY, 20, 0, now=0, tif=T.IOC)
    a = r.drain_actions()
    assert [int(x["venue"]) for x in a] == [0, 1]
    r.on_ack(int(a[1]["child_id"]), 1)                      # venue 1's child stays working
    child = int(a[0]["child_id"])
    for round_ in range(2):
        r.on_canceled(child, 2)                             # nothing there: venue 0 is stale...
        assert r.drain_actions().size == 0
        r.update_book(0, 0, asks=[(100, 10)])               # ...until fresh data
        r.tick(3)
        (b,) = r.drain_actions()
        assert int(b["venue"]) == 0 and int(b["qty"]) == 10
        child = int(b["child_id"])
    r.on_canceled(child, 4)
    r.update_book(0, 0, asks=[(100, 10)])
    r.tick(5)
    assert r.drain_actions().size == 0                      # three rounds without a fill: stop
    r.on_canceled(int(a[1]["child_id"]), 6)
    rec = r.drain_finished()
    assert rec[0]["reason"] == RR.REROUTE_LIMIT and rec[0]["n_children"] == 4


# ---------------------------------------------------------------- venue health
def test_a_clock_step_moves_the_deadlines_with_it(R):
    """The caller's clock set 10 s forward while a child is on its way: shifted, the child
    is still within its acknowledgement time and its venue stays up; a venue that timed
    out before a step back stays avoided for the rest of its back-off, not for the step."""
    r = R(2, config={"ack_timeout_ns": 100, "recovery_ns": 1000, "recovery_max_ns": 3000})
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10)])
    r.route(1, 0, BUY, 10, 0, now=0)
    (a,) = r.drain_actions()
    step = 10_000_000_000
    r.shift_clock(step)
    assert r.tick(step + 50) == 0                           # 50 ns after sending, not 10 s
    assert r.venue_state(int(a["venue"]), step + 50)["health"] == VenueHealth.HEALTH_UP
    assert r.tick(step + 100) == 1                          # and times out when it should
    assert r.venue_state(int(a["venue"]), step + 100)["retry_at"] == step + 1100
    r.shift_clock(-step)                                    # set back: the back-off too
    assert not r.venue_state(int(a["venue"]), 1099)["routable"]
    assert r.venue_state(int(a["venue"]), 1100)["routable"]


def test_unresponsive_venue_is_avoided_and_recovers(R):
    r = R(2, config={"ack_timeout_ns": 100, "recovery_ns": 1000, "recovery_max_ns": 3000})
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10), (101, 50)])
    r.route(1, 0, BUY, 20, 0, now=0)
    a = r.drain_actions()
    c0, c1 = int(a[0]["child_id"]), int(a[1]["child_id"])
    assert [int(x["venue"]) for x in a] == [0, 1]
    r.on_ack(c1, 10)
    r.on_fill(c1, 10, 200, 10)
    assert r.tick(99) == 0
    assert r.tick(100) == 1                                 # venue 0 never answered
    (cxl,) = r.drain_actions()
    assert cxl["kind"] == ACT_CANCEL and int(cxl["child_id"]) == c0
    st = r.venue_state(0, 100)
    assert st["health"] == VenueHealth.HEALTH_DOWN and not st["routable"]
    assert st["retry_at"] == 1100 and st["timeouts"] == 1
    assert r.parent(1)["working_qty"] == 10                 # unconfirmed lots stay reserved
    r.update_book(0, 0, asks=[(99, 30)])                    # a better price at the silent venue
    r.route(2, 0, BUY, 10, 0, now=200)
    (other,) = r.drain_actions()
    assert int(other["venue"]) == 1                         # self-help: avoided
    r.on_fill(int(other["child_id"]), 10, 202, 210)
    assert r.venue_state(0, 1100)["routable"]               # retry: the next child is a probe
    r.route(3, 0, BUY, 5, 0, now=1100)
    (probe,) = r.drain_actions()
    assert int(probe["venue"]) == 0
    r.tick(1200)                                            # the probe times out too
    (cxl2,) = r.drain_actions()
    assert cxl2["kind"] == ACT_CANCEL and cxl2["child_id"] == probe["child_id"]
    assert r.venue_state(0, 1200)["retry_at"] == 3200       # backoff doubled
    r.tick(3200 + 100)
    assert r.venue_state(0)["consecutive_timeouts"] == 2    # one outage, one step
    assert r.drain_actions().size == 0
    r.on_canceled(c0, 3300)                                 # the venue answers at last
    assert r.venue_state(0, 0)["health"] == VenueHealth.HEALTH_UP
    # Parent 1's 10 lots come back and go out again: venue 0 shows 30 at 99,
    # 5 of them still claimed by the unanswered probe.
    assert news(r.drain_actions()) == [(0, BUY, 99, 10, T.IOC, 0)]
    assert r.book_state(0, 0)["reserved_asks"] == 15


def test_venue_unavailable_and_closed_rejects(R):
    r = R(2)
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10)])
    r.route(1, 0, BUY, 10, 0, now=0, tif=T.IOC)
    (a,) = r.drain_actions()
    assert int(a["venue"]) == 0
    r.on_reject(int(a["child_id"]), RR.VENUE_UNAVAILABLE, 5)
    (b,) = r.drain_actions()
    assert int(b["venue"]) == 1 and not r.venue_state(0, 5)["routable"]
    r.on_reject(int(b["child_id"]), RR.VENUE_CLOSED, 6)
    assert not r.venue_state(1, 10**12)["open"]
    rec = r.drain_finished()[0]
    assert rec["status"] == OrdStatus.CANCELED and rec["reason"] == RR.NO_ROUTE


def test_a_day_order_refused_at_the_close_expires_a_gtc_one_waits(R):
    # A resting limit's child reaches its venue just after the close: with
    # every lit venue closed, a DAY order's day is over; a GTC waits for the open.
    for tif, ends in ((T.DAY, True), (T.GTC, False)):
        r = R(1)
        r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
        assert r.route(1, 0, BUY, 10, 100, now=0, tif=tif) == 0
        (post,) = r.drain_actions()
        r.on_reject(int(post["child_id"]), RR.VENUE_CLOSED, 5)
        r.tick(10)
        finished = r.drain_finished()
        if ends:
            assert [(f["status"], f["reason"]) for f in finished] == \
                [(OrdStatus.EXPIRED, RR.VENUE_CLOSED)]
        else:
            assert finished.size == 0 and r.n_active == 1
            r.set_open(0, True)
            r.tick(20)
            assert [int(a["kind"]) for a in r.drain_actions()] == [ACT_NEW]  # posted again


# ---------------------------------------------------------------- scheduled strategies
def deep_book(R, n_venues=1, **config):
    r = R(n_venues, config=config)
    for v in range(n_venues):
        r.update_book(0, v, bids=[(99, 10_000)], asks=[(100, 10_000)])
    return r


def fill_all(r, actions, now, px_x2=200):
    for a in actions:
        if a["kind"] == ACT_NEW:
            assert r.on_fill(int(a["child_id"]), int(a["qty"]), px_x2, now) == 0


def test_twap_sends_equal_slices_at_slice_starts(R):
    r = deep_book(R)
    assert r.route(1, 0, BUY, 1000, 101, now=0, strategy=STRAT_TWAP, end_ns=4000, slices=4) == 0
    sent = []
    for now in (0, 999, 1000, 1500, 2000, 3000, 3999):
        if now:
            r.tick(now)
        a = r.drain_actions()
        sent += [(now, int(x["qty"])) for x in a]
        fill_all(r, a, now)
        if now in (0, 1000, 2000):
            assert r.next_wakeup(now) == now + 1000
    assert sent == [(0, 250), (1000, 250), (2000, 250), (3000, 250)]
    assert r.parent(1)["status"] == OrdStatus.FILLED


def test_twap_catches_up_a_missed_slice_and_expires_at_the_end(R):
    r = deep_book(R)
    r.route(1, 0, BUY, 1000, 101, now=0, strategy=STRAT_TWAP, end_ns=4000, slices=4)
    (a,) = r.drain_actions()
    r.on_canceled(int(a["child_id"]), 10)                   # slice 1 came back empty
    assert r.drain_actions().size == 0                      # the venue is stale: wait
    r.update_book(0, 0, asks=[(100, 400)])
    r.tick(1000)
    (b,) = r.drain_actions()
    assert int(b["qty"]) == 400                             # 500 due, 400 visible
    fill_all(r, [b], 1000)
    r.update_book(0, 0, asks=[(102, 5000)])                 # above the limit from now on
    for now in (2000, 3000, 4000):
        r.tick(now)
        assert r.drain_actions().size == 0
    rec = r.drain_finished()[0]
    assert rec["status"] == OrdStatus.EXPIRED and rec["cum_qty"] == 400 and rec["done_ts"] == 4000


def test_a_schedule_sends_nothing_after_its_end(R):
    # The last slice's child comes back unfilled after the window ended: the
    # rest expires; it is not swept again past end_time (at the other venue).
    r = deep_book(R, 2)
    r.route(1, 0, BUY, 1000, 101, now=0, strategy=STRAT_TWAP, end_ns=4000, slices=4)
    for now in (0, 1000, 2000):
        if now:
            r.tick(now)
        fill_all(r, r.drain_actions(), now)
    r.tick(3000)
    (last,) = r.drain_actions()
    assert r.on_canceled(int(last["child_id"]), 4100) == 0
    assert r.drain_actions().size == 0
    rec = r.drain_finished()[0]
    assert rec["status"] == OrdStatus.EXPIRED and rec["cum_qty"] == 750 and rec["done_ts"] == 4100


def test_vwap_follows_the_volume_profile(R):
    r = deep_book(R)
    assert r.route(1, 0, SELL, 1000, 0, now=100, strategy=STRAT_VWAP, start_ns=1000,
                   end_ns=5000, profile=[1, 2, 3, 4]) == 0
    assert r.drain_actions().size == 0 and r.next_wakeup(100) == 1000
    sent = []
    for now in (1000, 2000, 2500, 3000, 4000):
        r.tick(now)
        a = r.drain_actions()
        sent += [(now, int(x["qty"])) for x in a]
        fill_all(r, a, now, px_x2=198)
    assert sent == [(1000, 100), (2000, 200), (3000, 300), (4000, 400)]
    assert [int(x) for x in (r.parent(1)["cum_qty"],)] == [1000]


def test_pov_tracks_the_volume_it_is_told_about(R):
    r = deep_book(R, slice_min_qty=10)
    assert r.route(1, 0, BUY, 500, 101, now=0, strategy=STRAT_POV, pov_ppm=100_000) == 0
    assert r.drain_actions().size == 0
    sent = []
    for now, volume in ((1, 1000), (2, 550), (3, 50), (4, 60), (5, 100_000)):
        r.on_market_volume(0, volume)
        r.tick(now)
        a = r.drain_actions()
        sent += [(now, int(x["qty"])) for x in a]
        fill_all(r, a, now)
    # targets: 100, 155, 160 (5 due < slice_min 10: wait), 166, then capped at the order's 500
    assert sent == [(1, 100), (2, 55), (4, 11), (5, 334)]
    assert r.parent(1)["status"] == OrdStatus.FILLED


def test_vwap_targets_are_exact_shares_of_the_profile(R):
    # A flat profile is a TWAP: 1, 2, 3 of 3 lots (parts per million rounded
    # each share down, 333,333 ppm of 3 lots being 0: the buckets lagged a lot).
    r = deep_book(R)
    assert r.route(1, 0, BUY, 3, 101, now=0, strategy=STRAT_VWAP, end_ns=3000,
                   profile=[1, 1, 1]) == 0
    sent = []
    for now in (0, 1000, 2000):
        if now:
            r.tick(now)
        a = r.drain_actions()
        sent += [(now, int(x["qty"])) for x in a]
        fill_all(r, a, now)
    assert sent == [(0, 1), (1000, 1), (2000, 1)]


def test_pov_takes_part_in_the_volume_from_its_start_only(R):
    r = deep_book(R, slice_min_qty=1)
    assert r.route(1, 0, BUY, 500, 101, now=0, strategy=STRAT_POV, pov_ppm=100_000,
                   start_ns=10) == 0
    assert r.next_wakeup(0) == 10                           # woken at its start
    sent = []
    for now, volume in ((5, 1000), (10, 200), (11, 300), (12, 50)):
        r.on_market_volume(0, volume)                       # printed before ``now``
        r.tick(now)
        a = r.drain_actions()
        sent += [(now, int(x["qty"])) for x in a]
        fill_all(r, a, now)
    # 1,200 lots printed until its start count for nothing; then 10% of 300 and of 350
    assert sent == [(11, 30), (12, 5)]


# ---------------------------------------------------------------- cancel and best-ex
def test_cancel_parent_cancels_working_children(R):
    r = deep_book(R, 2)
    r.route(1, 0, BUY, 20_000, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    a = r.drain_actions()
    ids = sorted(int(x["child_id"]) for x in a)
    assert r.cancel_parent(1, 5).tolist() == ids
    cxl = r.drain_actions()
    assert list(cxl["kind"]) == [ACT_CANCEL] * 2 and sorted(cxl["child_id"].tolist()) == ids
    assert r.cancel_parent(1, 6).tolist() == []             # already asked
    r.on_fill(ids[0], 10_000, 200, 7)
    assert not r.parent(1)["done"]
    r.on_canceled(ids[1], 8)
    rec = r.drain_finished()
    assert rec[0]["status"] == OrdStatus.CANCELED and rec[0]["cum_qty"] == 10_000
    assert r.cancel_parent(1, 9) is None


def test_parent_filled_in_full_after_cancel_parent_ends_filled(R):
    """The cancel came too late: the in-flight child filled in full, so did the parent."""
    r = R(2)
    r.update_book(0, 0, asks=[(100, 10)])
    r.update_book(0, 1, asks=[(100, 10)])
    r.route(1, 0, BUY, 20, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    ids = [int(x["child_id"]) for x in r.drain_actions()]
    r.cancel_parent(1, 1)
    assert r.on_fill(ids[0], 10, 200, 2) == 0
    assert not r.parent(1)["done"]                          # one child still out
    assert r.on_fill(ids[1], 10, 200, 3) == 0
    (rec,) = r.drain_finished()
    assert rec["status"] == OrdStatus.FILLED and rec["cum_qty"] == 20 and rec["leaves_qty"] == 0
    assert rec["reason"] == 0 and rec["done_ts"] == 3


def test_bestex_record_fields(R):
    r, venues = three_venues(R)
    r.route(1, 0, BUY, 120, 103, now=5, tif=T.IOC)
    venues.run(now=6)
    rec = r.drain_finished()
    assert rec.dtype == BESTEX_DTYPE and len(rec) == 1
    x = rec[0]
    assert (x["arr_bid_px"], x["arr_bid_qty"], x["arr_ask_px"], x["arr_ask_qty"]) == \
        (98, 30, 100, 50)
    assert (x["avg_px_num"], x["avg_px_den"]) == (1207, 12) and x["fees"] == 260_000
    assert x["pi_x2"] == -140 and math.isclose(x["pi_bps"], -140 / 24000 * 1e4)
    assert math.isclose(x["vs_mid_bps"], (198 * 120 - 24140) / (198 * 120) * 1e4)
    assert x["venues_used"] == 0b111 and x["n_children"] == 3
    assert x["venue_sent"][:3].tolist() == [60, 20, 40]
    assert x["venue_filled"][:3].tolist() == [60, 20, 40]
    assert x["venue_fees"][:3].tolist() == [180_000, 40_000, 40_000]
    assert x["venue_fill_rate"][:3].tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(x["venue_fill_rate"][3])
    assert (x["arrival_ts"], x["done_ts"], x["status"]) == (5, 6, OrdStatus.FILLED)
    with pytest.raises(KeyError):
        r.parent(1)


def test_route_batch_matches_single_routes(R):
    orders = np.zeros(3, dtype=PARENT_DTYPE)
    orders["parent_id"] = [1, 2, 0]
    orders["qty"] = [5, 8, 1]
    orders["side"] = [BUY, SELL, BUY]
    orders["tif"] = T.IOC
    r = deep_book(R, 2)
    assert r.route_batch(orders, 3).tolist() == [0, 0, RR.INVALID_ORDER_ID]
    single = deep_book(R, 2)
    single.route(1, 0, BUY, 5, 0, 3, 0, T.IOC)
    single.route(2, 0, SELL, 8, 0, 3, 0, T.IOC)
    assert r.drain_actions().tolist() == single.drain_actions().tolist()


def test_config_is_validated():
    with pytest.raises(ValueError):
        Router(2, config={"no_such_key": 1})
    with pytest.raises(ValueError):
        Router(2, config={"strategy": "best"})
    with pytest.raises(ValueError):
        Router(17)
    with pytest.raises(IndexError):
        Router(2).set_venue(2, taker_fee=1)
    # Audit (stop 33): a cap below the first delay won from the first retry, silently.
    with pytest.raises(ValueError, match="'recovery_max_ns' \\(1000\\) must be at least "
                                         "'recovery_ns' \\(5000\\)"):
        Router(2, config={"recovery_ns": 5000, "recovery_max_ns": 1000})
    assert Router(2, config={"strategy": "passive"}).config["strategy"] == "passive"


def test_docs_example_runs():
    """The example at the top of docs/router.md runs and prints what its comments say."""
    text = (pathlib.Path(__file__).parents[3] / "docs" / "router.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/router.md", "exec"), {})
    lines = out.getvalue().split("\n")
    assert lines[:4] == ["1 100 20", "0 101 60", "2 101 40", "1207 / 12"]
    fees, pi_bps = lines[4].split()
    assert fees == "260000" and round(float(pi_bps), 2) == -58.33


@settings(max_examples=60, deadline=None)
@given(orders=st.lists(st.tuples(st.sampled_from([BUY, SELL]), st.integers(90, 110), st.integers(1, 50)),
                       max_size=40),
       max_levels=st.integers(1, 12))
def test_update_book_from_equals_update_book_of_depth(orders, max_levels):
    """The engine's C path from a venue's book gives the router what depth() gives it."""
    book = OrderBook("TEST")
    for k, (side, price, qty) in enumerate(orders):
        book.add(k + 1, side, price, qty)
    via_arrays, direct = Router(2, max_levels=max_levels), Router(2, max_levels=max_levels)
    for router in (via_arrays, direct):  # something to replace, and a mark to clear
        router.update_book(0, 1, bids=[(5, 1)], asks=[(500, 1)])
    assert via_arrays.update_book(0, 1, *book.depth(max_levels)) == 0
    assert direct.update_book_from(0, 1, book) == 0
    assert direct.depth(0, 1) == via_arrays.depth(0, 1)
    assert direct.book_state(0, 1) == via_arrays.book_state(0, 1)
    bids, asks = book.depth(max_levels)
    assert direct.depth(0, 1) == ([(int(p), int(q)) for p, q, _ in bids], [(int(p), int(q)) for p, q, _ in asks])
    with pytest.raises(IndexError):
        direct.update_book_from(0, 2, book)


def test_a_fill_past_int64_money_is_booked_and_its_sums_saturate(R):
    # The venue filled it, so the lots count whatever the money sums do: a
    # refused fill left the router routing the parent's lots a second time.
    r = R(1)
    top = 1 << 40
    r.update_book(0, 0, asks=[(top, top)])
    r.route(1, 0, BUY, top, top, now=0)
    cid = int(r.drain_actions()[0]["child_id"])
    half = 1 << 22                      # 2^22 lots x 2^41 half-ticks = 2^63: one past int64
    assert r.on_fill(cid, half, 2 * top, 1) == 0
    st = r.parent(1)
    assert st["cum_qty"] == half and st["working_qty"] == top - half
    assert st["notional_x2"] == (1 << 63) - 1 and st["sums_saturated"] and st["avg_px"] is None
    assert r.on_fill(cid, top - half, 2 * top, 2) == 0
    st = r.parent(1)
    assert st["cum_qty"] == top and st["leaves_qty"] == 0 and st["done"]
    assert not [a for a in r.drain_actions() if a["kind"] == ACT_NEW]   # nothing routed again
    rec = r.bestex(1)
    assert (rec["avg_px_num"], rec["avg_px_den"]) == (0, 0) and math.isnan(rec["pi_bps"])


def test_fees_past_int64_saturate_and_the_fill_still_counts(R):
    r = R(1)
    r.update_book(0, 0, asks=[(100, 10)])
    r.route(1, 0, BUY, 10, 0, now=0)
    cid = int(r.drain_actions()[0]["child_id"])
    assert r.on_fill(cid, 4, 200, 1, fee=(1 << 63) - 1) == 0
    assert r.on_fill(cid, 6, 200, 2, fee=5) == 0
    st = r.parent(1)
    assert st["cum_qty"] == 10 and st["fees"] == (1 << 63) - 1 and st["sums_saturated"]
    assert st["notional_x2"] == 2000


def test_a_venue_that_always_answers_late_is_retried_ever_less_often(R):
    # Each child is acked 150 ns after it went out, past the 100 ns timeout:
    # the venue is alive but slow, so each answer must not reset its backoff.
    r = R(2, config={"ack_timeout_ns": 100, "recovery_ns": 1000, "recovery_max_ns": 4000})
    r.update_book(0, 0, asks=[(99, 1000)])      # the better price, at the slow venue
    r.update_book(0, 1, asks=[(100, 1000)])
    now, retries = 0, []
    for parent in range(1, 5):
        while not r.venue_state(0, now)["routable"]:
            now += 50
        r.route(parent, 0, BUY, 5, 0, now=now)
        (probe,) = r.drain_actions()
        assert int(probe["venue"]) == 0
        r.tick(now + 100)                        # no ack in time
        assert r.drain_actions()["kind"].tolist() == [ACT_CANCEL]
        r.on_ack(int(probe["child_id"]), now + 150)                  # late
        st = r.venue_state(0, now + 150)
        assert st["health"] == VenueHealth.HEALTH_DOWN and not st["routable"]
        retries.append(st["retry_at"] - (now + 100))
        assert r.on_fill(int(probe["child_id"]), 5, 198, now + 160) == 0   # and it trades
        assert r.parent(parent)["done"] and r.drain_actions().size == 0
    assert retries == [1000, 2000, 4000, 4000]


def test_an_answer_in_time_ends_the_backoff(R):
    r = R(1, config={"ack_timeout_ns": 100, "recovery_ns": 1000, "recovery_max_ns": 8000})
    r.update_book(0, 0, asks=[(100, 1000)])
    r.route(1, 0, BUY, 5, 0, now=0)
    (late,) = r.drain_actions()
    r.tick(100)
    r.drain_actions()
    r.route(2, 0, BUY, 5, 0, now=1100)                   # the retry's probe
    (probe,) = r.drain_actions()
    r.on_ack(int(probe["child_id"]), 1150)                # answered in time
    st = r.venue_state(0, 1150)
    assert st["health"] == VenueHealth.HEALTH_UP and st["consecutive_timeouts"] == 0


def test_a_passive_sell_under_a_bid_at_the_top_of_the_range_waits(R):
    # Posting one tick above a bid at 2^40 ticks would pass the router's own
    # price bound (a fill there could not be booked): nothing is posted.
    top = 1 << 40
    r = R(1, config={"reprice_interval_ns": 0})
    r.update_book(0, 0, bids=[(top, 10)])
    assert r.route(1, 0, SELL, 10, top, now=0, strategy=STRAT_PASSIVE) == 0
    assert r.drain_actions().size == 0
    assert r.parent(1)["working_qty"] == 0 and not r.parent(1)["done"]
    r.update_book(0, 0, bids=[(top - 5, 10)])          # the bid comes down: it posts
    r.tick(1)
    (a,) = r.drain_actions()
    assert (a["kind"], int(a["price"]), int(a["qty"])) == (ACT_NEW, top, 10)


def test_a_refused_passive_child_waits_for_its_venues_next_update(R):
    """A post-only child the market moved onto is refused; posted again at once at the same
    venue and price it was refused again, each time a round, and the order ended
    REROUTE_LIMIT (router.md: any reject but the two marks the book stale). The venue's
    book is now stale for posting too: the parent waits for its next update."""
    r = R(1, config={"max_reroutes": 2})
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    assert r.route(1, 0, BUY, 10, 100, now=0, strategy=STRAT_PASSIVE) == 0
    (a,) = r.drain_actions()
    assert r.on_reject(int(a["child_id"]), RR.POST_ONLY_WOULD_CROSS, 1) == 0
    assert r.book_state(0, 0)["stale"]
    for now in range(2, 6):
        r.tick(now)
    assert r.drain_actions().size == 0 and not r.parent(1)["done"]
    r.update_book(0, 0, bids=[(98, 10)], asks=[(99, 10)])   # the market moved down
    r.tick(7)
    (again,) = r.drain_actions()
    assert (int(again["kind"]), int(again["price"]), int(again["qty"])) == (ACT_NEW, 98, 10)


# ---------------------------------------------------------------- reduce in place
def _resting_passive(R):
    """A passive buy of 50 resting at 99 on venue 0 behind 100 lots, with 40 lots that
    joined the level after it."""
    r, venues = passive_setup(R, reprice_interval_ns=10**12)
    r.route(1, 0, BUY, 50, 100, now=0, strategy=STRAT_PASSIVE)
    venues.run(now=0)
    (child,) = r.live_children(1)
    assert (child["venue"], child["price"], child["acked"]) == (0, 99, True)
    venues.rest(0, BUY, 99, 40, account=5)
    return r, venues, child["child_id"]


def test_reduce_parent_amends_the_resting_child_and_keeps_its_place(R):
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0
    (a,) = r.drain_actions()
    assert (a["kind"], int(a["child_id"]), int(a["price"]), int(a["qty"])) == \
        (ACT_REPLACE, cid, 99, 30)
    st = r.parent(1)
    assert (st["qty"], st["working_qty"], st["amending"]) == (50, 50, 1)  # not yet confirmed
    venues._execute(a, 10)
    st = r.parent(1)
    assert (st["qty"], st["leaves_qty"], st["working_qty"], st["amending"]) == (30, 30, 30, 0)
    (child,) = r.live_children(1)
    assert (child["child_id"], child["qty"], child["pending_qty"]) == (cid, 30, 0)
    venues.take(0, SELL, 130, 99, now=20)   # the 100 ahead, then us: not the 40 behind
    st = r.parent(1)
    assert st["cum_qty"] == 30 and st["done"] and st["status"] == OrdStatus.FILLED
    assert r.drain_actions().size == 0


def test_a_fill_before_the_amend_lands_is_kept_and_the_amend_still_takes(R):
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0
    (a,) = r.drain_actions()
    venues.take(0, SELL, 125, 99, now=11)   # 25 of ours fill against the old size
    assert r.parent(1)["cum_qty"] == 25
    venues._execute(a, 12)                  # 30 is above the 25 filled: the venue takes it
    st = r.parent(1)
    assert (st["qty"], st["cum_qty"], st["working_qty"], st["amending"]) == (30, 25, 5, 0)


def test_an_amend_the_venue_refuses_leaves_the_parent_its_lots(R):
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0
    (a,) = r.drain_actions()
    venues.take(0, SELL, 135, 99, now=11)   # 35 fill: 30 is no longer above what filled
    venues._execute(a, 12)                  # REPLACE_QTY_NOT_ABOVE_FILLED
    st = r.parent(1)
    assert (st["qty"], st["cum_qty"], st["working_qty"], st["amending"]) == (50, 35, 15, 0)
    assert r.live_children(1)[0]["pending_qty"] == 0


def test_a_child_that_fills_up_before_its_amend_ends_the_amend(R):
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0
    r.drain_actions()
    venues.take(0, SELL, 150, 99, now=11)   # the child fills its old size in full
    st = r.parent(1)
    assert st["cum_qty"] == 50 and st["amending"] == 0 and st["done"]


def test_an_amend_confirmed_below_what_the_child_filled_takes_only_the_unfilled(R):
    """A venue should refuse an amend below what filled meanwhile (ours does); one that
    confirms it anyway took the parent's qty below its cum_qty (audit: qty 70, cum 80,
    leaves -10). Only the unfilled lots go: the child is done, the parent keeps what it
    bought."""
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0          # 50 -> 30
    r.drain_actions()
    venues.take(0, SELL, 140, 99, now=11)               # 40 of ours fill at the old size
    assert r.on_replaced(cid, 12) == 0                  # confirmed at 30 all the same
    st = r.parent(1)
    assert (st["qty"], st["cum_qty"], st["leaves_qty"], st["working_qty"], st["amending"]) == \
        (40, 40, 0, 0, 0)
    assert st["done"] and st["status"] == OrdStatus.FILLED
    assert r.live_children(1) == []


@pytest.mark.parametrize("ending", ["short_fill", "venue_cancel"])
def test_a_child_that_ends_before_its_amend_lands_gives_up_the_amended_lots(R, ending):
    """The venue ends the amended child before it confirms the amend (a fill of 10
    with leaves 0, or a cancel of its own): the 20 lots the amend was to take off
    are at no venue now, so they leave the parent then, and only the rest of the
    new size is routed again. Kept, the parent sent a child for them, which the
    engine (its resize not done) canceled as it went out."""
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 20, now=10) == 0          # 50 -> 30
    r.drain_actions()
    if ending == "short_fill":
        assert r.on_fill(cid, 10, 2 * 99, 11, None, 0) == 0
    else:
        assert r.on_canceled(cid, 11) == 0
    filled = 10 if ending == "short_fill" else 0
    st = r.parent(1)
    assert (st["qty"], st["cum_qty"], st["leaves_qty"], st["amending"]) == \
        (30, filled, 30 - filled, 0)
    (again,) = r.drain_actions()
    assert (int(again["kind"]), int(again["price"]), int(again["qty"])) == \
        (ACT_NEW, 99, 30 - filled)


def test_reduce_parent_refuses_what_it_cannot_do_in_place(R):
    r, venues, cid = _resting_passive(R)
    assert r.reduce_parent(1, 50, now=10) == RR.ORDER_NOT_REPLACEABLE    # nothing would be left
    assert r.reduce_parent(1, 0, now=10) == RR.ORDER_NOT_REPLACEABLE
    assert r.reduce_parent(2, 5, now=10) == RR.UNKNOWN_ORDER
    r.set_open(0, False)                    # its venue closed: it would refuse the amend
    assert r.reduce_parent(1, 10, now=10) == RR.ORDER_NOT_REPLACEABLE
    r.set_open(0, True)
    assert r.reduce_parent(1, 10, now=10) == 0
    assert r.reduce_parent(1, 5, now=10) == RR.ORDER_NOT_REPLACEABLE     # one amend at a time
    r.drain_actions()
    # A child not yet acknowledged, or a schedule: not in place.
    r.route(2, 0, BUY, 10, 100, now=20, strategy=STRAT_PASSIVE)
    assert r.drain_actions().size == 1
    assert r.reduce_parent(2, 5, now=21) == RR.ORDER_NOT_REPLACEABLE
    r.route(3, 0, BUY, 10, 100, now=20, strategy=STRAT_TWAP, start_ns=0, end_ns=10**9, slices=2)
    assert r.reduce_parent(3, 5, now=21) == RR.ORDER_NOT_REPLACEABLE
    assert r.parent(2)["qty"] == 10 and r.parent(3)["qty"] == 10


def test_a_float_quantity_price_or_fee_is_refused_never_truncated(R):
    """route(1, 0, BUY, 5.7, 100) routed 5 lots: the Python API's int64 parameters cut
    floats down in silence (as the book's did, audit)."""
    r = R(1)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    for call in (lambda: r.route(1, 0, BUY, 5.7, 100), lambda: r.route(1, 0, BUY, 5, 100.5)):
        with pytest.raises(TypeError):
            call()
    assert r.n_active == 0
    assert r.route(1, 0, BUY, np.int64(5), 100, strategy=STRAT_PASSIVE) == 0   # numpy ints pass
    (a,) = r.drain_actions()
    child = int(a["child_id"])
    for call in (lambda: r.on_fill(child, 2.5, 198), lambda: r.on_fill(child, 2, 198, fee=1.5),
                 lambda: r.reduce_parent(1, 1.5)):
        with pytest.raises(TypeError):
            call()
    assert r.parent(1)["cum_qty"] == 0 and r.parent(1)["qty"] == 5


def test_a_float_enum_or_index_is_refused_never_truncated(R):
    """route(1, 0, 1.7, ...) routed a BUY and route(..., tif=1.2) a GTC parent: the int
    parameters took floats through __int__ (review); on_reject(child, 97.5) was a
    VENUE_REJECT. A value beyond a C int raised an OverflowError naming nothing."""
    r = R(1)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    for field, kwargs in (("instrument", dict(instrument=0.2)), ("side", dict(side=1.7)),
                          ("strategy", dict(strategy=float(STRAT_PASSIVE))),
                          ("tif", dict(tif=1.2))):
        args = dict(instrument=0, side=BUY, strategy=STRAT_PASSIVE, tif=int(T.DAY)) | kwargs
        with pytest.raises(TypeError, match=f"^{field} must be an integer"):
            r.route(1, args.pop("instrument"), args.pop("side"), 5, 100, **args)
        args = dict(instrument=0, side=BUY, strategy=STRAT_PASSIVE, tif=int(T.DAY))
        args[field] = 2**70
        with pytest.raises(ValueError, match=f"^{field} {2**70} is out of range"):
            r.route(1, args.pop("instrument"), args.pop("side"), 5, 100, **args)
    assert r.n_active == 0
    assert r.route(1, np.int32(0), np.int8(BUY), 5, 100, strategy=STRAT_PASSIVE) == 0
    (a,) = r.drain_actions()
    with pytest.raises(TypeError, match="^reason must be an integer"):
        r.on_reject(int(a["child_id"]), 97.5)
    assert r.parent(1)["qty"] == 5 and not r.drain_actions().size


def test_the_market_view_refuses_a_float_index_time_or_fee_naming_it(R):
    """depth(0, 1.7) showed venue 1, set_venue(1.9, dark=True) made venue 1 dark,
    venue_state(1.5) and set_venue(0, maker_fee=2.5, latency_ns=5.9) cut their floats: the
    int and int64 parameters took them through __int__ (review). A value beyond the C type
    raised an OverflowError naming nothing; now a ValueError names it."""
    r = R(2, 2)
    assert r.update_book(0, 1, bids=[(99, 10)], asks=[(101, 10)]) == 0
    floats = {
        "instrument": [lambda: r.depth(0.0, 1), lambda: r.book_state(1.5, 0),
                       lambda: r.nbbo(0.5), lambda: r.update_book(0.2, 0, bids=[(98, 1)]),
                       lambda: r.set_fees(1.0, 0, maker_fee=1), lambda: r.get_fees(0.0, 0),
                       lambda: r.on_market_volume(0.9, 5)],
        "venue": [lambda: r.depth(0, 1.7), lambda: r.set_venue(1.9, dark=True),
                  lambda: r.venue_state(1.5), lambda: r.set_open(0.5, False),
                  lambda: r.set_latency(1.2, 7), lambda: r.book_state(0, 1.0),
                  lambda: r.set_fees(0, 1.5, taker_fee=1)],
        "now": [lambda: r.venue_state(1, now=2.5)],
        "qty": [lambda: r.on_market_volume(0, 5.5)],
        "latency_ns": [lambda: r.set_venue(0, latency_ns=5.9), lambda: r.set_latency(0, 7.5)],
        "maker_fee": [lambda: r.set_venue(0, maker_fee=2.5)],
        "taker_cbps": [lambda: r.set_fees(0, 0, taker_cbps=1.7)],
        "n_venues": [lambda: R(2.0)],
        "n_instruments": [lambda: R(2, 1.5)],
        "max_levels": [lambda: R(2, 1, 10.0)],
    }
    for field, calls in floats.items():
        for call in calls:
            with pytest.raises(TypeError, match=f"^{field} must be an integer, not float"):
                call()
    huge = {
        "instrument": [lambda: r.depth(2**40, 0), lambda: r.nbbo(-2**70)],
        "venue": [lambda: r.depth(0, 2**32), lambda: r.venue_state(2**70),
                  lambda: r.set_venue(2**31, dark=True)],
        "now": [lambda: r.venue_state(0, now=2**63)],
        "latency_ns": [lambda: r.set_venue(0, latency_ns=2**64)],
        "maker_fee": [lambda: r.set_fees(0, 0, maker_fee=-2**70)],
        "n_venues": [lambda: R(2**70)],
    }
    for field, calls in huge.items():
        for call in calls:
            with pytest.raises(ValueError, match=f"^{field} -?[0-9]+ is out of range"):
                call()
    # Nothing changed, and numpy integers and bools are integers.
    assert r.depth(0, 1) == ([(99, 10)], [(101, 10)]) and r.depth(0, 0) == ([], [])
    assert not r.venue_state(1)["dark"] and r.venue_state(0)["latency_ns"] == 0
    assert r.venue_state(np.int8(1), now=np.int64(5))["open"]
    assert r.get_fees(np.int64(0), True) == r.get_fees(0, 1)
    assert r.get_fees(0, 0) == {"maker_fee": 0, "taker_fee": 0, "maker_cbps": 0, "taker_cbps": 0}



    """Every reject of a passive child marked the book stale, so an unrelated marketable
    order then found nothing to take there and was canceled (review). Only a post-only
    child's POST_ONLY_WOULD_CROSS says the book moved."""
    r = R(1)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 50)])
    assert r.route(1, 0, BUY, 10, 100, now=0, strategy=STRAT_PASSIVE) == 0
    (a,) = r.drain_actions()
    assert r.on_reject(int(a["child_id"]), RR.THROTTLED, 1) == 0
    assert not r.book_state(0, 0)["stale"]
    assert r.route(2, 0, BUY, 20, 101, now=2, tif=T.IOC) == 0
    sweeps = [x for x in r.drain_actions() if int(x["parent_id"]) == 2]
    assert [(int(x["price"]), int(x["qty"])) for x in sweeps] == [(101, 20)]


def test_a_venue_overfill_is_booked_and_never_routed_again(R):
    # A venue that fills a child past its leaves is at fault, but the lots
    # were traded: refused, the router routed them again while the engine
    # booked them, and the two disagreed about the parent's fills.
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    assert r.on_fill(kids[0], 55, 200, 1) == 0          # 40 asked, 55 filled
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["leaves_qty"]) == (55, 60, 45)
    assert not st["overfilled"] and r.venue_state(0)["overfills"] == 1
    assert [c["child_id"] for c in r.live_children(1)] == [kids[1]]
    assert not len(r.drain_actions())                   # nothing routed for the 15
    assert r.on_fill(kids[1], 60, 200, 2) == 0          # the parent ends overfilled
    st = r.parent(1)
    assert st["cum_qty"] == 115 and st["leaves_qty"] == 0 and st["overfilled"] and st["done"]
    assert st["status"] == OrdStatus.FILLED and r.venue_state(1)["overfills"] == 0
    assert not len(r.drain_actions())
    rec = r.bestex(1)
    assert rec["cum_qty"] == 115 and rec["leaves_qty"] == 0
    assert (rec["avg_px_num"], rec["avg_px_den"]) == (100, 1)


def test_a_parent_overfilled_by_one_child_cancels_the_others(R):
    # Its quantity is bought: what still works could only buy more. What the
    # other children fill before the cancel lands is booked too.
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    assert r.on_fill(kids[1], 100, 200, 1) == 0         # 60 asked, the parent's 100 filled
    st = r.parent(1)
    assert st["cum_qty"] == 100 and not st["done"] and r.venue_state(1)["overfills"] == 1
    acts = r.drain_actions()
    assert [(int(a["kind"]), int(a["child_id"])) for a in acts] == [(ACT_CANCEL, kids[0])]
    assert r.on_fill(kids[0], 10, 200, 2) == 0          # before the cancel landed
    assert r.parent(1)["cum_qty"] == 110 and r.parent(1)["overfilled"]
    assert r.on_canceled(kids[0], 3) == 0
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.FILLED and st["cum_qty"] == 110
    assert not len(r.drain_actions())


def kinds(router):
    """The queued actions as (kind, child_id), drained."""
    return [(int(a["kind"]), int(a["child_id"])) for a in router.drain_actions()]


def test_a_draining_child_s_fills_are_booked_until_its_venue_is_done(R):
    # A child overfilled while its venue still works lots of it (leaves > 0)
    # is done here, but the venue can fill it until the cancel of the rest
    # lands. Refused (UNKNOWN_ORDER), those fills left the router's cum
    # behind the engine's order and risk, which booked them.
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    assert r.on_fill(kids[0], 45, 200, 1, leaves=5) == 0     # 40 asked, 45 filled, 5 still there
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["draining"]) == (45, 60, 1)
    assert [c["child_id"] for c in r.live_children(1)] == [kids[1]]
    assert kinds(r) == [(ACT_CANCEL, kids[0])]               # its rest, taken down at the venue
    assert r.on_fill(kids[0], 2, 200, 2, leaves=3) == 0      # before that cancel landed
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["draining"]) == (47, 60, 1)
    assert r.venue_state(0)["overfills"] == 2 and r.bestex(1)["venue_filled"][0] == 47
    assert kinds(r) == []                                    # one cancel, nothing routed again
    assert r.on_fill(kids[1], 60, 200, 3) == 0               # the parent's lots are all in
    st = r.parent(1)
    assert st["cum_qty"] == 107 and st["overfilled"] and not st["done"]
    assert kinds(r) == []
    assert r.on_fill(kids[0], 1, 200, 4, leaves=0) == 0      # the venue is done with it
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.FILLED and st["cum_qty"] == 108
    assert st["draining"] == 0 and r.venue_state(0)["overfills"] == 3
    assert r.on_fill(kids[0], 1, 200, 5) == RR.UNKNOWN_ORDER  # gone: not booked
    assert r.on_canceled(kids[0], 5) == RR.UNKNOWN_ORDER
    assert r.parent(1)["cum_qty"] == 108


def test_a_child_filled_to_its_quantity_that_its_venue_still_works_drains_too(R):
    # Not an overfill here (its venue counts it larger): the same rule, the
    # venue's word on what it still works decides.
    r = R(1)
    r.update_book(0, 0, asks=[(100, 40)])
    r.route(1, 0, BUY, 40, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    (a,) = r.drain_actions()
    cid = int(a["child_id"])
    assert r.on_fill(cid, 40, 200, 1, leaves=10) == 0
    assert r.venue_state(0)["overfills"] == 0 and r.parent(1)["draining"] == 1
    assert kinds(r) == [(ACT_CANCEL, cid)] and not r.parent(1)["done"]
    assert r.on_ack(cid, 2) == 0                             # known, and nothing to do
    assert r.on_replaced(cid, 2) == 0 and r.on_replace_rejected(cid, 2) == 0
    assert kinds(r) == [] and not r.parent(1)["done"]
    assert r.on_canceled(cid, 3) == 0
    assert r.parent(1)["done"] and r.parent(1)["status"] == OrdStatus.FILLED


def test_a_parent_canceled_while_a_child_drains_ends_after_it(R):
    # No CANCELED while a child may still fill: an order's fills never
    # follow its end (the engine would have to drop them, or report a fill
    # of an order it had reported canceled).
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.DAY)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    assert r.on_fill(kids[0], 45, 200, 1, leaves=5) == 0
    assert kinds(r) == [(ACT_CANCEL, kids[0])]
    assert r.reduce_parent(1, 10, 2) == RR.ORDER_NOT_REPLACEABLE
    r.cancel_parent(1, 2)
    assert kinds(r) == [(ACT_CANCEL, kids[1])]               # not the draining one again
    assert r.on_canceled(kids[1], 3) == 0
    st = r.parent(1)
    assert not st["done"] and st["live_children"] == 0 and st["draining"] == 1
    assert r.on_fill(kids[0], 3, 200, 4, leaves=2) == 0      # booked: the order still works
    assert r.parent(1)["cum_qty"] == 48 and not r.parent(1)["done"]
    # Its venue's session ended before the cancel landed: that ends the child,
    # not the parent's day (the cancel asked for is what its expiry answers).
    assert r.on_expired(kids[0], 5) == 0
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.CANCELED and st["cum_qty"] == 48
    assert kinds(r) == []
    (rec,) = r.drain_finished()
    assert int(rec["cum_qty"]) == 48 and int(rec["status"]) == OrdStatus.CANCELED


def test_a_parent_out_of_liquidity_waits_for_its_draining_child(R):
    # The drained lots are not working: the parent routes what is left at
    # once (here nothing is there), but it ends only once the child is done,
    # with what the child filled meanwhile.
    r = R(1)
    r.update_book(0, 0, asks=[(100, 40)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    (a,) = r.drain_actions()
    cid = int(a["child_id"])
    assert r.on_fill(cid, 42, 200, 1, leaves=1) == 0
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["live_children"]) == (42, 0, 0)
    assert not st["done"] and kinds(r) == [(ACT_CANCEL, cid)]
    assert r.tick(10) == 0 and not r.parent(1)["done"]
    assert r.on_fill(cid, 1, 200, 11, leaves=0) == 0
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.CANCELED and st["cum_qty"] == 43
    assert st["reason"] == RR.NO_LIQUIDITY


def test_a_fill_after_which_its_venue_works_nothing_ends_a_short_child(R):
    # A venue that cuts a child, or drops an IOC's rest with no report of its
    # own, says so by a fill's leaves 0: the engine forgets the child then, and
    # the router kept it live, waiting forever for lots no venue worked (the
    # order hung). It is done like a canceled child: its lots are routed again.
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60), (101, 50)])
    r.route(1, 0, BUY, 100, 101, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    assert r.on_fill(kids[1], 60, 200, 1, leaves=0) == 0
    assert r.on_fill(kids[0], 30, 200, 2, leaves=0) == 0      # 40 sent, 30 filled, none left
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["live_children"]) == (90, 10, 1)
    (again,) = r.drain_actions()
    # The 10 went again, not to venue 0 (its 40 were not there: stale until it
    # updates) but past the 60 venue 1's own child took since its update.
    assert (int(again["kind"]), int(again["venue"]), int(again["price"]),
            int(again["qty"])) == (ACT_NEW, 1, 101, 10)
    assert r.book_state(0, 0)["stale"] and not r.book_state(0, 1)["stale"]
    assert r.venue_state(0)["overfills"] == 0
    # The venue's cancel of the rest, if it sends one, finds no child: nothing
    # counted twice, nothing routed.
    assert r.on_canceled(kids[0], 3) == RR.UNKNOWN_ORDER
    assert r.on_expired(kids[0], 3) == RR.UNKNOWN_ORDER
    assert r.parent(1) == st and kinds(r) == []
    assert r.on_fill(int(again["child_id"]), 10, 202, 4, leaves=0) == 0
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.FILLED and st["cum_qty"] == 100


def test_a_short_fill_with_leaves_0_of_a_canceled_parent_ends_it(R):
    # The parent's own rules decide once the child is done: canceled, it ends
    # CANCELED with what filled, not waiting on the short child.
    r = R(2)
    r.update_book(0, 0, asks=[(100, 40)])
    r.update_book(0, 1, asks=[(100, 60)])
    r.route(1, 0, BUY, 100, 100, now=0, strategy=STRAT_SWEEP, tif=T.DAY)
    kids = {int(a["venue"]): int(a["child_id"]) for a in r.drain_actions()}
    r.cancel_parent(1, 1)
    assert sorted(kinds(r)) == sorted((ACT_CANCEL, k) for k in kids.values())
    assert r.on_canceled(kids[1], 2) == 0
    assert r.on_fill(kids[0], 25, 200, 3, leaves=0) == 0
    st = r.parent(1)
    assert st["done"] and st["status"] == OrdStatus.CANCELED and st["cum_qty"] == 25
    assert st["working_qty"] == 0 and kinds(r) == []
    assert not r.book_state(0, 0)["stale"]      # cut by our cancel: the book said nothing
    assert r.on_canceled(kids[0], 4) == RR.UNKNOWN_ORDER
    (rec,) = r.drain_finished()
    assert int(rec["cum_qty"]) == 25 and int(rec["status"]) == OrdStatus.CANCELED


def test_a_short_fill_with_leaves_0_of_a_posted_child_posts_its_rest_again(R):
    # A venue that cut a resting child: the rest rests again (not a sweep's
    # miss: the book is not stale).
    r = R(1)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    r.route(1, 0, BUY, 50, 100, now=0, strategy=STRAT_PASSIVE, tif=T.DAY)
    (a,) = r.drain_actions()
    assert int(a["role"]) == ROLE_POST and int(a["qty"]) == 50
    cid = int(a["child_id"])
    assert r.on_ack(cid, 1) == 0
    assert r.on_fill(cid, 10, 2 * int(a["price"]), 2, leaves=0) == 0
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["done"]) == (10, 40, False)
    (b,) = r.drain_actions()
    assert (int(b["kind"]), int(b["role"]), int(b["qty"])) == (ACT_NEW, ROLE_POST, 40)
    assert not r.book_state(0, 0)["stale"]
    assert [c["child_id"] for c in r.live_children(1)] == [int(b["child_id"])]


def test_a_refused_fill_with_leaves_0_ends_its_child_as_a_cancel_would(R):
    # A fill the router cannot book (no lots, too many, no price) still says the venue
    # works nothing more of the child: the engine forgets it at that report, so the
    # router ends it too (kept live, the parent waited for it for good). With leaves
    # above 0, or not said, the refused fill changes nothing.
    r = R(1)
    r.update_book(0, 0, bids=[(99, 10)], asks=[(101, 10)])
    r.route(1, 0, BUY, 50, 100, now=0, strategy=STRAT_PASSIVE, tif=T.DAY)
    (a,) = r.drain_actions()
    cid, px_x2 = int(a["child_id"]), 2 * int(a["price"])
    assert r.on_ack(cid, 1) == 0
    before = r.parent(1)
    assert r.on_fill(cid, 0, px_x2, 2, leaves=5) == RR.INVALID_QTY
    assert r.on_fill(cid, 10, 0, 2) == RR.INVALID_PRICE
    assert r.parent(1) == before and kinds(r) == []
    assert r.on_fill(cid, 0, px_x2, 3, leaves=0) == RR.INVALID_QTY
    st = r.parent(1)
    assert (st["cum_qty"], st["working_qty"], st["done"]) == (0, 50, False)
    (b,) = r.drain_actions()          # its 50 lots rest again, by a new child
    assert (int(b["kind"]), int(b["qty"])) == (ACT_NEW, 50) and int(b["child_id"]) != cid
    assert r.on_canceled(cid, 4) == RR.UNKNOWN_ORDER


def test_every_lot_a_sweep_child_fills_keeps_the_next_sweep_off_the_book(R):
    # What a venue fills past a sweep child's leaves (its overfill, then its
    # fills while the child drains) left the book too: uncounted, the next
    # sweep was sent at lots already gone, came back short and marked the
    # venue stale.
    r = R(1)
    r.update_book(0, 0, asks=[(100, 40), (101, 50)])
    r.route(1, 0, BUY, 40, 100, now=0, strategy=STRAT_SWEEP, tif=T.IOC)
    (a,) = r.drain_actions()
    cid = int(a["child_id"])
    assert r.book_state(0, 0)["reserved_asks"] == 40
    assert r.on_fill(cid, 45, 200, 1, leaves=5) == 0       # 5 past its 40, 5 still there
    assert r.book_state(0, 0)["reserved_asks"] == 45
    assert kinds(r) == [(ACT_CANCEL, cid)]
    assert r.on_fill(cid, 3, 202, 2, leaves=2) == 0        # draining: 3 more taken
    assert r.book_state(0, 0)["reserved_asks"] == 48
    r.route(2, 0, BUY, 50, 101, now=3, strategy=STRAT_SWEEP, tif=T.IOC)
    sweeps = [a for a in r.drain_actions() if int(a["parent_id"]) == 2]
    assert [(int(x["price"]), int(x["qty"])) for x in sweeps] == [(101, 42)]
    r.update_book(0, 0, asks=[(101, 8)])                   # its depth says what is left
    assert r.book_state(0, 0)["reserved_asks"] == 0


def test_docs_list_every_router_key_with_its_real_default():
    """docs/router.md's configuration table is ``DEFAULT_CONFIG``: every key, no other, its default."""
    import re
    import tomllib
    from ext.router import DEFAULT_CONFIG
    text = (pathlib.Path(__file__).parents[3] / "docs" / "router.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([^`|]+)` \|", text, flags=re.M))
    assert set(rows) == set(DEFAULT_CONFIG)
    for key, default in rows.items():
        assert tomllib.loads(f"v = {default}")["v"] == DEFAULT_CONFIG[key], key
