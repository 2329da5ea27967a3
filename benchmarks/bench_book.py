"""Order book throughput: Cython per-call and batch APIs against the pure-Python reference.

One seeded stream of operations around a moving mid price (about 60% new
passive limit orders, 30% cancels of live orders, 10% marketable IOC orders)
runs through three books in the same process: the Cython book called once
per operation, the Cython book given the whole stream as one numpy batch, and
the pure-Python reference book (``tests/reference/book_reference.py``). All
three must produce the same fills; the benchmark checks that before it
reports anything.

Run: ``python benchmarks/bench_book.py`` (1,000,000 ops) or ``--quick``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_of, emit, machine, table  # noqa: E402
from ext.book import OP_ADD, OP_CANCEL, OP_DTYPE, OrderBook, STP_DEFAULT  # noqa: E402
from ext.types import OrdType, Side, TimeInForce  # noqa: E402
from tests.reference.book_reference import ReferenceBook  # noqa: E402

TARGET_BATCH_OPS_PER_S = 10_000_000
TARGET_PER_CALL_OPS_PER_S = 2_000_000
TARGET_RATIO = 10.0
BATCH = 8192


def make_stream(n: int, seed: int = 42) -> np.ndarray:
    """The benchmark's operation stream as an ``OP_DTYPE`` array.

    Cancels pick a random order that is still resting, so the stream is
    generated alongside a book that tells which orders are live.
    """
    rng = np.random.default_rng(seed)
    kind = rng.random(n)
    side = np.where(rng.random(n) < 0.5, Side.BUY, Side.SELL).astype(np.uint8)
    offset = rng.geometric(0.25, n).clip(1, 40)
    qty = rng.integers(1, 100, n)
    account = rng.integers(1, 1000, n)
    steps = rng.choice([-1, 0, 0, 1], n)
    picks = rng.random(n)
    ops = np.zeros(n, dtype=OP_DTYPE)
    ops["ord_type"] = OrdType.LIMIT
    ops["stp"] = STP_DEFAULT
    tracker = OrderBook(capacity=1 << 16)
    live: list[int] = []
    mid, next_id = 100_000, 1
    for i in range(n):
        if i % 100 == 0:
            mid += int(steps[i])
        k = kind[i]
        if k < 0.30 and live:
            # Cancel a random live order (swap-remove; skip those already filled).
            while live:
                j = int(picks[i] * len(live))
                oid = live[j]
                live[j] = live[-1]
                live.pop()
                if oid in tracker:
                    break
            ops[i] = (OP_CANCEL, 0, 0, 0, 0, STP_DEFAULT, b"", oid, 0, 0, 0, i)
            tracker.cancel(oid)
            continue
        s = int(side[i])
        if k < 0.90:  # passive limit away from the mid
            px = mid - int(offset[i]) if s == Side.BUY else mid + int(offset[i])
            tif = TimeInForce.GTC
            live.append(next_id)
        else:  # marketable IOC crossing the spread
            px = mid + 5 if s == Side.BUY else mid - 5
            tif = TimeInForce.IOC
        ops[i] = (OP_ADD, s, OrdType.LIMIT, tif, 0, STP_DEFAULT, b"", next_id, int(account[i]),
                  px, int(qty[i]), i)
        tracker.add(next_id, s, px, int(qty[i]), int(account[i]), OrdType.LIMIT, tif)
        tracker.drain_fills()
        tracker.drain_events()
        next_id += 1
    return ops


def as_calls(ops: np.ndarray, chunk: int = 1024) -> list[list[tuple]]:
    """The stream as the plain Python tuples a per-call user would hold, in chunks."""
    calls = list(zip(ops["op"].tolist(), ops["order_id"].tolist(), ops["side"].tolist(),
                     ops["price"].tolist(), ops["qty"].tolist(), ops["account"].tolist(),
                     ops["tif"].tolist()))
    return [calls[i:i + chunk] for i in range(0, len(calls), chunk)]


def run_per_call(book_cls, chunks: list[list[tuple]], events: bool = False):
    """Drive a book one call per operation, draining after every chunk of 1,024.

    With ``events=False`` order events are switched off, as the batch API
    does by default, so this measures matching; with ``events=True`` they are
    recorded and drained too, as the engine uses the book.
    """
    book = book_cls(capacity=1 << 16)
    book.record_events = events
    add, cancel, drain, drain_events = book.add, book.cancel, book.drain_fills, book.drain_events
    limit, op_add = int(OrdType.LIMIT), int(OP_ADD)
    total_qty = n_fills = 0
    for chunk in chunks:
        for op, oid, side, px, qty, account, tif in chunk:
            if op == op_add:
                add(oid, side, px, qty, account, limit, tif)
            else:
                cancel(oid)
        f = drain()
        n_fills += len(f)
        total_qty += int(f["qty"].sum())
        if events:
            drain_events()
    return n_fills, total_qty, book.bbo()


def run_batch(ops: np.ndarray, batch: int):
    """Drive the Cython book with the stream in batches of ``batch`` operations.

    A consumer takes the fills after each batch; one giant batch instead makes
    the book hold every fill at once (88 bytes each), and its run time is then
    mostly the growth of that buffer, which is reported separately.
    """
    book = OrderBook(capacity=1 << 16)
    n_fills = total_qty = 0
    for start in range(0, len(ops), batch):
        f = book.apply(ops[start:start + batch])
        n_fills += len(f)
        total_qty += int(f["qty"].sum())
    return n_fills, total_qty, book.bbo()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200,000 ops, one repeat")
    args = parser.parse_args(argv)
    n, repeat = (200_000, 1) if args.quick else (args.ops, args.repeat)

    ops = make_stream(n)
    calls = as_calls(ops)
    mix = {name: float(np.mean(mask)) for name, mask in (
        ("new_passive", (ops["op"] == OP_ADD) & (ops["tif"] == TimeInForce.GTC)),
        ("cancel", ops["op"] == OP_CANCEL),
        ("marketable", (ops["op"] == OP_ADD) & (ops["tif"] == TimeInForce.IOC)))}

    t_batch, r_batch = best_of(lambda: run_batch(ops, BATCH), repeat)
    t_one, r_one = best_of(lambda: run_batch(ops, len(ops)), repeat)
    t_call, r_call = best_of(lambda: run_per_call(OrderBook, calls), repeat)
    t_ev, r_ev = best_of(lambda: run_per_call(OrderBook, calls, events=True), repeat)
    t_ref, r_ref = best_of(lambda: run_per_call(ReferenceBook, calls), repeat)
    if not r_batch == r_one == r_call == r_ev == r_ref:
        print(f"MISMATCH: batch {r_batch} one batch {r_one} per-call {r_call} with events {r_ev} "
              f"reference {r_ref}", file=sys.stderr)
        return 1

    batch_ops, call_ops, ev_ops, ref_ops = n / t_batch, n / t_call, n / t_ev, n / t_ref
    one_ops = n / t_one
    table(f"Order book, {n:,} ops ({mix['new_passive']:.0%} new passive, "
          f"{mix['cancel']:.0%} cancel, {mix['marketable']:.0%} marketable), "
          f"{r_ref[0]:,} fills, best of {repeat}",
          ["implementation", "ops/s", "ns/op", "vs reference", "target ops/s",
           f"met (and >= {TARGET_RATIO:.0f}x)"],
          [[f"Cython batch API ({BATCH:,}-op batches)", batch_ops, 1e9 / batch_ops, f"{batch_ops / ref_ops:.1f}x",
            TARGET_BATCH_OPS_PER_S,
            batch_ops >= TARGET_BATCH_OPS_PER_S and batch_ops / ref_ops >= TARGET_RATIO],
           [f"Cython batch API (one {n:,}-op batch)", one_ops, 1e9 / one_ops,
            f"{one_ops / ref_ops:.1f}x", "-", "-"],
           ["Cython per-call API", call_ops, 1e9 / call_ops, f"{call_ops / ref_ops:.1f}x",
            TARGET_PER_CALL_OPS_PER_S,
            call_ops >= TARGET_PER_CALL_OPS_PER_S and call_ops / ref_ops >= TARGET_RATIO],
           ["Cython per-call, events drained", ev_ops, 1e9 / ev_ops,
            f"{ev_ops / ref_ops:.1f}x", "-", "-"],
           ["pure-Python reference", ref_ops, 1e9 / ref_ops, "1.0x", "-", "-"]])
    emit({
        "benchmark": "book", "ops": n, "fills": r_ref[0], "repeat": repeat,
        "batch_size": BATCH, "batch_ops_per_s": round(batch_ops),
        "single_batch_ops_per_s": round(one_ops), "per_call_ops_per_s": round(call_ops),
        "per_call_with_events_ops_per_s": round(ev_ops), "reference_ops_per_s": round(ref_ops),
        "batch_ratio_vs_reference": round(batch_ops / ref_ops, 2),
        "per_call_ratio_vs_reference": round(call_ops / ref_ops, 2),
        "batch_ns_per_op": round(1e9 / batch_ops, 1), "per_call_ns_per_op": round(1e9 / call_ops, 1),
        "machine": machine(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
