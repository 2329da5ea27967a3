"""bench_e2e's open-loop client against a real ZeroMQ echo (a ROUTER on TCP loopback)."""
from __future__ import annotations

import statistics
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
           "sent": 1000, "fills": 1000, "rejects": 0, "ack_us": [300] * 1000}
    figures, rows = bench_e2e.phase_figures(1000, run, floor)
    for p in ("p50", "p99", "p999"):
        assert figures[f"floor_{p}_us_at_1000"] == bench_e2e.pct(floor, bench_e2e.PERCENTILES[p])
        for kind, added in (("ack", "added"), ("fill", "fill_added")):
            assert figures[f"{added}_{p}_us_at_1000"] == pytest.approx(
                figures[f"{kind}_{p}_us_at_1000"] - figures[f"floor_{p}_us_at_1000"])
    assert figures["added_p50_us_at_1000"] == pytest.approx(200, abs=2)
    assert figures["fill_added_p999_us_at_1000"] == pytest.approx(400, abs=2)
    # Two rows (ack, fill): three percentiles, the floor's three, the three added,
    # answered, kept up.
    assert [len(r) for r in rows] == [12, 12]
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
           "sent": 1000, "fills": 500, "rejects": 0, "ack_us": [300] * 1000}
    flattered, _ = bench_e2e.phase_figures(1000, run, noisy)
    honest, _ = bench_e2e.phase_figures(1000, run, best)
    assert honest["added_p99_us_at_1000"] > flattered["added_p99_us_at_1000"]


# -- the maximum sustainable rate: the decision and the search (pure, no sockets)


def _hist(values):
    from hdrh.histogram import HdrHistogram
    h = HdrHistogram(1, bench_e2e.HIGHEST_US, 3)
    for v in values:
        h.record_value(v)
    return h


def test_a_phase_is_sustained_when_every_order_is_answered_and_the_backlog_does_not_grow():
    """Past capacity the queue grows for the whole phase, so an order's latency grows
    with its place in it; under capacity the last orders wait as long as the first,
    whatever a hiccup does to a few of them."""
    flat = [300] * 4000
    for i in range(3100, 3140):  # a 40-order scheduler hiccup in the last quarter
        flat[i] = 50_000
    ok, why = bench_e2e.keeps_up(flat)
    assert ok and why.startswith("kept up")
    # 10 % over capacity: each order waits 0.1 x its time into the phase (4,000 orders
    # at 10,000/s: the last wait 40 ms).
    growing = [300 + i * 10 for i in range(4000)]
    ok, why = bench_e2e.keeps_up(growing)
    assert not ok and why.startswith("backlog grew")
    # Even 1 % over capacity, over a 0.4 s phase (4 ms at the end), shows.
    assert not bench_e2e.keeps_up([300 + i for i in range(4000)])[0]
    # An unanswered order or a reject is never sustained, whatever the latencies.
    ok, why = bench_e2e.keeps_up([300] * 999 + [None])
    assert not ok and "1 of 1000 unanswered" in why
    ok, why = bench_e2e.keeps_up([300] * 1000, rejects=3)
    assert not ok and "3 rejected" in why
    assert not bench_e2e.keeps_up([])[0]


def test_the_growth_allowance_is_a_factor_plus_an_absolute_slack():
    factor, slack = bench_e2e.SUSTAIN_GROWTH_FACTOR, bench_e2e.SUSTAIN_SLACK_US
    first = 200
    limit = factor * first + slack
    at_limit = [first] * 100 + [0] * 200 + [int(limit)] * 100
    over = [first] * 100 + [0] * 200 + [int(limit) + 1] * 100
    assert bench_e2e.keeps_up(at_limit)[0]
    assert not bench_e2e.keeps_up(over)[0]
    # Medians, not means: a quarter with a few huge values keeps its median.
    assert bench_e2e.keeps_up([first] * 300 + [first] * 90 + [10**7] * 10)[0]


def test_a_standing_backlog_is_not_sustained_though_it_does_not_grow():
    """At capacity exactly the queue neither grows nor drains: a burst early in the phase
    leaves every later order waiting behind it (seen: 43 ms at the median in the first
    quarter, 57 ms in the last, against 335 µs at 1,000/s). The trend alone called that
    sustained; against the engine's median at light load it is not."""
    standing = [43_000] * 1000 + [50_000] * 2000 + [57_000] * 1000
    assert bench_e2e.keeps_up(standing)[0]  # (the trend alone)
    ok, why = bench_e2e.keeps_up(standing, light_us=335)
    assert not ok and why.startswith("backlog stands") and "335 µs at light load" in why
    # Up to the level factor over the light-load median, plus the slack, is no backlog
    # (the first quarter at 1 ms, so the trend allows the end's 2.34 ms).
    level = int(bench_e2e.SUSTAIN_LEVEL_FACTOR * 335 + bench_e2e.SUSTAIN_SLACK_US)
    assert bench_e2e.keeps_up([1_000] * 3000 + [level] * 1000, light_us=335)[0]
    ok, why = bench_e2e.keeps_up([1_000] * 3000 + [level + 1] * 1000, light_us=335)
    assert not ok and why.startswith("backlog stands")


