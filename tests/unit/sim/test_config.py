"""Configuration, fee conversion, latency models and time parsing."""
from decimal import Decimal

import numpy as np
import pytest

from ext.instrument import Instrument
from sim.clock import at, format_ts, parse_date, parse_duration, parse_time_of_day
from sim.config import ConfigError, load_config
from sim.fees import FeeSchedule, fee_units, units_to_currency
from sim.latency import LatencyModel, LatencySpec
from tests.unit.sim.helpers import QUIET, SMALL, config


def test_default_configuration_has_three_lit_venues_and_a_dark_pool():
    c = load_config()
    lit = [v for v in c.venues if not v.dark]
    dark = [v for v in c.venues if v.dark]
    assert len(lit) >= 3 and len(dark) >= 1
    assert len({v.fees for v in lit}) == len(lit)                 # different fees
    assert len({v.latency for v in c.venues}) == len(c.venues)    # different latencies
    assert c.parents and c.strategy.name == "twap"


@pytest.mark.parametrize("section,value,message", [
    ("session", {"start": "10:00:00", "end": "09:00:00"}, "after session.start"),
    ("session", {"colour": "red"}, "unknown key"),
    ("instruments", [{"symbol": "AAA", "price": 50.0}], "write it as a string"),
    ("instruments", [{"symbol": "AAA", "price": "50.001"}], "multiple of"),
    ("venues", [{"name": "A", "kind": "grey"}], "kind"),
    ("venues", [{"name": "A"}, {"name": "A"}], "duplicate venue"),
    # Audit (stop 33): fills came back with venue "", and NEXA and nexa were two venues.
    ("venues", [{"name": "A"}, {"name": "a"}], "duplicate venue name"),
    ("venues", [{"name": ""}], r"venues\[0\]\.name '': expected a venue's name"),
    ("venues", [{"name": " A"}], "no spaces around it"),
    ("venues", [{"name": "D", "kind": "dark"}], "lit venue"),
    ("venues", [{"name": "A", "latency": {"model": "gamma"}}], "latency model"),
    ("venues", [{"name": "A", "fees": {"taker_bps": "0.001"}}], "two decimals"),
    ("parents", [{"symbol": "ZZZ", "side": "buy", "qty": "1"}], "not an instrument"),
    ("parents", [{"symbol": "AAA", "side": "short", "qty": "1"}], "side"),
    ("flow", {"depth_decay": 0.0}, "depth_decay"),
])
def test_invalid_configuration_is_refused_with_a_pointed_message(section, value, message):
    with pytest.raises(ConfigError, match=message):
        config(QUIET, **{section: value})


def test_fee_schedule_converts_exactly():
    cents = Instrument("A", "0.01", "1")
    fx = Instrument("B", "0.0001", "1000")
    fees = FeeSchedule(maker_per_share="-0.0020", taker_per_share="0.0030",
                       maker_bps="-0.10", taker_bps="0.25")
    assert fees.per_lot_units(cents) == (-2000, 3000)
    assert fees.per_lot_units(fx) == (-200_000, 300_000)
    assert fees.cbps() == (-10, 25)
    with pytest.raises(ValueError, match="finer than one fee unit"):
        FeeSchedule(taker_per_share="0.0000001").per_lot_units(cents)
    # 3,000 fee units per lot = $0.0030 per share, exactly.
    assert units_to_currency(3000, cents) == Decimal("0.003")
    assert units_to_currency(300_000, fx) == Decimal("3")        # lot of 1000 at 0.003


def test_fee_rounding_is_half_away_from_zero():
    assert fee_units(0, 25, 10002, 2) == 2501        # +2500.5
    assert fee_units(0, -25, 10002, 2) == -2501      # -2500.5
    assert fee_units(0, 25, 10002, 7) == 8752        # 8751.75
    assert fee_units(100, -10, 10002, 3) == 300 - 1500


def test_latency_models_are_seeded_and_floored():
    fixed = LatencyModel(LatencySpec("fixed", mean_us=250), seed=1)
    assert fixed.sample(3).tolist() == [250_000] * 3
    spec = LatencySpec("lognormal", median_us=100, sigma=0.5, min_us=20)
    a, b, c = LatencyModel(spec, 7).sample(1000), LatencyModel(spec, 7).sample(1000), \
        LatencyModel(spec, 8).sample(1000)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 20_000 and 80_000 < np.median(a) < 120_000
    normal = LatencyModel(LatencySpec("normal", mean_us=50, std_us=100, min_us=5), 2).sample(500)
    assert normal.min() == 5_000 and normal.dtype == np.int64
    with pytest.raises(ValueError):
        LatencySpec("fixed", mean_us=-1)


def test_time_parsing():
    assert parse_duration("30m") == 1_800_000_000_000
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration("250ms") == 250_000_000
    assert parse_duration(12) == 12
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert parse_time_of_day("09:30") == (9 * 60 + 30) * 60 * 10**9
    assert parse_time_of_day("24:00") == 86_400 * 10**9
    ts = at(parse_date("2026-01-05"), "10:00:00.000001")
    assert format_ts(ts) == "2026-01-05 10:00:00.000001"


