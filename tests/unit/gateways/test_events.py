"""Normalization: each journal event becomes one flat GatewayEvent with the
record's seq; commands are read past; unknown and broken records are handled."""
import msgspec
import pytest

from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import (
    AdminReply, ExecType, JournalCommand, JournalEvent, OrdStatus, Reject, ReloadLimits, Side,
)
from gateways.events import DEFAULT_EVENT_TYPES, GatewayEvent, Normalizer, snake_case, topic_of
from tests.unit.gateways.helpers import (
    admin, command, fill, new_ack, write_fills, write_kill_switch, write_mixed,
)


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


def admin_fields(event):
    return event.req_id, event.action, event.scope, event.target


def test_kill_switch_scope_and_target_come_from_its_request(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        write_fills(w, 1, 3)
        account = write_kill_switch(w, "K1", "account", "ACC2", cancels=5)
        symbol = write_kill_switch(w, "K2", "symbol", "BRK.B", action="release")
        everything = write_kill_switch(w, "K3", "global", None)
    admins = [e for e in Normalizer().normalize(read(tmp_path)) if e.type == "admin"]
    assert [e.seq for e in admins] == [account, symbol, everything]
    assert [admin_fields(e) for e in admins] == [
        ("K1", "engage", "account", "ACC2"), ("K2", "release", "symbol", "BRK.B"),
        ("K3", "engage", "global", None)]
    assert topic_of(admins[0]) == "admin"  # where admin events are published is unchanged


def test_the_request_is_matched_by_session_and_req_id(tmp_path):
    # Two sessions reuse a req_id; each reply gets its own session's request.
    with JournalWriter(tmp_path, fsync="none") as w:
        write_kill_switch(w, "K", "account", "ACC1", session_id="a")
        write_kill_switch(w, "K", "symbol", "AAA", session_id="b")
    admins = Normalizer().normalize(read(tmp_path))
    assert [(e.session_id, e.scope, e.target) for e in admins] == [("a", "account", "ACC1"),
                                                                   ("b", "symbol", "AAA")]


def test_reload_limits_reply(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append_msg(RecordKind.COMMAND, JournalCommand(
            session_id="adm", principal="ops", received_ns=1, request=ReloadLimits(req_id="R1")))
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=AdminReply(
            req_id="R1", ok=True, text="risk limits reloaded")))
    [event] = Normalizer().normalize(read(tmp_path))
    assert admin_fields(event) == ("R1", "reload_limits", None, None)


def test_reading_from_between_request_and_reply_looks_the_request_up(tmp_path):
    # A gateway resuming from its cursor (or a replay) can start after the
    # request; given the journal, the normalizer reads the request back.
    with JournalWriter(tmp_path, fsync="none") as w:
        write_fills(w, 1, 2000)  # the look-back has to go past its first windows
        reply = write_kill_switch(w, "K9", "symbol", "CCC", cancels=700)
    after_request = [r for r in read(tmp_path) if r.seq >= reply - 700]
    [event] = [e for e in Normalizer(journal=JournalReader(tmp_path)).normalize(after_request)
               if e.type == "admin"]
    assert admin_fields(event) == ("K9", "engage", "symbol", "CCC")
    # Without the journal the reply is still published, without the request's fields.
    [bare] = [e for e in Normalizer().normalize(after_request) if e.type == "admin"]
    assert (bare.seq, admin_fields(bare)) == (reply, ("K9", None, None, None))


def test_a_reply_without_a_request_is_published_without_its_fields(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        write_fills(w, 1, 10)
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=admin(3)))
    [event] = [e for e in Normalizer(journal=JournalReader(tmp_path)).normalize(read(tmp_path))
               if e.type == "admin"]
    assert admin_fields(event) == ("K3", None, None, None) and event.ok


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


def _strict(normalizer, record):
    """The event the strict path (messages.JournalEvent) makes of ``record``."""
    normalizer._report_decoder = msgspec.msgpack.Decoder(_NeverMatches)
    return normalizer.event(record)


class _NeverMatches(msgspec.Struct, tag="NoSuchType"):
    """A decoder type no record fits: sends every record down the strict path."""


@pytest.mark.parametrize("report", [
    fill(5), fill(6, partial=True), new_ack(7),
    msgspec.structs.replace(new_ack(8), exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED,
                            qty="0", leaves_qty="0", reject_reason=12, reject_name="X", text="no"),
    msgspec.structs.replace(new_ack(9), exec_type=ExecType.REPLACED, ord_status=OrdStatus.REPLACED,
                            orig_cl_ord_id="C8", seq=44),
])
def test_fast_path_makes_the_same_event_as_the_strict_one(tmp_path, report):
    # Execution reports are decoded with plain types (no pattern checks, no
    # IntEnums); what comes out must equal what the strict decode makes,
    # and encode to the same bytes.
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append_msg(RecordKind.EVENT, JournalEvent(session_id="s3", event=report))
    [record] = read(tmp_path)
    fast = Normalizer().event(record)
    strict = _strict(Normalizer(), record)
    assert fast == strict
    encode = msgspec.msgpack.Encoder().encode
    assert encode(fast) == encode(strict)
    assert type(fast.side) is int and type(fast.exec_type) is int


def test_a_report_that_does_not_fit_the_fast_path_goes_the_strict_way(tmp_path):
    # side as a string fits neither struct: the strict path keeps what it can read.
    raw = msgspec.msgpack.encode({"type": "JournalEvent", "session_id": "s", "event": {
        **msgspec.to_builtins(new_ack(3)), "side": "buy"}})
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append(RecordKind.EVENT, raw)
    normalizer = Normalizer(["*"])
    [event] = normalizer.normalize(read(tmp_path))
    assert event.type == "execution_report" and event.side is None and event.cl_ord_id == "C3"
    assert normalizer.unknown == 1


def test_the_event_table_of_the_docs_is_gateway_event():
    """docs/gateways.md's *The event* table names every field of ``GatewayEvent`` and no other."""
    import re
    from pathlib import Path
    import msgspec
    from gateways.events import GatewayEvent
    text = (Path(__file__).resolve().parents[3] / "docs" / "gateways.md").read_text(encoding="utf-8")
    table = text.split("## The event", 1)[1].split("\n## ", 1)[0]
    documented = {name for cell in re.findall(r"^\| ([^|]*) \|", table, flags=re.M)
                  for name in re.findall(r"`(\w+)`", cell)}
    assert documented == {f.name for f in msgspec.structs.fields(GatewayEvent)}
