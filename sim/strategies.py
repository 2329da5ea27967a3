"""Execution strategies: how a parent order becomes child orders on venues.

Role in the pipeline: in a backtest, each parent order (buy 10,000 AAA over
30 minutes) is worked by one strategy object, which reads market data from
the simulated venues and sends child orders to them; the smart order router
(``ext.router``, a later issue) will plug in here as one more strategy.

The interface is small. A strategy subclasses ``ExecutionStrategy`` and
overrides some of the hooks:

``on_start()``
    The parent begins (at its start time).
``on_timer()``
    A timer set with ``wake_at(ts)`` fired.
``on_fill(report)``
    A child order traded (``report.last_qty`` at ``report.price_x2``).
``on_child_done(report)``
    A child order is finished (filled, canceled, expired or rejected).
``on_cancel_rejected(report)``
    The venue refused a cancel or replace of a working child; the child is
    as it was (``report.price_x2``: its limit at the venue, doubled).
``on_stop()``
    The parent's end time has come; the base class cancels what is working.

and acts through ``send(venue, qty, price, ...)``, ``cancel(child_id)``,
``replace(child_id, price, qty)`` and ``wake_at(ts)``. ``self.market`` is the
``sim.market.Market`` as the strategy sees it (``Market.seen``: quotes, depth,
NBBO and traded volume as they were each venue's market-data latency ago;
fees, hours and measured latency as they are). The base
class keeps the books: ``filled``, ``remaining``, ``working`` (child id to
open quantity as last reported), fills and fees.

Built-in strategies (``STRATEGIES``): ``sweep`` (take liquidity now across
venues, cheapest fee-adjusted price first), ``twap`` (equal slices over the
horizon, each swept) and ``passive_aggressive`` (rest at the near touch on
the venue that pays best for liquidity, then sweep what is left).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

import numpy as np

from ext.simloop import Liquidity, ReportKind, StrategyCore  # noqa: F401  (re-exported)
from ext.simstrat import PeriodicTakerCore
from ext.types import OrdType, Side, TimeInForce
from sim.clock import NS_PER_S, parse_duration

BUY, SELL = int(Side.BUY), int(Side.SELL)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
DAY, IOC = int(TimeInForce.DAY), int(TimeInForce.IOC)


@dataclass
class ParentOrder:
    """A parent order, in the simulator's integers.

    Attributes
    ----------
    parent_id : int
    symbol : str
    side : int
        ``Side.BUY`` or ``Side.SELL``.
    qty : int
        Lots.
    start_ns, end_ns : int
        The execution window (epoch ns).
    account : int
        Account of its child orders.
    strategy : str
    params : dict
    """

    parent_id: int
    symbol: str
    side: int
    qty: int
    start_ns: int
    end_ns: int
    account: int = 1000
    strategy: str = "twap"
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------- parameter checks
#
# A check takes (name, value, venues) and returns the value or raises
# ValueError naming the parameter; ``venues`` are the market's venues (objects
# with ``name`` and ``dark``), or None when they are not known.

#: Largest value of an int64: the event loop keeps quantities, prices and
#: times in int64, so no integer parameter may exceed it.
INT64_MAX = 2 ** 63 - 1


def _bound_text(value: int) -> str:
    if value == INT64_MAX:
        return "2^63 - 1"
    digits = str(value)
    if value >= 10 ** 9 and digits.strip("0") == "1":
        return f"10^{len(digits) - 1}"
    return f"{value:,}"


def integer_param(low: int, high: int = INT64_MAX, optional: bool = False):
    """A check: an integer from ``low`` to ``high`` (or None if ``optional``).

    ``high`` defaults to ``INT64_MAX``: a larger value cannot reach the event
    loop's int64 arguments, and would fail half-way through a run.
    """
    def check(name, value, venues=None):
        if value is None and optional:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r}: must be an integer from {_bound_text(low)} "
                             f"to {_bound_text(high)}" + (" or omitted" if optional else ""))
        return value
    return check


def fraction_param(name, value, venues=None):
    """A check: a number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} = {value!r}: must be a number from 0 to 1")
    return value


