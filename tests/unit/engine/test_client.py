"""Client library: seq tracking finds gaps and duplicates, resends fill gaps,
the asyncio client works like the blocking one, a connection the engine drops
is replaced and the session resumed on it, and ``kronos-exec client`` sends
an order and prints the answers."""
import asyncio
import inspect
import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import orjson
import pytest

from engine.client import AsyncClient, Client, _Base
from engine.messages import (
    ExecType, ExecutionReport, HeartbeatAck, OrdStatus, OrdType, Reject, RejectReason, Side, TimeInForce,
    encoder, make_reject,
)
from tests.unit.engine.test_intake import EchoHandler, assert_acked, make_server, order_for, roundtrip

ROOT = Path(__file__).resolve().parents[3]


def ack(seq, begin=None, end=None):
    return HeartbeatAck(session_id="s", heartbeat_interval_ms=1, heartbeat_timeout_ms=2,
                        cancel_on_disconnect=False, seq=seq, resend_begin_seq=begin, resend_end_seq=end)


def reject(seq):
    return msgspec.structs.replace(make_reject(RejectReason.INVALID_QTY, "x"), seq=seq)


# ---------------------------------------------------------------- seq tracking
def seqs(tracker):
    """The seqs the caller has been given so far (taken from the tracker)."""
    out = [m.seq for m in tracker._ready]
    tracker._ready.clear()
    return out


def throttled(ref_type):
    return make_reject(RejectReason.THROTTLED, "x", ref_type=ref_type)  # seq 0


def test_a_throttled_gap_resend_is_asked_again_at_the_next_gap():
    """A ResendRequest past intake.request_rate goes unanswered: taken as still asked for,
    the gaps it covered would never be asked for again."""
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker._accept(reject(1))
    assert tracker._accept(reject(5)) is not None          # asks for 2..4
    assert tracker._accept(throttled("ResendRequest")) is None
    resend = tracker._accept(reject(8))                   # the next gap asks again
    assert (resend.begin_seq, resend.end_seq) == (6, 7)
    assert tracker._requested == [[6, 7]]


def test_a_throttled_heartbeat_before_the_session_is_known_asks_again():
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker._session_asked = True                         # its probe went out
    tracker._accept(throttled("Heartbeat"))
    assert not tracker._session_asked                     # the next request asks again
    tracker._accept(ack(1))
    tracker._session_asked = True
    tracker._accept(throttled("Heartbeat"))               # the session is known: nothing to redo
    assert tracker._session_asked


