"""Historical replay: the shipped sample loads (CSV and Parquet) and drives the venues."""
import dataclasses

import numpy as np
import pytest

from ext.simloop import Liquidity, ReportKind as K
from sim.backtest import Backtest
from sim.config import load_config
from sim.market import Market
from sim.replay import (
    DATA_DIR, ReplayDataError, ReplayFeed, load_quotes, load_trades, write_tables,
)
from tests.unit.sim.helpers import BUY, GTC, LIMIT, Recorder

REPLAY = "sim/configs/replay.toml"


@pytest.fixture(scope="module")
def sample():
    return (load_quotes(DATA_DIR / "sample_quotes.csv"), load_trades(DATA_DIR / "sample_trades.csv"))


def test_shipped_sample_loads_the_same_from_csv_and_parquet(sample):
    q_csv, t_csv = sample
    q_pq = load_quotes(DATA_DIR / "sample_quotes.parquet")
    t_pq = load_trades(DATA_DIR / "sample_trades.parquet")
    assert len(q_csv["ts"]) > 1000 and len(t_csv["ts"]) > 500
    for a, b in ((q_csv, q_pq), (t_csv, t_pq)):
        assert np.array_equal(a["ts"], b["ts"])
        assert {k: v for k, v in a.items() if k != "ts"} == {k: v for k, v in b.items() if k != "ts"}
    assert set(q_csv["venue"]) == {"NEXA", "BRIX", "COVE"} and set(q_csv["symbol"]) == {"AAA"}
    assert q_csv["bid_px"][0].count(".") == 1           # decimal text, not floats
    assert set(t_csv["side"]) <= {"B", "S"}


def test_quote_replay_reproduces_every_recorded_top_of_book(sample):
    quotes, _ = sample
    cfg = load_config(REPLAY)
    m = Market(cfg)
    feed = ReplayFeed(m, quotes=quotes)
    ts = quotes["ts"]
    checked = 0
    for k in range(0, len(ts) - 1, 7):
        if ts[k + 1] == ts[k]:
            continue
        feed.run_until(int(ts[k]))
        px = [int(m.instrument("AAA").price_to_ticks(quotes[c][k])) if quotes[c][k] else 0
              for c in ("bid_px", "ask_px")]
        qty = [int(quotes[c][k]) if quotes[c][k] else 0 for c in ("bid_qty", "ask_qty")]
        assert m.bbo(quotes["venue"][k], "AAA") == (px[0], qty[0], px[1], qty[1])
        checked += 1
    assert checked > 100


def test_replayed_trades_fill_a_strategy_order_only_when_it_is_ahead(tmp_path):
    t0 = load_config(REPLAY).session.start_ns
    quotes = {"ts": [t0 + 1_000, t0 + 5_000_000], "venue": ["NEXA", "NEXA"],
              "symbol": ["AAA", "AAA"], "bid_px": ["50.00", "50.00"], "bid_qty": ["500", "300"],
              "ask_px": ["50.01", "50.01"], "ask_qty": ["400", "400"]}
    trades = {"ts": [t0 + 4_000_000, t0 + 6_000_000, t0 + 7_000_000],
              "venue": ["NEXA"] * 3, "symbol": ["AAA"] * 3, "price": ["50.00"] * 3,
              "qty": ["200", "350", "100"], "side": ["S", "", "S"]}
    paths = write_tables(quotes, trades, tmp_path, stem="mini")
    assert len(paths) == 4
    m = Market(load_config(REPLAY))
    feed = ReplayFeed(m, load_quotes(tmp_path / "mini_quotes.parquet"),
                      load_trades(tmp_path / "mini_trades.csv"))
    feed.run_until(t0 + 1_000_000)
    rec = Recorder()
    m.submit("NEXA", "AAA", BUY, 100, 5000, LIMIT, GTC, on_report=rec)   # behind the 500
    feed.run_until(t0 + 4_500_000)
    # 200 traded: from the 500 that were there first.
    assert rec.kinds() == [K.RPT_ACCEPTED]
    assert m.bbo("NEXA", "AAA")[:2] == (5000, 400)
    # The quote shows 300 left (the replay's own 300 stay ahead of us);
    # 350 traded at the bid (side inferred): 300 of them, then 50 of ours.
    feed.run_until(t0 + 6_500_000)
    fills = [r for r in rec.reports if r.kind == K.RPT_FILL]
    assert [(f.last_qty, f.leaves_qty, f.liquidity) for f in fills] == [
        (50, 50, Liquidity.LIQ_MAKER)]
    feed.run_until(t0 + 8_000_000)
    fills = [r for r in rec.reports if r.kind == K.RPT_FILL]
    assert [(f.last_qty, f.leaves_qty) for f in fills] == [(50, 50), (50, 0)]
    assert feed.done and feed.n_quotes == 2 and feed.n_trades == 3


