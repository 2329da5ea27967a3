"""Execution strategies on a quiet market, where every child and fill is known."""
import pytest

from ext.simloop import Liquidity, ReportKind as K
from sim.backtest import Backtest, OverfillError
from sim.config import ConfigError
from sim.strategies import (
    ExecutionStrategy, ParentOrder, PassiveAggressiveStrategy, PeriodicTakerStrategy,
    SweepStrategy, TwapStrategy, plan_sweep, register_strategy, resolve_strategy,
)
from tests.unit.sim.helpers import (
    BUY, DAY, IOC, LIMIT, QUIET, SELL, SMALL, US, add, config, quiet_market,
)

S = 1_000_000_000


def parent(m, side=BUY, qty=25, seconds=60, **kw):
    return ParentOrder(1, "AAA", side, qty, m.now, m.now + seconds * S, **kw)


def run(m, strat, seconds):
    m.set_timer(strat.parent.start_ns, strat.start)
    m.set_timer(strat.parent.end_ns, strat.stop)
    m.run_until(m.now + int(seconds * S))


def book_asks(m):
    add(m, "FAST", 1, SELL, 5001, 10)      # taker fee 3000 / lot
    add(m, "INV", 1, SELL, 5001, 10)       # taker rebate 500 / lot
    add(m, "BPS", 1, SELL, 5000, 10)       # 0.25 bps: 1,250 / lot at 5000
    add(m, "FAST", 2, SELL, 5003, 100)


def test_plan_sweep_takes_the_cheapest_all_in_price_first():
    m = quiet_market()
    book_asks(m)
    assert plan_sweep(m, "AAA", BUY, 25) == [(0, 5001, 5), (1, 5000, 10), (2, 5001, 10)]
    assert plan_sweep(m, "AAA", BUY, 10) == [(1, 5000, 10)]
    assert plan_sweep(m, "AAA", BUY, 28, limit=5001) == [(0, 5001, 8), (1, 5000, 10),
                                                         (2, 5001, 10)]
    assert plan_sweep(m, "AAA", BUY, 1000, limit=5000) == [(1, 5000, 10)]
    assert plan_sweep(m, "AAA", SELL, 10) == []


def test_a_large_taker_fee_outweighs_a_better_price():
    venues = [{"name": "DEAR", "fees": {"taker_per_share": "0.0200"}},
              {"name": "CHEAP", "fees": {"taker_per_share": "0"}}]
    m = quiet_market(venues=venues)
    add(m, "DEAR", 1, BUY, 5000, 10)
    add(m, "CHEAP", 1, BUY, 4999, 10)
    # Selling: 50.00 less 2 cents of fee nets less than 49.99 with none.
    assert plan_sweep(m, "AAA", SELL, 10) == [(1, 4999, 10)]
    assert plan_sweep(m, "AAA", SELL, 15) == [(0, 5000, 5), (1, 4999, 10)]


def test_sweep_fills_the_parent_with_ioc_children_at_the_planned_prices():
    m = quiet_market()
    book_asks(m)
    s = SweepStrategy(m, parent(m, qty=25))
    run(m, s, 1)
    assert s.done and s.filled == 25 and not s.working
    fills = sorted((f.venue, f.price_x2, f.last_qty, f.liquidity) for f in s.fills)
    assert fills == [(0, 10002, 5, Liquidity.LIQ_TAKER), (1, 10000, 10, Liquidity.LIQ_TAKER),
                     (2, 10002, 10, Liquidity.LIQ_TAKER)]
    assert s.fees == 5 * 3000 + 10 * 1250 + 10 * -500
    assert len(s.children) == 3 and s.finished_ts is not None


def test_sweep_waits_and_retries_when_the_book_is_empty():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10)
    s = SweepStrategy(m, parent(m, qty=30), retry="500ms")
    run(m, s, 0.1)
    assert s.filled == 10 and not s.working
    add(m, "INV", 1, SELL, 5002, 50)
    run_more = m.now + S
    m.run_until(run_more)
    assert s.filled == 30 and s.done
    assert [f.venue for f in s.fills] == [0, 2]


