"""What every benchmark shares: timing, the results table and the closing JSON line.

A benchmark measures the project's code and its baseline on the same input in
the same process run, prints each figure beside the baseline as a ratio (the
machines are shared and noisy, so only same-run ratios are comparable), and
ends its output with one line holding a JSON object of its figures.
"""
from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from typing import Callable

import orjson
from rich.console import Console
from rich.table import Table

# Wide enough that a results table never wraps, also when output goes to a file.
console = Console(stderr=False, highlight=False, width=120)


def without_gc(fn: Callable[[], object]) -> object:
    """``fn()`` after a collection and with the collector off (every timed run, subject
    and baseline alike: collections would land on whichever side allocates more)."""
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Run ``fn`` ``repeat`` times with the GC off; return (best seconds, last result).

    The best run is the one least disturbed by other work on a shared
    machine; the project's code and its baseline are timed the same way.
    """
    def timed() -> tuple[float, object]:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    best, result = float("inf"), None
    for _ in range(repeat):
        elapsed, result = without_gc(timed)
        best = min(best, elapsed)
    return best, result


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU, cores, Python and commit: recorded with every report."""
    cpu = cpu_model()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "commit": commit}


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    """Print a results table."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        t.add_row(*[f"{v:,.0f}" if isinstance(v, (int, float)) and abs(v) >= 100
                    else f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
    console.print(t)


def emit(figures: dict) -> None:
    """Print the closing JSON line (always the very last line of output)."""
    sys.stdout.flush()
    print(orjson.dumps(figures, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