#: Shortest timer a strategy parameter may ask for: every timer is a wake-up
#: of the strategy, and at ``"1ns"`` a backtest of one simulated hour would
#: wake it 3.6e12 times (it never ends).
MIN_TIMER_NS = 1_000_000
#: Longest one: a session is one day, so a longer timer could never fire,
#: and the bound keeps ``now + period`` far inside int64 (a period near
#: 2^63 ns wrapped the sum negative and the timer fired at the same
#: instant for ever).
MAX_TIMER_NS = 24 * 3600 * NS_PER_S
#: Upper bounds of the built-in strategies' integer parameters. ``depth``
#: is passed to the loop as a C int; a twap slice is a wake-up, so
#: ``slices`` bounds the work of a parent like ``MIN_TIMER_NS`` does;
#: ``limit_ticks`` is added to a price and the sum doubled (half-ticks)
#: in int64, so it stays far from 2^62.
MAX_DEPTH = 1_000_000
MAX_SLICES = 100_000
MAX_LIMIT_TICKS = 10 ** 15


def duration_param(name, value, venues=None):
    """A check: a duration from ``MIN_TIMER_NS`` to ``MAX_TIMER_NS``.

    Written ``"1s"``, ``"250ms"``, or as an int of ns.
    """
    try:
        ns = parse_duration(value)
    except (ValueError, TypeError):
        ns = 0
    if ns <= 0:
        raise ValueError(f"{name} = {value!r}: must be a duration from 1ms to 24h, such as "
                         "\"1s\" or \"250ms\" (an integer is ns)")
    if ns < MIN_TIMER_NS:
        raise ValueError(f"{name} = {value!r}: must be a duration from 1ms to 24h (each one "
                         "wakes the strategy; shorter would make the backtest crawl)")
    if ns > MAX_TIMER_NS:
        raise ValueError(f"{name} = {value!r}: must be a duration from 1ms to 24h (a session "
                         "is one day; longer could not fire)")
    return value


def lit_venue_param(name, value, venues=None):
    """A check: None or the name of a lit venue."""
    if value is None:
        return value
    lit = [v.name for v in venues if not v.dark] if venues is not None else None
    if not isinstance(value, str) or (lit is not None and value not in lit):
        raise ValueError(f"{name} = {value!r}: must be the name of a lit venue"
                         + (f" ({', '.join(lit)})" if lit else ""))
    return value


def venue_list_param(name, value, venues=None):
    """A check: None or a non-empty list of venue names or indices."""
    if value is None:
        return value
    names = [v.name for v in venues] if venues is not None else None
    ok = isinstance(value, (list, tuple)) and len(value) > 0
    for v in value if ok else ():
        if isinstance(v, str):
            ok = ok and (names is None or v in names)
        elif isinstance(v, int) and not isinstance(v, bool):
            ok = ok and v >= 0 and (names is None or v < len(names))
        else:
            ok = False
    if not ok:
        raise ValueError(f"{name} = {value!r}: must be a non-empty list of venue names or indices"
                         + (f" ({', '.join(names)})" if names else ""))
    return value


