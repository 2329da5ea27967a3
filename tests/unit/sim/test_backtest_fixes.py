"""Regression tests: ``limit_ticks`` in every sweeping strategy, totals across
instruments of different tick and lot sizes, and bounded latency parameters.

Every expected value is worked out by hand from the orders a test places on a
quiet market (no background flow, fixed latencies), not from the code under
test.
"""
import json
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ext.book import OP_ADD
from ext.simloop import Liquidity
from sim.backtest import Backtest, BacktestResult
from sim.config import ConfigError
from sim.latency import LatencyModel, LatencySpec
from sim.strategies import (
    ParentOrder, PassiveAggressiveStrategy, SweepStrategy, TwapStrategy,
)
from tests.unit.sim.helpers import (
    BUY, GTC, IOC, LIMIT, QUIET, SELL, SMALL, STP_NONE, add, cancel, config, quiet_market,
)

S = 1_000_000_000
ROOT = Path(__file__).resolve().parents[3]
FAST = 0                           # venue index of FAST in the quiet market
MAKER, TAKER = Liquidity.LIQ_MAKER, Liquidity.LIQ_TAKER


def parent(m, side=BUY, qty=25, seconds=60, symbol="AAA", parent_id=1):
    return ParentOrder(parent_id, symbol, side, qty, m.now, m.now + seconds * S)


def start(m, strat):
    m.set_timer(strat.parent.start_ns, strat.start)
    m.set_timer(strat.parent.end_ns, strat.stop)


def run_for(m, seconds):
    m.run_until(m.now + int(seconds * S))


def fills(strat):
    return sorted((f.venue, f.price_x2, f.last_qty, f.liquidity) for f in strat.fills)


# ---------------------------------------------------------------- 1. limit_ticks

# (class, parameters making it sweep at once): twap in one slice,
# passive_aggressive with no passive phase.
SWEEPERS = [
    (SweepStrategy, {}),
    (TwapStrategy, {"slices": 1}),
    (PassiveAggressiveStrategy, {"passive_fraction": 0.0, "venue": "FAST"}),
]


@pytest.mark.parametrize("cls,params", SWEEPERS, ids=lambda x: getattr(x, "name", ""))
def test_no_lit_fill_beyond_the_arrival_ask_plus_limit_ticks(cls, params):
    # Arrival ask 50.01, limit_ticks 1: the limit is 50.02. The 10 lots at
    # 50.01 fill; the 100 at 50.03 are beyond it and stay, retry after retry.
    m = quiet_market()
    add(m, "FAST", 1, BUY, 4999, 5)
    add(m, "FAST", 2, SELL, 5001, 10)
    add(m, "FAST", 3, SELL, 5003, 100)
    s = cls(m, parent(m, qty=25), limit_ticks=1, retry="1s", **params)
    start(m, s)
    run_for(m, 3.5)
    assert s.limit == 5002
    assert fills(s) == [(FAST, 10002, 10, TAKER)]
    assert s.filled == 10


@pytest.mark.parametrize("cls,params", SWEEPERS[:2], ids=lambda x: getattr(x, "name", ""))
def test_a_dark_ioc_does_not_fill_at_a_mid_beyond_the_limit(cls, params):
    # A buy of 10, half to the dark pool, limit_ticks 0: limit 50.01. The 5
    # lots at 50.01 fill, the first dark IOC finds nobody. Then the market
    # jumps (bid 50.08, ask 50.10: mid 50.09) and a seller rests in the
    # pool: the retries' dark IOCs would buy at 50.09, beyond the limit.
    m = quiet_market()
    add(m, "FAST", 1, BUY, 4999, 5)
    add(m, "FAST", 2, SELL, 5001, 5)
    s = cls(m, parent(m, qty=10), limit_ticks=0, dark_fraction=0.5, retry="1s", **params)
    start(m, s)
    run_for(m, 0.5)
    assert fills(s) == [(FAST, 10002, 5, TAKER)]
    add(m, "INV", 3, BUY, 5008, 5)
    add(m, "INV", 4, SELL, 5010, 5)
    add(m, "POOL", 5, SELL, 0, 1000, account=3)
    run_for(m, 3)
    assert fills(s) == [(FAST, 10002, 5, TAKER)]
    assert s.filled == 5 and len(s.children) > 3          # it did retry, dark included


