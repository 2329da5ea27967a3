"""bench_gateways' accounting of the engine's processes, against a real engine.

The engine is ``kronos-exec serve`` started as the benchmark starts it, with a
ZeroMQ gateway attached (its default process isolation).
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks.bench_gateways import child_pids, free_port, start_engine_with, stop_engine


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_child_pids_finds_the_gateway_process(tmp_path):
    """The gateway runs in a child the engine forks from its spawner thread, not its main
    thread: its CPU is what the benchmark reports as the gateway's (it read 0 when only
    the main thread's children were listed, and the gateway's work went to "other
    work on the machine")."""
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
             "replay_endpoint": "tcp://127.0.0.1:0", "metrics_port": free_port()}
    engine = start_engine_with(free_port(), tmp_path, [table])
    try:
        deadline = time.monotonic() + 10
        while True:
            kids = child_pids(engine.pid)
            gateways = [pid for pid in kids if "spawn_main" in _cmdline(pid)]
            if gateways or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert gateways, f"no gateway among the engine's children {kids}: " \
                         f"{[_cmdline(p) for p in kids]}"
    finally:
        stop_engine(engine)


def _run(p50: float, p99: float, *, acks: int = 1000, sent: int = 1000) -> dict:
    """One measure_engine_p99 result: a histogram holding that p50 and p99."""
    from hdrh.histogram import HdrHistogram
    ack = HdrHistogram(1, 60_000_000, 3)
    ack.record_value(int(p50), 980)
    ack.record_value(int(p99), 20)
    return {"p50_us": p50, "p99_us": p99, "p999_us": p99, "max_us": p99, "acks": acks,
            "sent": sent, "rejects": 0, "ack": ack, "engine_cpu_s": 1.0, "gateway_cpu_s": 0.1,
            "server_cpu_s": 0.0, "background_cores": 0.0, "gateways": {}}


def _effect(none: list[dict], zmq: list[dict]) -> dict:
    from benchmarks.bench_gateways import report_effect
    figures: dict = {}
    report_effect({"none": none, "zmq": zmq}, repeats=len(none), seconds=1.0, figures=figures)
    return figures


def test_a_gateway_within_the_target_is_met_when_the_engine_keeps_up():
    figures = _effect([_run(400, 1000)] * 4, [_run(400, 1010)] * 4)
    assert figures["engine_kept_up"] is True
    assert figures["engine_p99_verdict_zmq"] == "met"
    assert figures["engine_p99_target_met_zmq"] is True


def test_no_verdict_when_the_engine_did_not_keep_up():
    """Both sides queueing for seconds behind the offered rate: their p99s are alike, but
    that measures the queue, not the gateway's cost (it was reported as met)."""
    figures = _effect([_run(900_000, 2_000_000)] * 4, [_run(900_000, 2_000_000)] * 4)
    assert figures["engine_kept_up"] is False
    assert figures["engine_p99_verdict_zmq"] != "met"
    assert figures["engine_p99_target_met_zmq"] is False


def test_no_verdict_when_orders_went_unanswered():
    """A run's unanswered orders are missing from its histogram: its p99 is of the rest."""
    figures = _effect([_run(400, 1000)] * 4, [_run(400, 1000, acks=900)] * 4)
    assert figures["engine_runs_short_of_acks"] == 4
    assert figures["engine_p99_verdict_zmq"] != "met"
    assert figures["engine_p99_target_met_zmq"] is False


def test_every_latency_figure_names_its_unit():
    figures = _effect([_run(400, 1000)] * 4, [_run(400, 1010)] * 4)
    latencies = [k for k in figures if ("p50" in k or "p99" in k)
                 and "verdict" not in k and "target_met" not in k]
    assert latencies and all("_us" in k for k in latencies), \
        [k for k in latencies if "_us" not in k]


def test_each_gateway_is_timed_as_often_as_the_baseline(tmp_path):
    """The baseline (reading and normalising the journal) was the best of 3 runs and
    each gateway a single run: the same number for both, each gateway run from an empty
    destination of its own (here the ZeroMQ gateway, its cursor in its data directory)."""
    from benchmarks.bench_gateways import THROUGHPUT_RUNS, throughput_runs, write_fills
    journal_dir = tmp_path / "journal"
    last_seq = write_fills(journal_dir, 500)
    tables = {"zmq": {"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
                      "replay_endpoint": "tcp://127.0.0.1:0"}}
    runs = throughput_runs(tables, journal_dir, last_seq, tmp_path)
    assert THROUGHPUT_RUNS == 3
    assert len(runs["zmq"]) == THROUGHPUT_RUNS
    assert all(s > 0 for s in runs["zmq"])
    # Each run from a destination of its own: no run resumed at the end of the journal
    # from the cursor the run before left.
    assert sorted(p.name for p in tmp_path.glob("gw-zmq-*")) == ["gw-zmq-0", "gw-zmq-1",
                                                                 "gw-zmq-2"]
