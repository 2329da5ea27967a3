"""A sweep and our own resting orders under venue self-trade prevention.

The audit's case: account A rests a buy of 100 lots at 100 on a venue (a passive child of
another parent), a third party bids 99 for 100 lots there, and A sends a sell IOC limit 99
for 100 lots with self-trade prevention CANCEL_OLDEST. The sweep used to count A's own bid
as liquidity and priced its child at 100: the venue's STP canceled A's resting buy, the
child found nothing at 100, missed the 99 bid within its limit, and the parent ended
NO_LIQUIDITY with nothing filled. Now own resting lots that the venue will cancel rather than
trade are not liquidity for that parent where its venue's child goes past them, and the child
is priced at the level that holds what it can take (99), not at the parent's limit. A level of
ours the sweep reaches but the venue's child would not still counts as before, so that no
sweep trades through (or leaves standing) our own quote.

Every test runs against the Cython router and the pure-Python reference. ``StpVenues`` sends
each child to a real ``ext.book.OrderBook`` under its parent's account and STP mode, as the
engine does, and like the engine cancels a parent whose child the venue's STP canceled.
"""
import pytest

from ext.router import ACT_NEW, CF_ISO, CF_POST_ONLY, ROLE_POST, ROLE_SWEEP, Router, STRAT_PASSIVE
from ext.types import CancelReason, EventKind, OrdStatus, RejectReason as RR, Side, StpMode
from ext.types import TimeInForce as T
from tests.reference.router_reference import ReferenceRouter
from tests.unit.ext.test_router import OFFSET, Venues, news

BUY, SELL = int(Side.BUY), int(Side.SELL)
OLDEST, NEWEST = int(StpMode.CANCEL_OLDEST), int(StpMode.CANCEL_NEWEST)
NONE = int(StpMode.STP_NONE)
A, B, THIRD = 7, 8, 1           # venue accounts: ours (two clients) and someone else's


@pytest.fixture(params=["cython", "reference"])
def R(request):
    """The router class under test."""
    return Router if request.param == "cython" else ReferenceRouter


class StpVenues(Venues):
    """``Venues`` whose children carry their parent's account and STP mode to the book."""

    def __init__(self, router, lit):
        super().__init__(router, lit)
        self.scope = {}                 # parent id -> (venue account, stp mode)
        self.parent_of = {}             # child id -> parent id
        self.stp_canceled = []          # child ids the venues canceled by STP

    def route(self, parent_id, side, qty, limit, now, account, stp, **kw):
        self.scope[parent_id] = (account, stp)
        return self.router.route(parent_id, 0, side, qty, limit, now, stp_account=account,
                                 stp=stp, **kw)

    def _execute(self, a, now):
        cid, v = int(a["child_id"]), int(a["venue"])
        self.parent_of[cid] = int(a["parent_id"])
        if int(a["kind"]) != ACT_NEW:
            return super()._execute(a, now)
        account, stp = self.scope[int(a["parent_id"])]
        code = self.books[v].add(cid + OFFSET, int(a["side"]), int(a["price"]), int(a["qty"]),
                                 account=account, ord_type=int(a["ord_type"]),
                                 tif=int(a["tif"]), post_only=bool(a["flags"] & CF_POST_ONLY),
                                 stp=stp, ts=now)
        assert code == 0
        assert self.router.on_ack(cid, now) == 0
        self._report(v, now)

    def _canceled(self, cid, rec, now):
        if rec["reason"] == CancelReason.CXL_SELF_TRADE:
            # The engine's rule (pipeline._self_trade): its parent is
            # canceled first, so that it is not posted again at once.
            # (The cancel it queues finds the order gone: ignored.)
            self.stp_canceled.append(cid)
            self.router.cancel_parent(self.parent_of[cid], now)
        super()._canceled(cid, rec, now)