def test_passive_aggressive_rests_and_pegs_inside_the_limit():
    # A buy of 10 resting for the whole window, half pegged in the dark pool,
    # limit_ticks 0: limit 50.01 (the arrival ask). The market jumps to bid
    # 50.08 / ask 50.10 on INV. The reprice follows the touch only up to
    # 50.01; the dark peg, limited at 50.01, does not buy at the 50.09 mid.
    m = quiet_market()
    add(m, "FAST", 1, BUY, 4999, 5)
    add(m, "FAST", 2, SELL, 5001, 5)
    s = PassiveAggressiveStrategy(m, parent(m, qty=10), limit_ticks=0, dark_fraction=0.5,
                                  passive_fraction=1.0, reprice="1s", venue="FAST")
    start(m, s)
    run_for(m, 0.5)
    assert s.passive_price == 4999 and not s.fills
    cancel(m, "FAST", 2)
    add(m, "INV", 3, BUY, 5008, 5)
    add(m, "INV", 4, SELL, 5010, 5)
    add(m, "POOL", 5, SELL, 0, 1000, account=3)
    run_for(m, 1)                                          # the reprice at 1 s
    assert s.passive_price == 5001
    # A seller on FAST meets the best bid there: ours, at 50.01 (not 50.08).
    add(m, "FAST", 6, SELL, 4990, 5, tif=IOC)
    run_for(m, 0.5)
    assert fills(s) == [(FAST, 10002, 5, MAKER)]
    assert s.filled == 5


# ---------------------------------------------------------------- 2. totals

MIXED = {
    "instruments": [
        # A fee unit (1e-4 tick x lot) is $0.0005 for AAA and $0.000000005 for BBB.
        {"symbol": "AAA", "tick_size": "0.05", "lot_size": "100", "price": "50.00"},
        {"symbol": "BBB", "tick_size": "0.0001", "lot_size": "0.5", "price": "120.00"},
    ],
    "flow": {"taker_qty": "200"},                         # a multiple of both lot sizes
    "parents": [{"symbol": "AAA", "side": "buy", "qty": "1000"},
                {"symbol": "BBB", "side": "sell", "qty": "1000"}],
}


def external(m, venue, symbol, order_id, side, price, qty, tif=GTC):
    return m.loop.external(m.book_index(venue, symbol), OP_ADD, order_id, side, price, qty,
                           LIMIT, tif, 2, STP_NONE)


