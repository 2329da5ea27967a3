"""Market-data latency (``venues[].market_data_latency``): a strategy sees each
venue's book as it was that latency ago, never as it is.

The venues themselves keep using their books as they are (matching, dark
midpoints), and so does the execution record; without the key, or with a
fixed 0, every read is live and a backtest is what it was before the key.
"""
import argparse

import pytest

from ext.book import OrderBook
from ext.simloop import MarketLoop
from ext.types import OrdType
from sim import Backtest
from sim import cmd_sim
from sim.config import ConfigError
from sim.latency import LatencyModel, LatencySpec
from sim.strategies import ExecutionStrategy, ParentOrder, PeriodicTakerStrategy, SweepStrategy
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import (
    BUY, DAY, QUIET, SELL, SMALL, US, add, cancel, config, quiet_market,
)

S = 1_000_000_000
LIMIT = int(OrdType.LIMIT)


def venues_with(md: dict, venue: int = 0) -> list:
    """QUIET's venues, ``venue`` with this ``market_data_latency`` table."""
    out = [dict(v) for v in QUIET["venues"]]
    out[venue] = {**out[venue], "market_data_latency": md}
    return out


FAST_500 = venues_with({"model": "fixed", "mean_us": 500.0})


@pytest.mark.parametrize("book_class", [OrderBook, ReferenceBook])
def test_a_read_right_after_a_change_sees_the_old_quote_until_the_latency_has_passed(book_class):
    m = quiet_market(book_class, venues=FAST_500)
    add(m, "FAST", 1, SELL, 5001, 100)
    add(m, "FAST", 2, BUY, 4999, 100)
    t0 = m.now
    seen = m.seen
    assert m.bbo("FAST", "AAA") == (4999, 100, 5001, 100)          # the venue: at once
    assert seen.bbo("FAST", "AAA") == (0, 0, 0, 0)
    assert seen.nbbo("AAA") == (0, 0) and seen.mid_x2("AAA") == 0
    m.run_until(t0 + 499 * US)
    assert seen.bbo("FAST", "AAA") == (0, 0, 0, 0)
    m.run_until(t0 + 500 * US)
    assert seen.bbo("FAST", "AAA") == (4999, 100, 5001, 100)
    assert seen.nbbo("AAA") == (4999, 5001) and seen.mid_x2("AAA") == 10000

    t1 = m.now
    add(m, "FAST", 3, SELL, 5000, 40)                               # a better ask
    assert m.nbbo("AAA") == (4999, 5000)
    assert seen.nbbo("AAA") == (4999, 5001)
    bids, asks = seen.depth("FAST", "AAA", 5)
    assert asks.tolist() == [(5001, 100, 1)] and bids.tolist() == [(4999, 100, 1)]
    m.run_until(t1 + 500 * US)
    assert seen.bbo("FAST", "AAA") == (4999, 100, 5000, 40)
    assert seen.depth("FAST", "AAA", 5)[1].tolist() == [(5000, 40, 1), (5001, 100, 1)]
    assert seen.depth("FAST", "AAA", 0)[1].tolist() == []


def test_the_close_reaches_strategies_late_too():
    closing = venues_with({"model": "fixed", "mean_us": 500.0})
    closing[0]["hours"] = ["09:30:00", "10:00:01"]
    m = quiet_market(venues=closing)
    add(m, "FAST", 1, SELL, 5001, 100, tif=DAY)
    close = m.venues[0].close_ns
    m.run_until(close)
    assert m.bbo("FAST", "AAA") == (0, 0, 0, 0)
    assert m.seen.bbo("FAST", "AAA") == (0, 0, 5001, 100)
    assert m.seen.nbbo("AAA") == (0, 0)       # the hours are public: a closed venue is out
    m.run_until(close + 500 * US)
    assert m.seen.bbo("FAST", "AAA") == (0, 0, 0, 0)


def test_venues_without_market_data_latency_read_live_beside_one_with_it():
    m = quiet_market(venues=FAST_500)
    add(m, "FAST", 1, SELL, 5003, 100)
    add(m, "BPS", 2, SELL, 5002, 100)
    seen = m.seen
    assert seen.bbo("BPS", "AAA") == m.bbo("BPS", "AAA") == (0, 0, 5002, 100)
    assert seen.nbbo("AAA") == (0, 5002)
    bids, asks = seen.depth("BPS", "AAA", 3)
    assert asks.tolist() == [(5002, 100, 1)]                         # the live ladder, counts too
    m.run_until(m.now + 500 * US)
    cancel(m, "BPS", 2)
    assert seen.nbbo("AAA") == (0, 5003)


