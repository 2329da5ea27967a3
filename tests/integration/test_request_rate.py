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

# A burst of 4 that refills at one a second: the test's few milliseconds add none.
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
        assert [m.test_req_id for m in acks] == ["h0", "h1", "h2", "h3"]
        assert [m.seq for m in acks] == [1, 2, 3, 4]
        assert len(refused) == 6
        assert {(m.reject_name, m.seq, m.ref_type) for m in refused} == {("THROTTLED", 0, "Heartbeat")}
        assert "intake.request_rate" in refused[0].text


def test_throttled_answers_are_not_journaled(tmp_path):
    with serving(tmp_path, intake=SLOW) as (_, endpoint), \
            Client(endpoint, auto_resume=False) as client:
        for n in range(4):
            client.heartbeat(test_req_id=f"h{n}")
        _collect(client, 4, HeartbeatAck)
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
        assert ack.seq == 5
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
        for n in range(6):
            client.heartbeat(test_req_id=f"h{n}")
        assert sum(isinstance(m, Reject) for m in _collect(client, 6, HeartbeatAck)) == 2
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
        for n in range(3):
            client.heartbeat(test_req_id=f"a{n}")
        assert sorted(type(m).__name__ for m in _collect(client, 3, HeartbeatAck)) == \
            ["HeartbeatAck", "HeartbeatAck", "Reject"]
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
