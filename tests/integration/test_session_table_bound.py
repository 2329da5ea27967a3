"""Sessions intake lets go (evicted at max_sessions, or past session_retention_s) leave the
pipeline too: its table of sessions, each with its resend ring, grew with every connection
that ever sent a request, past max_sessions, for the life of the process."""
import time

from engine.client import Client
from engine.messages import OrderStatusReply, OrderStatusRequest
import pytest

from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

# The engine's limit, or the key's (every plaintext client is the one key "plaintext"):
# each makes room and refuses alike.
LIMITS = pytest.mark.parametrize("limit", ["max_sessions", "max_sessions_per_key"])


def test_the_pipelines_sessions_stay_within_max_sessions(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000",
        "heartbeat_timeout_ms = 200\nheartbeat_interval_ms = 100\nmax_sessions = 5"))
    with ThreadedEngine(path) as engine:
        for n in range(40):  # short connections, each asking once, then gone
            if n % 4 == 0:
                time.sleep(0.25)  # silent past the timeout: the oldest may be evicted
            with Client(endpoint) as client:
                client.send(OrderStatusRequest(cl_ord_id="nope", account="DEMO1"))
                assert isinstance(client.recv(5), OrderStatusReply)
        held = engine.call(lambda: (len(engine.service.intake.sessions),
                                    set(engine.service.pipeline.sessions)))
        assert held[0] <= 5
        assert held[1] <= set(engine.call(lambda: list(engine.service.intake.sessions)))


@LIMITS
def test_a_client_resumes_its_session_when_the_engine_holds_max_sessions(tmp_path, limit):
    """The frame carrying a resume needs a session for a moment; at the limit it was refused
    ("too many sessions") or evicted an idle session, possibly the one being resumed."""
    from engine.messages import ExecType, ExecutionReport, HeartbeatAck
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", f"heartbeat_timeout_ms = 60000\n{limit} = 2"))
    with ThreadedEngine(path) as engine, Client(endpoint) as other:
        other.heartbeat()
        other.recv(5)
        first = Client(endpoint)
        first.heartbeat()
        first.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a1")
        acked = first.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
        session_id = first.session_id
        first.close()  # its session is held: the engine cannot know the connection is gone
        assert engine.call(lambda: len(engine.service.intake.sessions)) == 2
        with Client(endpoint) as again:
            again.resume(session_id, acked.seq - 1)
            got = again.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            assert [(m.cl_ord_id, m.exec_type) for m in got if isinstance(m, ExecutionReport)] \
                == [("a1", ExecType.NEW)]
            assert got[-1].session_id == session_id
            assert engine.call(lambda: sorted(engine.service.intake.sessions)) == \
                sorted([session_id, other.session_id])


@LIMITS
def test_a_connection_whose_session_was_evicted_is_told_not_renumbered(tmp_path, limit):
    """A connected session that only timed out can be evicted for a newcomer; its next
    message opened a new session numbered from 1, whose acknowledgements its client
    dropped as repeats (an order accepted, the client never knowing)."""
    from engine.messages import ExecutionReport, Heartbeat, Reject
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000",
        f"heartbeat_timeout_ms = 300\nheartbeat_interval_ms = 100\n{limit} = 2"))
    with ThreadedEngine(path), Client(endpoint) as a, Client(endpoint) as b:
        a.heartbeat()
        a.recv(5)
        a.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a-1")
        a.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        b.heartbeat()
        b.recv(5)
        time.sleep(0.6)  # both silent past the timeout: still connected, evictable
        with Client(endpoint) as newcomer:
            newcomer.heartbeat()
            newcomer.recv(5)  # it took the oldest one's place: a's
        a.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a-2")
        told = a.recv(5)
        assert isinstance(told, Reject) and told.seq == 0
        assert (told.reject_name, told.ref_type, told.cl_ord_id) == (
            "RESUME_REFUSED", "NewOrder", "a-2")
        assert "was dropped to make room" in told.text and "reconnect" in told.text
        assert f"intake.{limit}" in told.text
        assert a.duplicates == 0
        a.send(Heartbeat())  # and so on, until it reconnects
        assert isinstance(a.recv(5), Reject)


