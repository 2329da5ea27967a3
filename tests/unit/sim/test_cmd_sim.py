"""``kronos-exec sim`` in process: configuration errors, output folder, file names."""
import argparse

import pyarrow.csv as pacsv
import pytest

from sim import cmd_sim
from sim.plots import symbol_file_part

CONFIG = """
[session]
start = "10:00:00"
end = "10:00:06"
warmup = "1s"
seed = 3

[[instruments]]
symbol = "AAA"
price = "50.00"

[[instruments]]
symbol = "BRK/B"
price = "120.00"

[flow]
lp_rate = 60.0
cancel_rate = 20.0
taker_rate = 10.0
max_orders = 40

[[venues]]
name = "LITA"
fees = { maker_per_share = "-0.0020", taker_per_share = "0.0030" }

[[venues]]
name = "LITB"

[[venues]]
name = "DARK"
kind = "dark"

[strategy]
name = "twap"
params = { slices = 2 }

[[parents]]
symbol = "AAA"
side = "buy"
qty = "300"
duration = "4s"

[[parents]]
symbol = "BRK/B"
side = "sell"
qty = "200"
duration = "4s"
"""


def sim(tmp_path, *args, config=CONFIG, out=None):
    """Exit code of ``kronos-exec sim -c <config> -o <out> ...`` (default ``tmp_path/out``)."""
    path = tmp_path / "c.toml"
    path.write_text(config)
    parser = argparse.ArgumentParser()
    cmd_sim.add_arguments(parser)
    argv = ["-c", str(path), "--no-progress", "-o", str(out or tmp_path / "out"), *args]
    return cmd_sim.run(parser.parse_args(argv))


@pytest.mark.parametrize("args,edit,message", [
    (["-s", "twapp"], None, "strategy.name: unknown strategy 'twapp'"),
    (["-p", "slicez=3"], None, "unknown parameter(s) slicez"),
    (["-p", "dark_fraction=3.0"], None, "dark_fraction = 3.0: must be a number from 0 to 1"),
    (["--seed", "-1"], None, "seed = -1"),
    (["--format", "xlsx"], None, "--format: unknown format(s) 'xlsx'"),
    (["--format", "CSV"], None, "--format: unknown format(s) 'CSV'"),
    ([], ('qty = "300"', 'qty = "0"'), "parents[0].qty: qty must be positive"),
    ([], ('duration = "4s"', 'duration = "0s"'), "parents[0]: the window"),
    ([], ('lp_rate = 60.0', 'lp_rate = inf'), "flow.lp_rate = inf"),
    ([], ('name = "LITB"', 'name = "LITB"\nfees = { taker_per_share = "abc" }'),
     "venues[1].fees: taker_per_share: 'abc' is not a decimal number"),
    ([], ('price = "50.00"', 'price = "50.00"\nlot_size = "100"'),
     "flow.taker_qty: qty '150' is not a multiple of 100"),
    ([], ('[[venues]]\nname = "LITA"', '[replay]\nquotes = "nowhere.csv"\n\n[[venues]]\n'
          'name = "LITA"'), "replay.quotes: no such file"),
    ([], ('[[venues]]\nname = "LITA"', '[replay]\ntrades = "t.csv"\n\n[[venues]]\n'
          'name = "LITA"'), "t.csv: row 1, column qty: 'lots' is not a decimal number"),
    ([], ('[[venues]]\nname = "LITA"', '[replay]\ntrades = "empty.csv"\n\n[[venues]]\n'
          'name = "LITA"'), "replay.trades: "),
])
def test_configuration_errors_exit_2_with_one_line(tmp_path, capsys, args, edit, message):
    (tmp_path / "t.csv").write_text("ts,venue,symbol,price,qty,side\n"
                                    "1767607200000000000,LITA,AAA,50.00,lots,B\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    config = CONFIG.replace(*edit) if edit else CONFIG
    assert sim(tmp_path, *args, "--no-plots", config=config) == 2
    captured = capsys.readouterr()
    # One line on stderr, never wrapped (rich wrapped long ones on stdout).
    assert captured.err.startswith("kronos-exec sim: ") and message in captured.err
    assert len(captured.err.splitlines()) == 1 and captured.out == ""


def test_a_run_replaces_every_output_of_an_earlier_run_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert sim(tmp_path, "--seed", "5") == 0
    first = {p.name for p in out.iterdir()}
    assert {"fills.parquet", "orders.parquet", "fills.csv", "price_AAA.png",
            f"price_{symbol_file_part('BRK/B')}.png", "cumulative_fill.png"} <= first
    assert sim(tmp_path, "--seed", "6", "--format", "csv", "--no-plots") == 0
    assert sorted(p.name for p in out.iterdir()) == ["fills.csv", "notes.txt", "orders.csv",
                                                     "summary.json"]
    assert "removed" in capsys.readouterr().out
    assert pacsv.read_csv(out / "fills.csv").num_rows > 0


def test_symbols_become_safe_distinct_file_names():
    assert symbol_file_part("BRK/B") == "BRK%2FB"
    assert symbol_file_part("BRK_B") == "BRK_B"
    assert symbol_file_part("../x") == "..%2Fx"
    assert symbol_file_part("AAA") == "AAA"
