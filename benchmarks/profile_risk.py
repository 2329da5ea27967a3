"""Deterministic per-order cost of the risk check, for callgrind A/B of two versions.

    .venv/bin/python benchmarks/profile_risk.py [N] [--path gate|check]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \\
        .venv/bin/python benchmarks/profile_risk.py 200000
    callgrind_annotate callgrind.out.* | head     # PROGRAM TOTALS / orders = instructions per order

Runs bench_risk.py's order stream (same seed, same prepared engine and table
sizing) once through ``SessionGate.check_new`` (``--path gate``, the engine's
call, the default) or ``RiskEngine.check_new`` (``--path check``). The
measured loop runs inside ``itertools.starmap`` so that callgrind can count
it alone (``--toggle-collect=starmap_next``); the gate form calls through
``operator.call``, which adds a few instructions per order that are the same
in both versions compared. Add ``--cache-sim=yes`` to see the cache misses.

Not a benchmark (bench_risk.py is): instruction counts do not drift with the
machine's load the way wall times do. The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import operator
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_risk  # noqa: E402
from ext.risk import RiskEngine  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("orders", nargs="?", type=int, default=200_000)
    parser.add_argument("--path", choices=("gate", "check"), default="gate")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    config = bench_risk.make_config()
    orders = bench_risk.check_stream(args.orders, args.seed)
    hint = len(orders) + bench_risk.N_ACCOUNTS * bench_risk.N_INSTRUMENTS
    engine = bench_risk.fresh(RiskEngine, config, hint)
    if args.path == "gate":
        calls = [(check,) + call_args for check, call_args in bench_risk.gate_calls(engine, orders)]
        t0 = time.perf_counter_ns()
        results = list(itertools.starmap(operator.call, calls))
    else:
        t0 = time.perf_counter_ns()
        results = list(itertools.starmap(engine.check_new, orders))
    elapsed = time.perf_counter_ns() - t0
    print(json.dumps({"orders": len(orders), "path": args.path, "passed": results.count(0),
                      "ns_per_order": round(elapsed / len(orders), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
