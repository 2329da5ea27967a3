"""bench_e2e's open-loop client against a real ZeroMQ echo (a ROUTER on TCP loopback)."""
from __future__ import annotations

import threading
import time

import zmq

from benchmarks import bench_e2e


def test_a_reply_slower_than_a_minute_stays_in_the_histogram(monkeypatch):
    """The drain waits up to 300 s for replies, but the histograms held 60 s: hdrh drops
    a larger value without a word, so the slowest replies of an overloaded phase left
    the percentiles while counting as answered (coordinated omission by the back door).

    The client's clock is moved 70 s on as the echo receives the order: the reply then
    lands 70 s after its scheduled send, as far as the client can tell.
    """
    port = bench_e2e.free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.bind(endpoint)
    got = threading.Event()
    real = time.perf_counter_ns

    def echo():
        frames = server.recv_multipart()
        got.set()
        server.send_multipart(frames)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    monkeypatch.setattr(bench_e2e.time, "perf_counter_ns",
                        lambda: real() + (70_000_000_000 if got.is_set() else 0))
    try:
        r = bench_e2e.open_loop(endpoint, bench_e2e.orders(1, "slow"), 1000, echo=True)
    finally:
        monkeypatch.undo()
        thread.join(5)
        server.close(linger=0)
        ctx.term()
    assert r["acks"] == 1
    assert r["ack"].get_total_count() == 1
    assert bench_e2e.pct(r["ack"], 50) >= 70_000_000


def _echo_server():
    """bench_e2e's own echo floor, in its own process; (process, endpoint)."""
    import subprocess
    import sys
    endpoint = f"tcp://127.0.0.1:{bench_e2e.free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", bench_e2e.ECHO_SERVER, endpoint],
                            stdout=subprocess.PIPE)
    proc.stdout.readline()
    return proc, endpoint


def test_the_echo_floor_counts_every_order_of_a_bulk():
    """The bulk figure's floor: an echoed BulkNewOrders of 100 answers 100 orders, as the
    engine's 100 acknowledgements do (counted as one, the loop ran to its 60 s deadline
    with a hundredth of the orders counted)."""
    proc, endpoint = _echo_server()
    try:
        start = time.monotonic()
        rate, acks = bench_e2e.max_rate(endpoint, bench_e2e.orders(2_000, "bulk"), window=500,
                                        bulk=100, echo=True)
        assert time.monotonic() - start < 30
    finally:
        proc.kill()
        proc.wait(10)
    assert acks == 2_000
    assert rate > 0


def test_the_report_sets_the_bulk_rate_beside_its_floor():
    figures = bench_e2e.bulk_figures(bulk=30_000.0, floor_bulk=150_000.0)
    assert figures == {"bulk100_orders_per_s": 30_000, "floor_bulk100_orders_per_s": 150_000,
                       "bulk100_ratio_vs_floor": 0.2}
