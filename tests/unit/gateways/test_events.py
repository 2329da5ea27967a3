"""Normalization: each journal event becomes one flat GatewayEvent with the
record's seq; commands are read past; unknown and broken records are handled."""
import msgspec
import pytest

from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import ExecType, JournalEvent, OrdStatus, Reject, Side
from gateways.events import DEFAULT_EVENT_TYPES, GatewayEvent, Normalizer, snake_case, topic_of
from tests.unit.gateways.helpers import admin, command, fill, new_ack, write_mixed


def read(path):
    return list(JournalReader(path))


def test_fill_fields_come_from_the_report(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append_msg(RecordKind.COMMAND, command(7))
        seq = w.append_msg(RecordKind.EVENT, JournalEvent(session_id="s9", event=fill(7, partial=True)))
    [event] = Normalizer().normalize(read(tmp_path))
    report = fill(7, partial=True)
    assert event.seq == seq == 2
    assert event.type == "fill"
    assert event.session_id == "s9"
    assert (event.account, event.symbol, event.cl_ord_id, event.order_id, event.exec_id) == \
        (report.account, report.symbol, "C7", "O7", "E7p")
    assert event.side == Side.BUY and event.exec_type == ExecType.PARTIAL_FILL
    assert event.ord_status == OrdStatus.PARTIALLY_FILLED
    assert (event.qty, event.cum_qty, event.leaves_qty, event.last_qty, event.last_px) == \
        ("10", "4", "6", "4", report.last_px)
    assert event.transact_time == report.transact_time and event.venue == "XNAS"


def test_types_and_default_filter(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        written = write_mixed(w, 1, 20)
        reject = Reject(reject_reason=3, reject_name="X", text="bad frame")
        reject_seq = w.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=reject))
    events = Normalizer().normalize(read(tmp_path))
    assert {e.seq: e.type for e in events} == written  # the reject is not in the default types
    assert [e.seq for e in events] == sorted(written)
    everything = Normalizer(["*"]).normalize(read(tmp_path))
    assert everything[-1].seq == reject_seq and everything[-1].type == "reject"
    assert everything[-1].text == "bad frame"
    fills_only = Normalizer(["fill"]).normalize(read(tmp_path))
    assert {e.type for e in fills_only} == {"fill"}
    assert len(fills_only) == sum(1 for t in written.values() if t == "fill")


def test_admin_event(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=admin(3)))
    [event] = Normalizer().normalize(read(tmp_path))
    assert (event.type, event.req_id, event.ok, event.text, event.symbol) == \
        ("admin", "K3", True, "kill switch engaged: global", None)
    assert topic_of(event) == "admin"


def test_unknown_event_type_is_kept_loosely_and_filtered(tmp_path):
    # What a newer engine could journal: a tagged struct this version lacks.
    future = {"type": "JournalEvent", "session_id": "s",
              "event": {"type": "RiskLimitBreach", "account": "ACC1", "symbol": "AAA", "text": "over",
                        "transact_time": 5, "level": 3}}
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append(RecordKind.EVENT, msgspec.msgpack.encode(future))
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=new_ack(1)))
    records = read(tmp_path)
    assert [e.type for e in Normalizer().normalize(records)] == ["execution_report"]
    normalizer = Normalizer(["*"])
    first, second = normalizer.normalize(records)
    assert (first.seq, first.type, first.account, first.symbol, first.text, first.transact_time) == \
        (1, "risk_limit_breach", "ACC1", "AAA", "over", 5)
    assert second.type == "execution_report" and normalizer.unknown == 1


def test_undecodable_record_is_counted_and_skipped(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append(RecordKind.EVENT, b"\xc1 not msgpack")
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(1)))
    normalizer = Normalizer()
    events = normalizer.normalize(read(tmp_path))
    assert [e.seq for e in events] == [2]
    assert normalizer.undecodable == 1


def test_wire_form_is_a_map_without_empty_fields():
    event = GatewayEvent(seq=5, ts_ns=6, type="admin", req_id="K", ok=False)
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(event))
    assert raw == {"seq": 5, "ts_ns": 6, "type": "admin", "req_id": "K", "ok": False}
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=GatewayEvent) == event


@pytest.mark.parametrize("name,expected", [("ExecutionReport", "execution_report"),
                                           ("AdminReply", "admin_reply"), ("X", "x")])
def test_snake_case(name, expected):
    assert snake_case(name) == expected


def test_defaults_are_known_types():
    assert DEFAULT_EVENT_TYPES == ("fill", "execution_report", "admin")
