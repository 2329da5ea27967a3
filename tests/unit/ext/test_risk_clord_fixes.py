"""``RiskEngine.record_cl_ord_id``: a journal replay spends a refused request's cl_ord_id."""
import pytest

from ext.risk import RiskEngine, cl_ord_hash
from ext.types import OrdType, RejectReason, Side

CONFIG = {"accounts": {"A": {"cash": "1000000"}},
          "instruments": {"X": {"tick_size": "0.01"}}}


def test_a_recorded_id_is_a_duplicate_for_its_session_only():
    risk = RiskEngine(CONFIG)
    s1, s2 = risk.session_index("s1"), risk.session_index("s2")
    a, x = risk.account_index("A"), risk.instrument_index("X")
    assert risk.record_cl_ord_id(s1, cl_ord_hash("id")) is False
    assert risk.record_cl_ord_id(s1, cl_ord_hash("id")) is True
    args = (a, x, int(Side.BUY), int(OrdType.LIMIT), 10, 100, 0, cl_ord_hash("id"), 1)
    assert risk.check_new(1, s1, *args) == RejectReason.DUPLICATE_CL_ORD_ID
    assert risk.check_new(2, s2, *args) == 0
    # as check_new's own record does: the snapshot holds it, the day roll forgets it
    assert len(risk.snapshot()["cl_ord_ids"]) == 2
    risk.reset_daily(2)
    assert risk.record_cl_ord_id(s1, cl_ord_hash("id")) is False


def test_an_unregistered_session_is_refused():
    with pytest.raises(IndexError):
        RiskEngine(CONFIG).record_cl_ord_id(3, cl_ord_hash("id"))
