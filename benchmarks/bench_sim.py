"""Market simulator throughput: events per second and the cost of a strategy order.

The embedded default market (``sim/configs/default.toml``: 3 lit venues and a
dark pool, 2 instruments, synthetic background flow generated vectorized in
chunks) is run in simulated time, three ways in the same process:

(a) background flow only, Cython ``OrderBook``: market events processed per
    second (flow generation included);
(b) the same market with a strategy that sends one marketable child order
    every 100 events and books every report it gets back: the extra time per
    order (submit, latency, match, fill reported back to the strategy);
(c) (a) and (b) with the pure-Python reference book
    (``tests/reference/book_reference.py``) plugged into every venue, on a
    shorter span of the same flow (it is ~40x slower), for the ratios. The
    two runs' trade tapes over that span must be identical, and are checked.

Each figure is the best of several runs (the machine is shared); the
baseline is measured in the same run. Run: ``python benchmarks/bench_sim.py``
(30 simulated minutes) or ``--quick`` (under 30 s).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit, machine, table  # noqa: E402
from ext.book import OrderBook  # noqa: E402
from ext.types import OrdType, Side, TimeInForce  # noqa: E402
from sim.clock import NS_PER_S  # noqa: E402
from sim.config import load_config  # noqa: E402
from sim.market import Market  # noqa: E402
from sim.strategies import ExecutionStrategy, ParentOrder  # noqa: E402
from tests.reference.book_reference import ReferenceBook  # noqa: E402

TARGET_EVENTS_PER_S = 2_000_000
TARGET_US_PER_ORDER = 2.0
EVENTS_PER_ORDER = 100
BUY, SELL = int(Side.BUY), int(Side.SELL)
MARKET, IOC = int(OrdType.MARKET), int(TimeInForce.IOC)


class Pinger(ExecutionStrategy):
    """Every ``interval`` ns: one 1-lot market order, rotating over the lit venues.

    A real ``ExecutionStrategy``: its timer, its order entry and the booking
    of every report it gets back (ack and fill) are all in the measured cost.
    """

    name = "bench_pinger"
    defaults = {"interval": 1_000_000, "venues": (0,)}

    def on_start(self) -> None:
        self.k = 0
        self.interval = self.params["interval"]
        self.venues = self.params["venues"]
        self.on_timer()

    def on_timer(self) -> None:
        # Written as a performance-aware strategy would be: one send, one
        # timer; market orders so no quote lookup is needed to cross.
        k = self.k = self.k + 1
        self.send(self.venues[k % len(self.venues)], 1, 0, MARKET, IOC, False)
        self.wake_at(self.loop.now + self.interval)


def run_market(config, until: int, book_class, interval: int | None):
    """One run; returns (seconds, market). ``interval``: strategy order period or None."""
    market = Market(config, book_class=book_class, end_ns=until)
    if interval is not None:
        lit = tuple(v.index for v in market.lit_venues())
        parent = ParentOrder(1, market.symbols[0], BUY, 1 << 60, market.clock_start, until)
        strat = Pinger(market, parent, interval=interval, venues=lit)
        market.set_timer(market.clock_start + interval, strat.start)
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        market.run_until(until)
        return time.perf_counter() - start, market
    finally:
        gc.enable()


def measure(config, until: int, book_class, repeat: int):
    """(a) and (b) for one book class: best times with and without the strategy."""
    base_s, market = min((run_market(config, until, book_class, None) for _ in range(1)),
                         key=lambda r: r[0])
    events = market.events_processed
    span = until - market.clock_start
    interval = max(1, span * EVENTS_PER_ORDER // events)
    best_base, best_with, with_market = base_s, float("inf"), None
    for _ in range(repeat):
        # Interleaved, so both see the same background load on the machine.
        best_base = min(best_base, run_market(config, until, book_class, None)[0])
        t, m = run_market(config, until, book_class, interval)
        if t < best_with:
            best_with, with_market = t, m
    orders = with_market.loop.n_child_orders
    reports = with_market.loop.n_reports
    return {
        "events": events, "seconds": best_base, "events_per_s": events / best_base,
        "orders": orders, "reports_per_order": reports / orders if orders else 0.0,
        "us_per_order": (best_with - best_base) / orders * 1e6 if orders else float("nan"),
        "market": market,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter spans, fewer repeats (< 30 s)")
    args = ap.parse_args()
    config = load_config()
    start = config.session.clock_start_ns
    full_span = (5 * 60 if args.quick else 30 * 60 + 30) * NS_PER_S
    ref_span = (10 if args.quick else 60) * NS_PER_S
    repeat = 3 if args.quick else 5

    cy = measure(config, start + full_span, OrderBook, repeat)
    cy_short = measure(config, start + ref_span, OrderBook, repeat)
    ref = measure(config, start + ref_span, ReferenceBook, 1 if args.quick else 2)
    # Same flow, same rules: the two books must have produced the same tape.
    tape_cy = Market(config, book_class=OrderBook, record_tape=True, end_ns=start + ref_span)
    tape_ref = Market(config, book_class=ReferenceBook, record_tape=True, end_ns=start + ref_span)
    tape_cy.run_until(start + ref_span)
    tape_ref.run_until(start + ref_span)
    same = all(a.tobytes() == b.tobytes() for a, b in zip(tape_cy.tape(), tape_ref.tape()))
    if not same:
        print("ERROR: the Cython and reference books produced different trades", file=sys.stderr)
        return 1

    ratio = cy_short["events_per_s"] / ref["events_per_s"]
    order_ratio = ref["us_per_order"] / cy_short["us_per_order"]
    table(f"Simulator: default market, 3 lit + 1 dark venue, 2 instruments "
          f"({full_span // NS_PER_S} s simulated; reference on {ref_span // NS_PER_S} s)",
          ["figure", "Cython book", "reference book", "ratio", "target"],
          [["(a) events per second", cy["events_per_s"], ref["events_per_s"],
            cy_short["events_per_s"] / ref["events_per_s"], f">= {TARGET_EVENTS_PER_S:,}"],
           ["(a) events per second, short span", cy_short["events_per_s"], ref["events_per_s"],
            ratio, ""],
           ["(b) us per strategy order", cy["us_per_order"], ref["us_per_order"],
            ref["us_per_order"] / cy["us_per_order"], f"< {TARGET_US_PER_ORDER}"],
           ["(b) us per order, short span", cy_short["us_per_order"], ref["us_per_order"],
            order_ratio, ""],
           ["events", cy["events"], ref["events"], "", ""],
           ["strategy orders", cy["orders"], ref["orders"], "", ""],
           ["reports per order", cy["reports_per_order"], ref["reports_per_order"], "", ""]])
    print(f"tapes identical over the reference span: {same}")
    emit({
        "benchmark": "sim",
        "events_per_s": round(cy["events_per_s"]),
        "us_per_strategy_order": round(cy["us_per_order"], 3),
        "ratio_vs_reference": round(ratio, 2),
        "order_cost_ratio_vs_reference": round(order_ratio, 2),
        "reference_events_per_s": round(ref["events_per_s"]),
        "reference_us_per_strategy_order": round(ref["us_per_order"], 3),
        "events": cy["events"], "strategy_orders": cy["orders"],
        "events_per_order": EVENTS_PER_ORDER, "simulated_s": full_span // NS_PER_S,
        "targets": {"events_per_s": TARGET_EVENTS_PER_S,
                    "us_per_strategy_order": TARGET_US_PER_ORDER},
        "met": {"events_per_s": cy["events_per_s"] >= TARGET_EVENTS_PER_S,
                "us_per_strategy_order": cy["us_per_order"] < TARGET_US_PER_ORDER},
        "quick": args.quick, **machine(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
