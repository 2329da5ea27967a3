"""The router's clock skips parked parents, and that changes nothing it does.

A tick visits the awake parents only: a posted parent resting where its
reprice would leave it is parked until its instrument's market moves far
enough, or an event touches it (``ext/router.pyx``, "the clock"). The
reference model visits every active parent at every tick, so running both
on the same streams (the clock stepping back too) shows that parking never
skips work; ``n_parked`` shows that the parked parents are really skipped.
"""
from hypothesis import given, strategies as st

from ext.router import ACT_REPLACE, STRAT_AUTO, STRAT_PASSIVE, Router
from ext.types import RejectReason as RR, Side, TimeInForce as T
from tests.reference.router_reference import ReferenceRouter

BUY, SELL = int(Side.BUY), int(Side.SELL)
CONFIG = {"reprice_interval_ns": 1000, "ack_timeout_ns": 10_000_000}


def both(n_venues=2, config=CONFIG):
    return Router(n_venues, config=config), ReferenceRouter(n_venues, config=config)


def same_calls(routers, name, *args, **kw):
    """Call ``name`` on both routers; they must answer and queue the same."""
    cy, ref = routers
    a, b = getattr(cy, name)(*args, **kw), getattr(ref, name)(*args, **kw)
    assert a == b, (name, args, a, b)
    actions = cy.drain_actions()
    assert actions.tolist() == ref.drain_actions().tolist(), (name, args)
    return a, actions


def ack_all(routers, pids, now):
    for pid in pids:
        for c in routers[0].live_children(pid):
            if not c["acked"]:
                same_calls(routers, "on_ack", c["child_id"], now)


def test_resting_parents_are_parked_and_woken_only_by_their_market():
    routers = cy, ref = both()
    for r in routers:
        r.update_book(0, 0, bids=[(99, 10)], asks=[(102, 10)])
    joiners = list(range(1, 101))              # join the bid, up to a limit of 101
    at_limit = list(range(101, 201))           # plain limit orders resting at 100
    sellers = list(range(201, 251))            # plain limit sells resting at 105
    for pid in joiners:
        same_calls(routers, "route", pid, 0, BUY, 10, 101, 0, strategy=STRAT_PASSIVE)
    for pid in at_limit:
        same_calls(routers, "route", pid, 0, BUY, 10, 100, 0, strategy=STRAT_AUTO)
    for pid in sellers:
        same_calls(routers, "route", pid, 0, SELL, 10, 105, 0, strategy=STRAT_AUTO)
    ack_all(routers, joiners + at_limit + sellers, 1)
    assert cy.n_parked == 0                    # acknowledged since the last tick: awake
    same_calls(routers, "tick", 2000)
    assert cy.n_parked == 250 and cy.n_active == 250
    assert cy.next_wakeup(2000) == ref.next_wakeup(2000) == -1
    same_calls(routers, "tick", 3000)          # nothing moved: nothing to do

    # The bid rises to 100: the joiners follow it, the limit orders stay.
    for r in routers:
        r.update_book(0, 1, bids=[(100, 5)], asks=[(102, 10)])
    n, actions = same_calls(routers, "tick", 4000)
    assert n == 100 and {a["kind"] for a in actions} == {ACT_REPLACE}
    assert {int(a["price"]) for a in actions} == {100}
    assert cy.n_parked == 150                  # the joiners wait for their replaces
    for a in actions:
        same_calls(routers, "on_replaced", int(a["child_id"]), 4100)
    same_calls(routers, "tick", 4500)          # within the reprice interval: awake
    assert cy.n_parked == 150
    same_calls(routers, "tick", 5000)
    assert cy.n_parked == 250

    # An event wakes its parent only: a fill of one at-limit order.
    child = cy.live_children(150)[0]
    same_calls(routers, "on_fill", child["child_id"], 4, 200, 5100)
    assert cy.n_parked == 249
    same_calls(routers, "tick", 6000)
    assert cy.n_parked == 250
    # A cancel ends a parked parent once its child is gone.
    same_calls(routers, "cancel_parent", 7, 6100)
    assert cy.n_parked == 249
    same_calls(routers, "on_canceled", cy.live_children(7)[0]["child_id"], 6200)
    same_calls(routers, "tick", 7000)
    assert cy.n_parked == 249 and cy.n_active == 249

    # The bids leave and the asks fall to 103: the sellers stay at their limit,
    # the limit orders too, and the joiners, with no bid to join, go up to their
    # limit of 101 (below the ask): only they wake.
    for r in routers:
        r.update_book(0, 0, bids=[], asks=[(103, 10)])
        r.update_book(0, 1, bids=[], asks=[(103, 10)])
    n, actions = same_calls(routers, "tick", 8000)
    assert n == 99 and {int(a["price"]) for a in actions} == {101}
    assert cy.n_parked == 150


