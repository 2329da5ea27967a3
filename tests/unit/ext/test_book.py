"""Unit tests of the order book rules, with exact expected fills and events.

Every test runs against both the Cython book and the pure-Python reference
(the ``book`` fixture is parametrized), so the rules are pinned down twice.
"""
import importlib.machinery

import numpy as np
import pytest

import ext.book
from ext.book import (
    EVENT_DTYPE, FILL_DTYPE, FLAG_POST_ONLY, OP_ADD, OP_CANCEL, OP_DTYPE, OP_REPLACE, OrderBook,
    STP_DEFAULT,
)
from ext.types import CancelReason as C
from ext.types import EventKind as E
from ext.types import OrdType, RejectReason as R, Side, StpMode, TimeInForce as T
from tests.reference.book_reference import ReferenceBook

BUY, SELL = Side.BUY, Side.SELL


@pytest.fixture(params=["cython", "reference"])
def book(request):
    return OrderBook("TEST") if request.param == "cython" else ReferenceBook("TEST")


def fills(book):
    """Fills as (maker_id, taker_id, price, qty, maker_leaves, taker_leaves, aggressor)."""
    f = book.drain_fills()
    return [(int(r["maker_id"]), int(r["taker_id"]), int(r["price"]), int(r["qty"]),
             int(r["maker_leaves"]), int(r["taker_leaves"]), int(r["aggressor_side"])) for r in f]


def events(book):
    """Events as (kind, order_id, leaves, cum, reason)."""
    ev = book.drain_events()
    return [(int(r["kind"]), int(r["order_id"]), int(r["leaves_qty"]), int(r["cum_qty"]),
             int(r["reason"])) for r in ev]