def test_twap_trades_one_slice_per_interval():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10_000)
    s = TwapStrategy(m, parent(m, qty=400, seconds=40), slices=4)
    t0 = m.now
    run(m, s, 45)
    assert s.done
    slices = [((f.ts - t0) // (10 * S), f.last_qty) for f in s.fills]
    assert slices == [(0, 100), (1, 100), (2, 100), (3, 100)]
    assert all(f.ts - t0 - k * 10 * S == 100 * US for k, f in enumerate(s.fills))


def test_passive_then_aggressive_rests_on_the_best_rebate_then_sweeps():
    m = quiet_market()
    add(m, "FAST", 1, BUY, 5000, 100)
    add(m, "BPS", 1, SELL, 5002, 1000)
    s = PassiveAggressiveStrategy(m, parent(m, qty=60, seconds=10), passive_fraction=0.5,
                                  reprice="1s")
    run(m, s, 1)
    assert s.venue == 0                                  # FAST pays the most for resting
    child = s.passive_child
    info = m.loop.child(child)
    assert (info["venue"], info["limit"], info["state"]) == (0, 5000, "live")
    add(m, "FAST", 2, SELL, 5000, 130, account=2)        # 100 ahead of us, then 30 of ours
    m.run_until(m.now + S)
    maker = [f for f in s.fills if f.liquidity == Liquidity.LIQ_MAKER]
    assert [(f.last_qty, f.price_x2, f.fee) for f in maker] == [(30, 10000, -2000 * 30)]
    m.run_until(s.parent.start_ns + 6 * S)               # past the switch at 5 s
    assert s.done
    taker = [f for f in s.fills if f.liquidity == Liquidity.LIQ_TAKER]
    assert [(f.venue, f.last_qty, f.price_x2) for f in taker] == [(1, 30, 10004)]
    assert K.RPT_FILL == 6


def test_strategy_registry_and_parameters():
    assert resolve_strategy("twap") is TwapStrategy
    assert resolve_strategy("sim.strategies:SweepStrategy") is SweepStrategy
    with pytest.raises(ValueError, match="unknown strategy"):
        resolve_strategy("vwap9000")
    m = quiet_market()
    with pytest.raises(ValueError, match="unknown parameter"):
        TwapStrategy(m, parent(m), slicez=3)
    assert QUIET["venues"][3]["kind"] == "dark"


def test_a_custom_strategy_sees_only_the_hooks_it_defines():
    class Counting(ExecutionStrategy):
        name = "counting"

        def on_start(self):
            self.seen = []
            self.send(0, 5, 5001)

        def on_fill(self, report):
            self.seen.append(("fill", report.last_qty))

        def on_child_done(self, report):
            self.seen.append(("done", int(report.kind)))

    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 3)
    s = Counting(m, parent(m, qty=5))
    run(m, s, 0.01)
    assert s.seen == [("fill", 3)]
    assert s.working == {s.children[0]: 2} and s.remaining == 2 and s.open_qty == 2
    s.cancel_all()
    m.run_until(m.now + S // 100)
    assert s.seen == [("fill", 3), ("done", int(K.RPT_CANCELED))] and not s.working


# ---------------------------------------------------------------- parameters and limits

@pytest.mark.parametrize("cls,params,message", [
    (SweepStrategy, {"dark_fraction": 3.0}, r"dark_fraction = 3.0: must be a number from 0 to 1"),
    (SweepStrategy, {"dark_fraction": -0.1}, r"dark_fraction"),
    (SweepStrategy, {"dark_fraction": float("nan")}, r"dark_fraction"),
    (SweepStrategy, {"depth": 0}, r"depth = 0: must be an integer from 1 to 1,000,000$"),
    (SweepStrategy, {"retry": "0s"}, r"retry = '0s': must be a duration from 1ms to 24h"),
    (SweepStrategy, {"retry": "soon"}, r"retry"),
    (SweepStrategy, {"limit_ticks": -1}, r"limit_ticks = -1"),
    (TwapStrategy, {"slices": 0}, r"slices = 0: must be an integer from 1 to 100,000$"),
    (TwapStrategy, {"slices": -3}, r"slices = -3"),
    (TwapStrategy, {"slices": 2.5}, r"slices = 2.5"),
    (TwapStrategy, {"slices": True}, r"slices = True"),
    (PassiveAggressiveStrategy, {"passive_fraction": 1.5}, r"passive_fraction"),
    (PassiveAggressiveStrategy, {"reprice": 0}, r"reprice"),
    (PassiveAggressiveStrategy, {"reprice": "1ns"},
     r"reprice = '1ns': must be a duration from 1ms to 24h \(each one wakes"),
    (SweepStrategy, {"retry": 999_999}, r"retry = 999999: must be a duration from 1ms to 24h"),
    # Upper bounds: beyond them a value passed the check and then hung the run
    # (a timer period near 2^63 ns wrapped now + period negative) or failed
    # half-way with OverflowError when it reached the loop's int64 arguments.
    (PeriodicTakerStrategy, {"interval": 2**63 - 1},
     r"interval = 9223372036854775807: must be a duration from 1ms to 24h \(a session"),
    (PeriodicTakerStrategy, {"interval": "25h"}, r"interval = '25h': must be a duration from"),
    (SweepStrategy, {"retry": 2**63 - 1}, r"retry = 9223372036854775807: must be a duration"),
    (PassiveAggressiveStrategy, {"reprice": "1e20s"}, r"reprice = '1e20s'"),
    (PeriodicTakerStrategy, {"child_qty": 2**63},
     r"child_qty = 9223372036854775808: must be an integer from 1 to 2\^63 - 1$"),
    (SweepStrategy, {"depth": 2**31}, r"depth = 2147483648: must be an integer from 1 to "
                                      r"1,000,000$"),
    (TwapStrategy, {"slices": 100_001}, r"slices = 100001: must be an integer from 1 to "
                                        r"100,000$"),
    (SweepStrategy, {"limit_ticks": 2**63 - 1}, r"limit_ticks = 9223372036854775807: must be "
                                                r"an integer from 0 to 10\^15 or omitted$"),
    (PassiveAggressiveStrategy, {"venue": "NOPE"}, r"venue = 'NOPE': must be the name of a lit "
                                                   r"venue \(FAST, BPS, INV\)"),
    (PassiveAggressiveStrategy, {"venue": "POOL"}, r"venue = 'POOL'"),
    (PeriodicTakerStrategy, {"child_qty": 0}, r"child_qty = 0"),
    (PeriodicTakerStrategy, {"venues": []}, r"venues = \[\]"),
    (PeriodicTakerStrategy, {"venues": ["FAST", 9]}, r"venues"),
])
def test_out_of_range_parameters_are_refused_naming_the_parameter(cls, params, message):
    m = quiet_market()
    with pytest.raises(ValueError, match=message):
        cls(m, parent(m), **params)
    with pytest.raises(ValueError, match=message):
        cls.check_params(params, m.venues)


def test_backtest_refuses_bad_parameters_before_running_naming_the_key():
    with pytest.raises(ConfigError, match=r"strategy.params: strategy 'sweep': dark_fraction"):
        Backtest(config(SMALL), strategy="sweep", params={"dark_fraction": 3.0})
    own = {"parents": [{**SMALL["parents"][0], "strategy": "twap", "params": {"slices": 0}}]}
    with pytest.raises(ConfigError, match=r"parents\[0\].params: strategy 'twap': slices = 0"):
        Backtest(config(SMALL, **own))
    with pytest.raises(ConfigError, match=r"strategy.name: unknown strategy 'twapp'"):
        Backtest(config(SMALL), strategy="twapp")
    with pytest.raises(ConfigError, match=r"strategy.name: .*No module named 'nowhere'"):
        Backtest(config(SMALL), strategy="nowhere:Strategy")
    with pytest.raises(ConfigError, match=r"seed = -1"):
        Backtest(config(SMALL), seed=-1)


def dark_contra(m):
    """A valid lit NBBO and 1,000 lots resting in the dark pool to sell at the mid."""
    add(m, "FAST", 1, BUY, 4999, 5)
    add(m, "FAST", 2, SELL, 5001, 5)
    add(m, "POOL", 3, SELL, 0, 1000, account=3)


@pytest.mark.parametrize("cls", [SweepStrategy, PassiveAggressiveStrategy])
def test_a_strategy_never_sends_more_than_the_parent_needs(cls):
    # Defence in depth: the check refuses dark_fraction > 1, but what a strategy
    # sends is bounded by what remains even when a parameter slips through.
    m = quiet_market()
    dark_contra(m)
    s = cls(m, parent(m, qty=20))
    s.params["dark_fraction"] = 3.0
    run(m, s, 1)
    assert s.filled == 20 and sum(f.last_qty for f in s.fills) == 20
    assert {f.venue for f in s.fills} == {3}


@pytest.mark.parametrize("cls", [SweepStrategy, TwapStrategy])
def test_with_nothing_visible_a_dark_ioc_does_not_make_the_sweep_spin(cls):
    # One ask at the limit, then nothing: each round's dark IOC comes back
    # empty; the next round waits `retry` instead of following at once.
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10)
    params = {"slices": 1} if cls is TwapStrategy else {"limit_ticks": 0}
    s = cls(m, parent(m, qty=30, seconds=60), dark_fraction=0.5, retry="1s", **params)
    run(m, s, 5.5)
    assert s.filled == 10
    # Rounds at 0, 1, ..., 5 s: a dark IOC each, and the first lit IOC.
    assert len(s.children) <= 8


def test_a_strategy_cannot_send_more_than_its_parent_needs():
    @register_strategy
    class Greedy(ExecutionStrategy):
        name = "greedy_test"

        def on_start(self):
            bid, ask = self.market.nbbo(self.instrument)
            self.send(0, 3 * self.remaining, ask + 50, LIMIT, IOC)

    small = {"parents": [{**SMALL["parents"][0], "qty": "20"}]}
    with pytest.raises(ValueError, match="a child of 60 lots would overfill the parent: 20 lots"):
        Backtest(config(SMALL, **small), strategy="greedy_test").run()


def test_a_strategy_that_overfills_by_growing_a_child_fails_the_backtest():
    @register_strategy
    class Grower(ExecutionStrategy):
        name = "grower_test"

        def on_start(self):
            bid, ask = self.market.nbbo(self.instrument)
            child = self.send(0, self.remaining, bid - 100, LIMIT, DAY)  # rests, far away
            self.replace(child, ask + 50, 3 * self.remaining)            # then grows and crosses

    small = {"parents": [{**SMALL["parents"][0], "qty": "20"}]}
    with pytest.raises(OverfillError, match=r"parent 1 \(grower_test\): 60 lots filled of 20"):
        Backtest(config(SMALL, **small), strategy="grower_test").run()