def test_unknown_venue_in_a_file_is_an_error(tmp_path):
    m = Market(load_config(REPLAY))
    with pytest.raises(ValueError, match="no venue 'XNAS'"):
        ReplayFeed(m, quotes={"ts": [1], "venue": ["XNAS"], "symbol": ["AAA"], "bid_px": ["1"],
                              "bid_qty": ["1"], "ask_px": ["2"], "ask_qty": ["1"]})
    ReplayFeed(m, quotes={"ts": [1], "venue": ["XNAS"], "symbol": ["AAA"], "bid_px": ["1"],
                          "bid_qty": ["1"], "ask_px": ["2"], "ask_qty": ["1"]},
               venue_map={"XNAS": "NEXA"})
    (tmp_path / "bad.csv").write_text("ts,venue\n1,NEXA\n")
    with pytest.raises(ValueError, match="missing column"):
        load_quotes(tmp_path / "bad.csv")


def test_backtest_on_the_shipped_replay_fills_its_parent():
    result = Backtest(REPLAY, strategy="sweep").run()
    order = result.orders[0]
    assert order["filled"] == order["qty"] == 3000
    assert result.events > 100          # rows replayed up to the end of the sweep
    assert set(result.fills["venue"]) <= {"NEXA", "BRIX", "COVE"}


# ---------------------------------------------------------------- malformed files

QUOTES_HEADER = "ts,venue,symbol,bid_px,bid_qty,ask_px,ask_qty\n"
T0 = 1767607200000000000          # 2026-01-05 10:00:00, the replay session's start


def test_an_empty_ts_is_refused_naming_file_row_and_column(tmp_path):
    # With a null in it, pyarrow hands the column to numpy as float64: the empty
    # cell became INT64_MIN and every other ts was rounded by up to 256 ns.
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + f"{T0 + 1},NEXA,AAA,50.00,1,50.01,1\n"
                    ",NEXA,AAA,50.00,2,50.01,1\n")
    with pytest.raises(ReplayDataError, match=r"q.csv: row 2, column ts: empty"):
        load_quotes(path)
    path.write_text(QUOTES_HEADER + f"{T0 + 1},NEXA,AAA,50.00,1,50.01,1\n")
    assert load_quotes(path)["ts"].tolist() == [T0 + 1]          # exact, not rounded


@pytest.mark.parametrize("text,message", [
    ("", r"Empty CSV file"),
    (QUOTES_HEADER, r"no data rows"),
])
def test_an_empty_file_is_refused(tmp_path, text, message):
    (tmp_path / "q.csv").write_text(text)
    with pytest.raises(ReplayDataError, match=message):
        load_quotes(tmp_path / "q.csv")


def test_a_zero_quote_price_in_any_notation_is_an_empty_side():
    m = Market(load_config(REPLAY))
    feed = ReplayFeed(m, quotes={"ts": [T0], "venue": ["NEXA"], "symbol": ["AAA"],
                                 "bid_px": ["0.00"], "bid_qty": ["0"], "ask_px": ["49.98"],
                                 "ask_qty": ["100"]})
    feed.run_until(T0)
    assert m.bbo("NEXA", "AAA") == (0, 0, 4998, 100)


def trades(**column):
    data = {"ts": [T0, T0 + 1], "venue": ["NEXA"] * 2, "symbol": ["AAA"] * 2,
            "price": ["50.00"] * 2, "qty": ["100"] * 2, "side": ["B", "S"]}
    for name, value in column.items():
        data[name] = [data[name][0], value]
    return data


@pytest.mark.parametrize("column,value,message", [
    ("side", "X", r"replay trades: row 2, column side: side 'X' is not B/buy or S/sell"),
    ("qty", "abc", r"row 2, column qty: 'abc' is not a decimal number"),
    ("qty", None, r"row 2, column qty: a trade needs a positive quantity"),
    ("price", None, r"row 2, column price: empty"),
    ("price", "0.00", r"row 2, column price: '0.00': must be positive"),
    ("price", "50.001", r"row 2, column price: .*multiple of 0.01"),
    ("venue", None, r"row 2, column venue: empty"),
])
def test_a_malformed_trade_row_is_refused(column, value, message):
    m = Market(load_config(REPLAY))
    ReplayFeed(m, trades=trades())
    with pytest.raises(ReplayDataError, match=message):
        ReplayFeed(m, trades=trades(**{column: value}))


