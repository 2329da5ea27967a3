"""Fuzz a running intake: random bytes and random field values on one
connection while a well-behaved client on another keeps getting exact answers.

For every fuzz frame the expected outcome is computed independently of the
server (decode with the protocol's schema, then the documented checks): a
frame that is not a valid, permitted request must come back as exactly one
``Reject`` with the reason code ``classify_decode_error`` gives, and must not
reach the handler; a valid one must reach the handler unchanged.
"""
import msgspec
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from engine.client import Client
from ext.msgpackkeys import duplicate_key
from engine.messages import (
    BulkNewOrders, Cancel, ExecType, HeartbeatAck, KillSwitch, NewOrder, OrderStatusRequest, Reject,
    RejectReason, Replace, TradeHistoryRequest, check_request, classify_decode_error, request_decoder,
)
from tests.unit.engine.test_intake import make_server, roundtrip

MAX_BYTES = 1024
ORDER = NewOrder(cl_ord_id="f-1", account="ACC1", symbol="AAPL", side=1, qty="10", price="101.25")
BASES = [msgspec.to_builtins(m) for m in (
    ORDER,
    Cancel(cl_ord_id="f-2", orig_cl_ord_id="f-1", account="ACC1"),
    Replace(cl_ord_id="f-3", orig_cl_ord_id="f-1", account="ACC1", qty="5"),
    BulkNewOrders(orders=[ORDER, msgspec.structs.replace(ORDER, cl_ord_id="f-4", account="ACC9")]),
    OrderStatusRequest(cl_ord_id="f-1", account="ACC1"),
    TradeHistoryRequest(req_id="h", account="ACC1", start_time=0, end_time=10),
    KillSwitch(req_id="k", action="engage", scope="global"),
)]

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=30) | st.binary(max_size=20)
           | st.sampled_from(["10", "0", "-1", "1e3", "101.255", "NaN", " 5", "ACC1", "ACC9", "NewOrder"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@st.composite
def mutated(draw):
    message = dict(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "set" or (action == "delete" and not message):
            message[draw(st.sampled_from(sorted(message) or ["type"]))] = draw(values)
        elif action == "delete":
            del message[draw(st.sampled_from(sorted(message)))]
        else:
            message[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return msgspec.msgpack.encode(message)


PLAUSIBLE = ["ACC1", "ACC9", "5", "0.5", "101.26", None, True, False, 1, 2, 5, "MSFT", "f-9", "global"]


@st.composite
def tweaked(draw):
    """One field of a valid message set to a plausible value: often still valid, or refused by a rule."""
    message = dict(draw(st.sampled_from(BASES)))
    message[draw(st.sampled_from(sorted(k for k in message if k != "type")))] = draw(st.sampled_from(PLAUSIBLE))
    return msgspec.msgpack.encode(message)


@st.composite
def repeated(draw):
    """A valid message with one of its fields written twice, the second time plausibly."""
    message = dict(draw(st.sampled_from(BASES)))
    assume(len(message) < 15)  # (a fixmap: its header is one byte)
    key = draw(st.sampled_from(sorted(message)))
    again = msgspec.msgpack.encode({key: draw(st.sampled_from(PLAUSIBLE))})[1:]
    return bytes([0x80 | len(message) + 1]) + msgspec.msgpack.encode(message)[1:] + again


frames = st.one_of(
    repeated(),
    st.binary(max_size=200),
    st.sampled_from([b"\xa1\x80", b"\x81\xa1\x80\x01", b"\x81\xa4type\xa1\x80",
                     b"\x82\xa4type\xa8NewOrder\xa3qty\xa1\x80"]),
    values.map(msgspec.msgpack.encode),
    mutated(),
    tweaked(),
    st.binary(min_size=MAX_BYTES + 1, max_size=MAX_BYTES + 50),
)

DECODER = request_decoder()


def expected(frame: bytes):
    """(reject reason or None, request the handler should get or None)."""
    if len(frame) > MAX_BYTES:
        return RejectReason.MESSAGE_TOO_LARGE, None
    try:
        request = DECODER.decode(frame)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        return classify_decode_error(frame, exc)[0].reason, None
    if duplicate_key(frame) is not None:  # a key twice: the decoder kept one of two values
        return RejectReason.INVALID_FIELD, None
    return None, request


def test_fuzzed_intake_keeps_serving(tmp_path):
    thread = make_server(tmp_path, max_message_bytes=MAX_BYTES, heartbeat_timeout_ms=60_000,
                         heartbeat_interval_ms=10_000)
    handler = thread.server.handler
    counts = {"rejected": 0, "handled": 0, "refused": 0}
    try:
        with Client(thread.server.plaintext_endpoints[0], auto_resend=False) as fuzz, \
                Client(thread.server.plaintext_endpoints[1], auto_resend=False) as good:

            @settings(max_examples=250, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(frame=frames)
            def probe(frame):
                before = thread.call(lambda: len(handler.requests))
                fuzz.send_raw(frame)
                fuzz.heartbeat(test_req_id="sentinel")
                answers = fuzz.recv_until(lambda m: isinstance(m, HeartbeatAck) and m.test_req_id == "sentinel")[:-1]
                handled = thread.call(lambda: handler.requests[before:])
                reason, request = expected(frame)
                if reason is not None:
                    assert len(answers) == 1 and isinstance(answers[0], Reject), answers
                    assert answers[0].reject_reason == reason, (answers[0], frame)
                    assert handled == []
                    counts["rejected"] += 1
                elif handled:
                    (_, received), = handled
                    if isinstance(request, BulkNewOrders):
                        assert set(received.orders) <= set(request.orders)
                    else:
                        assert received == request
                    counts["handled"] += 1
                else:  # refused by intake's own checks: every answer a Reject
                    assert answers and all(isinstance(a, Reject) for a in answers), answers
                    counts["refused"] += 1
                    if not isinstance(request, BulkNewOrders):
                        problem = check_request(request)
                        assert problem is None or answers[0].reject_reason == problem.reason
                # Meanwhile the well-behaved client is served exactly.
                order = good.build_new_order("AAPL", "buy", "7", "101.25", account="ACC1")
                reply = roundtrip(good, order)
                assert (reply.cl_ord_id, reply.exec_type, reply.qty) == (order.cl_ord_id, ExecType.NEW, "7")

            probe()
            assert fuzz.gaps == [] and good.gaps == [] and fuzz.duplicates == 0
            # One answer per probe, none lost; and seq 1, the ack of the good client's
            # question for its session id (engine.client.SESSION_PROBE).
            assert good.last_seq == sum(counts.values()) + 1
    finally:
        thread.stop()
    # The generator reached both outcomes, not just one kind of failure.
    assert counts["rejected"] > 50 and counts["handled"] > 5 and counts["refused"] > 0, counts
