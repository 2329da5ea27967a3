"""``kronos-exec sim``: run a backtest from a configuration file.

Executes the configured parent orders with an execution strategy against the
simulated venues, then prints a summary table and writes the fills, the
per-order metrics (Parquet and/or CSV), ``summary.json`` and PNG plots to the
output folder, after deleting what an earlier run wrote there. With no
``--config`` it runs the embedded default (``sim/configs/default.toml``: a
rebalance on three lit venues and a dark pool). See ``docs/sim.md``.
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
                        help="strategy for every parent: sweep, twap, passive_aggressive, periodic_taker or "
                             "package.module:Class (default: from the configuration)")
    parser.add_argument("--param", "-p", action="append", type=_param, default=[],
                        metavar="KEY=VALUE", help="strategy parameter (repeatable), e.g. slices=6")
    parser.add_argument("--seed", type=int, default=None, help="session seed (default: config)")
    parser.add_argument("--out", "-o", default=None, help="output folder (default: [output] dir)")
    parser.add_argument("--format", default=None,
                        help="comma-separated: parquet,csv (default: [output] formats)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> None:
    """One line ``kronos-exec sim: <message>`` on stderr, never wrapped."""
    print(f"kronos-exec sim: {message}", file=sys.stderr)


def check_out_dir(out: str) -> None:
    """Make sure ``out`` is (or can become) a writable folder, creating it.

    Called before the simulation, so a typo in ``--out`` costs no run.

    Raises
    ------
    ConfigError
        If ``out`` is a file, or cannot be created or written to.
    """
    import os
    from pathlib import Path

    from sim.config import ConfigError
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out}: not a folder (a file of that name exists)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder: "
                          f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the folder is not writable")


def run(args: argparse.Namespace) -> int:
    """Run the backtest; 0 on success, 2 on a configuration error, 1 on a write failure."""
    from sim.backtest import Backtest, remove_outputs
    from sim.config import ConfigError, load_config, parse_formats

    # Rich wraps at 80 columns when not on a terminal; the table needs more.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        config = load_config(args.config)
        formats = parse_formats([f.strip() for f in args.format.split(",")], "--format") \
            if args.format else config.output.formats
        bt = Backtest(config, strategy=args.strategy,
                      params=dict(args.param) if args.param else None, seed=args.seed,
                      progress=not args.no_progress)
        # Replay files are read here: their errors are configuration errors too.
        bt.build()
        out = args.out or str(config.output.dir)
        check_out_dir(out)
    except (ConfigError, OSError) as exc:
        # OSError: the configuration file itself cannot be read. Anything
        # else escaping the set-up is a bug and keeps its traceback.
        _error(str(exc))
        return 2
    try:
        result = bt.run()
    except OverflowError as exc:
        # A sum past int64 that the set-up could not foresee (prices far
        # from the reference): the message says which and what to change.
        _error(str(exc))
        return 2
    console.print(result.summary_table())
    tt = result.totals
    # "Implementation shortfall" is Perold's, unfilled part included; the
    # filled part's cost against arrival is labelled as only that.
    console.print(f"implementation shortfall (Perold: filled part, fees and the unfilled part "
                  f"at the end mid) {_bps(tt['is_total_bps'])}", highlight=False)
    console.print(f"filled part vs arrival {tt['shortfall']:,.2f} "
                  f"({_bps(tt['shortfall_bps'])}) + fees {tt['fees']:,.2f} "
                  f"({_bps(tt['fee_bps'])}); {tt['events_per_s']:,.0f} market events/s",
                  highlight=False)
    try:
        # The folder must not mix this run's files with an earlier run's.
        removed = remove_outputs(out)
        if removed:
            console.print(f"removed {len(removed)} file(s) of an earlier run from {out}",
                          highlight=False)
        written = result.write(out, formats)
        if config.output.plots and not args.no_plots:
            written += result.plot(out)
    except OSError as exc:
        # Checked before the run, but a disk can fill or a folder vanish since.
        _error(f"cannot write the results to {out}: {exc}")
        return 1
    for path in written:
        console.print(f"wrote {path}")
    return 0


def _bps(value: float) -> str:
    return "- bps" if value != value else f"{value:.2f} bps"
