"""A client that reads slower than the engine sends misses nothing: the engine holds what
ZeroMQ will not take yet and sends it, in order, as the client catches up.

A real engine with a small ``send_hwm`` and a raw DEALER with a small receive
queue that does not read while thousands of reports are sent (more than the
two queues and the kernel's socket buffers hold): ZeroMQ refuses frames for
that peer. Before, each refused frame waited only in the resend ring and the
client saw gaps; the same holds for a resend's replay, which used to go out
in one burst: a client that resumes after missing hundreds of reports and
reads slowly gets each once, in order, and a request it sends half-way is
served after the replay.
"""
import time

import msgspec
import zmq

from engine.messages import (BulkNewOrders, ExecutionReport, Heartbeat, HeartbeatAck, NewOrder,
                             ResendRequest, response_decoder)
from ext.types import Side, TimeInForce
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

ORDERS = 3000  # far-off IOC buys: NEW then CANCELED each, 6,000 reports
GAP_ORDERS = 400  # missed by a client that resumes: 800 reports


def _dealer(endpoint, rcvhwm=10):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _engine_config(tmp_path, *, send_hwm, ring=10000):
    """An engine whose send queue per peer holds ``send_hwm`` messages, and whose sessions
    keep ``ring`` for resends (the backlog's bound); (path, endpoint)."""
    port = free_port()
    path = tmp_path / "engine.toml"
    # (no request_rate: some tests here make their traffic out of heartbeats)
    path.write_text(config_text(port, tmp_path / "journal", intake=(
        f"send_hwm = {send_hwm}\nresend_ring_size = {ring}\nrequest_rate = 0")))
    return path, f"tcp://127.0.0.1:{port}"


def _send_orders(sock, n):
    """``n`` far-off IOC buys o0..o{n-1} (NEW then CANCELED each), in bulks of 200."""
    for k in range(0, n, 200):  # (bulks within max_message_bytes)
        sock.send(msgspec.msgpack.encode(BulkNewOrders(orders=[
            NewOrder(cl_ord_id=f"o{i}", account="DEMO1", symbol="AAA", side=Side.BUY,
                     qty="1", price="1.00", time_in_force=TimeInForce.IOC)
            for i in range(k, min(n, k + 200))])))


def _read_all(sock, decode, until, timeout=30.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100):
            got.append(decode(sock.recv()))
            if until(got[-1]):
                return got
    raise AssertionError(f"{len(got)} messages, the last {got[-1:]}")


def test_a_slow_reader_gets_every_message_in_order(tmp_path):
    path, endpoint = _engine_config(tmp_path, send_hwm=10)
    decode = response_decoder().decode
    with ThreadedEngine(path):
        sock = _dealer(endpoint)
        try:
            _send_orders(sock, ORDERS)
            time.sleep(1.5)  # not reading: the engine meets a full queue
            got = _read_all(sock, decode, lambda m: isinstance(m, ExecutionReport) and
                            m.cl_ord_id == f"o{ORDERS - 1}" and m.exec_type.name == "CANCELED")
            seqs = [m.seq for m in got]
            assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat"
            assert len(seqs) == 2 * ORDERS
            # The same client asks for everything again: the replay arrives whole.
            sock.send(msgspec.msgpack.encode(ResendRequest(begin_seq=1)))
            time.sleep(1.0)
            replay = _read_all(sock, decode, lambda m: isinstance(m, HeartbeatAck))
            assert [m.seq for m in replay[:-1]] == seqs
        finally:
            sock.close()


def test_a_full_backlog_sends_what_it_could_not_take_once_it_has_drained(tmp_path):
    """The backlog holds 100 here and the reader stalls for 6,000 reports. A full backlog
    dropped its oldest frames, older than anything the ring kept: the reader was told of a gap
    that a resend could no longer fill (audit: 3,015 of 20,015 lost for good). Now it takes
    nothing new until it has drained, then the engine sends the rest again, unasked."""
    path, endpoint = _engine_config(tmp_path, send_hwm=10, ring=100)
    decode = response_decoder().decode
    with ThreadedEngine(path) as engine:
        sock = _dealer(endpoint)
        try:
            _send_orders(sock, ORDERS)
            time.sleep(1.5)  # not reading: the backlog fills and drops
            got = _read_all(sock, decode, lambda m: isinstance(m, ExecutionReport) and
                            m.cl_ord_id == f"o{ORDERS - 1}" and m.exec_type.name == "CANCELED")
            assert engine.service.metrics.registry.get_sample_value(
                "kronos_send_dropped_total") > 0
            seqs = [m.seq for m in got]
            assert seqs == list(range(1, 2 * ORDERS + 1)), "a gap, a repeat or out of order"
        finally:
            sock.close()


