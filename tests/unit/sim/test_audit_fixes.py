"""Regression tests for the backtester audit (Area 1 of the audit report).

Strategy parameters bounded before the run, ``--out`` checked before the run,
arrays of tables in the configuration, replay cells that pyarrow took for
nulls, bad replay timestamps named by row, the console's implementation
shortfall, and prices and money written as exact decimals.
"""
import json
import math
import re
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from sim.backtest import Backtest, BacktestResult
from sim.config import ConfigError, load_config
from sim.fees import price_x2_to_decimal, units_to_currency
from sim.market import Market
from sim.replay import ReplayDataError, ReplayFeed, load_quotes, load_trades
from sim.strategies import ParentOrder, SweepStrategy
from tests.unit.sim.helpers import BUY, QUIET, SELL, SMALL, add, config, quiet_market
from tests.unit.sim import test_cmd_sim as cmd_sim_test
from tests.unit.sim.test_cmd_sim import CONFIG

S = 1_000_000_000
T0 = 1767607200000000000          # 2026-01-05 10:00:00, QUIET's session start
QUOTES_HEADER = "ts,venue,symbol,bid_px,bid_qty,ask_px,ask_qty\n"


def sim(tmp_path, *args, out=None):
    """Exit code of ``kronos-exec sim`` on the small CLI configuration, without plots."""
    return cmd_sim_test.sim(tmp_path, "--no-plots", *args, out=out)


# ---------------------------------------------------------------- F1, F2: parameter bounds

@pytest.mark.parametrize("params,message", [
    # Was accepted, then the run spun for ever: now + period wrapped negative.
    ({"interval": 2**63 - 1}, r"strategy.params: strategy 'periodic_taker': interval = "
                              r"9223372036854775807: must be a duration from 1ms to 24h"),
    ({"child_qty": 2**63}, r"child_qty = 9223372036854775808: must be an integer from 1 "
                           r"to 2\^63 - 1"),
])
def test_oversized_parameters_are_refused_when_the_backtest_is_created(params, message):
    with pytest.raises(ConfigError, match=message):
        Backtest(config(SMALL), strategy="periodic_taker", params=params)


def test_an_oversized_parameter_exits_2_before_the_run_with_one_line(tmp_path, capsys):
    # Was: the run started, then OverflowError with a traceback.
    assert sim(tmp_path, "-s", "periodic_taker", "-p", "child_qty=9223372036854775808") == 2
    captured = capsys.readouterr()
    assert captured.err == ("kronos-exec sim: strategy.params: strategy 'periodic_taker': "
                            "child_qty = 9223372036854775808: must be an integer from 1 to "
                            "2^63 - 1\n")
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_the_largest_timer_and_quantities_allowed_still_run_and_end():
    result = Backtest(config(SMALL), strategy="periodic_taker",
                      params={"interval": "24h", "child_qty": 2**63 - 1}).run()
    # One market order at the start (the timer's next turn is after the session).
    assert result.orders[0]["children"] == 1 and result.orders[0]["filled"] > 0


# ---------------------------------------------------------------- F4: --out

def test_an_output_path_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert sim(tmp_path, out=afile) == 2
    captured = capsys.readouterr()
    assert captured.err == f"kronos-exec sim: --out {afile}: not a folder (a file of that " \
                           "name exists)\n"
    assert captured.out == ""                     # no summary: the simulation did not run
    assert afile.read_text() == "mine"


def test_an_output_folder_that_cannot_be_created_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "run1"
    assert sim(tmp_path, out=out) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"kronos-exec sim: --out {out}: cannot create the folder: ")
    assert len(captured.err.splitlines()) == 1 and captured.out == ""


# ---------------------------------------------------------------- F5: arrays of tables

