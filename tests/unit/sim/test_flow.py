"""Synthetic background flow: seeded, time-ordered, bounded, within hours."""
from dataclasses import replace

import numpy as np
import pytest

from ext.book import OP_ADD, OP_CANCEL
from ext.types import OrdType, TimeInForce
from sim.flow import LP_ACCOUNT, TAKER_ACCOUNT
from sim.market import Market
from tests.unit.sim.helpers import SMALL, config

FLOW = {"lp_rate": 400.0, "cancel_rate": 100.0, "taker_rate": 50.0, "max_orders": 60,
        "dark_rate": 5.0, "dark_taker_rate": 5.0, "chunk_events": 4096}


def chunks(seed: int, **sections):
    cfg = config(SMALL, flow=FLOW, **sections)
    m = Market(cfg.with_overrides(session=replace(cfg.session, seed=seed)))
    out = []
    while (c := m.flow.next_chunk()) is not None:
        out.append(c)
    return m, out


def test_same_seed_same_operations_and_another_seed_differs():
    _, a = chunks(11)
    _, b = chunks(11)
    _, c = chunks(12)
    assert len(a) > 3
    assert [x.tobytes() + y.tobytes() for x, y in a] == [x.tobytes() + y.tobytes() for x, y in b]
    assert [x.tobytes() for x, _ in a] != [x.tobytes() for x, _ in c]


def test_operations_are_time_ordered_and_inside_the_session():
    m, out = chunks(3)
    ops = np.concatenate([o for o, _ in out])
    books = np.concatenate([b for _, b in out])
    assert np.all(np.diff(ops["ts"]) >= 0)
    assert ops["ts"][0] >= m.clock_start and ops["ts"][-1] < m.session_end
    assert books.min() >= 0 and books.max() < m.loop.n_books
    # Lit takers are market orders; LP orders rest; accounts as documented.
    lit = ~np.isin(books, [m.book_index("POOL", "AAA")])
    takes = lit & (ops["op"] == OP_ADD) & (ops["tif"] == TimeInForce.IOC)
    assert np.all(ops["ord_type"][takes] == OrdType.MARKET)
    assert np.all(ops["account"][takes] == TAKER_ACCOUNT)
    rests = lit & (ops["op"] == OP_ADD) & (ops["tif"] == TimeInForce.GTC)
    assert np.all(ops["account"][rests] == LP_ACCOUNT) and np.all(ops["price"][rests] > 0)
    # Every cancel names an order added earlier in the same book.
    seen = set()
    for op, book, oid in zip(ops["op"].tolist(), books.tolist(), ops["order_id"].tolist()):
        if op == OP_ADD:
            seen.add((book, oid))
        else:
            assert op == OP_CANCEL and (book, oid) in seen


def test_rates_match_the_configuration():
    m, out = chunks(5)
    ops = np.concatenate([o for o, _ in out])
    books = np.concatenate([b for _, b in out])
    span = (m.session_end - m.clock_start) / 1e9
    fast = books == m.book_index("FAST", "AAA")
    takes = int((fast & (ops["tif"] == TimeInForce.IOC)).sum())
    expected = FLOW["taker_rate"] * span
    assert abs(takes - expected) < 5 * expected ** 0.5


def test_books_stay_bounded_by_max_orders():
    cfg = config(SMALL, flow=FLOW)
    m = Market(cfg)
    m.run_until(m.session_end)
    for venue in ("FAST", "BPS", "INV"):
        n = len(m.loop.book(m.book_index(venue, "AAA")))
        assert 0 < n <= FLOW["max_orders"]
    pool = m.book_index("POOL", "AAA")
    parked, _ = m.loop.dark_waiting(pool)
    assert len(m.loop.book(pool)) + parked <= cfg.flow.dark_max_orders


def test_no_flow_outside_a_venue_s_hours():
    venues = [dict(v) for v in SMALL["venues"]]
    venues[1] = {**venues[1], "hours": ["10:01:00", "16:00:00"]}
    m, out = chunks(9, venues=venues)
    ops = np.concatenate([o for o, _ in out])
    books = np.concatenate([b for _, b in out])
    late = books == m.book_index("BPS", "AAA")
    assert late.any()
    assert ops["ts"][late].min() >= m.config.session.at("10:01:00")


def test_quotes_follow_the_reference_price():
    cfg = config(SMALL, flow=FLOW)
    m = Market(cfg)
    m.run_until(m.session_start)
    ref = m.flow.reference(0)
    bid, ask = m.nbbo("AAA")
    assert bid < ask
    assert bid - 3 <= ref <= ask + 3


@pytest.mark.parametrize("model", ["gbm", "random_walk"])
def test_price_models_move_and_stay_positive(model):
    inst = dict(SMALL["instruments"][0], model=model, volatility=2.0)
    m, _ = chunks(4, instruments=[inst])
    ref = m.flow.reference(0)
    assert ref > 0 and ref != 5000.0


def test_a_non_finite_rate_built_around_the_config_check_is_refused_not_run_forever():
    cfg = config(SMALL, flow=FLOW)
    for bad in (float("inf"), float("nan")):
        # FlowConfig is a plain dataclass: a program can set what a file cannot.
        broken = cfg.with_overrides(flow=replace(cfg.flow, lp_rate=bad))
        with pytest.raises(ValueError, match="flow rates must be finite"):
            Market(broken)
