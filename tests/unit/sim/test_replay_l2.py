"""L2 depth replay and synthetic flow alongside a replay.

The depth file sets price levels (a level's new total size per row, rows of
one time and book forming one update); the replay keeps its own orders at
every level, so queue position stays honest. With ``[replay] flow = true``
the synthetic flow runs too, its lit quotes pegged to the replayed mid.
"""
import dataclasses

import numpy as np
import pytest

from ext.book import OP_ADD, OP_DTYPE
from ext.simflow import PEG_MID_FLAG, PEG_UNITS_PER_TICK
from ext.simloop import Liquidity, ReportKind as K
from ext.types import OrdType, Side, StpMode, TimeInForce
from sim.backtest import Backtest
from sim.config import load_config
from sim.market import Market
from sim.replay import (
    DATA_DIR, REPLAY_ID_BASE, ReplayFeed, load_depth, load_trades, record_depth_sample,
    write_tables,
)
from tests.unit.sim.helpers import BUY, GTC, LIMIT, QUIET, SELL, Recorder, add, config

REPLAY = "sim/configs/replay.toml"
REPLAY_L2 = "sim/configs/replay_l2.toml"
MS = 1_000_000


@pytest.fixture(scope="module")
def depth():
    return load_depth(DATA_DIR / "sample_depth.csv")


def test_shipped_depth_sample_loads_the_same_from_csv_and_parquet(depth):
    pq = load_depth(DATA_DIR / "sample_depth.parquet")
    assert len(depth["ts"]) > 1000
    assert np.array_equal(depth["ts"], pq["ts"])
    assert {k: v for k, v in depth.items() if k != "ts"} == {k: v for k, v in pq.items()
                                                              if k != "ts"}
    assert set(depth["side"]) == {"B", "S"} and set(depth["venue"]) == {"NEXA", "BRIX", "COVE"}
    assert "0" in depth["qty"]                            # levels that went away


def test_the_shipped_depth_sample_is_what_the_recorder_writes(depth):
    again = record_depth_sample(load_config())
    assert list(again["ts"]) == list(depth["ts"])
    assert all(again[c] == depth[c] for c in depth if c != "ts")


def test_depth_replay_reproduces_every_recorded_book(depth):
    m = Market(load_config(REPLAY))            # no flow: the books are the file's
    feed = ReplayFeed(m, depth=depth)
    inst = m.instrument("AAA")
    state: dict = {}
    ts = depth["ts"]
    checked = 0
    k = 0
    while k < len(ts):
        t = int(ts[k])
        while k < len(ts) and int(ts[k]) == t:
            key = (depth["venue"][k], depth["side"][k])
            lots = 0 if depth["qty"][k] == "0" else inst.qty_to_lots(depth["qty"][k])
            px = inst.price_to_ticks(depth["price"][k])
            levels = state.setdefault(key, {})
            if lots:
                levels[px] = lots
            else:
                levels.pop(px, None)
            k += 1
        feed.run_until(t)
        for venue in ("NEXA", "BRIX", "COVE"):
            bids, asks = m.depth(venue, "AAA", 10)
            assert [(p, q) for p, q, _ in bids.tolist()] == sorted(
                state.get((venue, "B"), {}).items(), reverse=True)
            assert [(p, q) for p, q, _ in asks.tolist()] == sorted(
                state.get((venue, "S"), {}).items())
        checked += 1
    assert checked > 50 and feed.done and feed.n_depth == len(ts)


def mini(t0, rows):
    cols = ("ts", "venue", "symbol", "side", "price", "qty")
    return {c: [t0 + r[0] if c == "ts" else r[i] for r in rows]
            for i, c in enumerate(cols)}