def test_messages_sent_while_the_journal_is_read_wait_behind_the_dropped_ones(tmp_path):
    """The dropped messages older than the ring are read from the journal on a worker thread.
    Messages the engine sent meanwhile (here: answers to the heartbeats it is still taking)
    went straight out, ahead of them (audit: 1..55, 7720..7773, 56..7719): a client keeping
    the highest seq seen would drop 56..7719 as repeats. They now wait behind the replay:
    the client sees one unbroken sequence, unasked. (Small journal segments: a read over
    many files leaves the loop time to answer meanwhile.)"""
    beats = 12000
    path, endpoint = _engine_config(tmp_path, send_hwm=5, ring=50)
    path.write_text(path.read_text().replace('fsync = "none"',
                                             'fsync = "none"\nrotate_bytes = 4096'))
    decode = response_decoder().decode
    with ThreadedEngine(path) as engine:
        sock = _dealer(endpoint, rcvhwm=5)
        try:
            for i in range(beats):
                sock.send(msgspec.msgpack.encode(Heartbeat(test_req_id=f"x{i:06d}-" + "p" * 50)))
            time.sleep(2.5)  # not reading: the backlog fills and drops
            got = []
            while len(got) < beats and sock.poll(5000):
                got.append(decode(sock.recv()))
                if len(got) % 200 == 0:
                    time.sleep(0.05)  # a slow reader, still
            assert engine.service.metrics.registry.get_sample_value(
                "kronos_send_dropped_total") > 0
            seqs = [m.seq for m in got]
            breaks = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
            assert not breaks and seqs[0] == 1, f"out of order at {breaks[:3]}"
            assert len(seqs) == beats
        finally:
            sock.close()


def _recv(sock, decode, timeout=5.0, got=()):
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError(f"nothing more after {len(got)} messages, seq "
                             f"{[m.seq for m in got[:3]]}...{[m.seq for m in got[-3:]]}")
    return decode(sock.recv())


def test_a_resumed_session_replays_a_large_gap_to_a_slow_reader(tmp_path):
    path, endpoint = _engine_config(tmp_path, send_hwm=4)
    decode = response_decoder().decode
    encode = msgspec.msgpack.encode
    with ThreadedEngine(path) as engine:
        first = _dealer(endpoint, rcvhwm=1000)
        first.send(encode(Heartbeat()))
        ack = _recv(first, decode)
        assert isinstance(ack, HeartbeatAck) and ack.seq == 1
        _send_orders(first, GAP_ORDERS)
        last = 1 + 2 * GAP_ORDERS
        session = engine.call(lambda: engine.service.intake.sessions[ack.session_id])
        deadline = time.monotonic() + 10
        while engine.call(lambda: session.seq) < last:
            assert time.monotonic() < deadline, f"engine at seq {session.seq} of {last}"
            time.sleep(0.05)
        # Gone without reading a report. (Only now: a request still unread
        # when the connection goes would open a session of its own.)
        first.close()

        again = _dealer(endpoint, rcvhwm=4)
        try:
            again.send(encode(ResendRequest(begin_seq=2, session_id=ack.session_id)))
            time.sleep(0.5)  # not reading yet: the engine meets a full queue
            got = []
            while not (got and isinstance(got[-1], HeartbeatAck) and got[-1].test_req_id == "mid"):
                got.append(_recv(again, decode, got=got))
                if len(got) == GAP_ORDERS:
                    again.send(encode(Heartbeat(test_req_id="mid")))
                if len(got) % 50 == 0:
                    time.sleep(0.02)  # a slow reader
            closing = next(m for m in got if isinstance(m, HeartbeatAck)
                           and m.resend_end_seq is not None)
            assert (closing.resend_begin_seq, closing.resend_end_seq) == (2, last)
            replay = [m for m in got if isinstance(m, ExecutionReport)]
            assert [m.seq for m in replay] == list(range(2, last + 1)), "a gap or a repeat"
            assert sorted((m.cl_ord_id, m.exec_type.name) for m in replay) == sorted(
                (f"o{n}", t) for n in range(GAP_ORDERS) for t in ("NEW", "CANCELED"))
            # The closing ack, then the mid-replay heartbeat's, numbered on.
            assert [m.seq for m in got[len(replay):]] == [last + 1, last + 2]
        finally:
            again.close()


def test_replies_a_slow_reader_has_not_taken_at_shutdown_are_counted_and_said(tmp_path, caplog):
    """A graceful stop cannot wait for a reader that does not read: what its backlog holds
    is left (the journal has it, a resume gets it), said in a warning and counted, not
    dropped in silence."""
    import logging
    path, endpoint = _engine_config(tmp_path, send_hwm=5)
    sock = _dealer(endpoint, rcvhwm=5)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.intake"):
            with ThreadedEngine(path) as engine:
                _send_orders(sock, 1000)
                deadline = time.monotonic() + 10
                while not engine.call(lambda: engine.service.intake._backlogged):
                    assert time.monotonic() < deadline, "no backlog formed"
                    time.sleep(0.05)
                metrics = engine.service.metrics
        warned = [r.getMessage() for r in caplog.records
                  if "not sent at shutdown" in r.getMessage()]
        assert len(warned) == 1 and "resuming its session" in warned[0]
        held = int(warned[0].split("intake: ")[1].split()[0])
        assert held > 0 and metrics.registry.get_sample_value("kronos_send_dropped_total") >= held
    finally:
        sock.close()


