"""Simulated and wall-clock time, and the text formats times are written in.

Role in the pipeline: every timestamp in ``sim/`` is an integer count of
nanoseconds since the Unix epoch. A backtest runs on simulated time (the
event loop jumps from one event to the next, as fast as it can, so the result
depends only on the inputs and the seed); the engine's real-time mode maps
the same simulated time onto the event loop's monotonic clock. Configuration
writes times of day as ``"HH:MM:SS[.ffffff]"`` and durations as ``"30m"``;
this module turns both into nanoseconds. Times of day are taken on the
session's date in UTC: the simulator does not model time zones.
"""
from __future__ import annotations

import datetime as _dt
import re
import time

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_US = 1_000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|min|h)\s*$")
_UNIT_NS = {"ns": 1, "us": NS_PER_US, "ms": NS_PER_MS, "s": NS_PER_S, "m": 60 * NS_PER_S,
            "min": 60 * NS_PER_S, "h": 3600 * NS_PER_S}


def parse_duration(text: str | int) -> int:
    """A duration such as ``"30m"``, ``"90s"``, ``"250ms"`` or ``"1.5h"`` in ns.

    Parameters
    ----------
    text : str or int
        The duration; an ``int`` is already nanoseconds.

    Returns
    -------
    int
        Nanoseconds.

    Raises
    ------
    ValueError
        If the text is not a number followed by ns, us, ms, s, m, min or h.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration {text} is negative")
        return text
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"duration {text!r}: expected a number and a unit (ns, us, ms, s, m, h)")
    number, unit = match.groups()
    # Exact for the integer and short-decimal values configuration uses; a
    # duration is a time span, not money, so a float step is harmless here.
    whole, _, frac = number.partition(".")
    ns = int(whole) * _UNIT_NS[unit]
    if frac:
        ns += int(frac) * _UNIT_NS[unit] // 10 ** len(frac)
    return ns


def parse_date(text: str) -> _dt.date:
    """A session date ``"YYYY-MM-DD"``."""
    try:
        return _dt.date.fromisoformat(str(text))
    except ValueError as exc:
        raise ValueError(f"date {text!r}: expected YYYY-MM-DD") from exc


def parse_time_of_day(text: str) -> int:
    """``"HH:MM[:SS[.ffffff]]"`` as ns after midnight (``"24:00"`` is the end of the day)."""
    text = str(text).strip()
    if text in ("24:00", "24:00:00"):
        return 24 * 3600 * NS_PER_S
    try:
        t = _dt.time.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"time {text!r}: expected HH:MM:SS") from exc
    if t.tzinfo is not None:
        # Every time here is UTC: an offset would be dropped, not applied.
        raise ValueError(f"time {text!r}: times of day are UTC, write it without an offset")
    return ((t.hour * 60 + t.minute) * 60 + t.second) * NS_PER_S + t.microsecond * NS_PER_US


def midnight_ns(date: _dt.date) -> int:
    """Nanoseconds since the epoch at 00:00 UTC of ``date``."""
    return (date - _dt.date(1970, 1, 1)).days * 86_400 * NS_PER_S


def at(date: _dt.date, time_of_day: str) -> int:
    """Epoch ns of a time of day on a date."""
    return midnight_ns(date) + parse_time_of_day(time_of_day)


def format_ts(ts: int) -> str:
    """Epoch ns as ``"YYYY-MM-DD HH:MM:SS.ffffff"`` (UTC), for reports."""
    seconds, ns = divmod(int(ts), NS_PER_S)
    stamp = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + f".{ns // NS_PER_US:06d}"


class SimClock:
    """Simulated time: whatever the event loop says it is.

    The backtester never sleeps; ``now`` is the timestamp of the event being
    processed, so a run takes as long as its events take to process.
    """

    def __init__(self, loop) -> None:
        self._loop = loop

    def now(self) -> int:
        """Current simulated time (ns since the epoch)."""
        return self._loop.now


class WallClock:
    """Simulated time that advances with the real monotonic clock.

    ``sim_start`` (epoch ns) corresponds to the moment the clock was created;
    ``speed`` > 1 runs the market faster than real time.

    Parameters
    ----------
    sim_start : int
        Simulated time at creation.
    speed : float, optional
        Simulated seconds per real second.
    """

    def __init__(self, sim_start: int, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.sim_start = int(sim_start)
        self.speed = speed
        self._mono_start = time.monotonic_ns()

    def now(self) -> int:
        """Simulated time now."""
        return self.sim_start + int((time.monotonic_ns() - self._mono_start) * self.speed)

    def wall_delay(self, sim_ts: int) -> float:
        """Real seconds until simulated time ``sim_ts`` (0 if past)."""
        return max(0.0, (sim_ts - self.now()) / self.speed / NS_PER_S)