def _capacity(c, calls=None):
    """A fake engine that keeps up with every rate up to ``c`` orders/s."""
    def probe(rate):
        if calls is not None:
            calls.append(rate)
        return (rate <= c), ("kept up" if rate <= c else "backlog grew")
    return probe


def test_the_search_steps_down_from_the_closed_loop_rate_then_halves_the_bracket():
    calls = []
    ok, bad, trail = bench_e2e.search_sustainable(_capacity(9_000, calls), 13_700,
                                                  lowest=1_000, max_probes=7)
    # 13,700 fails, half of it keeps up: then the bracket is halved (geometrically).
    assert calls[:3] == [13_700, 6_850, round((6_850 * 13_700) ** 0.5)]
    assert ok <= 9_000 < bad
    assert bad <= ok * (1 + bench_e2e.SUSTAIN_RESOLUTION)  # refined to the resolution
    assert len(calls) <= 7
    assert [r for r, _, _ in trail] == calls
    assert all(k == (r <= 9_000) for r, k, _ in trail)
    assert ok == max(r for r, k, _ in trail if k)
    # The budget is kept: with 4 probes the bracket is coarser, still honest.
    calls = []
    ok, bad, _ = bench_e2e.search_sustainable(_capacity(9_000, calls), 13_700,
                                              lowest=1_000, max_probes=4)
    assert len(calls) == 4 and ok <= 9_000 < bad


def test_the_fixed_rates_verdicts_bracket_the_search():
    """The fixed rates' phases are verdicts already: with 1,000/s kept up and 10,000/s
    not, the closed-loop rate above them is not probed, the bracket is halved from the
    start (4 probes then reach within 16 % where stepping down from 13,700 had not
    reached a sustained rate)."""
    known = [(1_000, True, "kept up"), (10_000, False, "backlog grew"),
             (50_000, False, "backlog grew")]
    calls = []
    ok, bad, trail = bench_e2e.search_sustainable(_capacity(4_000, calls), 13_700,
                                                  lowest=1_000, max_probes=4, known=known)
    assert calls[0] == round((1_000 * 10_000) ** 0.5)  # 3,162
    assert all(1_000 < r < 10_000 for r in calls) and len(calls) == 4
    assert ok <= 4_000 < bad <= ok * 10 ** (1 / 16) + 1
    assert len(trail) == 4  # (the known verdicts are not the search's probes)
    # A start inside the bracket is probed first.
    calls = []
    bench_e2e.search_sustainable(_capacity(4_000, calls), 6_000, lowest=1_000, max_probes=2,
                                 known=known)
    assert calls[0] == 6_000
    # Noise: a rate kept up above one that failed does not count (the bracket's top is
    # the lowest failure, its bottom the highest success under it).
    calls = []
    bench_e2e.search_sustainable(_capacity(4_000, calls), 13_700, lowest=1_000, max_probes=1,
                                 known=known + [(20_000, True, "kept up")])
    assert calls == [3_162]


def test_the_search_climbs_when_the_closed_loop_rate_was_sustained():
    ok, bad, trail = bench_e2e.search_sustainable(_capacity(9_000), 5_000, lowest=1_000,
                                                  max_probes=8)
    assert [r for r, _, _ in trail][:3] == [5_000, 10_000, 7_071]
    assert ok <= 9_000 < bad


def test_the_search_finds_nothing_under_the_lowest_rate():
    calls = []
    ok, bad, trail = bench_e2e.search_sustainable(_capacity(500, calls), 2_000, lowest=1_000,
                                                  max_probes=10)
    assert ok is None and bad == 1_000
    assert calls == [2_000, 1_000]  # never a probe under the lowest rate, nor twice at it
    assert not any(k for _, k, _ in trail)


def test_a_rate_not_sustained_over_the_longer_phase_is_not_the_sustainable_rate():
    """A rate a short probe passed but whose backlog grows slowly fails the longer phase:
    the next rate down is measured instead, and only a phase that kept up is reported."""
    measured = []

    def measure(rate):
        measured.append(rate)
        return rate <= 7_000, "why", {"rate": rate}
    rate, result, trail = bench_e2e.confirm_sustainable(measure, 8_000, lowest=1_000, tries=3)
    assert measured == [8_000, 6_400]
    assert rate == 6_400 and result == {"rate": 6_400}
    assert [(r, k) for r, k, _ in trail] == [(8_000, False), (6_400, True)]
    # Out of tries: no rate, not the last one measured.
    measured.clear()
    rate, result, trail = bench_e2e.confirm_sustainable(measure, 20_000, lowest=1_000, tries=2)
    assert rate is None and result is None and measured == [20_000, 16_000]
    # Nothing found by the search: nothing measured.
    assert bench_e2e.confirm_sustainable(measure, None, lowest=1_000, tries=3) == (None, None, [])