def resting_buy(R, account=A, stp=OLDEST):
    """The audit's book: our buy 100 @ 100 resting (acked, in the depth), a third party's
    buy 100 @ 99, on one venue."""
    r = R(1)
    venues = StpVenues(r, lit=[0])
    venues.rest(0, BUY, 99, 100, account=THIRD)
    venues.rest(0, SELL, 105, 10, account=THIRD)
    venues.publish()
    assert venues.route(1, BUY, 100, 100, 0, account, stp, tif=T.DAY) == 0
    venues.run(now=1)
    (child,) = r.live_children(1)
    assert (child["role"], child["price"], child["qty"], child["acked"]) == \
        (ROLE_POST, 100, 100, True)
    assert r.depth(0, 0)[0] == [(100, 100), (99, 100)]
    return r, venues


def our_bid_on_venue_0(R, qty, price, *third):
    """Two lit venues, a post going to venue 0 (venue 1's maker fee is higher): the third
    party's buys ``third`` (venue, price, qty) rest, then our buy ``qty`` @ ``price`` rests
    on venue 0. Returns the router and the venues."""
    r = R(2)
    venues = StpVenues(r, lit=[0, 1])
    r.set_venue(1, maker_fee=1000)
    for venue, px, q in third:
        venues.rest(venue, BUY, px, q, account=THIRD)
    venues.publish()
    assert venues.route(1, BUY, qty, price, 0, A, OLDEST, tif=T.DAY) == 0
    venues.run(now=1)
    assert r.live_children(1)[0]["venue"] == 0
    return r, venues


# ---------------------------------------------------------------- the audit's example
def test_router_calls_alone_price_the_child_at_the_level_it_can_take(R):
    """The example through the router's calls only: no venue, the depth as published."""
    r = R(1)
    r.update_book(0, 0, bids=[(99, 100)], asks=[(105, 10)])
    assert r.route(1, 0, BUY, 100, 100, 0, tif=T.DAY, stp_account=A, stp=OLDEST) == 0
    (post,) = r.drain_actions()
    assert (int(post["price"]), int(post["role"])) == (100, ROLE_POST)
    assert r.on_ack(int(post["child_id"]), 1) == 0
    r.update_book(0, 0, bids=[(100, 100), (99, 100)], asks=[(105, 10)])   # shows our 100
    assert r.route(2, 0, SELL, 100, 99, 2, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    # Not 100: the venue would cancel our own bid there rather than trade with it.
    assert news(r.drain_actions()) == [(0, SELL, 99, 100, T.IOC, 0)]


def test_own_bids_below_the_depth_and_on_other_venues_change_nothing(R):
    """The router looks up our children by the displayed prices (``post_index``): hundreds of
    our bids elsewhere, repriced or not, leave the one at the displayed 100 the only one
    hidden, and the child is still priced at 99."""
    r = R(2)
    r.set_venue(1, maker_fee=1000)
    r.update_book(0, 0, bids=[(99, 100)], asks=[(105, 10)])
    r.update_book(0, 1, bids=[(90, 5)], asks=[(105, 10)])
    for pid in range(10, 310):          # our bids from 80 to 89 (one venue or the other)
        assert r.route(pid, 0, BUY, 5, 80 + pid % 10, 0, tif=T.DAY, stp_account=A,
                       stp=OLDEST) == 0
    assert r.route(1, 0, BUY, 100, 100, 0, tif=T.DAY, stp_account=A, stp=OLDEST) == 0
    for a in r.drain_actions():
        assert r.on_ack(int(a["child_id"]), 1) == 0
    r.update_book(0, 0, bids=[(100, 100), (99, 100)] + [(89 - k, 10) for k in range(8)],
                  asks=[(105, 10)])
    r.update_book(0, 1, bids=[(90, 5)], asks=[(105, 10)])
    assert r.route(2, 0, SELL, 100, 99, 2, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 99, 100, T.IOC, 0)]


def test_sell_ioc_meets_its_own_bid_and_fills_at_the_third_partys_price(R):
    r, venues = resting_buy(R)
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    actions = r.drain_actions()
    assert [(int(a["price"]), int(a["qty"]), int(a["role"])) for a in actions] == \
        [(99, 100, ROLE_SWEEP)]
    venues._execute(actions[0], 2)
    venues.run(now=2)
    # The venue canceled our resting buy (STP) and the child took the 99 bid.
    assert venues.stp_canceled == [1]
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["status"] == OrdStatus.FILLED and rec[2]["cum_qty"] == 100
    assert (rec[2]["avg_px_num"], rec[2]["avg_px_den"]) == (99, 1) and rec[2]["reason"] == 0
    assert rec[1]["status"] == OrdStatus.CANCELED and rec[1]["cum_qty"] == 0
    assert venues.books[0].best_bid is None             # both bids gone: nothing rests


