"""``kronos-exec sim`` end to end: configuration file in, results, tables and plots out."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
KRONOS = Path(sys.executable).parent / "kronos-exec"

SMALL_TOML = """
[session]
date = "2026-01-05"
start = "10:00:00"
end = "10:01:30"
warmup = "5s"
seed = 11
sample_interval = "500ms"

[[instruments]]
symbol = "AAA"
price = "50.00"

[[instruments]]
symbol = "BBB"
price = "120.00"
activity = 0.5

[flow]
lp_rate = 150.0
taker_rate = 20.0
max_orders = 60

[[venues]]
name = "LITA"
fees = { maker_per_share = "-0.0020", taker_per_share = "0.0030" }
latency = { model = "fixed", mean_us = 100.0 }

[[venues]]
name = "LITB"
fees = { maker_bps = "-0.10", taker_bps = "0.25" }
latency = { model = "lognormal", median_us = 200.0, sigma = 0.3 }

[[venues]]
name = "LITC"
fees = { maker_per_share = "0.0010", taker_per_share = "-0.0005" }
latency = { model = "normal", mean_us = 300.0, std_us = 50.0 }

[[venues]]
name = "DARK"
kind = "dark"
fees = { maker_per_share = "0.0010", taker_per_share = "0.0010" }

[strategy]
name = "twap"
params = { slices = 3 }

[[parents]]
symbol = "AAA"
side = "buy"
qty = "2000"
duration = "60s"

[[parents]]
symbol = "BBB"
side = "sell"
qty = "1000"
duration = "60s"
strategy = "passive_aggressive"
params = { passive_fraction = 0.5, dark_fraction = 0.2 }

[output]
formats = ["parquet", "csv"]
"""


def test_sim_command_writes_results_tables_and_plots(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL_TOML)
    out = tmp_path / "out"
    proc = subprocess.run([str(KRONOS), "sim", "--config", str(cfg), "--out", str(out),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and "implementation shortfall" in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"fills.parquet", "fills.csv", "orders.parquet", "orders.csv", "summary.json",
            "price_AAA.png", "price_BBB.png", "cumulative_fill.png"} <= names
    for png in ("price_AAA.png", "cumulative_fill.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fills = pq.read_table(out / "fills.parquet")
    orders = pq.read_table(out / "orders.parquet").to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    assert fills.num_rows == summary["totals"]["fills"] > 0
    assert [o["strategy"] for o in orders] == ["twap", "passive_aggressive"]
    lots = fills.column("lots").to_pylist()
    by_parent = {p: sum(q for q, pid in zip(lots, fills.column("parent_id").to_pylist()) if pid == p)
                 for p in (1, 2)}
    assert by_parent == {1: orders[0]["filled"], 2: orders[1]["filled"]}
    assert orders[0]["fill_rate"] == 1.0 and 0 < orders[1]["fill_rate"] <= 1.0
    assert (out / "fills.csv").read_text().splitlines()[0].startswith('"parent_id","symbol"')


def test_sim_command_in_process_with_overrides_and_replay(tmp_path):
    out = tmp_path / "replay"
    code = main(["sim", "--config", str(ROOT / "sim/configs/replay.toml"), "--out", str(out),
                 "--strategy", "sweep", "--param", "depth=5", "--format", "csv", "--no-plots",
                 "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["fills.csv", "orders.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["filled"] == 3000 and summary["config"]["strategies"] == ["sweep"]


def test_sim_command_reports_a_bad_configuration(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL_TOML.replace('kind = "dark"', 'kind = "murky"'))
    assert main(["sim", "--config", str(bad), "--no-progress"]) == 2
    assert "kind" in capsys.readouterr().err
