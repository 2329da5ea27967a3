"""Market simulator and backtester: venues built on the same ``ext`` book the engine uses.

Role in the pipeline: the venues at the end of the order's path when no real
venue is configured, and a quant's tool to backtest execution. Lit venues and
dark midpoint pools (``sim.market``) with fees, latency and trading hours run
one Cython order book per instrument, driven by seeded synthetic background
flow (``sim.flow``) or by recorded quotes and trades (``sim.replay``), on
simulated time (``Backtest``, deterministic for a seed) or on the asyncio loop
(``RealtimeVenues``, the engine's default venues). Execution strategies
(``sim.strategies``) work parent orders into child orders; results and plots
come from ``sim.backtest``. Documentation: ``docs/sim.md``.

Heavy imports (pyarrow, matplotlib) happen only when results are written or
plotted.
"""
from sim.backtest import Backtest, BacktestResult
from sim.config import ConfigError, SimConfig, config_from_dict, load_config
from sim.market import Market, MarketView, Report, ReportKind, VenueInfo
from sim.realtime import RealtimeVenues
from sim.replay import ReplayFeed, load_quotes, load_trades, record_sample
from sim.strategies import (
    STRATEGIES, ExecutionStrategy, ParentOrder, PassiveAggressiveStrategy, SweepStrategy,
    TwapStrategy, plan_sweep, register_strategy, resolve_strategy,
)

__all__ = [
    "Backtest", "BacktestResult", "ConfigError", "SimConfig", "config_from_dict", "load_config",
    "Market", "MarketView", "Report", "ReportKind", "VenueInfo", "RealtimeVenues", "ReplayFeed",
    "load_quotes", "load_trades", "record_sample", "STRATEGIES", "ExecutionStrategy", "ParentOrder",
    "PassiveAggressiveStrategy", "SweepStrategy", "TwapStrategy", "plan_sweep",
    "register_strategy", "resolve_strategy",
]