def test_extension_is_compiled():
    # The tests must exercise the compiled core, never a stray .py shadow.
    assert isinstance(ext.book.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert FILL_DTYPE.itemsize == 88 and EVENT_DTYPE.itemsize == 72 and OP_DTYPE.itemsize == 48


def test_limit_rests_then_partial_fill_at_maker_price(book):
    assert book.add(1, SELL, 101, 100, account=1) == 0
    assert book.add(2, BUY, 102, 40, account=2) == 0
    assert fills(book) == [(1, 2, 101, 40, 60, 0, BUY)]
    assert book.bbo() == (0, 0, 101, 60)
    assert book.order(1)["leaves_qty"] == 60 and book.order(1)["cum_qty"] == 40
    assert 2 not in book


def test_price_time_priority_across_levels(book):
    book.add(1, SELL, 101, 10, account=1)
    book.add(2, SELL, 100, 10, account=1)
    book.add(3, SELL, 100, 10, account=3)
    book.add(4, SELL, 102, 10, account=1)
    book.drain_fills()
    assert book.add(5, BUY, 101, 25, account=2) == 0
    # Best price first (100), oldest first within it (2 before 3), then 101.
    assert fills(book) == [(2, 5, 100, 10, 0, 15, BUY), (3, 5, 100, 10, 0, 5, BUY),
                           (1, 5, 101, 5, 5, 0, BUY)]
    assert book.bbo() == (0, 0, 101, 5)


def test_queue_position_behind_existing_quantity(book):
    book.add(1, BUY, 100, 30, account=1)
    book.add(2, BUY, 100, 10, account=2)
    book.add(3, SELL, 100, 35, account=3)
    assert fills(book) == [(1, 3, 100, 30, 0, 5, SELL), (2, 3, 100, 5, 5, 0, SELL)]


def test_market_order_sweeps_and_cancels_remainder(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, SELL, 105, 10, account=1)
    book.drain_events()
    assert book.add(3, BUY, 0, 25, account=2, ord_type=OrdType.MARKET) == 0
    assert fills(book) == [(1, 3, 100, 10, 0, 15, BUY), (2, 3, 105, 10, 0, 5, BUY)]
    assert events(book) == [(E.EV_ACCEPTED, 3, 25, 0, 0),
                            (E.EV_CANCELED, 3, 0, 20, C.CXL_IOC_REMAINDER)]
    assert len(book) == 0


def test_ioc_never_rests(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, BUY, 101, 15, account=2, tif=T.IOC)
    assert fills(book) == [(1, 2, 100, 10, 0, 5, BUY)]
    assert book.bbo() == (0, 0, 0, 0)
    assert events(book)[-1] == (E.EV_CANCELED, 2, 0, 10, C.CXL_IOC_REMAINDER)


def test_fok_all_or_nothing(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, SELL, 101, 10, account=1)
    book.drain_events()
    assert book.add(3, BUY, 101, 21, account=2, tif=T.FOK) == 0
    assert fills(book) == []
    assert events(book) == [(E.EV_ACCEPTED, 3, 21, 0, 0),
                            (E.EV_CANCELED, 3, 0, 0, C.CXL_FOK_UNFILLABLE)]
    assert book.add(4, BUY, 101, 20, account=2, tif=T.FOK) == 0
    assert fills(book) == [(1, 4, 100, 10, 0, 10, BUY), (2, 4, 101, 10, 0, 0, BUY)]


def test_fok_respects_limit_price(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, SELL, 102, 10, account=1)
    assert book.add(3, BUY, 101, 20, account=2, tif=T.FOK) == 0
    assert fills(book) == []
    assert len(book) == 2


def test_day_orders_expire_gtc_stay(book):
    book.add(1, BUY, 100, 10, account=1, tif=T.DAY)
    book.add(2, BUY, 99, 10, account=1, tif=T.GTC)
    book.drain_events()
    assert book.expire_day(ts=7) == 1
    assert events(book) == [(E.EV_EXPIRED, 1, 0, 0, C.CXL_END_OF_DAY)]
    assert book.bbo() == (99, 10, 0, 0)


def test_post_only_rejected_when_crossing_not_slid(book):
    book.add(1, SELL, 100, 10, account=1)
    book.drain_events()
    assert book.add(2, BUY, 100, 5, account=2, post_only=True) == R.POST_ONLY_WOULD_CROSS
    assert events(book) == [(E.EV_REJECTED, 2, 0, 0, R.POST_ONLY_WOULD_CROSS)]
    assert book.add(3, BUY, 99, 5, account=2, post_only=True) == 0
    assert book.bbo() == (99, 5, 100, 10)
    assert book.add(4, BUY, 98, 5, account=2, post_only=True, tif=T.IOC) == R.INVALID_TIF


def test_cancel_and_unknown_ids(book):
    book.add(1, BUY, 100, 10, account=1)
    book.drain_events()
    assert book.cancel(1, ts=5) == 0
    assert events(book) == [(E.EV_CANCELED, 1, 0, 0, C.CXL_USER)]
    assert book.cancel(1) == R.UNKNOWN_ORDER
    assert book.cancel(-3) == R.UNKNOWN_ORDER
    assert book.replace(99, 100, 10) == R.UNKNOWN_ORDER
    assert book.bbo() == (0, 0, 0, 0) and len(book) == 0


@pytest.mark.parametrize("order_id, side, price, qty, kw, reason", [
    (0, BUY, 100, 10, {}, R.INVALID_ORDER_ID),
    (-1, BUY, 100, 10, {}, R.INVALID_ORDER_ID),
    (5, 9, 100, 10, {}, R.INVALID_SIDE),
    (5, BUY, 100, 0, {}, R.INVALID_QTY),
    (5, BUY, 100, -4, {}, R.INVALID_QTY),
    (5, BUY, 0, 10, {}, R.INVALID_PRICE),
    (5, BUY, -100, 10, {}, R.INVALID_PRICE),
    (5, BUY, 100, 10, {"ord_type": 7}, R.INVALID_ORD_TYPE),
    (5, BUY, 100, 10, {"tif": 9}, R.INVALID_TIF),
    (5, BUY, 100, 10, {"stp": 9}, R.INVALID_STP_MODE),
    (5, BUY, 0, 10, {"ord_type": OrdType.MARKET, "post_only": True}, R.INVALID_ORD_TYPE),
])
def test_bad_input_rejected_book_unchanged(book, order_id, side, price, qty, kw, reason):
    book.add(1, SELL, 105, 10, account=1)
    before = book.snapshot().tolist(), book.bbo()
    assert book.add(order_id, side, price, qty, account=2, **kw) == reason
    assert (book.snapshot().tolist(), book.bbo()) == before
    assert events(book)[-1] == (E.EV_REJECTED, order_id, 0, 0, reason)


def test_duplicate_live_id_rejected_but_reusable_after_done(book):
    book.add(1, BUY, 100, 10, account=1)
    assert book.add(1, BUY, 101, 10, account=1) == R.DUPLICATE_ORDER_ID
    assert book.bbo() == (100, 10, 0, 0)
    book.cancel(1)
    assert book.add(1, BUY, 101, 10, account=1) == 0


def test_amend_down_keeps_priority(book):
    book.add(1, BUY, 100, 10, account=1)
    book.add(2, BUY, 100, 10, account=2)
    assert book.replace(1, 100, 6) == 0
    book.add(3, SELL, 100, 8, account=3)
    assert fills(book) == [(1, 3, 100, 6, 0, 2, SELL), (2, 3, 100, 2, 8, 0, SELL)]


def test_amend_up_loses_priority(book):
    book.add(1, BUY, 100, 10, account=1)
    book.add(2, BUY, 100, 10, account=2)
    assert book.replace(1, 100, 12) == 0
    book.add(3, SELL, 100, 15, account=3)
    assert fills(book) == [(2, 3, 100, 10, 0, 5, SELL), (1, 3, 100, 5, 7, 0, SELL)]


def test_price_change_loses_priority_and_can_trade(book):
    book.add(1, BUY, 100, 10, account=1)
    book.add(2, SELL, 102, 4, account=2)
    book.drain_events()
    assert book.replace(1, 102, 10, ts=9) == 0
    assert fills(book) == [(2, 1, 102, 4, 0, 6, BUY)]
    assert events(book)[0] == (E.EV_REPLACED, 1, 10, 0, 0)
    assert book.bbo() == (102, 6, 0, 0)


def test_replace_keeps_fills_counted(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, BUY, 100, 4, account=2)
    assert book.replace(1, 100, 4) == R.REPLACE_QTY_NOT_ABOVE_FILLED
    assert book.replace(1, 101, 0) == R.INVALID_QTY
    assert book.replace(1, 0, 8) == R.INVALID_PRICE
    assert book.replace(1, 101, 8) == 0
    assert book.order(1) | {"ts": 0} == {
        "order_id": 1, "account": 1, "side": SELL, "price": 101, "qty": 8, "leaves_qty": 4,
        "cum_qty": 4, "tif": T.GTC, "post_only": False, "stp": StpMode.CANCEL_NEWEST, "ts": 0}


def test_post_only_replace_that_would_cross_is_refused(book):
    book.add(1, SELL, 102, 10, account=1)
    book.add(2, BUY, 100, 10, account=2, post_only=True)
    assert book.replace(2, 102, 10) == R.POST_ONLY_WOULD_CROSS
    assert book.bbo() == (100, 10, 102, 10)


def test_stp_cancel_newest(book):
    book.add(1, SELL, 100, 10, account=7)
    book.add(2, SELL, 101, 10, account=8)
    book.drain_events()
    book.add(3, BUY, 101, 15, account=7, stp=StpMode.CANCEL_NEWEST)
    assert fills(book) == []
    assert events(book) == [(E.EV_ACCEPTED, 3, 15, 0, 0),
                            (E.EV_CANCELED, 3, 0, 0, C.CXL_SELF_TRADE)]
    assert book.bbo() == (0, 0, 100, 10)


def test_stp_cancel_oldest_keeps_matching(book):
    book.add(1, SELL, 100, 10, account=7)
    book.add(2, SELL, 101, 10, account=8)
    book.drain_events()
    book.add(3, BUY, 101, 15, account=7, stp=StpMode.CANCEL_OLDEST)
    assert fills(book) == [(2, 3, 101, 10, 0, 5, BUY)]
    assert events(book)[:2] == [(E.EV_ACCEPTED, 3, 15, 0, 0),
                                (E.EV_CANCELED, 1, 0, 0, C.CXL_SELF_TRADE)]
    assert book.bbo() == (101, 5, 0, 0)


def test_stp_cancel_both(book):
    book.add(1, SELL, 100, 4, account=8)
    book.add(2, SELL, 100, 10, account=7)
    book.add(3, SELL, 100, 10, account=8)
    book.drain_events()
    book.add(4, BUY, 100, 15, account=7, stp=StpMode.CANCEL_BOTH)
    assert fills(book) == [(1, 4, 100, 4, 0, 11, BUY)]
    assert events(book)[1:] == [(E.EV_CANCELED, 2, 0, 0, C.CXL_SELF_TRADE),
                                (E.EV_CANCELED, 4, 0, 4, C.CXL_SELF_TRADE)]
    assert book.bbo() == (0, 0, 100, 10)


def test_stp_none_allows_self_trade(book):
    book.add(1, SELL, 100, 10, account=7)
    book.add(2, BUY, 100, 10, account=7, stp=StpMode.STP_NONE)
    assert fills(book) == [(1, 2, 100, 10, 0, 0, BUY)]


def test_fok_with_stp_counts_only_other_accounts(book):
    book.add(1, SELL, 100, 10, account=7)
    book.add(2, SELL, 100, 10, account=8)
    assert book.add(3, BUY, 100, 15, account=7, tif=T.FOK, stp=StpMode.CANCEL_OLDEST) == 0
    assert fills(book) == []  # only 10 lots from other accounts: killed whole
    assert book.add(4, BUY, 100, 10, account=7, tif=T.FOK, stp=StpMode.CANCEL_OLDEST) == 0
    assert fills(book) == [(2, 4, 100, 10, 0, 0, BUY)]
    assert len(book) == 0  # own order 1 canceled by STP on the way


def test_sequence_numbers_monotonic_and_shared(book):
    book.add(1, SELL, 100, 10, account=1)
    book.add(2, BUY, 100, 4, account=2)
    f, ev = book.drain_fills(), book.drain_events()
    seqs = sorted(list(f["seq"]) + list(ev["seq"]))
    assert seqs == list(range(1, len(seqs) + 1))
    assert list(ev["seq"]) == sorted(ev["seq"])


def test_cancel_account_mass_cancels_only_that_account(book):
    book.add(1, BUY, 100, 10, account=1)
    book.add(2, BUY, 99, 10, account=2)
    book.add(3, SELL, 105, 10, account=1)
    assert book.cancel_account(1) == 2
    assert [int(r["order_id"]) for r in book.snapshot()] == [2]


def test_cancel_account_of_a_negative_account_cancels_only_that_account(book):
    # Accounts are any int64: a negative one is an account like any other, not
    # "every account" (the Cython book's mass cancel took account < 0 as that and
    # canceled every order in the book).
    book.add(1, BUY, 100, 10, account=0)
    book.add(2, BUY, 99, 10, account=-1)
    book.add(3, SELL, 105, 10, account=7)
    book.add(4, SELL, 106, 10, account=-1)
    book.drain_events()
    assert book.cancel_account(-1) == 2
    assert [int(r["order_id"]) for r in book.snapshot()] == [1, 3]
    assert [(k, oid, reason) for k, oid, _, _, reason in events(book)] == [
        (E.EV_CANCELED, 2, C.CXL_MASS_CANCEL), (E.EV_CANCELED, 4, C.CXL_MASS_CANCEL)]
    assert book.cancel_account(-2) == 0 and len(book) == 2


def test_depth_and_snapshot_round_trip(book):
    for i, (side, px, q) in enumerate([(BUY, 100, 5), (BUY, 100, 7), (BUY, 98, 1),
                                       (SELL, 103, 2), (SELL, 101, 9)], start=1):
        book.add(i, side, px, q, account=i, ts=i)
    bids, asks = book.depth(5)
    assert bids.tolist() == [(100, 12, 2), (98, 1, 1)]
    assert asks.tolist() == [(101, 9, 1), (103, 2, 1)]
    assert book.depth(1)[0].tolist() == [(100, 12, 2)]
    snap = book.snapshot()
    assert [int(x) for x in snap["order_id"]] == [1, 2, 3, 5, 4]
    clone = OrderBook.from_snapshot(snap, seq=book.seq)
    assert clone.snapshot().tolist() == snap.tolist() and clone.seq == book.seq
    # Identical future behaviour, including queue position inside a level.
    for b in (book, clone):
        b.drain_fills()
        b.add(10, SELL, 98, 13, account=99)
    assert clone.drain_fills().tolist() == book.drain_fills().tolist()


def test_from_snapshot_rejects_bad_snapshots():
    book = OrderBook()
    book.add(1, BUY, 100, 5)
    book.add(2, SELL, 101, 5)
    snap = book.snapshot()
    crossed = snap.copy()
    crossed["price"][1] = 99
    with pytest.raises(ValueError, match="crossed"):
        OrderBook.from_snapshot(crossed)
    dup = snap.copy()
    dup["order_id"][1] = 1
    with pytest.raises(ValueError, match="duplicate"):
        OrderBook.from_snapshot(dup)


def test_from_snapshot_rejects_rows_that_cannot_rest():
    book = OrderBook()
    book.add(1, BUY, 100, 5)
    book.add(2, SELL, 101, 5)
    snap = book.snapshot()
    for field, value, message in [("tif", T.IOC, "order 1: tif 3 cannot rest"),
                                  ("tif", T.FOK, "order 1: tif 4 cannot rest"),
                                  ("stp", 9, "order 1: unknown stp mode 9"),
                                  ("flags", 4, "order 1: unknown flags 4")]:
        bad = snap.copy()
        bad[field][0] = value
        with pytest.raises(ValueError, match=message):
            OrderBook.from_snapshot(bad)
    big = snap.copy()
    big["qty"] = big["leaves_qty"] = 1 << 62
    huge = np.concatenate([big, big])
    huge["order_id"] = [1, 2, 3, 4]
    huge["side"] = [BUY, BUY, SELL, SELL]
    huge["price"] = [100, 100, 101, 101]
    with pytest.raises(ValueError, match="order 2: the level at price 100 would hold more"):
        OrderBook.from_snapshot(huge)


# ---------------------------------------------------------------- level totals
HALF = 1 << 62
INT64_MAX = (1 << 63) - 1


def test_order_that_would_overflow_its_level_total_is_rejected(book):
    """Level totals (depth, bbo) are int64: an order that cannot rest in full is refused."""
    assert book.add(1, SELL, 100, HALF, account=1) == 0
    book.drain_events()
    assert book.add(2, SELL, 100, HALF, account=1, ts=5) == R.VALUE_OUT_OF_RANGE
    assert events(book) == [(E.EV_REJECTED, 2, 0, 0, R.VALUE_OUT_OF_RANGE)]
    assert book.bbo() == (0, 0, 100, HALF) and 2 not in book
    assert book.add(3, SELL, 100, HALF - 1, account=1) == 0      # exactly INT64_MAX in total
    assert book.bbo() == (0, 0, 100, INT64_MAX)
    assert book.add(4, SELL, 101, HALF, account=1) == 0          # another level: its own total
    # An order that cannot rest never adds to a level: an IOC of any size is fine.
    assert book.add(5, SELL, 100, HALF, account=1, tif=T.IOC) == 0
    assert book.bbo() == (0, 0, 100, INT64_MAX)


def test_replace_that_would_overflow_its_level_total_is_refused(book):
    assert book.add(1, SELL, 100, HALF, account=1) == 0
    assert book.add(2, SELL, 101, HALF, account=1) == 0
    book.drain_events()
    assert book.replace(2, 100, HALF) == R.VALUE_OUT_OF_RANGE   # onto the full level
    assert book.replace(1, 100, INT64_MAX) == 0                 # its own lots leave first
    assert book.replace(2, 101, HALF + 1) == 0
    assert book.replace(2, 100, 1) == R.VALUE_OUT_OF_RANGE
    assert [int(x) for x in (book.order(1)["qty"], book.order(2)["qty"])] == [INT64_MAX, HALF + 1]
    assert book.depth()[1].tolist() == [(100, INT64_MAX, 1), (101, HALF + 1, 1)]


@pytest.mark.parametrize("stp", [StpMode.STP_NONE, StpMode.CANCEL_NEWEST])
def test_fok_counts_huge_levels_without_overflow(book, stp):
    """Two levels of 2**62 hold 2**63 lots: a FOK for 2**63-1 is fillable."""
    assert book.add(1, SELL, 100, HALF, account=1) == 0
    assert book.add(2, SELL, 101, HALF, account=1) == 0
    assert book.add(3, BUY, 101, INT64_MAX, account=2, tif=T.FOK, stp=stp) == 0
    assert [(f[0], f[3]) for f in fills(book)] == [(1, HALF), (2, HALF - 1)]
    assert book.bbo() == (0, 0, 101, 1)


def test_batch_api_matches_per_call(book):
    ops = np.zeros(6, dtype=OP_DTYPE)
    rows = [(OP_ADD, SELL, 100, 10, 1), (OP_ADD, SELL, 101, 10, 2), (OP_ADD, BUY, 101, 15, 3),
            (OP_CANCEL, 0, 0, 0, 2), (OP_CANCEL, 0, 0, 0, 2), (OP_REPLACE, BUY, 99, 4, 77)]
    for i, (op, side, px, q, oid) in enumerate(rows):
        ops[i] = (op, side, OrdType.LIMIT, T.GTC, 0, STP_DEFAULT, b"", oid, oid, px, q, i)
    results = np.zeros(6, dtype=np.uint16)
    out = book.apply(ops, results)
    assert results.tolist() == [0, 0, 0, 0, R.UNKNOWN_ORDER, R.UNKNOWN_ORDER]
    assert [(int(r["maker_id"]), int(r["taker_id"]), int(r["qty"])) for r in out] == \
        [(1, 3, 10), (2, 3, 5)]
    assert len(book.drain_events()) == 0  # not kept by default
    assert book.bbo() == (0, 0, 0, 0)


def test_batch_add_with_an_unknown_flag_bit_is_rejected(book):
    # Only FLAG_POST_ONLY exists. Stored, another bit made the book's own snapshot
    # one that from_snapshot refuses ("unknown flags"): no exact rebuild.
    ops = np.zeros(2, dtype=OP_DTYPE)
    ops[0] = (OP_ADD, BUY, OrdType.LIMIT, T.GTC, 6, STP_DEFAULT, b"", 1, 1, 100, 5, 0)
    ops[1] = (OP_ADD, BUY, OrdType.LIMIT, T.GTC, FLAG_POST_ONLY, STP_DEFAULT, b"", 2, 1, 99, 5, 0)
    res = np.zeros(2, dtype=np.uint16)
    book.apply(ops, res, keep_events=True)
    assert res.tolist() == [R.INVALID_ORD_TYPE, 0]
    assert [(k, oid, reason) for k, oid, _, _, reason in events(book)] == [
        (E.EV_REJECTED, 1, R.INVALID_ORD_TYPE), (E.EV_ACCEPTED, 2, 0)]
    assert 1 not in book and len(book) == 1
    clone = OrderBook.from_snapshot(book.snapshot(), seq=book.seq)
    assert clone.snapshot().tolist() == book.snapshot().tolist()


def test_batch_rejects_wrong_dtype():
    with pytest.raises(TypeError):
        OrderBook().apply(np.zeros(3, dtype=np.int64))
    ops = np.zeros(4, dtype=OP_DTYPE)
    with pytest.raises(ValueError):
        OrderBook().apply(ops[::2])
    with pytest.raises(ValueError):
        OrderBook().apply(ops, np.zeros(3, dtype=np.uint16))


def test_memory_reused_and_grows():
    book = OrderBook(capacity=4)
    for round_ in range(3):
        for i in range(1, 1001):
            assert book.add(round_ * 10_000 + i, BUY, 1000 - i % 50, 1, account=1) == 0
        assert len(book) == 1000
        for i in range(1, 1001):
            assert book.cancel(round_ * 10_000 + i) == 0
        assert len(book) == 0 and book.bbo() == (0, 0, 0, 0)
    book.drain_events()



def test_id_hash_with_colliding_ids_wrapping_the_table():
    # Every id here lands on one of the last two or first two slots of the book's
    # 16-slot id table (ext/idmap.pxd's hash, copied), so the probe runs wrap
    # around its end and every cancel's backward-shift delete moves entries across
    # the wrap. At most 7 orders rest, so the table never grows out of the collisions.
    def home(key):
        x = (key * 0x9E3779B97F4A7C15) & (2**64 - 1)
        return (x ^ (x >> 29)) & 15
    ids = [k for k in range(1, 5000) if home(k) in (14, 15, 0, 1)][:40]
    assert len(ids) == 40
    rng = np.random.default_rng(7)
    book, live = OrderBook(capacity=8), set()
    for step in range(3000):
        if live and (len(live) == 7 or rng.random() < 0.5):
            oid = int(rng.choice(sorted(live)))
            assert book.cancel(oid) == 0
            live.discard(oid)
        else:
            oid = int(rng.choice(ids))
            assert book.add(oid, BUY, 100 + len(live), 1) == (R.DUPLICATE_ORDER_ID if oid in live
                                                              else 0)
            live.add(oid)
        assert [k in book for k in ids] == [k in live for k in ids], step
    assert sorted(int(x) for x in book.snapshot()["order_id"]) == sorted(live)

# ---------------------------------------------------------------- numbers that are not integers
def test_a_float_or_decimal_is_refused_never_truncated(book):
    """add(2, BUY, 100.9, 5.7) rested 5 lots at 100; cancel(2.5) canceled order 2 (audit)."""
    from decimal import Decimal
    assert book.add(2, BUY, 100, 5) == 0
    for call in (lambda: book.add(3, BUY, 100.9, 5), lambda: book.add(3, BUY, 100, 5.7),
                 lambda: book.add(3.7, BUY, 100, 5), lambda: book.add(3, BUY, Decimal("101.5"), 5),
                 lambda: book.add(3, 1.0, 100, 5), lambda: book.cancel(2.5),
                 lambda: book.replace(2, 100.5, 5), lambda: book.replace(2, 100, 4.5)):
        with pytest.raises(TypeError):
            call()
    assert book.bbo() == (100, 5, 0, 0) and len(book) == 1 and book.order(2)["qty"] == 5
    # numpy integers are integers
    assert book.add(np.int64(4), np.int32(BUY), np.int64(99), np.uint16(7)) == 0
    assert book.cancel(np.int64(4)) == 0


@pytest.mark.parametrize("field", ["side", "ord_type", "tif", "stp"])
@pytest.mark.parametrize("value", [2**70, 2**64, 2**40, -2**70, 2**31, -2**31 - 1])
def test_an_enum_far_out_of_range_is_a_value_error_naming_it(book, field, value):
    """add(1, 2**70, ...) raised Cython's OverflowError "Python int too large to convert to C
    long", naming no argument (review); within a C int an unknown value stays a reject code."""
    args = {"side": BUY, "ord_type": int(OrdType.LIMIT), "tif": int(T.GTC), "stp": -1}
    args[field] = value
    with pytest.raises(ValueError, match=f"^{field} {value} is out of range"):
        book.add(1, args.pop("side"), 100, 5, **args)
    assert len(book) == 0 and book.seq == 0
    assert book.add(1, 99, 100, 5) == R.INVALID_SIDE


@pytest.mark.parametrize("make", [OrderBook, ReferenceBook], ids=["cython", "reference"])
def test_the_default_stp_mode_is_an_integer_within_range(make):
    """OrderBook("X", stp=1.7) made a CANCEL_NEWEST book, in silence (review)."""
    for stp in (1.7, "1", None):
        with pytest.raises(TypeError, match="^stp must be an integer"):
            make("X", stp=stp)
    for stp in (2**70, 4, -1):
        with pytest.raises(ValueError):
            make("X", stp=stp)
    # numpy integers and bools are integers, as operator.index has it (True is CANCEL_NEWEST)
    for stp, own_trade in ((np.int8(int(StpMode.STP_NONE)), 1), (True, 0)):
        b = make("X", stp=stp)
        assert b.add(1, BUY, 100, 5, account=3) == 0 and b.add(2, SELL, 100, 5, account=3) == 0
        assert len(b.drain_fills()) == own_trade


def test_from_snapshot_and_the_mass_cancels_refuse_a_float():
    """from_snapshot(stp=1.5), cancel_account(7.9) (cancels account 7) and expire_day(ts=1.5)
    truncated the float (review)."""
    book = OrderBook("X")
    assert book.add(1, BUY, 100, 5, account=7) == 0
    for call in (lambda: OrderBook.from_snapshot(book.snapshot(), stp=1.5),
                 lambda: OrderBook.from_snapshot(book.snapshot(), seq=1.5),
                 lambda: book.cancel_account(7.9), lambda: book.expire_day(1.5)):
        with pytest.raises(TypeError):
            call()
    assert len(book) == 1


@pytest.mark.parametrize("make", [OrderBook, ReferenceBook], ids=["cython", "reference"])
def test_depth_refuses_a_float_level_count_naming_it(make):
    """depth(n=2.7) raised "'float' object cannot be interpreted as an integer" and
    depth(2**64) an OverflowError, naming no argument (review); any int64 is a count."""
    b = make("X")
    for k in range(3):
        assert b.add(k + 1, BUY, 100 - k, 5) == 0
    for n in (2.7, 2.0, "2", None):
        with pytest.raises(TypeError, match="^n must be an integer, not "):
            b.depth(n)
    for n in (2**64, 2**63, -2**63 - 1):
        with pytest.raises(ValueError, match=f"^n {n} is out of range"):
            b.depth(n=n)
    assert [len(side) for side in b.depth(np.int8(2))] == [2, 0]
    assert [len(side) for side in b.depth(2**63 - 1)] == [3, 0]
    assert [len(side) for side in b.depth(-2**63)] == [0, 0]


def test_an_enum_float_names_the_field(book):
    for field in ("side", "ord_type", "tif", "stp"):
        args = {"side": BUY, "ord_type": int(OrdType.LIMIT), "tif": int(T.GTC), "stp": -1}
        args[field] = 1.5
        with pytest.raises(TypeError, match=f"^{field} must be an integer, not float"):
            book.add(1, args.pop("side"), 100, 5, **args)


def test_an_stp_mode_below_the_default_marker_is_unknown(book):
    assert book.add(1, BUY, 100, 5, stp=-2) == R.INVALID_STP_MODE
    assert book.add(1, BUY, 100, 5, stp=-100) == R.INVALID_STP_MODE
    assert len(book) == 0
    assert book.add(1, BUY, 100, 5, stp=-1) == 0          # the book's default


def test_apply_refuses_an_array_that_is_not_one_dimensional():
    b = OrderBook("TEST")
    ops = np.zeros((2, 2), dtype=OP_DTYPE)
    with pytest.raises(ValueError, match="one-dimensional"):
        b.apply(ops)


def test_the_docs_example_runs_and_prints_what_its_comments_say(capsys):
    """docs/book.md's opening example: each print's output is the comment at the end of it."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).parents[3] / "docs" / "book.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    expected, depth = [], 0
    for line in example.splitlines():
        code, _, comment = line.partition("#")
        if "print(" in code or depth:
            depth += code.count("(") - code.count(")")
            if depth == 0:
                expected.append(comment.strip())
    exec(compile(example, "docs/book.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == expected
    assert len(expected) == 2
