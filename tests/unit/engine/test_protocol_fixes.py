"""Intake's bounds on integers, the participation code, and the order table's spent ids."""
import msgspec
import pytest

from engine.messages import (INT64_MAX, NewOrder, RejectReason, ResendRequest, Side,
                             TradeHistoryRequest, check_request, classify_decode_error,
                             request_decoder)
from engine.orders import OrderTable


def refusal(message: dict):
    """The code and field intake gives a request (decoded from msgpack as it would be)."""
    data = msgspec.msgpack.encode(message)
    try:
        request = request_decoder().decode(data)
    except msgspec.ValidationError as exc:
        problem, _, _ = classify_decode_error(data, exc)
        return problem.reason, problem.field
    problem = check_request(request)
    return (problem.reason, problem.field) if problem else None


def twap(**fields) -> dict:
    return {"type": "NewOrder", "cl_ord_id": "t-1", "account": "ACC1", "symbol": "AAPL",
            "side": 1, "qty": "10", "price": "1", "strategy": "twap", **fields}


@pytest.mark.parametrize("message, field", [
    (twap(end_time=2**63), "end_time"),
    (twap(end_time=2**64 - 1), "end_time"),
    (twap(start_time=2**63, end_time=2**63 + 5), "start_time"),
    ({"type": "TradeHistoryRequest", "req_id": "h", "account": "ACC1", "start_time": 0,
      "end_time": 2**63}, "end_time"),
    ({"type": "ResendRequest", "begin_seq": 2**63}, "begin_seq"),
    ({"type": "ResendRequest", "begin_seq": 1, "end_seq": 2**63}, "end_seq"),
])
def test_integers_past_int64_are_refused_at_intake(message, field):
    """msgpack carries uint64; the core's integers are int64."""
    assert refusal(message) == (RejectReason.INVALID_FIELD, field)


def test_int64_max_is_a_valid_time():
    assert refusal(twap(end_time=INT64_MAX)) is None
    assert isinstance(request_decoder().decode(msgspec.msgpack.encode(
        {"type": "TradeHistoryRequest", "req_id": "h", "account": "ACC1", "start_time": 0,
         "end_time": INT64_MAX})), TradeHistoryRequest)
    assert isinstance(request_decoder().decode(msgspec.msgpack.encode(
        {"type": "ResendRequest", "begin_seq": INT64_MAX})), ResendRequest)


@pytest.mark.parametrize("rate", ["0", "0.0", "0.000", "1.5", "1.0000001", "0.0000001"])
def test_a_participation_outside_0_1_is_an_invalid_schedule(rate):
    order = dict(twap(), strategy="pov", participation=rate)
    assert refusal(order) == (RejectReason.INVALID_SCHEDULE, "participation")


@pytest.mark.parametrize("rate", ["abc", "-0.1", "1e-1", ""])
def test_a_participation_that_is_no_decimal_is_an_invalid_field(rate):
    order = dict(twap(), strategy="pov", participation=rate)
    assert refusal(order) == (RejectReason.INVALID_FIELD, "participation")


def test_a_participation_inside_0_1_is_taken():
    for rate in ("1", "0.1", "0.000001"):
        order = NewOrder(cl_ord_id="p", account="A", symbol="S", side=Side.BUY, qty="1",
                         price="1", strategy="pov", participation=rate)
        assert check_request(order) is None


def _order(table: OrderTable, cl_ord_id: str):
    return table.create(cl_ord_id, "s1", "ACC1", "AAPL", 1, 2, 0, 100, 10, 1)


def test_a_reserved_id_is_used_but_names_no_order():
    table = OrderTable()
    assert table.reserve("ACC1", "x") and not table.reserve("ACC1", "x")
    assert table.used("ACC1", "x") and table.find("ACC1", "x") is None
    assert not table.used("ACC2", "x")
    order = _order(table, "o1")
    assert not table.reserve("ACC1", "o1") and table.find("ACC1", "o1") is order


def test_alias_takes_a_reserved_id_and_never_an_other_orders():
    table = OrderTable()
    first, second = _order(table, "o1"), _order(table, "o2")
    table.reserve("ACC1", "c1")
    table.alias(first, "c1")
    assert table.find("ACC1", "c1") is first and first.cl_ord_id == "c1"
    table.alias(first, "o2")  # (a journal from before ids in flight were reserved)
    assert table.find("ACC1", "o2") is second
    assert table.find("ACC1", "o1") is first and table.find("ACC1", "c1") is first


def test_a_refused_orders_report_echoes_only_a_decimal_price():
    """The price text a refused order's report echoes is what a report's price takes
    (a decimal string): anything else is left out, never clipped into another number."""
    from engine.pipeline import price_sent
    assert price_sent("49.005") == "49.005" and price_sent("99999999999999999999.5")
    assert price_sent(None) is None
    for text in ("1e3", "-1", " 49.00", "4" * 21, "49." + "0" * 19, ""):
        assert price_sent(text) is None, text
