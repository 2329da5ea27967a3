"""ZeroMQ gateway end to end: 100,000 fills to a live subscriber, and a
subscriber that goes away and comes back with its last seq."""
import time

import pytest

from engine.journal import JournalWriter
from gateways import from_config
from gateways.zmq_pub import Subscriber
from tests.unit.gateways.helpers import write_fills


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


@pytest.fixture
def gateway(tmp_path):
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "heartbeat_ms": 50, "poll_interval_ms": 1, "batch_size": 5000}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    gateway.start()
    yield gateway
    gateway.stop()


def collect(sub, count, timeout_s):
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += sub.recv(timeout_ms=50)
    return out


def test_hundred_thousand_fills_to_a_live_subscriber(journal, gateway):
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0) as sub:
        assert sub.recv(timeout_ms=10) == []  # connected and caught up with an empty journal
        start = time.perf_counter()
        seqs = write_fills(journal, 1, 100_000, with_commands=False)
        got = collect(sub, 100_000, 60)
        elapsed = time.perf_counter() - start
    assert len(got) == 100_000
    assert [e.seq for e in got] == seqs
    assert [e.exec_id for e in got[:3]] == ["E1", "E2", "E3"] and got[-1].exec_id == "E100000"
    print(f"zmq: 100,000 fills written and received in {elapsed:.2f} s; gaps {sub.gaps}, "
          f"replayed {sub.replayed}, duplicates {sub.duplicates}")


def test_subscriber_down_then_back_with_its_last_seq(journal, gateway):
    sub = Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0)
    first = write_fills(journal, 1, 1000)
    got = collect(sub, 1000, 20)
    resume = sub.resume_seq
    sub.close()  # the consumer is down; the engine goes on
    missed = write_fills(journal, 1001, 3000)
    assert gateway.wait_for(journal.last_seq, 20)
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=resume) as back:
        later = write_fills(journal, 4001, 1000)
        got += collect(back, 4000, 20)
        assert back.replayed >= 3000
    assert [e.seq for e in got] == first + missed + later
