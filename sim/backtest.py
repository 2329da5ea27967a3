"""The backtester: parent orders, execution strategies, simulated venues, results.

Role in the pipeline: a quant's tool and the engine's test bench. A
``Backtest`` builds a ``sim.market.Market`` from a configuration, starts one
execution strategy per parent order at its start time, runs simulated time
(as fast as the events can be processed; the same seed gives the same
result) and measures what each parent achieved: every fill,
implementation shortfall against the arrival mid, slippage against the
market's VWAP over the execution window, fees, fill rate and time to fill.
``BacktestResult`` writes them as Parquet/CSV, prints a summary table and
draws PNG plots. ``kronos-exec sim`` is this module behind a command line.

Example
-------
>>> from sim import Backtest
>>> result = Backtest("sim/configs/default.toml", strategy="sweep").run()   # doctest: +SKIP
>>> result.totals["shortfall_bps"]                                          # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal, Inexact, localcontext
from fractions import Fraction
from pathlib import Path

import numpy as np

from ext.book import OrderBook
from ext.simloop import Liquidity
from ext.types import Side
from sim.clock import NS_PER_S, format_ts
from sim.config import ConfigError, SimConfig, StrategyConfig, check_seed, load_config
from sim.fees import FEE_UNITS_PER_TICK_LOT, decimal_text, price_x2_to_decimal, units_to_currency
from sim.latency import MAX_LATENCY_US
from sim.market import Market
from sim.strategies import ExecutionStrategy, ParentOrder, resolve_strategy

INT64_MAX = (1 << 63) - 1

#: How long after the last parent finishes the market keeps running, so
#: cancel confirmations and late reports still arrive (longer while a child
#: is still out: ``Backtest._drain_children``).
DRAIN_NS = NS_PER_S

#: What ``BacktestResult.write`` and ``plot`` (``kronos-exec sim``) put in an
#: output folder; ``remove_outputs`` deletes these names, and only these.
OUTPUT_FILES = ("fills.parquet", "fills.csv", "orders.parquet", "orders.csv", "summary.json",
                "cumulative_fill.png", "price_*.png")

#: Columns of ``orders`` holding prices or money: ``Decimal`` (None where
#: there is no value), written as decimal text in the tables and as exact
#: numbers in ``summary.json``, never through a float.
ORDER_DECIMAL_COLUMNS = ("arrival_price", "avg_price", "vwap", "fees")

FILL_COLUMNS = ("parent_id", "symbol", "side", "child_id", "venue", "venue_ts", "recv_ts",
                "time", "price", "price_x2", "qty", "lots", "liquidity", "fee_units", "fee")


class OverfillError(RuntimeError):
    """A strategy filled more than its parent's quantity (a bug in the strategy)."""


