"""``kronos-exec bench``: fake benchmark scripts in a temporary directory, then the report.

The scripts are written by the tests (one OK, one crashing, one hanging, one
without a JSON line), so the harness's bookkeeping is checked in seconds
without running a real benchmark.
"""
from __future__ import annotations

import argparse
import textwrap

import orjson
import pytest

from benchmarks import harness

SCRIPTS = {
    "ok": """
        import json
        print("a results table would be here")
        print(json.dumps({"benchmark": "ok", "ops_per_s": 1000.0, "reference_ops_per_s": 100.0,
                          "ratio_vs_reference": 10.0, "p99_us": 50.0,
                          "machine": {"cpu": "x"}}))
    """,
    "crash": """
        import sys
        print("starting")
        sys.exit("boom: the benchmark crashed")
    """,
    "hang": """
        import time
        print("working", flush=True)
        time.sleep(120)
    """,
    "nojson": """
        print("figures, but no closing JSON line")
    """,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One harness run over the four fake scripts (and one expected name, router, that is not there)."""
    root = tmp_path_factory.mktemp("bench")
    bench_dir = root / "benchmarks"
    bench_dir.mkdir()
    for name, body in SCRIPTS.items():
        (bench_dir / f"bench_{name}.py").write_text(textwrap.dedent(body))
    out = root / "report"
    code = harness.run(parse(["--quick", "--bench-dir", str(bench_dir), "--out", str(out),
                              "--no-loadgen", "--timeout", "3",
                              "--only", "ok,crash,hang,nojson,router"]))
    return code, out, orjson.loads((out / "results.json").read_bytes())


def test_statuses(report):
    code, _, results = report
    statuses = {name: res["status"] for name, res in results["benchmarks"].items()}
    assert statuses == {"ok": "ok", "crash": "failed", "hang": "timeout", "nojson": "no-json",
                        "router": "skipped"}
    # A failed benchmark fails the command (CI decides whether that matters).
    assert code == 1


def test_figures_and_reasons(report):
    _, _, results = report
    b = results["benchmarks"]
    assert b["ok"]["figures"]["ops_per_s"] == 1000.0
    assert b["crash"]["returncode"] != 0 and "boom" in b["crash"]["error"]
    assert b["hang"]["figures"] is None
    # The hung script was stopped at its timeout, not waited for.
    assert 2.5 < b["hang"]["seconds"] < 20
    assert b["nojson"]["figures"] is None


def test_machine_and_commit_recorded(report):
    _, _, results = report
    machine, commit = results["machine"], results["commit"]
    assert machine["cores"] >= 1 and machine["python"]
    assert {"numpy", "pyzmq", "msgspec", "uvloop", "cython", "libzmq"} <= machine["versions"].keys()
    assert machine["versions"]["numpy"]  # installed, so a version string
    assert commit["commit"] is None or len(commit["commit"]) == 40
    assert commit["dirty"] in (True, False, None)


def test_report_lists_every_status(report):
    _, out, _ = report
    text = (out / "report.md").read_text()
    for name, status in [("ok", "ok"), ("crash", "failed"), ("hang", "timeout"),
                         ("nojson", "no-json"), ("router", "skipped")]:
        assert f"| {name} | {status} |" in text
    assert (out / "headline.md").exists()
    assert (out / "logs" / "crash.err").read_text().strip().endswith("boom: the benchmark crashed")


def test_closing_json_only_takes_the_last_line():
    assert harness.closing_json('text\n{"a": 1}\n\n') == {"a": 1}
    assert harness.closing_json('{"a": 1}\nlast words\n') is None
    assert harness.closing_json("[1, 2]") is None
    assert harness.closing_json("") is None


def _results(figures: dict, load_p99: float) -> dict:
    return {"machine": {"cpu": "c", "cores": 2, "os": "o", "python": "3",
                        "versions": dict.fromkeys(["numpy", "pyzmq", "libzmq", "msgspec",
                                                   "uvloop", "cython"], "1")},
            "commit": {"short": "abc", "dirty": False}, "mode": "quick", "started": "now",
            "benchmarks": {"book": {"status": "ok", "figures": figures}},
            "loadgen": {"runs": {"engine": {"1000": {"figures": {"latency_us": {
                "new": {"count": 5, "p99": load_p99}}}}}}}}


def test_compare_directions(capsys):
    old = _results({"ops_per_s": 1000.0, "ns_per_op": 100.0, "fills": 50, "ratio_vs_reference": 10.0},
                   load_p99=200.0)
    new = _results({"ops_per_s": 800.0, "ns_per_op": 101.0, "fills": 70, "added": 1},
                   load_p99=100.0)
    rows = {r["figure"]: r for r in harness.compare(old, new, threshold=0.05)}
    assert rows["book.ops_per_s"]["verdict"] == "worse"          # rate down 20%
    assert rows["book.ops_per_s"]["change"] == pytest.approx(-0.2)
    assert rows["book.ns_per_op"]["verdict"] == "~"              # 1% is noise
    assert rows["book.fills"]["verdict"] == "changed"            # no known direction
    assert rows["loadgen.engine.1000.new_p99_us"]["verdict"] == "better"  # latency halved
    assert rows["book.ratio_vs_reference"]["verdict"] == "gone"
    assert rows["book.added"]["verdict"] == "new"


def test_compare_command(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_bytes(orjson.dumps(_results({"ops_per_s": 1000.0, "case[cython]": 1.0}, 200.0)))
    new.write_bytes(orjson.dumps(_results({"ops_per_s": 500.0, "case[cython]": 1.0}, 200.0)))
    assert harness.run(parse(["--compare", str(old), "--new", str(new)])) == 0
    out = capsys.readouterr().out
    assert "book.ops_per_s" in out and "-50.0%" in out and "worse" in out
    # Brackets in pytest-benchmark names survive the table (not taken as markup).
    assert "book.case[cython]" in out
    assert harness.run(parse(["--compare", str(tmp_path / "nope.json"), "--new", str(new)])) == 2


def test_headline_from_real_keys():
    results = _results({"batch_ops_per_s": 8e6, "per_call_ops_per_s": 4e6,
                        "reference_ops_per_s": 4e5}, 100.0)
    rows = {r[0]: r for r in harness.headline_rows(results)}
    assert rows["book batch ops/s"][3] == "20.00x faster"
    assert rows["book per-call ops/s"][3] == "10.00x faster"


@pytest.mark.parametrize("name,lower", [
    # Audit (stop 33): "per_strategy" holds "per_s", so a slower simulator showed as better.
    ("sim.us_per_strategy_order", True), ("sim.us_per_strategy_order_compiled_best", True),
    ("risk.ns_python_call_floor", True), ("e2e.ack_p99_us_at_1000", True),
    ("gateways.engine_ack_p99_us_ratio_with_zmq", True),   # a ratio of latencies
    ("router.decisions_per_s", False), ("risk.ratio_engine_path_vs_reference", False),
    ("e2e.max_single_ratio_vs_floor", False), ("gateways.zmq_vs_baseline", False),
    ("gateways.engine_seconds", None), ("router.decisions_per_run", None), ("book.fills", None),
    # a restart's seconds over the whole replay's: a cost, though named a ratio
    ("recovery.ratio_vs_whole_replay", True),
    ("recovery.checkpoint_write_ratio_vs_whole_replay", True),
    ("recovery.replay_records_per_s", False),
    # Seconds and megabytes are costs (they had no direction: "changed"); the dark
    # pool's cost with its resting orders over the cost without them is a cost ratio
    # (a rise was called better); the simulated span is a setting.
    ("recovery.checkpoint_restart_s", True), ("recovery.whole_replay_s", True),
    ("recovery.journal_build_cpu_s", True), ("gateways.gateway_cpu_s_zmq", True),
    ("recovery.whole_replay_maxrss_mb", True),
    ("sim.dark_resting_ratio", True), ("sim.simulated_s", None),
    ("sim.events_per_s", False),
])
def test_direction_of_each_kind_of_figure(name, lower):
    assert harness.lower_is_better(name) is lower


def test_an_unknown_only_name_is_refused(tmp_path, capsys):
    """Audit (stop 33): ``--only nosuch`` ran nothing and exited 0."""
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--quick", "--only", "book,nosuch", "--out", str(tmp_path)])
    assert harness.run(args) == 2
    assert "no benchmark 'nosuch'" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_unanswered_load_requests_are_shown_beside_their_percentiles(tmp_path):
    """A loadgen run with requests never answered exits 1, which the harness keeps as a
    result: its percentiles are of the answered requests only, the slowest left out, and
    neither the headline nor the report said so."""
    results = _results({}, load_p99=100.0)
    run = results["loadgen"]["runs"]["engine"]["1000"]
    run["figures"].update(unanswered=250, sent={"new": 700, "cancel": 200, "replace": 100},
                          rejects={"new": {}, "cancel": {}, "replace": {}})
    results["loadgen"].update(seconds_per_rate=1.0, status="ok")
    results.update(seconds=1.0, micro=None)
    results["machine"].update(loadavg_at_start=None)
    results["commit"].update(commit="abc", branch="b", modified=[], untracked=[])
    [row] = [r for r in harness.headline_rows(results) if r[0].startswith("loadgen")]
    assert "250 of 1,000 unanswered" in row[0]
    harness.write_report(results, tmp_path, [])
    report = (tmp_path / "report.md").read_text()
    assert "unanswered" in report and "| 250 |" in report


def test_a_change_from_zero_keeps_its_sign():
    """From 0 to below 0 is a fall (it was +inf, so a cost going down read 'worse')."""
    old = _results({"added_p50_us": 0.0, "ops_per_s": 0.0}, load_p99=100.0)
    new = _results({"added_p50_us": -5.0, "ops_per_s": 10.0}, load_p99=100.0)
    rows = {r["figure"]: r for r in harness.compare(old, new)}
    assert rows["book.added_p50_us"]["change"] == float("-inf")
    assert rows["book.added_p50_us"]["verdict"] == "better"
    assert rows["book.ops_per_s"]["change"] == float("inf")
    assert rows["book.ops_per_s"]["verdict"] == "better"


def test_the_max_sustainable_rate_is_in_the_headline_and_the_plots(tmp_path):
    """bench_e2e's maximum sustainable rate: its figures end ``_at_sustainable``, which
    the plots' reading of the offered rates (``ack_p50_us_at_<rate>``) took for a rate
    and failed on; the headline sets the rate beside the closed loop's and its ack p99
    beside the floor's."""
    e2e = {"ack_p50_us_at_1000": 300.0, "ack_p99_us_at_1000": 900.0,
           "floor_p50_us_at_1000": 200.0, "floor_p99_us_at_1000": 600.0,
           "ack_p50_us_at_sustainable": 500.0, "ack_p99_us_at_sustainable": 3_000.0,
           "floor_p50_us_at_sustainable": 250.0, "floor_p99_us_at_sustainable": 1_500.0,
           "max_single_orders_per_s": 12_000, "floor_max_msgs_per_s": 80_000,
           "sustainable_rate_orders_per_s": 9_000}
    results = _results({}, load_p99=100.0)
    results["benchmarks"]["e2e"] = {"status": "ok", "figures": e2e}
    made = harness.make_plots(results, tmp_path)
    assert "latency_vs_load.png" in made and "zmq_floor.png" in made
    rows = {r[0]: r for r in harness.headline_rows(results)}
    assert rows["engine max sustainable orders/s, open loop (bench_e2e)"][3] == \
        "0.75x the closed loop"
    row = rows["engine ack p99 at the max sustainable 9,000/s, µs (bench_e2e)"]
    assert row[2].startswith("ZeroMQ echo") and row[3] == "2.00x the floor"
    # Nothing sustained: no row pretends a rate.
    e2e["sustainable_rate_orders_per_s"] = None
    assert not any("sustainable" in r[0] for r in harness.headline_rows(results))