class FakeClock:
    """``time.monotonic`` of engine.client, moved by hand."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr("engine.client.time.monotonic", lambda: self.now)


def test_a_silent_connection_is_probed_then_lost(monkeypatch):
    clock = FakeClock(monkeypatch)
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t", auto_resume=True,
                    heartbeat_s=1.0, heartbeat_timeout_s=3.0)
    tracker._heard_from()
    assert tracker._liveness(5000) == (None, 5000)         # no handshake yet: nothing to probe
    tracker._handshaken = True
    assert tracker._liveness(5000) == (None, 1000)         # the wait ends when a probe is due
    assert tracker._liveness(None) == (None, 1000)
    clock.now += 1.0
    probe, wait_ms = tracker._liveness(5000)
    assert (probe.test_req_id, wait_ms) == ("kronos-client-liveness", 3000)
    tracker._probe_sent(probe)
    clock.now += 2.0
    assert tracker._liveness(5000) == (None, 1000)         # one probe at a time
    tracker._heard_from()                                   # anything heard answers it
    clock.now += 0.5
    assert tracker._liveness(5000) == (None, 500)
    clock.now += 0.5
    probe, _ = tracker._liveness(5000)
    tracker._probe_sent(probe)
    clock.now += 3.0
    assert tracker._liveness(5000) == (None, 0) and tracker._lost
    assert tracker.probes == 2


def test_without_auto_resume_or_heartbeat_s_nothing_is_probed(monkeypatch):
    clock = FakeClock(monkeypatch)
    for kw in ({"auto_resume": False}, {"auto_resume": True, "heartbeat_s": 0}):
        tracker = _Base(auto_resend=True, cl_ord_id_prefix="t", **kw)
        tracker._handshaken = True
        clock.now += 100
        assert tracker._liveness(7) == (None, 7) and not tracker._lost


def test_a_probes_answer_is_the_clients_own_even_when_throttled(monkeypatch):
    FakeClock(monkeypatch)
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t", auto_resume=True)
    tracker._handshaken = True
    tracker._heard -= 5
    probe, _ = tracker._liveness(None)
    tracker._probe_sent(probe)
    assert tracker._session_asked                           # (its ack names the session)
    tracker._accept(msgspec.structs.replace(ack(1), test_req_id=probe.test_req_id))
    assert (seqs(tracker), tracker.session_id, list(tracker.own_seqs)) == ([], "s", [1])
    tracker._probe_sent(probe)
    assert tracker._accept(throttled("Heartbeat")) is None  # past request_rate: the probe's
    assert list(tracker._ready) == []
    tracker._accept(throttled("Heartbeat"))                 # a caller's own: the caller's
    assert [m.reject_name for m in tracker._ready] == ["THROTTLED"]


def test_a_request_sent_again_on_a_connection_replaced_since_is_sent_again_on_the_new_one():
    """An asyncio send of an item of ``_due`` that completes on the old socket after another
    task replaced it: recorded under the connection it went out on, the new connection's
    replay close sends it again (under the new one's number it would never go again)."""
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t", auto_resume=True)
    order = tracker.build_new_order("AAA", "buy", "1", "48.00", account="DEMO1")
    tracker._track(order)
    tracker._connection = 1          # (a loss: what went out before waits to be sent again)
    tracker._send_again(in_session=True)
    item, request = tracker._take_due()
    assert request is order
    tracker._connection = 2          # another task replaced the connection meanwhile
    tracker._sent_again(item, 1)     # the send completes, on connection 1
    tracker._send_again(in_session=True)
    assert tracker._take_due()[1] is order


def test_gap_detected_resend_requested_and_order_kept():
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    assert tracker._accept(reject(1)) is None and seqs(tracker) == [1]
    resend = tracker._accept(reject(5))
    assert (resend.begin_seq, resend.end_seq) == (2, 4)
    assert tracker.gaps == [[2, 4]] and tracker.last_seq == 5
    assert seqs(tracker) == []                    # 5 waits for 2..4
    assert tracker._accept(reject(3)) is None     # late arrival fills the middle
    assert tracker.gaps == [[2, 2], [4, 4]] and seqs(tracker) == []
    assert tracker._accept(reject(3)) is None and tracker._accept(reject(1)) is None
    assert tracker.duplicates == 2
    tracker._accept(reject(2))
    assert seqs(tracker) == [2, 3]                # up to the next gap
    tracker._accept(reject(4))
    assert seqs(tracker) == [4, 5]
    assert tracker.gaps == [] and tracker.lost == []


def test_a_gap_already_asked_for_is_not_asked_for_again():
    # After a resume, the engine's first new message can come before the
    # replay it asked for: that gap is the replay's, not a new one.
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker.last_seq = 2
    tracker._requested.append([3, 0])             # what Client.resume asks for
    assert tracker._accept(reject(11)) is None
    for seq in range(3, 11):
        tracker._accept(reject(seq))
    assert seqs(tracker) == list(range(3, 12)) and tracker.gaps == []


def test_replay_end_marks_unfilled_gaps_lost_and_releases_what_waited():
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker._accept(reject(1))
    tracker._accept(reject(10))
    tracker._accept(reject(8))
    assert seqs(tracker) == [1]
    tracker._accept(ack(11, begin=2, end=9))
    assert tracker.lost == [[2, 7], [9, 9]] and tracker.gaps == []
    assert seqs(tracker) == [8, 10, 11] and tracker.session_id == "s"
    # Asked for again, a lost seq is taken, not dropped as a duplicate.
    tracker._accept(reject(9))
    assert seqs(tracker) == [9] and tracker.lost == [[2, 7]] and tracker.duplicates == 0


def test_without_auto_resend_nothing_waits():
    tracker = _Base(auto_resend=False, cl_ord_id_prefix="t")
    tracker._accept(reject(1))
    assert tracker._accept(reject(10)) is None     # no resend asked
    assert seqs(tracker) == [1, 10] and tracker.gaps == [[2, 9]]


def test_what_waits_too_long_for_a_gap_is_delivered():
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker._accept(reject(1))
    tracker._accept(reject(3))
    assert seqs(tracker) == [1] and tracker._hold_deadline() is not None
    tracker._release(expired=True)
    assert seqs(tracker) == [3] and tracker.gaps == [[2, 2]]


def test_seq_0_is_outside_the_numbering_and_delivered():
    """A Reject the engine sends where it has no session (seq 0) is neither a
    duplicate nor a gap: the application must see it."""
    tracker = _Base(auto_resend=True, cl_ord_id_prefix="t")
    tracker._accept(reject(1))
    tracker._accept(reject(2))
    assert tracker._accept(reject(0)) is None and tracker._accept(reject(0)) is None
    assert seqs(tracker) == [1, 2, 0, 0]
    assert (tracker.last_seq, tracker.gaps, tracker.duplicates) == (2, [], 0)
    tracker._accept(reject(3))
    assert seqs(tracker) == [3]


def test_builders_accept_names():
    client = _Base(auto_resend=False, cl_ord_id_prefix="p")
    order = client.build_new_order("AAPL", "SELL_SHORT", "5", None, account="A", time_in_force="ioc")
    assert (order.side, order.ord_type, order.time_in_force) == (Side.SELL_SHORT, OrdType.MARKET, TimeInForce.IOC)
    assert order.cl_ord_id == "p-1" and client.next_cl_ord_id() == "p-2"
    with pytest.raises(ValueError, match="not one of"):
        client.build_new_order("AAPL", "up", "5", "1", account="A")


# ---------------------------------------------------------------- against a real server
@pytest.fixture
def running(tmp_path):
    thread = make_server(tmp_path)
    yield thread
    thread.stop()


def test_missed_messages_are_recovered_by_auto_resend(running):
    with Client(running.server.plaintext_endpoints[0]) as client:
        first = order_for(client)
        roundtrip(client, first)
        session = running.call(lambda: next(iter(running.server.sessions.values())))
        last = running.server.handler.orders[first.cl_ord_id]

        def lose_two():
            # Two messages the network "loses": sent (intake's flush) while no
            # route is attached.
            route, session._route = session._route, None
            session.send(msgspec.structs.replace(last, exec_type=ExecType.PARTIAL_FILL,
                                                 ord_status=OrdStatus.PARTIALLY_FILLED, cum_qty="4",
                                                 leaves_qty="6", last_qty="4", last_px="101.25"))
            session.send(msgspec.structs.replace(last, exec_type=ExecType.FILL, ord_status=OrdStatus.FILLED,
                                                 cum_qty="10", leaves_qty="0", last_qty="6", last_px="101.25"))
            running.server._flush()
            session._route = route

        running.call(lose_two)
        following = order_for(client)
        client.send(following)
        got = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        # In seq order: the two the network lost (resent) come before the
        # reply whose seq revealed the gap, then the replay's closing ack.
        # (seq 1: the ack of the client's question for its session id.)
        assert [m.seq for m in got] == [3, 4, 5, 6]
        assert [m.exec_type for m in got[:2]] == [ExecType.PARTIAL_FILL, ExecType.FILL]
        assert got[2].cl_ord_id == following.cl_ord_id
        assert client.gaps == [] and client.lost == [] and client.last_seq == 6


def test_blocking_client_requests(running):
    with Client(running.server.plaintext_endpoints[1]) as client:  # over ipc
        order = client.new_order("AAPL", "buy", "10", "101.25", account="ACC1")
        assert client.recv().exec_type == ExecType.NEW
        client.replace(order.cl_ord_id, account="ACC1", qty="12")
        replaced = client.recv()
        assert (replaced.exec_type, replaced.qty, replaced.leaves_qty) == (ExecType.REPLACED, "12", "12")
        client.status(order.cl_ord_id, account="ACC1")
        status = client.recv()
        assert status.found and status.report.qty == "12"
        client.history("ACC1", 0, 10)
        assert client.recv().fills == []
        client.cancel(order.cl_ord_id, account="ACC1")
        assert client.recv().ord_status == OrdStatus.CANCELED
        client.bulk([client.build_new_order("MSFT", "sell", "1", "2", account="ACC2") for _ in range(3)])
        assert [client.recv().exec_type for _ in range(3)] == [ExecType.NEW] * 3
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)