@pytest.mark.parametrize("section,value,message", [
    ("instruments", ["AAA"], "instruments[0] must be a table ([[instruments]] in TOML), got "
                             "str 'AAA'"),
    ("venues", [1], "venues[0] must be a table ([[venues]] in TOML), got int 1"),
    ("parents", [{"symbol": "AAA", "side": "buy", "qty": "1"}, 5],
     "parents[1] must be a table ([[parents]] in TOML), got int 5"),
])
def test_an_array_item_that_is_not_a_table_is_refused_naming_it(section, value, message):
    # Was: TypeError, or "instruments[0]: unknown key(s) A" for a string.
    with pytest.raises(ConfigError) as err:
        config(QUIET, **{section: value})
    assert str(err.value) == message


def test_a_venue_map_value_that_is_not_a_name_is_refused(tmp_path):
    (tmp_path / "q.csv").write_text(QUOTES_HEADER + f"{T0},X,AAA,49.99,1,50.01,1\n")
    with pytest.raises(ConfigError, match=r"^replay.venue_map.X = 1: must be a venue name"):
        config(QUIET, replay={"quotes": str(tmp_path / "q.csv"), "venue_map": {"X": 1}})


def test_a_configuration_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CONFIG.encode())          # as some editors save it
    assert load_config(path).instruments[0].symbol == "AAA"


# ---------------------------------------------------------------- F6: replay null strings

def feed_of(path, m=None):
    m = m or Market(config(QUIET), flow=False)
    return ReplayFeed(m, quotes=load_quotes(path), sources={"quotes": path})


@pytest.mark.parametrize("text", ["NaN", "nan", "N/A", "NA", "null", "NULL", "#N/A", "-NaN",
                                  "sNaN", "Infinity"])
@pytest.mark.parametrize("column", ["bid_px", "bid_qty", "ask_qty"])
def test_a_null_looking_price_or_quantity_is_refused_not_an_empty_side(tmp_path, text, column):
    row = {"bid_px": "49.99", "bid_qty": "1", "ask_px": "50.01", "ask_qty": "1", column: text}
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,49.99,1,50.01,1\n"
                    + f"{T0 + 1},FAST,AAA,{row['bid_px']},{row['bid_qty']},{row['ask_px']},"
                      f"{row['ask_qty']}\n")
    with pytest.raises(ReplayDataError) as err:
        feed_of(path)
    assert str(err.value) == (f"replay.quotes: {path}: row 2, column {column}: {text!r} is not "
                              "a decimal number")


def test_a_depth_quantity_of_nan_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ts,venue,symbol,side,price,qty\n"
                    f"{T0},FAST,AAA,B,49.99,100\n{T0},FAST,AAA,B,49.98,NaN\n")
    from sim.replay import load_depth
    with pytest.raises(ReplayDataError, match=r"d.csv: row 2, column qty: 'NaN' is not a "
                                              r"decimal number"):
        ReplayFeed(Market(config(QUIET), flow=False), depth=load_depth(path),
                   sources={"depth": path})


def test_the_ticker_na_replays(tmp_path):
    cfg = config(QUIET, instruments=[{"symbol": "NA", "price": "50.00"}],
                 parents=[{"symbol": "NA", "side": "buy", "qty": "1"}])
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,NA,49.99,3,50.01,4\n")
    m = Market(cfg, flow=False)
    feed = feed_of(path, m)
    feed.run_until(T0)
    assert m.bbo("FAST", "NA") == (4999, 3, 5001, 4)


def test_a_parquet_nan_quantity_is_refused_and_a_missing_one_is_empty(tmp_path):
    def write(qty):
        pq.write_table(pa.table({"ts": pa.array([T0], pa.int64()), "venue": ["FAST"],
                                 "symbol": ["AAA"], "bid_px": [49.99],
                                 "bid_qty": pa.array([qty], pa.float64()),
                                 "ask_px": [50.01], "ask_qty": [4.0]}), tmp_path / "q.parquet")
        return tmp_path / "q.parquet"
    with pytest.raises(ReplayDataError, match=r"q.parquet: row 1, column bid_qty: 'nan' is not "
                                              r"a decimal number"):
        feed_of(write(float("nan")))
    m = Market(config(QUIET), flow=False)
    feed_of(write(None), m).run_until(T0)
    assert m.bbo("FAST", "AAA") == (0, 0, 5001, 4)


