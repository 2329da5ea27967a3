"""Trading day roll instants: local time of day, time zones, daylight saving."""
import datetime as dt

import pytest

from engine.config import ConfigError, parse_config
from engine.tradingday import TradingDay

NY = "America/New_York"
BASE = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7001"]\nallow_plaintext = true\n'


def ns(text: str, zone: str = "UTC") -> int:
    """A local time as ns since the epoch."""
    from zoneinfo import ZoneInfo
    local = dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(local.timestamp()) * 10**9


@pytest.mark.parametrize("now, roll", [
    ("2026-03-06 12:00", "2026-03-06 22:00"),   # 17:00 EST is 22:00 UTC
    ("2026-03-06 17:00", "2026-03-07 22:00"),   # exactly at the roll: the next one
    ("2026-03-08 12:00", "2026-03-08 21:00"),   # daylight saving: 17:00 EDT is 21:00 UTC
])
def test_next_roll_follows_the_zone(now, roll):
    day = TradingDay(dt.time(17, 0), NY)
    assert day.next_roll(ns(now, NY)) == ns(roll)


def test_a_day_is_named_by_the_date_its_roll_ends_it_on():
    day = TradingDay(dt.time(17, 0), NY)
    assert day.day_of(ns("2026-03-06 16:59", NY)) == dt.date(2026, 3, 6)
    assert day.day_of(ns("2026-03-06 17:00", NY)) == dt.date(2026, 3, 7)


def test_midnight_utc_by_default():
    config = parse_config(BASE)
    assert (config.trading_day.roll_time, config.trading_day.timezone) == ("00:00", "UTC")


@pytest.mark.parametrize("section, key", [
    ('roll_time = "24:00"', "trading_day.roll_time"),
    ('roll_time = "5pm"', "trading_day.roll_time"),
    ('timezone = "Mars/Olympus"', "trading_day.timezone"),
])
def test_a_bad_roll_is_refused_naming_the_key(section, key):
    with pytest.raises(ConfigError, match=key):
        parse_config(BASE + "[trading_day]\n" + section + "\n")


@pytest.mark.parametrize("roll_time, zone, at, named", [
    # (Before, a midnight roll named each day by the next date: an order placed on
    # 12-07 "expired at the end of trading day 2026-12-08".)
    (dt.time(0, 0), "UTC", "2026-12-07 10:00", dt.date(2026, 12, 7)),
    (dt.time(0, 0), "Asia/Tokyo", "2026-12-07 23:59", dt.date(2026, 12, 7)),
    (dt.time(2, 30), NY, "2026-03-07 12:00", dt.date(2026, 3, 7)),
    (dt.time(2, 30), NY, "2026-03-07 01:00", dt.date(2026, 3, 6)),
    (dt.time(16, 0), "Europe/London", "2026-06-01 15:00", dt.date(2026, 6, 1)),
])
def test_a_day_is_named_by_the_date_that_holds_most_of_it(roll_time, zone, at, named):
    assert TradingDay(roll_time, zone).day_of(ns(at, zone)) == named


@pytest.mark.parametrize("at, last", [
    ("2026-03-09 12:00", "2026-03-08 17:00"),   # across the daylight saving change
    ("2026-03-08 17:00", "2026-03-08 17:00"),   # exactly at a roll: that one
])
def test_last_roll_is_the_roll_at_or_before(at, last):
    day = TradingDay(dt.time(17, 0), NY)
    assert day.last_roll(ns(at, NY)) == ns(last, NY)
    assert day.next_roll(day.last_roll(ns(at, NY))) > ns(at, NY)
