"""Benchmark of the pre-trade risk engine against its pure-Python reference.

    .venv/bin/python benchmarks/bench_risk.py [--quick] [--orders N] [--seed S]

Both implementations get the same config and the same calls in the same run:

* ``engine_path``: a stream of new orders only (about eight in ten pass; the
  rest trip fat-finger, collar, position, buying-power, duplicate-id and
  duplicative checks), each through the call the engine makes per order:
  ``SessionGate.check_new`` of the order's session (``risk.session_gate``,
  made once per session), ten Python ints per call, already converted from
  the client's decimals. The reference gets the same calls on its own gates.
* ``check_new``: the same stream through ``RiskEngine.check_new`` (eleven
  ints, the session index passed each time), as replay and tests call it.
* ``lifecycle``: new orders interleaved with the fills and cancels that follow
  them (full fills, partial fill then cancel, cancel), per order.
* ``batch_c``: the check_new stream through ``check_new_batch`` (the whole
  loop in C; no reference twin, compared to the reference's check_new).
* ``cancel_on_disconnect``: with the check stream's passed orders working,
  the mass cancel of a session that holds one order (the keys only: nothing
  is canceled, so every call finds the same). Its cost is the orders in
  scope; the reference filters every working order.

Each figure is the best of a few repeats on a fresh engine. The last line of
output is one JSON object with every figure.
"""
from __future__ import annotations

import os

# numpy's BLAS threads spin on a 2-core machine and steal the timed core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, without_gc  # noqa: E402
from ext.risk import RiskEngine  # noqa: E402
from ext.types import OrdType, Side  # noqa: E402
from tests.reference.risk_reference import RiskReference  # noqa: E402

N_ACCOUNTS = 32
N_INSTRUMENTS = 64
SEED_POSITION = 50_000            # lots each account holds in each instrument at the start
STEP_NS = 20_000                  # 50k orders a second
#: Issue 3's targets: the full check set under 300 ns per order through the
#: engine's call path, and at least 30 times the pure-Python version.
TARGET_NS_ENGINE_PATH = 300.0
TARGET_RATIO = 30.0


def target_met(ns_per_order_engine_path: float, ratio_vs_reference: float) -> bool:
    """Whether both targets are met: under :data:`TARGET_NS_ENGINE_PATH` through the
    engine's call path, and at least :data:`TARGET_RATIO` times the reference on it."""
    return ns_per_order_engine_path < TARGET_NS_ENGINE_PATH and \
        ratio_vs_reference >= TARGET_RATIO


def make_config() -> dict:
    instruments = {}
    for i in range(N_INSTRUMENTS):
        grid = ({"tick_size": "0.01", "lot_size": "1"} if i % 4 else
                {"tick_size": "0.5", "lot_size": "0.001", "min_qty": "0.001"})
        instruments[f"I{i:03d}"] = dict(grid, max_order_qty=5000, max_net_position=2_000_000)
    accounts = {}
    for a in range(N_ACCOUNTS):
        accounts[f"A{a:02d}"] = {
            "cash": "5000000000", "credit_limit": "1000000", "allow_short": a % 4 == 0,
            "max_order_qty": 2000, "max_order_notional": "2000000", "max_open_orders": 100_000,
            "max_gross_position": 10_000_000, "max_daily_loss": "100000000",
        }
    return {
        "firm": {"collar_bps": 100, "max_reference_age_ms": 60_000, "duplicative_window_ms": 50,
                 "throttle_rate": 100_000, "throttle_burst": 2000, "max_open_orders": 10_000_000,
                 "restricted": ["I063"]},
        "instruments": instruments,
        "accounts": accounts,
    }


def seed_config(config: dict) -> dict:
    """The config without per-order limits, to load the starting positions."""
    out = json.loads(json.dumps(config))
    for section in list(out["accounts"].values()) + list(out["instruments"].values()):
        for key in ("max_order_qty", "max_order_notional"):
            section.pop(key, None)
    return out