def test_the_dark_pool_trades_at_the_live_mid_whatever_the_strategies_see():
    m = quiet_market(venues=FAST_500)
    add(m, "FAST", 1, SELL, 5002, 100)
    add(m, "FAST", 2, BUY, 4998, 100)
    add(m, "POOL", 3, SELL, 0, 10)                                   # a pure peg, resting
    fills = []
    m.submit("POOL", "AAA", BUY, 10, 0, LIMIT, on_report=lambda r: fills.append(r.price_x2)
             if r.last_qty else None)
    m.run_until(m.now + 1000 * US)
    assert fills == [10000]
    assert m.seen.mid_x2("AAA") == 10000


class QuoteReader(ExecutionStrategy):
    """Reads the seen quote of FAST at given times (a Python strategy)."""

    name = "quote_reader"
    defaults = {"at": ()}

    def on_start(self):
        self.read = []
        for ts in self.params["at"]:
            self.wake_at(ts)

    def on_timer(self):
        self.read.append((self.now, self.market.bbo("FAST", "AAA"), self.market.nbbo("AAA")))


def test_a_python_strategy_sees_the_change_after_the_latency():
    m = quiet_market(venues=FAST_500)
    add(m, "FAST", 1, SELL, 5001, 100)
    t0 = m.now + 1000 * US                  # the old quote has long arrived by then
    times = (t0 + 1 * US, t0 + 499 * US, t0 + 500 * US)
    s = QuoteReader(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S), at=times)
    m.set_timer(m.now, s.start)
    m.run_until(t0)
    add(m, "FAST", 2, SELL, 5000, 30)
    m.run_until(t0 + S)
    old, new = (0, 0, 5001, 100), (0, 0, 5000, 30)
    assert s.read == [(t0 + US, old, (0, 5001)), (t0 + 499 * US, old, (0, 5001)),
                      (t0 + 500 * US, new, (0, 5000))]


def test_a_compiled_strategy_reads_the_same_late_view():
    # Compiled strategies decide in C without market data of their own; what
    # they read of the market goes through ``self.market`` like Python's.
    m = quiet_market(venues=FAST_500)
    s = PeriodicTakerStrategy(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S),
                              interval="1s", child_qty=1, venues=["FAST"])
    add(m, "FAST", 1, SELL, 5001, 100)
    assert s.market.bbo("FAST", "AAA") == (0, 0, 0, 0)
    assert s.market.market.bbo("FAST", "AAA") == (0, 0, 5001, 100)
    m.run_until(m.now + 500 * US)
    assert s.market.bbo("FAST", "AAA") == (0, 0, 5001, 100)


def test_a_sweep_prices_its_orders_on_the_late_quote_and_misses_a_moved_one():
    def run(venues):
        m = quiet_market(venues=venues)
        add(m, "FAST", 1, SELL, 5001, 100)
        m.run_until(m.now + 1000 * US)
        moved = m.now
        cancel(m, "FAST", 1)                                          # the ask moves up
        add(m, "FAST", 2, SELL, 5002, 100)
        s = SweepStrategy(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S),
                          retry="10s")
        m.set_timer(m.now + 10 * US, s.start)
        m.run_until(m.now + 5 * 1000 * US)
        return s, moved
    live, _ = run(QUIET["venues"])
    assert live.filled == 10 and len(live.children) == 1
    late, moved = run(FAST_500)
    # Its IOCs at 5001 find the ask at 5002 until the move has reached it.
    assert late.filled == 10 and len(late.children) > 1
    assert [f.price_x2 for f in late.fills] == [2 * 5002]
    assert late.fills[0].ts >= moved + 500 * US


def test_a_random_model_is_seeded_and_its_feed_never_reorders():
    lognormal = venues_with({"model": "lognormal", "median_us": 200.0, "sigma": 1.5,
                             "min_us": 1.0})

    def observe(seed):
        m = quiet_market(venues=lognormal, session={**QUIET["session"], "seed": seed})
        seen, t = [], m.now
        for k in range(60):
            add(m, "FAST", 100 + k, SELL, 5100 - k, 10)              # each a better ask
            m.run_until(m.now + 50 * US)
            seen.append(m.seen.bbo("FAST", "AAA")[2])
        m.run_until(m.now + S)
        seen.append(m.seen.bbo("FAST", "AAA")[2])
        assert m.loop.md_pending(m.book_index("FAST", "AAA")) == 1    # all arrived, ring drained
        return seen

    a = observe(1)
    assert a == observe(1)
    assert a != observe(2)
    shown = [x for x in a if x]
    assert shown == sorted(shown, reverse=True)       # never an older (higher) ask after a newer
    assert a[-1] == 5100 - 59
    assert len(set(shown)) > 5 and a[0] == 0          # late, and not all at once