# ---------------------------------------------------------------- F7: replay timestamps

TRADES_HEADER = "ts,venue,symbol,price,qty\n"


@pytest.mark.parametrize("rows,message", [
    ([str(T0), str(T0 + 1), "abc"],
     "row 3, column ts: 'abc' is not an integer (ns since the epoch, as in row 1)"),
    ([str(T0), str(T0 + 1), "2026-01-05T10:00:00.006874752"],
     "row 3, column ts: '2026-01-05T10:00:00.006874752' is not an integer (ns since the epoch, "
     "as in row 1)"),
    (["2026-01-05T10:00:00.1", "2026-01-05T10:00:00.2", str(T0)],
     f"row 3, column ts: '{T0}' is an integer, but row 1 is ISO 8601 text "
     "('2026-01-05T10:00:00.1')"),
    # The form most rows have is the one meant: a bad first row is named.
    (["abc", str(T0), str(T0 + 1)],
     "row 1, column ts: 'abc' is not an integer (ns since the epoch, as in row 2)"),
    (["2026-01-05T10:00:00.1", "2026-01-05T10:00:00.2", "2026-01-05T25:00:00"],
     "row 3, column ts: '2026-01-05T25:00:00' is not an ISO 8601 timestamp"),
    (["2026-01-05T10:00:00.1", "2026-01-05T10:00:00.2+02:00"],
     "row 2, column ts: '2026-01-05T10:00:00.2+02:00' is not an ISO 8601 timestamp"),
])
def test_a_bad_ts_is_named_with_its_row(tmp_path, rows, message):
    # Was: "column ts: Failed to parse string: '<a good ts of another row>'", no row.
    path = tmp_path / "t.csv"
    path.write_text(TRADES_HEADER + "".join(f"{ts},FAST,AAA,50.00,1\n" for ts in rows))
    with pytest.raises(ReplayDataError) as err:
        load_trades(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_iso_timestamps_alone_still_load(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TRADES_HEADER + "2026-01-05T10:00:00.000000001,FAST,AAA,50.00,1\n"
                    "2026-01-05T10:00:01,FAST,AAA,50.00,1\n")
    assert load_trades(path)["ts"].tolist() == [T0 + 1, T0 + S]


# ---------------------------------------------------------------- F3, L1, L4, L5: results

def partly_filled(m=None, **params):
    """Buy 10 lots with limit_ticks 0: 4 fill at 50.01, 6 stay unfilled; end mid 50.01.

    Arrival: bid 49.99 / ask 50.01, mid 50.00. The 50.03 level is beyond the limit.
    """
    m = m or quiet_market()
    add(m, "FAST", 1, BUY, 4999, 10)
    add(m, "FAST", 2, SELL, 5001, 4)
    add(m, "FAST", 3, SELL, 5003, 100)
    s = SweepStrategy(m, ParentOrder(1, "AAA", BUY, 10, m.now, m.now + 60 * S),
                      limit_ticks=0, **params)
    m.set_timer(s.parent.start_ns, s.start)
    m.set_timer(s.parent.end_ns, s.stop)
    m.run_until(m.now + 61 * S)
    assert s.filled == 4
    return BacktestResult(m.config, m, [s], 0.0)


def table_text(result):
    console = Console(record=True, width=250)
    console.print(result.summary_table())
    return console.export_text()


def cells(text, first):
    row = next(line for line in text.splitlines() if line.lstrip("│┃ ").startswith(first))
    return [c.strip() for c in re.split(r"[│┃]", row)[1:-1]]


def test_the_is_column_is_perolds_shortfall_and_the_filled_part_is_labelled_as_such():
    result = partly_filled()
    r = result.orders[0]
    # Filled part: 4 x (50.01 - 50.00) / 50.00 = 2 bps; Perold adds the fees
    # (4 x $0.0030) and the 6 unfilled at the end mid 50.01: over 10 x 50.00.
    assert r["shortfall_bps"] == pytest.approx(2.0)
    assert r["is_total_bps"] == pytest.approx((0.04 + 0.012 + 0.06) / 500 * 1e4)
    text = table_text(result)
    header = cells(text, "parent")
    row = dict(zip(header, cells(text, "#1")))
    total = dict(zip(header, cells(text, "total")))
    assert row["IS bps"] == f"{r['is_total_bps']:.2f}" == "2.24"
    assert total["IS bps"] == f"{result.totals['is_total_bps']:.2f}"
    assert row["vs arrival bps"] == "2.00" and "IS+fees" not in header


def test_the_console_total_line_is_the_total_implementation_shortfall(tmp_path, capsys):
    assert sim(tmp_path, "-s", "sweep", "-p", "limit_ticks=0") == 0
    out = capsys.readouterr().out
    totals = json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]
    line = next(x for x in out.splitlines() if x.startswith("implementation shortfall"))
    assert line.endswith(f" {totals['is_total_bps']:.2f} bps")
    part = next(x for x in out.splitlines() if x.startswith("filled part vs arrival"))
    assert f"({totals['shortfall_bps']:.2f} bps)" in part