def test_own_lots_share_a_level_with_a_third_partys(R):
    """Level 100 holds our 60 and someone's 40: the child takes the 40 and 60 of the 99s."""
    r = R(1)
    venues = StpVenues(r, lit=[0])
    venues.rest(0, BUY, 99, 100, account=THIRD)
    venues.publish()
    assert venues.route(1, BUY, 60, 100, 0, A, OLDEST, tif=T.GTC) == 0
    venues.run(now=1)
    venues.rest(0, BUY, 100, 40, account=THIRD)         # behind ours in the queue
    venues.publish()
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    (a,) = r.drain_actions()
    assert (int(a["kind"]), int(a["price"]), int(a["qty"])) == (ACT_NEW, 99, 100)
    venues._execute(a, 2)
    venues.run(now=2)
    assert sorted((q, px) for cid, _, q, px in venues.fills if cid == int(a["child_id"])) == \
        [(40, 200), (60, 198)]
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["status"] == OrdStatus.FILLED and rec[2]["cum_qty"] == 100


def test_our_quote_alone_on_another_venue_is_cleared_not_traded_through(R):
    """Our bid rests alone at 100 on venue 0; the third party's 99 bid is on venue 1. Selling
    at 99 on venue 1 would trade through our own 100 quote and leave it standing: the sweep
    goes through venue 0 first, as before the fix (the venue cancels our bid), then takes
    venue 1 in the next round."""
    r, venues = our_bid_on_venue_0(R, 100, 100, (1, 99, 100))
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    first = r.drain_actions()
    assert news(first) == [(0, SELL, 100, 100, T.IOC, 0)]
    for a in first:
        venues._execute(a, 2)
    venues.publish()
    venues.run(now=3)
    assert venues.stp_canceled == [1]
    assert [(int(a["venue"]), int(a["price"])) for a in venues.sent      # the next round
            if a["kind"] == ACT_NEW and int(a["parent_id"]) == 2] == [(1, 99)]
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["status"] == OrdStatus.FILLED and rec[2]["avg_px_num"] == 99


def test_a_better_price_elsewhere_leaves_our_quote_out_of_the_way(R):
    """Our bid at 100 on venue 0 is not reached: venue 1's 101 bid fills the parent."""
    r, venues = our_bid_on_venue_0(R, 100, 100)
    venues.rest(1, BUY, 101, 100, account=THIRD)
    venues.publish()
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    assert news(r.drain_actions()) == [(1, SELL, 101, 100, T.IOC, 0)]


def test_our_bid_alone_within_the_limit_is_met_as_the_mode_asks(R):
    """Nothing but our own bid within the limit: the child goes to it, as before, and the
    venue cancels it (CANCEL_OLDEST); the parent ends NO_LIQUIDITY. Skipping our bid would
    send nothing, and leave standing the order the parent's mode says to cancel."""
    r = R(1)
    venues = StpVenues(r, lit=[0])
    venues.rest(0, BUY, 98, 100, account=THIRD)
    venues.publish()
    assert venues.route(1, BUY, 100, 100, 0, A, OLDEST, tif=T.DAY) == 0
    venues.run(now=1)
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    first = r.drain_actions()
    assert news(first) == [(0, SELL, 100, 100, T.IOC, 0)]
    for a in first:
        venues._execute(a, 2)
    venues.run(now=2)
    assert venues.stp_canceled == [1]
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["status"] == OrdStatus.CANCELED and rec[2]["reason"] == RR.NO_LIQUIDITY
    assert rec[1]["status"] == OrdStatus.CANCELED