@LIMITS
def test_refused_resumes_at_max_sessions_leave_no_sessions_behind(tmp_path, limit):
    """A resume at the limit opens its carrier past max_sessions; refused (here: from past
    the session's end), the carrier stayed as a session of its own, one more per try."""
    import msgspec
    import zmq
    from engine.messages import HeartbeatAck
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", f"heartbeat_timeout_ms = 60000\n{limit} = 2"))
    context = zmq.Context()
    with ThreadedEngine(path) as engine, Client(endpoint) as a, Client(endpoint) as b:
        for client in (a, b):
            client.heartbeat()
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        try:
            for n in range(3):
                dealer = context.socket(zmq.DEALER)
                dealer.linger = 0
                dealer.connect(endpoint)
                dealer.send(msgspec.msgpack.encode({"type": "ResendRequest", "v": 1,
                                                    "begin_seq": 50, "session_id": a.session_id}))
                assert dealer.poll(5000)
                refused = msgspec.msgpack.decode(dealer.recv())
                assert (refused["reject_name"], refused["seq"]) == ("RESUME_REFUSED", 0)
                assert f"{limit} (2)" in refused["text"]
                dealer.send(msgspec.msgpack.encode({"type": "Heartbeat", "v": 1}))
                assert dealer.poll(5000)
                assert msgspec.msgpack.decode(dealer.recv())["type"] == "Reject"
                dealer.close()
            assert engine.call(lambda: sorted(engine.service.intake.sessions)) == \
                sorted([a.session_id, b.session_id])
        finally:
            context.destroy(linger=0)  # (a failed assertion leaves a socket open)


def test_a_session_intake_dropped_stays_dropped_across_a_restart(tmp_path):
    """Recovery restored every session the journal ever named, each with its resend
    ring: after a kill -9 the engine held more than max_sessions, and a session evicted
    before the crash, refused RESUME_REFUSED then, could be resumed again."""
    from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject
    from tests.integration.engine_harness import kill_9, kill_if_running, start_subprocess
    port = free_port()
    path, endpoint, log = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}", \
        tmp_path / "engine.log"
    path.write_text(config_text(port, tmp_path / "journal", fsync="always").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 60000\nmax_sessions = 2"))
    proc = start_subprocess(path, log)
    try:
        with Client(endpoint) as first:
            first.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="f1")
            acked = first.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            dropped = first.session_id
        for _ in range(3):  # each newcomer evicts the longest silent session closed before it
            with Client(endpoint) as later:
                later.heartbeat()
                later.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        with Client(endpoint) as again:
            again.resume(dropped, acked.seq)
            assert again.recv_until(lambda m: isinstance(m, Reject), 5)[-1].reject_name == \
                "RESUME_REFUSED"
        kill_9(proc)
        proc = start_subprocess(path, log)
        with Client(endpoint) as again:
            again.resume(dropped, acked.seq)
            answer = again.recv_until(lambda m: isinstance(m, (Reject, HeartbeatAck)), 5)[-1]
            assert isinstance(answer, Reject) and answer.reject_name == "RESUME_REFUSED"
        with Client(endpoint) as other:
            # Its order is the engine's all the same.
            other.status("f1", account="DEMO1")
            got = other.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
            assert got.found and got.report.exec_type == ExecType.NEW
    finally:
        kill_if_running(proc)


