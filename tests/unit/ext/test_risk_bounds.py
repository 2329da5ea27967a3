"""Risk's quantity and price bounds, and its sums at the int64 bound.

Risk takes quantities of 1 to ``MAX_QTY`` lots and prices of 1 to
``MAX_PRICE`` ticks, the router's bounds (one definition, ``ext/types.pxd``):
an order, a replace or a fill outside them is refused and changes nothing. The
sums that fills and working orders build up cannot wrap: a position saturates
at +-INT64_MAX lots, money at the int64 range, and an order whose lots would
take its side's working quantity past int64 is refused. Each test runs on the
Cython core and on the reference model (which clamps where the core saturates);
the property test holds the two to each other near the bounds.
"""
import collections
import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ext.risk
import ext.router
from ext.risk import MAX_PRICE, MAX_QTY, RiskEngine, RiskFlag
from ext.types import OrdType, RejectReason as R, Side
from tests.reference.risk_reference import AccountState, Cell, RiskReference
from tests.unit.ext.test_risk import BASE, Harness, merged

BUY, SELL, SHORT = Side.BUY, Side.SELL, Side.SELL_SHORT
LIMIT, MARKET = OrdType.LIMIT, OrdType.MARKET
LOCATE = RiskFlag.FLAG_LOCATE
INT64_MAX = 2**63 - 1
INT64_MIN = -2**63
RICH = {"accounts": {"A1": {"cash": "100000000000000000000", "allow_short": True}}}


@pytest.fixture(params=["cython", "reference"])
def make(request):
    cls = RiskEngine if request.param == "cython" else RiskReference

    def build(changes=None):
        return Harness(cls, merged(BASE, merged(RICH, changes or {})))
    return build


def load_cell(engine, account, instrument, position, cost, open_buy=0, open_sell=0):
    """Put a cell in a state too far out to reach by calls in a test (the core by
    ``restore``), with its short basis as a fill would have left it."""
    basis = cost if position < 0 else 0
    if isinstance(engine, RiskEngine):
        snap = engine.snapshot()
        snap["cells"] = [row for row in snap["cells"] if row[:2] != [account, instrument]]
        snap["cells"].append([account, instrument, position, open_buy, open_sell, cost, 0])
        snap["account_state"][account][2] += basis
        engine.restore(snap)
    else:
        engine.cells[(account, instrument)] = Cell(position, open_buy, open_sell, cost)
        engine.acct.setdefault(account, AccountState()).short_basis += basis


def everything(h):
    """Every piece of state a refused call must leave alone."""
    e = h.engine
    return ([e.exposure(a, i) for a in range(2) for i in range(2)],
            [e.account_state(a) for a in range(2)],
            [e.working_order(k) for k in range(1, h.key + 1)])


def test_one_definition_of_the_bounds():
    assert ext.risk.MAX_QTY == ext.router.MAX_QTY == 2**40
    assert ext.risk.MAX_PRICE == ext.router.MAX_PRICE == 2**40


@pytest.mark.parametrize("qty, price, reason", [
    (MAX_QTY + 1, 10000, R.INVALID_QTY), (2**62, 10000, R.INVALID_QTY), (INT64_MAX, 1, R.INVALID_QTY),
    (0, 10000, R.INVALID_QTY), (1, MAX_PRICE + 1, R.INVALID_PRICE), (1, INT64_MAX, R.INVALID_PRICE),
])
def test_a_fill_outside_the_bounds_is_refused_and_changes_nothing(make, qty, price, reason):
    h = make()
    assert h.new(qty=10) == 0
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    before = everything(h)
    assert e.on_fill(h.key, qty, price) == reason
    assert e.on_fill_done(a, i, BUY, qty, price) == reason
    assert everything(h) == before


def test_a_fill_at_the_bounds_is_booked(make):
    h = make()
    assert h.new(qty=10) == 0
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    assert e.on_fill(h.key, MAX_QTY, MAX_PRICE) == 0               # an overfill, booked in full
    assert e.on_fill_done(a, i, BUY, MAX_QTY, MAX_PRICE) == 0
    assert h.exposure()["position"] == 2 * MAX_QTY
    assert h.exposure()["cost"] == INT64_MAX                        # 2^82 money units: saturated


def test_an_order_outside_the_bounds_is_refused(make):
    h = make()
    assert h.new(qty=MAX_QTY + 1, price=1) == R.INVALID_QTY
    assert h.engine.last_reject()["limit"] == MAX_QTY
    if h.cython:
        assert "quantity must be positive and at most 1099511627776 (1099511627776 lots)" in h.text()
    assert h.new(qty=1, price=MAX_PRICE + 1) == R.INVALID_PRICE
    assert h.engine.last_reject()["limit"] == MAX_PRICE
    if h.cython:
        assert "price must be positive and at most 1099511627776 ticks" in h.text()
    assert h.exposure()["open_buy"] == 0
    assert h.new(qty=MAX_QTY, price=1) == 0                         # the bound itself passes
    assert h.new(qty=1, price=MAX_PRICE) == 0
    assert h.exposure()["open_buy"] == MAX_QTY + 1


