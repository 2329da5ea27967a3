"""``intake.request_rate``: requests other than orders are bounded per client key.

Before it, a key that flooded heartbeats, status requests or garbage was answered
as fast as it sent, each answer numbered and journaled (about 20 MB of journal a
second, measured). Past the rate a request is now answered ``THROTTLED`` outside
the session's numbering (``seq`` 0): nothing is journaled or kept for it, and
orders, cancels and admin requests are not held back.
"""
import time

from engine.client import Client
from engine.journal import JournalReader
from engine.messages import (ExecType, ExecutionReport, HeartbeatAck, OrderStatusReply,
                             Reject)
from tests.integration.engine_harness import serving

# A burst of 4 that refills at one a second: the test's few milliseconds add none. (A
# session's first Heartbeat is not charged: it learns the session's id.)
SLOW = "request_rate = 1\nrequest_burst = 4\n"


def _collect(client, count, kind):
    seen = []

    def done(message):
        if isinstance(message, (kind, Reject)):
            seen.append(message)
        return len(seen) >= count
    client.recv_until(done, 5)
    return seen


def _journal_records(journal_dir):
    """Records in the engine's journal so far."""
    return sum(1 for _ in JournalReader(journal_dir))


def test_heartbeats_past_the_burst_are_throttled_outside_the_numbering(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(10):
            client.heartbeat(test_req_id=f"h{n}")
        answers = _collect(client, 10, HeartbeatAck)
        acks = [m for m in answers if isinstance(m, HeartbeatAck)]
        refused = [m for m in answers if isinstance(m, Reject)]
        assert [m.test_req_id for m in acks] == ["h0", "h1", "h2", "h3", "h4"]  # h0 free
        assert [m.seq for m in acks] == [1, 2, 3, 4, 5]
        assert len(refused) == 5
        assert {(m.reject_name, m.seq, m.ref_type) for m in refused} == {("THROTTLED", 0, "Heartbeat")}
        assert "intake.request_rate" in refused[0].text


def test_throttled_answers_are_not_journaled(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(5):  # (the first is free)
            client.heartbeat(test_req_id=f"h{n}")
        _collect(client, 5, HeartbeatAck)
        before = _journal_records(tmp_path / "journal")
        for n in range(200):
            client.status(f"x{n}", account="DEMO1")
        refused = _collect(client, 200, OrderStatusReply)
        assert {(m.reject_name, m.seq) for m in refused} == {("THROTTLED", 0)}
        # An order is still served, numbered after the last ack (5), and is journaled.
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="o1")
        ack = client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                and m.cl_ord_id == "o1", 5)[-1]
        assert isinstance(ack, ExecutionReport) and ack.exec_type == ExecType.NEW
        assert ack.seq == 6
        time.sleep(0.2)  # fsync none: the writer's write happens with the flush; let it land
        # The order's command, events and report: a handful of records, not 200 answers.
        assert _journal_records(tmp_path / "journal") - before < 20


def test_garbage_is_charged_too(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for _ in range(7):
            client.send_raw(b"\xc1 not msgpack")
        # (THROTTLED goes at once; the numbered answers wait for their journal write)
        answers = sorted(_collect(client, 7, Reject), key=lambda m: m.seq)
        assert [(m.reject_name, m.seq) for m in answers] == \
            [("THROTTLED", 0)] * 3 + [("MALFORMED_MESSAGE", n) for n in (1, 2, 3, 4)]


def test_orders_and_cancels_are_not_charged(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(7):  # (the first is free)
            client.heartbeat(test_req_id=f"h{n}")
        assert sum(isinstance(m, Reject) for m in _collect(client, 7, HeartbeatAck)) == 2
        for n in range(6):
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id=f"o{n}")
        acks = client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "o5", 5)
        assert sum(isinstance(m, ExecutionReport) and m.exec_type == ExecType.NEW for m in acks) == 6
        for n in range(6):
            client.cancel(f"o{n}", account="DEMO1", cl_ord_id=f"c{n}")
        done = client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "c5", 5)
        assert sum(isinstance(m, ExecutionReport) and m.exec_type == ExecType.CANCELED
                   for m in done) == 6


def test_the_bucket_refills(tmp_path):
    with serving(tmp_path, intake="request_rate = 50\nrequest_burst = 2\n") as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(4):  # (the first is free)
            client.heartbeat(test_req_id=f"a{n}")
        assert sorted(type(m).__name__ for m in _collect(client, 4, HeartbeatAck)) == \
            ["HeartbeatAck", "HeartbeatAck", "HeartbeatAck", "Reject"]
        time.sleep(0.1)  # 5 requests' worth at 50/s; the bucket holds 2
        for n in range(3):
            client.heartbeat(test_req_id=f"b{n}")
        assert sorted(type(m).__name__ for m in _collect(client, 3, HeartbeatAck)) == \
            ["HeartbeatAck", "HeartbeatAck", "Reject"]


def test_zero_is_no_limit(tmp_path):
    with serving(tmp_path, intake="request_rate = 0\n") as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(3000):
            client.heartbeat(test_req_id=f"h{n}")
        answers = _collect(client, 3000, HeartbeatAck)
        assert all(isinstance(m, HeartbeatAck) for m in answers)


# ---------------------------------------------------------------- review of stop 33
# The first version charged every Heartbeat and ResendRequest. A reconnecting client's
# resume answered THROTTLED left it resuming a session the engine had not resumed (every
# later reply dropped as a repeat), each such resume left a session past
# max_sessions_per_key, and engine.client's probe went unanswered, so its session could
# never be resumed.

