"""What else a strategy reads under ``venues[].market_data_latency``: the
ladder (``depth``, up to ``market_data_depth`` levels), the traded volume
(``market_volume``), and the C reads of compiled strategies (``seen_top_c``),
all as they were the venue's market-data latency ago.
"""
import pytest

from ext.book import OrderBook
from ext.simloop import MAX_MD_DEPTH, MD_DEPTH_DEFAULT, MarketLoop
from sim import Backtest
from sim.config import ConfigError
from sim.latency import LatencyModel, LatencySpec
from sim.strategies import ParentOrder, PeriodicTakerStrategy
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import (
    BUY, IOC, LIMIT, QUIET, SELL, SMALL, US, add, cancel, config, quiet_market,
)
from tests.unit.sim.test_compiled import PythonPeriodicTaker, assert_twins_trade_alike, fill_rows
from tests.unit.sim.test_market_data_latency import FAST_500, venues_with

S = 1_000_000_000


def ladder(side):
    return [tuple(level) for level in side.tolist()]


@pytest.mark.parametrize("book_class", [OrderBook, ReferenceBook])
def test_depth_shows_every_recorded_level_as_it_was_the_latency_ago(book_class):
    m = quiet_market(book_class, venues=FAST_500)
    for k in range(4):
        add(m, "FAST", 1 + k, SELL, 5001 + k, 100 + k)
        add(m, "FAST", 11 + k, BUY, 4999 - k, 10 + k)
    add(m, "FAST", 21, SELL, 5002, 7)                           # a second order at a level
    m.run_until(m.now + 500 * US)
    before = m.depth("FAST", "AAA", 10)
    bids, asks = m.seen.depth("FAST", "AAA", 10)
    assert ladder(asks) == [(5001, 100, 1), (5002, 108, 2), (5003, 102, 1), (5004, 103, 1)]
    assert ladder(bids) == [(4999, 10, 1), (4998, 11, 1), (4997, 12, 1), (4996, 13, 1)]
    assert asks.dtype == before[1].dtype                             # the live depth's layout

    t = m.now
    cancel(m, "FAST", 3)                                              # the third ask level goes
    add(m, "FAST", 31, BUY, 4995, 50)                                 # a fifth bid level
    assert ladder(m.seen.depth("FAST", "AAA", 10)[1]) == ladder(before[1])
    assert len(m.seen.depth("FAST", "AAA", 10)[0]) == 4
    m.run_until(t + 499 * US)
    assert ladder(m.seen.depth("FAST", "AAA", 10)[1]) == ladder(before[1])
    m.run_until(t + 500 * US)
    bids, asks = m.seen.depth("FAST", "AAA", 10)
    assert ladder(asks) == [(5001, 100, 1), (5002, 108, 2), (5004, 103, 1)]
    assert ladder(bids)[-1] == (4995, 50, 1)
    assert ladder(m.seen.depth("FAST", "AAA", 2)[0]) == [(4999, 10, 1), (4998, 11, 1)]


def test_market_data_depth_bounds_the_levels_recorded_and_what_counts_as_a_change():
    venues = venues_with({"model": "fixed", "mean_us": 500.0})
    venues[0]["market_data_depth"] = 2
    m = quiet_market(venues=venues)
    b = m.book_index("FAST", "AAA")
    for k in range(4):
        add(m, "FAST", 1 + k, SELL, 5001 + k, 100)
    m.run_until(m.now + 500 * US)
    assert ladder(m.seen.depth("FAST", "AAA", 10)[1]) == [(5001, 100, 1), (5002, 100, 1)]
    assert m.loop.md_pending(b) == 1
    add(m, "FAST", 9, SELL, 5004, 5)                       # beyond the second level: unseen
    cancel(m, "FAST", 3)
    assert m.loop.md_ring(b)[0] == 1                       # nothing recorded, nothing drawn
    add(m, "FAST", 10, SELL, 5002, 5)                      # within it: one change in flight
    assert m.loop.md_ring(b)[0] == 2


def test_a_book_nobody_reads_keeps_only_its_ladders_in_flight():
    # As for tops (test_market_data_latency): changes below the top must not
    # pile up either, with their levels.
    m = quiet_market(venues=FAST_500)
    b = m.book_index("FAST", "AAA")
    add(m, "FAST", 1, SELL, 5001, 100)
    for i in range(3000):
        add(m, "FAST", 10 + i, SELL, 5003 + (i % 5), 100)          # second to sixth level
        m.run_until(m.now + 1000 * US)
    held, cap = m.loop.md_ring(b)
    assert held <= 2 and cap <= 16


def test_traded_volume_reaches_strategies_after_the_latency_of_its_venue():
    venues = venues_with({"model": "fixed", "mean_us": 500.0})
    venues[3] = {**venues[3], "market_data_latency": {"model": "fixed", "mean_us": 300.0}}
    m = quiet_market(venues=venues)
    add(m, "FAST", 1, SELL, 5001, 100)
    add(m, "BPS", 2, SELL, 5001, 100)
    add(m, "BPS", 3, BUY, 4999, 100)
    m.run_until(m.now + 1000 * US)
    t = m.now
    add(m, "FAST", 4, BUY, 5001, 30, account=2)                      # 30 lots trade on FAST
    add(m, "BPS", 5, BUY, 5001, 20, account=2)                       # 20 on BPS (no latency)
    live = (50, 2 * 5001 * 50)
    assert m.market_volume("AAA") == live
    assert m.seen.market_volume("AAA") == (20, 2 * 5001 * 20)
    m.run_until(t + 500 * US)
    assert m.seen.market_volume("AAA") == live
    # A dark print (at the mid, 10000 half-ticks) is late by the pool's own latency.
    t = m.now
    add(m, "POOL", 6, SELL, 0, 10)
    add(m, "POOL", 7, BUY, 0, 10, account=2)
    assert m.market_volume("AAA") == (60, live[1] + 10000 * 10)
    assert m.seen.market_volume("AAA") == live
    m.run_until(t + 300 * US)
    assert m.seen.market_volume("AAA") == m.market_volume("AAA")


