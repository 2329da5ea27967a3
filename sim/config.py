"""Simulator configuration: the TOML file a backtest (or the engine's venues) starts from.

Role in the pipeline: everything the simulator needs (session, instruments,
venues with their fees, latency and hours, background flow, replay files,
parent orders and the execution strategy, outputs) is read here, validated
once, and handed to ``sim.market`` and ``sim.backtest`` as frozen
dataclasses. Prices and quantities stay decimal strings until they meet an
``ext.instrument.Instrument``; rates and volatilities are floats because they
only parameterise random draws. Every key is documented in ``docs/sim.md``;
``sim/configs/default.toml`` is the embedded default.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from ext.instrument import Instrument
from ext.simloop import MAX_MD_DEPTH, MD_DEPTH_DEFAULT
from sim.clock import at, format_ts, parse_date, parse_duration, parse_time_of_day
from sim.fees import FeeSchedule
from sim.latency import LATENCY_KEYS, LatencySpec

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
#: Output formats of ``[output] formats`` and ``kronos-exec sim --format``.
OUTPUT_FORMATS = ("parquet", "csv")
#: Accounts 1-4 are the background flow's, 5-6 the replay's: a parent on one
#: of them would self-trade-prevent against that flow and execute nothing.
FIRST_PARENT_ACCOUNT = 7
#: Above this many background events per simulated second (every book's
#: rates added up), the Poisson gaps fall below a few nanoseconds and a
#: backtest would not end in any useful time.
MAX_FLOW_EVENTS_PER_S = 10_000_000
#: Bounds of what takes memory: resting background orders per book, events
#: per generated chunk, NBBO samples per session (a 2 s session sampled every
#: microsecond, 2 million samples, peaked at 445 MB).
MAX_FLOW_ORDERS = 1_000_000
MAX_CHUNK_EVENTS = 1 << 20
MAX_SAMPLES = 2_000_000


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid (the message names it)."""


def _take(table: dict, key: str, where: str, default: Any = ..., kind: type | tuple = object):
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}.{key} is required")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and kind is float and not math.isfinite(value):
        # TOML allows inf and nan; as a rate or a volatility they make the
        # event generator stall, so they are refused with the key's name.
        raise ConfigError(f"{where}.{key} = {value!r}: must be a finite number")
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # Quantities and prices are decimal strings; a bare TOML integer is
        # accepted (it is exact), a float is not (it may not be).
        if isinstance(value, float):
            raise ConfigError(f"{where}.{key} = {value!r}: write it as a string, e.g. \"{value}\"")
        value = str(value)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # (TOML's true is a Python int: a count of `true` is a mistake.)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        name = "/".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}.{key} must be {name}, got {type(value).__name__}")
    return value


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _tables(data: dict, key: str, default: Any = ...) -> list:
    """The array of tables ``key`` (``[[key]]``), each item checked to be a table."""
    items = _take(data, key, "config", default, list)
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            # Otherwise a string's characters were reported as its unknown keys.
            raise ConfigError(f"{key}[{k}] must be a table ([[{key}]] in TOML), got "
                              f"{type(item).__name__} {item!r}")
    return items


