"""Smart order router: routing decisions per second, Cython against the pure-Python reference.

A routing decision here is a marketable parent order (a market buy) swept
across 3 to 8 lit venues, each showing 10 ask levels, with fees and latencies
that make price ties, fee ties and latency ties all occur. Each decision
needs about three levels per venue, so every venue gets a child order. The
same parents, books and fees go through three call paths in the same run:

* ``py``: what the engine calls per order, ``Router.route(...)`` followed by
  ``Router.drain_into(buf)`` into a reused ``ACTION_DTYPE`` buffer;
* ``c``: the C cost, ``Router.route_batch(orders)`` routing a whole numpy
  array of parents in one call (then one ``drain_into``);
* ``ref``: ``ReferenceRouter.route(...)`` + ``drain_into`` from
  ``tests/reference/router_reference.py``, the baseline; its ``route()``
  alone is timed too, and the most conservative ratio (our whole path
  against its decision without the drain) is printed beside the others.

(``drain_actions()`` allocates a numpy array per call; its cost is reported
on its own line.) A second table times the router's clock: ``tick(now)`` +
``next_wakeup(now)`` with N orders resting (acknowledged, half at their
limit, half joining the bid) while the quotes move without reaching any of
them, for the router and the reference at the same N, and for the router
alone at larger N: a tick costs what is awake, not what rests. A third times
a sweep under ``CANCEL_OLDEST`` (which looks for the account's own resting
orders in the depth it takes) with N of the account's orders resting below
the displayed depth, the same way. Between timed runs, and untimed, every child is reported
filled and the books republished, so each run starts from the same state; the
benchmark checks that both routers emit identical actions before reporting.

Run: ``python benchmarks/bench_router.py`` or ``--quick`` (under 20 s).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_of, emit, machine, table  # noqa: E402
from ext.router import (  # noqa: E402
    ACT_NEW, ACTION_DTYPE, PARENT_DTYPE, STRAT_AUTO, STRAT_PASSIVE, STRAT_SWEEP, Router,
)
from ext.types import Side, StpMode, TimeInForce  # noqa: E402
from tests.reference.router_reference import ReferenceRouter  # noqa: E402

TARGET_NS = 2000            # per decision, 4 venues, Python-facing path
LEVELS = 10
BUY = int(Side.BUY)
DAY = int(TimeInForce.DAY)


def market(n_venues: int):
    """Books (bids, asks) and fee/latency settings for ``n_venues`` venues."""
    books, settings = [], []
    for v in range(n_venues):
        first = 10_000 + v % 3                       # three venues share each best price
        asks = np.array([(first + k, 100 + 25 * ((v + k) % 4)) for k in range(LEVELS)], np.int64)
        bids = np.array([(9_999 - v % 2 - k, 100) for k in range(LEVELS)], np.int64)
        books.append((bids, asks))
        settings.append(dict(taker_fee=(1000, 2000, 1000, 3000)[v % 4],   # fee ties, too
                             taker_cbps=(0, 0, 1)[v % 3], latency_ns=(50_000, 120_000)[v % 2]))
    return books, settings


class Setup:
    """One router with ``n_instruments`` copies of the same market, and the cycle around it."""

    def __init__(self, cls, n_venues: int, n_instruments: int):
        self.books, settings = market(n_venues)
        self.router = cls(n_venues, n_instruments=n_instruments, max_levels=LEVELS)
        for v, kw in enumerate(settings):
            self.router.set_venue(v, **kw)
        self.n_venues, self.n_instruments = n_venues, n_instruments
        # About three levels' worth per venue: every venue gets a child.
        self.qty = int(sum(int(a[:3, 1].sum()) for _, a in self.books))
        self.next_pid = 1
        self.buf = np.zeros(8 * n_venues * n_instruments + 64, dtype=ACTION_DTYPE)
        self.publish()

    def publish(self):
        for i in range(self.n_instruments):
            for v, (bids, asks) in enumerate(self.books):
                self.router.update_book(i, v, bids, asks)

    def settle(self, actions):
        """Untimed: fill every child, forget finished parents, republish the books."""
        r = self.router
        news = actions[actions["kind"] == ACT_NEW]
        for cid, qty, px in zip(news["child_id"].tolist(), news["qty"].tolist(),
                                news["price"].tolist()):
            r.on_fill(cid, qty, 2 * px, 1)
        r.drain_actions()
        done = r.drain_finished()
        assert len(done) == self.n_instruments and (done["cum_qty"] == self.qty).all()
        self.publish()

    def run_py(self):
        """One decision per instrument through route() + drain_into(); returns the actions."""
        route, drain_into, buf, qty = self.router.route, self.router.drain_into, self.buf, self.qty
        pid, n = self.next_pid, 0
        for i in range(self.n_instruments):
            route(pid + i, i, BUY, qty, 0, 0)
            n += drain_into(buf, n)
        self.next_pid += self.n_instruments
        return buf[:n].copy()

    def run_route_only(self):
        """The decisions alone (actions left queued): the reference's cost without its drain."""
        route, qty, pid = self.router.route, self.qty, self.next_pid
        for i in range(self.n_instruments):
            route(pid + i, i, BUY, qty, 0, 0)
        self.next_pid += self.n_instruments
        return self.router.drain_actions

    def run_c(self, orders):
        codes = self.router.route_batch(orders, 0)
        n = self.router.drain_into(self.buf)
        return codes, self.buf[:n].copy()

    def orders(self):
        o = np.zeros(self.n_instruments, dtype=PARENT_DTYPE)
        o["parent_id"] = np.arange(self.next_pid, self.next_pid + self.n_instruments)
        o["instrument"] = np.arange(self.n_instruments)
        o["qty"], o["side"], o["tif"] = self.qty, BUY, DAY
        self.next_pid += self.n_instruments
        return o


