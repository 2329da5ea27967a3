"""``kronos-exec loadgen`` against a real engine (in a thread), and its plan."""
from __future__ import annotations

import argparse

import orjson
import pytest

from benchmarks import cmd_loadgen, loadgen
from tests.integration.engine_harness import serving


def test_parse_mix():
    assert loadgen.parse_mix("70:20:10") == (70, 20, 10)
    assert loadgen.parse_mix("100") == (100, 0, 0)
    for bad in ("0:50:50", "1:2:3:4", "70:-1:10", "a:b"):
        with pytest.raises(ValueError):
            loadgen.parse_mix(bad)


def test_plan_acts_only_on_orders_it_sent():
    spec = loadgen.LoadSpec(endpoint="tcp://127.0.0.1:1", rate=1000, duration=2, mix=(50, 30, 20),
                            prefix="t")
    plan = loadgen.make_plan(spec)
    assert len(plan.payloads) == 2000
    counts = {k: plan.kinds.count(k) for k in loadgen.KINDS}
    assert counts["cancel"] > 400 and counts["replace"] > 250
    live = set()
    for i, (kind, target) in enumerate(zip(plan.kinds, plan.targets)):
        cl_ord_id = f"t{kind[0]}{i}"
        if kind == "new":
            live.add(cl_ord_id)
        else:
            # Every target is a resting order, acted on once.
            assert target in live
            live.remove(target)
            if kind == "replace":
                live.add(cl_ord_id)
    # Schedules are evenly spaced at the rate.
    assert plan.offsets_ns[1000] == 1_000_000_000


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("engine")) as (_, endpoint):
        yield endpoint


def test_loadgen_against_engine(endpoint, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cmd_loadgen.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["--endpoint", endpoint, "--rate", "200", "--duration", "1",
                              "--mix", "70:20:10", "--account", "DEMO1", "--drain", "10",
                              "--out", str(out)])
    assert cmd_loadgen.run(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = orjson.loads(last)
    assert sum(summary["sent"].values()) == 200
    # Every request answered with its acknowledgement, none rejected.
    assert summary["unanswered"] == 0
    assert summary["acks"] == summary["sent"]
    assert summary["sent"]["cancel"] > 0 and summary["sent"]["replace"] > 0
    assert all(not reasons for reasons in summary["rejects"].values())
    # The files decode to the same counts as the summary.
    for kind in loadgen.KINDS:
        hist = loadgen.load_histogram(out / f"{kind}.hdr")
        assert hist.get_total_count() == summary["acks"][kind]
        lat = summary["latency_us"][kind]
        assert lat["p50"] <= lat["p99"] <= lat["max"] == hist.get_max_value()
    assert orjson.loads((out / "summary.json").read_bytes())["acks"] == summary["acks"]


def test_loadgen_counts_rejects(endpoint):
    # DEMO2 has 10,000,000 cash: an order of 300,000 at ~49 is over the firm's
    # max_order_qty of 100,000, so every new order is rejected and counted.
    spec = loadgen.LoadSpec(endpoint=endpoint, rate=50, duration=0.4, mix=(1, 0, 0),
                            account="DEMO2", qty="300000", drain_s=5)
    summary = loadgen.run(spec)["summary"]
    assert summary["sent"]["new"] == 20
    assert summary["acks"]["new"] == 0
    assert sum(summary["rejects"]["new"].values()) == 20
    assert summary["unanswered"] == 0


def test_offered_rate_is_the_rate_of_the_schedule():
    """Against bench_e2e's echo floor: ``n`` sends span ``n - 1`` periods, so the rate
    offered is ``(n - 1)`` over that span (it was ``n`` over it: 11.1/s for 10/s)."""
    import subprocess
    import sys

    from benchmarks import bench_e2e
    endpoint = f"tcp://127.0.0.1:{bench_e2e.free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", bench_e2e.ECHO_SERVER, endpoint],
                            stdout=subprocess.PIPE)
    try:
        echo.stdout.readline()
        spec = loadgen.LoadSpec(endpoint=endpoint, rate=10, duration=1.0, floor=True, drain_s=5)
        summary = loadgen.run(spec)["summary"]
    finally:
        echo.kill()
        echo.wait(10)
    assert sum(summary["sent"].values()) == 10 and summary["unanswered"] == 0
    assert summary["offered_rate"] == pytest.approx(10.0, rel=1e-6)
