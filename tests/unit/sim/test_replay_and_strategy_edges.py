"""The backtester at its edges, as a quant uses it: replayed rows before a venue opens, trades
that cannot trade, ambiguous trade sides, children still out when the parents stop, TWAP with
children in flight, a refused reprice, market-data latency defaults.

Each test failed on the code before its fix.
"""
import copy
import logging
from pathlib import Path

import pytest

from sim.config import ConfigError
from sim.market import Market
from sim.replay import ReplayDataError, ReplayFeed
from sim.strategies import ParentOrder, TwapStrategy
from tests.unit.sim.helpers import BUY, QUIET, SELL, US, add, config, quiet_market

S = 1_000_000_000
MS = 1_000_000
REPO = Path(__file__).resolve().parents[3]


def _slow_venues(one_way_us):
    venues = copy.deepcopy(QUIET["venues"])
    for v in venues:
        v["latency"] = {"model": "fixed", "mean_us": float(one_way_us)}
    return venues


def test_twap_counts_children_in_flight_against_its_slice_target():
    """A slice that fires while the last slice's IOCs are still out sends only the
    difference to its target: the schedule is qty x k / slices, never ahead of it.

    Before: the next slice sent target - filled, as if nothing were working, so
    with a round trip longer than a slice the parent ran ahead of its schedule
    (here 100, 200 and 100 lots at the first three slices: all 400 by the third).
    """
    m = quiet_market(venues=_slow_venues(300_000))          # 600 ms round trip
    add(m, "FAST", 1, SELL, 5001, 10_000)
    t0 = m.now
    s = TwapStrategy(m, ParentOrder(1, "AAA", BUY, 400, t0, t0 + 2 * S), slices=4)
    sent = []
    m.set_timer(t0, s.start)
    m.set_timer(t0 + 2 * S, s.stop)
    for k in range(4):          # the slices begin every 500 ms
        m.run_until(t0 + k * 500 * MS)
        sent.append(sum(s.working.values()) + s.filled)
    m.run_until(t0 + 3 * S)
    assert sent == [100, 200, 300, 400]
    assert s.filled == 400
    assert [f.last_qty for f in s.fills] == [100, 100, 100, 100]
    # Each slice's child reaches FAST 300 ms after its slice began.
    assert [f.ts - t0 for f in s.fills] == [k * 500 * MS + 300_000 * US for k in range(4)]


@pytest.mark.parametrize("side", ["bid", "ask", "A", "offer", "Bid"])
def test_a_trade_side_other_than_buy_or_sell_is_refused_not_guessed(side, tmp_path):
    """A trade's ``side`` is its aggressor, B/buy or S/sell (docs/sim.md). ``bid`` or
    ``ask`` there is ambiguous ("traded at the bid" is a seller's trade, the opposite of
    the buy it was read as) and must be refused naming the row, as ``X`` is.

    Before: ``bid`` was replayed as a buy aggressor, ``ask``/``A``/``offer`` as a sell.
    """
    m = quiet_market()
    t0 = m.session_start
    csv = tmp_path / "t.csv"
    csv.write_text("ts,venue,symbol,price,qty,side\n"
                   f"{t0 + 1},FAST,AAA,50.01,100,B\n"
                   f"{t0 + 2},FAST,AAA,50.00,100,{side}\n")
    from sim.replay import load_trades
    with pytest.raises(ReplayDataError, match=rf"row 2, column side: side '{side}' is not "
                                              r"B/buy or S/sell \(or empty\)"):
        ReplayFeed(m, trades=load_trades(csv))


@pytest.mark.parametrize("side, aggressor", [("B", BUY), ("buy", BUY), (" Sell ", SELL),
                                             ("s", SELL)])
def test_buy_and_sell_trade_sides_still_replay(side, aggressor):
    m = quiet_market(record_tape=True)
    add(m, "FAST", 1, SELL, 5001, 100)
    add(m, "FAST", 2, BUY, 5000, 100)
    t0 = m.now
    trades = {"ts": [t0 + 1], "venue": ["FAST"], "symbol": ["AAA"],
              "price": ["50.01" if aggressor == BUY else "50.00"], "qty": ["30"],
              "side": [side]}
    feed = ReplayFeed(m, trades=trades)
    feed.run_until(t0 + 10)
    tape = m.tape()[0]
    assert [(int(t["price_x2"]), int(t["qty"]), int(t["aggressor_side"])) for t in tape] == \
        [(10002 if aggressor == BUY else 10000, 30, aggressor)]


def _opening_market(**session):
    """QUIET with the session starting at the venues' open (09:30), warm-up before it."""
    cfg = config(QUIET, session={"date": "2026-01-05", "start": "09:30:00", "end": "09:40:00",
                                 "warmup": "60s", "seed": 1, "sample_interval": "1s", **session},
                 parents=[])
    return Market(cfg, flow=False)


