"""``RiskEngine.release_session``: a session let go frees its slot for the next one.

Risk once kept every session it was told of for the engine's life. A released
session's slot goes to the next new session (the last released first), with
nothing of the old one's: not its day's cl_ord_ids, not its orders' count. A
session with working orders keeps its slot until the last is done. Each test
runs against the core and the reference; snapshot and restore carry it all.
"""
import pytest

from ext.risk import RiskEngine
from ext.types import OrdType, RejectReason as R, Side
from tests.reference.risk_reference import RiskReference

BUY, LIMIT = int(Side.BUY), int(OrdType.LIMIT)
T0 = 1_763_000_000_000_000_000
CONFIG = {
    "firm": {"throttle_rate": 1000, "throttle_burst": 50},
    "instruments": {"AAPL": {"max_order_qty": 500}},
    "accounts": {"A1": {"cash": "1000000"}},
    "sessions": {"alice": {"throttle_rate": 2, "throttle_burst": 2}},
}


@pytest.fixture(params=["cython", "reference"])
def risk(request):
    risk = (RiskEngine if request.param == "cython" else RiskReference)(CONFIG)
    risk.set_reference_price(0, 10_000, T0)
    return risk


def new(risk, key, session, cl_ord_hash, now=T0):
    return risk.check_new(key, session, 0, 0, BUY, LIMIT, 1, 10_000, 0, cl_ord_hash, now)


def test_a_released_slot_goes_to_the_next_session_without_its_cl_ord_ids(risk):
    s1 = risk.session_index("s1", "bob")
    s2 = risk.session_index("s2", "bob")
    assert new(risk, 1, s1, 77) == 0 and risk.on_cancel(1) == 0
    assert risk.release_session("s1") is True
    assert risk.session_names == [None, "s2"]
    assert new(risk, 2, s1, 78) == R.UNKNOWN_SESSION  # its slot is nobody's now
    s3 = risk.session_index("s3", "bob")
    assert s3 == s1 and risk.session_names == ["s3", "s2"]
    # The cl_ord_id s1 spent today is s3's to use; s3's own are still checked.
    assert new(risk, 3, s3, 77) == 0
    assert new(risk, 4, s3, 77) == R.DUPLICATE_CL_ORD_ID
    assert risk.record_cl_ord_id(s3, 77) is True and risk.record_cl_ord_id(s2, 77) is False


def test_the_last_released_slot_is_taken_first_and_a_released_name_is_a_new_session(risk):
    for name in ("a", "b", "c"):
        risk.session_index(name, "bob")
    assert risk.release_session("a") and risk.release_session("c")
    assert risk.release_session("a") is False  # released already: unknown
    assert risk.session_index("d", "bob") == 2
    assert risk.session_index("a", "bob") == 0  # the name again: a new session
    assert risk.session_index("e", "bob") == 3


def test_a_session_with_working_orders_keeps_its_slot_until_the_last_is_done(risk):
    s1 = risk.session_index("s1", "bob")
    assert new(risk, 1, s1, 1) == 0 and new(risk, 2, s1, 2) == 0
    assert risk.release_session("s1") is False
    assert risk.session_index("s2", "bob") == 1  # not s1's slot: it still has orders
    # Its orders are still its own: replaced (the cl_ord_id checked as s1's), filled.
    assert risk.on_replace(1, 2, 10_000, 1, T0) == R.DUPLICATE_CL_ORD_ID
    assert risk.on_replace(1, 2, 10_000, 3, T0) == 0
    assert risk.on_fill(1, 2, 10_000) == 0
    assert risk.session_index("s3", "bob") == 2  # one order left working
    assert risk.on_cancel(2) == 0
    assert risk.session_index("s4", "bob") == s1  # freed with its last order
    assert new(risk, 5, s1, 3) == 0  # s1's cl_ord_ids are not s4's


def test_a_reused_slot_takes_the_new_sessions_throttle(risk):
    s1 = risk.session_index("s1", "bob")
    risk.release_session("s1")
    s2 = risk.session_index("s2", "alice")  # alice: 2 orders in a burst
    assert s2 == s1
    assert [new(risk, k, s2, k) for k in (1, 2, 3)] == [0, 0, R.THROTTLED]


def test_a_restored_engine_frees_and_reuses_as_the_one_it_was_taken_from():
    risk = RiskEngine(CONFIG)
    risk.set_reference_price(0, 10_000, T0)
    for name in ("a", "b", "c", "d"):
        risk.session_index(name, "bob")
    assert new(risk, 1, 1, 9) == 0 and new(risk, 2, 0, 9) == 0 and risk.on_cancel(2) == 0
    risk.release_session("a")      # freed
    risk.release_session("b")      # releasing: order 1 works
    risk.release_session("c")      # freed, taken next
    restored = RiskEngine(CONFIG)
    restored.restore(risk.snapshot())
    assert restored.snapshot() == risk.snapshot()
    for engine in (risk, restored):
        assert engine.session_index("e", "bob") == 2
        assert engine.on_cancel(1) == 0  # frees b's slot
        assert engine.session_index("f", "bob") == 1
        assert engine.session_index("g", "bob") == 0
        assert new(engine, 3, 0, 9) == 0  # a's cl_ord_id 9 is not g's
    assert restored.snapshot() == risk.snapshot()
