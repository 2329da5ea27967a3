"""Historical replay: the shipped sample loads (CSV and Parquet) and drives the venues."""
import numpy as np
import pytest

from ext.simloop import Liquidity, ReportKind as K
from sim.backtest import Backtest
from sim.config import load_config
from sim.market import Market
from sim.replay import DATA_DIR, ReplayFeed, load_quotes, load_trades, write_tables
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
