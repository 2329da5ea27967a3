"""Wire protocol: every message round-trips, bad input maps to the right code,
and the execution report invariants hold."""
import decimal
import json
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from ext import types as core
from ext.instrument import ConversionError, Instrument
from engine.messages import (
    PROTOCOL_VERSION, REQUEST_TYPES, RESPONSE_TYPES, AdminReply, BulkNewOrders, Cancel,
    ExecType, ExecutionReport, Heartbeat, HeartbeatAck, JournalCommand, JournalEvent,
    KillSwitch, NewOrder, OrderStatusReply, OrderStatusRequest, OrdStatus, OrdType, Reject,
    RejectReason, ReloadLimits, Replace, Request, ResendRequest, Response, Side, StpMode,
    TimeInForce, TradeFill, TradeHistoryReply, TradeHistoryRequest, check_report,
    check_request, classify_decode_error, decimal_sum_equals, encoder, make_reject,
    order_units, reject_name, request_decoder, response_decoder,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

ORDER = NewOrder(cl_ord_id="c-1", account="ACC1", symbol="AAPL", side=Side.BUY, qty="10",
                 price="101.25", time_in_force=TimeInForce.GTC, post_only=True,
                 stp=StpMode.CANCEL_NEWEST, intended_duplicate=True, locate=False,
                 strategy="twap", route_hint="XNAS", start_time=1_700_000_000_000_000_000,
                 end_time=1_700_000_600_000_000_000, slices=4)
REPORT = ExecutionReport(order_id="o-1", cl_ord_id="c-1", account="ACC1", symbol="AAPL",
                         side=Side.BUY, exec_type=ExecType.PARTIAL_FILL,
                         ord_status=OrdStatus.PARTIALLY_FILLED, qty="10", cum_qty="4",
                         leaves_qty="6", exec_id="e-1", ord_type=OrdType.LIMIT, price="101.25",
                         avg_px="101.2", last_qty="4", last_px="101.2", venue="SIM1",
                         seq=7, transact_time=1_700_000_000_000_000_000)

REQUESTS = [
    ORDER,
    NewOrder(cl_ord_id="c-2", account="ACC1", symbol="MSFT", side=Side.SELL_SHORT, qty="0.5",
             ord_type=OrdType.MARKET, time_in_force=TimeInForce.IOC, locate=True),
    Cancel(cl_ord_id="c-3", orig_cl_ord_id="c-1", account="ACC1", symbol="AAPL"),
    Replace(cl_ord_id="c-4", orig_cl_ord_id="c-1", account="ACC1", qty="12", price="101.5"),
    BulkNewOrders(orders=[ORDER, msgspec.structs.replace(ORDER, cl_ord_id="c-5")], batch_id="b-1"),
    OrderStatusRequest(cl_ord_id="c-1", account="ACC1"),
    TradeHistoryRequest(req_id="h-1", account="ACC1", start_time=1, end_time=2, symbol="AAPL"),
    Heartbeat(test_req_id="t-1", cancel_on_disconnect=True),
    ResendRequest(begin_seq=5, end_seq=9, session_id="0123456789abcdef"),
    KillSwitch(req_id="k-1", action="engage", scope="account", target="ACC1", text="runaway algo"),
    ReloadLimits(req_id="r-1"),
]
RESPONSES = [
    REPORT,
    OrderStatusReply(cl_ord_id="c-1", account="ACC1", found=True, report=REPORT, seq=8),
    OrderStatusReply(cl_ord_id="zz", account="ACC1", found=False,
                     reject_reason=RejectReason.UNKNOWN_CL_ORD_ID, reject_name="UNKNOWN_CL_ORD_ID"),
    TradeHistoryReply(req_id="h-1", account="ACC1", last=True, fills=[
        TradeFill(exec_id="e-1", order_id="o-1", cl_ord_id="c-1", symbol="AAPL", side=Side.BUY,
                  last_qty="4", last_px="101.2", transact_time=5, venue="SIM1")]),
    HeartbeatAck(session_id="s", heartbeat_interval_ms=1000, heartbeat_timeout_ms=3000,
                 cancel_on_disconnect=True, test_req_id="t-1", resend_begin_seq=1, resend_end_seq=4),
    make_reject(RejectReason.MALFORMED_MESSAGE, "frame is not valid msgpack"),
    AdminReply(req_id="k-1", ok=False, reject_reason=RejectReason.NOT_AUTHORIZED,
               reject_name="NOT_AUTHORIZED", text="needs an admin key"),
]


def test_every_message_type_has_a_sample():
    assert {type(m).__name__ for m in REQUESTS} == set(REQUEST_TYPES)
    assert {type(m).__name__ for m in RESPONSES} == set(RESPONSE_TYPES)


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_request_round_trip(msg):
    data = encoder().encode(msg)
    assert request_decoder().decode(data) == msg
    assert msgspec.json.decode(msgspec.json.encode(msg), type=Request) == msg
    assert msgspec.msgpack.decode(data)["type"] == type(msg).__name__
    assert msgspec.msgpack.decode(data)["v"] == PROTOCOL_VERSION


@pytest.mark.parametrize("msg", RESPONSES, ids=lambda m: type(m).__name__)
def test_response_round_trip(msg):
    data = encoder().encode(msg)
    assert response_decoder().decode(data) == msg
    assert msgspec.json.decode(msgspec.json.encode(msg), type=Response) == msg


def test_journal_envelopes_round_trip():
    command = JournalCommand(session_id="s", principal="k", received_ns=1, request=ORDER)
    event = JournalEvent(session_id="s", event=REPORT)
    for msg in (command, event):
        assert msgspec.msgpack.decode(encoder().encode(msg), type=type(msg)) == msg


def test_responses_ignore_unknown_fields_requests_do_not():
    data = msgspec.to_builtins(REPORT) | {"added_in_v2": 1}
    assert response_decoder().decode(msgspec.msgpack.encode(data)) == REPORT
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        request_decoder().decode(msgspec.msgpack.encode(msgspec.to_builtins(ORDER) | {"x": 1}))


def test_enums_match_the_core_and_are_closed():
    for ours, theirs in ((Side, core.Side), (OrdType, core.OrdType), (TimeInForce, core.TimeInForce),
                         (StpMode, core.StpMode), (OrdStatus, core.OrdStatus)):
        assert {m.name: int(m) for m in ours} == {m.name: int(m) for m in theirs}
    assert Side.BUY == core.Side.BUY
    # The core's Cython enums accept any int; the wire must not.
    assert int(core.Side(3)) == 3
    with pytest.raises(msgspec.ValidationError, match="side"):
        request_decoder().decode(msgspec.msgpack.encode(msgspec.to_builtins(ORDER) | {"side": 3}))


# ---------------------------------------------------------------- bad input -> code
GOOD = msgspec.to_builtins(ORDER)


def _without(key):
    data = dict(GOOD)
    del data[key]
    return data


BAD_INPUTS = [
    ("not msgpack", b"\xc1", RejectReason.MALFORMED_MESSAGE, None),
    ("truncated", encoder().encode(ORDER)[:-3], RejectReason.MALFORMED_MESSAGE, None),
    ("empty frame", b"", RejectReason.MALFORMED_MESSAGE, None),
    ("array not map", [1, 2, 3], RejectReason.MALFORMED_MESSAGE, None),
    ("str not utf-8", b"\xa1\x80", RejectReason.MALFORMED_MESSAGE, None),  # found by the fuzz test
    ("key not utf-8", b"\x81\xa1\x80\x01", RejectReason.MALFORMED_MESSAGE, None),
    ("type not utf-8", b"\x81\xa4type\xa1\x80", RejectReason.MALFORMED_MESSAGE, None),
    ("no type", _without("type"), RejectReason.MALFORMED_MESSAGE, "type"),
    ("unknown type", GOOD | {"type": "Teleport"}, RejectReason.UNKNOWN_MESSAGE_TYPE, "type"),
    ("type not str", GOOD | {"type": 7}, RejectReason.UNKNOWN_MESSAGE_TYPE, "type"),
    ("future version", GOOD | {"v": 2, "new_field": 1}, RejectReason.UNSUPPORTED_VERSION, "v"),
    ("version wrong type", GOOD | {"v": "1"}, RejectReason.UNSUPPORTED_VERSION, "v"),
    ("extra field", GOOD | {"colour": "red"}, RejectReason.INVALID_FIELD, "colour"),
    ("missing field", _without("account"), RejectReason.INVALID_FIELD, "account"),
    ("missing qty", _without("qty"), RejectReason.INVALID_FIELD, "qty"),
    ("qty as number", GOOD | {"qty": 10}, RejectReason.INVALID_QTY, "qty"),
    ("qty float", GOOD | {"qty": 10.5}, RejectReason.INVALID_QTY, "qty"),
    ("qty zero", GOOD | {"qty": "0"}, RejectReason.INVALID_QTY, "qty"),
    ("qty negative", GOOD | {"qty": "-5"}, RejectReason.INVALID_QTY, "qty"),
    ("qty exponent", GOOD | {"qty": "1e3"}, RejectReason.INVALID_QTY, "qty"),
    ("price words", GOOD | {"price": "ten"}, RejectReason.INVALID_PRICE, "price"),
    ("price spaces", GOOD | {"price": " 101.25"}, RejectReason.INVALID_PRICE, "price"),
    ("price nan", GOOD | {"price": "NaN"}, RejectReason.INVALID_PRICE, "price"),
    ("price two dots", GOOD | {"price": "1.2.3"}, RejectReason.INVALID_PRICE, "price"),
    ("side unknown", GOOD | {"side": 3}, RejectReason.INVALID_SIDE, "side"),
    ("side as text", GOOD | {"side": "buy"}, RejectReason.INVALID_SIDE, "side"),
    ("ord_type unknown", GOOD | {"ord_type": 9}, RejectReason.INVALID_ORD_TYPE, "ord_type"),
    ("tif unknown", GOOD | {"time_in_force": 2}, RejectReason.INVALID_TIF, "time_in_force"),
    ("stp unknown", GOOD | {"stp": 9}, RejectReason.INVALID_STP_MODE, "stp"),
    ("empty cl_ord_id", GOOD | {"cl_ord_id": ""}, RejectReason.INVALID_ORDER_ID, "cl_ord_id"),
    ("cl_ord_id with space", GOOD | {"cl_ord_id": "a b"}, RejectReason.INVALID_ORDER_ID, "cl_ord_id"),
    # Python's $ matches before a final newline: these passed the old regex patterns.
    ("cl_ord_id newline", GOOD | {"cl_ord_id": "c-1\n"}, RejectReason.INVALID_ORDER_ID, "cl_ord_id"),
    ("qty newline", GOOD | {"qty": "10\n"}, RejectReason.INVALID_QTY, "qty"),
    ("cl_ord_id too long", GOOD | {"cl_ord_id": "c" * 65}, RejectReason.INVALID_ORDER_ID, "cl_ord_id"),
    ("account not ascii", GOOD | {"account": "ACC\u00e9"}, RejectReason.INVALID_FIELD, "account"),
    ("symbol too long", GOOD | {"symbol": "S" * 33}, RejectReason.INVALID_FIELD, "symbol"),
    ("qty 21 whole digits", GOOD | {"qty": "1" * 21}, RejectReason.INVALID_QTY, "qty"),
    ("price 19 decimals", GOOD | {"price": "1." + "0" * 18 + "1"}, RejectReason.INVALID_PRICE, "price"),
    ("price zero", GOOD | {"price": "0.00"}, RejectReason.INVALID_PRICE, "price"),
    ("cancel orig id blank", {"type": "Cancel", "cl_ord_id": "c-2", "orig_cl_ord_id": " ", "account": "A"},
     RejectReason.INVALID_ORDER_ID, "orig_cl_ord_id"),
    ("account wrong type", GOOD | {"account": 5}, RejectReason.INVALID_FIELD, "account"),
    ("post_only not bool", GOOD | {"post_only": "yes"}, RejectReason.INVALID_FIELD, "post_only"),
    ("bulk bad price", {"type": "BulkNewOrders", "orders": [GOOD, GOOD | {"price": "x"}]},
     RejectReason.INVALID_PRICE, "price"),
    ("bulk empty", {"type": "BulkNewOrders", "orders": []}, RejectReason.INVALID_FIELD, "orders"),
    ("resend zero", {"type": "ResendRequest", "begin_seq": 0}, RejectReason.INVALID_FIELD, "begin_seq"),
    ("kill bad action", {"type": "KillSwitch", "req_id": "k", "action": "explode", "scope": "global"},
     RejectReason.INVALID_FIELD, "action"),
]


def problem_of(data: bytes):
    """What intake concludes of a frame: decoding, then the checks after decoding."""
    try:
        request = request_decoder().decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        return classify_decode_error(data, exc)
    problem = check_request(request)
    assert problem is not None, f"{data!r} was accepted"
    return problem, type(request).__name__, None if problem.field == "cl_ord_id" else getattr(request, "cl_ord_id", None)


@pytest.mark.parametrize("name,payload,reason,field", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_maps_to_reason(name, payload, reason, field):
    data = payload if isinstance(payload, bytes) else msgspec.msgpack.encode(payload)
    problem, ref_type, cl_ord_id = problem_of(data)
    assert problem.reason == reason, problem
    assert problem.field == field
    assert problem.text  # a sentence for the client, never empty
    if isinstance(payload, dict) and payload.get("type") == "NewOrder" and reason not in (
            RejectReason.UNSUPPORTED_VERSION,):
        assert ref_type == "NewOrder"
    if isinstance(payload, dict) and payload.get("cl_ord_id") == "c-1":
        assert cl_ord_id == "c-1"


def test_error_text_names_the_field_and_the_rule():
    text = problem_of(msgspec.msgpack.encode(GOOD | {"price": "1e5"}))[0].text
    assert "$.price" in text and "positive decimal string" in text and "'1e5'" in text
    text = problem_of(msgspec.msgpack.encode({"type": "BulkNewOrders", "orders": [GOOD, GOOD | {"qty": 1}]}))[0].text
    assert "$.orders[1].qty" in text
    problem = problem_of(msgspec.msgpack.encode({"type": "BulkNewOrders", "orders": [GOOD, GOOD | {"qty": "1e3"}]}))[0]
    assert "$.orders[1].qty" in problem.text and problem.reason == RejectReason.INVALID_QTY
    # A huge value is shown cut short: the reject's text stays readable.
    problem = problem_of(msgspec.msgpack.encode(GOOD | {"account": "x" * 300}))[0]
    assert problem.field == "account" and len(problem.text) < 200
    # A rule the schema checks (a decimal string's length) names the value too.
    problem = problem_of(msgspec.msgpack.encode(GOOD | {"qty": "1" * 1000}))[0]
    assert problem.reason == RejectReason.INVALID_QTY
    assert problem.text == ("NewOrder: Expected `str` of length <= 40, got '" + "1" * 44
                            + "... at $.qty")
    problem = problem_of(msgspec.msgpack.encode(
        {"type": "BulkNewOrders", "orders": [GOOD, GOOD | {"price": "9" * 41}]}))[0]
    assert problem.text.endswith(f"got '{'9' * 41}' at $.orders[1].price"), problem.text
    # (A type error already says what came: nothing added.)
    text = problem_of(msgspec.msgpack.encode(GOOD | {"side": "buy"}))[0].text
    assert text == "NewOrder: Expected `int`, got `str` at $.side"


# ---------------------------------------------------------------- cross-field rules
@pytest.mark.parametrize("request_,reason", [
    (msgspec.structs.replace(ORDER, price=None), RejectReason.PRICE_REQUIRED),
    (msgspec.structs.replace(ORDER, ord_type=OrdType.MARKET, post_only=False), RejectReason.INVALID_PRICE),
    (msgspec.structs.replace(ORDER, ord_type=OrdType.MARKET, price=None), RejectReason.INVALID_ORD_TYPE),
    (msgspec.structs.replace(ORDER, time_in_force=TimeInForce.IOC), RejectReason.INVALID_TIF),
    (Cancel(cl_ord_id="a", orig_cl_ord_id="a", account="A"), RejectReason.INVALID_ORDER_ID),
    (Replace(cl_ord_id="b", orig_cl_ord_id="a", account="A"), RejectReason.INVALID_FIELD),
    (TradeHistoryRequest(req_id="h", account="A", start_time=5, end_time=4), RejectReason.INVALID_FIELD),
    (ResendRequest(begin_seq=5, end_seq=4), RejectReason.INVALID_FIELD),
    (KillSwitch(req_id="k", action="engage", scope="symbol"), RejectReason.INVALID_FIELD),
    # (A global switch naming an account stopped every account, its texts naming that one.)
    (KillSwitch(req_id="k", action="engage", scope="global", target="ACC2"),
     RejectReason.INVALID_FIELD),
    (KillSwitch(req_id="k", action="release", scope="global", target="ZZZ"),
     RejectReason.INVALID_FIELD),
    (Heartbeat(v=2), RejectReason.UNSUPPORTED_VERSION),
])
def test_cross_field_rules(request_, reason):
    problem = check_request(request_)
    assert problem is not None and problem.reason == reason


def test_cross_field_rules_pass_good_requests():
    for msg in REQUESTS:
        assert check_request(msg) is None, msg
    big = BulkNewOrders(orders=[ORDER] * 3)
    assert check_request(big, max_bulk_orders=3) is None
    assert check_request(big, max_bulk_orders=2).reason == RejectReason.INVALID_FIELD


# ---------------------------------------------------------------- invariants
def _report(**changes):
    return msgspec.structs.replace(REPORT, **changes)


def test_invariant_checked_by_check_report_and_the_client():
    bad = _report(leaves_qty="5")
    assert check_report(bad) == "qty 10 != cum_qty 4 + leaves_qty 5 (cl_ord_id c-1)"
    # The client library refuses an inconsistent report instead of passing it on.
    from engine.client import Client, ClientProtocolError
    client = Client.__new__(Client)
    client._decoder = response_decoder()
    with pytest.raises(ClientProtocolError, match="cum_qty"):
        client._decode(msgspec.msgpack.encode(bad))
    assert client._decode(msgspec.msgpack.encode(REPORT)) == REPORT


@pytest.mark.parametrize("changes,message", [
    (dict(exec_type=ExecType.FILL, ord_status=OrdStatus.FILLED), "leaves_qty"),
    (dict(exec_type=ExecType.CANCELED, ord_status=OrdStatus.CANCELED), "leaves_qty"),
    (dict(last_qty=None), "last_qty"),
    (dict(last_qty="0"), "last_qty"),
    (dict(exec_type=ExecType.REJECTED, last_qty=None, last_px=None), "reject_reason"),
])
def test_report_rules(changes, message):
    assert message in check_report(_report(**changes))


def test_done_reports_satisfy_the_invariant_with_qty_in_force():
    canceled = _report(exec_type=ExecType.CANCELED, ord_status=OrdStatus.CANCELED, qty="4",
                       leaves_qty="0", last_qty=None, last_px=None)
    assert check_report(canceled) is None
    rejected = _report(exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED, qty="0",
                       cum_qty="0", leaves_qty="0", last_qty=None, last_px=None, avg_px=None,
                       reject_reason=RejectReason.OFF_TICK, reject_name="OFF_TICK")
    assert check_report(rejected) is None
    fractional = _report(qty="1.5", cum_qty="0.25", leaves_qty="1.25", last_qty="0.25")
    assert check_report(fractional) is None


_dec = st.decimals(min_value=0, max_value=10**12, places=6, allow_nan=False, allow_infinity=False)


@given(a=_dec, b=_dec, c=_dec)
@settings(max_examples=300, deadline=None)
def test_decimal_sum_matches_exact_arithmetic(a, b, c):
    def text(d):
        return format(d, "f")

    assert decimal_sum_equals(text(a), text(b), text(c)) == (a == b + c)
    assert decimal_sum_equals(text(b + c), text(b), text(c))


# ---------------------------------------------------------------- helpers
def test_reject_name_and_make_reject():
    assert reject_name(RejectReason.OFF_TICK) == "OFF_TICK"
    assert reject_name(250) == "UNKNOWN_250"
    reject = make_reject(RejectReason.INVALID_QTY, "qty: bad", ref_type="NewOrder", cl_ord_id="c")
    assert (reject.reject_reason, reject.reject_name, reject.ref_type) == (3, "INVALID_QTY", "NewOrder")
    assert reject.transact_time > 0


def test_order_units_uses_the_instrument_grid():
    aapl = Instrument("AAPL", tick_size="0.01", lot_size="0.5")
    assert order_units(msgspec.structs.replace(ORDER, qty="10.5"), aapl) == (10125, 21)
    with pytest.raises(ConversionError) as caught:
        order_units(msgspec.structs.replace(ORDER, price="101.255"), aapl)
    assert caught.value.reason == RejectReason.OFF_TICK and caught.value.field == "price"
    assert order_units(Replace(cl_ord_id="b", orig_cl_ord_id="a", account="A", qty="2"), aapl) == (0, 4)


@given(st.builds(
    NewOrder,
    cl_ord_id=st.from_regex(r"\A[\x21-\x7e]{1,64}\Z"), account=st.from_regex(r"\A[A-Z0-9]{1,12}\Z"),
    symbol=st.from_regex(r"\A[A-Z]{1,8}\Z"), side=st.sampled_from(Side), qty=st.from_regex(r"\A[1-9][0-9]{0,8}(\.[0-9]{1,6})?\Z"),
    price=st.none() | st.from_regex(r"\A[1-9][0-9]{0,6}\.[0-9]{2}\Z"),
    ord_type=st.sampled_from(OrdType), time_in_force=st.sampled_from(TimeInForce),
    stp=st.sampled_from(StpMode), post_only=st.booleans(), strategy=st.none() | st.text(max_size=64),
))
@settings(max_examples=200, deadline=None)
def test_any_valid_order_round_trips(order):
    assert request_decoder().decode(encoder().encode(order)) == order


# ---------------------------------------------------------------- the documentation
def _doc_examples():
    text = DOCS.read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]


def test_every_documented_example_decodes():
    examples = [e for e in _doc_examples() if isinstance(e, dict) and "type" in e]
    seen = set()
    for example in examples:
        kind = example["type"]
        target = Request if kind in REQUEST_TYPES else Response
        msg = msgspec.json.decode(json.dumps(example), type=target)
        seen.add(type(msg).__name__)
    assert seen == set(REQUEST_TYPES) | set(RESPONSE_TYPES), "every message has an example"


def test_reject_table_in_docs_is_complete():
    text = DOCS.read_text(encoding="utf-8")
    for reason in core.RejectReason:
        assert re.search(rf"\|\s*{int(reason)}\s*\|\s*`{reason.name}`", text), reason.name


def _reject_rows() -> list[tuple[int, str, str]]:
    """The rows of protocol.md's *Reject reason codes* table: (code, name, meaning)."""
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("## Reject reason codes", 1)[1].split("\n## ", 1)[0]
    return [(int(code), name, meaning.strip())
            for code, name, meaning in re.findall(r"^\| (\d+) \| `(\w+)` \| (.*) \|$", table, flags=re.M)]


def test_reject_table_lists_only_real_codes_each_with_a_meaning():
    rows = _reject_rows()
    assert len(rows) == len({code for code, _, _ in rows}), "a code listed twice"
    for code, name, meaning in rows:
        assert code in set(map(int, core.RejectReason)), f"{code} {name}: no such code"
        assert core.RejectReason(code).name == name, f"{code} is {core.RejectReason(code).name}, not {name}"
        assert meaning, f"{code} {name} has no meaning"


def test_codes_the_code_never_names_are_documented_as_not_sent():
    # A code no module outside the enum's own definition names cannot be sent: the table must
    # say so rather than give it a meaning a client would wait for.
    root = DOCS.parents[1]
    sources = "".join(p.read_text(encoding="utf-8") for folder in ("engine", "sim", "gateways", "ext")
                      for p in sorted((root / folder).rglob("*")) if p.suffix in (".py", ".pyx", ".pxd")
                      and p.name != "types.pxd")
    never_named = {r.name for r in core.RejectReason
                   if r != core.RejectReason.REJ_NONE and not re.search(rf"\b{r.name}\b", sources)}
    not_sent = {name for _, name, meaning in _reject_rows()
                if meaning.startswith(("Reserved: not sent", "Not sent to clients"))}
    assert never_named <= not_sent, sorted(never_named - not_sent)


@given(session_id=st.text(max_size=80), frame=st.binary(max_size=300))
def test_event_envelope_plus_frame_is_the_journal_event_encoding(session_id, frame):
    from engine.messages import JournalEvent, event_envelope
    # Any msgpack value stands for the frame; a real one is an encoded Response.
    value = msgspec.msgpack.encode(frame)
    assert event_envelope(session_id) + value == msgspec.msgpack.encode(
        JournalEvent(session_id=session_id, event=msgspec.Raw(value)))


def test_every_field_of_every_message_is_named_in_its_section():
    # docs (stop 40): AdminReply's reject_reason, reject_name and text, TradeHistoryReply's
    # reject fields and OrderStatusReply's text were in the structs only.
    import engine.messages as messages_module
    text = DOCS.read_text(encoding="utf-8")
    common = {"v"} | {"seq", "transact_time"}      # "Every response carries ..." (and v every request)
    assert "Every response carries `v`, `seq`" in text and "`transact_time`" in text
    missing = []
    for name in (*REQUEST_TYPES, *RESPONSE_TYPES):
        section = re.split(rf"^### {name}\b.*$", text, flags=re.M)[1]
        section = re.split(r"^##+ ", section, flags=re.M)[0]
        for field in msgspec.structs.fields(getattr(messages_module, name)):
            if field.name not in common and f"`{field.name}`" not in section \
                    and f'"{field.name}"' not in section:
                missing.append(f"{name}.{field.name}")
    assert missing == []


def test_enumerations_table_is_the_enums():
    from engine.messages import ExecType
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("### Enumerations", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)`[^|]* \| ([^|]*) \|", table, flags=re.M))
    for field, enum in (("side", core.Side), ("ord_type", core.OrdType), ("time_in_force", core.TimeInForce),
                        ("stp", core.StpMode), ("ord_status", core.OrdStatus), ("exec_type", ExecType)):
        documented = re.findall(r"(\d+) ([A-Z_]+)", rows.pop(field))
        assert documented == [(str(int(m)), m.name) for m in enum], field
    assert rows == {}