def test_a_replace_outside_the_bounds_is_refused_and_changes_nothing(make):
    h = make()
    assert h.new(qty=10) == 0
    k = h.key
    assert h.fill_last(3, 10000) == 0
    before = everything(h)
    assert h.engine.on_replace(k, MAX_QTY + 1, 10000, 9001, 1) == R.INVALID_QTY
    assert h.engine.on_replace(k, 20, MAX_PRICE + 1, 9002, 1) == R.INVALID_PRICE
    # new_qty - cum would wrap to a huge positive leaves: not above what filled
    assert h.engine.on_replace(k, INT64_MIN + 1, 10000, 9003, 1) == R.REPLACE_QTY_NOT_ABOVE_FILLED
    assert everything(h) == before
    assert h.engine.on_replace(k, MAX_QTY, 10000, 9004, 1) == 0
    assert h.engine.working_order(k)["leaves"] == MAX_QTY - 3


def test_a_position_saturates_at_the_int64_bound(make):
    h = make()
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    load_cell(e, a, i, INT64_MAX - 5, 10**15)
    assert e.on_fill_done(a, i, BUY, MAX_QTY, 1) == 0
    assert h.exposure()["position"] == INT64_MAX                    # not wrapped to a short
    assert e.on_fill_done(a, i, SELL, 1, 1) == 0
    assert h.exposure()["position"] == INT64_MAX - 1
    # Short: held at -INT64_MAX, whose size is an int64 (a later close needs it).
    load_cell(e, a, i, -(INT64_MAX - 5), 10**15)
    assert e.on_fill_done(a, i, SHORT, MAX_QTY, 1) == 0
    assert h.exposure()["position"] == -INT64_MAX
    assert e.on_fill_done(a, i, BUY, 7, 1) == 0
    assert h.exposure()["position"] == -INT64_MAX + 7
    assert 0 <= h.exposure()["cost"] <= 10**15 + MAX_QTY * 100


def test_working_lots_past_int64_are_refused_not_wrapped(make):
    # A short position lets the worst-case net position of a buy stay small
    # while the working buys already sum to nearly int64's bound.
    h = make()
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    load_cell(e, a, i, -(INT64_MAX - 10), 100, open_buy=INT64_MAX - 10)
    assert h.new(BUY, qty=11, price=1) == R.MAX_NET_POSITION
    assert e.last_reject()["value"] == INT64_MAX
    if h.cython:
        assert "too large to represent" in h.text()
    assert h.exposure()["open_buy"] == INT64_MAX - 10
    assert h.new(BUY, qty=10, price=1) == 0                         # exactly to the bound
    assert h.exposure()["open_buy"] == INT64_MAX


def test_a_saturated_loss_is_still_over_the_daily_loss_limit(make):
    h = make({"accounts": {"A1": {"max_daily_loss": "1000"}}})
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    for _ in range(2):      # bought at the top (cost saturates), sold at 1 tick
        assert e.on_fill_done(a, i, BUY, MAX_QTY, MAX_PRICE) == 0
        assert e.on_fill_done(a, i, SELL, MAX_QTY, 1) == 0
    # Held at -INT64_MAX, not INT64_MIN, whose negation wrapped to a gain that passed.
    assert h.money()["realized_pnl"] == -INT64_MAX
    assert h.new(qty=1) == R.DAILY_LOSS_LIMIT


def test_two_to_the_24_overfills_of_max_qty_do_not_wrap():
    """The carried defect: 2^24 fills of 2^40 lots sum to 2^64, which wrapped to 0."""
    e = RiskEngine(merged(BASE, RICH))
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    collections.deque(itertools.starmap(e.on_fill_done, itertools.repeat((a, i, BUY, MAX_QTY, 1), 2**24)), 0)
    assert e.exposure(a, i)["position"] == INT64_MAX
    assert e.exposure(a, i)["cost"] == INT64_MAX
    money = e.account_state(a)
    assert money["traded_notional"] == INT64_MAX and money["cash_flow"] == INT64_MIN


# ---------------------------------------------------------------- property
CONFIG = merged(BASE, {
    "firm": {"money_unit": "0.01"},
    # mult 1 and 100: products pass int64 at the bounds either way
    "instruments": {"AAPL": {"tick_size": "0.01", "lot_size": "1"},
                    "MSFT": {"tick_size": "1", "lot_size": "1"}},
    "accounts": {"A1": {"cash": "100000000000000000000", "allow_short": True},
                 "A2": {"cash": "1000000000", "allow_short": True, "max_net_position": 2**50,
                        "max_daily_loss": "1000000"}},
})
NEAR = INT64_MAX - 3 * MAX_QTY
QTYS = [1, 7, MAX_QTY - 1, MAX_QTY, MAX_QTY + 1, 2**62, 0, -1]
PRICES = [1, 100, MAX_PRICE - 1, MAX_PRICE, MAX_PRICE + 1, 0]


