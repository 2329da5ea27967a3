"""When a trading day ends: the instant the day's risk counters start afresh.

``[trading_day]`` in the engine's configuration names a local time of day and
a time zone (``roll_time = "17:00"``, ``timezone = "America/New_York"``): each
day at that time the daily limits (traded notional, realized P&L) count from
zero again. Times are the engine's clock, nanoseconds since the Unix epoch.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

_NS = 1_000_000_000


class TradingDay:
    """The roll instants of a trading day ending at ``roll_time`` local time in ``timezone``.

    Parameters
    ----------
    roll_time : datetime.time
        Local time of day at which a trading day ends and the next begins.
    timezone : str
        IANA time zone name (``"UTC"``, ``"America/New_York"``); the roll
        follows its daylight saving changes.
    """

    def __init__(self, roll_time: dt.time, timezone: str = "UTC"):
        self.roll_time = roll_time
        self.zone = ZoneInfo(timezone)

    def settings(self) -> tuple[str, str]:
        """The roll time and zone, as the configuration gives them (equal settings: the same
        roll instants)."""
        return self.roll_time.isoformat(), self.zone.key

    def _roll_on(self, day: dt.date) -> int:
        """The roll instant on local date ``day`` (ns since the epoch)."""
        roll = dt.datetime.combine(day, self.roll_time, tzinfo=self.zone)
        return int(roll.timestamp()) * _NS + roll.microsecond * 1000

    def next_roll(self, now_ns: int) -> int:
        """The first roll instant after ``now_ns`` (ns since the epoch)."""
        day = dt.datetime.fromtimestamp(now_ns // _NS, tz=self.zone).date()
        while (roll := self._roll_on(day)) <= now_ns:
            day += dt.timedelta(days=1)
        return roll

    def last_roll(self, ns: int) -> int:
        """The last roll instant at or before ``ns`` (ns since the epoch)."""
        day = dt.datetime.fromtimestamp(ns // _NS, tz=self.zone).date()
        while (roll := self._roll_on(day)) > ns:
            day -= dt.timedelta(days=1)
        return roll

    def day_of(self, ns: int) -> dt.date:
        """The trading day ``ns`` belongs to, named by the calendar date that holds most of
        its hours: the date it starts on for a roll before noon (a midnight roll names
        each day by its own date), the date it ends on for a roll at noon or later (17:00
        New York: the evening belongs to the next date, as futures count it)."""
        edge = self.next_roll(ns) if self.roll_time >= dt.time(12, 0) else self.last_roll(ns)
        return dt.datetime.fromtimestamp(edge // _NS, tz=self.zone).date()
