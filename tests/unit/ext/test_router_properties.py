"""Property tests: the Cython router against the reference, and the router's invariants.

* Random streams of book updates, parent orders (every strategy, two
  self-trade scopes, CANCEL_OLDEST or not), venue reports (acks, partial and
  full fills, rejects of every kind, cancels, expiries, replaces, reports for
  unknown children, fills a venue says leave lots of a full child working
  and reports on such draining children, fills short of a child after which
  its venue works nothing of it, and cancels or expiries of such a child
  that follow), ticks, volume, cancels and venue closures run through
  ``ext.router.Router`` and ``tests/reference/router_reference.py``; after
  every call the two must have queued the same actions and hold the same
  parents, records and venue states.
* After every call the accounting invariants hold: a parent's cumulative
  quantity, notional and fees are the sums of the fills reported for its
  children (draining ones included), its working quantity is the sum of its
  live children's leaves, it is never overcommitted (cum + working <= qty),
  and it never ends while a child of it drains.
* A sweep never trades through: on random books it takes every displayed lot
  at a better price before any at a worse one, chooses among venues at the
  marginal price by fee then latency, and executed on real order books its
  fills leave no better price behind.
"""
import math

import numpy as np
from hypothesis import given, strategies as st

from ext.book import OrderBook
from ext.router import (
    ACT_NEW, ROLE_POST, ROLE_SWEEP, STRAT_AUTO, STRAT_DARK_FIRST, STRAT_PASSIVE, STRAT_POV,
    STRAT_SWEEP, STRAT_TWAP, STRAT_VWAP, Router,
)
from ext.types import RejectReason as RR, Side, StpMode, TimeInForce as T
from tests.reference.router_reference import ReferenceRouter

BUY, SELL = int(Side.BUY), int(Side.SELL)
MID = 1000


def same(a, b):
    """Equality that treats NaN as equal to NaN (best-ex floats with no reference price)."""
    if isinstance(a, np.ndarray):
        a, b = a.tolist(), b.tolist()
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------- generators
@st.composite
def side_levels(draw, is_bid, max_levels=6):
    n = draw(st.integers(0, max_levels))
    px = MID - draw(st.integers(0, 3)) if is_bid else MID + draw(st.integers(0, 3))
    out = []
    for _ in range(n):
        out.append((px, draw(st.integers(1, 60))))
        px += -draw(st.integers(1, 3)) if is_bid else draw(st.integers(1, 3))
    return out


@st.composite
def venue_setup(draw):
    n = draw(st.integers(1, 6))
    dark = draw(st.sets(st.integers(0, n - 1), max_size=2)) if n > 1 else set()
    fees = [dict(taker_fee=draw(st.sampled_from([-2000, 0, 1000, 3000])),
                 maker_fee=draw(st.sampled_from([-3000, -2000, 0, 1000])),
                 taker_cbps=draw(st.sampled_from([0, 0, 2, 30])),
                 maker_cbps=draw(st.sampled_from([0, 0, -1, 5])),
                 latency_ns=draw(st.sampled_from([0, 100, 100, 500])))
            for _ in range(n)]
    config = dict(max_reroutes=draw(st.integers(0, 4)),
                  dark_min_qty=draw(st.sampled_from([0, 5])),
                  ack_timeout_ns=draw(st.sampled_from([50, 400])),
                  recovery_ns=draw(st.sampled_from([100, 1000])),
                  recovery_max_ns=4000,
                  reprice_interval_ns=draw(st.sampled_from([0, 200])),
                  slice_min_qty=draw(st.sampled_from([1, 4])),
                  post_residual=draw(st.booleans()),
                  fill_rate_prior_lots=draw(st.sampled_from([1, 100])))
    books = [(draw(side_levels(True)), draw(side_levels(False))) for _ in range(n)]
    return n, dark, fees, config, books


ROUTE = st.tuples(
    st.just("route"), st.sampled_from([BUY, SELL, int(Side.SELL_SHORT)]), st.integers(1, 150),
    st.sampled_from([0, -3, -1, 0, 1, 3, 6]),                           # limit vs MID; 0: market
    st.sampled_from([STRAT_AUTO, STRAT_SWEEP, STRAT_DARK_FIRST, STRAT_PASSIVE, STRAT_TWAP,
                     STRAT_VWAP, STRAT_POV]),
    st.sampled_from([int(T.DAY), int(T.GTC), int(T.IOC)]),
    st.integers(1, 5), st.sampled_from([0, 100_000, 500_000]), st.integers(0, 3),
    # self-trade scope: two accounts; CANCEL_OLDEST makes a sweep skip our resting lots
    st.integers(0, 1), st.sampled_from([-1, int(StpMode.STP_NONE), int(StpMode.CANCEL_OLDEST),
                                        int(StpMode.CANCEL_OLDEST)]))
