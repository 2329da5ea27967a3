"""Market simulator throughput: events per second and the cost of a strategy order.

The embedded default market (``sim/configs/default.toml``: 3 lit venues and a
dark pool, 2 instruments, synthetic background flow generated vectorized in
chunks) is run in simulated time, three ways in the same process:

(a) background flow only, Cython ``OrderBook``: market events processed per
    second (flow generation included);
(b) the same market with a strategy that sends one marketable child order
    every 100 events and books every report it gets back: the extra time per
    order (submit, latency, match, fill reported back to the strategy), for
    the same strategy written two ways: in Python (``Pinger`` below, an
    ``ExecutionStrategy`` whose ``on_timer`` runs in the interpreter) and
    compiled (``sim.strategies.PeriodicTakerStrategy``, whose hook is C code
    in ``ext/simstrat.pyx``, as a numba backtester compiles its strategies).
    The target is judged on the compiled one; the Python figure is printed
    beside it;
(c) (a) on the same span, and (b) (Python strategy) on a shorter one, with
    the pure-Python reference book (``tests/reference/book_reference.py``)
    plugged into every venue, for the ratios. The two books' trade tapes
    must be identical, and are checked.
(d) the market with ``DARK_ORDERS`` midpoint orders resting in the dark
    pool (half with a limit the mid is within, in the pool's book; half
    parked below the mid), against the same market without them: CPU ms per
    simulated second both ways and their ratio. A mid move should cost only
    the orders whose eligibility it flips (``ext/simloop.pyx``, DarkBook);
    what remains is the one-sided and locked NBBOs, which take every limit
    order out of the book and put it back.

Times are CPU time of this process (the machine is shared: time spent
waiting for a core is not the simulator's). (a) is the best of several runs;
(b) alternates runs without the strategy, with the Python one and with the
compiled one, and takes the median of the paired differences, because load
comes in bursts that adjacent runs share; the best-of difference (best run
with minus best run without) is printed beside it. Run: ``python benchmarks/bench_sim.py`` (30 simulated minutes, about
a minute and a half) or ``--quick`` (2 minutes, under 30 s). ``--md-latency-us 150`` runs it
all with every venue's ``market_data_latency`` a log-normal of that median (sigma 0.4), and
``--md-depth K`` sets their ``market_data_depth``: what strategies seeing the market late
costs.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit, machine, table, without_gc  # noqa: E402
from ext.book import OrderBook  # noqa: E402
from ext.types import OrdType, Side, TimeInForce  # noqa: E402
from sim.clock import NS_PER_S  # noqa: E402
from sim.config import load_config  # noqa: E402
from sim.latency import LatencySpec  # noqa: E402
from sim.market import Market  # noqa: E402
from sim.strategies import ExecutionStrategy, ParentOrder, PeriodicTakerStrategy  # noqa: E402
from tests.reference.book_reference import ReferenceBook  # noqa: E402

TARGET_EVENTS_PER_S = 2_000_000
DARK_ORDERS = 10_000
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
        self.venues = self.params["venues"]
        self.n_venues = len(self.venues)
        self.on_timer()
        self.wake_every(self.params["interval"])

    def on_timer(self) -> None:
        # Written as a performance-aware strategy would be: one send; a
        # periodic timer re-armed at C level; market orders, so no quote
        # lookup is needed to cross.
        k = self.k
        self.send(self.venues[k % self.n_venues], 1, 0, MARKET, IOC, False)
        self.k = k + 1


#: The strategies (b) times: the same orders, decided in Python or in C.
STRATEGY_KINDS = {"python": Pinger, "compiled": PeriodicTakerStrategy}


def run_market(config, until: int, book_class, interval: int | None, kind: str = "python"):
    """One run; returns (seconds, market).

    ``interval``: strategy order period or None (no strategy); ``kind``: a
    key of ``STRATEGY_KINDS``.
    """
    market = Market(config, book_class=book_class, end_ns=until)
    if interval is not None:
        lit = tuple(v.index for v in market.lit_venues())
        parent = ParentOrder(1, market.symbols[0], BUY, 1 << 60, market.clock_start, until)
        if kind == "python":
            strat = Pinger(market, parent, interval=interval, venues=lit)
        else:
            strat = PeriodicTakerStrategy(market, parent, interval=interval, child_qty=1,
                                          venues=list(lit))
        market.set_timer(market.clock_start + interval, strat.start)
    def timed() -> tuple[float, Market]:
        # CPU time of this process: the machine is shared, and time spent
        # waiting for a core is not the simulator's cost.
        start = time.process_time()
        market.run_until(until)
        return time.process_time() - start, market
    return without_gc(timed)


def events_per_s(config, until: int, book_class, repeat: int) -> tuple[float, int]:
    """(a): best CPU time of the market alone; returns (events per second, events)."""
    best, events = float("inf"), 0
    for _ in range(repeat):
        t, market = run_market(config, until, book_class, None)
        best, events = min(best, t), market.events_processed
    return events / best, events


def order_cost(config, until: int, book_class, pairs: int,
               kinds: tuple[str, ...] = ("python",)) -> dict:
    """(b): extra CPU time per strategy order, from alternating runs without and with it.

    The load on a shared machine comes in bursts: runs made one after the
    other see the same load, so each figure is the median over rounds of
    (with - without) / orders, one run without and one per strategy kind in
    each round (their order rotating); the best-of difference is kept
    beside it. Returns one dict per kind.
    """
    _, market = run_market(config, until, book_class, None)
    interval = max(1, (until - market.clock_start) * EVENTS_PER_ORDER // market.events_processed)
    runs: dict = {k: [] for k in (None, *kinds)}
    stats: dict = {}
    for i in range(pairs):
        order = [None, *kinds]
        order = order[i % len(order):] + order[:i % len(order)]
        times = {}
        for kind in order:
            times[kind], m = run_market(config, until, book_class,
                                        None if kind is None else interval, kind or "python")
            if kind is not None:
                stats[kind] = (m.loop.n_child_orders, m.loop.n_reports, m.events_processed)
        for kind in runs:
            runs[kind].append(times[kind])
    out = {}
    for kind in kinds:
        orders, reports, events = stats[kind]
        diffs = sorted((w - b) / orders * 1e6 for w, b in zip(runs[kind], runs[None]))
        best = (min(runs[kind]) - min(runs[None])) / orders * 1e6
        # A difference of two bests below zero says the noise outweighed the
        # cost in those runs, not that orders are free: no figure then.
        out[kind] = {"us_per_order": diffs[len(diffs) // 2],
                     "us_per_order_best": best if best > 0 else None,
                     "orders": orders, "reports_per_order": reports / orders,
                     "events": events}
    return out


def dark_resting_cost(config, n: int, secs: int, repeat: int) -> dict:
    """(d): best CPU ms per simulated second, with ``n`` resting dark orders and with none."""
    def one(k: int) -> tuple[float, Market]:
        market = Market(config)
        market.run_until(market.session_start)
        pool = market.dark_venues()[0].index
        sym = market.symbols[0]
        inst = market.instrument(sym)
        mid = market.mid_x2(sym) // 2 or inst.price_to_ticks("50.00")
        for i in range(k):          # limit above the mid: in the book; below: parked
            market.submit(pool, sym, BUY, 1, mid + 1000 if i % 2 else mid - 1000,
                          tif=int(TimeInForce.DAY), account=7)
        market.run_until(market.now + NS_PER_S // 100)

        def timed() -> tuple[float, Market]:
            t0 = time.process_time()
            market.run_until(market.now + secs * NS_PER_S)
            return (time.process_time() - t0) / secs * 1e3, market
        return without_gc(timed)
    best = {0: float("inf"), n: float("inf")}
    for _ in range(repeat):
        for k in best:
            best[k] = min(best[k], one(k)[0])
    return {"ms_per_sim_s": best[n], "ms_per_sim_s_baseline": best[0],
            "ratio": best[n] / best[0], "orders": n, "simulated_s": secs}


def cost_met(us_per_order: float, target_us: float = TARGET_US_PER_ORDER) -> bool | None:
    """Whether a per-order cost meets its target; None when it is not above zero.

    The cost is a median of differences between runs with and without the
    strategy: at or below zero, the machine's noise outweighed the orders'
    cost in those runs, which proves nothing either way (as bench_e2e's
    verdict on a negative added latency).
    """
    if not us_per_order > 0:
        return None
    return us_per_order < target_us


def cost_ratio(reference_us: float, us: float) -> float | None:
    """The reference's per-order cost over ours; None unless both are above zero (a
    median difference at or below zero is noise: a ratio of it would be a negative or
    huge speed-up, drawn on the harness's chart as one)."""
    if not (reference_us > 0 and us > 0):
        return None
    return reference_us / us


