"""Intake over real ZeroMQ sockets (tcp:// and ipc://) with a small real handler.

Bad frames get the right reject code and change nothing; the session stays
up and the next good message is served; seq, resend, resume, heartbeats,
timeouts, entitlements and draining behave as documented.
"""
import threading
import time
import urllib.error
import urllib.request

import msgspec
import pytest
import zmq

from engine.client import Client
from engine.config import IntakeConfig, SecurityConfig
from engine.intake import Handler, IntakeServer, IntakeThread, in_bulk_order, send_held
from engine.messages import (
    AdminReply, BulkNewOrders, Cancel, ExecType, ExecutionReport, HeartbeatAck, KillSwitch,
    NewOrder, OrderStatusReply, OrderStatusRequest, OrdStatus, Reject, RejectReason, ReloadLimits,
    Replace, TradeHistoryReply, TradeHistoryRequest, encoder, seq_of,
)
from engine.metrics import Metrics, MetricsServer


class EchoHandler(Handler):
    """Acknowledges orders and answers queries from a dict: enough of a pipeline to test intake."""

    def __init__(self, defer: float | None = None):
        self.requests = []        # (session_id, request) in arrival order
        self.positions = []       # what intake passed as each one's positions
        self.orders = {}          # cl_ord_id -> last ExecutionReport
        self.timeouts = []        # (session_id, cancel_on_disconnect)
        self.timed_out = threading.Event()
        self.defer = defer
        self.sessions = {}

    def _report(self, order: NewOrder, exec_type=ExecType.NEW, status=OrdStatus.NEW, **extra):
        fields = dict(order_id=f"o-{order.cl_ord_id}", cl_ord_id=order.cl_ord_id, account=order.account,
                      symbol=order.symbol, side=order.side, exec_type=exec_type, ord_status=status,
                      qty=order.qty, cum_qty="0", leaves_qty=order.qty, price=order.price,
                      transact_time=time.time_ns())
        fields.update(extra)
        return ExecutionReport(**fields)

    def _send(self, session, msg):
        if self.defer is None:
            session.send(msg)
        else:  # answer later, outside intake's drain (as fills from a venue would)
            import asyncio
            asyncio.get_running_loop().call_later(self.defer, session.send, msg)

    def handle(self, session, request, positions=None, held=(), encoded=None):
        self.requests.append((session.session_id, request))
        self.positions.append(positions)
        self.sessions[session.session_id] = session
        match request:
            case NewOrder(cl_ord_id="boom"):
                raise RuntimeError("pipeline bug")
            case NewOrder():
                self.orders[request.cl_ord_id] = report = self._report(request)
                self._send(session, report)
            case BulkNewOrders():
                def answer(order, index):
                    if order.cl_ord_id == "boom":
                        raise RuntimeError("pipeline bug")
                    self.orders[order.cl_ord_id] = report = self._report(order)
                    self._send(session, report)
                held = list(held)
                in_bulk_order(request, positions, held, answer)
                send_held(held)
            case Cancel():
                last = self.orders.get(request.orig_cl_ord_id)
                if last is None:
                    session.reject(RejectReason.UNKNOWN_CL_ORD_ID, "no such order",
                                   ref_type="Cancel", cl_ord_id=request.cl_ord_id)
                    return
                done = msgspec.structs.replace(last, exec_type=ExecType.CANCELED, ord_status=OrdStatus.CANCELED,
                                               qty=last.cum_qty, leaves_qty="0",
                                               orig_cl_ord_id=request.orig_cl_ord_id)
                self.orders[request.orig_cl_ord_id] = done
                self._send(session, done)
            case Replace():
                last = self.orders.get(request.orig_cl_ord_id)
                # Only a working order is replaced, as in the pipeline: a report
                # built on a canceled one would break the report invariants (and
                # the fuzz test's random order of requests does ask for that).
                if last is None or last.ord_status != OrdStatus.NEW:
                    session.reject(RejectReason.UNKNOWN_CL_ORD_ID if last is None
                                   else RejectReason.TOO_LATE_TO_CANCEL, "no working order",
                                   ref_type="Replace", cl_ord_id=request.cl_ord_id)
                    return
                qty = request.qty or last.qty
                self.orders[request.orig_cl_ord_id] = replaced = msgspec.structs.replace(
                    last, exec_type=ExecType.REPLACED, qty=qty, leaves_qty=qty)
                self._send(session, replaced)
            case OrderStatusRequest():
                last = self.orders.get(request.cl_ord_id)
                self._send(session, OrderStatusReply(cl_ord_id=request.cl_ord_id, account=request.account,
                                                     found=last is not None, report=last))
            case TradeHistoryRequest():
                self._send(session, TradeHistoryReply(req_id=request.req_id, account=request.account, fills=[]))
            case KillSwitch() | ReloadLimits():
                self._send(session, AdminReply(req_id=request.req_id, ok=True))

    def on_session_timeout(self, session):
        self.timeouts.append((session.session_id, session.cancel_on_disconnect))
        self.timed_out.set()