REPORT = st.tuples(
    st.just("report"), st.integers(0, 1000),
    st.sampled_from(["ack", "ack", "fill", "fill", "fill_all", "fill_all", "reject", "canceled",
                     "expired", "replaced", "replace_rejected", "unknown", "overfill",
                     "fill_cut", "fill_cut", "late_end"]),
    st.integers(1, 1000), st.integers(-4, 4), st.sampled_from([None, None, 0, -500, 777]),
    st.sampled_from([RR.VENUE_REJECT, RR.VENUE_UNAVAILABLE, RR.VENUE_CLOSED,
                     RR.POST_ONLY_WOULD_CROSS]))
BOOK = st.tuples(st.just("book"), st.integers(0, 5), side_levels(True), side_levels(False))
# A venue's depth that shows our resting children there, acknowledged, as a real venue's
# would (so that a sweep under CANCEL_OLDEST finds its own lots in the depth).
SHOW = st.tuples(st.just("show"), st.integers(0, 5), side_levels(True), side_levels(False))
TICK = st.tuples(st.just("tick"), st.integers(0, 600))
# one_of picks its branches uniformly: repeats weight the mix toward what
# needs depth (routes, then many reports on their children).
OPS = st.lists(st.one_of(
    BOOK, BOOK, SHOW, ROUTE, ROUTE, ROUTE, REPORT, REPORT, REPORT, REPORT, REPORT, REPORT, TICK,
    TICK,
    st.tuples(st.just("volume"), st.integers(0, 300)),
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
    st.tuples(st.just("venue"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("drain_finished")),
), min_size=30, max_size=90)


class Ledger:
    """What the test itself reported per parent: the truth the router's sums must match."""

    def __init__(self):
        self.cum, self.notional_x2, self.fees = {}, {}, {}
        self.excess = {}    # lots the venues filled past their children's leaves

    def fill(self, pid, qty, px_x2, fee, excess=0):
        self.excess[pid] = self.excess.get(pid, 0) + excess
        self.cum[pid] = self.cum.get(pid, 0) + qty
        self.notional_x2[pid] = self.notional_x2.get(pid, 0) + qty * px_x2
        self.fees[pid] = self.fees.get(pid, 0) + fee


def check_invariants(router, pids, ledger, draining):
    for pid in pids:
        p = router.parent(pid)
        live = router.live_children(pid)
        assert p["draining"] == sum(1 for d in draining.values() if d[0] == pid)
        assert p["cum_qty"] == ledger.cum.get(pid, 0)
        assert p["notional_x2"] == ledger.notional_x2.get(pid, 0)
        assert p["fees"] == ledger.fees.get(pid, 0)
        assert p["working_qty"] == sum(c["qty"] - c["cum_qty"] for c in live)
        assert p["live_children"] == len(live)
        # What the router sent never passes the parent: only a venue's
        # overfill (booked, never routed again) takes its fills past it.
        excess = ledger.excess.get(pid, 0)
        assert 0 <= p["working_qty"] and p["cum_qty"] - excess + p["working_qty"] <= p["qty"]
        assert p["leaves_qty"] == max(p["qty"] - p["cum_qty"], 0)
        assert p["overfilled"] == (p["cum_qty"] > p["qty"])
        if p["done"]:
            assert not live and not p["draining"]
        rec = router.bestex(pid)
        assert sum(rec["venue_filled"]) == p["cum_qty"]
        assert sum(rec["venue_fees"]) == p["fees"]
        assert excess or all(f <= s for f, s in zip(rec["venue_filled"], rec["venue_sent"]))
        if p["cum_qty"]:
            num, den = p["avg_px"]
            assert num * 2 * p["cum_qty"] == den * p["notional_x2"] and math.gcd(num, den) == 1


@given(venue_setup(), OPS)
def test_cython_matches_reference_and_keeps_its_books(setup, ops):
    n, dark, fees, config, books = setup
    cy, ref = Router(n, config=config), ReferenceRouter(n, config=config)
    for r in (cy, ref):
        for v in range(n):
            r.set_venue(v, dark=v in dark, **fees[v])
            assert r.update_book(0, v, *books[v]) == 0
    pids, ledger, now, next_pid = [], Ledger(), 0, 1
    sides_of = {}
    draining = {}   # child id -> (parent id, the child as it was live): done, still worked
    cut = []        # children a fill with leaves 0 ended short: done, the venue may say so again
    for op in ops:
        kind = op[0]
        if kind == "book":
            v = op[1] % n
            assert cy.update_book(0, v, op[2], op[3]) == ref.update_book(0, v, op[2], op[3])
        elif kind == "show":
            v = op[1] % n
            sides = [dict(op[2]), dict(op[3])]
            for pid in pids:
                for c in cy.live_children(pid):
                    if c["venue"] == v and c["role"] == ROLE_POST:
                        if not c["acked"]:      # resting there: the venue has accepted it
                            assert cy.on_ack(c["child_id"], now) == \
                                ref.on_ack(c["child_id"], now) == 0
                        s = 0 if sides_of[pid] == BUY else 1
                        sides[s][c["price"]] = sides[s].get(c["price"], 0) \
                            + c["qty"] - c["cum_qty"]
            bids = sorted(sides[0].items(), reverse=True)
            asks = sorted(sides[1].items())
            assert cy.update_book(0, v, bids, asks) == ref.update_book(0, v, bids, asks) == 0
        elif kind == "route":
            _, side, qty, offset, strategy, tif, slices, pov, extra, account, stp = op
            limit = 0 if offset == 0 and extra % 2 else MID + offset
            kw = dict(strategy=strategy, tif=tif, end_ns=now + 1000 * slices, slices=slices,
                      profile=list(range(extra + 1, 0, -1)), pov_ppm=pov,
                      dark_min_qty=-1 if extra else 3, stp_account=account, stp=stp)
            codes = [r.route(next_pid, 0, side, qty, limit, now, **kw) for r in (cy, ref)]
            assert codes[0] == codes[1]
            if codes[0] == 0:
                pids.append(next_pid)
                sides_of[next_pid] = side
            next_pid += 1
        elif kind == "report":
            _, pick, what, q, dpx, fee, reason = op
            live = [(pid, c) for pid in pids for c in cy.live_children(pid)]
            live += [draining[cid] for cid in sorted(draining)]
            if what == "late_end" and cut:
                # The venue's own end of a child it said it worked nothing of: no
                # child any more (the engine forgot it too), nothing applied.
                cid = cut[pick % len(cut)]
                call = "on_canceled" if pick % 2 else "on_expired"
                assert getattr(cy, call)(cid, now) == getattr(ref, call)(cid, now) \
                    == RR.UNKNOWN_ORDER
                continue
            if what in ("unknown", "late_end") or not live:
                cid = 10**9 + pick
                assert cy.on_ack(cid, now) == ref.on_ack(cid, now) == RR.UNKNOWN_ORDER
                continue
            pid, c = live[pick % len(live)]
            cid = c["child_id"]
            if what in ("fill", "fill_all", "overfill", "fill_cut"):
                leaves = 0 if cid in draining else c["qty"] - c["cum_qty"]
                qty = leaves if what == "fill_all" and leaves else leaves + 1 + q % 20 \
                    if what not in ("fill", "fill_cut") or not leaves else 1 + q % leaves
                # What the venue says it still works: for a fill that completes the
                # child (or one of a draining child) sometimes more, which drains it;
                # after a cut one, nothing (it ended the child short).
                at_venue = 0 if what == "fill_cut" and qty < leaves else \
                    leaves - qty if qty < leaves else q % 3
                if at_venue == 0 and qty < leaves:
                    cut.append(cid)
                px_x2 = 2 * (c["price"] or MID) + dpx
                codes = [r.on_fill(cid, qty, px_x2, now, fee, leaves=at_venue) for r in (cy, ref)]
                assert codes[0] == codes[1] == 0
                if cid in cut:      # done here as at its venue: its lots are the parent's
                    assert cid not in [k["child_id"] for k in cy.live_children(pid)]
                if cid in draining and not at_venue:
                    del draining[cid]
                elif qty >= leaves and at_venue:
                    draining[cid] = (pid, c)
                expected = fee
                if fee is None:     # the schedule's fee, computed here independently
                    maker = c["role"] == 3
                    vs = cy.get_fees(0, c["venue"])
                    assert vs == ref.get_fees(0, c["venue"])
                    per = vs["maker_fee"] if maker else vs["taker_fee"]
                    cbps = vs["maker_cbps"] if maker else vs["taker_cbps"]
                    rate = px_x2 * qty * cbps
                    expected = per * qty + (rate + 100) // 200 if rate >= 0 else \
                        per * qty - (-rate + 100) // 200
                ledger.fill(pid, qty, px_x2, expected, max(qty - leaves, 0))
            else:
                call = {"ack": "on_ack", "canceled": "on_canceled", "expired": "on_expired",
                        "replaced": "on_replaced", "replace_rejected": "on_replace_rejected"}
                if what == "reject":
                    codes = [r.on_reject(cid, int(reason), now) for r in (cy, ref)]
                else:
                    codes = [getattr(r, call[what])(cid, now) for r in (cy, ref)]
                assert codes[0] == codes[1] == 0
                if what in ("reject", "canceled", "expired"):
                    draining.pop(cid, None)
        elif kind == "tick":
            now += op[1]
            assert cy.tick(now) == ref.tick(now)
        elif kind == "volume":
            cy.on_market_volume(0, op[1])
            ref.on_market_volume(0, op[1])
        elif kind == "cancel":
            pid = op[1] % (next_pid + 1)
            a, b = cy.cancel_parent(pid, now), ref.cancel_parent(pid, now)
            assert (a is None and b is None) or a.tolist() == b.tolist()
        elif kind == "venue":
            v = op[1] % n
            cy.set_open(v, op[2])
            ref.set_open(v, op[2])
        elif kind == "drain_finished":
            a, b = cy.drain_finished(), ref.drain_finished()
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert same(x.tolist(), y.tolist())
            done = set(a["parent_id"].tolist())
            pids = [pid for pid in pids if pid not in done]
        # After every call: same output, same state, and the books balance.
        assert cy.drain_actions().tolist() == ref.drain_actions().tolist()
        for pid in pids:
            assert same(cy.parent(pid), ref.parent(pid))
            assert same(cy.bestex(pid), ref.bestex(pid))
            assert cy.live_children(pid) == ref.live_children(pid)
        for v in range(n):
            assert cy.venue_state(v, now) == ref.venue_state(v, now)
            assert cy.book_state(0, v) == ref.book_state(0, v)
        assert cy.nbbo(0) == ref.nbbo(0)
        assert cy.next_wakeup(now) == ref.next_wakeup(now)
        assert cy.n_active == ref.n_active
        check_invariants(cy, pids, ledger, draining)


# ---------------------------------------------------------------- sweeps
@st.composite
def sweep_case(draw):
    n = draw(st.integers(1, 8))
    books = [draw(side_levels(False, max_levels=10)) for _ in range(n)]
    fees = [draw(st.sampled_from([-2000, 0, 1000, 3000])) for _ in range(n)]
    lat = [draw(st.sampled_from([0, 100, 200])) for _ in range(n)]
    qty = draw(st.integers(1, 400))
    limit = draw(st.sampled_from([0, MID + 2, MID + 5, MID + 12]))
    side = draw(st.sampled_from([BUY, SELL]))
    return n, books, fees, lat, qty, limit, side


def mirror(levels):
    """Ask levels above MID as bid levels below it (to test sells with the same shapes)."""
    return [(2 * MID - px, q) for px, q in levels]


@given(sweep_case())
def test_sweep_takes_every_better_price_first_and_executes_without_trade_through(case):
    n, books, fees, lat, qty, limit, side = case
    buy = side == BUY
    if not buy:
        books = [mirror(b) for b in books]
        limit = 2 * MID - limit if limit else 0
    outputs = []
    for cls in (Router, ReferenceRouter):
        r = cls(n)
        for v in range(n):
            r.set_venue(v, taker_fee=fees[v], latency_ns=lat[v])
            assert r.update_book(0, v, *(([], books[v]) if buy else (books[v], []))) == 0
        assert r.route(1, 0, side, qty, limit, 0, STRAT_SWEEP, T.IOC) == 0
        outputs.append(r.drain_actions())
    actions = outputs[0]
    assert actions.tolist() == outputs[1].tolist()
    better = (lambda a, b: a < b) if buy else (lambda a, b: a > b)
    within = [(v, px, q) for v in range(n) for px, q in books[v]
              if not limit or not better(limit, px)]
    alloc = {int(a["venue"]): (int(a["price"]), int(a["qty"])) for a in actions}
    assert all(a["kind"] == ACT_NEW and a["role"] == ROLE_SWEEP and a["tif"] == T.IOC
               for a in actions)
    assert len(alloc) == len(actions)                         # one child per venue
    assert sum(q for _, q in alloc.values()) == min(qty, sum(q for *_, q in within))
    if not alloc:
        return
    worst = max(p for p, _ in alloc.values()) if buy else min(p for p, _ in alloc.values())
    for v in range(n):
        through = sum(q for px, q in books[v] if better(px, worst) and
                      (not limit or not better(limit, px)))
        at_worst = sum(q for px, q in books[v] if px == worst)
        got = alloc.get(v, (None, 0))[1]
        # Every displayed lot at a better price than the worst one paid is taken...
        assert through <= got <= through + at_worst
        if v in alloc:
            assert not limit or not better(limit, alloc[v][0])
    # ...and at the marginal price, a venue left with size there never beats one used.
    marginal = [v for v in range(n) if any(px == worst for px, _ in books[v])]
    taken = {v: alloc.get(v, (0, 0))[1] - sum(q for px, q in books[v] if better(px, worst))
             for v in marginal}
    full = {v: sum(q for px, q in books[v] if px == worst) for v in marginal}
    for u in marginal:
        for v in marginal:
            if u != v and taken[u] < full[u] and taken[v] > 0:
                assert (fees[u], lat[u], u) > (fees[v], lat[v], v)
    # Execute on real books holding the same depth: the fills leave nothing better behind.
    venues = {}
    for v in range(n):
        venues[v] = OrderBook()
        for k, (px, q) in enumerate(books[v]):
            venues[v].add(k + 1, SELL if buy else BUY, px, q, account=1)
    paid = []
    for a in actions:
        v = int(a["venue"])
        assert venues[v].add(10**6, side, int(a["price"]), int(a["qty"]), account=2,
                             tif=T.IOC) == 0
        f = venues[v].drain_fills()
        assert int(f["qty"].sum()) == int(a["qty"])           # the displayed size was there
        paid += f["price"].tolist()
    left = [b.best_ask if buy else b.best_bid for b in venues.values()]
    left = [p for p in left if p]
    extreme = max(paid) if buy else min(paid)
    assert all(not better(p, extreme) for p in left)


@st.composite
def own_case(draw):
    n = draw(st.integers(1, 4))
    books = [draw(side_levels(False, max_levels=6)) for _ in range(n)]
    own = [draw(st.lists(st.tuples(st.integers(MID, MID + 8), st.integers(1, 60)), max_size=3))
           for _ in range(n)]
    fees = [draw(st.sampled_from([-2000, 0, 1000, 3000])) for _ in range(n)]
    qty = draw(st.integers(1, 400))
    limit = draw(st.sampled_from([0, MID + 2, MID + 5, MID + 12]))
    return n, books, own, fees, qty, limit


@given(own_case())
def test_sweep_under_cancel_oldest_past_our_own_resting_orders(case):
    """Our account rests sells (passive children, acknowledged, in the depth) among a third
    party's asks; the same account sweeps a buy under CANCEL_OLDEST. Both implementations
    send the same children, and executed on real books that apply the account and mode:

    * each child fills all the third party's lots at or better than its price, up to its
      quantity (what it did not get can only have been ours);
    * nothing better than the worst price sent is left behind, neither a third party's ask
      nor ours (our quote is never traded through), and when the sweep sent less than the
      parent's quantity nothing within the limit: but for our own lots at a child's price
      on its venue that the child, filled first, did not meet in the queue;
    * on one venue, the parent gets every third-party lot within its limit up to its
      quantity in this one round: our own lots in the way do not stop it.
    """
    n, books, own, fees, qty, limit = case
    ours, theirs = 7, 1
    oldest = int(StpMode.CANCEL_OLDEST)
    venues = [OrderBook() for _ in range(n)]
    for v in range(n):
        for k, (px, q) in enumerate(books[v]):
            venues[v].add(k + 1, SELL, px, q, account=theirs)
    outputs = []
    for cls in (Router, ReferenceRouter):
        r = cls(n)
        for v in range(n):
            r.set_venue(v, taker_fee=fees[v])
        pid = 100
        for v in range(n):
            for px, q in own[v]:
                # Each resting sell goes to venue v: the only one open while it is routed.
                for u in range(n):
                    r.set_open(u, u == v)
                assert r.route(pid, 0, SELL, q, px, 0, STRAT_AUTO, T.GTC, stp_account=ours,
                               stp=oldest) == 0
                (a,) = r.drain_actions()
                assert (int(a["venue"]), int(a["price"]), a["role"]) == (v, px, ROLE_POST)
                assert r.on_ack(int(a["child_id"]), 0) == 0
                if cls is Router:
                    assert venues[v].add(10**5 + int(a["child_id"]), SELL, px, q,
                                         account=ours, post_only=True) == 0
                pid += 1
        for u in range(n):
            r.set_open(u, True)
            assert r.update_book(0, u, *venues[u].depth(10)) == 0
        assert r.route(1, 0, BUY, qty, limit, 1, STRAT_SWEEP, T.IOC, stp_account=ours,
                       stp=oldest) == 0
        outputs.append(r.drain_actions())
    actions = outputs[0]
    assert actions.tolist() == outputs[1].tolist()
    if not len(actions):                # nothing at all within the limit, ours or not
        assert all(b.best_ask is None or (limit and b.best_ask > limit) for b in venues)
        return
    filled = 0
    for a in actions:
        v, price = int(a["venue"]), int(a["price"])
        theirs_there = sum(q for px, q in books[v] if px <= price)
        assert venues[v].add(10**6, BUY, price, int(a["qty"]), account=ours, tif=T.IOC,
                             stp=oldest) == 0
        f = venues[v].drain_fills()
        assert int(f["qty"].sum()) == min(int(a["qty"]), theirs_there)
        assert (f["maker_account"] == theirs).all()
        filled += int(f["qty"].sum())
    worst = int(actions["price"].max())
    short = int(actions["qty"].sum()) < qty
    sent_at = {int(a["venue"]): int(a["price"]) for a in actions}
    for v, b in enumerate(venues):
        for row in b.snapshot():
            # Our own lots may be left at a child's price on its venue, when the child had
            # filled before it met them in the queue: no trade was made through them.
            at_child = row["account"] == ours and row["price"] == sent_at.get(v)
            assert row["price"] >= worst or at_child
            if short and (not limit or row["price"] <= limit):
                assert at_child
    if n == 1:
        assert filled == min(qty, sum(q for px, q in books[0] if not limit or px <= limit))


# ---------------------------------------------------------------- accounting
@given(st.integers(1, 500), st.sampled_from([STRAT_SWEEP, STRAT_DARK_FIRST]),
       st.lists(st.tuples(st.integers(0, 99), st.sampled_from(["part", "all", "reject",
                                                               "cancel", "ack", "update"]),
                          st.integers(1, 99)), max_size=60))
def test_parent_is_the_sum_of_its_childrens_fills(qty, strategy, events):
    """Random partial fills, rejects and IOC remainders: the parent always balances."""
    books = [[(1000, 40), (1001, 60)], [(1000, 25), (1002, 90)], [(1001, 70)]]
    routers = [Router(4), ReferenceRouter(4)]
    for r in routers:
        r.set_venue(3, dark=True)
        for v, asks in enumerate(books):
            r.update_book(0, v, [(999, 10)], asks)
        assert r.route(1, 0, BUY, qty, 1002, 0, strategy, T.DAY) == 0
    cy = routers[0]
    sent = filled = 0
    for pick, what, q in events:
        live = cy.live_children(1)
        if what == "update":
            for r in routers:
                for v, asks in enumerate(books):
                    r.update_book(0, v, [(999, 10)], asks)
        elif live:
            c = live[pick % len(live)]
            leaves = c["qty"] - c["cum_qty"]
            for r in routers:
                if what in ("part", "all"):
                    fill = leaves if what == "all" else 1 + q % leaves
                    assert r.on_fill(c["child_id"], fill, 2 * (c["price"] or 1000), 1) == 0
                elif what == "reject":
                    assert r.on_reject(c["child_id"], RR.VENUE_REJECT, 1) == 0
                elif what == "cancel":
                    assert r.on_canceled(c["child_id"], 1) == 0
                else:
                    assert r.on_ack(c["child_id"], 1) == 0
            if what in ("part", "all"):
                filled += leaves if what == "all" else 1 + q % leaves
        acts = [r.drain_actions() for r in routers]
        assert acts[0].tolist() == acts[1].tolist()
        sent += int(acts[0]["qty"][acts[0]["kind"] == ACT_NEW].sum())
        p = cy.parent(1)
        live = cy.live_children(1)
        assert p["cum_qty"] == filled == sum(cy.bestex(1)["venue_filled"])
        assert p["working_qty"] == sum(c["qty"] - c["cum_qty"] for c in live)
        assert p["cum_qty"] + p["working_qty"] <= qty
        assert p["leaves_qty"] == qty - filled
        assert sent >= filled
        assert same(p, routers[1].parent(1))
    if cy.parent(1)["done"]:
        assert cy.parent(1)["live_children"] == 0