def check_seed(value, where: str) -> int:
    """A seed (an integer from 0 to 2^63 - 1), or ConfigError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
        raise ConfigError(f"{where} = {value!r}: must be an integer from 0 to 2^63 - 1")
    return value


def parse_formats(values, where: str) -> tuple[str, ...]:
    """Output formats (``OUTPUT_FORMATS``, lower case as written), or ConfigError naming ``where``.

    One rule for ``[output] formats`` and ``kronos-exec sim --format``.
    """
    formats = tuple(values)
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad:
        raise ConfigError(f"{where}: unknown format(s) {', '.join(repr(f) for f in bad)}; "
                          f"use \"parquet\" and/or \"csv\"")
    return formats


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class SessionConfig:
    """``[session]``: the simulated day.

    ``start``/``end`` bound the backtest; the market starts ``warmup`` before
    ``start`` so books are populated when parents begin.
    """

    date: str = "2026-01-05"
    start: str = "10:00:00"
    end: str = "10:30:00"
    warmup: str = "30s"
    seed: int = 1
    sample_interval: str = "1s"

    @property
    def start_ns(self) -> int:
        return at(parse_date(self.date), self.start)

    @property
    def end_ns(self) -> int:
        return at(parse_date(self.date), self.end)

    @property
    def clock_start_ns(self) -> int:
        return self.start_ns - parse_duration(self.warmup)

    def at(self, time_of_day: str) -> int:
        """Epoch ns of a time of day on the session date."""
        return at(parse_date(self.date), time_of_day)


@dataclass(frozen=True)
class InstrumentConfig:
    """``[[instruments]]``: the price grid and the reference-price process."""

    symbol: str
    tick_size: str = "0.01"
    lot_size: str = "1"
    min_qty: str | None = None
    price: str = "100.00"
    volatility: float = 0.2
    model: str = "gbm"
    activity: float = 1.0

    def instrument(self) -> Instrument:
        return Instrument(self.symbol, self.tick_size, self.lot_size, self.min_qty)


@dataclass(frozen=True)
class FlowConfig:
    """``[flow]``: background flow per lit book (rates per second).

    Liquidity providers add limit orders around the reference price
    (``lp_rate``), each new one replacing the oldest of their ``max_orders``
    live orders in that book; they also cancel a random recent order
    (``cancel_rate``); takers send market orders (``taker_rate``). Buy
    quotes are at ``floor(ref - half_spread_ticks) - k`` and sell quotes at
    ``ceil(ref + half_spread_ticks) + k`` ticks, ``k`` geometric with
    parameter ``depth_decay``. Sizes are ``qty_unit`` times a geometric
    number with mean ``lp_qty / qty_unit`` (``taker_qty`` for takers).

    Dark pools: ``dark_rate`` resting midpoint pegs per second (each
    replacing the oldest of ``dark_max_orders``), ``dark_taker_rate`` IOC
    midpoint orders, sizes with mean ``dark_qty``.
    """

    lp_rate: float = 300.0
    cancel_rate: float = 100.0
    taker_rate: float = 30.0
    max_orders: int = 150
    half_spread_ticks: float = 0.25
    depth_decay: float = 0.35
    lp_qty: str = "200"
    taker_qty: str = "150"
    qty_unit: str = "100"
    dark_rate: float = 3.0
    dark_taker_rate: float = 2.0
    dark_max_orders: int = 20
    dark_qty: str = "300"
    chunk_events: int = 32768


#: ``venues[].market_data_latency`` when absent: none, strategies read the
#: venue's books as they are (the simulator's behaviour before the key).
NO_MARKET_DATA_LATENCY = LatencySpec("fixed", mean_us=0.0, median_us=0.0, min_us=0.0)


@dataclass(frozen=True)
class VenueConfig:
    """``[[venues]]``: one venue (a book per instrument)."""

    name: str
    kind: str = "lit"
    fees: FeeSchedule = FeeSchedule()
    latency: LatencySpec = LatencySpec()
    hours: tuple[str, str] = ("09:30:00", "16:00:00")
    flow_scale: float = 1.0
    market_data_latency: LatencySpec = NO_MARKET_DATA_LATENCY
    #: Levels per side strategies see of the venue's books under
    #: ``market_data_latency`` (its ``depth`` as it was); unused without it.
    market_data_depth: int = MD_DEPTH_DEFAULT

    @property
    def dark(self) -> bool:
        return self.kind == "dark"


@dataclass(frozen=True)
class ParentConfig:
    """``[[parents]]``: one parent order to execute."""

    symbol: str
    side: str
    qty: str
    start: str | None = None
    duration: str | None = None
    end: str | None = None
    strategy: str | None = None
    params: dict = field(default_factory=dict)
    account: int = 1000

    def window(self, session: SessionConfig) -> tuple[int, int]:
        """``(start_ns, end_ns)`` of the execution window.

        From ``start`` (default: the session start) to ``end``,
        ``start + duration`` or (neither given) the session end.
        """
        start = session.at(self.start) if self.start else session.start_ns
        if self.end:
            end = session.at(self.end)
        elif self.duration:
            end = start + parse_duration(self.duration)
        else:
            end = session.end_ns
        return start, end


@dataclass(frozen=True)
class StrategyConfig:
    """``[strategy]``: the execution strategy parents use unless they name one."""

    name: str = "twap"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayConfig:
    """``[replay]``: drive the lit venues from recorded quotes, L2 depth and trades.

    ``flow``: run the synthetic background flow as well, its lit quotes pegged
    to the replayed NBBO mid (otherwise the replay replaces the flow).
    """

    quotes: str | None = None
    trades: str | None = None
    depth: str | None = None
    venue_map: dict = field(default_factory=dict)
    flow: bool = False


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: where results go."""

    dir: str = "out/sim"
    formats: tuple[str, ...] = ("parquet", "csv")
    plots: bool = True