def test_prices_and_money_are_exact_decimals_in_orders_and_summary(tmp_path):
    m = quiet_market()
    # Arrival mid 49.995 (as a float computation: 49.995000000000005).
    add(m, "FAST", 1, BUY, 4999, 10)
    add(m, "FAST", 2, SELL, 5000, 1)
    add(m, "FAST", 3, SELL, 5001, 2)
    s = SweepStrategy(m, ParentOrder(1, "AAA", BUY, 3, m.now, m.now + 60 * S))
    m.set_timer(s.parent.start_ns, s.start)
    m.run_until(m.now + 2 * S)
    assert s.done
    result = BacktestResult(m.config, m, [s], 0.0)
    r, t = result.orders[0], result.totals
    assert r["arrival_price"] == Decimal("49.995")
    assert r["avg_price"] == Decimal("50.00666667")      # 150.02 / 3, to 1e-6 of a tick
    assert r["fees"] == Decimal("0.009") and r["vwap"] == Decimal("50.00666667")
    assert t["shortfall"] == Decimal("0.035") and t["fees"] == Decimal("0.009")
    assert t["arrival_notional"] == Decimal("149.985")
    result.write(tmp_path, formats=("csv", "parquet"))
    csv = pacsv.read_csv(tmp_path / "orders.csv", convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("arrival_price", "avg_price", "vwap", "fees")}))
    row = csv.to_pylist()[0]
    assert (row["arrival_price"], row["avg_price"], row["vwap"], row["fees"]) == \
        ("49.995", "50.00666667", "50.00666667", "0.009")
    assert pq.read_table(tmp_path / "orders.parquet").schema.field("avg_price").type == pa.string()
    text = (tmp_path / "summary.json").read_text()
    for exact in ('"arrival_price": 49.995,', '"avg_price": 50.00666667,', '"fees": 0.009,',
                  '"shortfall": 0.035,', '"arrival_notional": 149.985,'):
        assert exact in text
    assert not re.search(r"\d\.\d*0000000\d|\d\.\d*9999999\d|[eE][+-]?\d", text)


def test_exact_decimal_is_exact_or_rounded_half_even_and_never_an_exponent():
    from fractions import Fraction

    from sim.backtest import exact_decimal
    from sim.fees import decimal_text
    assert str(exact_decimal(Fraction(1208052, 10000))) == "120.8052"
    assert decimal_text(exact_decimal(Fraction(5, 10**8))) == "0.00000005"
    assert str(exact_decimal(Fraction(3000))) == "3000"          # not 3E+3
    assert str(exact_decimal(Fraction(0), min_places=2)) == "0.00"
    assert str(exact_decimal(Fraction(5, 1), min_places=2)) == "5.00"
    assert str(exact_decimal(Fraction(1, 3), 4)) == "0.3333"
    assert str(exact_decimal(Fraction(5, 2 * 10**4), 4)) == "0.0002"   # half to even
    with pytest.raises(ValueError):
        exact_decimal(Fraction(1, 3))