def test_levels_keep_queue_position_and_updates_apply_decreases_first(tmp_path):
    t0 = load_config(REPLAY).session.start_ns
    depth = mini(t0, [(1_000, "NEXA", "AAA", "B", "50.00", "500"),
                      (1_000, "NEXA", "AAA", "bid", "49.99", "300"),
                      (1_000, "NEXA", "AAA", "S", "50.01", "400"),
                      (5 * MS, "NEXA", "AAA", "B", "50.00", "300"),
                      # one update moving the book up a tick: without the
                      # decreases first, the new bid would trade with the old ask
                      (9 * MS, "NEXA", "AAA", "ask", "50.02", "200"),
                      (9 * MS, "NEXA", "AAA", "B", "50.01", "100"),
                      (9 * MS, "NEXA", "AAA", "S", "50.01", "0")])
    trades = {"ts": [t0 + 6 * MS], "venue": ["NEXA"], "symbol": ["AAA"], "price": ["50.00"],
              "qty": ["350"], "side": [""]}
    write_tables(None, trades, tmp_path, stem="mini", depth=depth)
    m = Market(load_config(REPLAY))
    feed = ReplayFeed(m, trades=load_trades(tmp_path / "mini_trades.csv"),
                      depth=load_depth(tmp_path / "mini_depth.parquet"))
    feed.run_until(t0 + MS)
    assert m.bbo("NEXA", "AAA") == (5000, 500, 5001, 400)
    assert feed.replay_levels(m.book_index("NEXA", "AAA"), BUY) == {4999: 300, 5000: 500}
    rec = Recorder()
    m.submit("NEXA", "AAA", BUY, 100, 5000, LIMIT, GTC, on_report=rec)   # behind the 500
    # The level shrinks to 300: the replay's order is reduced, ours stays behind it.
    feed.run_until(t0 + 5 * MS + 1)
    assert m.bbo("NEXA", "AAA")[:2] == (5000, 400)
    # 350 sold at the bid (side inferred from the levels): 300 replay, then 50 of ours.
    feed.run_until(t0 + 7 * MS)
    fills = [r for r in rec.reports if r.kind == K.RPT_FILL]
    assert [(f.last_qty, f.leaves_qty, f.liquidity) for f in fills] == [
        (50, 50, Liquidity.LIQ_MAKER)]
    feed.run_until(t0 + 10 * MS)
    assert m.bbo("NEXA", "AAA") == (5001, 100, 5002, 200)
    assert len([r for r in rec.reports if r.kind == K.RPT_FILL]) == 1     # nothing crossed
    assert feed.replay_levels(m.book_index("NEXA", "AAA"), SELL) == {5002: 200}
    # Replay ids have their own range (clear of the synthetic flow's).
    order = m.loop.book(m.book_index("NEXA", "AAA")).order(REPLAY_ID_BASE + 2)
    assert (order["price"], order["leaves_qty"]) == (4999, 300)


def test_a_book_in_both_quotes_and_depth_or_an_unknown_side_is_an_error():
    m = Market(load_config(REPLAY))
    quotes = {"ts": [1], "venue": ["NEXA"], "symbol": ["AAA"], "bid_px": ["1"], "bid_qty": ["1"],
              "ask_px": ["2"], "ask_qty": ["1"]}
    depth = mini(0, [(1, "NEXA", "AAA", "B", "1.00", "1")])
    with pytest.raises(ValueError, match="both the quotes and the depth"):
        ReplayFeed(m, quotes=quotes, depth=depth)
    ReplayFeed(m, quotes=quotes, depth=mini(0, [(1, "BRIX", "AAA", "B", "1.00", "1")]))
    with pytest.raises(ValueError, match="side 'X'"):
        ReplayFeed(m, depth=mini(0, [(1, "NEXA", "AAA", "X", "1.00", "1")]))


class OneChunk:
    """A flow that hands the loop one chunk of operations, then ends."""

    def __init__(self, ops, books):
        self.chunk = (ops, np.asarray(books, dtype=np.int32))

    def next_chunk(self):
        chunk, self.chunk = self.chunk, None
        return chunk


def pegged_ops(t, rows):
    ops = np.zeros(len(rows), dtype=OP_DTYPE)
    for k, (order_id, side, offset) in enumerate(rows):
        for name, value in (("op", OP_ADD), ("order_id", order_id), ("side", side),
                            ("price", offset), ("qty", 10), ("ts", t + k),
                            ("ord_type", int(OrdType.LIMIT)), ("tif", int(TimeInForce.GTC)),
                            ("account", 1), ("stp", int(StpMode.STP_NONE)),
                            ("flags", PEG_MID_FLAG)):
            ops[name][k] = value
    return ops