def test_totals_add_shares_and_currency_not_lots_and_half_ticks(tmp_path):
    m = quiet_market(**MIXED)
    # AAA (ticks of $0.05, lots of 100): bid 49.95, ask 50.05 x 4 lots, 50.15
    # x 100 lots. Buy 1,000 shares (10 lots), limit_ticks 0: 400 shares at
    # 50.05, the rest stays unfilled.
    external(m, "FAST", "AAA", 1, BUY, 999, 10)
    external(m, "FAST", "AAA", 2, SELL, 1001, 4)
    external(m, "FAST", "AAA", 3, SELL, 1003, 100)
    # BBB (ticks of $0.0001, lots of 0.5): bid 119.99 x 2,000 lots, ask
    # 120.01. Sell 1,000 shares (2,000 lots): all at 119.99.
    external(m, "FAST", "BBB", 1, BUY, 1_199_900, 2000)
    external(m, "FAST", "BBB", 2, SELL, 1_200_100, 10)
    aaa = SweepStrategy(m, parent(m, BUY, 10, symbol="AAA"), limit_ticks=0)
    bbb = SweepStrategy(m, parent(m, SELL, 2000, symbol="BBB", parent_id=2))
    start(m, aaa)
    start(m, bbb)
    run_for(m, 10)
    # Someone else buys 10 AAA lots at 50.15 inside AAA's window: AAA's
    # market VWAP is (4 x 50.05 + 10 x 50.15) / 14; the 50.15 level remains.
    external(m, "FAST", "AAA", 4, BUY, 1003, 10, tif=IOC)
    run_for(m, 52)                                         # past both windows' ends
    assert aaa.filled == 4 and bbb.filled == 2000 and bbb.done
    result = BacktestResult(m.config, m, [aaa, bbb], 0.0)
    t = result.totals

    # By hand, in shares and dollars.
    assert t["qty"] == Decimal(1000 + 1000) and t["filled"] == Decimal(400 + 1000)
    assert t["fill_rate"] == 0.7
    # Paid beyond arrival: AAA 400 x (50.05 - 50.00) = 20, BBB 1,000 x
    # (120.00 - 119.99) = 10. Taker fees $0.0030 a share: 1.20 + 3.00.
    arrival_value = Fraction(400 * 50 + 1000 * 120)
    assert t["shortfall"] == Decimal(30) and t["fees"] == Decimal("4.2")          # exact
    assert t["shortfall_bps"] == float(30 * 10_000 / arrival_value)
    assert t["fee_bps"] == float(Fraction("4.2") * 10_000 / arrival_value)
    # Perold per parent, in dollars: AAA 20 + 1.20 and the 600 unfilled
    # shares x (end mid (49.95 + 50.15) / 2 = 50.05, less 50.00) = 30;
    # BBB 10 + 3. Over the parents' arrival notionals, 50,000 and 120,000.
    is_dollars = Fraction("20") + Fraction("1.2") + 600 * Fraction("0.05") + 10 + 3
    assert t["is_total_bps"] == float(is_dollars * 10_000 / 170_000)
    # VWAP slippage: AAA (50.05 - vwap) / vwap with vwap = 50.05 x 4/14 +
    # 50.15 x 10/14; BBB sold at its own fill, the only trade: 0.
    vwap = (Fraction("50.05") * 4 + Fraction("50.15") * 10) / 14
    aaa_slip = (Fraction("50.05") - vwap) / vwap
    assert t["vwap_slippage_bps"] == float((50_000 * aaa_slip + 120_000 * 0) * 10_000
                                           / 170_000)
    assert t["vwap_slippage_bps"] == pytest.approx(-4.191501, abs=1e-6)

    # The summary file has the share totals as exact JSON numbers.
    result.write(tmp_path, formats=("csv",))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["qty"] == 2000 and summary["totals"]["filled"] == 1400


def test_share_totals_keep_fractional_shares_exact(tmp_path):
    # BBB lots are half shares: 3 lots are 1.5 shares, written as such.
    m = quiet_market(**MIXED)
    external(m, "FAST", "BBB", 1, BUY, 1_199_900, 3)
    bbb = SweepStrategy(m, parent(m, SELL, 5, symbol="BBB"), limit_ticks=0)
    start(m, bbb)
    run_for(m, 61)
    result = BacktestResult(m.config, m, [bbb], 0.0)
    assert result.totals["qty"] == Decimal("2.5") and result.totals["filled"] == Decimal("1.5")
    assert result.totals["fill_rate"] == 0.6
    result.write(tmp_path, formats=("csv",))
    text = (tmp_path / "summary.json").read_text()
    assert '"qty": 2.5' in text and '"filled": 1.5' in text


# ---------------------------------------------------------------- 3. latency bounds

ONE_DAY_US = 86_400_000_000