def _levels(m, venue):
    bids, asks = m.depth(venue, "AAA")
    return ([(int(p), int(q)) for p, q, _n in bids.tolist()],
            [(int(p), int(q)) for p, q, _n in asks.tolist()])


def test_a_depth_snapshot_before_the_venues_open_is_the_book_it_opens_with(caplog):
    """Depth rows replayed while their venue is still closed (its hours start at the
    session start, the warm-up runs before) are the book it opens with.

    Before: the closed venue refused the replay's orders in silence and a depth
    feed, which sends a level again only when it changes, left the book without
    its snapshot for the whole run (here only the 49.98 bid changed after the open).
    """
    m = _opening_market()
    open_ns = m.session_start                       # FAST opens at 09:30:00
    pre = open_ns - 30 * S
    depth = {"ts": [pre, pre, pre, pre + 1, open_ns + S],
             "venue": ["FAST"] * 5, "symbol": ["AAA"] * 5,
             "side": ["B", "S", "S", "S", "B"],
             "price": ["49.99", "50.01", "50.02", "50.02", "49.98"],
             "qty": ["500", "400", "100", "0", "300"]}
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        feed = ReplayFeed(m, depth=depth)
    feed.run_until(open_ns - 1)
    assert _levels(m, "FAST") == ([], [])             # closed: nothing in its book yet
    feed.run_until(open_ns)
    assert _levels(m, "FAST") == ([(4999, 500)], [(5001, 400)])
    feed.run_until(open_ns + 2 * S)
    assert _levels(m, "FAST") == ([(4999, 500), (4998, 300)], [(5001, 400)])
    assert feed.replay_levels(m.book_index("FAST", "AAA"), BUY) == {4998: 300, 4999: 500}
    # Said once when the file is read, as rows outside the session are.
    assert "4 rows before their venue's open (held: the book it opens with)" in caplog.text


def test_a_quote_before_the_venues_open_is_its_opening_quote_and_a_trade_is_not_replayed():
    m = _opening_market()
    open_ns = m.session_start
    pre = open_ns - 10 * S
    quotes = {"ts": [pre - S, pre], "venue": ["INV", "INV"], "symbol": ["AAA", "AAA"],
              "bid_px": ["49.97", "49.98"], "bid_qty": ["100", "200"],
              "ask_px": ["50.01", "50.00"], "ask_qty": ["100", "300"]}
    trades = {"ts": [pre + S], "venue": ["INV"], "symbol": ["AAA"], "price": ["50.00"],
              "qty": ["50"], "side": ["B"]}
    feed = ReplayFeed(m, quotes=quotes, trades=trades)
    feed.run_until(open_ns + S)
    # The last quote before the open, whole: the trade before it executed nothing.
    assert _levels(m, "INV") == ([(4998, 200)], [(5000, 300)])
    assert m.market_volume("AAA") == (0, 0)
    assert feed.n_closed_trades == 1


def test_replayed_trades_that_do_not_trade_are_counted_and_said(caplog):
    """A trade without a side inside the replayed spread is not replayed (its aggressor is
    unknown), and a print larger than the replayed level trades only what is there:
    neither shows in the market's volume (``vwap``), so the feed counts both and the
    backtest says so once (``note_trades``).

    Before: both went in silence (no count, no warning).
    """
    m = quiet_market()
    t0 = m.now
    quotes = {"ts": [t0 + 1], "venue": ["FAST"], "symbol": ["AAA"], "bid_px": ["49.98"],
              "bid_qty": ["100"], "ask_px": ["50.02"], "ask_qty": ["100"]}
    trades = {"ts": [t0 + 2, t0 + 3, t0 + 4], "venue": ["FAST"] * 3, "symbol": ["AAA"] * 3,
              "price": ["50.00", "50.02", "49.98"], "qty": ["40", "150", "30"],
              "side": [None, None, "S"]}
    feed = ReplayFeed(m, quotes=quotes, trades=trades)
    feed.run_until(t0 + 10)
    assert m.market_volume("AAA")[0] == 100 + 30
    assert (feed.n_unplaced_trades, feed.unexecuted_trade_lots) == (1, 50)
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        text = feed.note_trades()
    assert text == ("replay.trades: 1 without a side inside the replayed spread, not replayed "
                    "(give their side); 50 printed lots found no replayed liquidity at their "
                    "price and did not trade")
    assert text in caplog.text


def test_a_replay_backtest_says_what_of_its_prints_did_not_trade(caplog):
    from sim import Backtest
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        Backtest(REPO / "sim" / "configs" / "replay.toml").run()
    assert "printed lots found no replayed liquidity at their price and did not trade" \
        in caplog.text