class ExecutionStrategy(StrategyCore):
    """Base class of execution strategies (see the module docstring).

    The child-order bookkeeping (``filled``, ``notional_x2``, ``fees``,
    ``working``, ``fills``, ``children``) is inherited from
    ``ext.simloop.StrategyCore`` and runs at C level for every report; the
    hooks a subclass defines are called from there.

    Parameters
    ----------
    market : sim.market.Market
        The venues; the strategy reads them through ``market.seen``
        (``self.market``), while its execution record (arrival and end mid,
        traded volume) is measured on the market as it is.
    parent : ParentOrder
    **params
        Strategy parameters (from ``[strategy.params]`` or the parent's own).

    Raises
    ------
    ValueError
        On an unknown parameter or one ``checks`` refuses.
    """

    name = "base"
    #: Parameters a subclass accepts, with defaults.
    defaults: dict = {}
    #: Per parameter, a check ``(name, value, venues) -> value`` raising
    #: ValueError (``integer_param``, ``fraction_param``, ...); a parameter
    #: without one is taken as given.
    checks: dict = {}

    @classmethod
    def check_params(cls, params: dict, venues=None) -> dict:
        """The parameters with the defaults filled in, each checked.

        Parameters
        ----------
        params : dict
        venues : sequence, optional
            Objects with ``name`` and ``dark`` (``VenueConfig``, ``VenueInfo``)
            for checks of venue names.

        Raises
        ------
        ValueError
            Naming the first unknown or invalid parameter.
        """
        unknown = set(params) - set(cls.defaults)
        if unknown:
            raise ValueError(f"strategy {cls.name!r}: unknown parameter(s) "
                             f"{', '.join(sorted(unknown))}; known: {', '.join(cls.defaults)}")
        merged = {**cls.defaults, **params}
        for key, check in cls.checks.items():
            try:
                merged[key] = check(key, merged[key], venues)
            except ValueError as exc:
                raise ValueError(f"strategy {cls.name!r}: {exc}") from None
        return merged

    def __init__(self, market, parent: ParentOrder, **params) -> None:
        params = self.check_params(params, market.venues)
        super().__init__(market.loop, market.instrument_index(parent.symbol), parent.side,
                         parent.qty, parent.account)
        self.params = params
        self.market = market.seen
        self.parent = parent
        self.is_buy = parent.side == BUY
        # The execution record the backtest's metrics are computed from.
        self.arrival_x2 = 0
        self.start_volume = (0, 0)
        self.end_volume: tuple[int, int] | None = None
        self.end_mid_x2 = 0

    @property
    def now(self) -> int:
        return self.loop.now

    # ------------------------------------------------------------ hooks

    def on_start(self) -> None:
        """The parent begins."""

    def on_stop(self) -> None:
        """The parent's window closed: cancel whatever is still working."""
        self.cancel_all()

    def on_finished(self, ts: int) -> None:
        self.end_volume = self.market.market.market_volume(self.instrument)

    # ------------------------------------------------------------ lifecycle (timers set by the backtest)
    # The execution record is measured on the market as it is
    # (``self.market.market``), not as the strategy sees it: what the late
    # view costs is part of the result.

    def start(self) -> None:
        self.started = True
        self.arrival_x2 = reference_mid_x2(self.market.market, self.instrument)
        self.start_volume = self.market.market.market_volume(self.instrument)
        self.on_start()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            if self.end_volume is None:
                self.end_volume = self.market.market.market_volume(self.instrument)
            # After the venues' close the book is empty: the last quote they
            # showed is the end price (the unfilled part's cost is measured
            # against it, not dropped).
            self.end_mid_x2 = reference_mid_x2(self.market.market, self.instrument) or \
                last_sampled_mid_x2(self.market.market, self.parent.symbol)
            self.on_stop()


def reference_mid_x2(market, instrument) -> int:
    """NBBO mid in half-ticks, falling back to a locked/crossed or one-sided quote.

    The arrival price of a parent: a crossed NBBO (possible across simulated
    venues for an instant) still has a middle; a one-sided one its only side.
    """
    mid = market.mid_x2(instrument)
    if mid:
        return mid
    bid, ask = market.nbbo(instrument)
    if bid and ask:
        return bid + ask
    return 2 * (bid or ask)


def last_sampled_mid_x2(market, symbol) -> int:
    """The mid (half-ticks) of the last two-sided NBBO the market sampled, 0 if none."""
    s = market.samples()[symbol]
    two_sided = np.flatnonzero((s["bid"] > 0) & (s["ask"] > 0))
    if not two_sided.size:
        return 0
    k = two_sided[-1]
    return int(s["bid"][k]) + int(s["ask"][k])


# ---------------------------------------------------------------- sweep planning