def _verdict(met: bool | None) -> str:
    return "no verdict (below zero: noise)" if met is None else "met" if met else "NOT met"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _shown(value: float | None):
    return "below zero: noise" if value is None else value


def with_market_data_latency(config, median_us: float, depth: int | None):
    """``config`` with every venue's ``market_data_latency`` a log-normal of ``median_us``."""
    spec = LatencySpec("lognormal", median_us=median_us, sigma=0.4, min_us=median_us / 4)
    extra = {} if depth is None else {"market_data_depth": depth}
    return dataclasses.replace(config, venues=tuple(
        dataclasses.replace(v, market_data_latency=spec, **extra) for v in config.venues))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter spans, fewer repeats (< 30 s)")
    ap.add_argument("--md-latency-us", type=float, default=0.0,
                    help="every venue's market-data latency, log-normal median (0: none)")
    ap.add_argument("--md-depth", type=int, default=None,
                    help="every venue's market_data_depth (with --md-latency-us)")
    args = ap.parse_args()
    config = load_config()
    if args.md_latency_us > 0:
        config = with_market_data_latency(config, args.md_latency_us, args.md_depth)
    start = config.session.clock_start_ns
    # (a) and (c) on the same span, so their ratio compares like with like.
    span = (120 if args.quick else 30 * 60 + 30) * NS_PER_S
    pair_span = 120 * NS_PER_S
    ref_pair_span = 20 * NS_PER_S
    tape_span = 30 * NS_PER_S

    # Best of the same number of runs for both books: more for one side would only ever
    # lower its best (the reference's full-span run takes about a minute).
    eps, events = events_per_s(config, start + span, OrderBook, 3)
    eps_ref, ref_events = events_per_s(config, start + span, ReferenceBook, 3)
    costs = order_cost(config, start + pair_span, OrderBook, 15 if args.quick else 31,
                       ("python", "compiled"))
    cost, cost_c = costs["python"], costs["compiled"]
    # The 20 s runs carry a small signal (~500 orders): many cheap rounds for
    # the Cython book, as many as time allows for the reference.
    cost_cy_short = order_cost(config, start + ref_pair_span, OrderBook,
                               21 if args.quick else 41)["python"]
    cost_ref = order_cost(config, start + ref_pair_span, ReferenceBook,
                          3 if args.quick else 5)["python"]
    # Same flow, same rules: the two books must have produced the same tape.
    tape_cy = Market(config, book_class=OrderBook, record_tape=True, end_ns=start + tape_span)
    tape_ref = Market(config, book_class=ReferenceBook, record_tape=True, end_ns=start + tape_span)
    tape_cy.run_until(start + tape_span)
    tape_ref.run_until(start + tape_span)
    same = all(a.tobytes() == b.tobytes() for a, b in zip(tape_cy.tape(), tape_ref.tape()))
    if not same:
        print("ERROR: the Cython and reference books produced different trades", file=sys.stderr)
        return 1

    dark = dark_resting_cost(config, DARK_ORDERS, 5 if args.quick else 20, 2 if args.quick else 3)

    ratio = eps / eps_ref
    order_ratio = cost_ratio(cost_ref["us_per_order"], cost_cy_short["us_per_order"])
    table(f"Simulator: default market (3 lit venues + 1 dark pool, 2 instruments), "
          f"CPU time; one strategy order every {EVENTS_PER_ORDER} events",
          ["figure", "Cython book", "reference book", "ratio", "target"],
          [[f"(a, c) events per second, {span / NS_PER_S / 60:g} simulated min", eps, eps_ref,
            ratio, f">= {TARGET_EVENTS_PER_S:,}"],
           [f"(b) us per strategy order, compiled strategy, {pair_span // NS_PER_S} s runs, "
            "median pair [target judged on this]",
            cost_c["us_per_order"], "", "", f"< {TARGET_US_PER_ORDER}"],
           ["(b) same, compiled, best run with - best run without",
            _shown(cost_c["us_per_order_best"]), "", "", ""],
           [f"(b) us per strategy order, Python strategy, {pair_span // NS_PER_S} s runs, "
            "median pair", cost["us_per_order"], "", "", f"(< {TARGET_US_PER_ORDER})"],
           ["(b) same, Python, best run with - best run without",
            _shown(cost["us_per_order_best"]), "", "", ""],
           [f"(c) us per strategy order, Python strategy, {ref_pair_span // NS_PER_S} s runs",
            cost_cy_short["us_per_order"], cost_ref["us_per_order"], _shown(order_ratio), ""],
           ["events (a)", events, ref_events, "", ""],
           ["strategy orders per run (b)", cost["orders"], "", "", ""],
           ["reports per order", cost["reports_per_order"], cost_ref["reports_per_order"], "",
            ""]])
    table(f"(d) dark pool: {dark['orders']:,} resting midpoint orders (half in the book, half "
          f"parked), best CPU ms per simulated second over {dark['simulated_s']} s",
          ["figure", "with the orders", "without (baseline)", "ratio"],
          [["ms per simulated second", dark["ms_per_sim_s"], dark["ms_per_sim_s_baseline"],
            dark["ratio"]]])
    print(f"trade tapes of the two books identical over {tape_span // NS_PER_S} s: {same}")
    met_c, met_py = cost_met(cost_c["us_per_order"]), cost_met(cost["us_per_order"])
    print(f"per-order target (< {TARGET_US_PER_ORDER} us) judged on the compiled strategy: "
          f"{cost_c['us_per_order']:.2f} us, {_verdict(met_c)}; the same strategy in Python: "
          f"{cost['us_per_order']:.2f} us, {_verdict(met_py)}")
    emit({
        "benchmark": "sim",
        "events_per_s": round(eps),
        "us_per_strategy_order": round(cost["us_per_order"], 3),
        "us_per_strategy_order_best": _rounded(cost["us_per_order_best"]),
        "us_per_strategy_order_compiled": round(cost_c["us_per_order"], 3),
        "us_per_strategy_order_compiled_best": _rounded(cost_c["us_per_order_best"]),
        "us_per_strategy_order_judged_on": "compiled",
        "ratio_vs_reference": round(ratio, 2),
        "order_cost_ratio_vs_reference": _rounded(order_ratio),
        "reference_events_per_s": round(eps_ref),
        "reference_us_per_strategy_order": round(cost_ref["us_per_order"], 3),
        "dark_resting_orders": dark["orders"],
        "dark_resting_ms_per_sim_s": round(dark["ms_per_sim_s"], 3),
        "dark_resting_baseline_ms_per_sim_s": round(dark["ms_per_sim_s_baseline"], 3),
        "dark_resting_ratio": round(dark["ratio"], 2),
        "events": events, "simulated_s": span // NS_PER_S,
        "strategy_orders_per_run": cost["orders"], "events_per_order": EVENTS_PER_ORDER,
        "targets": {"events_per_s": TARGET_EVENTS_PER_S,
                    "us_per_strategy_order": TARGET_US_PER_ORDER},
        "met": {"events_per_s": eps >= TARGET_EVENTS_PER_S,
                "us_per_strategy_order": met_c, "us_per_strategy_order_python": met_py},
        "md_latency_us": args.md_latency_us,
        "md_depth": args.md_depth if args.md_latency_us > 0 else None,
        "quick": args.quick, **machine(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