def test_decimal_text_at_the_boundary_has_no_exponent():
    from ext.instrument import Instrument
    from sim.fees import decimal_text
    fine = Instrument("F", "0.00000001", "0.000001", None)
    assert decimal_text(units_to_currency(0, fine)) == "0"              # was "0E-14"
    assert decimal_text(units_to_currency(12, fine)) == "0.000000000000000012"
    assert decimal_text(price_x2_to_decimal(10, fine)) == "0.00000005"   # was "5E-8"
    assert decimal_text(Decimal("0.30")) == "0.30"


def test_fills_on_a_fine_grid_at_a_free_venue_write_plain_decimals(tmp_path):
    fine = {"instruments": [{"symbol": "AAA", "tick_size": "0.0001", "lot_size": "0.000001",
                             "price": "50.00"}],
            "venues": [{"name": "FREE"}], "flow": {"lp_qty": "1", "taker_qty": "1",
                                                  "qty_unit": "1", "dark_qty": "1"}}
    m = quiet_market(**fine)
    add(m, "FREE", 1, SELL, 500_000, 10)
    s = SweepStrategy(m, ParentOrder(1, "AAA", BUY, 3, m.now, m.now + 60 * S))
    m.set_timer(s.parent.start_ns, s.start)
    m.run_until(m.now + S)
    result = BacktestResult(m.config, m, [s], 0.0)
    assert result.fills["fee"] == ["0"] and result.fills["price"] == ["50.0000"]   # was 0E-10
    result.write(tmp_path, formats=("csv",))
    text = (tmp_path / "summary.json").read_text()
    assert '"fees": 0,' in text and "0.0000000000" not in text


def test_no_arrival_price_is_none_not_zero_and_measures_no_shortfall(tmp_path):
    m = quiet_market()
    # Nothing quoted when the parent starts: no arrival price. A bid comes
    # later and the retrying sweep sells 5 lots to it at 49.99.
    s = SweepStrategy(m, ParentOrder(1, "AAA", SELL, 5, m.now, m.now + 10 * S))
    m.set_timer(s.parent.start_ns, s.start)
    m.set_timer(s.parent.end_ns, s.stop)
    m.run_until(m.now + S // 2)
    add(m, "FAST", 1, BUY, 4999, 10)
    m.run_until(m.now + 11 * S)
    assert s.filled == 5
    result = BacktestResult(m.config, m, [s], 0.0)
    assert result.orders[0]["arrival_price"] is None                    # was 0.0
    assert cells(table_text(result), "#1")[5] == "-"
    # Was: the whole notional, -249.95, counted as shortfall against a price of 0.
    t = result.totals
    assert t["shortfall"] == 0 and t["arrival_notional"] == 0
    assert t["fees"] == Decimal("0.015") and math.isnan(t["fee_bps"])   # paid, not measured
    result.write(tmp_path, formats=("csv",))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["orders"][0]["arrival_price"] is None
    assert '"shortfall": 0,' in (tmp_path / "summary.json").read_text()


def test_time_to_fill_of_a_partly_filled_parent_is_to_its_last_fill():
    result = partly_filled()
    s = result.strategies[0]
    last = max(f.recv_ts for f in s.fills)
    # FAST answers in 100 us each way: the IOC's fill is back 200 us after the start.
    assert last - s.parent.start_ns == 200_000
    assert result.orders[0]["time_to_fill_s"] == 0.0002
    assert not math.isnan(result.orders[0]["time_to_fill_s"])