def remove_outputs(out_dir: str | Path) -> list[Path]:
    """Delete the files a backtest writes (``OUTPUT_FILES``) from ``out_dir``; returns them.

    ``kronos-exec sim`` calls this before writing, so a folder never mixes
    the tables or plots of two runs. Other files are left alone.
    """
    out = Path(out_dir)
    removed = []
    for pattern in OUTPUT_FILES:
        for path in sorted(out.glob(pattern)):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def _json_decimal(value):
    """orjson ``default``: a ``Decimal`` (shares, prices, money) as an exact JSON number."""
    import orjson
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(decimal_text(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def exact_decimal(value: Fraction, places: int | None = None, min_places: int = 0) -> Decimal:
    """A fraction as a ``Decimal``: exact, or rounded half to even to ``places`` decimals.

    Trailing zeros are dropped down to ``min_places`` decimals (the tick's,
    for a price), and the result never has a positive exponent (``3000``,
    not ``3E+3``); ``decimal_text`` writes it without an exponent.

    Raises
    ------
    ValueError
        If ``places`` is None and the fraction has no finite decimal form.
    """
    value = Fraction(value)
    if places is None:
        den, twos, fives = value.denominator, 0, 0
        while den % 2 == 0:
            den, twos = den // 2, twos + 1
        while den % 5 == 0:
            den, fives = den // 5, fives + 1
        places = max(twos, fives)
        if den != 1:
            raise ValueError(f"{value} has no finite decimal form")
    units = round(value * 10 ** places)          # Fraction.round: exact, half to even
    with localcontext(prec=200) as ctx:
        out = Decimal(units).scaleb(-places, ctx)
        if out == 0:
            return Decimal(0).quantize(Decimal(1).scaleb(-min_places))
        out = out.normalize(ctx)
        if out.as_tuple().exponent > -min_places:
            out = out.quantize(Decimal(1).scaleb(-min_places), context=ctx)
    return out


def _at_tick(text: str, places: int) -> Decimal:
    """A price the engine's ``Instrument`` wrote (trailing zeros dropped) with at least
    ``places`` decimals (the tick's), as the result files show prices."""
    return exact_decimal(Fraction(Decimal(text)), min_places=places)


def _decimals_of(size: str) -> int:
    """Decimals of a tick size (``"0.05"``: 2)."""
    return max(0, -Decimal(size).normalize().as_tuple().exponent)


def _as_config(config) -> SimConfig:
    if config is None or isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, SimConfig):
        return config
    raise TypeError("config must be a SimConfig, a path to a TOML file, or None (the default)")


class Backtest:
    """Execute parent orders with a strategy against simulated venues.

    Parameters
    ----------
    config : SimConfig, str, Path or None
        Configuration or TOML file; None is the embedded default
        (``sim/configs/default.toml``).
    strategy : str, optional
        Strategy for every parent (overrides the configuration): ``"sweep"``,
        ``"twap"``, ``"passive_aggressive"`` or ``"package.module:Class"``.
    params : dict, optional
        Strategy parameters (override ``[strategy.params]``).
    seed : int, optional
        Session seed (overrides ``[session] seed``).
    book_class : type, optional
        Order book per venue and instrument (``OrderBook``, or the reference).
    progress : bool, optional
        Show a progress bar while running.

    Raises
    ------
    ConfigError
        If there is no parent, the seed is negative, or a strategy name or
        parameter is unknown or out of range (checked here, once the
        overrides are applied, so nothing fails after the run has started).

    Examples
    --------
    >>> bt = Backtest(strategy="twap", params={"slices": 6}, seed=7)   # doctest: +SKIP
    >>> res = bt.run()                                                  # doctest: +SKIP
    >>> res.write("out/run1"); res.plot("out/run1")                     # doctest: +SKIP
    """

    def __init__(self, config=None, *, strategy: str | None = None, params: dict | None = None,
                 seed: int | None = None, book_class=OrderBook, progress: bool = False) -> None:
        cfg = _as_config(config)
        if seed is not None:
            cfg = cfg.with_overrides(session=replace(cfg.session,
                                                     seed=check_seed(seed, "seed")))
        if strategy is not None or params is not None:
            # The configured parameters belong to the configured strategy.
            same = strategy is None or strategy == cfg.strategy.name
            cfg = cfg.with_overrides(strategy=StrategyConfig(
                name=strategy or cfg.strategy.name,
                params={**(cfg.strategy.params if same else {}), **(params or {})}))
            if strategy is not None:
                cfg = cfg.with_overrides(parents=tuple(replace(p, strategy=None, params={})
                                                       for p in cfg.parents))
            elif params:
                # The caller's parameters win over a parent's own too (a
                # parent's `params`, or those of its own `strategy`): they
                # were ignored there, silently.
                cfg = cfg.with_overrides(parents=tuple(
                    replace(p, params={**p.params, **params}) if p.strategy or p.params else p
                    for p in cfg.parents))
        if not cfg.parents:
            raise ConfigError("the configuration has no [[parents]] to execute")
        self.config = cfg
        self.book_class = book_class
        self.progress = progress
        self.market: Market | None = None
        self.strategies: list[ExecutionStrategy] = []
        self._built = False
        self.parent_orders()        # strategies and their parameters, checked now

    def _strategy_of(self, k: int, p) -> tuple[str, dict]:
        """Parent ``k``'s strategy name and its checked parameters (ConfigError naming the key)."""
        cfg = self.config
        name = p.strategy or cfg.strategy.name
        params = {**cfg.strategy.params, **p.params} if not p.strategy else dict(p.params)
        own = f"parents[{k}]"
        try:
            cls = resolve_strategy(name)
        except ValueError as exc:
            raise ConfigError(f"{own + '.strategy' if p.strategy else 'strategy.name'}: "
                              f"{exc}") from None
        try:
            return name, cls.check_params(params, cfg.venues)
        except ValueError as exc:
            raise ConfigError(f"{own + '.params' if p.strategy or p.params else 'strategy.params'}"
                              f": {exc}") from None

    # ------------------------------------------------------------ set-up

    def parent_orders(self) -> list[ParentOrder]:
        """The configured parents, converted to ticks, lots and ns."""
        cfg, out = self.config, []
        for k, p in enumerate(cfg.parents):
            icfg = next(i for i in cfg.instruments if i.symbol == p.symbol)
            inst = icfg.instrument()
            # Windows, quantities and accounts were checked with the configuration.
            start, end = p.window(cfg.session)
            name, params = self._strategy_of(k, p)
            lots = inst.qty_to_lots(p.qty)
            # A parent's filled notional is int64 half-tick x lots: one that
            # would pass it filled at twice the reference price is refused now,
            # not after the run (an OverflowError that wrote nothing).
            if lots * 4 * inst.price_to_ticks(icfg.price) > INT64_MAX:
                raise ConfigError(
                    f"parents[{k}].qty: {p.qty} {p.symbol} at twice its price "
                    f"{icfg.price} would pass 2^63 - 1 half-tick x lots of filled notional "
                    f"(tick_size {icfg.tick_size}, lot_size {icfg.lot_size}); use a coarser "
                    f"tick_size or lot_size, or a smaller qty")
            out.append(ParentOrder(parent_id=k + 1, symbol=p.symbol,
                                   side=int(Side.BUY) if p.side == "buy" else int(Side.SELL),
                                   qty=lots, start_ns=start, end_ns=end,
                                   account=p.account, strategy=name, params=params))
        return out

    def build(self) -> Market:
        """The market, the replay and the strategies, ready to run.

        ``run`` calls this unless it was called since the last run: calling
        it first separates the errors of the set-up (a replay file that
        cannot be read: ``ConfigError``) from those of the run.
        """
        market = Market(self.config, book_class=self.book_class)
        self.replay = None
        if self.config.replay is not None:
            from sim.replay import ReplayFeed
            self.replay = ReplayFeed.from_config(self.config, market)
        self.strategies = []
        for parent in self.parent_orders():
            strat = resolve_strategy(parent.strategy)(market, parent, **parent.params)
            market.set_timer(parent.start_ns, strat.start)
            market.set_timer(parent.end_ns, strat.stop)
            self.strategies.append(strat)
        self.market = market
        self._built = True
        return market

    def _advance(self, ts: int) -> None:
        if self.replay is not None:
            self.replay.run_until(ts)
        else:
            self.market.run_until(ts)

    # ------------------------------------------------------------ running

    def _drain_children(self) -> None:
        """Run on until no parent has a child out, however far its venue is.

        ``DRAIN_NS`` covers the answers to the cancels sent at the stop on any
        venue closer than half a second; on a slower one (latency goes up to
        a day) a child can still trade until its cancel lands, and its fills
        come back a round trip later: stopping before would leave out of the
        results lots the venue traded. Bounded by a round trip at the
        longest latency, and over as soon as nothing more can happen.
        """
        market = self.market
        limit = market.now + 2 * int(MAX_LATENCY_US) * 1_000 + DRAIN_NS
        while any(s.n_working for s in self.strategies) and market.now < limit:
            due = [market.loop.next_due(), self.replay.next_due() if self.replay else None]
            due = [t for t in due if t is not None]
            if not due:
                break                   # no message, flow or row left: nothing can answer
            nxt = min(due)
            to = market.now + DRAIN_NS
            if nxt > to:
                to = nxt                # nothing due before: straight to it
            self._advance(min(to, limit))

    def run(self) -> "BacktestResult":
        """Run the backtest to the end of the session (or until every parent is done).

        Returns
        -------
        BacktestResult
        """
        market = self.market if self._built else self.build()
        self._built = False
        horizon = max(self.config.session.end_ns, max(s.parent.end_ns for s in self.strategies))
        horizon += DRAIN_NS
        start = market.now
        steps = 200
        wall = time.perf_counter()
        progress = None
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            progress = Progress(TextColumn("[bold]simulating"), BarColumn(),
                                TextColumn("{task.fields[clock]}"), TimeRemainingColumn())
            task = progress.add_task("sim", total=steps, clock="")
            progress.start()
        try:
            finished_at = None
            for k in range(1, steps + 1):
                t = start + (horizon - start) * k // steps
                if finished_at is not None:
                    t = min(t, finished_at + DRAIN_NS)
                self._advance(t)
                if progress is not None:
                    progress.update(task, completed=k, clock=format_ts(market.now)[11:19])
                if finished_at is None and all(s.done or s.stopped for s in self.strategies):
                    finished_at = market.now
                if finished_at is not None and market.now >= finished_at + DRAIN_NS:
                    break
            self._drain_children()
            for s in self.strategies:
                # A parent that finished early is also "stopped" for the record.
                if not s.stopped:
                    s.stopped = True
                    if s.end_volume is None:
                        s.end_volume = market.market_volume(s.instrument)
        finally:
            if progress is not None:
                progress.update(task, completed=steps)
                progress.stop()
        wall = time.perf_counter() - wall
        if self.replay is not None:
            # What of the recorded prints did not trade here (and so is not in
            # the market's volume and VWAP), said once per run.
            self.replay.note_trades()
        for s in self.strategies:
            if s.filled > s.parent.qty:
                raise OverfillError(f"parent {s.parent.parent_id} ({s.name}): {s.filled} lots "
                                    f"filled of {s.parent.qty}; the strategy sent more than the "
                                    "parent's remaining quantity")
        return BacktestResult(self.config, market, self.strategies, wall)


# ---------------------------------------------------------------- results

class BacktestResult:
    """Fills and execution metrics of one backtest run.

    Attributes
    ----------
    fills : dict of list
        One entry per fill, columns ``FILL_COLUMNS`` (exact prices as
        decimal strings and half-ticks, quantities in lots and as decimals,
        fees in fee units and currency).
    orders : list of dict
        Per parent: ``qty``, ``filled``, ``fill_rate``, ``avg_price``,
        ``arrival_price``, ``shortfall_bps`` (against the arrival mid,
        positive is a cost), ``fee_bps``, ``shortfall_with_fees_bps``,
        ``is_total_bps`` (Perold: executed cost plus fees plus the
        opportunity cost of the unfilled part at the end mid), ``vwap``,
        ``vwap_slippage_bps``, ``fees``, ``time_to_fill_s``, children and
        maker/taker/dark quantities. Prices and money
        (``ORDER_DECIMAL_COLUMNS``) are ``Decimal``, None where there is
        none (no arrival price, nothing filled, no market volume);
        ``time_to_fill_s`` runs to the last fill, also of a partly filled
        parent.
    totals : dict
        The same aggregated over parents: ``qty`` and ``filled`` in shares
        (the instruments' units, ``Decimal``), ``fill_rate`` their ratio,
        ``shortfall``, ``fees`` and ``arrival_notional`` in currency
        (exact ``Decimal``), the bps figures over
        currency notionals (see ``_totals``).
    samples : dict
        NBBO and market volume samples per symbol (``Market.samples``).
    events : int
        Market events processed (background operations and child messages).
    wall_s : float
        Wall-clock seconds the simulation took.
    """

    def __init__(self, config: SimConfig, market: Market, strategies: list[ExecutionStrategy],
                 wall_s: float) -> None:
        self.config = config
        self.market = market
        self.strategies = strategies
        self.wall_s = wall_s
        self.events = market.events_processed
        self.samples = market.samples()
        self.fills = self._fills()
        self.orders = [self._metrics(s) for s in strategies]
        self.totals = self._totals()

    # ------------------------------------------------------------ tables

    def _fills(self) -> dict[str, list]:
        m = self.market
        cols: dict[str, list] = {c: [] for c in FILL_COLUMNS}
        for s in self.strategies:
            inst = m.instrument(s.parent.symbol)
            for f in s.fills:
                cols["parent_id"].append(s.parent.parent_id)
                cols["symbol"].append(s.parent.symbol)
                cols["side"].append("buy" if s.is_buy else "sell")
                cols["child_id"].append(f.child_id)
                cols["venue"].append(m.venue_names[f.venue])
                cols["venue_ts"].append(f.ts)
                cols["recv_ts"].append(f.recv_ts)
                cols["time"].append(format_ts(f.ts))
                cols["price"].append(decimal_text(price_x2_to_decimal(f.price_x2, inst)))
                cols["price_x2"].append(f.price_x2)
                cols["qty"].append(inst.lots_to_qty(f.last_qty))
                cols["lots"].append(f.last_qty)
                cols["liquidity"].append("maker" if f.liquidity == Liquidity.LIQ_MAKER
                                         else "taker")
                cols["fee_units"].append(f.fee)
                cols["fee"].append(decimal_text(units_to_currency(f.fee, inst)))
        order = np.lexsort((cols["child_id"], cols["venue_ts"])) if cols["venue_ts"] else []
        return {c: [v[i] for i in order] for c, v in cols.items()}

    def _metrics(self, s: ExecutionStrategy) -> dict:
        m, p = self.market, s.parent
        inst = m.instrument(p.symbol)
        places = _decimals_of(inst.tick_size)
        sign = 1 if s.is_buy else -1
        arrival = s.arrival_x2
        avg_x2 = s.notional_x2 / s.filled if s.filled else float("nan")
        shortfall = sign * (avg_x2 - arrival) / arrival * 1e4 if s.filled and arrival else float("nan")
        # fee units / (notional in fee units) * 1e4, notional = arrival/2 * filled * 1e4.
        fee_bps = 2 * s.fees / (arrival * s.filled) if s.filled and arrival else float("nan")
        unfilled = p.qty - s.filled
        # (With nothing unfilled the end price does not matter; with no end
        # price at all, the unfilled part's cost is unknown, not zero.)
        end_mid = s.end_mid_x2 or (arrival if not unfilled else 0)
        opportunity = sign * (end_mid - arrival) / arrival * 1e4 if arrival and end_mid \
            else float("nan")
        exec_part = (shortfall + fee_bps) * s.filled / p.qty if s.filled else 0.0
        is_total = exec_part + opportunity * unfilled / p.qty
        volume, notional_x2 = self._window_volume(s)
        vwap_x2 = notional_x2 / volume if volume > 0 else float("nan")
        vwap_slip = sign * (avg_x2 - vwap_x2) / vwap_x2 * 1e4 if s.filled and volume > 0 \
            else float("nan")
        maker = sum(f.last_qty for f in s.fills if f.liquidity == Liquidity.LIQ_MAKER)
        dark = sum(f.last_qty for f in s.fills if m.venues[f.venue].dark)
        return {
            "parent_id": p.parent_id, "symbol": p.symbol, "side": "buy" if s.is_buy else "sell",
            "strategy": s.name, "qty": p.qty, "filled": s.filled,
            "fill_rate": s.filled / p.qty,
            # Prices and money exact (Decimal), None where there is none.
            # The engine's own rules (Instrument: exact half-ticks; averages rounded half to
            # even 6 digits past the tick's decimals), written to the tick's decimals at least.
            "arrival_price": _at_tick(inst.half_ticks_to_price(arrival), places)
            if arrival else None,
            "avg_price": _at_tick(inst.avg_px(s.notional_x2, s.filled), places)
            if s.filled else None,
            "vwap": _at_tick(inst.avg_px(notional_x2, volume), places) if volume > 0 else None,
            "shortfall_bps": shortfall, "fee_bps": fee_bps,
            "shortfall_with_fees_bps": shortfall + fee_bps if s.filled else float("nan"),
            "is_total_bps": is_total, "vwap_slippage_bps": vwap_slip,
            "fees": units_to_currency(s.fees, inst), "fee_units": s.fees,
            # To the last fill, also for a parent that was not completed.
            "time_to_fill_s": (max(f.recv_ts for f in s.fills) - p.start_ns) / NS_PER_S
            if s.filled else float("nan"),
            "children": len(s.children), "maker_qty": maker, "taker_qty": s.filled - maker,
            "dark_qty": dark, "start": format_ts(p.start_ns), "end": format_ts(p.end_ns),
            # Exact integers behind the figures above.
            "arrival_x2": arrival, "notional_x2": s.notional_x2,
        }

    def _totals(self) -> dict:
        """The per-parent metrics aggregated over parents, in currency and shares.

        Parents may trade instruments of different tick and lot sizes, so
        nothing is added in ticks or lots: quantities are summed in shares
        (the instrument's units, exact ``Decimal``) and money in currency,
        exactly (``Fraction``), with floats only for the final ratios.
        ``shortfall`` and ``fee_bps`` leave out a parent without an arrival
        price (``fees`` counts it: it was paid); ``shortfall_bps`` and
        ``fee_bps`` are in bps of the filled part's arrival notional; ``is_total_bps`` and ``vwap_slippage_bps`` are the
        parents' figures weighted by their arrival notional (arrival price x
        quantity, in currency), parents without the figure (NaN) left out.
        """
        o, strategies = self.orders, self.strategies
        qty = filled = Decimal(0)
        cost = fees = measured_fees = arrival_value = Fraction(0)
        is_cost = is_weight = vwap_sum = vwap_weight = Fraction(0)
        with localcontext(prec=100) as ctx:
            # Decimal sums of share quantities: exact, or an error.
            ctx.traps[Inexact] = True
            for r, s in zip(o, strategies):
                inst = self.market.instrument(s.parent.symbol)
                sign = 1 if s.is_buy else -1
                qty += Decimal(inst.lots_to_qty(r["qty"]))
                filled += Decimal(inst.lots_to_qty(r["filled"]))
                # Currency of one tick x lot, and of one half-tick x lot: they
                # turn each parent's exact integers into money.
                tick_lot = Fraction(Decimal(inst.tick_size)) * Fraction(Decimal(inst.lot_size))
                half_tick_lot = tick_lot / 2
                arrival = r["arrival_x2"]
                parent_fees = s.fees * tick_lot / FEE_UNITS_PER_TICK_LOT
                fees += parent_fees
                if not arrival:
                    # No arrival price: nothing to measure a shortfall from (it
                    # counted the whole notional as one) and no bps figure.
                    continue
                cost += sign * (r["notional_x2"] - arrival * r["filled"]) * half_tick_lot
                measured_fees += parent_fees
                arrival_value += arrival * r["filled"] * half_tick_lot
                weight = arrival * r["qty"] * half_tick_lot
                # Perold, in currency: what was paid beyond arrival and the
                # fees on the filled part, the move to the end mid on the rest.
                # (No end price for an unfilled part: its is_total_bps is NaN, left out.)
                end_mid = s.end_mid_x2 or (arrival if r["qty"] == r["filled"] else 0)
                if end_mid:
                    is_cost += (sign * (r["notional_x2"] - arrival * r["filled"]) * half_tick_lot
                                + parent_fees
                                + sign * (end_mid - arrival) * (r["qty"] - r["filled"])
                                * half_tick_lot)
                    is_weight += weight
                vwap_x2 = self._window_vwap_x2(s)
                if r["filled"] and vwap_x2:
                    avg_x2 = Fraction(r["notional_x2"], r["filled"])
                    vwap_sum += weight * sign * (avg_x2 - vwap_x2) / vwap_x2
                    vwap_weight += weight

        def bps(num: Fraction, den: Fraction) -> float:
            return float(num * 10_000 / den) if den else float("nan")
        shortfall_bps = bps(cost, arrival_value)
        fee_bps = bps(measured_fees, arrival_value)
        return {
            "parents": len(o), "qty": qty, "filled": filled,
            "fill_rate": float(Fraction(filled) / Fraction(qty)) if qty else float("nan"),
            "shortfall": exact_decimal(cost), "shortfall_bps": shortfall_bps,
            "fees": exact_decimal(fees), "fee_bps": fee_bps,
            "shortfall_with_fees_bps": shortfall_bps + fee_bps,
            "is_total_bps": bps(is_cost, is_weight),
            "vwap_slippage_bps": bps(vwap_sum, vwap_weight),
            "children": sum(r["children"] for r in o),
            "fills": len(self.fills["child_id"]),
            "arrival_notional": exact_decimal(arrival_value),
            "events": self.events, "wall_s": self.wall_s,
            "events_per_s": self.events / self.wall_s if self.wall_s > 0 else float("nan"),
        }

    def _window_volume(self, s: ExecutionStrategy) -> tuple[int, int]:
        """Market ``(qty, notional_x2)`` traded in the parent's execution window."""
        v0, n0 = s.start_volume
        v1, n1 = s.end_volume or self.market.market_volume(s.parent.symbol)
        return v1 - v0, n1 - n0

    def _window_vwap_x2(self, s: ExecutionStrategy) -> Fraction:
        """The market VWAP over the parent's window in half-ticks, exactly (0: no volume)."""
        volume, notional_x2 = self._window_volume(s)
        return Fraction(notional_x2, volume) if volume > 0 else Fraction(0)

    # ------------------------------------------------------------ output

    def fills_table(self):
        """Fills as a ``pyarrow.Table``."""
        import pyarrow as pa
        types = {"parent_id": pa.int64(), "child_id": pa.int64(), "venue_ts": pa.int64(),
                 "recv_ts": pa.int64(), "price_x2": pa.int64(), "lots": pa.int64(),
                 "fee_units": pa.int64()}
        return pa.table({c: pa.array(v, type=types.get(c, pa.string()))
                         for c, v in self.fills.items()})

    def orders_table(self):
        """Per-parent metrics as a ``pyarrow.Table``."""
        import pyarrow as pa
        if not self.orders:
            return pa.table({})
        cols = {}
        for k in self.orders[0]:
            values = [r[k] for r in self.orders]
            if k in ORDER_DECIMAL_COLUMNS:
                # Exact decimal text, as the fills' prices and fees.
                values = pa.array([None if v is None else decimal_text(v) for v in values],
                                  type=pa.string())
            cols[k] = values
        return pa.table(cols)

    def write(self, out_dir: str | Path, formats=("parquet", "csv")) -> list[Path]:
        """Write ``fills`` and ``orders`` (Parquet and/or CSV) and ``summary.json``.

        Returns
        -------
        list of Path
            The files written.
        """
        import orjson
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in (("fills", self.fills_table()), ("orders", self.orders_table())):
            if "parquet" in formats:
                pq.write_table(table, out / f"{name}.parquet")
                written.append(out / f"{name}.parquet")
            if "csv" in formats:
                pacsv.write_csv(table, out / f"{name}.csv")
                written.append(out / f"{name}.csv")
        summary = {"totals": self.totals, "orders": self.orders,
                   "config": {"seed": self.config.session.seed,
                              "strategies": sorted({s.name for s in self.strategies})}}
        (out / "summary.json").write_bytes(orjson.dumps(summary, default=_json_decimal,
                                                        option=orjson.OPT_INDENT_2
                                                        | orjson.OPT_SERIALIZE_NUMPY))
        written.append(out / "summary.json")
        return written

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Draw the PNG plots (price path with fills, cumulative fill); returns their paths."""
        from sim.plots import plot_cumulative_fill, plot_price_paths
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return plot_price_paths(self, out) + [plot_cumulative_fill(self, out)]

    def summary_table(self):
        """The per-parent and total metrics as a ``rich`` table.

        ``vs arrival bps`` is the filled part's average price against the
        arrival mid (``shortfall_bps``); ``IS bps`` is Perold's
        implementation shortfall (``is_total_bps``), which also counts the
        fees and the unfilled part's opportunity cost, so a partly filled
        parent's cost is not understated under that name.
        """
        from rich.table import Table

        def f(x, digits=2):
            return "-" if x is None or x != x else f"{x:,.{digits}f}"
        t = Table(title=f"Backtest: {self.totals['parents']} parent order(s), "
                        f"{self.totals['fills']:,} fills, {self.events:,} market events in "
                        f"{self.wall_s:.2f} s",
                  caption="bps, positive is a cost. vs arrival: the filled part's average "
                          "price against the arrival mid. IS: implementation shortfall "
                          "(Perold), unfilled part and fees included.")
        for col in ("parent", "strategy", "filled", "fill %", "avg px", "arrival",
                    "vs arrival bps", "fees bps", "IS bps", "vs VWAP bps", "fees",
                    "time to fill"):
            t.add_column(col, justify="left" if col in ("parent", "strategy") else "right")

        def units(lots, symbol):
            # Quantities in the instrument's units (shares), not lots.
            return Decimal(self.market.instrument(symbol).lots_to_qty(lots))

        def price(value, symbol, extra=0):
            # The tick's decimals (plus ``extra`` for an average), at least 2.
            places = max(2, _decimals_of(self.market.instrument(symbol).tick_size)) + extra
            return f(value, places)
        for r in self.orders:
            t.add_row(f"#{r['parent_id']} {r['side']} {units(r['qty'], r['symbol']):,} "
                      f"{r['symbol']}", r["strategy"],
                      f"{units(r['filled'], r['symbol']):,}", f(100 * r["fill_rate"], 1),
                      price(r["avg_price"], r["symbol"], 2),
                      "-" if r["arrival_price"] is None else decimal_text(r["arrival_price"]),
                      f(r["shortfall_bps"]), f(r["fee_bps"]), f(r["is_total_bps"]),
                      f(r["vwap_slippage_bps"]), f(r["fees"]),
                      "-" if r["time_to_fill_s"] != r["time_to_fill_s"]
                      else f"{r['time_to_fill_s']:.1f} s")
        tt = self.totals
        t.add_row("[bold]total", "", f"{tt['filled']:,}", f(100 * tt["fill_rate"], 1), "", "",
                  f(tt["shortfall_bps"]), f(tt["fee_bps"]), f(tt["is_total_bps"]),
                  f(tt["vwap_slippage_bps"]), f(tt["fees"]), "")
        return t
