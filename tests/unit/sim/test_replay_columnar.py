"""Columnar replay loading: memory per row, and the refusals and warnings added with it.

The feed keeps each file's rows as integer arrays (ticks, lots, book and
side codes) and reads them by index while it runs; the checks run a column
at a time and still name the first bad row, as the row-by-row reading did.
"""
import logging
import tracemalloc

import numpy as np
import pytest

from sim.market import Market
from sim.replay import ReplayDataError, ReplayFeed, TextColumn, load_quotes, load_trades
from tests.unit.sim.helpers import QUIET, config

S = 1_000_000_000
T0 = 1767607200000000000          # 2026-01-05 10:00:00, QUIET's session start
END = T0 + 600 * S                # QUIET's session end
QUOTES_HEADER = "ts,venue,symbol,bid_px,bid_qty,ask_px,ask_qty\n"
TRADES_HEADER = "ts,venue,symbol,price,qty,side\n"


def quotes_feed(path):
    return ReplayFeed(Market(config(QUIET), flow=False), quotes=load_quotes(path),
                      sources={"quotes": path})


# ---------------------------------------------------------------- memory

def test_a_loaded_feed_takes_a_few_tens_of_bytes_per_row(tmp_path):
    # The row-by-row feed kept a Python tuple of ints per row (over 150
    # bytes) after strings per cell while loading (about 530 in all).
    n = 200_000
    rng = np.random.default_rng(1)
    ts = T0 + np.sort(rng.integers(0, 60 * S, n))
    price = rng.integers(4990, 5010, n)
    path = tmp_path / "t.csv"
    with open(path, "w") as f:
        f.write(TRADES_HEADER)
        f.writelines(f"{t},FAST,AAA,{p // 100}.{p % 100:02d},{q},{'BS'[q % 2]}\n"
                     for t, p, q in zip(ts.tolist(), price.tolist(), (price % 7 + 1).tolist()))
    trades = load_trades(path)
    m = Market(config(QUIET), flow=False)
    tracemalloc.start()
    try:
        feed = ReplayFeed(m, trades=trades, sources={"trades": path})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert feed.n_trades == n
    assert feed.nbytes() / n < 40                 # ts 8, price 8, qty 8, book 4, side 1, kind 1
    assert peak / n < 160                         # the load's numpy temporaries included
    # The arrays are the file's values, exactly.
    feed.run_until(int(ts[0]))
    assert feed.pos >= 1


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("bid,ask", [("50.01", "50.00"), ("50.00", "50.00")])
def test_a_crossed_or_locked_quote_row_is_refused(tmp_path, bid, ask):
    # Was accepted: the ask traded the bid away by self-trade prevention.
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,49.99,1,50.01,1\n"
                    f"{T0 + 1},FAST,AAA,{bid},3,{ask},4\n")
    with pytest.raises(ReplayDataError) as err:
        quotes_feed(path)
    assert str(err.value) == (f"replay.quotes: {path}: row 2, column bid_px: bid {bid} is not "
                              f"below the ask {ask} of the same row: a crossed or locked quote")


def test_a_one_sided_quote_is_not_crossed(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,50.02,1,50.01,0\n"
                    f"{T0 + 1},FAST,AAA,50.02,0,50.01,4\n{T0 + 2},BPS,AAA,50.02,1,50.01,1\n")
    # Rows of different venues may cross each other: only the third row's own sides are.
    with pytest.raises(ReplayDataError, match="row 3, column bid_px"):
        quotes_feed(path)
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,50.02,1,50.01,0\n"
                    f"{T0 + 1},BPS,AAA,50.00,1,50.01,4\n")
    assert quotes_feed(path).n_quotes == 2


def test_the_first_bad_row_is_named_whatever_the_column(tmp_path):
    # Checked a column at a time, reported as read row by row: the lowest
    # row, and in it the column checked first (side, qty, then price).
    path = tmp_path / "t.csv"
    path.write_text(TRADES_HEADER + f"{T0},FAST,AAA,50.00,1,B\n{T0},FAST,AAA,50.001,1,B\n"
                    f"{T0},FAST,AAA,50.00,-1,X\n")
    m = Market(config(QUIET), flow=False)
    with pytest.raises(ReplayDataError, match=r"row 2, column price: price '50.001' is not a "
                                              r"multiple of 0.01"):
        ReplayFeed(m, trades=load_trades(path), sources={"trades": path})
    path.write_text(TRADES_HEADER + f"{T0},FAST,AAA,50.001,0,X\n")
    with pytest.raises(ReplayDataError, match=r"row 1, column side: side 'X'"):
        ReplayFeed(m, trades=load_trades(path), sources={"trades": path})
    path.write_text(TRADES_HEADER + f"{T0},FAST,AAA,50.001,0,B\n")
    with pytest.raises(ReplayDataError, match=r"row 1, column qty: a trade needs a positive"):
        ReplayFeed(m, trades=load_trades(path), sources={"trades": path})


def test_a_short_csv_row_is_named_with_the_file_and_row(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,49.99,1,50.01,1\n{T0 + 1},FAST,AAA,49.99,1\n")
    with pytest.raises(ReplayDataError) as err:
        load_quotes(path)
    assert str(err.value).startswith(f"{path}: row 2: CSV parse error: Expected 7 columns, got 5")


def test_a_float_ts_is_named_with_the_file_and_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TRADES_HEADER + f"{T0},FAST,AAA,50.00,1,B\n{T0}.5,FAST,AAA,50.00,1,B\n")
    with pytest.raises(ReplayDataError) as err:
        load_trades(path)
    assert str(err.value).startswith(f"{path}: row 2: '{T0}.5' is a floating-point number; "
                                     "column ts must be int64 ns since the epoch or a timestamp")


# ---------------------------------------------------------------- warnings

def test_rows_out_of_order_or_outside_the_session_are_replayed_with_one_warning(tmp_path, caplog):
    path = tmp_path / "q.csv"
    rows = [T0 - 2 * S, T0 + 3, T0 + 1, T0 + 2, T0 + 5, END + 1, END + 2]
    path.write_text(QUOTES_HEADER + "".join(f"{t},FAST,AAA,49.99,{k + 1},50.01,1\n"
                                            for k, t in enumerate(rows)))
    cfg = config(QUIET, replay={"quotes": str(path)})
    m = Market(cfg, flow=False)
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        feed = ReplayFeed.from_config(cfg, m)
    assert [r.getMessage() for r in caplog.records] == [
        f"replay.quotes: {path}: 2 rows out of time order, sorted; 1 row before the clock "
        "start (session.start less the warm-up), applied at it; 2 rows after its end, dropped "
        "(unless the run drains past the end)"]
    feed.run_until(T0 + 2)
    assert m.bbo("FAST", "AAA") == (4999, 4, 5001, 1)      # sorted: row 4 (ts T0 + 2) last
    caplog.clear()
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,49.99,1,50.01,1\n")
    with caplog.at_level(logging.WARNING, logger="sim.replay"):
        ReplayFeed.from_config(cfg, Market(cfg, flow=False))
    assert not caplog.records


# ---------------------------------------------------------------- loaded columns

def test_loaded_text_columns_read_like_lists(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0},FAST,AAA,49.99,1,,\n{T0 + 1},FAST,NA,0,1,50.01,1\n")
    q = load_quotes(path)
    assert isinstance(q["venue"], TextColumn)
    assert q["ask_px"][0] is None and q["symbol"][1] == "NA"
    assert list(q["bid_px"]) == ["49.99", "0"] and q["bid_px"] == ["49.99", "0"]
    assert "50.01" in q["ask_px"] and q["ask_qty"][:1] == [None]