def test_a_latency_of_zero_or_none_is_the_backtest_without_the_key():
    base = Backtest(config(SMALL), seed=5).run()
    zero = Backtest(config(SMALL, venues=[{**v, "market_data_latency": {"mean_us": 0}}
                                          for v in SMALL["venues"]]), seed=5).run()
    late = Backtest(config(SMALL, venues=[{**v, "market_data_latency": {"mean_us": 3000}}
                                          for v in SMALL["venues"]]), seed=5).run()
    assert len(base.fills["child_id"]) > 10
    assert zero.fills == base.fills
    assert [repr(o) for o in zero.orders] == [repr(o) for o in base.orders]
    assert late.fills != base.fills
    # The benchmark of the record stays the live market: same arrival price.
    assert [o["arrival_x2"] for o in late.orders] == [o["arrival_x2"] for o in base.orders]


@pytest.mark.parametrize("md, message", [
    ({"model": "gamma"}, r"venues\[0\]\.market_data_latency: latency model 'gamma'"),
    ({"mean_us": -1.0}, r"venues\[0\]\.market_data_latency: latency mean_us = -1\.0"),
    ({"median_us": 5.0}, r"venues\[0\]\.market_data_latency: median_us do\(es\) not apply"),
    ({"mean_us": float("nan")}, r"venues\[0\]\.market_data_latency\.mean_us = nan"),
    ({"mean_us": 1e12}, r"venues\[0\]\.market_data_latency: latency mean_us = .* at most"),
    ({"seed": -3}, r"venues\[0\]\.market_data_latency\.seed = -3"),
    ({"speed": 1}, r"venues\[0\]\.market_data_latency: unknown key"),
    (250, r"venues\[0\]\.market_data_latency must be dict"),
])
def test_bad_values_are_refused_naming_the_key(md, message):
    with pytest.raises(ConfigError, match=message):
        config(QUIET, venues=venues_with(md))


def test_kronos_exec_sim_exits_2_on_a_bad_market_data_latency(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[instruments]]\nsymbol = "AAA"\n\n[[venues]]\nname = "A"\n'
                   'market_data_latency = { model = "fixed", mean_us = -5 }\n')
    parser = argparse.ArgumentParser()
    cmd_sim.add_arguments(parser)
    argv = ["-c", str(cfg), "-o", str(tmp_path / "out"), "--no-plots", "--no-progress"]
    assert cmd_sim.run(parser.parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kronos-exec sim: venues[0].market_data_latency: latency mean_us = -5")


def test_a_loop_built_on_a_book_with_orders_shows_them_until_a_change_arrives():
    book = OrderBook("X")
    book.add(1, SELL, 5001, 100, account=1)
    fixed = LatencyModel(LatencySpec("fixed", mean_us=100.0))
    loop = MarketLoop([book], [0], [0], [False], [0], [0], [0], [0], [fixed],
                      start_ts=10**18, md_latency=[fixed])
    assert loop.bbo(0, seen=True) == (0, 0, 5001, 100)
    with pytest.raises(ValueError, match="md_latency needs one model"):
        MarketLoop([OrderBook("Y")], [0], [0], [False], [0], [0], [0], [0], [fixed],
                   md_latency=[])


def test_a_book_nobody_reads_keeps_only_its_tops_in_flight():
    # Reads drop superseded tops, but so must recording: a venue with
    # market-data latency that no strategy reads would otherwise keep every
    # top change of the run.
    m = quiet_market(venues=FAST_500)
    b = m.book_index("FAST", "AAA")
    for i in range(5000):
        add(m, "FAST", 10 + i, SELL, 5001 + (i % 2), 100)          # two top changes
        cancel(m, "FAST", 10 + i)
        m.run_until(m.now + 1000 * US)                             # each long seen
    held, cap = m.loop.md_ring(b)
    assert held <= 3 and cap <= 16                          # its first room, never grown
    # Changes still in flight are kept, and the seen view is unchanged.
    add(m, "FAST", 1, SELL, 5003, 100)
    add(m, "FAST", 2, BUY, 4999, 100)
    assert m.loop.md_ring(b)[0] == 3
    assert m.seen.bbo("FAST", "AAA") == (0, 0, 0, 0)
    m.run_until(m.now + 500 * US)
    assert m.seen.bbo("FAST", "AAA") == (4999, 100, 5003, 100)
    assert m.loop.md_ring(b)[0] == 1