def test_async_client_has_the_blocking_ones_receiving_calls(running):
    """recv(0) takes a message that has already arrived, and drain() exists, as on Client."""
    async def main():
        async with AsyncClient(running.server.plaintext_endpoints[0]) as client:
            await client.heartbeat(test_req_id="z")
            await asyncio.sleep(0.3)
            assert (await client.recv(0)).test_req_id == "z"
            with pytest.raises(TimeoutError):
                await client.recv(0)
            await client.heartbeat(test_req_id="d1")
            await client.heartbeat(test_req_id="d2")
            assert [m.test_req_id for m in await client.drain(0.3)] == ["d1", "d2"]
    asyncio.run(main())


def test_async_client(running):
    async def main():
        async with AsyncClient(running.server.plaintext_endpoints[0]) as client:
            await client.heartbeat(test_req_id="a1")
            ack_msg = await client.recv(5)
            assert isinstance(ack_msg, HeartbeatAck) and ack_msg.test_req_id == "a1"
            orders = [await client.new_order("AAPL", "buy", "1", "10.5", account="ACC1") for _ in range(20)]
            replies = [await client.recv(5) for _ in orders]
            assert [r.cl_ord_id for r in replies] == [o.cl_ord_id for o in orders]
            await client.cancel(orders[0].cl_ord_id, account="ACC1")
            assert (await client.recv(5)).exec_type == ExecType.CANCELED
            await client.send_raw(b"\xc1")
            assert (await client.recv(5)).reject_reason == RejectReason.MALFORMED_MESSAGE
            with pytest.raises(TimeoutError):
                await client.recv(0.05)
            assert client.last_seq == 23 and client.gaps == []

    asyncio.run(main())