def test_config_paths_resolve_against_the_file(tmp_path):
    replay = load_config("sim/configs/replay.toml")
    assert replay.resolve(replay.replay.quotes).is_file()
    data = dict(SMALL)
    text = (f'[session]\nseed = 3\n[[instruments]]\nsymbol = "X"\n'
            f'[[venues]]\nname = "V"\n')
    (tmp_path / "c.toml").write_text(text)
    c = load_config(tmp_path / "c.toml")
    assert c.session.seed == 3 and c.base_dir == str(tmp_path) and data


INF, NAN = float("inf"), float("nan")
VENUE = {"name": "A", "hours": ["09:30:00", "16:00:00"]}


@pytest.mark.parametrize("section,value,message", [
    # Non-finite numbers (valid TOML) would stall the flow generator.
    ("flow", {"lp_rate": INF}, r"flow.lp_rate = inf: must be a finite number"),
    ("flow", {"lp_rate": NAN}, r"flow.lp_rate = nan: must be a finite number"),
    ("flow", {"half_spread_ticks": NAN}, r"flow.half_spread_ticks = nan"),
    ("flow", {"lp_rate": 1e300}, r"background events per simulated second"),
    ("instruments", [{"symbol": "AAA", "volatility": NAN}], r"instruments\[0\].volatility = nan"),
    ("instruments", [{"symbol": "AAA", "activity": INF}], r"instruments\[0\].activity = inf"),
    ("venues", [{"name": "A", "flow_scale": INF}], r"venues\[0\].flow_scale = inf"),
    ("venues", [{"name": "A", "latency": {"mean_us": NAN}}], r"venues\[0\].latency.mean_us = nan"),
    ("venues", [{"name": "A", "latency": {"seed": -5}}], r"venues\[0\].latency.seed = -5"),
    ("session", {"seed": -1}, r"session.seed = -1: must be an integer from 0"),
    ("session", {"seed": 2 ** 64}, r"session.seed"),
    ("venues", [{"name": "A", "hours": ["09:30:00", 16]}], r"venues\[0\].hours must be"),
    # Known only per instrument: fees and flow sizes on the instrument's grid.
    ("venues", [{"name": "A", "fees": {"maker_per_share": "abc"}}],
     r"venues\[0\].fees: maker_per_share: 'abc' is not a decimal"),
    ("venues", [{"name": "A", "fees": {"taker_per_share": "0.00000001"}}],
     r"venues\[0\].fees: taker_per_share .* finer than one fee unit"),
    ("flow", {"lp_qty": "0"}, r"flow.lp_qty: qty must be positive"),
    ("instruments", [{"symbol": "AAA", "lot_size": "100"}],
     r"flow.taker_qty: qty '150' is not a multiple of 100 \(instrument AAA, lot_size 100\)"),
    # Parents that could not execute.
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "0"}], r"parents\[0\].qty: .*positive"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1.5"}], r"parents\[0\].qty"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1", "duration": "0s"}],
     r"parents\[0\]: the window 10:00:00 to 10:00:00 is empty"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1", "start": "09:00:00",
                  "duration": "8s"}], r"parents\[0\]: the window .* is not inside the session"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1", "start": "10:05:00",
                  "duration": "10m"}], r"not inside the session"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1", "account": 1}],
     r"parents\[0\].account = 1: accounts 1-4 are the background flow's and 5-6 the replay's"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1", "account": 6}], r"account = 6"),
    ("output", {"formats": ["CSV"]}, r"output.formats: unknown format\(s\) 'CSV'"),
    ("replay", {"quotes": "/nonexistent/q.csv"}, r"replay.quotes: no such file"),
    # What would take memory without bound (a traceback or gigabytes mid-run).
    ("flow", {"chunk_events": 1 << 40}, r"^flow.chunk_events = 1099511627776: must be at most "
                                        r"1,048,576$"),
    ("flow", {"max_orders": 10 ** 9}, r"^flow.max_orders = 1000000000: must be at most"),
    ("flow", {"dark_max_orders": 10 ** 9}, r"^flow.dark_max_orders = 1000000000"),
    ("session", {"start": "10:00:00", "end": "10:30:00", "sample_interval": "1us"},
     r"^session.sample_interval = '1us' takes 1,8\d0,000,000 samples over the session; "
     r"at most 2,000,000"),
    # Sizes are whole qty_units: a smaller mean was raised to one unit, silently.
    ("flow", {"lp_qty": "50"}, r"^flow.lp_qty = '50' is below flow.qty_unit = '100'"),
    ("flow", {"taker_qty": "99"}, r"^flow.taker_qty = '99' is below"),
])
def test_values_that_would_hang_or_execute_nothing_are_refused_at_load(section, value, message):
    with pytest.raises(ConfigError, match=message):
        config(QUIET, **{section: value})


def test_a_parent_window_outside_every_lit_venues_hours_is_refused():
    late = [{**v, "hours": ["14:00:00", "16:00:00"]} if v.get("kind") != "dark" else v
            for v in QUIET["venues"]]
    with pytest.raises(ConfigError, match=r"parents\[0\]: .* outside every lit venue's hours"):
        config(QUIET, venues=late)
    # One lit venue open for part of the window is enough.
    config(QUIET, venues=[{**late[0], "hours": ["10:05:00", "16:00:00"]}] + late[1:])


def test_latency_spec_refuses_non_finite_values():
    for bad in (NAN, INF):
        with pytest.raises(ValueError, match="mean_us"):
            LatencySpec("fixed", mean_us=bad)