def plan_sweep(market, symbol, side: int, qty: int, depth: int = 10,
               limit: int | None = None) -> list[tuple[int, int, int]]:
    """Split ``qty`` over the lit venues' visible depth, cheapest all-in first.

    Each level's price is adjusted by the venue's taker fee (per lot and in
    basis points, exactly, in fee units), so a venue that pays takers can win
    over a better raw price elsewhere; ties go to the venue with the lower
    typical latency (fewer chances that the level is gone on arrival).

    Parameters
    ----------
    market : sim.market.Market
    symbol : str or int
    side : Side
        The side of the order to send (BUY takes asks).
    qty : int
        Lots wanted.
    depth : int, optional
        Levels per venue considered.
    limit : int, optional
        Worst price (ticks) allowed.

    Returns
    -------
    list of (venue, price, qty)
        One IOC order per venue: its total quantity and the worst price it
        needs; sorted by venue index.
    """
    is_buy = side == BUY
    levels = []
    for v in market.venues:
        if v.dark or not market.is_open(v.index):
            continue
        bids, asks = market.depth(v.index, symbol, depth)
        _, taker_per_lot, _, taker_cbps = market.fee_rates(v.index, symbol)
        for price, lvl_qty, _count in (asks if is_buy else bids).tolist():
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            # Cost per lot x 100 in fee units: price * 1e4 units per tick-lot,
            # plus the per-lot fee, plus price * 2 * cbps / 200 -> exact ints.
            fee100 = taker_per_lot * 100 + price * taker_cbps
            key = price * 1_000_000 + fee100 if is_buy else -(price * 1_000_000 - fee100)
            levels.append((key, v.latency_us, v.index, price, lvl_qty))
    levels.sort()
    per_venue: dict[int, list[int]] = {}
    left = qty
    for _key, _lat, venue, price, lvl_qty in levels:
        if left <= 0:
            break
        take = min(left, lvl_qty)
        left -= take
        slot = per_venue.setdefault(venue, [0, price])
        slot[0] += take
        slot[1] = max(slot[1], price) if is_buy else min(slot[1], price)
    return [(venue, price, q) for venue, (q, price) in sorted(per_venue.items())]