def test_what_recv_until_received_before_its_timeout_is_kept(running):
    """recv_until timing out threw away what it had taken (an order's ack, while waiting
    for its fill): the next recv or drain never saw it."""
    with Client(running.server.plaintext_endpoints[0]) as client:
        client.heartbeat(test_req_id="h1")
        client.heartbeat(test_req_id="h2")
        with pytest.raises(TimeoutError, match=r"no message matching .* within 0.5 s"):
            client.recv_until(lambda m: getattr(m, "test_req_id", None) == "never", 0.5)
        assert [m.test_req_id for m in client.drain(0.2)] == ["h1", "h2"]

    async def main():
        async with AsyncClient(running.server.plaintext_endpoints[0]) as client:
            await client.heartbeat(test_req_id="a1")
            await client.heartbeat(test_req_id="a2")
            with pytest.raises(asyncio.TimeoutError):   # cancelled by wait_for
                await asyncio.wait_for(client.recv_until(lambda m: False, None), 0.5)
            assert [m.test_req_id for m in await client.drain(0.2)] == ["a1", "a2"]
    asyncio.run(main())


def test_a_closed_client_says_so(running):
    """After close(), a send said "Socket operation on non-socket", a receive timed out,
    and recv(None) waited for ever."""
    from engine.client import ClientClosedError
    client = Client(running.server.plaintext_endpoints[0])
    client.close()
    client.close()      # (twice is fine)
    for call in (lambda: client.recv(None), lambda: client.recv(0.1), client.heartbeat,
                 lambda: client.drain(0.1)):
        with pytest.raises(ClientClosedError, match="is closed"):
            call()

    async def main():
        client = AsyncClient(running.server.plaintext_endpoints[0])
        await client.heartbeat()
        await client.recv(5)                 # (the heartbeat's ack)
        waiting = asyncio.ensure_future(client.recv(None))
        await asyncio.sleep(0.3)
        client.close()
        with pytest.raises(ClientClosedError):   # not a bare CancelledError
            await waiting
    asyncio.run(main())


