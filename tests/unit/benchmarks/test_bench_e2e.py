"""bench_e2e's open-loop client against a real ZeroMQ echo (a ROUTER on TCP loopback)."""
from __future__ import annotations

import threading
import time

import pytest
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


def test_every_percentile_of_ack_and_fill_sits_beside_the_floor():
    """The issue asks for p50, p99 and p99.9 of the ack and of the fill with the
    engine's added latency over the floor at each; p99.9 and the fill had no floor."""
    from hdrh.histogram import HdrHistogram

    def hist(values):
        h = HdrHistogram(1, bench_e2e.HIGHEST_US, 3)
        for v in values:
            h.record_value(v)
        return h
    floor = hist(range(100, 1100))
    run = {"ack": hist(range(300, 1300)), "fill": hist(range(500, 1500)), "acks": 1000,
           "sent": 1000, "fills": 1000, "rejects": 0}
    figures, rows = bench_e2e.phase_figures(1000, run, floor)
    for p in ("p50", "p99", "p999"):
        assert figures[f"floor_{p}_us_at_1000"] == bench_e2e.pct(floor, bench_e2e.PERCENTILES[p])
        for kind, added in (("ack", "added"), ("fill", "fill_added")):
            assert figures[f"{added}_{p}_us_at_1000"] == pytest.approx(
                figures[f"{kind}_{p}_us_at_1000"] - figures[f"floor_{p}_us_at_1000"])
    assert figures["added_p50_us_at_1000"] == pytest.approx(200, abs=2)
    assert figures["fill_added_p999_us_at_1000"] == pytest.approx(400, abs=2)
    # Two rows (ack, fill): three percentiles, the floor's three, the three added.
    assert [len(r) for r in rows] == [11, 11]
    assert all(isinstance(v, float) for r in rows for v in r[1:10])


def test_the_fills_that_land_after_the_last_acknowledgement_are_counted(tmp_path):
    """Against the real benchmark engine: the fill of an order comes from its venue after
    the acknowledgement, so the last orders' fills land after the answer to the closing
    heartbeat, where the loop stopped: those (the latest of the phase) were missing from
    the fill histogram."""
    port = bench_e2e.free_port()
    engine = bench_e2e.start_engine(port, tmp_path)
    try:
        # Three phases: whether a fill beats the heartbeat's answer is a race, lost by
        # the last fills most of the time, not every time.
        runs = [bench_e2e.open_loop(f"tcp://127.0.0.1:{port}",
                                    bench_e2e.orders(2_001, f"late{k}"), 10_000, echo=False)
                for k in range(3)]
    finally:
        engine.kill()
        engine.wait(10)
    for r in runs:
        assert r["acks"] == 2_001 and r["rejects"] == 0
        # Every marketable order (one in two, the last one too: it goes out just before
        # the heartbeat) of the 1-lot stream fills on the simulator.
        assert r["fills"] == 1_001
        assert r["fill"].get_total_count() == 1_001


def test_the_floor_is_taken_at_its_best_of_the_runs_before_and_after_the_engine():
    """A floor run in a noisy spell (slower than the engine's own run) flattered the
    latency the engine adds over it: the floor is measured before the engine and after
    it, and each percentile is the lower of the two, so the added latency can only grow."""
    from hdrh.histogram import HdrHistogram

    def hist(values):
        h = HdrHistogram(1, bench_e2e.HIGHEST_US, 3)
        for v in values:
            h.record_value(v)
        return h

    quiet, noisy = hist(range(100, 1100)), hist(range(5_000, 6_000))
    tail_noisy = hist([100] * 980 + [50_000] * 20)
    best = bench_e2e.BestFloor(noisy, quiet)
    for p in bench_e2e.PERCENTILES.values():
        assert bench_e2e.pct(best, p) == bench_e2e.pct(quiet, p)
    mixed = bench_e2e.BestFloor(quiet, tail_noisy)
    assert bench_e2e.pct(mixed, 50.0) == bench_e2e.pct(tail_noisy, 50.0)   # 100
    assert bench_e2e.pct(mixed, 99.0) == bench_e2e.pct(quiet, 99.0)        # not 50,000
    assert bench_e2e.BestFloor(quiet, bench_e2e.latency_histogram()).get_total_count() == 1000
    run = {"ack": hist(range(300, 1300)), "fill": hist(range(400, 1400)), "acks": 1000,
           "sent": 1000, "fills": 500, "rejects": 0}
    flattered, _ = bench_e2e.phase_figures(1000, run, noisy)
    honest, _ = bench_e2e.phase_figures(1000, run, best)
    assert honest["added_p99_us_at_1000"] > flattered["added_p99_us_at_1000"]