def test_an_absent_market_data_latency_key_is_zero_min_us_included():
    """docs/sim.md: under ``market_data_latency`` "absent keys are 0 rather than
    latency's 100 us". Before: ``min_us`` absent was 1 us, so a median of 0.5 us drew
    1 us every time (and a normal model around 0 never went below 1 us)."""
    from sim.latency import LatencyModel
    venues = copy.deepcopy(QUIET["venues"])
    venues[0]["market_data_latency"] = {"model": "lognormal", "median_us": 0.5}
    spec = config(QUIET, venues=venues).venues[0].market_data_latency
    assert spec.min_us == 0
    assert LatencyModel(spec, 1).sample(3).tolist() == [500, 500, 500]


def test_the_backtest_waits_for_children_still_out_after_the_last_parent_stops():
    """After every parent stops, the run drains until their children have answered, not
    a fixed second: on a venue 700 ms away a fill made just before the cancel landed
    comes back 1.4 s after the stop.

    Before: the run ended 1 s after the last parent stopped, so the venue had traded
    100 lots that neither parent's record showed (0 filled each, children working).
    """
    from ext.types import OrdType, TimeInForce
    from sim import STRATEGIES, Backtest, ExecutionStrategy, register_strategy

    @register_strategy
    class RestAtFifty(ExecutionStrategy):
        name = "test_rest_at_fifty"
        defaults = {}

        def on_start(self):
            self.send(0, self.remaining, 5000, int(OrdType.LIMIT), int(TimeInForce.DAY))

    @register_strategy
    class HitFifty(ExecutionStrategy):
        name = "test_hit_fifty"
        defaults = {}

        def on_start(self):
            self.send(0, self.remaining, 5000, int(OrdType.LIMIT), int(TimeInForce.IOC))

    cfg = config(QUIET, venues=_slow_venues(700_000),
                 session={"date": "2026-01-05", "start": "10:00:00", "end": "10:00:02",
                          "warmup": "0s", "seed": 1, "sample_interval": "1s"},
                 flow={"lp_rate": 0, "cancel_rate": 0, "taker_rate": 0, "dark_rate": 0,
                       "dark_taker_rate": 0},
                 parents=[{"symbol": "AAA", "side": "buy", "qty": "100", "start": "10:00:00",
                           "end": "10:00:01", "strategy": "test_rest_at_fifty"},
                          {"symbol": "AAA", "side": "sell", "qty": "500",
                           "start": "10:00:00.950", "end": "10:00:01",
                           "strategy": "test_hit_fifty", "account": 1001}])
    try:
        bt = Backtest(cfg)
        res = bt.run()
    finally:
        # (The registry is global: leave it as the other tests know it.)
        STRATEGIES.pop(RestAtFifty.name)
        STRATEGIES.pop(HitFifty.name)
    buy, sell = bt.strategies
    # The sell's IOC reached FAST at 10:00:01.650, before the buy's cancel (10:00:01.700).
    assert (buy.filled, sell.filled) == (100, 100)
    assert (buy.n_working, sell.n_working) == (0, 0)
    assert [o["filled"] for o in res.orders] == [100, 100]
    assert [f.recv_ts - buy.parent.end_ns for f in buy.fills] == [1_350 * MS]