def test_order_fields_are_checked_before_anything_is_sent():
    with Client("tcp://127.0.0.1:1") as client:
        with pytest.raises(TypeError, match="qty must be a decimal string"):
            client.build_new_order("AAA", "buy", 10.0, "1", account="A")
        with pytest.raises(TypeError, match="price must be a decimal string"):
            client.build_new_order("AAA", "buy", "10", 49.0, account="A")
        with pytest.raises(ValueError, match="True is not one of"):
            client.build_new_order("AAA", True, "10", "1", account="A")  # (was a BUY)


# ---------------------------------------------------------------- kronos-exec client
def kronos(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_cli_client_sends_an_order_and_prints_reports(running):
    endpoint = running.server.plaintext_endpoints[0]
    out = kronos("client", "--endpoint", endpoint, "--wait", "0.5", "new", "--symbol", "AAPL",
                 "--side", "buy", "--qty", "10", "--price", "101.25", "--account", "ACC1",
                 "--cl-ord-id", "cli-1")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    report = orjson.loads(line)
    assert report["type"] == "ExecutionReport" and report["cl_ord_id"] == "cli-1"
    assert (report["exec_type"], report["side"], report["ord_status"]) == ("NEW", "BUY", "NEW")
    assert report["qty"] == report["leaves_qty"] == "10"

    refused = kronos("client", "--endpoint", endpoint, "--wait", "0.5", "new", "--symbol", "AAPL",
                     "--side", "buy", "--qty", "10.x", "--price", "1", "--account", "ACC1")
    assert refused.returncode == 1
    assert orjson.loads(refused.stdout)["reject_name"] == "INVALID_QTY"


def test_cli_client_without_a_server(tmp_path):
    out = kronos("client", "--endpoint", f"ipc://{tmp_path}/nobody", "--wait", "0.3", "heartbeat")
    assert out.returncode == 3 and "no answer" in out.stderr
    # An order with no answer names the id it went under: the engine may have it.
    out = kronos("client", "--endpoint", f"ipc://{tmp_path}/nobody", "--wait", "0.3", "new",
                 "--symbol", "AAA", "--side", "buy", "--qty", "1", "--price", "1",
                 "--account", "A")
    assert out.returncode == 3
    assert re.search(r"no answer .* it was sent as cl_ord_id '[0-9a-f]{16}-1'$", out.stderr.strip())


# ---------------------------------------------------------------- reconnects
@pytest.fixture
def strict(tmp_path):
    """The echo intake with a low hard frame limit (a bigger frame drops its connection)."""
    thread = make_server(tmp_path, max_message_bytes=1024, hard_max_message_bytes=8192,
                         heartbeat_timeout_ms=60000)
    yield thread
    thread.stop()


def lose_one(running, session_id, order):
    """The engine sends one message to the session while no connection is there to take it
    (kept for resends, as a fill while the client is away): returns it."""
    session = running.server.sessions[session_id]
    late = msgspec.structs.replace(running.server.handler.orders[order.cl_ord_id],
                                   exec_type=ExecType.CANCELED, ord_status=OrdStatus.CANCELED,
                                   leaves_qty="0", qty="0")
    route, session._route = session._route, None
    session.send(late)
    running.server._flush()
    session._route = route
    return late


class Driver:
    """The blocking and the asyncio client behind one blocking interface, for the tests."""

    def __init__(self, kind, endpoint):
        self.kind = kind
        if kind == "blocking":
            self.client = Client(endpoint)
        else:
            self.loop = asyncio.new_event_loop()
            self.client = self.loop.run_until_complete(self._make_async(endpoint))

    @staticmethod
    async def _make_async(endpoint):
        return AsyncClient(endpoint)

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if self.kind == "blocking" or not callable(attr) or not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kw: self.loop.run_until_complete(attr(*args, **kw))

    def close(self):
        self.client.close()
        if self.kind != "blocking":
            self.loop.close()


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
@pytest.mark.parametrize("noticed_by", ["send", "recv"])
def test_a_dropped_connection_is_resumed_and_what_it_missed_is_replayed(strict, kind, noticed_by):
    """The engine drops the connection (a frame above hard_max_message_bytes); libzmq would
    reconnect under a new routing id, whose next message the engine takes for a new session
    numbered from 1, which the client dropped as repeats. The client resumes instead, and a
    message sent while no connection was there comes in the replay."""
    client = Driver(kind, strict.server.plaintext_endpoints[0])
    try:
        client.heartbeat()
        session_id = client.recv(5).session_id
        first = order_for(client)
        client.send(first)
        assert_acked(client.recv(5), first)
        client.send_raw(b"\x00" * 20000)  # above the hard limit: the engine drops the connection
        late = strict.call(lose_one, strict, session_id, first)
        time.sleep(0.5)  # the connection is gone (and libzmq has reconnected by itself)
        following = order_for(client)
        if noticed_by == "send":
            client.send(following)
            got = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == following.cl_ord_id, 5)
        else:
            got = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            client.send(following)
            got.append(client.recv(5))
        # The replay (the message that never arrived, then its closing ack), then the new
        # order's acknowledgement: in the same session, each once, numbered on.
        assert [m.seq for m in got] == [3, 4, 5]
        assert (got[0].cl_ord_id, got[0].exec_type) == (late.cl_ord_id, ExecType.CANCELED)
        assert (got[1].session_id, got[1].resend_begin_seq) == (session_id, 3)
        assert_acked(got[2], following)
        assert (client.session_id, client.reconnects, client.resuming) == (session_id, 1, False)
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])
        handled = strict.call(lambda: [(s, r.cl_ord_id) for s, r in strict.server.handler.requests])
        assert handled == [(session_id, first.cl_ord_id), (session_id, following.cl_ord_id)]
    finally:
        client.close()


