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