class SweepStrategy(ExecutionStrategy):
    """Take liquidity now: IOC orders across venues by fee-adjusted price.

    Parameters
    ----------
    depth : int
        Levels per venue considered (10).
    dark_fraction : float
        Share of each sweep sent at the same time to the dark pools as an IOC
        midpoint order (0.0).
    retry : str
        Wait before sweeping again when nothing is visible ("1s").
    limit_ticks : int or None
        Do not pay more than this many ticks through the arrival touch (None):
        no child, lit or dark, fills beyond the parent's-start ask plus it (a
        buy) or bid less it (a sell). ``twap`` and ``passive_aggressive``
        keep the same limit (``arrival_limit``).
    """

    name = "sweep"
    defaults = {"depth": 10, "dark_fraction": 0.0, "retry": "1s", "limit_ticks": None}
    checks = {"depth": integer_param(1, MAX_DEPTH), "dark_fraction": fraction_param,
              "retry": duration_param,
              "limit_ticks": integer_param(0, MAX_LIMIT_TICKS, optional=True)}
    #: When the pending retry timer fires (0: none pending).
    retry_at = 0

    def on_start(self) -> None:
        self.retry_ns = parse_duration(self.params["retry"])
        self.limit = self.arrival_limit()
        self.sweep(self.remaining)

    def arrival_limit(self) -> int | None:
        """The worst price (ticks) any child may fill at, from ``limit_ticks``.

        ``limit_ticks`` through the far touch of now (the parent's start):
        the ask plus it for a buy, the bid less it for a sell. None when the
        parameter is absent or that side of the NBBO is empty (no touch to
        measure from). Subclasses call this in their ``on_start`` too, so
        the limit means the same in every built-in strategy.
        """
        bid, ask = self.market.nbbo(self.instrument)
        touch = ask if self.is_buy else bid
        lt = self.params["limit_ticks"]
        if lt is None or touch == 0:
            return None
        return touch + lt if self.is_buy else touch - lt

    def within_limit(self, price: int) -> int:
        """``price`` (ticks) moved inside the limit: a resting order never rests beyond it."""
        if self.limit is None or price <= 0:
            return price
        return min(price, self.limit) if self.is_buy else max(price, self.limit)

    def dark_limit(self) -> int:
        """The limit of a midpoint order (ticks; 0 a pure peg), so the mid cannot cross ours.

        A sell limit at or below zero excludes no price: a pure peg (a dark
        pool refuses a negative limit).
        """
        return 0 if self.limit is None else max(self.limit, 0)

    def sweep(self, qty: int) -> None:
        """Send IOC orders for ``qty`` lots now (less what the dark part takes)."""
        # Never more than the parent still needs, whatever the parameters.
        qty = min(qty, self.remaining - self.open_qty)
        if qty <= 0:
            return
        dark_qty = min(int(qty * self.params["dark_fraction"]), qty)
        darks = [v for v in self.market.dark_venues() if self.market.is_open(v.index)]
        if dark_qty > 0 and darks:
            # The midpoint moves with the market: without the limit a dark
            # fill could land beyond what the lit part may pay.
            self.send(darks[0].index, dark_qty, self.dark_limit(), LIMIT, IOC)
            qty -= dark_qty
        plan = plan_sweep(self.market, self.instrument, self.parent.side, qty,
                          self.params["depth"], self.limit)
        for venue, price, q in plan:
            self.send(venue, q, price, LIMIT, IOC)
        if not plan and self.retry_at <= self.now:
            # Nothing visible: look again after ``retry``, also when a dark
            # IOC is out (sweeping again as soon as it came back would ping
            # the pool once per round trip).
            self.retry_at = self.now + self.retry_ns
            self.wake_at(self.retry_at)

    def next_round(self) -> bool:
        """Every child of this round has answered and no retry is pending."""
        return not self.working and self.now >= self.retry_at

    def on_timer(self) -> None:
        self.sweep(self.remaining)

    def on_child_done(self, report) -> None:
        # Sweep again once every IOC of this round has answered: what is
        # left missed because the book moved while the orders travelled.
        if self.remaining > 0 and self.next_round():
            self.sweep(self.remaining)


class TwapStrategy(SweepStrategy):
    """Equal slices over the window, each taken with a fee-aware sweep.

    Slice ``k`` (of ``slices``) brings the target fill to ``qty * (k+1) /
    slices``, counting the children still working (a slice sends the
    target less what is filled and what is out); a slice that falls short is
    made up by the next one, and the last one keeps sweeping until the
    parent is done or the window closes.

    Parameters
    ----------
    slices : int
        Number of slices (10).
    depth, dark_fraction, retry, limit_ticks
        As for ``sweep``.
    """

    name = "twap"
    defaults = {**SweepStrategy.defaults, "slices": 10}
    checks = {**SweepStrategy.checks, "slices": integer_param(1, MAX_SLICES)}

    def on_start(self) -> None:
        self.retry_ns = parse_duration(self.params["retry"])
        self.limit = self.arrival_limit()
        self.slices = self.params["slices"]
        self.interval = (self.parent.end_ns - self.parent.start_ns) // self.slices
        self.slice = 0
        self.on_timer()

    def target(self) -> int:
        return self.parent.qty * min(self.slice, self.slices) // self.slices

    def on_timer(self) -> None:
        now = self.now
        due = self.parent.start_ns + self.slice * self.interval
        if now >= due and self.slice < self.slices:
            self.slice += 1
            if self.slice < self.slices:
                self.wake_at(self.parent.start_ns + self.slice * self.interval)
        # Children still out (the last slice's IOCs when a round trip is longer
        # than a slice, a dark IOC at a retry) count toward the target: the
        # slice sends only the rest, or the parent runs ahead of its schedule.
        self.sweep(self.target() - self.filled - self.open_qty)

    def on_child_done(self, report) -> None:
        if self.target() - self.filled > 0 and self.next_round():
            self.sweep(self.target() - self.filled)