OFFSETS = st.sampled_from([-2, -1, 0, 1, 2, 4])
OPS = st.lists(st.one_of(
    st.tuples(st.just("route"), st.sampled_from([BUY, SELL]), st.integers(1, 30), OFFSETS,
              st.sampled_from([STRAT_PASSIVE, STRAT_AUTO]), st.sampled_from([int(T.DAY),
                                                                         int(T.GTC)])),
    st.tuples(st.just("book"), st.integers(0, 1), st.integers(-3, 3), st.integers(1, 4),
              st.booleans(), st.booleans()),
    st.tuples(st.just("book"), st.integers(0, 1), st.integers(-3, 3), st.integers(1, 4),
              st.just(True), st.just(True)),
    st.tuples(st.just("tick"), st.sampled_from([0, 300, 1000, 2500])),
    st.tuples(st.just("tick"), st.sampled_from([0, 300, 1000, 2500, -700])),   # a step back
    st.tuples(st.just("ack"),),
    st.tuples(st.just("child"), st.integers(0, 500),
              st.sampled_from(["fill", "fill_all", "replaced", "replace_rejected", "canceled",
                               "expired", "reject"])),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("reduce"), st.integers(0, 40), st.integers(1, 20)),
    st.tuples(st.just("venue"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("shift"), st.sampled_from([-900, 400, 5000])),  # a step, seen and moved
), min_size=20, max_size=80)


@given(st.sampled_from([0, 1000]), st.sampled_from([1, 2]), OPS)
def test_parking_changes_nothing_the_router_does(interval, reprice_ticks, ops):
    config = {"reprice_interval_ns": interval, "reprice_ticks": reprice_ticks,
              "ack_timeout_ns": 5000, "recovery_ns": 1000, "recovery_max_ns": 4000}
    routers = cy, ref = both(config=config)
    mid, now, pids, next_pid = 100, 0, [], 1
    for r in routers:
        for v in range(2):
            r.update_book(0, v, bids=[(mid - 1, 10)], asks=[(mid + 1, 10)])
    for op in ops:
        kind = op[0]
        if kind == "route":
            _, side, qty, offset, strategy, tif = op
            limit = mid + offset if side == BUY else mid - offset
            code, _ = same_calls(routers, "route", next_pid, 0, side, qty, limit, now,
                                 strategy=strategy, tif=tif)
            if code == 0:
                pids.append(next_pid)
            next_pid += 1
        elif kind == "book":
            _, v, shift, spread, has_bid, has_ask = op
            mid = max(10, mid + shift)
            bids = [(mid - 1, 10)] if has_bid else []
            asks = [(mid - 1 + spread, 10)] if has_ask else []
            for r in routers:
                assert r.update_book(0, v, bids, asks) == 0
        elif kind == "tick":
            now = max(0, now + op[1])     # (times since the epoch: never negative)
            same_calls(routers, "tick", now)
        elif kind == "ack":
            ack_all(routers, pids, now)
        elif kind == "child":
            live = [c for pid in pids for c in cy.live_children(pid)]
            if not live:
                continue
            c = live[op[1] % len(live)]
            cid, what = c["child_id"], op[2]
            if what in ("fill", "fill_all"):
                leaves = c["qty"] - c["cum_qty"]
                qty = leaves if what == "fill_all" else 1 + op[1] % leaves
                same_calls(routers, "on_fill", cid, qty, 2 * c["price"], now, 0)
            elif what == "reject":
                same_calls(routers, "on_reject", cid, int(RR.VENUE_REJECT), now)
            else:
                same_calls(routers, "on_" + what, cid, now)
        elif kind == "cancel":
            pid = op[1] % next_pid
            a, b = cy.cancel_parent(pid, now), ref.cancel_parent(pid, now)
            assert (a is None and b is None) or a.tolist() == b.tolist()
            assert cy.drain_actions().tolist() == ref.drain_actions().tolist()
        elif kind == "reduce":
            same_calls(routers, "reduce_parent", op[1] % next_pid, op[2], now)
        elif kind == "venue":
            for r in routers:
                r.set_open(op[1], op[2])
        elif kind == "shift":
            step = max(-now, op[1])
            now += step
            for r in routers:
                r.shift_clock(step)
        for pid in pids:
            assert cy.parent(pid) == ref.parent(pid)
            assert cy.live_children(pid) == ref.live_children(pid)
        assert cy.next_wakeup(now) == ref.next_wakeup(now)
        assert 0 <= cy.n_parked <= cy.n_active == ref.n_active
        done = cy.drain_finished()["parent_id"].tolist()
        assert done == ref.drain_finished()["parent_id"].tolist()
        pids = [pid for pid in pids if pid not in done]