def make_server(tmp_path, handler=None, metrics=None, **intake):
    settings = dict(plaintext_endpoints=["tcp://127.0.0.1:*", f"ipc://{tmp_path}/intake.sock"],
                    allow_plaintext=True, heartbeat_interval_ms=100, heartbeat_timeout_ms=400)
    settings.update(intake)
    security = SecurityConfig(plaintext_accounts=["ACC1", "ACC2"])
    server = IntakeServer(IntakeConfig(**settings), security, handler or EchoHandler(), metrics=metrics)
    return IntakeThread(server).start()


@pytest.fixture
def running(tmp_path):
    thread = make_server(tmp_path)
    yield thread
    thread.stop()


def intake_client(endpoint: str, **kw) -> Client:
    """A client whose requests are numbered from its first: intake's numbering is under test,
    not the session probe an ``auto_resume`` client sends first (test_client.py has it)."""
    return Client(endpoint, auto_resume=False, **kw)


@pytest.fixture
def client(running):
    with intake_client(running.server.plaintext_endpoints[0]) as c:
        yield c


def order_for(client, **fields):
    fields.setdefault("account", "ACC1")
    fields.setdefault("ord_type", "limit")
    price = fields.pop("price", "101.25")
    return client.build_new_order("AAPL", "buy", "10", price, **fields)


def roundtrip(client, order):
    client.send(order)
    return client.recv(5)


def assert_acked(msg, order):
    assert isinstance(msg, ExecutionReport), msg
    assert (msg.cl_ord_id, msg.exec_type, msg.qty, msg.leaves_qty) == (order.cl_ord_id, ExecType.NEW,
                                                                       order.qty, order.qty)


# ---------------------------------------------------------------- happy path
def test_order_acknowledged_over_tcp_and_ipc(running):
    tcp, ipc = running.server.plaintext_endpoints
    assert tcp.startswith("tcp://127.0.0.1:") and not tcp.endswith(":*")
    assert ipc.startswith("ipc://")
    for endpoint in (tcp, ipc):
        with intake_client(endpoint) as c:
            order = order_for(c)
            reply = roundtrip(c, order)
            assert_acked(reply, order)
            assert reply.seq == 1  # a new connection is a new session
    assert [type(r).__name__ for _, r in running.server.handler.requests] == ["NewOrder", "NewOrder"]


# ---------------------------------------------------------------- bad input
def _good_dict():
    return msgspec.to_builtins(NewOrder(cl_ord_id="bad-1", account="ACC1", symbol="AAPL", side=1,
                                        qty="10", price="1.5"))


BAD_FRAMES = [
    ("garbage", b"\x93\x01\xc1", RejectReason.MALFORMED_MESSAGE),
    ("empty", b"", RejectReason.MALFORMED_MESSAGE),
    ("json not msgpack", b'{"type": "NewOrder"}', RejectReason.MALFORMED_MESSAGE),
    ("string", msgspec.msgpack.encode("hello"), RejectReason.MALFORMED_MESSAGE),
    ("str not utf-8", b"\x81\xa4type\xa1\x80", RejectReason.MALFORMED_MESSAGE),
    ("unknown type", {"type": "Teleport", "cl_ord_id": "bad-1"}, RejectReason.UNKNOWN_MESSAGE_TYPE),
    ("missing field", {k: v for k, v in _good_dict().items() if k != "symbol"}, RejectReason.INVALID_FIELD),
    ("extra field", _good_dict() | {"leverage": 100}, RejectReason.INVALID_FIELD),
    ("wrong type", _good_dict() | {"post_only": 1}, RejectReason.INVALID_FIELD),
    ("qty number", _good_dict() | {"qty": 10}, RejectReason.INVALID_QTY),
    ("bad decimal", _good_dict() | {"price": "1,5"}, RejectReason.INVALID_PRICE),
    ("negative qty", _good_dict() | {"qty": "-1"}, RejectReason.INVALID_QTY),
    ("bad side", _good_dict() | {"side": 7}, RejectReason.INVALID_SIDE),
    ("future version", _good_dict() | {"v": 9}, RejectReason.UNSUPPORTED_VERSION),
    ("limit without price", _good_dict() | {"price": None}, RejectReason.PRICE_REQUIRED),
    ("other account", _good_dict() | {"account": "ACC9"}, RejectReason.NOT_AUTHORIZED),
    # A well-formed id, refused for repeating its target's: the Reject still carries it.
    ("cancel reusing its target's id", {"type": "Cancel", "v": 1, "cl_ord_id": "bad-1",
                                         "orig_cl_ord_id": "bad-1", "account": "ACC1"},
     RejectReason.INVALID_ORDER_ID),
]