def measure(n_venues: int, n_instruments: int, runs: int) -> dict:
    """Each figure the best of ``runs`` (the same number for the router and its reference:
    more runs for one side would only ever lower its best)."""
    cy = Setup(Router, n_venues, n_instruments)
    ref = Setup(ReferenceRouter, n_venues, n_instruments)
    # Same input, same output: the first run of both must agree exactly.
    a_cy, a_ref = cy.run_py(), ref.run_py()
    if a_cy.tolist() != a_ref.tolist():
        raise SystemExit(f"MISMATCH at {n_venues} venues: Cython and reference actions differ")
    children = int((a_cy["kind"] == ACT_NEW).sum()) / n_instruments
    cy.settle(a_cy)
    ref.settle(a_ref)

    def best(setup, fn, n):
        best_s = float("inf")
        for _ in range(n):
            elapsed, out = best_of(fn, 1)
            setup.settle(out() if callable(out) else out)
            best_s = min(best_s, elapsed)
        return best_s / n_instruments * 1e9

    py_ns = best(cy, cy.run_py, runs)
    ref_ns = best(ref, ref.run_py, runs)
    ref_route_ns = best(ref, ref.run_route_only, runs)

    def c_run():
        orders = cy.orders()
        start = time.perf_counter()
        out = cy.run_c(orders)
        return time.perf_counter() - start, out

    c_best = float("inf")
    for _ in range(runs):
        elapsed, (codes, out) = c_run()
        assert not codes.any()
        cy.settle(out)
        c_best = min(c_best, elapsed)
    c_ns = c_best / n_instruments * 1e9
    return {"venues": n_venues, "children_per_decision": children, "py_ns": py_ns,
            "c_ns": c_ns, "ref_ns": ref_ns, "ref_route_ns": ref_route_ns}


def drain_actions_ns(reps: int) -> float:
    """Cost of one numpy-allocating drain_actions() holding one decision's actions."""
    s = Setup(Router, 4, 1)
    best_s = float("inf")
    for _ in range(reps):
        s.router.route(s.next_pid, 0, BUY, s.qty, 0, 0)
        s.next_pid += 1
        start = time.perf_counter()
        out = s.router.drain_actions()
        best_s = min(best_s, time.perf_counter() - start)
        s.settle(out)
    return best_s * 1e9