@dataclass(frozen=True)
class SimConfig:
    """The whole configuration (see ``load_config``)."""

    session: SessionConfig
    instruments: tuple[InstrumentConfig, ...]
    venues: tuple[VenueConfig, ...]
    flow: FlowConfig = FlowConfig()
    strategy: StrategyConfig = StrategyConfig()
    parents: tuple[ParentConfig, ...] = ()
    replay: ReplayConfig | None = None
    output: OutputConfig = OutputConfig()
    base_dir: str = "."

    def with_overrides(self, **changes) -> "SimConfig":
        """A copy with top-level sections replaced (``dataclasses.replace``)."""
        return replace(self, **changes)

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the configuration file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


# ---------------------------------------------------------------- parsing

def _session(t: dict) -> SessionConfig:
    w = "session"
    _check_keys(t, {"date", "start", "end", "warmup", "seed", "sample_interval"}, w)
    s = SessionConfig(
        date=_take(t, "date", w, SessionConfig.date, str),
        start=_take(t, "start", w, SessionConfig.start, str),
        end=_take(t, "end", w, SessionConfig.end, str),
        warmup=_take(t, "warmup", w, SessionConfig.warmup, str),
        seed=check_seed(_take(t, "seed", w, SessionConfig.seed, int), "session.seed"),
        sample_interval=_take(t, "sample_interval", w, SessionConfig.sample_interval, str),
    )
    try:
        if s.end_ns <= s.start_ns:
            raise ConfigError("session.end must be after session.start")
        parse_duration(s.warmup)
        interval = parse_duration(s.sample_interval)
        if interval <= 0:
            raise ConfigError("session.sample_interval must be positive")
        samples = (s.end_ns - s.start_ns + parse_duration(s.warmup)) // interval
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"session: {exc}") from exc
    if samples > MAX_SAMPLES:
        raise ConfigError(f"session.sample_interval = {s.sample_interval!r} takes {samples:,} "
                          f"samples over the session; at most {MAX_SAMPLES:,}: use a longer "
                          f"interval")
    return s


def _instrument(t: dict, k: int) -> InstrumentConfig:
    w = f"instruments[{k}]"
    _check_keys(t, {"symbol", "tick_size", "lot_size", "min_qty", "price", "volatility", "model",
                    "activity"}, w)
    ic = InstrumentConfig(
        symbol=_take(t, "symbol", w, kind=str),
        tick_size=_take(t, "tick_size", w, "0.01", str),
        lot_size=_take(t, "lot_size", w, "1", str),
        min_qty=_take(t, "min_qty", w, None, str),
        price=_take(t, "price", w, "100.00", str),
        volatility=_take(t, "volatility", w, 0.2, float),
        model=_take(t, "model", w, "gbm", str),
        activity=_take(t, "activity", w, 1.0, float),
    )
    if ic.model not in ("gbm", "random_walk"):
        raise ConfigError(f"{w}.model must be \"gbm\" or \"random_walk\"")
    if ic.volatility < 0 or ic.activity < 0:
        raise ConfigError(f"{w}: volatility and activity must be >= 0")
    try:
        ic.instrument().price_to_ticks(ic.price)
    except ValueError as exc:
        raise ConfigError(f"{w}: {exc}") from exc
    return ic