def test_pegged_flow_prices_are_resolved_against_the_mid_of_the_moment():
    U = PEG_UNITS_PER_TICK
    cfg = config(QUIET)
    t = cfg.session.start_ns + MS
    rows = [(10, BUY, -U // 4), (11, SELL, U // 4), (12, BUY, -U // 4 - 2 * U),
            (13, SELL, 3 * U)]
    m = Market(cfg, flow=OneChunk(pegged_ops(t, rows), [0] * len(rows)))
    m.run_until(cfg.session.start_ns)
    add(m, "FAST", 1, BUY, 5000, 10)
    add(m, "FAST", 2, SELL, 5001, 10)          # mid 5000.5
    m.run_until(t + 10)
    book = m.loop.book(0)
    # floor(5000.5 - 0.25), ceil(5000.5 + 0.25), two ticks further, ceil(5000.5 + 3)
    assert [book.order(i)["price"] for i in (10, 11, 12, 13)] == [5000, 5001, 4998, 5004]
    # No NBBO to peg to: nothing is sent.
    m2 = Market(cfg, flow=OneChunk(pegged_ops(t, rows), [0] * len(rows)))
    m2.run_until(t + 10)
    assert m2.bbo("FAST", "AAA") == (0, 0, 0, 0) and m2.loop.n_bg_ops == len(rows)


def test_flow_alongside_a_replay_is_deterministic_and_brings_dark_liquidity():
    cfg = load_config(REPLAY_L2)
    assert cfg.replay.flow and cfg.replay.depth
    runs = [Backtest(cfg, strategy="passive_aggressive", params={"dark_fraction": 0.5},
                     seed=s).run() for s in (42, 42, 43)]
    assert runs[0].fills == runs[1].fills and runs[0].orders == runs[1].orders
    assert runs[0].fills != runs[2].fills
    assert runs[0].orders[0]["dark_qty"] > 0          # the dark pool's flow took the peg
    no_flow = cfg.with_overrides(replay=dataclasses.replace(cfg.replay, flow=False))
    quiet = Backtest(no_flow, strategy="passive_aggressive", params={"dark_fraction": 0.5},
                     seed=42).run()
    assert quiet.orders[0]["dark_qty"] == 0           # replay alone: nobody in the pool


def test_pegged_flow_quotes_stay_around_the_replayed_market():
    cfg = load_config(REPLAY_L2)
    m = Market(cfg)
    feed = ReplayFeed.from_config(cfg, m)
    lit = [m.book_index(v, "AAA") for v in ("NEXA", "BRIX", "COVE")]
    flow_prices, mids = [], []
    t = cfg.session.start_ns
    for _ in range(40):
        t += 500 * MS
        feed.run_until(t)
        mid2 = m.loop.mid2(0)
        if mid2:
            mids.append(mid2)
        for b in lit:
            book = m.loop.book(b)
            for order_id in range(1, 400):          # the flow's ids, counted from 1
                o = book.order(order_id)
                if o is not None and mid2:
                    flow_prices.append(abs(2 * o["price"] - mid2))
    assert len(flow_prices) > 20 and len(mids) > 30
    # within a few ticks of the replayed mid (the depth decay's tail aside)
    assert np.percentile(flow_prices, 90) <= 2 * 6


def test_an_update_is_grouped_by_time_and_book_even_when_books_interleave():
    # One NEXA update at t1 (bid up to 50.00, ask 50.00 leaves, new ask 50.01)
    # with a BRIX row in the middle of it: still one update, decreases first,
    # so the new bid does not meet the ask the same update removes.
    t0 = load_config(REPLAY).session.start_ns
    t1 = 1_000 * MS
    snap = [(0, v, "AAA", s, px, "100") for v in ("NEXA", "BRIX")
            for s, px in (("B", "49.99"), ("S", "50.00"))]
    update = [(t1, "NEXA", "AAA", "B", "50.00", "100"), (t1, "BRIX", "AAA", "B", "49.98", "100"),
              (t1, "NEXA", "AAA", "S", "50.00", "0"), (t1, "NEXA", "AAA", "S", "50.01", "100")]
    m = Market(load_config(REPLAY), record_tape=True)
    feed = ReplayFeed(m, depth=mini(t0, snap + update))
    feed.run_until(t0 + t1)
    bids, asks = m.depth("NEXA", "AAA", 5)
    assert bids.tolist() == [(5000, 100, 1), (4999, 100, 1)]
    assert asks.tolist() == [(5001, 100, 1)]
    assert len(m.tape()[0]) == 0                       # nothing traded
    assert m.bbo("BRIX", "AAA")[:2] == (4999, 100)
    assert feed.n_depth == 8 and feed.done