def test_without_a_known_session_a_reconnect_starts_a_new_one_and_drops_nothing(strict):
    """No HeartbeatAck named the session: it cannot be resumed. The new connection's session
    numbers from 1 again, and the client counts it so (not as repeats); it asks for the new
    session's id, so that the next reconnect resumes."""
    with Client(strict.server.plaintext_endpoints[0]) as client:
        client._session_asked = True  # as a client whose question for its id went unanswered
        first = order_for(client)
        client.send(first)
        assert_acked(client.recv(5), first)
        client.send(order_for(client))
        client.recv(5)
        client.send_raw(b"\x00" * 20000)
        time.sleep(0.5)
        following = order_for(client)
        client.send(following)
        hello, ack_msg = client.recv(5), client.recv(5)
        assert isinstance(hello, HeartbeatAck) and hello.seq == 1
        assert_acked(ack_msg, following)
        assert ack_msg.seq == 2 and client.session_id == hello.session_id
        assert (client.reconnects, client.duplicates, client.gaps) == (1, 0, [])
        # Now known: the next drop is resumed.
        client.send_raw(b"\x00" * 20000)
        time.sleep(0.5)
        again = order_for(client)
        client.send(again)
        got = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        assert [type(m) for m in got] == [HeartbeatAck, ExecutionReport]
        assert got[0].session_id == hello.session_id and got[-1].seq == 4
        assert (client.reconnects, client.duplicates) == (2, 0)


def test_a_client_that_never_sent_a_heartbeat_resumes_its_session(strict):
    """A client learns its session's id before its first reply (a Heartbeat of its own, whose
    ack it keeps to itself), so a reconnect resumes the session: without it the client had
    to remember to send a heartbeat() first, and one that did not lost the replies sent
    while it was away (found by a kill -9 soak: a new session, numbered from 1)."""
    with Client(strict.server.plaintext_endpoints[0]) as client:
        first = order_for(client)
        client.send(first)
        ack = client.recv(5)
        assert_acked(ack, first)
        assert ack.seq == 2 and client.session_id is not None  # (seq 1: the probe's ack)
        session_id = client.session_id
        client.send_raw(b"\x00" * 20000)  # above the hard limit: the engine drops the connection
        time.sleep(0.5)
        again = order_for(client)
        client.send(again)
        got = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        assert [type(m) for m in got] == [HeartbeatAck, ExecutionReport]
        assert got[0].session_id == session_id and got[0].resend_begin_seq == 3
        assert got[-1].cl_ord_id == again.cl_ord_id and got[-1].seq == 4
        assert (client.reconnects, client.duplicates, client.gaps) == (1, 0, [])