def _flow(t: dict) -> FlowConfig:
    w = "flow"
    names = {f for f in FlowConfig.__dataclass_fields__}
    _check_keys(t, names, w)
    kw = {}
    for name in names:
        default = getattr(FlowConfig, name)
        kind = type(default)
        kw[name] = _take(t, name, w, default, kind)
        if kind in (int, float) and kw[name] < 0:
            raise ConfigError(f"{w}.{name} must be >= 0")
    if not 0 < kw["depth_decay"] <= 1:
        raise ConfigError("flow.depth_decay must be in (0, 1]")
    if kw["max_orders"] < 1 or kw["dark_max_orders"] < 1 or kw["chunk_events"] < 16:
        raise ConfigError("flow.max_orders, dark_max_orders >= 1 and chunk_events >= 16")
    # Memory is taken per order and per chunk event: bounded here, so that a
    # typo is an error at load and not a traceback (or gigabytes) mid-run.
    for name, high in (("max_orders", MAX_FLOW_ORDERS), ("dark_max_orders", MAX_FLOW_ORDERS),
                       ("chunk_events", MAX_CHUNK_EVENTS)):
        if kw[name] > high:
            raise ConfigError(f"{w}.{name} = {kw[name]}: must be at most {high:,}")
    for name in ("lp_qty", "taker_qty", "dark_qty"):
        try:
            small = 0 < Decimal(kw[name]) < Decimal(kw["qty_unit"])
        except ArithmeticError:
            continue            # (not a decimal, or not positive: refused per instrument)
        if small:
            # Sizes are whole qty_units: a smaller mean was raised to one unit.
            raise ConfigError(f"{w}.{name} = {kw[name]!r} is below flow.qty_unit = "
                              f"{kw['qty_unit']!r}: sizes are whole qty_units")
    return FlowConfig(**kw)


def _venue(t: dict, k: int) -> VenueConfig:
    w = f"venues[{k}]"
    _check_keys(t, {"name", "kind", "fees", "latency", "hours", "flow_scale",
                    "market_data_latency", "market_data_depth"}, w)
    kind = _take(t, "kind", w, "lit", str)
    if kind not in ("lit", "dark"):
        raise ConfigError(f"{w}.kind must be \"lit\" or \"dark\"")
    fees_t = _take(t, "fees", w, {}, dict)
    _check_keys(fees_t, {"maker_per_share", "taker_per_share", "maker_bps", "taker_bps"},
                f"{w}.fees")
    fees = FeeSchedule(**{key: _take(fees_t, key, f"{w}.fees", "0", str)
                          for key in ("maker_per_share", "taker_per_share", "maker_bps",
                                      "taker_bps")})
    try:
        fees.cbps()
    except ValueError as exc:
        raise ConfigError(f"{w}.fees: {exc}") from exc
    latency = _latency(t, "latency", w, LatencySpec())
    md_latency = _latency(t, "market_data_latency", w, NO_MARKET_DATA_LATENCY)
    md_depth = _take(t, "market_data_depth", w, MD_DEPTH_DEFAULT, int)
    if not 1 <= md_depth <= MAX_MD_DEPTH:
        # Each recorded change copies this many levels per side: the bound
        # keeps one change's cost (48 bytes a level pair) in hand.
        raise ConfigError(f"{w}.market_data_depth = {md_depth}: must be an integer from 1 to "
                          f"{MAX_MD_DEPTH}")
    hours = _take(t, "hours", w, ["09:30:00", "16:00:00"], list)
    if len(hours) != 2 or not all(isinstance(h, str) for h in hours):
        raise ConfigError(f"{w}.hours must be [open, close], e.g. [\"09:30:00\", \"16:00:00\"]")
    try:
        if parse_time_of_day(hours[1]) <= parse_time_of_day(hours[0]):
            raise ConfigError(f"{w}.hours: close must be after open")
    except ValueError as exc:
        raise ConfigError(f"{w}.hours: {exc}") from exc
    scale = _take(t, "flow_scale", w, 1.0, float)
    if scale < 0:
        raise ConfigError(f"{w}.flow_scale must be >= 0")
    name = _take(t, "name", w, kind=str)
    if not name.strip() or name != name.strip():
        # Every fill and report names its venue: a blank one attributes nothing.
        raise ConfigError(f"{w}.name {name!r}: expected a venue's name (not blank, no spaces "
                          f"around it)")
    return VenueConfig(name=name, kind=kind, fees=fees, latency=latency,
                       hours=(str(hours[0]), str(hours[1])), flow_scale=scale,
                       market_data_latency=md_latency, market_data_depth=md_depth)


