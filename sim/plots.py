"""PNG plots of a backtest: the price path with the fills on it, and fill progress.

Role in the pipeline: the picture a quant looks at first after a run.
matplotlib runs on the Agg backend (files only, no display), selected before
pyplot is imported so that this works on a server. Prices are converted to
floats here, for drawing only.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.clock import NS_PER_S  # noqa: E402


def _minutes(ts, t0: int) -> np.ndarray:
    return (np.asarray(ts, dtype=np.int64) - t0) / (60 * NS_PER_S)


def symbol_file_part(symbol: str) -> str:
    """A symbol as it appears in a file name: ``"BRK/B"`` -> ``"BRK%2FB"``.

    Everything but ASCII letters, digits and ``_.-~`` is percent-encoded, so
    a symbol cannot name another folder and two symbols never share a file.
    """
    return quote(symbol, safe="")


def plot_price_paths(result, out: Path) -> list[Path]:
    """One PNG per traded symbol: NBBO bid/ask/mid and every fill (size by quantity)."""
    paths = []
    t0 = result.market.session_start
    for symbol in sorted({s.parent.symbol for s in result.strategies}):
        tick = float(Decimal(result.market.instrument(symbol).tick_size))
        smp = result.samples[symbol]
        ok = (smp["bid"] > 0) & (smp["ask"] > 0)
        fig, ax = plt.subplots(figsize=(11, 5.5))
        x = _minutes(smp["ts"][ok], t0)
        ax.fill_between(x, smp["bid"][ok] * tick, smp["ask"][ok] * tick, step="post",
                        color="0.85", label="NBBO")
        ax.plot(x, (smp["bid"][ok] + smp["ask"][ok]) * tick / 2, color="0.3", lw=0.8,
                drawstyle="steps-post", label="mid")
        fills = result.fills
        for side, color, marker in (("buy", "tab:green", "^"), ("sell", "tab:red", "v")):
            sel = [i for i, (sym, sd) in enumerate(zip(fills["symbol"], fills["side"]))
                   if sym == symbol and sd == side]
            if not sel:
                continue
            fx = _minutes([fills["venue_ts"][i] for i in sel], t0)
            fy = np.array([fills["price_x2"][i] for i in sel]) * tick / 2
            size = np.array([fills["lots"][i] for i in sel], dtype=float)
            ax.scatter(fx, fy, s=8 + 60 * size / max(size.max(), 1), c=color, marker=marker,
                       alpha=0.7, edgecolors="none", label=f"{side} fills")
        for s in result.strategies:
            if s.parent.symbol == symbol:
                ax.axvline(_minutes([s.parent.start_ns], t0)[0], color="tab:blue", lw=0.6, ls=":")
                ax.axvline(_minutes([s.parent.end_ns], t0)[0], color="tab:blue", lw=0.6, ls=":")
        ax.set_xlabel("minutes from session start")
        ax.set_ylabel("price")
        ax.set_title(f"{symbol}: price path and fills")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = out / f"price_{symbol_file_part(symbol)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_cumulative_fill(result, out: Path) -> Path:
    """Cumulative filled share of each parent over time."""
    t0 = result.market.session_start
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for s in result.strategies:
        p = s.parent
        ts = np.array([f.ts for f in s.fills], dtype=np.int64)
        qty = np.array([f.last_qty for f in s.fills], dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        x = np.concatenate(([p.start_ns], ts[order]))
        y = np.concatenate(([0], np.cumsum(qty[order]))) / p.qty * 100
        ax.step(_minutes(x, t0), y, where="post",
                label=f"#{p.parent_id} {'buy' if s.is_buy else 'sell'} {p.symbol} ({s.name})")
    ax.set_xlabel("minutes from session start")
    ax.set_ylabel("filled (% of parent)")
    ax.set_ylim(0, 105)
    ax.set_title("Cumulative fill")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "cumulative_fill.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
