"""``RiskEngine.session_gate``: the engine's per-order entry point.

A gate is ``check_new`` with the session bound; these tests hold it to
``check_new`` (same answers, same state) and pin the argument conversion of
both entry points (Python ints of every size, the errors Cython's own
conversion would raise). Each runs against the core and the reference.
"""
import random

import pytest

from ext.risk import RiskEngine, SessionGate
from ext.types import OrdType, RejectReason as R, Side
from tests.reference.risk_reference import RiskReference

BUY, SELL, SHORT = int(Side.BUY), int(Side.SELL), int(Side.SELL_SHORT)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
LOCATE = 1
MS = 1_000_000
T0 = 1_763_000_000_000_000_000          # a time_ns() of 2025: a three-digit Python int
CONFIG = {
    "firm": {"collar_bps": 500, "duplicative_window_ms": 5, "throttle_rate": 1000,
             "throttle_burst": 50},
    "instruments": {"AAPL": {"max_order_qty": 500}, "MSFT": {"max_net_position": 800}},
    "accounts": {"A1": {"cash": "1000000", "allow_short": True, "max_order_notional": "50000"},
                 "A2": {"cash": "2000", "max_open_orders": 7}},
}


@pytest.fixture(params=["cython", "reference"])
def cls(request):
    return RiskEngine if request.param == "cython" else RiskReference


def prepared(cls):
    risk = cls(CONFIG)
    for i, symbol in enumerate(("AAPL", "MSFT")):
        risk.set_reference_price(risk.instrument_index(symbol), 10_000 + 100 * i, T0)
    return risk


def test_gate_is_check_new_with_the_session_bound(cls):
    """A random stream through gates and through check_new: same reasons, same
    reject details, same state at the end."""
    rng = random.Random(3)
    a, b = prepared(cls), prepared(cls)
    gates = {name: b.session_gate(name) for name in ("S1", "S2")}
    for key in range(1, 3000):
        session = rng.choice(("S1", "S2"))
        side = rng.choice((BUY, BUY, SELL, SHORT))
        ord_type = MARKET if rng.random() < 0.1 else LIMIT
        price = 0 if ord_type == MARKET else rng.randint(9_400, 10_700)
        args = (a.account_index(rng.choice(("A1", "A2"))), rng.randint(0, 1), side, ord_type,
                rng.choice((1, 10, 100, 499, 500, 501)), price, rng.randint(0, 3),
                rng.getrandbits(64) - 2**63 if rng.random() > 0.02 else 7, T0 + key * 50_000)
        want = a.check_new(key, a.session_index(session), *args)
        got = gates[session].check_new(key, *args)
        assert got == want, (key, args)
        if want:
            assert b.last_reject() == a.last_reject()
        if want == 0 and rng.random() < 0.3:
            assert a.on_cancel(key) == b.on_cancel(key) == 0
    if cls is RiskEngine:
        assert b.snapshot() == a.snapshot()
    for acc in range(2):
        for ins in range(2):
            assert b.exposure(acc, ins) == a.exposure(acc, ins)


def test_gate_limit_exactly_at_passes_just_over_rejects(cls):
    risk = prepared(cls)
    gate = risk.session_gate("S1")
    acc, aapl = risk.account_index("A1"), risk.instrument_index("AAPL")
    # max_order_notional $50,000 = 500 lots x 10_000 ticks x 100 money units: exactly at it
    assert gate.check_new(1, acc, aapl, BUY, LIMIT, 500, 10_000, 0, 11, T0) == 0
    assert gate.check_new(2, acc, aapl, BUY, LIMIT, 501, 10_000, 0, 12, T0 + 1) == R.MAX_ORDER_QTY
    assert gate.check_new(4, acc, aapl, BUY, LIMIT, 500, 10_001, 0, 14, T0 + 3) == R.MAX_ORDER_NOTIONAL
    # a short sale counts at the collar's upper edge, 10_500 ticks: 476 lots are $49,980
    assert gate.check_new(3, acc, aapl, SHORT, LIMIT, 477, 10_000, LOCATE, 13, T0 + 2) == R.MAX_ORDER_NOTIONAL
    assert gate.check_new(3, acc, aapl, SHORT, LIMIT, 476, 10_000, LOCATE, 15, T0 + 2) == 0
    # the gate's session is the one the throttle and cl_ord_id checks use
    assert gate.check_new(5, acc, aapl, BUY, LIMIT, 1, 10_000, 0, 11, T0 + 4) == R.DUPLICATE_CL_ORD_ID
    other = risk.session_gate("S2")
    assert other.check_new(6, acc, aapl, BUY, LIMIT, 1, 10_000, 0, 11, T0 + 5) == 0
    assert risk.session_gate("S1").session == gate.session == risk.session_index("S1")


def test_gate_registers_its_session_and_is_not_constructible():
    risk = RiskEngine(CONFIG)
    gate = risk.session_gate("NEW")
    assert isinstance(gate, SessionGate) and gate.name == "NEW"
    assert "NEW" in risk.session_names
    with pytest.raises(TypeError):
        SessionGate()


@pytest.mark.parametrize("value", [0, 1, -1, 2**30 - 1, 2**30, -(2**30), 2**60 - 1, 2**60,
                                   2**63 - 1, -(2**63), -(2**62) - 12345, T0])
def test_every_int_size_converts_exactly(value):
    """cl_ord_hash and now_ns take any int64: one, two and three-digit ints, both signs."""
    risk = prepared(RiskEngine)
    gate = risk.session_gate("S1")
    acc, aapl = risk.account_index("A1"), risk.instrument_index("AAPL")
    assert gate.check_new(value, acc, aapl, BUY, LIMIT, 1, 10_000, 0, value, T0) == 0
    assert risk.working_order(value)["key"] == value
    # the same cl_ord_id hash again is a duplicate: it was stored exactly
    assert gate.check_new(1 if value != 1 else 2, acc, aapl, BUY, LIMIT, 1, 10_000, 0, value,
                          T0) == R.DUPLICATE_CL_ORD_ID


def test_conversion_errors_match_cython():
    risk = prepared(RiskEngine)
    gate = risk.session_gate("S1")
    args = [1, 0, 0, BUY, LIMIT, 1, 10_000, 0, 5, T0]
    for index, bad, error in [(0, 2**63, OverflowError), (8, -(2**63) - 1, OverflowError),
                              (9, 2**70, OverflowError), (1, 2**31, OverflowError),
                              (3, -(2**31) - 1, OverflowError), (5, 1.0, TypeError),
                              (6, "10000", TypeError), (7, None, TypeError)]:
        call = list(args)
        call[index] = bad
        with pytest.raises(error):
            gate.check_new(*call)
        with pytest.raises(error):
            risk.check_new(call[0], 0, *call[1:])
    with pytest.raises(TypeError):
        gate.check_new(*args[:-1])
    with pytest.raises(TypeError):
        risk.check_new(*args, now_ns=T0)
    assert risk.n_working == 0
    # int subclasses (IntEnum, bool) convert as ints
    assert gate.check_new(2, 0, 0, Side.BUY, OrdType.LIMIT, True, 10_000, 0, 6, T0) == 0