def test_the_sustainable_rate_is_reported_with_units_beside_its_floor():
    """The maximum sustainable rate's percentiles (ack and fill) beside the echo floor at
    the same rate, the floor at its best of the phase before the engine's and the one
    after it, and the engine's added latency, under names carrying their units."""
    run = {"ack": _hist(range(300, 1300)), "fill": _hist(range(500, 1500)), "acks": 1000,
           "sent": 1000, "fills": 500, "rejects": 0, "ack_us": [300] * 1000}
    floor_before = {"ack": _hist(range(5_000, 6_000)), "ack_us": [5_000] * 1000}  # noisy
    floor_after = _hist(range(100, 1100))
    sustain = {"rate": 8_768, "run": run, "floor_run": floor_before, "candidate": 8_768,
               "failed": 9_341,
               "search": [(13_700, False, "backlog grew"), (10_960, False, "backlog grew"),
                          (8_768, True, "kept up")],
               "confirm": [(8_768, True, "kept up")],
               "known": [(1_000, True, "kept up"), (10_000, False, "backlog grew")]}
    figures, rows, trail = bench_e2e.sustainable_figures(sustain, 13_700.0, floor_after,
                                                         floor_light_us=150.0)
    assert figures["sustainable_rate_orders_per_s"] == 8_768
    assert figures["sustainable_ratio_vs_closed_loop"] == pytest.approx(0.64, abs=0.001)
    assert figures["kept_up_at_sustainable"] is True
    # The echo's own phase before the engine's stood at 5 ms, against 150 µs at light
    # load: said (the client, not the engine, may have set the rate).
    assert figures["floor_kept_up_at_sustainable"] is False
    for p, q in bench_e2e.PERCENTILES.items():
        assert figures[f"floor_{p}_us_at_sustainable"] == bench_e2e.pct(floor_after, q)
        assert figures[f"ack_{p}_us_at_sustainable"] == bench_e2e.pct(run["ack"], q)
        assert figures[f"fill_{p}_us_at_sustainable"] == bench_e2e.pct(run["fill"], q)
        assert figures[f"added_{p}_us_at_sustainable"] == pytest.approx(
            figures[f"ack_{p}_us_at_sustainable"] - figures[f"floor_{p}_us_at_sustainable"])
    assert figures["added_p99_us_at_sustainable"] == pytest.approx(200, abs=2)
    assert [r[0] for r in rows] == ["8,768/s (max sustainable) ack",
                                    "8,768/s (max sustainable) fill (marketable)"]
    assert [t[:3] for t in trail] == [["fixed-rate phase", 1_000, "yes"],
                                      ["fixed-rate phase", 10_000, "no"],
                                      ["probe 1", 13_700, "no"], ["probe 2", 10_960, "no"],
                                      ["probe 3", 8_768, "yes"],
                                      ["measured phase 1", 8_768, "yes"]]
    assert figures["sustainable_search"] == [[13_700, False], [10_960, False], [8_768, True]]
    # Nothing sustained: the rate is None, no percentile pretends otherwise.
    none = dict(sustain, rate=None, run=None, floor_run=None,
                confirm=[(8_768, False, "backlog grew")])
    figures, rows, trail = bench_e2e.sustainable_figures(none, 13_700.0, None)
    assert figures["sustainable_rate_orders_per_s"] is None
    assert not any(k.endswith("_at_sustainable") for k in figures) and rows == []
    assert trail[-1][0] == "result"


def test_the_open_loop_records_each_orders_ack_latency_in_scheduled_order():
    """keeps_up reads each order's latency by its place in the phase: the open loop
    against the real echo floor gives one per order, matching its histogram."""
    proc, endpoint = _echo_server()
    try:
        r = bench_e2e.open_loop(endpoint, bench_e2e.orders(500, "each"), 2_000, echo=True)
    finally:
        proc.kill()
        proc.wait(10)
    assert len(r["ack_us"]) == 500 and None not in r["ack_us"]
    assert r["ack"].get_total_count() == 500
    # The same latencies: the histogram's median is the list's, to hdrh's 3 digits.
    assert statistics.median(r["ack_us"]) == pytest.approx(bench_e2e.pct(r["ack"], 50),
                                                             rel=0.002, abs=1)