def _group_commit_engine(tmp_path, **keys):
    """An engine configuration under fsync group with a 0.3 s commit, so that replies
    wait for their sync long enough to be caught early; returns ``(path, endpoint)``."""
    path, endpoint = _engine_config(tmp_path, **keys)
    path.write_text(path.read_text().replace('fsync = "none"',
                                             'fsync = "group"\ngroup_commit_us = 300000'))
    return path, endpoint


def _read_noting_durable(sock, journal, received: list) -> None:
    """Read every message waiting on ``sock``: its seq and the journal's durable mark then."""
    from engine.journal import written_mark
    decode = response_decoder().decode
    while True:
        try:
            data = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        received.append((decode(data).seq, written_mark(journal)[0]))


def _assert_none_before_durable(journal, received: list) -> dict:
    """No message in ``received`` arrived before its journal record was durable; returns
    the journal record of each seq the session was sent."""
    from engine.journal import JournalReader, RecordKind
    record = {}
    for r in JournalReader(journal):
        if r.kind == RecordKind.EVENT:
            event = msgspec.msgpack.decode(r.payload).get("event", {})
            record.setdefault(event.get("seq"), r.seq)
    early = [(seq, record[seq], mark) for seq, mark in received if record[seq] > mark]
    assert not early, f"{len(early)} messages arrived before their record was durable: " \
                      f"(seq, record, durable) {early[:3]}"
    return record


def test_a_slow_readers_dropped_messages_are_sent_again_only_once_durable(tmp_path):
    """Under fsync group a reply waits for the committer's sync of its batch. A slow
    reader's backlog that had dropped messages, once drained, had them sent again from the
    ring up to the session's last seq: the replies still waiting for their sync among
    them, so the client held acknowledgements the journal did not yet hold durably (a
    power loss then would lose orders the client was told of), and got each again at its
    release. Now what is sent again stops before what is not released, which follows."""
    path, endpoint = _group_commit_engine(tmp_path, send_hwm=10, ring=100)
    journal = tmp_path / "journal"
    more, received = 300, []  # (seq, the durable mark when it arrived)
    with ThreadedEngine(path) as engine:
        sock = _dealer(endpoint)
        try:
            _send_orders(sock, ORDERS // 3)
            time.sleep(1.5)  # not reading: the backlog fills and drops
            # Reading now, with replies still coming (each batch held 0.3 s for its sync).
            total, sent, seen = 2 * (ORDERS // 3 + more), 0, set()
            deadline = time.monotonic() + 60
            while len(seen) < total:
                assert time.monotonic() < deadline, f"{len(seen)} of {total} seqs arrived"
                if sock.poll(5):
                    count = len(received)
                    _read_noting_durable(sock, journal, received)
                    seen.update(seq for seq, _ in received[count:])
                if sent < more and len(received) > 300:
                    sock.send(msgspec.msgpack.encode(NewOrder(
                        cl_ord_id=f"m{sent}", account="DEMO1", symbol="AAA", side=Side.BUY,
                        qty="1", price="1.00", time_in_force=TimeInForce.IOC)))
                    sent += 1
            assert engine.service.metrics.registry.get_sample_value(
                "kronos_send_dropped_total") > 0
        finally:
            sock.close()
    _assert_none_before_durable(journal, received)
    firsts = list(dict.fromkeys(seq for seq, _ in received))
    assert firsts == list(range(1, total + 1)), "a gap, or out of order"


def test_a_resend_from_the_journal_sends_no_reply_before_it_is_durable(tmp_path):
    """A ResendRequest reaching past the ring reads the journal, then sends the ring's part
    straight after it, up to the session's last seq: replies still waiting for the
    committer's sync among them went out before it (fsync group). They now follow at
    their release."""
    path, endpoint = _group_commit_engine(tmp_path, send_hwm=1000, ring=100)
    journal = tmp_path / "journal"
    received = []  # (seq, the durable mark when it arrived)
    with ThreadedEngine(path) as engine:
        sock = _dealer(endpoint, rcvhwm=100_000)

        def pump(seconds):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if sock.poll(5):
                    _read_noting_durable(sock, journal, received)
        try:
            _send_orders(sock, 200)  # 400 replies: the ring keeps the last 100
            pump(1.5)
            for k in range(5):  # an order, and at once a resend of everything
                sock.send(msgspec.msgpack.encode(NewOrder(
                    cl_ord_id=f"x{k}", account="DEMO1", symbol="AAA", side=Side.BUY, qty="1",
                    price="1.00", time_in_force=TimeInForce.IOC)))
                sock.send(msgspec.msgpack.encode(ResendRequest(begin_seq=1)))
                pump(0.5)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # until a second passes with nothing more
                count = len(received)
                pump(1.0)
                if len(received) == count:
                    break
        finally:
            sock.close()
    record = _assert_none_before_durable(journal, received)
    assert len({seq for seq, _ in received}) == max(record) > 2 * 205  # (each, at least once)
