"""Property tests: the Cython book against the pure-Python reference.

Random streams of adds (every type, time in force, STP mode, post-only),
cancels, replaces and end-of-day expiries go through both books; after every
step the fills, events, depth and L3 snapshot must be identical, and the
invariants hold: never crossed at rest, every order's quantity conserved
(filled + resting + canceled == ordered), depth equal to the sum of resting
orders.
"""
from collections import defaultdict

import numpy as np
from hypothesis import given, strategies as st

from ext.book import OrderBook
from ext.types import EventKind as E
from ext.types import OrdType, Side, StpMode, TimeInForce as T
from tests.reference.book_reference import ReferenceBook

sides = st.sampled_from([Side.BUY, Side.SELL, Side.SELL_SHORT])
prices = st.integers(95, 105)
qtys = st.integers(1, 30)
ids = st.integers(1, 40)  # small id space: duplicates and unknown ids happen

add_op = st.tuples(
    st.just("add"), ids, sides, prices, qtys, st.integers(1, 4),
    st.sampled_from([OrdType.LIMIT] * 4 + [OrdType.MARKET]),
    st.sampled_from([T.GTC, T.GTC, T.DAY, T.IOC, T.FOK]),
    st.sampled_from([False, False, False, True]),
    st.sampled_from([-1, StpMode.STP_NONE, StpMode.CANCEL_NEWEST, StpMode.CANCEL_OLDEST,
                     StpMode.CANCEL_BOTH]),
)
cancel_op = st.tuples(st.just("cancel"), ids)
replace_op = st.tuples(st.just("replace"), ids, prices, st.integers(-1, 40))
expire_op = st.tuples(st.just("expire"))
bad_op = st.tuples(st.just("add"), st.integers(-2, 40), st.integers(0, 6), st.integers(-5, 105),
                   st.integers(-3, 30), st.integers(1, 4), st.integers(0, 3), st.integers(0, 5),
                   st.booleans(), st.integers(-1, 4))
operations = st.lists(st.one_of(add_op, add_op, add_op, cancel_op, replace_op, expire_op, bad_op),
                      min_size=1, max_size=120)


def run(book, op, ts):
    kind = op[0]
    if kind == "add":
        _, oid, side, px, q, acct, ot, tif, po, stp = op
        return book.add(oid, side, px, q, account=acct, ord_type=ot, tif=tif, post_only=po,
                        stp=stp, ts=ts)
    if kind == "cancel":
        return book.cancel(op[1], ts=ts)
    if kind == "replace":
        return book.replace(op[1], op[2], op[3], ts=ts)
    return book.expire_day(ts=ts)


@given(operations)
def test_cython_book_equals_reference_and_keeps_invariants(ops):
    fast, ref = OrderBook("P", capacity=2), ReferenceBook("P")
    filled = defaultdict(int)       # order id -> lots filled (this incarnation)
    ordered = {}                    # order id -> current order qty
    for ts, op in enumerate(ops):
        assert run(fast, op, ts) == run(ref, op, ts), op
        f_fast, f_ref = fast.drain_fills(), ref.drain_fills()
        e_fast, e_ref = fast.drain_events(), ref.drain_events()
        assert f_fast.tolist() == f_ref.tolist(), op
        assert e_fast.tolist() == e_ref.tolist(), op
        assert fast.bbo() == ref.bbo()
        assert [a.tolist() for a in fast.depth(20)] == [a.tolist() for a in ref.depth(20)]
        snap = fast.snapshot()
        assert snap.tolist() == ref.snapshot().tolist()
        assert fast.seq == ref.seq and len(fast) == len(ref)

        # Never crossed at rest.
        bid, _, ask, _ = fast.bbo()
        assert not (bid and ask and bid >= ask)
        # Depth is the sum of resting orders' leaves at each price.
        bids, asks = fast.depth(100)
        per_price = defaultdict(int)
        for row in snap:
            per_price[(row["side"] == Side.BUY, int(row["price"]))] += int(row["leaves_qty"])
        assert {(True, int(p)): int(q) for p, q, _ in bids.tolist()} | \
            {(False, int(p)): int(q) for p, q, _ in asks.tolist()} == dict(per_price)

        # Quantity conservation per order.
        for ev in e_fast:
            oid = int(ev["order_id"])
            if ev["kind"] == E.EV_ACCEPTED:
                filled[oid], ordered[oid] = 0, int(ev["qty"])
            elif ev["kind"] == E.EV_REPLACED:
                ordered[oid] = int(ev["qty"])
        for fill in f_fast:
            filled[int(fill["maker_id"])] += int(fill["qty"])
            filled[int(fill["taker_id"])] += int(fill["qty"])
            assert fill["qty"] > 0
        for ev in e_fast:
            if ev["kind"] in (E.EV_CANCELED, E.EV_EXPIRED):
                oid = int(ev["order_id"])
                assert ev["cum_qty"] == filled[oid] <= ordered[oid]
        for row in snap:
            oid = int(row["order_id"])
            assert row["qty"] == ordered[oid]
            assert filled[oid] + row["leaves_qty"] == row["qty"]


@given(st.lists(add_op, min_size=1, max_size=200), st.integers(0, 2**31))
def test_batch_api_equals_per_call(adds, seed):
    from ext.book import OP_ADD, OP_CANCEL, OP_DTYPE, STP_DEFAULT
    rng = np.random.default_rng(seed)
    ops = np.zeros(len(adds) * 2, dtype=OP_DTYPE)
    k = 0
    for ts, (_, oid, side, px, q, acct, ot, tif, po, stp) in enumerate(adds):
        ops[k] = (OP_ADD, side, ot, tif, int(po), STP_DEFAULT if stp < 0 else stp, b"",
                  oid, acct, px, q, ts)
        k += 1
        if rng.random() < 0.3:
            ops[k] = (OP_CANCEL, 0, 0, 0, 0, 0, b"", int(rng.integers(1, 40)), 0, 0, 0, ts)
            k += 1
    ops = ops[:k].copy()
    batch, single = OrderBook(), OrderBook()
    res = np.zeros(k, dtype=np.uint16)
    out = batch.apply(ops, res, keep_events=True)
    expected_res = []
    for row in ops:
        if row["op"] == OP_ADD:
            expected_res.append(single.add(int(row["order_id"]), int(row["side"]), int(row["price"]),
                                           int(row["qty"]), int(row["account"]),
                                           int(row["ord_type"]), int(row["tif"]),
                                           bool(row["flags"]), -1 if row["stp"] == STP_DEFAULT
                                           else int(row["stp"]), int(row["ts"])))
        else:
            expected_res.append(single.cancel(int(row["order_id"]), int(row["ts"])))
    assert res.tolist() == expected_res
    assert out.tolist() == single.drain_fills().tolist()
    assert batch.drain_events().tolist() == single.drain_events().tolist()