def test_passive_aggressive_follows_the_touch_after_a_refused_reprice():
    """A reprice the venue refuses (post-only: the national bid is at this venue's ask)
    leaves the order where it was, and the strategy must know it: when the venue's ask
    moves away, the next reprice joins the touch.

    Before: the strategy took the refused price for its own and, the touch unchanged,
    never asked again: its bid stayed three ticks behind the touch.
    """
    from sim.strategies import PassiveAggressiveStrategy
    m = quiet_market()
    add(m, "FAST", 1, BUY, 4999, 100)
    add(m, "FAST", 2, SELL, 5002, 100)
    t0 = m.now
    s = PassiveAggressiveStrategy(m, ParentOrder(1, "AAA", BUY, 50, t0, t0 + 20 * S),
                                  passive_fraction=0.9, reprice="1s", venue="FAST")
    m.set_timer(t0, s.start)
    m.set_timer(t0 + 20 * S, s.stop)
    m.run_until(t0 + S // 2)
    child = s.passive_child
    assert m.loop.child(child)["limit"] == 4999
    add(m, "INV", 3, BUY, 5002, 100)         # the national bid reaches FAST's ask
    m.run_until(t0 + 3 * S // 2)             # the reprice to 50.02 would cross: refused
    assert m.loop.child(child)["limit"] == 4999
    from tests.unit.sim.helpers import cancel
    cancel(m, "FAST", 2)
    add(m, "FAST", 4, SELL, 5003, 100)       # FAST's ask moves away
    m.run_until(t0 + 5 * S // 2)             # the next reprice may join the touch now
    assert s.passive_child == child and m.loop.child(child)["limit"] == 5002


def test_the_warning_names_the_clock_start_that_rows_are_moved_to(tmp_path, caplog):
    """Rows before the clock start (the session start less the warm-up) are applied at
    it; rows inside the warm-up are replayed in time. Before: the warning called the
    clock start "the session start", which rows in the warm-up are also before."""
    session = {"date": "2026-01-05", "start": "10:00:00", "end": "10:10:00", "warmup": "60s",
               "seed": 1, "sample_interval": "1s"}
    start = config(QUIET, session=session).session.start_ns
    (tmp_path / "q.csv").write_text(
        "ts,venue,symbol,bid_px,bid_qty,ask_px,ask_qty\n"
        f"{start - 90 * S},FAST,AAA,49.99,100,50.01,100\n"
        f"{start - 30 * S},FAST,AAA,49.99,100,50.01,100\n"
        f"{start + S},FAST,AAA,49.99,100,50.01,100\n")
    cfg = config(QUIET, session=session, replay={"quotes": str(tmp_path / "q.csv")})
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        ReplayFeed.from_config(cfg, Market(cfg, flow=False))
    assert "1 row before the clock start (session.start less the warm-up), applied at it" \
        in caplog.text


@pytest.mark.parametrize("venue_map", [{"ARCA": "FAST", "BATS": "FAST"}, {"BATS": "FAST"}])
def test_two_feeds_of_quotes_cannot_replay_one_book(venue_map):
    """Each quote row is its book's whole top: two file venues mapped onto one configured
    venue (or one mapped onto a venue the file also has) would overwrite each other's
    quote row by row. Refused, naming the row. Before: replayed, the book flipping
    between the two venues' quotes."""
    m = quiet_market()
    t0 = m.now
    names = ["ARCA", "BATS"] if "ARCA" in venue_map else ["FAST", "BATS"]
    quotes = {"ts": [t0 + 1, t0 + 2], "venue": names, "symbol": ["AAA", "AAA"],
              "bid_px": ["49.99", "49.97"], "bid_qty": ["100", "500"],
              "ask_px": ["50.01", "50.03"], "ask_qty": ["100", "500"]}
    with pytest.raises(ReplayDataError, match=rf"row 2, column venue: BATS/AAA and {names[0]}/AAA "
                                              r"both replay FAST/AAA \(replay.venue_map\)"):
        ReplayFeed(m, quotes=quotes, venue_map=venue_map)


def test_trades_of_two_venues_may_replay_on_one_book():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 100)
    t0 = m.now
    trades = {"ts": [t0 + 1, t0 + 2], "venue": ["ARCA", "BATS"], "symbol": ["AAA", "AAA"],
              "price": ["50.01", "50.01"], "qty": ["30", "20"], "side": ["B", "B"]}
    feed = ReplayFeed(m, trades=trades, venue_map={"ARCA": "FAST", "BATS": "FAST"})
    feed.run_until(t0 + 10)
    assert m.market_volume("AAA")[0] == 50


@pytest.mark.parametrize("tif", ["DAY", "GTC"])
def test_a_child_left_resting_after_the_stop_does_not_hold_the_run(tif):
    """A strategy that leaves an order at the venue when it stops (no cancel): the run
    waits while something can still answer it (the venue's close expires a DAY order)
    and ends when nothing can (a GTC order, no flow, no message left)."""
    from ext.types import OrdType, TimeInForce
    from sim import STRATEGIES, Backtest, ExecutionStrategy, register_strategy

    @register_strategy
    class LeaveIt(ExecutionStrategy):
        name = "test_leave_it"
        defaults = {}

        def on_start(self):
            self.send(0, self.remaining, 4000, int(OrdType.LIMIT),
                      int(getattr(TimeInForce, tif)))

        def on_stop(self):
            pass                # no cancel

    cfg = config(QUIET, flow={"lp_rate": 0, "cancel_rate": 0, "taker_rate": 0, "dark_rate": 0,
                              "dark_taker_rate": 0},
                 parents=[{"symbol": "AAA", "side": "buy", "qty": "100", "start": "10:00:00",
                           "end": "10:01:00", "strategy": "test_leave_it"}])
    try:
        bt = Backtest(cfg)
        bt.run()
    finally:
        STRATEGIES.pop(LeaveIt.name)
    (s,) = bt.strategies
    close = bt.market.venues[0].close_ns
    if tif == "DAY":
        assert s.n_working == 0 and bt.market.now >= close     # expired at 16:00
    else:
        assert s.n_working == 1 and bt.market.now >= close     # nothing left to answer it