def test_a_resume_is_served_with_the_bucket_empty(tmp_path):
    with serving(tmp_path, intake="request_rate = 1\nrequest_burst = 2\n") as (engine, endpoint):
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="o1")
            client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
            client.heartbeat()
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)  # the bucket is empty
            session_id = client.session_id
            # Drop the connection (libzmq drops a frame over the hard limit): the next
            # request reconnects, and the new connection's first message is the resume.
            client.send_raw(b"\0" * (engine.config.intake.hard_max_bytes + 1))
            time.sleep(0.5)
            client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="o2")
            ack = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "o2", 5)[-1]
            assert ack.exec_type == ExecType.NEW
            assert client.reconnects == 1 and client.session_id == session_id
            assert not client.resuming and client.duplicates == 0
        assert list(engine.call(lambda: list(engine.service.intake.sessions))) == [session_id]


def test_throttled_keys_resumes_open_no_sessions_past_the_limit(tmp_path):
    import msgspec
    import zmq

    from engine.messages import ResendRequest
    limits = "request_rate = 1\nrequest_burst = 1\nmax_sessions_per_key = 2\n"
    with serving(tmp_path, intake=limits) as (engine, endpoint), \
            Client(endpoint) as first, Client(endpoint, auto_resume=False) as second:
        first.heartbeat()
        session_id = first.recv(5).session_id
        second.heartbeat()
        second.recv(5)
        context = zmq.Context.instance()
        for _ in range(10):
            sock = context.socket(zmq.DEALER)
            sock.connect(endpoint)
            sock.send(msgspec.msgpack.encode(ResendRequest(begin_seq=1, session_id=session_id)))
            assert sock.poll(2000)
            sock.close(0)
        time.sleep(0.2)
        assert engine.call(lambda: len(engine.service.intake.sessions)) <= 2


def test_the_clients_probe_is_answered_with_the_bucket_empty(tmp_path):
    with serving(tmp_path, intake="request_rate = 1\nrequest_burst = 1\n") as (_, endpoint):
        with Client(endpoint, auto_resume=False) as other:
            other.heartbeat()
            other.recv(5)  # another plaintext client spends the shared bucket
            with Client(endpoint) as client:
                client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="p1")
                got = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
                assert not [m for m in got if isinstance(m, Reject)]
                assert client.session_id is not None


def test_a_throttled_refusal_keeps_its_cl_ord_id(tmp_path):
    with serving(tmp_path, intake="request_rate = 1\nrequest_burst = 1\n") as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        client.status("x0", account="DEMO1")
        client.recv(5)
        client.new_order("AAA", "buy", "0", "48.00", account="DEMO1", cl_ord_id="bad-1")
        refused = client.recv(5)
        assert (refused.reject_name, refused.seq, refused.cl_ord_id, refused.ref_type) == \
            ("THROTTLED", 0, "bad-1", "NewOrder")


def test_a_query_for_another_account_is_charged_once(tmp_path):
    with serving(tmp_path, intake="request_rate = 1\nrequest_burst = 1\n") as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        client.status("x1", account="NOPE")
        refused = client.recv(5)
        assert (refused.reject_name, refused.seq) == ("NOT_AUTHORIZED", 1)


# ---------------------------------------------------------------- review prrev
# Intake's refusals of a bulk's orders (a post-only IOC, an account the key may not
# trade, ...) were numbered and journaled one by one and charged to nothing: a key
# resending a bulk of 1000 such orders grew the journal by 1000 rejects a message, at
# any rate, past the request_rate meant to stop exactly that.

def _post_only_ioc(cl_ord_id):
    from engine.messages import NewOrder, OrdType, Side, TimeInForce
    return NewOrder(cl_ord_id=cl_ord_id, account="DEMO1", symbol="AAA", side=Side.BUY,
                    qty="1", price="47.50", ord_type=OrdType.LIMIT,
                    time_in_force=TimeInForce.IOC, post_only=True)


def test_a_bulks_refused_orders_are_charged_and_its_good_ones_served(tmp_path):
    from engine.messages import NewOrder, Side
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        good = NewOrder(cl_ord_id="ok-1", account="DEMO1", symbol="AAA", side=Side.BUY,
                        qty="1", price="47.50")
        client.bulk([_post_only_ioc(f"b{n}") for n in range(6)] + [good] +
                    [_post_only_ioc(f"c{n}") for n in range(3)])
        answers = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "ok-1", 5)
        answers += client.drain(0.3)
        refused = [m for m in answers if isinstance(m, Reject)]
        # The burst (4) pays for four refusals, numbered; the other five are THROTTLED
        # outside the numbering, as any refusal past the rate is.
        assert sorted((m.reject_name, m.seq > 0) for m in refused) == \
            [("INVALID_TIF", True)] * 4 + [("THROTTLED", False)] * 5
        assert {m.cl_ord_id for m in refused} == {f"b{n}" for n in range(6)} | \
            {f"c{n}" for n in range(3)}
        # The good order is an order: risk's throttle, not the request rate, judges it.
        new = [m for m in answers if isinstance(m, ExecutionReport)]
        assert [(m.cl_ord_id, m.exec_type) for m in new] == [("ok-1", ExecType.NEW)]


def test_a_flood_of_refused_bulk_orders_does_not_grow_the_journal(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        client.heartbeat()
        client.recv(5)
        before = _journal_records(tmp_path / "journal")
        for k in range(20):
            client.bulk([_post_only_ioc(f"f{k}-{n}") for n in range(50)])
        refused = _collect(client, 1000, Reject)
        assert sum(m.seq == 0 and m.reject_name == "THROTTLED" for m in refused) >= 990
        time.sleep(0.2)  # (fsync none: let the writer's write land)
        # The commands of nothing taken, and at most the burst's numbered rejects.
        assert _journal_records(tmp_path / "journal") - before < 20