def _latency(t: dict, key: str, w: str, default: LatencySpec) -> LatencySpec:
    """A venue's latency table ``t[key]`` (a model and its keys), absent keys from ``default``."""
    where = f"{w}.{key}"
    lat_t = _take(t, key, w, {}, dict)
    lat_fields = set(LatencySpec.__dataclass_fields__)
    _check_keys(lat_t, lat_fields, where)
    lat_kw = {}
    for field_ in lat_fields:
        if field_ in lat_t:
            kind_ = str if field_ == "model" else int if field_ == "seed" else float
            lat_kw[field_] = _take(lat_t, field_, where, kind=kind_)
    if "seed" in lat_kw:
        check_seed(lat_kw["seed"], f"{where}.seed")
    model = lat_kw.get("model", default.model)
    foreign = sorted(set(lat_kw) - LATENCY_KEYS.get(model, set(lat_kw)))
    if foreign:
        # A key of another model would be silently ignored (a lognormal's
        # mean_us left the venue at the default 100 µs median).
        raise ConfigError(f"{where}: {', '.join(foreign)} do(es) not apply to model "
                          f"{model!r} (its keys: {', '.join(sorted(LATENCY_KEYS[model]))})")
    try:
        return replace(default, **lat_kw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _parent(t: dict, k: int) -> ParentConfig:
    w = f"parents[{k}]"
    _check_keys(t, {"symbol", "side", "qty", "start", "duration", "end", "strategy", "params",
                    "account"}, w)
    side = _take(t, "side", w, kind=str).lower()
    if side not in ("buy", "sell"):
        raise ConfigError(f"{w}.side must be \"buy\" or \"sell\"")
    p = ParentConfig(
        symbol=_take(t, "symbol", w, kind=str), side=side, qty=_take(t, "qty", w, kind=str),
        start=_take(t, "start", w, None, str), duration=_take(t, "duration", w, None, str),
        end=_take(t, "end", w, None, str), strategy=_take(t, "strategy", w, None, str),
        params=dict(_take(t, "params", w, {}, dict)), account=_take(t, "account", w, 1000, int),
    )
    if p.duration is not None and p.end is not None:
        raise ConfigError(f"{w}: give duration or end, not both")
    try:
        if p.duration is not None:
            parse_duration(p.duration)
        for tod in (p.start, p.end):
            if tod is not None:
                parse_time_of_day(tod)
    except ValueError as exc:
        raise ConfigError(f"{w}: {exc}") from exc
    return p


def _check_quantities(instruments, venues, flow: FlowConfig) -> None:
    """What only holds per instrument: fee granularity, flow sizes on the lot grid, event rate."""
    for ic in instruments:
        inst = ic.instrument()
        for k, v in enumerate(venues):
            try:
                v.fees.per_lot_units(inst)
            except ValueError as exc:
                raise ConfigError(f"venues[{k}].fees: {exc}") from exc
        for name in ("lp_qty", "taker_qty", "qty_unit", "dark_qty"):
            try:
                inst.qty_to_lots(getattr(flow, name))
            except ValueError as exc:
                raise ConfigError(f"flow.{name}: {exc} (instrument {ic.symbol}, lot_size "
                                  f"{ic.lot_size})") from exc
    # The event rate SyntheticFlow draws from, every book added up.
    lit_rate = flow.lp_rate + flow.cancel_rate + flow.taker_rate
    dark_rate = flow.dark_rate + flow.dark_taker_rate
    total = sum(v.flow_scale * ic.activity * (dark_rate if v.dark else lit_rate)
                for v in venues for ic in instruments)
    if total > MAX_FLOW_EVENTS_PER_S:
        raise ConfigError(f"flow: {total:.3g} background events per simulated second (the flow "
                          "rates x venues[].flow_scale x instruments[].activity, over every "
                          f"book) is more than {MAX_FLOW_EVENTS_PER_S:,}")


def _check_parent(p: ParentConfig, k: int, session: SessionConfig, instruments, venues) -> None:
    """A parent that could execute: a known instrument, a quantity, a window in the session."""
    w = f"parents[{k}]"
    ic = next((i for i in instruments if i.symbol == p.symbol), None)
    if ic is None:
        raise ConfigError(f"{w}.symbol {p.symbol!r} is not an instrument")
    try:
        ic.instrument().qty_to_lots(p.qty)
    except ValueError as exc:
        raise ConfigError(f"{w}.qty: {exc}") from exc
    if p.account < FIRST_PARENT_ACCOUNT:
        raise ConfigError(f"{w}.account = {p.account}: accounts 1-4 are the background flow's "
                          f"and 5-6 the replay's; use {FIRST_PARENT_ACCOUNT} or more "
                          "(default 1000)")
    start, end = p.window(session)
    span = " to ".join(format_ts(t)[11:].removesuffix(".000000") for t in (start, end))
    if end <= start:
        raise ConfigError(f"{w}: the window {span} is empty (end must be after start)")
    if start < session.start_ns or end > session.end_ns:
        raise ConfigError(f"{w}: the window {span} is not inside the session "
                          f"(session.start {session.start} to session.end {session.end})")
    date = parse_date(session.date)
    if not any(at(date, v.hours[0]) < end and start < at(date, v.hours[1])
               for v in venues if not v.dark):
        raise ConfigError(f"{w}: the window {span} is outside every lit venue's hours")


def config_from_dict(data: dict, base_dir: str | Path = ".") -> SimConfig:
    """Build and validate a ``SimConfig`` from parsed TOML.

    Raises
    ------
    ConfigError
        On any missing, unknown or invalid value.
    """
    _check_keys(data, {"session", "instruments", "venues", "flow", "strategy", "parents",
                       "replay", "output"}, "config")
    session = _session(_take(data, "session", "config", {}, dict))
    instruments = tuple(_instrument(t, k) for k, t in
                        enumerate(_tables(data, "instruments")))
    venues = tuple(_venue(t, k) for k, t in enumerate(_tables(data, "venues")))
    if not instruments or not venues:
        raise ConfigError("config needs at least one instrument and one venue")
    # Venue names told apart by case alone ("NEXA", "nexa") are refused too:
    # people read reports by them.
    for what, names in (("instrument symbol", [i.symbol for i in instruments]),
                        ("venue name", [v.name.casefold() for v in venues])):
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"duplicate {what}(s): {', '.join(sorted(dupes))}")
    if all(v.dark for v in venues):
        raise ConfigError("a dark pool needs at least one lit venue for its reference price")
    flow = _flow(_take(data, "flow", "config", {}, dict))
    st = _take(data, "strategy", "config", {}, dict)
    _check_keys(st, {"name", "params"}, "strategy")
    strategy = StrategyConfig(name=_take(st, "name", "strategy", "twap", str),
                              params=dict(_take(st, "params", "strategy", {}, dict)))
    parents = tuple(_parent(t, k) for k, t in
                    enumerate(_tables(data, "parents", [])))
    _check_quantities(instruments, venues, flow)
    for k, p in enumerate(parents):
        _check_parent(p, k, session, instruments, venues)
    replay = None
    if "replay" in data:
        rt = _take(data, "replay", "config", kind=dict)
        _check_keys(rt, {"quotes", "trades", "depth", "venue_map", "flow"}, "replay")
        replay = ReplayConfig(quotes=_take(rt, "quotes", "replay", None, str),
                              trades=_take(rt, "trades", "replay", None, str),
                              depth=_take(rt, "depth", "replay", None, str),
                              venue_map=dict(_take(rt, "venue_map", "replay", {}, dict)),
                              flow=_take(rt, "flow", "replay", False, bool))
        for key, value in replay.venue_map.items():
            if not isinstance(value, str):
                raise ConfigError(f"replay.venue_map.{key} = {value!r}: must be a venue name "
                                  "(a string)")
        if replay.quotes is None and replay.trades is None and replay.depth is None:
            raise ConfigError("replay needs quotes, depth and/or trades")
        for kind in ("quotes", "trades", "depth"):
            path = getattr(replay, kind)
            if path is not None and not (Path(base_dir) / path).is_file():
                raise ConfigError(f"replay.{kind}: no such file: {Path(base_dir) / path}")
    out = _take(data, "output", "config", {}, dict)
    _check_keys(out, {"dir", "formats", "plots"}, "output")
    formats = parse_formats(_take(out, "formats", "output", list(OUTPUT_FORMATS), list),
                            "output.formats")
    output = OutputConfig(dir=_take(out, "dir", "output", "out/sim", str), formats=formats,
                          plots=_take(out, "plots", "output", True, bool))
    return SimConfig(session=session, instruments=instruments, venues=venues, flow=flow,
                     strategy=strategy, parents=parents, replay=replay, output=output,
                     base_dir=str(base_dir))


def load_config(path: str | Path | None = None) -> SimConfig:
    """Read a TOML configuration (the embedded default when ``path`` is None).

    Relative file paths inside it (replay data) are taken from the file's folder.

    Raises
    ------
    ConfigError
        If the file is not valid TOML or a value is invalid.
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is not TOML.
        data = tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return config_from_dict(data, base_dir=p.resolve().parent)
