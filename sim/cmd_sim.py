"""``kronos-exec sim``: run a backtest from a configuration file.

Executes the configured parent orders with an execution strategy against the
simulated venues, then prints a summary table and writes the fills, the
per-order metrics (Parquet and/or CSV), ``summary.json`` and PNG plots to the
output folder. With no ``--config`` it runs the embedded default
(``sim/configs/default.toml``: a rebalance on three lit venues and a dark
pool). See ``docs/sim.md``.
"""
from __future__ import annotations

import argparse
import sys
import tomllib

from rich.console import Console


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    try:
        # TOML literal syntax: 6, 0.5, true, "2s"; anything else is a string.
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``kronos-exec sim``."""
    parser.add_argument("--config", "-c", default=None,
                        help="TOML configuration (default: the embedded sim/configs/default.toml)")
    parser.add_argument("--strategy", "-s", default=None,
                        help="strategy for every parent: sweep, twap, passive_aggressive or "
                             "package.module:Class (default: from the configuration)")
    parser.add_argument("--param", "-p", action="append", type=_param, default=[],
                        metavar="KEY=VALUE", help="strategy parameter (repeatable), e.g. slices=6")
    parser.add_argument("--seed", type=int, default=None, help="session seed (default: config)")
    parser.add_argument("--out", "-o", default=None, help="output folder (default: [output] dir)")
    parser.add_argument("--format", default=None,
                        help="comma-separated: parquet,csv (default: [output] formats)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the backtest; 0 on success, 2 on a configuration error."""
    from sim.backtest import Backtest
    from sim.config import ConfigError, load_config

    # Rich wraps at 80 columns when not on a terminal; the table needs more.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        config = load_config(args.config)
        bt = Backtest(config, strategy=args.strategy,
                      params=dict(args.param) if args.param else None, seed=args.seed,
                      progress=not args.no_progress)
    except (ConfigError, ValueError, OSError) as exc:
        console.print(f"[red]kronos-exec sim: {exc}")
        return 2
    result = bt.run()
    console.print(result.summary_table())
    tt = result.totals
    console.print(f"total implementation shortfall {tt['shortfall']:,.2f} "
                  f"({tt['shortfall_bps']:.2f} bps) + fees {tt['fees']:,.2f} "
                  f"({tt['fee_bps']:.2f} bps); {tt['events_per_s']:,.0f} market events/s")
    out = args.out or str(config.output.dir)
    formats = tuple(f.strip() for f in args.format.split(",")) if args.format \
        else config.output.formats
    written = result.write(out, formats)
    if config.output.plots and not args.no_plots:
        written += result.plot(out)
    for path in written:
        console.print(f"wrote {path}")
    return 0