def resting(cls, n: int):
    """A router holding ``n`` acknowledged resting parents: buys and sells, half at
    their limit, half joining the best bid or offer (a spread of 11 ticks)."""
    r = cls(2, config={"reprice_interval_ns": 1_000_000})
    r.update_book(0, 0, bids=[(9_999, 10)], asks=[(10_010, 10)])
    for pid in range(1, n + 1):
        buy = pid % 2
        r.route(pid, 0, BUY if buy else int(Side.SELL), 10, 9_995 if buy else 10_015, 0,
                strategy=STRAT_AUTO if pid % 4 < 2 else STRAT_PASSIVE)
    for a in r.drain_actions():
        r.on_ack(int(a["child_id"]), 1)
    r.drain_actions()
    return r


def tick_ns(cls, n: int, runs: int) -> float:
    """Best ``tick`` + ``next_wakeup`` with ``n`` resting, the quotes moving each time
    (a venue's bid and offer step back and forth a tick, short of every order's
    reprice bound); checks that no tick had work."""
    r = resting(cls, n)
    now = 10_000_000
    r.tick(now)
    best = float("inf")
    for k in range(runs):
        now += 1_000_000
        r.update_book(0, 1, bids=[(9_998 - k % 2, 5)], asks=[(10_011 + k % 2, 5)])
        start = time.perf_counter()
        r.tick(now)
        r.next_wakeup(now)
        best = min(best, time.perf_counter() - start)
    if r.pending_actions:
        raise SystemExit(f"tick with {n} resting queued actions: the market reached an order")
    return best * 1e9


def own_sweep_ns(cls, n: int, runs: int) -> float:
    """Best market sell swept under CANCEL_OLDEST over 4 venues of 10 levels while the
    same account rests ``n`` bids below the displayed depth (none of them in its way)."""
    oldest = int(StpMode.CANCEL_OLDEST)
    r = cls(4)
    for v in range(4):
        r.update_book(0, v, bids=[(9_990 - k, 100) for k in range(LEVELS)],
                      asks=[(10_000 + k, 100) for k in range(LEVELS)])
    for pid in range(1, n + 1):
        r.route(pid, 0, BUY, 10, 9_900 - pid % 50, 0, strategy=STRAT_AUTO, stp_account=1,
                stp=oldest)
    for a in r.drain_actions():
        r.on_ack(int(a["child_id"]), 1)
    r.drain_actions()
    best = float("inf")
    for k in range(runs):
        start = time.perf_counter()
        r.route(10**9 + k, 0, int(Side.SELL), 50, 0, 5, strategy=STRAT_SWEEP, stp_account=1,
                stp=oldest)
        best = min(best, time.perf_counter() - start)
        for a in r.drain_actions():
            r.on_canceled(int(a["child_id"]), 6)
        r.drain_finished()
    return best * 1e9