@pytest.mark.parametrize("key,value", [
    ("mean_us", 1e17), ("mean_us", 7.5e15), ("mean_us", ONE_DAY_US + 1.0),
    ("std_us", 1e16), ("median_us", 1e16), ("min_us", 1e16),
])
def test_a_latency_beyond_one_day_is_a_configuration_error(key, value):
    model = "lognormal" if key == "median_us" else "normal"     # (the model that reads it)
    venues = [{**QUIET["venues"][0], "latency": {"model": model, key: value}}]
    with pytest.raises(ConfigError) as err:
        config(QUIET, venues=venues)
    assert str(err.value) == (f"venues[0].latency: latency {key} = {value!r}: "
                              "must be at most 86400000000 (one day)")


def test_a_log_normal_sigma_above_10_is_a_configuration_error():
    venues = [{**QUIET["venues"][0], "latency": {"model": "lognormal", "sigma": 10.5}}]
    with pytest.raises(ConfigError, match=r"^venues\[0\].latency: latency sigma = 10.5: "
                                          r"must be at most 10$"):
        config(QUIET, venues=venues)


def test_one_day_is_accepted_and_draws_never_pass_it():
    fixed = LatencyModel(LatencySpec("fixed", mean_us=float(ONE_DAY_US)), seed=1)
    assert fixed.sample(2).tolist() == [ONE_DAY_US * 1_000] * 2
    # A one-day median with the widest sigma: half the draws are beyond a
    # day (some beyond int64 ns before the cap) and come back as exactly one day.
    wide = LatencyModel(LatencySpec("lognormal", median_us=float(ONE_DAY_US), sigma=10.0,
                                    min_us=0.0), seed=3).sample(10_000)
    assert wide.dtype == np.int64 and wide.min() >= 0
    assert wide.max() == ONE_DAY_US * 1_000 and (wide == ONE_DAY_US * 1_000).sum() > 4_000
    normal = LatencyModel(LatencySpec("normal", mean_us=float(ONE_DAY_US),
                                      std_us=float(ONE_DAY_US)), seed=4).sample(1_000)
    assert normal.min() >= 1_000 and normal.max() == ONE_DAY_US * 1_000