def test_a_backtest_on_replay_data_outside_the_session_is_refused(tmp_path):
    day = 86_400 * 10**9
    rows = (DATA_DIR / "sample_quotes.csv").read_text().splitlines()
    shifted = [rows[0]] + [f"{int(r.split(',', 1)[0]) + day},{r.split(',', 1)[1]}"
                           for r in rows[1:]]
    (tmp_path / "q.csv").write_text("\n".join(shifted) + "\n")
    cfg = load_config(REPLAY)
    cfg = cfg.with_overrides(replay=dataclasses.replace(cfg.replay, quotes=str(tmp_path / "q.csv")))
    with pytest.raises(ReplayDataError, match=r"replay.quotes: .*q.csv: no row falls in the "
                                              r"session .* the rows span 2026-01-06"):
        Backtest(cfg).run()


# ---------------------------------------------------------------- CSV read in blocks

def _feed_arrays(feed):
    """Everything a feed replays: the event order and each kind's arrays."""
    parts = [feed._kind]
    for part in (feed._q, feed._t, feed._g, feed._d):
        parts.extend(part or ())
    return parts


def test_a_csv_streamed_in_blocks_replays_the_same_events(monkeypatch):
    """The loaders read a whole CSV with read_csv, whose peak is about four times the
    table (review): the file is streamed in CSV_BLOCK_SIZE blocks, and what is replayed
    is the same whether it takes one block or many."""
    import pyarrow.csv as pacsv
    import sim.replay
    cfg = load_config(REPLAY)
    whole = ReplayFeed.from_config(cfg, Market(cfg))
    assert (DATA_DIR / "sample_quotes.csv").stat().st_size > 40 * 4096
    monkeypatch.setattr(sim.replay, "CSV_BLOCK_SIZE", 4096)
    batches = []
    real_open = pacsv.open_csv

    def counting_open(*args, **kwargs):
        reader = real_open(*args, **kwargs)
        batches.append(reader)
        return reader
    monkeypatch.setattr(pacsv, "open_csv", counting_open)

    def no_read_csv(*args, **kwargs):
        raise AssertionError("a file that converts block by block is not read whole")
    monkeypatch.setattr(pacsv, "read_csv", no_read_csv)
    blocks = ReplayFeed.from_config(cfg, Market(cfg))
    assert len(batches) == 2                                    # quotes and trades, streamed
    a, b = _feed_arrays(whole), _feed_arrays(blocks)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert blocks.n_events == whole.n_events > 1000
    # and the books they leave, replayed to the end
    markets = []
    for feed_cfg in (whole, blocks):
        feed_cfg.run_until(cfg.session.end_ns)
        markets.append([feed_cfg.market.bbo(v, "AAA") for v in ("NEXA", "BRIX", "COVE")])
    assert markets[0] == markets[1]


@pytest.mark.parametrize("late_ts,message", [
    ("1767607200000000900.5", r"row 300: '1767607200000000900.5' is a floating-point number"),
    ("2026-01-05T10:00:00.000000900", r"row 300, column ts: '2026-01-05T10:00:00.000000900' is "
                                      r"not an integer"),
])
def test_a_later_block_that_does_not_convert_is_read_as_a_whole_file_is(tmp_path, monkeypatch,
                                                                        late_ts, message):
    """A ts column of integers with a float or a timestamp far down: streaming takes the
    column's type from the first block and cannot convert the later one; the file is then
    read whole, and the error names the row as it always did."""
    import sim.replay
    monkeypatch.setattr(sim.replay, "CSV_BLOCK_SIZE", 1024)
    rows = [f"{T0 + k},NEXA,AAA,50.00,1,50.01,1\n" for k in range(299)]
    path = tmp_path / "q.csv"
    path.write_text(QUOTES_HEADER + "".join(rows) + f"{late_ts},NEXA,AAA,50.00,1,50.01,1\n")
    with pytest.raises(ReplayDataError, match=message):
        load_quotes(path)
    # An extra column whose type changes in a later block: read whole, loaded as before.
    path.write_text(QUOTES_HEADER.rstrip("\n") + ",note\n"
                    + "".join(r.rstrip("\n") + ",7\n" for r in rows)
                    + f"{T0 + 299},NEXA,AAA,50.00,1,50.01,1,text\n")
    loaded = load_quotes(path)
    assert loaded["ts"].tolist() == [T0 + k for k in range(300)]