@pytest.mark.parametrize("name,frame,reason", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_input_is_rejected_and_the_session_stays_up(running, client, name, frame, reason):
    good = order_for(client)
    assert_acked(roundtrip(client, good), good)
    client.send_raw(frame if isinstance(frame, bytes) else msgspec.msgpack.encode(frame))
    reject = client.recv(5)
    assert isinstance(reject, Reject), reject
    assert reject.reject_reason == reason, reject
    assert reject.reject_name == RejectReason(reason).name and reject.text
    if isinstance(frame, dict) and reason not in (RejectReason.MALFORMED_MESSAGE,):
        assert reject.cl_ord_id == "bad-1"
    # Same session, next good message served, nothing of the bad one reached the pipeline.
    after = order_for(client)
    reply = roundtrip(client, after)
    assert_acked(reply, after)
    assert reply.seq == reject.seq + 1 == 3
    handled = running.call(lambda: [r.cl_ord_id for _, r in running.server.handler.requests])
    assert handled == [good.cl_ord_id, after.cl_ord_id]


def test_multi_frame_message_is_rejected(running, client):
    client.send_raw([encoder().encode(order_for(client)), b"second frame"])
    reject = client.recv(5)
    assert reject.reject_reason == RejectReason.MALFORMED_MESSAGE and "one frame, got 2" in reject.text
    assert running.call(lambda: running.server.handler.requests) == []


def test_oversize_frame_rejected_before_decoding(tmp_path):
    thread = make_server(tmp_path, max_message_bytes=1024, hard_max_message_bytes=8192)
    try:
        with Client(thread.server.plaintext_endpoints[0]) as c:
            big = order_for(c, strategy="s" * 64)
            big_bulk = BulkNewOrders(orders=[big] * 20)
            frame = encoder().encode(big_bulk)
            assert 1024 < len(frame) < 8192
            c.send_raw(frame)
            reject = c.recv(5)
            assert reject.reject_reason == RejectReason.MESSAGE_TOO_LARGE
            assert f"{len(frame)} bytes" in reject.text and "1024" in reject.text
            small = order_for(c)
            assert_acked(roundtrip(c, small), small)
            # Beyond the hard limit libzmq drops that connection unread; others are unaffected.
            with Client(thread.server.plaintext_endpoints[0]) as other:
                c.send_raw(b"\x00" * 20000)
                probe = order_for(other)
                assert_acked(roundtrip(other, probe), probe)
        assert thread.call(lambda: len(thread.server.handler.requests)) == 2
    finally:
        thread.stop()


# ---------------------------------------------------------------- checks at intake
def test_entitlements_and_admin_rights(running, client):
    assert roundtrip(client, order_for(client, account="ACC2")).exec_type == ExecType.NEW
    for request in (order_for(client, account="ACC3"),
                    Cancel(cl_ord_id="x1", orig_cl_ord_id="x0", account="ACC3"),
                    OrderStatusRequest(cl_ord_id="x0", account="ACC3"),
                    TradeHistoryRequest(req_id="h", account="ACC3", start_time=0, end_time=1)):
        reject = roundtrip(client, request)
        assert reject.reject_reason == RejectReason.NOT_AUTHORIZED and "ACC3" in reject.text
    for request in (KillSwitch(req_id="k", action="engage", scope="global"), ReloadLimits(req_id="r")):
        reject = roundtrip(client, request)
        assert reject.reject_reason == RejectReason.NOT_AUTHORIZED and "admin" in reject.text
    assert running.call(lambda: len(running.server.handler.requests)) == 1


def test_bulk_orders_answered_per_order(running, client):
    orders = [order_for(client), order_for(client, account="ACC9"), order_for(client, price=None),
              order_for(client, account="ACC2")]
    client.bulk(orders, batch_id="b1")
    replies = [client.recv(5) for _ in orders]
    # Intake's refusals leave in the bulk's place, between the handler's answers.
    assert [m.cl_ord_id for m in replies] == [o.cl_ord_id for o in orders]
    by_id = {m.cl_ord_id: m for m in replies}
    assert by_id[orders[1].cl_ord_id].reject_reason == RejectReason.NOT_AUTHORIZED
    assert "orders[1]" in by_id[orders[1].cl_ord_id].text
    assert by_id[orders[2].cl_ord_id].reject_reason == RejectReason.PRICE_REQUIRED
    assert by_id[orders[0].cl_ord_id].exec_type == by_id[orders[3].cl_ord_id].exec_type == ExecType.NEW
    (_, handed), = running.call(lambda: running.server.handler.requests)
    assert isinstance(handed, BulkNewOrders) and handed.batch_id == "b1"
    assert [o.cl_ord_id for o in handed.orders] == [orders[0].cl_ord_id, orders[3].cl_ord_id]
    # Where the kept orders were in the bulk as sent, for the engine to name them by.
    assert running.call(lambda: running.server.handler.positions) == [(0, 3)]


def test_a_failing_handler_still_sends_the_bulks_held_rejects(running, client):
    """A refused order's reject is held for the handler to send in place; a handler that
    fails before sending it does not lose it."""
    orders = [order_for(client), msgspec.structs.replace(order_for(client), cl_ord_id="boom"),
              order_for(client, account="ACC9")]
    client.bulk(orders)
    replies = [client.recv(5) for _ in range(3)]
    assert [type(m) for m in replies] == [ExecutionReport, Reject, Reject]
    assert replies[0].cl_ord_id == orders[0].cl_ord_id
    refused = {m.reject_reason: m for m in replies[1:]}
    assert refused[RejectReason.NOT_AUTHORIZED].cl_ord_id == orders[2].cl_ord_id
    assert refused[RejectReason.INTERNAL_ERROR].ref_type == "BulkNewOrders"
    with pytest.raises(TimeoutError):  # each reject went out once
        client.recv(0.3)


def test_bulk_order_of_an_unsupported_version_is_refused_alone(running, client):
    """The version rule holds for each order of a bulk, not only for the envelope."""
    future = msgspec.structs.replace(order_for(client), v=2)
    orders = [order_for(client), future, order_for(client)]
    client.bulk(orders)
    by_id = {m.cl_ord_id: m for m in (client.recv(5) for _ in orders)}
    refused = by_id[future.cl_ord_id]
    assert isinstance(refused, Reject) and refused.reject_reason == RejectReason.UNSUPPORTED_VERSION
    assert refused.ref_type == "BulkNewOrders" and "orders[1]" in refused.text and "version 2" in refused.text
    assert by_id[orders[0].cl_ord_id].exec_type == by_id[orders[2].cl_ord_id].exec_type == ExecType.NEW
    (_, handed), = running.call(lambda: running.server.handler.requests)
    assert [o.cl_ord_id for o in handed.orders] == [orders[0].cl_ord_id, orders[2].cl_ord_id]
    # The version is looked at before anything else of that order: a field this
    # version cannot read does not refuse the rest of the bulk.
    odd = msgspec.structs.replace(order_for(client), v=3, price="1,5")
    plain = order_for(client)
    client.bulk([odd, plain])
    by_id = {m.cl_ord_id: m for m in (client.recv(5) for _ in range(2))}
    assert by_id[odd.cl_ord_id].reject_reason == RejectReason.UNSUPPORTED_VERSION
    assert by_id[plain.cl_ord_id].exec_type == ExecType.NEW


def test_handler_exception_becomes_internal_error(running, client):
    reject = roundtrip(client, order_for(client, cl_ord_id="boom"))
    assert reject.reject_reason == RejectReason.INTERNAL_ERROR and reject.cl_ord_id == "boom"
    good = order_for(client)
    assert_acked(roundtrip(client, good), good)


def test_shutdown_refuses_new_orders_but_not_cancels(running, client):
    first = order_for(client)
    roundtrip(client, first)
    running.call(running.server.begin_shutdown)
    assert roundtrip(client, order_for(client)).reject_reason == RejectReason.ENGINE_SHUTTING_DOWN
    bulk = [order_for(client), order_for(client, account="ACC9"), order_for(client)]
    client.bulk(bulk)
    refused = [client.recv(5) for _ in bulk]
    # Each order is named, and the check that comes before the shutdown's (its
    # account's entitlement: protocol.md) still speaks first.
    assert [(r.cl_ord_id, r.reject_reason) for r in refused] == [
        (bulk[0].cl_ord_id, RejectReason.ENGINE_SHUTTING_DOWN),
        (bulk[1].cl_ord_id, RejectReason.NOT_AUTHORIZED),
        (bulk[2].cl_ord_id, RejectReason.ENGINE_SHUTTING_DOWN)]
    assert [r.text.split(":")[0] for r in refused] == [f"BulkNewOrders orders[{i}]" for i in range(3)]
    assert roundtrip(client, order_for(client, account="ACC9")).reject_reason == \
        RejectReason.NOT_AUTHORIZED
    canceled = roundtrip(client, Cancel(cl_ord_id="c-x", orig_cl_ord_id=first.cl_ord_id, account="ACC1"))
    assert canceled.exec_type == ExecType.CANCELED and canceled.qty == canceled.cum_qty == "0"


# ---------------------------------------------------------------- seq and resend
def test_seq_numbers_and_resend(running, client):
    replies = [roundtrip(client, order_for(client)) for _ in range(5)]
    assert [m.seq for m in replies] == [1, 2, 3, 4, 5]
    client.resend(2, 4)
    replayed = client.drain(0.3)
    # Already received: the client drops the replays as duplicates and sees only the closing ack.
    assert client.duplicates == 3
    (ack,) = replayed
    assert isinstance(ack, HeartbeatAck) and (ack.resend_begin_seq, ack.resend_end_seq) == (2, 4)
    assert ack.seq == 6
    # A raw socket sees the replays themselves: the same messages with their original seq.
    with Client(running.server.plaintext_endpoints[0], auto_resend=False) as raw:
        raw.heartbeat()
        session_id = raw.recv(5).session_id
    assert session_id != ack.session_id


def test_replays_are_the_original_messages(running):
    with intake_client(running.server.plaintext_endpoints[0]) as c:
        originals = [roundtrip(c, order_for(c)) for _ in range(3)]
        c.resend(1)
        c.socket.poll(2000)
        frames = []
        while c.socket.poll(300):
            frames.append(c._decoder.decode(c.socket.recv()))
    assert frames[:3] == originals
    assert isinstance(frames[3], HeartbeatAck) and frames[3].resend_begin_seq == 1


def test_the_ring_keeps_the_frames_as_sent_and_a_resend_sends_those_bytes(running):
    server = running.server
    with intake_client(server.plaintext_endpoints[0]) as c:
        originals = [roundtrip(c, order_for(c)) for _ in range(4)]
        (session,) = running.call(lambda: list(server.sessions.values()))
        kept = running.call(lambda: list(session.sent_frames(1)))
        middle = running.call(lambda: list(session.sent_frames(2, 3)))
        as_messages = running.call(lambda: list(session.sent(3)))
        c.resend(1, 4)
        c.socket.poll(2000)
        replayed = []
        while c.socket.poll(300):
            replayed.append(c.socket.recv())
    assert [seq_of(frame) for frame in kept] == [1, 2, 3, 4]
    assert middle == kept[1:3]
    assert as_messages == originals[2:]      # decoded back, with their seq
    assert [c._decoder.decode(frame) for frame in kept] == originals
    assert replayed[:4] == kept              # the very bytes, not an encoding of a copy


def test_resend_of_messages_no_longer_kept(tmp_path):
    thread = make_server(tmp_path, resend_ring_size=4)
    try:
        with Client(thread.server.plaintext_endpoints[0], auto_resend=False) as c:
            c.heartbeat()
            session_id = c.recv(5).session_id
            for _ in range(9):
                roundtrip(c, order_for(c))
        # A new connection resumes the session having seen nothing.
        with Client(thread.server.plaintext_endpoints[0], auto_resend=False) as again:
            again.resume(session_id, 0)
            got = again.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        reject = got[0]
        assert reject.reject_reason == RejectReason.RESEND_UNAVAILABLE and "1..6" in reject.text
        assert [m.seq for m in got[1:-1]] == [7, 8, 9, 10]
        assert again.lost == [[1, 6]] and again.gaps == []
    finally:
        thread.stop()


def test_resume_on_a_new_connection(running):
    endpoint = running.server.plaintext_endpoints[0]
    with Client(endpoint) as first:
        first.heartbeat(cancel_on_disconnect=True)
        ack = first.recv(5)
        order = order_for(first)
        assert roundtrip(first, order).seq == 2
        session_id = ack.session_id
    session = running.call(lambda: running.server.sessions[session_id])
    # A fill arrives while the client is away: kept for the resume.
    fill = running.call(lambda: session.send(msgspec.structs.replace(
        running.server.handler.orders[order.cl_ord_id], exec_type=ExecType.FILL,
        ord_status=OrdStatus.FILLED, cum_qty="10", leaves_qty="0", last_qty="10", last_px="101.25")))
    assert fill == 3
    with Client(endpoint) as second:
        second.resume(session_id, 2)
        replay = second.recv(5)
        assert (replay.seq, replay.exec_type, replay.cum_qty) == (3, ExecType.FILL, "10")
        ack = second.recv(5)
        assert isinstance(ack, HeartbeatAck) and ack.session_id == session_id and ack.cancel_on_disconnect
        after = order_for(second)
        assert roundtrip(second, after).seq == 5  # the session's numbering continues
        assert second.gaps == [] and second.last_seq == 5
        assert running.call(lambda: session.connected) is True  # on the second connection
    # Gone with it (the socket's monitor says so): its messages wait for a resume.
    deadline = time.monotonic() + 5
    while running.call(lambda: session.connected) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.call(lambda: session.connected) is False
    with Client(endpoint) as stranger:
        stranger.resume("0000000000000000", 0)
        assert stranger.recv(5).reject_reason == RejectReason.RESUME_REFUSED


def test_resume_later_than_the_first_message_is_refused(running):
    """A connection that already has a session cannot take over another one: the
    session stays where it is, and both connections keep their own numbering."""
    endpoint = running.server.plaintext_endpoints[0]
    with Client(endpoint) as owner, Client(endpoint) as other:
        owner.heartbeat()
        owner_session = owner.recv(5).session_id
        assert roundtrip(owner, order_for(owner)).seq == 2
        other.heartbeat()
        other_session = other.recv(5).session_id
        other.resume(owner_session, 0)
        refused = other.recv(5)
        assert refused.reject_reason == RejectReason.RESUME_REFUSED, refused
        assert refused.ref_type == "ResendRequest" and "first message" in refused.text
        assert refused.seq == 2  # on its own session, whose numbering goes on
        other.heartbeat()
        assert other.recv(5).session_id == other_session
        # The owner never noticed: same session, next seq, nothing dropped.
        order = order_for(owner)
        reply = roundtrip(owner, order)
        assert_acked(reply, order)
        assert reply.seq == 3 and owner.duplicates == 0 and owner.gaps == []
        owner.heartbeat()
        assert owner.recv(5).session_id == owner_session
    handled = running.call(lambda: [(s, type(r).__name__) for s, r in running.server.handler.requests])
    assert handled == [(owner_session, "NewOrder"), (owner_session, "NewOrder")]


def test_resume_while_the_old_connection_is_open_tells_the_old_one(running):
    """A reconnecting client may resume before the engine knows its old connection is
    gone; if that connection is in fact alive, it is told at once, and whatever it sends
    afterwards is refused (never run, never a fresh session restarting at seq 1)."""
    endpoint = running.server.plaintext_endpoints[0]
    with Client(endpoint) as old, Client(endpoint) as new:
        old.heartbeat()
        session_id = old.recv(5).session_id
        assert roundtrip(old, order_for(old)).seq == 2
        new.resume(session_id, 2)
        ack = new.recv(5)
        assert isinstance(ack, HeartbeatAck) and ack.session_id == session_id and ack.seq == 3
        notice = old.recv(5)
        assert isinstance(notice, Reject) and notice.reject_reason == RejectReason.RESUME_REFUSED
        assert notice.seq == 0 and session_id in notice.text and "another connection" in notice.text
        stray = order_for(old)
        refused = roundtrip(old, stray)
        assert refused.reject_reason == RejectReason.RESUME_REFUSED and refused.seq == 0
        assert (refused.ref_type, refused.cl_ord_id) == ("NewOrder", stray.cl_ord_id)
        old.heartbeat()
        assert old.recv(5).reject_reason == RejectReason.RESUME_REFUSED
        # A request with a req_id is refused by it (a Reject names it since 2026-12-07).
        old.send(TradeHistoryRequest(req_id="h-old", account="ACC1", start_time=0, end_time=1))
        refused = old.recv(5)
        assert (refused.reject_reason, refused.req_id) == (RejectReason.RESUME_REFUSED, "h-old")
        # Not even a resume of its own session: that needs a new connection.
        old.resend(3, session_id=session_id)
        assert old.recv(5).reject_reason == RejectReason.RESUME_REFUSED
        assert old.last_seq == 2 and old.duplicates == 0
        # The session carries on where it moved.
        order = order_for(new)
        assert roundtrip(new, order).seq == 4 and new.gaps == []
        # The old client reconnects and takes it back the documented way.
        with Client(endpoint) as back:
            back.resume(session_id, 4)
            assert back.recv(5).session_id == session_id
            assert new.recv(5).reject_reason == RejectReason.RESUME_REFUSED
            assert roundtrip(back, order_for(back)).seq == 6
    handled = running.call(lambda: [(s, r.cl_ord_id) for s, r in running.server.handler.requests])
    assert [s for s, _ in handled] == [session_id] * 3 and stray.cl_ord_id not in {c for _, c in handled}
    assert running.call(lambda: len(running.server.sessions)) == 1


def test_resume_after_the_old_connection_closed_keeps_nothing_for_it(running):
    """The usual reconnect, whether or not the engine has read the socket monitor's notice
    of the close yet: the resume works, and a closed connection leaves no refusal entry."""
    endpoint = running.server.plaintext_endpoints[0]
    with Client(endpoint) as old:
        old.heartbeat()
        session_id = old.recv(5).session_id
        assert roundtrip(old, order_for(old)).seq == 2
    time.sleep(0.3)  # the close reaches the ROUTER, which alone lets go of the route
    with Client(endpoint) as new:
        new.resume(session_id, 2)
        assert new.recv(5).session_id == session_id
        assert roundtrip(new, order_for(new)).seq == 4
    assert running.call(lambda: [lst.superseded for lst in running.server._listeners]) == [{}]


# ---------------------------------------------------------------- heartbeats
def test_heartbeat_timeout_calls_the_handler(running):
    handler = running.server.handler
    with Client(running.server.plaintext_endpoints[0]) as c:
        c.heartbeat(cancel_on_disconnect=True, test_req_id="t1")
        ack = c.recv(5)
        assert ack.test_req_id == "t1" and ack.cancel_on_disconnect
        assert (ack.heartbeat_interval_ms, ack.heartbeat_timeout_ms) == (100, 400)
        started = time.monotonic()
        assert handler.timed_out.wait(3)
        assert time.monotonic() - started >= 0.35
        assert handler.timeouts == [(ack.session_id, True)]
        session = running.server.sessions[ack.session_id]
        assert running.call(lambda: session.timed_out)
        c.heartbeat(cancel_on_disconnect=False)
        assert c.recv(5).cancel_on_disconnect is False
        assert running.call(lambda: session.timed_out) is False


def test_a_chatty_session_does_not_time_out(running):
    with Client(running.server.plaintext_endpoints[0]) as c:
        for _ in range(12):
            c.heartbeat()
            c.recv(5)
            time.sleep(0.05)
    assert running.server.handler.timeouts == []


# ---------------------------------------------------------------- draining
def test_burst_drained_in_order(tmp_path):
    thread = make_server(tmp_path, drain_batch=7)
    try:
        with intake_client(thread.server.plaintext_endpoints[0]) as c:
            orders = [order_for(c) for _ in range(2000)]
            for order in orders:
                c.send(order)
            replies = [c.recv(10) for _ in orders]
        assert [m.cl_ord_id for m in replies] == [o.cl_ord_id for o in orders]
        assert [m.seq for m in replies] == list(range(1, 2001))
        # Intake's own counters saw every message and every reply.
        assert thread.server.messages_read == 2000
        assert thread.server.frames_sent == 2000
    finally:
        thread.stop()


def test_sends_outside_a_drain_are_delivered(tmp_path):
    thread = make_server(tmp_path, handler=EchoHandler(defer=0.005))
    try:
        with intake_client(thread.server.plaintext_endpoints[0]) as c:
            orders = [order_for(c) for _ in range(200)]
            for index, order in enumerate(orders):
                c.send(order)
                if index % 20 == 0:
                    time.sleep(0.01)  # let deferred sends interleave with arrivals
            replies = [c.recv(5) for _ in orders]
        assert sorted(m.cl_ord_id for m in replies) == sorted(o.cl_ord_id for o in orders)
        assert sorted(m.seq for m in replies) == list(range(1, 201))
    finally:
        thread.stop()


# ---------------------------------------------------------------- metrics
def test_metrics_and_health_over_http(tmp_path):
    metrics = Metrics()
    healthy = {"ok": True}
    http = MetricsServer(metrics, port=0, health=lambda: (healthy["ok"], "intake up" if healthy["ok"] else "down")).start()
    thread = make_server(tmp_path, metrics=metrics)
    try:
        with Client(thread.server.plaintext_endpoints[0]) as c:
            roundtrip(c, order_for(c))
            c.send_raw(b"\xc1")
            c.recv(5)
        base = f"http://127.0.0.1:{http.port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'kronos_rejects_total{reason="MALFORMED_MESSAGE",stage="intake"} 1.0' in text
        assert 'kronos_messages_in_total{type="NewOrder"} 1.0' in text
        assert "kronos_orders_in_total 1.0" in text
        assert "kronos_sessions 1.0" in text
        assert 'kronos_stage_latency_seconds_count{stage="intake"} 1.0' in text
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read() == b"intake up\n"
        healthy["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert caught.value.code == 503
    finally:
        thread.stop()
        http.stop()


def test_json_log_lines():
    import io
    import logging

    import orjson

    from engine.metrics import setup_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", stream=stream)
        logging.getLogger("engine.test").info("order %s rejected", "c1", extra={"reason": "OFF_TICK"})
    finally:
        logging.captureWarnings(False)
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["msg"] == "order c1 rejected" and line["reason"] == "OFF_TICK"
    assert line["level"] == "INFO" and line["logger"] == "engine.test"


def test_python_warnings_are_json_lines_too():
    import io
    import logging
    import warnings

    import orjson

    from engine.metrics import setup_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.captureWarnings(False)  # (an earlier setup_logging's, undone by pytest since)
    try:
        setup_logging("INFO", stream=stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library's deprecation", DeprecationWarning)
    finally:
        logging.captureWarnings(False)
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["level"] == "WARNING" and line["logger"] == "py.warnings"
    assert "a library's deprecation" in line["msg"]


def test_plaintext_needs_explicit_opt_in(tmp_path):
    config = IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"], allow_plaintext=False)
    thread = IntakeThread(IntakeServer(config, SecurityConfig(), EchoHandler()))
    with pytest.raises(ValueError, match="allow_plaintext"):
        thread.start()


class _FlushLog(EchoHandler):
    """Answers later (as a venue's cancel would), and logs intake's flush calls."""

    def __init__(self):
        super().__init__(defer=0.3)
        self.flushes = []   # (requests handled so far, frames recorded so far) at each flush
        self.recorded = 0

    def record_sent(self, session, frame):
        self.recorded += 1

    def flush(self, release):
        self.flushes.append((len(self.requests), self.recorded))
        release()


def test_every_drain_flushes_even_with_nothing_to_send(tmp_path):
    """A request answered later still has the handler flush (its journal write) at the end of
    the drain that read it; frames are recorded once each, before the flush that sends them."""
    handler = _FlushLog()
    thread = make_server(tmp_path, handler=handler)
    try:
        with intake_client(thread.server.plaintext_endpoints[0]) as client:
            client.send(order_for(client))
            deadline = time.monotonic() + 5
            while not any(n == 1 and sent == 0 for n, sent in thread.call(lambda: list(handler.flushes))):
                assert time.monotonic() < deadline, handler.flushes
                time.sleep(0.01)
            reply = client.recv(5)   # the deferred answer, sent by a later flush
            assert reply.cl_ord_id == handler.requests[0][1].cl_ord_id
            assert thread.call(lambda: handler.recorded) == 1
            assert thread.call(lambda: handler.flushes[-1]) == (1, 1)
    finally:
        thread.stop()


def test_listeners_find_dead_peers_by_the_kernels_timeouts_not_by_zeromq_pings(tmp_path):
    """A ZeroMQ ping timer on a connection libzmq stopped reading aborts the process once
    that connection closes (libzmq 4.3.5, #4841: test_intake_read_ahead.py): the listeners
    send none, and TCP keepalive and ``TCP_USER_TIMEOUT`` take the heartbeat settings."""
    server = IntakeServer(IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"],
                                       allow_plaintext=True, heartbeat_interval_ms=2500,
                                       heartbeat_timeout_ms=7000),
                          SecurityConfig(plaintext_accounts=["ACC1"]), EchoHandler())
    socket = server._make_socket()
    try:
        assert socket.heartbeat_ivl == 0
        assert (socket.tcp_keepalive, socket.tcp_keepalive_idle, socket.tcp_keepalive_intvl,
                socket.tcp_keepalive_cnt, socket.tcp_maxrt) == (1, 2, 2, 4, 7000)
    finally:
        socket.close(0)
        server.context.term()


@pytest.mark.parametrize("interval_ms, timeout_ms", [(100, 600_000), (40_000_000, 50_000_000)])
def test_heartbeat_settings_past_the_kernels_keepalive_bounds_still_take_connections(
        tmp_path, interval_ms, timeout_ms):
    """TCP_KEEPCNT above 127, or TCP_KEEPIDLE above 32,767 s, is refused by Linux, and
    libzmq then closed every connection it accepted: no client could connect
    (bench_e2e's timeout of 600 s at 100 ms intervals asked for 6,000 probes)."""
    thread = make_server(tmp_path, heartbeat_interval_ms=interval_ms, heartbeat_timeout_ms=timeout_ms)
    try:
        with intake_client(thread.server.plaintext_endpoints[0]) as c:
            order = order_for(c)
            assert_acked(roundtrip(c, order), order)
    finally:
        thread.stop()