def prepare(engine, config):
    """Sessions, reference prices and starting positions, then the real limits
    by a run-time reload (untimed)."""
    for a in range(N_ACCOUNTS):
        engine.session_index(f"S{a:02d}")
    for i in range(N_INSTRUMENTS):
        engine.set_reference_price(i, 10_000 + 37 * i, 0)
    key = -1
    for a in range(N_ACCOUNTS):
        for i in range(N_INSTRUMENTS - 1):
            assert engine.check_new(key, a, a, i, Side.BUY, OrdType.LIMIT, SEED_POSITION, 10_000 + 37 * i,
                                    0, key, 0) == 0, engine.last_reject()
            assert engine.on_fill(key, SEED_POSITION, 10_000 + 37 * i) == 0
            key -= 1
    engine.reset_daily(0)
    engine.reload(config)


def random_order(rng: random.Random, key: int, now: int):
    a = rng.randrange(N_ACCOUNTS)
    i = rng.randrange(N_INSTRUMENTS)
    ref = 10_000 + 37 * i
    roll = rng.random()
    side = Side.BUY if roll < 0.55 else Side.SELL if roll < 0.92 else Side.SELL_SHORT
    ord_type = OrdType.MARKET if rng.random() < 0.05 else OrdType.LIMIT
    qty = rng.randint(1, 300) if rng.random() > 0.01 else 9000           # 1%: fat finger
    if rng.random() < 0.004:
        qty = SEED_POSITION * 3                                           # oversell
    price = ref + rng.randint(-ref // 90, ref // 90) if ord_type == OrdType.LIMIT else 0
    flags = 1 if rng.random() < 0.9 else 0                                # locate
    cl = key if rng.random() > 0.005 else key - 1                         # duplicate cl_ord_id
    return (key, a, a, i, int(side), int(ord_type), qty, price, flags, cl, now)


def check_stream(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    orders = []
    for k in range(1, n + 1):
        orders.append(random_order(rng, k, k * STEP_NS))
        if rng.random() < 0.003 and orders:                               # duplicative repeat
            prev = orders[-1]
            orders.append((k + n,) + prev[1:9] + (k + n, prev[10] + 1))
    return orders


def lifecycle_stream(n: int, seed: int, config: dict) -> list[tuple]:
    """New orders and the fills/cancels that follow the passed ones.

    Generated by running the reference (untimed) so that events only name
    orders that were accepted, as the engine's would.
    """
    rng = random.Random(seed + 1)
    model = fresh(RiskReference, config)
    ops, pending = [], {}        # op index due -> list of events
    for k in range(1, n + 1):
        order = random_order(rng, k, k * STEP_NS)
        ops.append((0, order))
        if model.check_new(*order) == 0:
            qty, price = order[6], order[7] or 10_000 + 37 * order[3]
            fate = rng.random()
            due = k + rng.randint(1, 40)
            if fate < 0.45:
                events = [(1, (k, qty, price))]
            elif fate < 0.7 and qty > 1:
                events = [(1, (k, qty // 2, price)), (2, (k,))]
            else:
                events = [(2, (k,))]
            pending.setdefault(due, []).extend(events)
        for op in pending.pop(k, []):
            ops.append(op)
            (model.on_fill if op[0] == 1 else model.on_cancel)(*op[1])
    return ops


def run_checks(engine, orders) -> int:
    check = engine.check_new
    t0 = time.perf_counter_ns()
    for args in orders:
        check(*args)
    return time.perf_counter_ns() - t0


def gate_calls(engine, orders) -> list[tuple]:
    """(bound ``check_new`` of the order's session gate, its ten arguments) per
    order, as the engine holds one gate per connected session (untimed)."""
    checks = [engine.session_gate(f"S{a:02d}").check_new for a in range(N_ACCOUNTS)]
    return [(checks[o[1]], (o[0],) + o[2:]) for o in orders]


def run_gates(engine, orders) -> int:
    calls = gate_calls(engine, orders)
    t0 = time.perf_counter_ns()
    for check, args in calls:
        check(*args)
    return time.perf_counter_ns() - t0


def run_lifecycle(engine, ops) -> int:
    check, fill, cancel = engine.check_new, engine.on_fill, engine.on_cancel
    t0 = time.perf_counter_ns()
    for kind, args in ops:
        if kind == 0:
            check(*args)
        elif kind == 1:
            fill(*args)
        else:
            cancel(*args)
    return time.perf_counter_ns() - t0


def floor_call(orders) -> int:
    """The same loop calling an empty Python function with the same 11 arguments:
    what the interpreter alone costs per order on this machine, for scale."""
    def noop(order_key, session, account, instrument, side, ord_type, qty, price, flags, cl, now):
        return 0
    t0 = time.perf_counter_ns()
    for args in orders:
        noop(*args)
    return time.perf_counter_ns() - t0


def run_disconnects(engine, calls: int) -> int:
    cancel = engine.cancel_on_disconnect
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        cancel("QUIET", 0)
    return time.perf_counter_ns() - t0


def quiet_session(engine, orders) -> list[int]:
    """After the check stream, one more order from a session of its own ("QUIET");
    that session's mass-cancel keys (untimed)."""
    key, now = 10**9, orders[-1][10] + 10**9       # past the duplicative window
    assert engine.check_new(key, engine.session_index("QUIET"), 0, 0, int(Side.BUY),
                            int(OrdType.LIMIT), 1, 10_000, 0, key, now) == 0, engine.last_reject()
    return engine.cancel_on_disconnect("QUIET", 0)


def best(fn, repeats: int) -> int:
    return min(without_gc(fn) for _ in range(repeats))


def best_pair(core_fn, ref_fn, repeats: int) -> tuple[int, int]:
    """Best time of each over the same number of runs, interleaved so that both meet the
    same neighbours on a shared machine (the ratio is what matters; more runs for one
    side would only ever lower its best)."""
    core, ref = [], []
    for _ in range(repeats):
        # (each run times itself; the reference allocates per order, the core hardly)
        core.append(without_gc(core_fn))
        ref.append(without_gc(ref_fn))
    return min(core), min(ref)


def fresh(cls, config, capacity_hint=0):
    """A prepared engine; the core's tables are sized for the day's orders
    (``capacity_hint``), as the engine sizes them from its configuration."""
    engine = cls(seed_config(config), capacity_hint) if cls is RiskEngine else cls(seed_config(config))
    prepare(engine, config)
    return engine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced run (well under 20 s)")
    parser.add_argument("--orders", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)        # config loads log at INFO; keep the output to figures
    n = args.orders or (40_000 if args.quick else 200_000)
    # The machine is shared: the best of several runs is the least disturbed one.
    repeats = 5 if args.quick else 7
    config = make_config()

    orders = check_stream(n, args.seed)
    ops = lifecycle_stream(n, args.seed, config)
    n_life_orders = sum(1 for kind, _ in ops if kind == 0)

    # Same answers first: a benchmark of two different computations is meaningless.
    core, ref = fresh(RiskEngine, config), fresh(RiskReference, config)
    results = [core.check_new(*o) for o in orders]
    assert results == [ref.check_new(*o) for o in orders], "core and reference disagree"
    pass_fraction = results.count(0) / len(results)
    gated = fresh(RiskEngine, config)
    assert [check(*args) for check, args in gate_calls(gated, orders)] == results, \
        "session gates and check_new disagree"

    hint = len(orders) + N_ACCOUNTS * N_INSTRUMENTS
    t_gate, t_gate_ref = best_pair(lambda: run_gates(fresh(RiskEngine, config, hint), orders),
                                   lambda: run_gates(fresh(RiskReference, config), orders),
                                   repeats)
    t_core, t_ref = best_pair(lambda: run_checks(fresh(RiskEngine, config, hint), orders),
                              lambda: run_checks(fresh(RiskReference, config), orders),
                              repeats)
    t_floor = best(lambda: floor_call(orders), repeats)
    t_life, t_life_ref = best_pair(lambda: run_lifecycle(fresh(RiskEngine, config, hint), ops),
                                   lambda: run_lifecycle(fresh(RiskReference, config), ops),
                                   repeats)

    array = np.array(orders, dtype=np.int64)
    out = np.zeros(len(orders), dtype=np.uint16)

    def run_batch():
        engine = fresh(RiskEngine, config, hint)
        t0 = time.perf_counter_ns()
        engine.check_new_batch(array, out)
        return time.perf_counter_ns() - t0
    t_batch = best(run_batch, repeats)
    assert out.tolist() == results, "batch and single calls disagree"

    # Mass cancel beside the day's working orders: the check stream's passes stay working.
    held_core, held_ref = fresh(RiskEngine, config, hint), fresh(RiskReference, config)
    run_checks(held_core, orders)
    run_checks(held_ref, orders)
    assert quiet_session(held_core, orders) == quiet_session(held_ref, orders) == [10**9]
    n_working = held_core.n_working
    calls = 20
    logging.disable(logging.WARNING)     # each call is audited at WARNING: keep the output to figures
    t_cod, t_cod_ref = best_pair(lambda: run_disconnects(held_core, calls),
                                 lambda: run_disconnects(held_ref, calls), repeats)
    logging.disable(logging.INFO)

    m = len(orders)
    figures = {
        "orders": m,
        "pass_fraction": round(pass_fraction, 4),
        "ns_per_order_engine_path": round(t_gate / m, 1),
        "ns_per_order_engine_path_reference": round(t_gate_ref / m, 1),
        "ratio_engine_path_vs_reference": round(t_gate_ref / t_gate, 1),
        "ns_per_check_new": round(t_core / m, 1),
        "ns_per_check_new_reference": round(t_ref / m, 1),
        "ratio_check_new_vs_reference": round(t_ref / t_core, 1),
        "ns_per_order_lifecycle": round(t_life / n_life_orders, 1),
        "ns_per_order_lifecycle_reference": round(t_life_ref / n_life_orders, 1),
        "ratio_lifecycle_vs_reference": round(t_life_ref / t_life, 1),
        "ns_per_order_batch_c": round(t_batch / m, 1),
        "ratio_batch_c_vs_reference": round(t_ref / t_batch, 1),
        "ns_python_call_floor": round(t_floor / m, 1),
        "working_orders_at_cancel_on_disconnect": n_working,
        "us_cancel_on_disconnect_1_order": round(t_cod / calls / 1000, 2),
        "us_cancel_on_disconnect_1_order_reference": round(t_cod_ref / calls / 1000, 2),
        # Not named ratio_..._reference: that speed-up grows with the working orders (the
        # reference filters them all), so it stays off the harness's throughput chart.
        "speedup_cancel_on_disconnect_vs_reference": round(t_cod_ref / t_cod, 1),
        "target_ns_per_order_engine_path": TARGET_NS_ENGINE_PATH,
        # (not named ratio_..._reference: a target, not a figure for the speed-up chart)
        "target_speedup_vs_reference": TARGET_RATIO,
        "target_met": target_met(t_gate / m, t_gate_ref / t_gate),
    }
    print(f"risk benchmark: {m} orders ({pass_fraction:.1%} pass), {N_ACCOUNTS} accounts x "
          f"{N_INSTRUMENTS} instruments, best of {repeats} runs each (collector off)")
    print(f"{'figure':<34}{'core ns':>10}{'reference ns':>14}{'ratio':>9}")
    print(f"{'engine path: SessionGate.check_new':<34}{figures['ns_per_order_engine_path']:>10}"
          f"{figures['ns_per_order_engine_path_reference']:>14}{figures['ratio_engine_path_vs_reference']:>8}x")
    print(f"{'check_new via Python call':<34}{figures['ns_per_check_new']:>10}"
          f"{figures['ns_per_check_new_reference']:>14}{figures['ratio_check_new_vs_reference']:>8}x")
    print(f"{'lifecycle per order (new+fills)':<34}{figures['ns_per_order_lifecycle']:>10}"
          f"{figures['ns_per_order_lifecycle_reference']:>14}{figures['ratio_lifecycle_vs_reference']:>8}x")
    print(f"{'check_new_batch (C loop)':<34}{figures['ns_per_order_batch_c']:>10}"
          f"{figures['ns_per_check_new_reference']:>14}{figures['ratio_batch_c_vs_reference']:>8}x")
    print(f"{'(empty Python function, 11 args)':<34}{figures['ns_python_call_floor']:>10}")
    print(f"{'cancel_on_disconnect, 1 of ' + str(n_working):<34}"
          f"{round(t_cod / calls):>10}{round(t_cod_ref / calls):>14}"
          f"{figures['speedup_cancel_on_disconnect_vs_reference']:>8}x")
    print(f"target: engine path under {TARGET_NS_ENGINE_PATH:.0f} ns per order and at least "
          f"{TARGET_RATIO:.0f}x the reference: {t_gate / m:.1f} ns, {t_gate_ref / t_gate:.1f}x, "
          f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps({"benchmark": "risk", **figures, "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