def resting_table(title: str, what: str, ns: dict, n: int) -> None:
    """Print ns per ``what`` with ``n`` orders resting (router and reference), 10n and none."""
    table(title, ["resting orders", f"router ns/{what}", f"reference ns/{what}",
                  "router vs reference"],
          [[f"{n:,}", ns["router"], ns["reference"], f"{ns['reference'] / ns['router']:.0f}x"],
           [f"{10 * n:,}", ns["router_10x"], "-", "-"],
           ["0", ns["router_0"], "-", "-"]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (under 20 s)")
    parser.add_argument("--instruments", type=int, default=256,
                        help="decisions per timed run (one per instrument)")
    args = parser.parse_args(argv)
    runs = 8 if args.quick else 40
    started = time.perf_counter()
    results = [measure(n, args.instruments, runs) for n in range(3, 9)]
    drain_ns = drain_actions_ns(200 if args.quick else 2000)
    clock_n = 2_000 if args.quick else 10_000
    clock_runs = 5 if args.quick else 20
    clock = {"router": tick_ns(Router, clock_n, clock_runs),
             "reference": tick_ns(ReferenceRouter, clock_n, clock_runs),
             "router_0": tick_ns(Router, 0, clock_runs),
             "router_10x": tick_ns(Router, 10 * clock_n, clock_runs)}
    own = {"router": own_sweep_ns(Router, clock_n, clock_runs),
           "reference": own_sweep_ns(ReferenceRouter, clock_n, clock_runs),
           "router_0": own_sweep_ns(Router, 0, clock_runs),
           "router_10x": own_sweep_ns(Router, 10 * clock_n, clock_runs)}

    rows = [[f"{r['venues']} venues", r["py_ns"], r["c_ns"], r["ref_ns"],
             f"{r['ref_ns'] / r['py_ns']:.1f}x", f"{r['ref_ns'] / r['c_ns']:.1f}x",
             f"{r['children_per_decision']:.1f}"] for r in results]
    table(f"Router: one marketable parent swept over {LEVELS}-level books, "
          f"{args.instruments} decisions per run, best of {runs} each",
          ["venues", "py ns/decision", "C ns/decision", "reference ns/decision",
           "py vs reference", "C vs reference", "children/decision"], rows)
    four = next(r for r in results if r["venues"] == 4)
    print(f"call path measured: Router.route(parent_id, instrument, side, qty, limit_px, now) "
          f"+ Router.drain_into(buffer) per decision; C level: Router.route_batch(orders)")
    print(f"reference route() alone, without its drain: {four['ref_route_ns']:,.0f} ns; "
          f"our route()+drain_into() is {four['ref_route_ns'] / four['py_ns']:.1f}x faster")
    print(f"drain_actions() (allocates a numpy array) costs {drain_ns:,.0f} ns on its own")
    print(f"target: 4 venues under {TARGET_NS:,} ns per decision (py path): "
          f"{four['py_ns']:,.0f} ns, {'met' if four['py_ns'] < TARGET_NS else 'NOT met'}; "
          f"C level {four['c_ns']:,.0f} ns; run took {time.perf_counter() - started:.1f} s")
    resting_table(f"Router clock: tick + next_wakeup, orders resting while the quotes move, "
                  f"best of {clock_runs}", "tick", clock, clock_n)
    resting_table(f"Router: a sweep under CANCEL_OLDEST with the account's orders resting "
                  f"below the depth, best of {clock_runs}", "sweep", own, clock_n)
    emit({
        "benchmark": "router", "quick": args.quick, "levels": LEVELS,
        "decisions_per_run": args.instruments, "runs": runs, "reference_runs": runs,
        "ns_per_decision": round(four["py_ns"], 1),
        "decisions_per_s": round(1e9 / four["py_ns"]),
        "c_ns_per_decision": round(four["c_ns"], 1),
        "ref_ns_per_decision": round(four["ref_ns"], 1),
        "ref_route_only_ns_per_decision": round(four["ref_route_ns"], 1),
        "ratio_vs_reference_route_only": round(four["ref_route_ns"] / four["py_ns"], 2),
        "ratio_vs_reference": round(four["ref_ns"] / four["py_ns"], 2),
        "c_ratio_vs_reference": round(four["ref_ns"] / four["c_ns"], 2),
        "target_ns": TARGET_NS, "target_met": four["py_ns"] < TARGET_NS,
        "drain_actions_ns": round(drain_ns, 1),
        "clock_resting_orders": clock_n,
        "tick_ns": round(clock["router"], 1),
        "tick_ref_ns": round(clock["reference"], 1),
        "tick_ratio_vs_reference": round(clock["reference"] / clock["router"], 1),
        "tick_ns_10x_resting": round(clock["router_10x"], 1),
        "tick_ns_none_resting": round(clock["router_0"], 1),
        "own_sweep_ns": round(own["router"], 1),
        "own_sweep_ref_ns": round(own["reference"], 1),
        "own_sweep_ratio_vs_reference": round(own["reference"] / own["router"], 1),
        "own_sweep_ns_10x_resting": round(own["router_10x"], 1),
        "own_sweep_ns_none_resting": round(own["router_0"], 1),
        "per_venue_count": {str(r["venues"]): {
            "ns_per_decision": round(r["py_ns"], 1), "c_ns_per_decision": round(r["c_ns"], 1),
            "ref_ns_per_decision": round(r["ref_ns"], 1),
            "ratio_vs_reference": round(r["ref_ns"] / r["py_ns"], 2),
            "children_per_decision": r["children_per_decision"]} for r in results},
        "machine": machine(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