class PassiveAggressiveStrategy(SweepStrategy):
    """Rest at the near touch first, then sweep what is left.

    During the passive phase (the first ``passive_fraction`` of the window)
    the parent rests as one post-only limit at the best bid (buy) or offer
    (sell) on the lit venue that pays the most for adding liquidity, with
    ``dark_fraction`` of it resting in the dark pool as a midpoint peg; every
    ``reprice`` it follows the touch. Then everything is canceled and the
    rest is swept. With ``limit_ticks`` the resting order never goes past
    the limit and the peg carries it, as the sweep does.

    Parameters
    ----------
    passive_fraction : float
        Share of the window spent passive (0.6).
    reprice : str
        How often the passive order follows the touch ("2s").
    venue : str or None
        Passive venue (None: the best maker rebate).
    dark_fraction, depth, retry, limit_ticks
        As for ``sweep``.
    """

    name = "passive_aggressive"
    defaults = {**SweepStrategy.defaults, "passive_fraction": 0.6, "reprice": "2s",
                "venue": None}
    checks = {**SweepStrategy.checks, "passive_fraction": fraction_param,
              "reprice": duration_param, "venue": lit_venue_param}

    def on_start(self) -> None:
        self.retry_ns = parse_duration(self.params["retry"])
        self.limit = self.arrival_limit()
        self.reprice_ns = parse_duration(self.params["reprice"])
        span = self.parent.end_ns - self.parent.start_ns
        self.switch_ts = self.parent.start_ns + int(span * self.params["passive_fraction"])
        self.aggressive = False
        self.passive_child: int | None = None
        self.passive_price = 0
        lit = [v for v in self.market.lit_venues()]
        if self.params["venue"] is not None:
            self.venue = self.market.venue_index(self.params["venue"])
        else:
            # Most negative maker fee per lot at today's price (a rebate).
            bid, ask = self.market.nbbo(self.instrument)
            px = bid or ask or 1

            def maker_cost(v):
                m_pl, _, m_cb, _ = self.market.fee_rates(v.index, self.instrument)
                return (m_pl * 100 + px * m_cb, v.latency_us, v.index)
            self.venue = min(lit, key=maker_cost).index
        darks = self.market.dark_venues()
        dark_qty = min(int(self.parent.qty * self.params["dark_fraction"]),
                       self.remaining - self.open_qty)
        if dark_qty > 0 and darks:
            self.send(darks[0].index, dark_qty, self.dark_limit(), LIMIT, DAY)
        self.post()
        self.wake_at(min(self.now + self.reprice_ns, self.switch_ts))

    def touch(self) -> int:
        """The near touch (ticks; 0 if empty), moved inside ``limit_ticks``."""
        bid, ask = self.market.nbbo(self.instrument)
        return self.within_limit(bid if self.is_buy else ask)

    def post(self) -> None:
        """Rest what is not working elsewhere at the near touch."""
        qty = self.remaining - self.open_qty
        price = self.touch()
        if qty > 0 and price > 0:
            self.passive_child = self.send(self.venue, qty, price, LIMIT, DAY, post_only=True)
            self.passive_price = price

    def on_timer(self) -> None:
        if self.aggressive:
            self.sweep(self.remaining)
            return
        if self.now >= self.switch_ts:
            self.aggressive = True
            self.cancel_all()
            if not self.working:
                self.sweep(self.remaining)
            return
        price = self.touch()
        child = self.passive_child
        if child is not None and child in self.working:
            if price > 0 and price != self.passive_price:
                # The new total: what this child has filled plus what rests.
                filled = sum(f.last_qty for f in self.fills if f.child_id == child)
                self.replace(child, price, filled + self.working[child])
                self.passive_price = price
        else:
            self.post()
        self.wake_at(min(self.now + self.reprice_ns, self.switch_ts))

    def on_cancel_rejected(self, report) -> None:
        # A reprice the venue refused (post-only: the national touch was at this
        # venue's far side) left the child at its price: keep that one, so the
        # next reprice asks again rather than take the refused price for ours.
        if report.child_id == self.passive_child and report.price_x2 > 0:
            self.passive_price = report.price_x2 // 2

    def on_child_done(self, report) -> None:
        if report.child_id == self.passive_child:
            self.passive_child = None
        if self.aggressive and self.remaining > 0 and self.next_round():
            self.sweep(self.remaining)