@pytest.mark.parametrize("mean_us", ["1e17", "7.5e15"])
def test_kronos_exec_sim_refuses_a_huge_latency_with_exit_2_and_one_line(tmp_path, mean_us):
    text = (ROOT / "sim/configs/default.toml").read_text()
    old = 'latency = { model = "fixed", mean_us = 80.0 }'
    assert old in text
    path = tmp_path / "biglat.toml"
    path.write_text(text.replace(old, f'latency = {{ model = "fixed", mean_us = {mean_us} }}'))
    kronos = Path(sys.executable).parent / "kronos-exec"
    proc = subprocess.run([str(kronos), "sim", "-c", str(path), "-s", "sweep", "--no-progress",
                           "--no-plots", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [f"kronos-exec sim: venues[2].latency: latency mean_us = "
                     f"{float(mean_us)!r}: must be at most 86400000000 (one day)"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- stop 31 audit
@pytest.mark.parametrize("latency,foreign", [
    ({"model": "lognormal", "mean_us": 5000.0}, "mean_us"),
    ({"model": "fixed", "mean_us": 80.0, "sigma": 0.3, "std_us": 5.0}, "sigma, std_us"),
    ({"model": "normal", "median_us": 80.0}, "median_us"),
])
def test_a_latency_key_of_another_model_is_refused(latency, foreign):
    # It was dropped: a lognormal venue with mean_us 5000 ran at the default 100 µs.
    venues = [{**QUIET["venues"][0], "latency": latency}]
    with pytest.raises(ConfigError, match=rf"^venues\[0\].latency: {foreign} do\(es\) not "
                                          rf"apply to model '{latency['model']}'"):
        config(QUIET, venues=venues)


@pytest.mark.parametrize("start", ["10:00:00+05:00", "10:01:00Z"])
def test_a_time_of_day_with_a_utc_offset_is_refused(start):
    # The offset was dropped: +05:00 ran at 10:00 UTC.
    parents = [{"symbol": "AAA", "side": "buy", "qty": "1", "start": start}]
    with pytest.raises(ConfigError, match="times of day are UTC, write it without an offset"):
        config(QUIET, parents=parents)


def test_a_boolean_count_is_refused():
    with pytest.raises(ConfigError, match=r"^flow.max_orders must be int, got bool$"):
        config(SMALL, flow={**SMALL["flow"], "max_orders": True})


def test_the_callers_params_win_over_a_parents_own():
    # `-p slices=20` used to be ignored for a parent with its own params.
    own = [{**SMALL["parents"][0], "params": {"slices": 2}},
           {**SMALL["parents"][0], "strategy": "twap", "params": {"slices": 5}},
           {**SMALL["parents"][0]}]
    bt = Backtest(config(SMALL, parents=own), params={"slices": 3})
    assert [p.params.get("slices", 3) for p in bt.config.parents] == [3, 3, 3]
    assert bt.config.strategy.params["slices"] == 3


def test_the_unfilled_part_after_the_venues_close_is_costed_at_their_last_quote():
    # The lit venues close at 10:01 while the parent runs to 10:01:30 and
    # cannot fill in full: its end mid is the last two-sided NBBO sampled,
    # not the arrival price (which made the unfilled part cost nothing).
    venues = [{**v, "hours": ["09:30:00", "10:01:00"]} if v.get("kind") != "dark" else v
              for v in SMALL["venues"]]
    parents = [{**SMALL["parents"][0], "qty": "10000000"}]
    bt = Backtest(config(SMALL, venues=venues, parents=parents))
    result = bt.run()
    (s,) = bt.strategies
    samples = bt.market.samples()["AAA"]
    two_sided = np.flatnonzero((samples["bid"] > 0) & (samples["ask"] > 0))
    last = two_sided[-1]
    assert samples["ts"][last] <= bt.parent_orders()[0].start_ns + 60 * S   # before the close
    assert s.end_mid_x2 == int(samples["bid"][last] + samples["ask"][last]) != s.arrival_x2
    (row,) = result.orders
    unfilled = 1 - row["filled"] / row["qty"]
    opportunity = (s.end_mid_x2 - s.arrival_x2) / s.arrival_x2 * 1e4
    assert row["is_total_bps"] == pytest.approx(
        (row["shortfall_bps"] + row["fee_bps"]) * (1 - unfilled) + opportunity * unfilled)
    assert result.totals["is_total_bps"] == pytest.approx(row["is_total_bps"])


def test_a_parent_whose_notional_cannot_fit_is_refused_before_the_run():
    # Was: the whole session ran, then OverflowError with a traceback and no output.
    fine = [{"symbol": "AAA", "tick_size": "0.0001", "lot_size": "0.000001",
             "price": "5000.0000"}]
    parents = [{"symbol": "AAA", "side": "buy", "qty": "100000"}]
    with pytest.raises(ConfigError, match=r"^parents\[0\].qty: 100000 AAA at twice its price "
                                          r"5000.0000 would pass 2\^63 - 1"):
        Backtest(config(QUIET, instruments=fine, parents=parents))
    # 40,000 shares fit: 4e10 lots x 2 x (2 x 5e7 half-ticks) = 8e18 < 2^63.
    Backtest(config(QUIET, instruments=fine, parents=[{**parents[0], "qty": "40000"}]))


class OverflowingStrategy(SweepStrategy):
    """Stands for a sum past int64 that the set-up could not foresee."""

    def on_start(self):
        raise OverflowError("a parent's filled notional passed 2^63 - 1; use a coarser "
                            "tick_size or lot_size for this instrument")


def test_kronos_exec_sim_reports_an_overflow_in_the_run_as_one_line(tmp_path, capsys):
    from engine.cli import main
    code = main(["sim", "-s", "tests.unit.sim.test_backtest_fixes:OverflowingStrategy",
                 "--no-progress", "--no-plots", "-o", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kronos-exec sim: a parent's filled notional passed 2^63 - 1; use a coarser "
                   "tick_size or lot_size for this instrument"]
