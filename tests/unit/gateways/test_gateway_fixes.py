"""Gateway fixes: a replay asked from past the journal's end claims only the
seqs that exist, and under process isolation the engine sees the child's
last error text (not only its counters)."""
import msgspec
import zmq

from engine.journal import JournalWriter, journal_identity
from gateways import from_config
from tests.unit.gateways.helpers import free_port, wait_until, write_fills


def ask_replay(endpoint: str, request: dict) -> tuple[dict, list[int]]:
    """One replay request over a real REQ socket: (status, seqs of the events)."""
    context = zmq.Context.instance()
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    try:
        req.send(msgspec.msgpack.encode(request))
        assert req.poll(5000), "the replay service did not answer"
        status, *frames = req.recv_multipart()
    finally:
        req.close()
    return msgspec.msgpack.decode(status), [int.from_bytes(frames[i + 1][:8], "big")
                                            for i in range(0, len(frames), 3)]


def zmq_gateway(tmp_path, **keys):
    """A ZeroMQ gateway of the journal at ``tmp_path / "journal"``, on free ports, in a
    thread, not started (``keys``: more of its table)."""
    [gateway] = from_config([{"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
                              "replay_endpoint": "tcp://127.0.0.1:0", "isolation": "thread",
                              **keys}], tmp_path / "journal", tmp_path / "gw")
    return gateway


def journal_and_gateway(tmp_path, fills: int) -> tuple:
    """A journal at ``tmp_path / "journal"`` holding ``fills`` fills (each after its
    command), and a :func:`zmq_gateway` of it."""
    journal = JournalWriter(tmp_path / "journal", fsync="none")
    write_fills(journal, 1, fills)
    return journal, zmq_gateway(tmp_path)


def test_replay_from_past_the_end_claims_only_what_the_journal_holds(tmp_path):
    journal, gateway = journal_and_gateway(tmp_path, 10)
    gateway.start()
    try:
        last = journal.last_seq
        for first in (last + 1, last + 1000, 2**63 - 1):
            status, seqs = ask_replay(gateway.replay_endpoint, {"from": first, "to": 0})
            assert status == {"ok": True, "through": last, "end": True,
                              "journal": journal_identity(tmp_path / "journal")} and seqs == []
        # So a client resuming from through + 1 gets what is written next.
        written = write_fills(journal, 11, 3)
        status, seqs = ask_replay(gateway.replay_endpoint, {"from": last + 1, "to": 0})
        assert seqs == written and status["through"] == journal.last_seq and status["end"]
        # An empty range before the end is still answered as asked.
        status, seqs = ask_replay(gateway.replay_endpoint, {"from": 3, "to": 2})
        assert status["through"] == 2 and seqs == []
    finally:
        gateway.stop()
        journal.close()


def test_the_last_error_of_a_gateway_in_a_child_process_reaches_the_engine(tmp_path):
    journal = JournalWriter(tmp_path / "journal", fsync="none")
    write_fills(journal, 1, 3)
    dead = free_port()  # nobody listens: every connection attempt fails
    [gateway] = from_config([{"type": "postgres", "isolation": "process", "connect_timeout_s": 1,
                              "dsn": f"postgresql://postgres@127.0.0.1:{dead}/test",
                              "backoff_initial_ms": 20, "backoff_max_ms": 100}],
                            tmp_path / "journal", tmp_path / "gw")
    gateway.start()
    try:
        assert wait_until(lambda: gateway.metrics.failures >= 2, 20), gateway.metrics.snapshot()
        error = gateway.metrics.last_error
        assert error.startswith("OperationalError: ") and str(dead) in error
    finally:
        gateway.stop(timeout=5)
        journal.close()
    assert gateway.metrics.last_error.startswith("OperationalError: ")  # still there once stopped


def test_a_replay_request_with_a_seq_that_is_not_an_integer_or_an_unknown_key_is_refused(tmp_path):
    # "from": 1.9 was cut to 1 and "from": "3" read as 3 (int() of whatever came), and a
    # misspelt key ("form") was ignored, the answer starting from seq 1: a client's
    # mistake served as if it had asked for something else.
    journal, gateway = journal_and_gateway(tmp_path, 5)
    gateway.start()
    try:
        for request, error in (({"from": 1.9}, "Expected `int`, got `float` - at `$.from`"),
                               ({"from": "3"}, "Expected `int`, got `str` - at `$.from`"),
                               ({"to": True}, "Expected `int`, got `bool` - at `$.to`"),
                               ({"form": 3}, "Object contains unknown field `form`")):
            status, seqs = ask_replay(gateway.replay_endpoint, request)
            assert status["ok"] is False and error in status["error"], (request, status)
            assert seqs == []
        status, seqs = ask_replay(gateway.replay_endpoint, {"from": 3, "to": 6})
        assert status["ok"] and seqs == [4, 6]
    finally:
        gateway.stop()
        journal.close()


def test_a_cursor_file_whose_seq_is_not_a_whole_number_is_read_as_none(tmp_path, caplog):
    # int() of the file's seq raised at every open ("abc": the gateway retried for ever,
    # delivering nothing) or cut it (41.9 read as 41). Now such a file is read as none, as
    # an unreadable one is: the gateway starts from its destination (consumers drop
    # repeats by seq), with a warning.
    import orjson
    journal = JournalWriter(tmp_path / "journal", fsync="none")
    write_fills(journal, 1, 5)
    for seq in ("abc", 4.5, -3, True, None):
        gateway = zmq_gateway(tmp_path, poll_interval_ms=1)
        gateway.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        gateway.cursor_path.write_bytes(orjson.dumps(
            {"seq": seq, "journal": journal_identity(tmp_path / "journal")}))
        caplog.clear()
        with caplog.at_level("WARNING", logger="gateways"):
            gateway.start()
            try:
                assert gateway.wait_for(journal.last_seq, 10), (seq, gateway.metrics.last_error)
            finally:
                gateway.stop()
        assert "holds no seq as a whole number" in caplog.text, seq
    journal.close()