def test_a_dropped_sessions_closed_connections_do_not_keep_it(tmp_path):
    """Each closed connection stays in its listener's ``departed`` map for a late frame; a
    session intake dropped stayed there too, with its resend ring, bounded only by
    max_sessions (10,000 by default), while one resumed session at the head of the map kept
    the watchdog from clearing anything behind it: memory grew with every session dropped."""
    from engine.messages import HeartbeatAck
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 60000\nmax_sessions_per_key = 3"))
    with ThreadedEngine(path) as engine:
        first = Client(endpoint, heartbeat_s=0)
        first.heartbeat()
        first.recv(5)
        session_id, last = first.session_id, first.last_seq
        first.close()
        time.sleep(0.3)
        with Client(endpoint, heartbeat_s=0) as pinned:  # resumed: alive at the map's head
            pinned.resume(session_id, last)
            pinned.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            for _ in range(12):
                with Client(endpoint, heartbeat_s=0) as brief:
                    for _ in range(20):
                        brief.heartbeat()
                    brief.recv_until(lambda m: brief.last_seq >= 20, 5)
                time.sleep(0.05)
            time.sleep(0.3)

            def held():
                intake = engine.service.intake
                kept = [s for listener in intake._listeners for s in listener.departed.values()]
                return len(kept), sum(s.session_id not in intake.sessions for s in kept)

            kept, dropped = engine.call(held)
    assert kept >= 1 and dropped == 0


def test_a_closed_connections_silence_is_not_a_warning(tmp_path, caplog):
    """Every client that closed its connection was later logged at WARNING as "silent":
    one warning per session ever opened, drowning the silent open connections."""
    import logging
    caplog.set_level(logging.INFO, logger="engine.intake")
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 300\nheartbeat_interval_ms = 100"))
    with ThreadedEngine(path):
        with Client(endpoint, heartbeat_s=0) as gone:
            gone.send(OrderStatusRequest(cl_ord_id="nope", account="DEMO1"))
            gone.recv(5)
        quiet = Client(endpoint, heartbeat_s=0)  # open, but silent
        quiet.send(OrderStatusRequest(cl_ord_id="nope", account="DEMO1"))
        quiet.recv(5)
        time.sleep(1.0)
        quiet.close()
    silent = [(r.levelno, r.getMessage()) for r in caplog.records if "silent for" in r.getMessage()]
    assert sorted(level for level, _ in silent) == [logging.INFO, logging.WARNING]
    assert all((level == logging.INFO) == text.endswith("(its connection closed)")
               for level, text in silent)


def test_a_fill_for_a_session_let_go_is_made_durable_at_once(tmp_path):
    """A report for a session intake let go is journaled, not sent. Nothing flushed it: a
    fill waited in memory, not on disk and not published, until some client spoke, and a
    kill -9 meanwhile lost it (the order then routed again for lots it had bought)."""
    from engine.messages import ExecType, ExecutionReport
    from ext.book import OP_ADD
    from ext.types import Side, StpMode
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal", fsync="always").replace(
        "heartbeat_timeout_ms = 60000",
        "heartbeat_timeout_ms = 200\nheartbeat_interval_ms = 100\nmax_sessions_per_key = 1"))
    with ThreadedEngine(path) as engine:
        pipeline = engine.service.pipeline
        with Client(endpoint) as a:
            a.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="f1")
            a.recv_until(lambda m: isinstance(m, ExecutionReport)
                         and m.exec_type == ExecType.NEW, 5)
        time.sleep(0.4)                     # silent past its timeout: it may be evicted
        with Client(endpoint) as b:         # the key's one session: a's is let go
            b.heartbeat()
            b.recv(5)
        assert engine.call(lambda: len(pipeline.sessions)) <= 1
        time.sleep(0.3)

        def sell_into_it():
            # Someone else at the venue sells into the order's child: a fill, and
            # nothing for any client still connected.
            order = pipeline.orders.find("DEMO1", "f1")
            (child,) = order.children.values()
            market = pipeline.venues.market
            code = market.loop.external(market.book_index(child.venue, "AAA"), OP_ADD, 1,
                                        int(Side.SELL), child.price, child.qty, tif=0,
                                        account=99, stp=int(StpMode.STP_NONE))
            return code, pipeline.journal.last_seq

        code, before = engine.call(sell_into_it)
        assert code == 0
        deadline = time.monotonic() + 5
        while engine.call(lambda: pipeline.orders.find("DEMO1", "f1").cum_qty) == 0:
            assert time.monotonic() < deadline, "the venue's fill never reached the order"
            time.sleep(0.02)
        time.sleep(0.3)
        last, durable = engine.call(lambda: (pipeline.journal.last_seq,
                                             pipeline.journal.durable_seq))
        assert last > before and durable == last
