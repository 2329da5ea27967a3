"""Property tests: the Cython book against the pure-Python reference.

Random streams of adds (every type, time in force, STP mode, post-only),
cancels, replaces, end-of-day expiries, mass cancels by account and rebuilds from
the snapshot go through both books (and batches of every operation kind through
the batch API); after every step the fills, events, depth and L3 snapshot must be
identical, and the invariants hold: never crossed at rest, every order's quantity conserved
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


def check_step(fast, ref, op, filled, ordered):
    """Compare one step's output and state of both books, and check the invariants."""
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
    bids, asks = fast.depth(1000)
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


@given(operations)
def test_cython_book_equals_reference_and_keeps_invariants(ops):
    fast, ref = OrderBook("P", capacity=2), ReferenceBook("P")
    filled = defaultdict(int)       # order id -> lots filled (this incarnation)
    ordered = {}                    # order id -> current order qty
    for ts, op in enumerate(ops):
        assert run(fast, op, ts) == run(ref, op, ts), op
        check_step(fast, ref, op, filled, ordered)


# A wider stream: mass cancels by account (negative accounts included: any int64 is
# an account), an exact rebuild of the Cython book from its snapshot in mid-stream
# (it must then go on exactly as the reference), a price band wide enough for more
# than the 8 levels the level search scans before it bisects, quantities near
# 2**63-1 (level totals, FOK sums), and every default STP mode of the book.
BIG = (1 << 63) - 1
wide_prices = st.one_of(st.integers(70, 130), st.integers(1, 3), st.just(BIG))
wide_qtys = st.one_of(st.integers(1, 30), st.integers(BIG - 40, BIG),
                      st.integers(BIG // 2 - 5, BIG // 2 + 5))
accounts = st.integers(-2, 3)
wide_add = st.tuples(
    st.just("add"), st.integers(1, 60), sides, wide_prices, wide_qtys, accounts,
    st.sampled_from([OrdType.LIMIT] * 4 + [OrdType.MARKET]),
    st.sampled_from([T.GTC, T.GTC, T.DAY, T.IOC, T.FOK]),
    st.sampled_from([False, False, False, True]),
    st.sampled_from([-1, StpMode.STP_NONE, StpMode.CANCEL_NEWEST, StpMode.CANCEL_OLDEST,
                     StpMode.CANCEL_BOTH]),
)
wide_operations = st.lists(st.one_of(
    wide_add, wide_add, wide_add, st.tuples(st.just("cancel"), st.integers(1, 60)),
    st.tuples(st.just("replace"), st.integers(1, 60), wide_prices,
              st.one_of(st.integers(-1, 40), wide_qtys)),
    expire_op, st.tuples(st.just("cancel_account"), accounts), st.tuples(st.just("rebuild")),
), min_size=1, max_size=150)


@given(wide_operations, st.sampled_from(list(StpMode)))
def test_mass_cancels_rebuilds_and_extreme_values_equal_the_reference(ops, default_stp):
    fast = OrderBook("P", capacity=2, stp=default_stp)
    ref = ReferenceBook("P", stp=default_stp)
    filled, ordered = defaultdict(int), {}
    for ts, op in enumerate(ops):
        if op[0] == "rebuild":
            fast = OrderBook.from_snapshot(fast.snapshot(), seq=fast.seq, stp=default_stp)
        elif op[0] == "cancel_account":
            assert fast.cancel_account(op[1], ts=ts) == ref.cancel_account(op[1], ts=ts), op
        else:
            assert run(fast, op, ts) == run(ref, op, ts), op
        check_step(fast, ref, op, filled, ordered)
        assert [oid in fast for oid in range(1, 61)] == [oid in ref for oid in range(1, 61)]


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


@given(st.lists(st.one_of(wide_add, wide_add, st.tuples(st.just("cancel"), st.integers(1, 60)),
                          st.tuples(st.just("replace"), st.integers(1, 60), wide_prices,
                                    st.one_of(st.integers(-1, 40), wide_qtys))),
                min_size=1, max_size=150))
def test_batch_of_every_op_kind_equals_per_call_and_reference(stream):
    from ext.book import OP_ADD, OP_CANCEL, OP_DTYPE, OP_REPLACE, STP_DEFAULT
    ops = np.zeros(len(stream), dtype=OP_DTYPE)
    for ts, op in enumerate(stream):
        if op[0] == "add":
            _, oid, side, px, q, acct, ot, tif, po, stp = op
            ops[ts] = (OP_ADD, side, ot, tif, int(po), STP_DEFAULT if stp < 0 else stp, b"",
                       oid, acct, px, q, ts)
        elif op[0] == "cancel":
            ops[ts] = (OP_CANCEL, 0, 0, 0, 0, 0, b"", op[1], 0, 0, 0, ts)
        else:
            ops[ts] = (OP_REPLACE, 0, 0, 0, 0, 0, b"", op[1], 0, op[2], op[3], ts)
    batch, single, ref = OrderBook(), OrderBook(), ReferenceBook()
    res, ref_res = np.zeros(len(ops), dtype=np.uint16), np.zeros(len(ops), dtype=np.uint16)
    out = batch.apply(ops, res, keep_events=True)
    ref_out = ref.apply(ops, ref_res, keep_events=True)
    expected = [run(single, op, ts) for ts, op in enumerate(stream)]
    assert res.tolist() == expected == ref_res.tolist()
    assert out.tolist() == single.drain_fills().tolist() == ref_out.tolist()
    assert batch.drain_events().tolist() == single.drain_events().tolist() \
        == ref.drain_events().tolist()
    assert batch.snapshot().tolist() == single.snapshot().tolist() == ref.snapshot().tolist()
    assert batch.seq == single.seq == ref.seq