def bound_ops(rng, n):
    """``n`` calls near the bounds: orders, fills, overfills of let-go orders, replaces."""
    out = []
    for _ in range(n):
        roll = rng.random()
        qty, price = rng.choice(QTYS), rng.choice(PRICES)
        cell = (rng.randint(0, 1), rng.randint(0, 1))
        if roll < 0.3:
            out.append(("new", *cell, rng.choice([BUY, SELL, SHORT]), rng.choice([LIMIT, MARKET]), qty, price))
        elif roll < 0.55:
            out.append(("fill", rng.randint(0, 5), qty, price))
        elif roll < 0.8:
            out.append(("done", *cell, rng.choice([BUY, SELL, SHORT]), qty, price))
        elif roll < 0.9:
            out.append(("replace", rng.randint(0, 5), qty, price))
        elif roll < 0.95:
            out.append(("cancel", rng.randint(0, 5)))
        else:
            out.append(("ref", cell[1], rng.choice([1, 100, MAX_PRICE])))
    return out


def start_engines(positions):
    engines = RiskEngine(CONFIG), RiskReference(CONFIG)
    for e in engines:
        e.session_index("S1")
        for i in range(2):
            e.set_reference_price(i, 100, 0)
        for (a, i), position in zip(((0, 0), (0, 1), (1, 0), (1, 1)), positions):
            if position:
                load_cell(e, a, i, position, abs(position) // 1000)
    return engines


def pick(engine, keys, n):
    """The working order an op names by position (-1: none works)."""
    working = [k for k in keys if engine.working_order(k) is not None]
    return working[n % len(working)] if working else -1


def call(engine, op, key, keys):
    kind = op[0]
    if kind == "new":
        _, a, i, side, ord_type, qty, price = op
        keys.append(key)
        result = engine.check_new(key, 0, a, i, int(side), ord_type, qty, price, LOCATE, key, 0)
        return result and (result, engine.last_reject()["limit"])
    target = pick(engine, keys, op[1]) if kind in ("fill", "replace", "cancel") else -1
    if kind == "fill":
        return engine.on_fill(target, op[2], op[3])
    if kind == "done":
        return engine.on_fill_done(*op[1:])
    if kind == "replace":
        return engine.on_replace(target, op[2], op[3], 10**6 + len(keys) + op[1], 0) if target > 0 else None
    if kind == "cancel":
        return engine.on_cancel(target)
    engine.set_reference_price(op[1], op[2], 0)
    return None


def cells(engine):
    return ({(a, i): engine.exposure(a, i) for a in range(2) for i in range(2)},
            [engine.account_state(a) for a in range(2)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(bound_ops, st.randoms(use_true_random=False), st.integers(5, 60)),
       st.lists(st.sampled_from([0, NEAR, -NEAR, INT64_MAX, -INT64_MAX, MAX_QTY]), min_size=4, max_size=4))
def test_fills_near_the_bounds_never_wrap(sequence, positions):
    core, ref = start_engines(positions)
    core_keys, ref_keys = [], []
    # What each cell's position must be: the fills' running sum, held within +-INT64_MAX.
    expected = {cell: p for cell, p in zip(((0, 0), (0, 1), (1, 0), (1, 1)), positions)}
    for n, op in enumerate(sequence, 1):
        before = cells(core)
        filled = core.working_order(pick(core, core_keys, op[1])) if op[0] == "fill" else None
        got = call(core, op, n, core_keys)
        assert got == call(ref, op, n, ref_keys), op
        after = cells(core)
        assert after == cells(ref), op
        if op[0] in ("fill", "done") and got == 0:
            if op[0] == "fill":
                a, i, side = filled["account"], filled["instrument"], filled["side"]
            else:
                a, i, side = op[1], op[2], op[3]
            signed = op[-2] if side == BUY else -op[-2]
            expected[(a, i)] = max(-INT64_MAX, min(INT64_MAX, expected[(a, i)] + signed))
            old, new = before[0][(a, i)]["position"], after[0][(a, i)]["position"]
            assert (new >= old) if side == BUY else (new <= old), op        # never wrapped
            money_before, money_after = before[1][a], after[1][a]
            assert money_after["traded_notional"] >= money_before["traded_notional"], op
            if side == BUY:
                assert money_after["cash_flow"] <= money_before["cash_flow"], op
            else:
                assert money_after["cash_flow"] >= money_before["cash_flow"], op
        for cell, exposure in after[0].items():
            assert exposure["position"] == expected[cell], op
            assert exposure["open_buy"] >= 0 and exposure["open_sell"] >= 0 and exposure["cost"] >= 0, op
