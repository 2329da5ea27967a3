"""A backtest is a function of its configuration and seed, on either book."""
from dataclasses import replace

from sim.backtest import Backtest
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import SMALL, config


def fills_bytes(result, tmp_path, name):
    paths = result.write(tmp_path / name, formats=("csv", "parquet"))
    return {p.name: p.read_bytes() for p in paths if p.name.startswith("fills")}


def test_same_seed_gives_byte_identical_fills_and_another_seed_differs(tmp_path):
    cfg = config(SMALL)
    a = Backtest(cfg, seed=7).run()
    b = Backtest(cfg, seed=7).run()
    c = Backtest(cfg, seed=8).run()
    assert len(a.fills["child_id"]) > 10
    assert fills_bytes(a, tmp_path, "a") == fills_bytes(b, tmp_path, "b")
    assert a.fills == b.fills and a.orders == b.orders
    assert a.fills["price_x2"] != c.fills["price_x2"] or a.fills["venue_ts"] != c.fills["venue_ts"]


def test_reference_book_gives_the_same_backtest():
    cfg = config(SMALL)
    short = cfg.with_overrides(
        session=replace(cfg.session, end="10:00:40", warmup="2s"),
        parents=(replace(cfg.parents[0], duration="30s"),))
    fast = Backtest(short, seed=3).run()
    slow = Backtest(short, seed=3, book_class=ReferenceBook).run()
    assert fast.fills == slow.fills and fast.events == slow.events
    assert fast.fills["child_id"]