def test_without_the_key_volume_and_depth_are_read_live():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 100)
    add(m, "FAST", 2, SELL, 5002, 100)
    add(m, "FAST", 3, BUY, 5001, 10, account=2)
    assert m.seen.market_volume("AAA") == m.market_volume("AAA") == (10, 2 * 5001 * 10)
    assert ladder(m.seen.depth("FAST", "AAA", 5)[1]) == [(5001, 90, 1), (5002, 100, 1)]


@pytest.mark.parametrize("value", [0, MAX_MD_DEPTH + 1, -1])
def test_market_data_depth_out_of_range_is_refused_naming_the_key(value):
    venues = venues_with({"model": "fixed", "mean_us": 5.0})
    venues[1]["market_data_depth"] = value
    with pytest.raises(ConfigError, match=r"venues\[1\]\.market_data_depth = -?\d+: must be "
                                          r"an integer from 1 to 1000"):
        config(QUIET, venues=venues)


@pytest.mark.parametrize("value", [2.0, "5", True])
def test_market_data_depth_must_be_an_integer(value):
    venues = [dict(v) for v in QUIET["venues"]]
    venues[0]["market_data_depth"] = value
    with pytest.raises(ConfigError, match=r"venues\[0\]\.market_data_depth must be int"):
        config(QUIET, venues=venues)


def test_market_data_depth_default_and_loop_checks():
    assert config(QUIET).venues[0].market_data_depth == MD_DEPTH_DEFAULT == 10
    fixed = LatencyModel(LatencySpec("fixed", mean_us=100.0))
    args = ([OrderBook("X")], [0], [0], [False], [0], [0], [0], [0], [fixed])
    with pytest.raises(ValueError, match="md_depth needs one level count per venue"):
        MarketLoop(*args, md_latency=[fixed], md_depth=[])
    with pytest.raises(ValueError, match="md_depth 0 of venue 0: must be from 1 to 1000"):
        MarketLoop(*args, md_latency=[fixed], md_depth=[0])
    with pytest.raises(TypeError, match="md_depth"):
        MarketLoop(*args, md_latency=[fixed], md_depth=[2.5])


# ---------------------------------------------------------------- compiled strategies

class PythonLimitTaker(PythonPeriodicTaker):
    """``periodic_taker`` with ``limit_ticks``, written in Python: it prices
    each child on ``self.market.bbo``, where the compiled one calls
    ``seen_top_c``."""

    name = "py_limit_taker"
    defaults = {**PythonPeriodicTaker.defaults, "limit_ticks": 0}

    def on_timer(self):
        qty = min(self.params["child_qty"], self.remaining - self.open_qty)
        if qty <= 0:
            return
        venue = self.venue_list[self.n_sent % len(self.venue_list)]
        self.n_sent += 1
        bid, _, ask, _ = self.market.bbo(venue, self.instrument)
        touch = ask if self.is_buy else bid
        if touch <= 0:
            return
        lt = self.params["limit_ticks"]
        self.send(venue, qty, max(touch + lt if self.is_buy else touch - lt, 1), LIMIT, IOC)


LATE = [{**v, "market_data_latency": {"model": "lognormal", "median_us": 100000.0, "sigma": 0.8,
                                      "min_us": 50.0}} for v in SMALL["venues"]]


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_compiled_strategy_and_its_python_twin_decide_alike_under_latency(side):
    parents = [{**SMALL["parents"][0], "side": side}]
    params = {"interval": S // 4, "child_qty": 30, "limit_ticks": 0}
    cy = assert_twins_trade_alike(config(SMALL, venues=LATE, parents=parents), params,
                                  "tests.unit.sim.test_market_data_seen:PythonLimitTaker")
    # The quotes were late: the same strategy on live quotes trades otherwise.
    live = Backtest(config(SMALL, parents=parents), strategy="periodic_taker", params=params,
                    seed=11).run()
    assert fill_rows(live) != fill_rows(cy)


def test_a_compiled_limit_taker_prices_on_the_late_quote():
    m = quiet_market(venues=FAST_500)
    add(m, "FAST", 1, SELL, 5001, 100)
    m.run_until(m.now + 1000 * US)
    cancel(m, "FAST", 1)                                              # the ask moves up
    add(m, "FAST", 2, SELL, 5002, 100)
    s = PeriodicTakerStrategy(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S),
                              interval="1s", child_qty=10, venues=["FAST"], limit_ticks=0)
    s.start()                                            # one child now, from C
    m.run_until(m.now + 10 * 1000 * US)
    assert m.loop.child(s.children[0])["limit"] == 5001              # the seen ask, not 5002
    assert s.filled == 0
    m.run_until(m.now + S)                                            # the next tick sees 5002
    assert s.filled == 10 and [f.price_x2 for f in s.fills] == [2 * 5002]


def test_a_compiled_limit_taker_sends_nothing_on_an_empty_seen_side():
    m = quiet_market(venues=FAST_500)
    add(m, "FAST", 1, SELL, 5001, 100)                   # not seen for 500 us
    s = PeriodicTakerStrategy(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S),
                              interval="1s", child_qty=10, venues=["FAST"], limit_ticks=2)
    s.start()
    assert s.children == [] and s.n_sent == 1
    m.run_until(m.now + S + 1000 * US)
    assert len(s.children) == 1 and m.loop.child(s.children[0])["limit"] == 5003
    assert s.filled == 10 and [f.price_x2 for f in s.fills] == [2 * 5001]
