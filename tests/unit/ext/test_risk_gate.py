"""``RiskEngine.session_gate``: the engine's per-order entry point.

A gate is ``check_new`` with the session bound; these tests hold it to
``check_new`` (same answers, same state) and pin the argument conversion of
both entry points (Python ints of every size, the errors Cython's own
conversion would raise). Each runs against the core and the reference.
"""
import random

import numpy as np
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


GATE_FIELDS = ("order_key", "account", "instrument", "side", "ord_type", "qty", "price", "flags",
               "cl_ord_hash", "now_ns")


def test_conversion_errors_name_the_argument():
    """check_new(..., 2**31, ...) raised "value too large to convert to int32_t" and an
    int beyond int64 Cython's OverflowError, naming no argument (review). Both entry points
    now raise small_arg's and big_arg's errors: TypeError for a non-integer, ValueError
    beyond the argument's C type (int32 for indices, enums and flags, int64 for the rest)."""
    risk = prepared(RiskEngine)
    gate = risk.session_gate("S1")
    args = [1, 0, 0, BUY, LIMIT, 1, 10_000, 0, 5, T0]
    for index, bad, error in [(0, 2**63, ValueError), (8, -(2**63) - 1, ValueError),
                              (9, 2**70, ValueError), (1, 2**31, ValueError),
                              (3, -(2**31) - 1, ValueError), (7, 2**40, ValueError),
                              (2, 2**64, ValueError), (5, 1.0, TypeError),
                              (6, "10000", TypeError), (7, None, TypeError),
                              (4, 1.5, TypeError), (9, float(T0), TypeError)]:
        field = GATE_FIELDS[index]
        message = (f"^{field} must be an integer, not " if error is TypeError
                   else f"^{field} {bad} is out of range")
        call = list(args)
        call[index] = bad
        with pytest.raises(error, match=message):
            gate.check_new(*call)
        with pytest.raises(error, match=message):
            risk.check_new(call[0], 0, *call[1:])
    # The session of RiskEngine.check_new, and the first bad argument when two are bad.
    for session, error, message in [(0.5, TypeError, "^session must be an integer, not float"),
                                    (2**31, ValueError, f"^session {2**31} is out of range"),
                                    (2**70, ValueError, f"^session {2**70} is out of range")]:
        with pytest.raises(error, match=message):
            risk.check_new(args[0], session, *args[1:])
    with pytest.raises(TypeError, match="^qty must be"):
        gate.check_new(1, 0, 0, BUY, LIMIT, 2.5, 10_000, 0, 2**70, T0)
    with pytest.raises(ValueError, match="^order_key "):
        risk.check_new(2**64, 2**64, 0, 0, BUY, LIMIT, 1, 10_000, 0, 5, T0)
    with pytest.raises(TypeError):
        gate.check_new(*args[:-1])
    with pytest.raises(TypeError):
        risk.check_new(*args, now_ns=T0)
    assert risk.n_working == 0
    # int subclasses (IntEnum, bool) convert as ints
    assert gate.check_new(2, 0, 0, Side.BUY, OrdType.LIMIT, True, 10_000, 0, 6, T0) == 0


def test_the_index_arguments_refuse_a_float_naming_it():
    """exposure(0.9, 1.9) showed account 0 in instrument 1, set_reference_price(1.5, ...)
    priced instrument 1 and admit_replace(..., session=0.5) charged session 0: their int32_t
    parameters took floats through __int__ (review); beyond int32 they raised an
    OverflowError naming nothing."""
    risk = prepared(RiskEngine)
    gate = risk.session_gate("S1")
    s1 = risk.session_index("S1")
    assert gate.check_new(1, 0, 0, BUY, LIMIT, 1, 10_000, 0, 5, T0) == 0
    exposure, account = risk.exposure(0, 0), risk.account_state(0)
    calls = {
        "account": [lambda: risk.exposure(0.0, 0), lambda: risk.account_state(0.5)],
        "instrument": [lambda: risk.exposure(0, 1.9), lambda: risk.set_reference_price(1.5, 9, T0)],
        "session": [lambda: risk.admit_replace(1, T0, session=0.5),
                    lambda: risk.record_cl_ord_id(float(s1), 77)],
        "kind": [lambda: risk.debug_scope(0.0, 0)],
        "index": [lambda: risk.debug_scope(0, 0.0)],
    }
    for field, fns in calls.items():
        for call in fns:
            with pytest.raises(TypeError, match=f"^{field} must be an integer, not float"):
                call()
    for field, call in (("account", lambda: risk.exposure(2**31, 0)),
                        ("instrument", lambda: risk.set_reference_price(-2**70, 9, T0)),
                        ("session", lambda: risk.admit_replace(1, T0, session=2**40)),
                        ("session", lambda: risk.record_cl_ord_id(2**64, 77)),
                        ("index", lambda: risk.debug_scope(0, 2**31))):
        with pytest.raises(ValueError, match=f"^{field} -?[0-9]+ is out of range"):
            call()
    # Nothing changed: no token spent, no id recorded, no price set.
    assert risk.exposure(np.int64(0), np.int8(0)) == exposure and risk.account_state(0) == account
    assert risk.record_cl_ord_id(np.int32(s1), 77) is False
    assert risk.debug_scope(0, s1)["keys"] == [1]