def test_our_bid_behind_the_third_partys_is_met_when_lots_are_left_to_take(R):
    """A third party bids 100 for 50, our bid rests at 99: selling 100 down to 99, the child
    goes to 99 (the venue cancels our bid on the way) and takes the 50."""
    r = R(1)
    venues = StpVenues(r, lit=[0])
    venues.rest(0, SELL, 105, 10, account=THIRD)
    venues.publish()
    assert venues.route(1, BUY, 100, 99, 0, A, OLDEST, tif=T.DAY) == 0
    venues.run(now=1)
    venues.rest(0, BUY, 100, 50, account=THIRD)
    venues.publish()
    assert venues.route(2, SELL, 100, 99, 2, A, OLDEST, tif=T.IOC) == 0
    first = r.drain_actions()
    assert news(first) == [(0, SELL, 99, 100, T.IOC, CF_ISO)]
    for a in first:
        venues._execute(a, 2)
    venues.run(now=2)
    assert venues.stp_canceled == [1]
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["cum_qty"] == 50 and rec[2]["avg_px_num"] == 100


def test_our_bid_behind_a_third_partys_at_the_childs_last_level_is_not_traded_through(R):
    """Venue 0 bids 99: a third party's 5, then our 5 behind it; venue 1 bids 98. Selling
    10: the child at 99 sized to the third party's 5 stopped short of our bid, while venue 1
    sold 5 at 98, through our standing 99 (audit). The child at 99 now carries our lots too:
    it meets our bid (the venue cancels it), and 98 is taken in the next round."""
    r, venues = our_bid_on_venue_0(R, 5, 99, (0, 99, 5))
    venues.rest(1, BUY, 98, 10, account=THIRD)
    venues.publish()
    assert venues.route(2, SELL, 10, 98, 2, A, OLDEST, tif=T.IOC) == 0
    first = r.drain_actions()
    assert news(first) == [(0, SELL, 99, 10, T.IOC, 0)]
    for a in first:
        venues._execute(a, 2)
    venues.publish()
    venues.run(now=3)
    assert venues.stp_canceled == [int(first[0]["child_id"]) - 1]   # our resting bid
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["status"] == OrdStatus.FILLED and rec[2]["cum_qty"] == 10
    assert (rec[2]["avg_px_num"], rec[2]["avg_px_den"]) == (197, 2)    # 5 at 99, 5 at 98


# ---------------------------------------------------------------- when own lots do count
@pytest.mark.parametrize("account, stp, price", [
    (A, NONE, 100),     # STP off: the account may trade with itself, its bid is liquidity
    (B, OLDEST, 100),   # another account: our 100 bid is a counterparty like any other
    (A, -1, 100),       # the venue's default mode, unknown to the router: nothing assumed
])
def test_own_lots_are_liquidity_outside_cancel_oldest_in_the_same_scope(R, account, stp, price):
    r, venues = resting_buy(R)
    assert venues.route(2, SELL, 100, 99, 2, account, stp, tif=T.IOC) == 0
    assert news(r.drain_actions()) == [(0, SELL, price, 100, T.IOC, 0)]


def test_stp_none_trades_with_its_own_bid(R):
    r, venues = resting_buy(R, stp=NONE)
    assert venues.route(2, SELL, 100, 99, 2, A, NONE, tif=T.IOC) == 0
    venues.run(now=2)
    rec = {int(x["parent_id"]): x for x in r.drain_finished()}
    assert rec[2]["cum_qty"] == 100 and (rec[2]["avg_px_num"], rec[2]["avg_px_den"]) == (100, 1)
    assert rec[1]["cum_qty"] == 100


def test_cancel_newest_is_unchanged_the_child_meets_the_own_order_and_is_canceled(R):
    """CANCEL_NEWEST ends the incoming child on meeting our order whatever its price: routing
    around our bid on the same venue cannot help, and the engine cancels the parent saying
    why (tests/integration/test_self_trade.py). The sweep prices as before."""
    r, venues = resting_buy(R)
    assert venues.route(2, SELL, 100, 99, 2, A, NEWEST, tif=T.IOC) == 0
    assert news(r.drain_actions()) == [(0, SELL, 100, 100, T.IOC, 0)]