def test_the_async_client_asks_for_its_session_id_too(running):
    async def main():
        async with AsyncClient(running.server.plaintext_endpoints[0]) as client:
            order = await client.new_order("AAPL", "buy", "10", "101.25", account="ACC1")
            reply = await client.recv(5)
            assert reply.cl_ord_id == order.cl_ord_id and reply.seq == 2
            assert client.session_id is not None
    asyncio.run(main())


def test_a_request_sent_before_the_loss_is_noticed_never_lands_in_another_session(strict):
    """A request sent on a connection already gone, before the client noticed (here: on its
    socket directly, once the engine has dropped the connection), waits in that socket and
    reaches the engine through libzmq's own reconnect of it. There it is the session's:
    each connection has a routing id of its own, which the engine maps to the session; an
    id the engine makes up would open a new session for it that nobody resumes (the order
    working, its acknowledgement never seen)."""
    for _ in range(2):
        with Client(strict.server.plaintext_endpoints[0]) as client:
            client.heartbeat()
            session_id = client.recv(5).session_id
            client.send_raw(b"\x00" * 20000)
            time.sleep(0.05)  # dropped: what is sent now waits in the socket
            leaked = order_for(client)
            client.socket.send(encoder().encode(leaked))
            time.sleep(0.4)  # libzmq reconnected the old socket and delivered it
            following = order_for(client)
            client.send(following)
            got = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == following.cl_ord_id, 5)
            got += client.drain(0.2)
            handled = strict.call(lambda: [(s, r.cl_ord_id)
                                           for s, r in strict.server.handler.requests])
            in_sessions = [s for s, cl_ord_id in handled if cl_ord_id == leaked.cl_ord_id]
            acks = [m for m in got if getattr(m, "cl_ord_id", None) == leaked.cl_ord_id]
            assert in_sessions in ([], [session_id])  # ([]: it died with the connection)
            assert len(acks) == len(in_sessions)  # answered in the session: the client has it
            assert (client.session_id, client.duplicates, client.gaps) == (session_id, 0, [])


def test_a_heartbeat_below_a_millisecond_is_refused_not_turned_off():
    # Waits are whole milliseconds: heartbeat_s=0.0004 would probe without a pause (and
    # libzmq, when these were its pings, made it 0: silently off).
    for bad in ({"heartbeat_s": 0.0004}, {"heartbeat_timeout_s": 0.0001},
                {"heartbeat_s": float("nan")}, {"heartbeat_s": -1}):
        with pytest.raises(ValueError, match="at least 0.001 s"):
            Client("tcp://127.0.0.1:1", **bad)
    Client("tcp://127.0.0.1:1", heartbeat_s=0).close()          # off, as documented


def test_every_exception_of_the_client_library_is_documented():
    """A program using engine.client must be told what it can raise (protocol.md): the
    ClientProtocolError of an undecodable message or a broken report was not."""
    import inspect
    from pathlib import Path
    import engine.client
    text = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")
    errors = [name for name, obj in vars(engine.client).items()
              if inspect.isclass(obj) and issubclass(obj, BaseException)
              and obj.__module__ == "engine.client" and not name.startswith("_")]
    assert errors and [name for name in errors if f"engine.client.{name}" not in text
                       and f"`{name}`" not in text] == []


def test_every_public_method_of_the_client_is_documented():
    """protocol.md lists what a program can call (bulk, build_new_order and next_cl_ord_id were
    in the docstrings only)."""
    import re
    from pathlib import Path
    from engine.client import AsyncClient, Client
    text = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")
    for cls in (Client, AsyncClient):
        methods = [name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))]
        assert [m for m in methods if not re.search(rf"`{m}[`(]", text)] == [], cls.__name__
