"""A gateway delivers no record past the journal's durable seq.

Records are written before they are synced (group commit, or the sync after a
wake-up's write): a power cut can take them, and the engine then gives their
seqs to other records. Delivered early, they were events the engine never had,
and the records later written under their seqs were dropped by consumers as
repeats (seen: a ZeroMQ gateway published each acknowledgement 500 ms before
the client got it under a 500 ms group commit).
"""
import time

from engine.journal import DurableMark, JournalWriter
from gateways import from_config
from tests.unit.gateways.helpers import write_fills


def slow_commit_and_gateway(tmp_path):
    """A buffered writer whose group commit is 400 ms away, and a started ZeroMQ gateway
    (thread isolation) following its journal."""
    writer = JournalWriter(tmp_path / "journal", fsync="group", group_commit_us=400_000,
                           buffered=True)
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
             "replay_endpoint": "tcp://127.0.0.1:0", "poll_interval_ms": 1,
             "isolation": "thread"}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    gateway.start()
    return writer, gateway

def test_records_wait_for_the_group_commit_before_they_are_delivered(tmp_path):
    writer, gateway = slow_commit_and_gateway(tmp_path)
    try:
        write_fills(writer, 1, 5)
        last = writer.flush()  # written: in the file, not yet synced
        written_at = time.monotonic()
        time.sleep(0.15)
        if time.monotonic() - written_at < 0.35:  # (the commit is 400 ms away)
            assert writer.durable_seq == 0
            assert gateway.metrics.cursor == 0 and gateway.metrics.delivered == 0
        assert gateway.wait_for(last, 5)  # once synced, delivered
        assert DurableMark(tmp_path / "journal").seq == last == writer.durable_seq
        assert gateway.metrics.delivered == 5
    finally:
        gateway.stop()
        writer.close()


def test_a_bounded_tail_read_leaves_the_rest_for_the_next_read(tmp_path):
    from engine.journal import JournalReader, RecordKind
    from gateways.tail import JournalTail
    with JournalWriter(tmp_path, fsync="none", rotate_bytes=1024) as writer:
        for n in range(40):  # several segments
            writer.append(RecordKind.EVENT, n.to_bytes(4, "little") * 10)
    tail = JournalTail(JournalReader(tmp_path), chunk_bytes=256)
    assert tail.read(100, upto_seq=0) == []
    assert [r.seq for r in tail.read(100, upto_seq=7)] == list(range(1, 8))
    assert tail.read(100, upto_seq=7) == []
    assert [r.seq for r in tail.read(5, upto_seq=30)] == list(range(8, 13))
    assert [r.seq for r in tail.read(100, upto_seq=30)] == list(range(13, 31))
    assert [r.seq for r in tail.read(100)] == list(range(31, 41))
    tail.close()


def test_a_replay_serves_nothing_past_the_durable_seq(tmp_path):
    """The replay service reads the journal itself: it must stop where publishing stops."""
    import msgspec
    import zmq
    writer, gateway = slow_commit_and_gateway(tmp_path)
    context = zmq.Context()
    req = context.socket(zmq.REQ)
    req.connect(gateway.replay_endpoint)

    def replayed() -> int:
        req.send(msgspec.msgpack.encode({"from": 1}))
        return len(req.recv_multipart()[1:]) // 3
    try:
        write_fills(writer, 1, 5)
        last = writer.flush()
        written_at = time.monotonic()
        early = replayed()
        if time.monotonic() - written_at < 0.35:  # (the commit is 400 ms away)
            assert early == 0
        assert gateway.wait_for(last, 5)
        assert replayed() == 5
    finally:
        req.close()
        context.term()
        gateway.stop()
        writer.close()