# ---------------------------------------------------------------- what the depth can show
def test_own_lots_are_hidden_only_once_an_update_after_the_ack_shows_them(R):
    """Before the venue confirmed our order, or before a book update taken after that, the
    depth may not hold it: hiding lots there could hide a third party's and make a sweep
    trade through them."""
    r = R(1)
    r.update_book(0, 0, bids=[(100, 100), (99, 100)])   # someone else's 100 bid
    assert r.route(1, 0, BUY, 100, 100, 0, tif=T.DAY, stp_account=A, stp=OLDEST) == 0
    (post,) = r.drain_actions()
    cid = int(post["child_id"])
    assert r.route(2, 0, SELL, 10, 99, 1, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 100, 10, T.IOC, 0)]      # not acked
    r.update_book(0, 0, bids=[(100, 100), (99, 100)])
    r.on_ack(cid, 2)
    assert r.route(3, 0, SELL, 10, 99, 3, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 100, 10, T.IOC, 0)]      # no update since
    r.update_book(0, 0, bids=[(100, 200), (99, 100)])   # now it shows: 100 theirs, 100 ours
    assert r.route(4, 0, SELL, 150, 99, 4, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 99, 150, T.IOC, CF_ISO)]


def test_a_reprice_in_flight_hides_nothing_until_confirmed_and_shown(R):
    r = R(1, config={"reprice_interval_ns": 0})
    r.update_book(0, 0, bids=[(99, 50)], asks=[(103, 10)])
    assert r.route(1, 0, BUY, 100, 101, 0, STRAT_PASSIVE, T.DAY, stp_account=A,
                   stp=OLDEST) == 0
    (post,) = r.drain_actions()
    cid = int(post["child_id"])
    assert int(post["price"]) == 99
    r.on_ack(cid, 1)
    r.update_book(0, 0, bids=[(100, 5), (99, 150)], asks=[(103, 10)])    # someone bids 100
    r.tick(2)
    (rep,) = r.drain_actions()
    assert int(rep["price"]) == 100                     # replace to 100 in flight
    assert r.route(2, 0, SELL, 150, 98, 3, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 99, 150, T.IOC, CF_ISO)]
    r.on_replaced(cid, 4)
    r.update_book(0, 0, bids=[(100, 105), (99, 50)], asks=[(103, 10)])
    assert r.route(3, 0, SELL, 50, 98, 5, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 99, 50, T.IOC, CF_ISO)]


def test_a_partial_fill_leaves_only_the_rest_hidden(R):
    r = R(1)
    r.update_book(0, 0, bids=[(99, 100)], asks=[(105, 10)])
    r.route(1, 0, BUY, 100, 100, 0, tif=T.DAY, stp_account=A, stp=OLDEST)
    cid = int(r.drain_actions()[0]["child_id"])
    r.on_ack(cid, 1)
    r.on_fill(cid, 30, 200, 2)
    r.update_book(0, 0, bids=[(100, 90), (99, 100)], asks=[(105, 10)])   # 70 ours, 20 not
    assert r.route(2, 0, SELL, 30, 99, 3, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 99, 30, T.IOC, CF_ISO)]   # 20 + 10
    # Before the next update, those 30 are claimed: counted from the top as if they had
    # been our own lots, which never hides more than can still be ours (hiding a third
    # party's lots could trade through them). Here it hides too little: this IOC would
    # come back short and the book be marked stale, as for any claim the depth did not
    # show.
    assert r.route(3, 0, SELL, 10, 99, 4, tif=T.IOC, stp_account=A, stp=OLDEST) == 0
    assert news(r.drain_actions()) == [(0, SELL, 100, 10, T.IOC, 0)]


@pytest.mark.parametrize("stp", [-2, 4, 255])
def test_an_unknown_stp_mode_is_refused(R, stp):
    r = R(1)
    r.update_book(0, 0, bids=[(99, 100)])
    assert r.route(1, 0, SELL, 10, 99, 0, tif=T.IOC, stp=stp) == RR.INVALID_STP_MODE
    assert r.drain_actions().size == 0 and r.n_active == 0