class PeriodicTakerStrategy(PeriodicTakerCore, ExecutionStrategy):
    """A compiled strategy: every ``interval``, one marketable order of ``child_qty``.

    The decision runs in C (``ext.simstrat.PeriodicTakerCore.on_timer_c``):
    each tick sends ``min(child_qty, remaining - open)`` lots as a market IOC
    order on the next of ``venues`` (names or indices; default: the lit
    venues), until the parent is filled or its window ends. The example of
    a compiled strategy, and what ``benchmarks/bench_sim.py`` times beside
    the same strategy written in Python.

    Parameters
    ----------
    interval : str or int
        Period ("1s", or ns).
    child_qty : int
        Lots per child order (1).
    venues : list or None
        Venues to rotate over (None: every lit venue).
    limit_ticks : int or None
        None: market orders. Else each child is a limit IOC at its venue's
        far touch as the strategy sees it (``market_data_latency``) plus
        this many ticks for a buy, minus for a sell; a tick whose venue
        shows that side empty sends nothing.
    """

    name = "periodic_taker"
    defaults = {"interval": "1s", "child_qty": 1, "venues": None, "limit_ticks": None}
    checks = {"interval": duration_param, "child_qty": integer_param(1),
              "venues": venue_list_param,
              "limit_ticks": integer_param(0, MAX_LIMIT_TICKS, optional=True)}

    def on_start(self) -> None:
        interval = self.params["interval"]
        period = interval if isinstance(interval, int) else parse_duration(interval)
        venues = self.params["venues"]
        if venues is None:
            venues = [v.index for v in self.market.lit_venues()]
        else:
            venues = [self.market.venue_index(v) if isinstance(v, str) else int(v)
                      for v in venues]
        self.configure_taker(int(self.params["child_qty"]), venues, self.params["limit_ticks"])
        self.on_timer()          # the first order now, then every period
        self.wake_every(period)


STRATEGIES: dict[str, type[ExecutionStrategy]] = {
    "sweep": SweepStrategy,
    "twap": TwapStrategy,
    "passive_aggressive": PassiveAggressiveStrategy,
    "periodic_taker": PeriodicTakerStrategy,
}


def register_strategy(cls: type[ExecutionStrategy]) -> type[ExecutionStrategy]:
    """Make a strategy class available by its ``name`` (usable as a decorator)."""
    STRATEGIES[cls.name] = cls
    return cls


def resolve_strategy(name: str) -> type[ExecutionStrategy]:
    """A strategy class by registered name or ``"package.module:Class"``.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if name in STRATEGIES:
        return STRATEGIES[name]
    if isinstance(name, str) and ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"strategy {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, ExecutionStrategy)):
            raise ValueError(f"{name} is not an ExecutionStrategy subclass")
        return cls
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)} "
                     "or \"package.module:Class\"")


__all__ = ["ExecutionStrategy", "ParentOrder", "SweepStrategy", "TwapStrategy",
           "PassiveAggressiveStrategy", "PeriodicTakerStrategy", "STRATEGIES", "register_strategy", "resolve_strategy",
           "plan_sweep", "Liquidity", "NS_PER_S", "integer_param", "fraction_param",
           "duration_param", "lit_venue_param", "venue_list_param", "MIN_TIMER_NS",
           "MAX_TIMER_NS", "MAX_DEPTH", "MAX_SLICES", "MAX_LIMIT_TICKS", "INT64_MAX"]
