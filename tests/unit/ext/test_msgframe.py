"""ext.msgframe writes exactly msgspec's msgpack of a message (with its seq stamped).

The reference is msgspec itself: ``encode(msg)``, and ``encode(replace(msg,
seq=seq))`` for a stamped one, what ``Session.send`` did before (and what
the encoder falls back to).
"""
import enum

import msgspec
import pytest
from hypothesis import given, strategies as st

from engine.messages import (AdminReply, Cancel, ExecType, ExecutionReport, HeartbeatAck,
                             JournalCommand, JournalEvent, JournalValuation, NewOrder, OrdStatus,
                             OrdType, OrderStatusReply, Reject, Side, StageTime, StpMode,
                             TimeInForce)
from ext.msgframe import FrameEncoder

_ENCODER = msgspec.msgpack.Encoder()


def reference(msg, seq: int) -> bytes:
    return _ENCODER.encode(msgspec.structs.replace(msg, seq=seq))


class Fallbacks:
    """msgspec's encode as the fallback, counting the messages handed to it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, msg):
        self.calls += 1
        return _ENCODER.encode(msg)


# Lengths across msgpack's string forms (fixstr < 32, str8 < 256, str16), any text.
texts = st.one_of(st.text(max_size=40), st.text(min_size=200, max_size=300),
                  st.just("x" * 70_000))
maybe_texts = st.none() | texts
int64s = st.integers(-2**63, 2**63 - 1)
# Around every boundary of msgpack's int forms, and anywhere in int64.
edges = st.sampled_from([0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32,
                         2**63 - 1, -1, -32, -33, -128, -129, -32_768, -32_769,
                         -2**31, -2**31 - 1, -2**63])
ints = edges | int64s
seqs = st.integers(0, 2**63 - 1) | st.sampled_from([0, 127, 128, 65_536, 2**32])


def enums(cls):
    return st.sampled_from(list(cls)) | st.sampled_from([int(m) for m in cls])


reports = st.builds(
    ExecutionReport, order_id=texts, cl_ord_id=texts, account=texts, symbol=texts,
    side=enums(Side), exec_type=enums(ExecType), ord_status=enums(OrdStatus), qty=texts,
    cum_qty=texts, leaves_qty=texts, orig_cl_ord_id=maybe_texts, exec_id=maybe_texts,
    ord_type=st.none() | enums(OrdType), price=maybe_texts, avg_px=maybe_texts,
    last_qty=maybe_texts, last_px=maybe_texts, venue=maybe_texts, reject_reason=ints,
    reject_name=maybe_texts, text=maybe_texts, v=ints, seq=ints, transact_time=ints)

others = st.one_of(
    st.builds(Reject, reject_reason=ints, reject_name=texts, text=texts,
              ref_type=maybe_texts, cl_ord_id=maybe_texts, transact_time=ints),
    st.builds(HeartbeatAck, session_id=texts, heartbeat_interval_ms=ints,
              heartbeat_timeout_ms=ints, cancel_on_disconnect=st.booleans(),
              test_req_id=maybe_texts, resend_begin_seq=st.none() | ints,
              resend_end_seq=st.none() | ints),
    st.builds(AdminReply, req_id=texts, ok=st.booleans(), reject_reason=ints,
              reject_name=maybe_texts, text=maybe_texts))


@given(msg=reports, seq=seqs)
def test_a_report_is_written_as_msgspec_writes_it_stamped(msg, seq):
    fallbacks = Fallbacks()
    assert FrameEncoder(fallbacks).stamped(msg, seq) == reference(msg, seq)
    assert fallbacks.calls == 0  # written here, not by the fallback


@given(msg=others, seq=seqs)
def test_the_other_flat_replies_too(msg, seq):
    fallbacks = Fallbacks()
    assert FrameEncoder(fallbacks).stamped(msg, seq) == reference(msg, seq)
    assert fallbacks.calls == 0


new_orders = st.builds(
    NewOrder, cl_ord_id=texts, account=texts, symbol=texts, side=enums(Side), qty=texts,
    ord_type=enums(OrdType), price=maybe_texts, time_in_force=enums(TimeInForce),
    post_only=st.booleans(), stp=st.none() | enums(StpMode), intended_duplicate=st.booleans(),
    strategy=maybe_texts, start_time=st.none() | ints, slices=st.none() | ints,
    participation=maybe_texts, v=ints)
requests = new_orders | st.builds(Cancel, cl_ord_id=texts, orig_cl_ord_id=texts,
                                  account=texts, symbol=maybe_texts)
records = st.one_of(
    st.builds(JournalCommand, session_id=texts, principal=texts, received_ns=ints,
              request=requests),
    st.builds(JournalValuation, order_id=ints, value_ticks=ints))


@given(record=records)
def test_a_journal_record_is_written_as_msgspec_writes_it(record):
    fallbacks = Fallbacks()
    assert FrameEncoder(fallbacks).encode(record) == _ENCODER.encode(record)
    assert fallbacks.calls == 0  # the request within it too


@given(msg=reports | others)
def test_unstamped_it_writes_the_message_as_it_is(msg):
    assert FrameEncoder(Fallbacks()).encode(msg) == _ENCODER.encode(msg)


def test_the_message_itself_keeps_its_seq():
    msg = Reject(reject_reason=1, reject_name="X", text="t", seq=4)
    assert FrameEncoder(_ENCODER.encode).stamped(msg, 9) == reference(msg, 9)
    assert msg.seq == 4


class _Colour(str, enum.Enum):
    RED = "red"


class _Odd(int):
    pass


def test_what_it_does_not_write_goes_to_msgspec_whole():
    fallbacks = Fallbacks()
    encoder = FrameEncoder(fallbacks)
    report = ExecutionReport(order_id="1", cl_ord_id="c", account="a", symbol="s",
                             side=Side.BUY, exec_type=ExecType.NEW, ord_status=OrdStatus.NEW,
                             qty="1", cum_qty="0", leaves_qty="1")
    nested = OrderStatusReply(cl_ord_id="c", account="a", found=True, report=report,
                              stages=[StageTime(stage="RECEIVED", time=5)])
    cases = [
        nested,                                                      # a list in a nested struct
        msgspec.structs.replace(report, transact_time=2**64 - 1),    # past int64
        msgspec.structs.replace(report, text=_Colour.RED),           # a str subclass
    ]
    for k, msg in enumerate(cases, 1):
        assert encoder.stamped(msg, 77) == reference(msg, 77)
        assert fallbacks.calls == k
    # An int subclass that is not an IntEnum: msgspec's call, whatever it makes of it.
    odd = msgspec.structs.replace(report, reject_reason=_Odd(3))
    try:
        expected = reference(odd, 5)
    except (TypeError, msgspec.EncodeError):
        expected = None
    if expected is not None:
        assert encoder.stamped(odd, 5) == expected
        assert fallbacks.calls == len(cases) + 1


def test_raw_bytes_are_written_as_they_are_and_a_list_goes_to_msgspec():
    fallbacks = Fallbacks()
    encoder = FrameEncoder(fallbacks)
    event = JournalEvent(session_id="s", event=msgspec.Raw(b"\xa1x"))
    assert encoder.encode(event) == _ENCODER.encode(event)
    assert fallbacks.calls == 0
    order = NewOrder(cl_ord_id="c", account="a", symbol="s", side=Side.BUY, qty="1",
                     profile=[1, 2])
    command = JournalCommand(session_id="s", principal="", received_ns=1, request=order)
    assert encoder.encode(command) == _ENCODER.encode(command)
    assert fallbacks.calls == 1
    # A message without a seq cannot be stamped: msgspec's replace says so.
    with pytest.raises(TypeError):
        msgspec.structs.replace(command, seq=1)
    with pytest.raises(TypeError):
        encoder.stamped(command, 1)


# ---------------------------------------------------------------- encode_as, Raw, writes_as
# The pipeline journals its command and valuation records with ``encode_as`` (through
# JournalWriter.append_as), not by making the struct; a command's request may be the
# client's frame as a Raw; and intake asks ``writes_as`` of every request and its frame.

def _fields(record):
    return tuple(getattr(record, name) for name in type(record).__struct_fields__)


@given(record=records)
def test_a_record_by_its_field_values_is_the_record_made_and_encoded(record):
    fallbacks = Fallbacks()
    assert FrameEncoder(fallbacks).encode_as(type(record), _fields(record)) == \
        _ENCODER.encode(record)
    assert fallbacks.calls == 0


@given(record=st.builds(JournalCommand, session_id=texts, principal=texts, received_ns=ints,
                        request=requests))
def test_a_command_around_its_request_s_bytes_is_the_command_around_the_request(record):
    # What the pipeline journals when intake hands it the request's frame (Handler.handle).
    raw = msgspec.Raw(_ENCODER.encode(record.request))
    values = (record.session_id, record.principal, record.received_ns, raw)
    encoder = FrameEncoder(Fallbacks())
    assert encoder.encode_as(JournalCommand, values) == _ENCODER.encode(record)
    assert encoder.encode(msgspec.structs.replace(record, request=raw)) == _ENCODER.encode(record)


def test_what_encode_as_does_not_write_is_the_struct_made_and_given_to_msgspec():
    fallbacks = Fallbacks()
    encoder = FrameEncoder(fallbacks)
    order = NewOrder(cl_ord_id="c", account="a", symbol="s", side=Side.BUY, qty="1",
                     profile=[1, 2])  # (a list: msgspec's)
    command = JournalCommand(session_id="s", principal="", received_ns=1, request=order)
    assert encoder.encode_as(JournalCommand, _fields(command)) == _ENCODER.encode(command)
    assert fallbacks.calls == 1
    with pytest.raises(TypeError):
        encoder.encode_as(JournalCommand, ("s", "", 1))  # (a field short)
    with pytest.raises(TypeError):
        encoder.encode_as(JournalCommand, None)


frames_of = st.sampled_from(["same", "flipped", "cut", "longer", "other"])


@given(msg=requests | reports, how=frames_of, at=st.integers(0, 10_000), other=requests)
def test_writes_as_is_whether_the_bytes_are_the_message_s_encoding(msg, how, at, other):
    data = _ENCODER.encode(msg)
    if how == "flipped":
        i = at % len(data)
        data = data[:i] + bytes((data[i] ^ 0x01,)) + data[i + 1:]
    elif how == "cut":
        data = data[:at % len(data)]
    elif how == "longer":
        data = data + b"\xc0"
    elif how == "other":
        data = _ENCODER.encode(other)
    assert FrameEncoder(Fallbacks()).writes_as(msg, data) == (data == _ENCODER.encode(msg))


@given(msg=requests)
def test_a_frame_it_writes_as_the_request_holds_no_key_twice(msg):
    # Why intake walks only the other frames for a repeated key (ext.msgpackkeys).
    from ext.msgpackkeys import duplicate_key
    data = _ENCODER.encode(msg)
    assert FrameEncoder(Fallbacks()).writes_as(msg, data)
    assert duplicate_key(data) is None
    # The same request with its tag's key and value once more (a decoder keeps the last of
    # the two, the same) is not it.
    if data[0] == 0xDE:
        n, body = int.from_bytes(data[1:3], "big"), data[3:]
    else:
        n, body = data[0] & 0x0F, data[1:]
    head = bytes((0x80 | (n + 1),)) if n + 1 < 16 else b"\xde" + (n + 1).to_bytes(2, "big")
    config = type(msg).__struct_config__
    repeated = head + body + _ENCODER.encode(config.tag_field) + _ENCODER.encode(config.tag)
    assert not FrameEncoder(Fallbacks()).writes_as(msg, repeated)
    assert duplicate_key(repeated) is not None
