"""A resume's replay reaches a slow reader whole: every missed ``seq`` once, in order.

A real engine with a tiny ``send_hwm``. A client opens a session, sends
hundreds of orders and goes away before reading the reports (they stay in
the session's resend ring: the gap). It comes back on a new connection with
a small receive queue, resumes, and reads slowly. ZeroMQ's ROUTER takes only
``send_hwm`` messages (plus what the buffers hold) for that peer and refuses
the rest; a replay sent in one burst lost everything past that (the engine
used to count it in ``kronos_send_dropped`` and move on). The engine now
holds the rest and sends it as the client reads. Half-way the client also
asks something (a heartbeat): that request must be served too, after the
replay, although the engine's sends of the held replay happen while it
arrives.
"""
import time

import msgspec
import zmq

from engine.messages import (BulkNewOrders, ExecutionReport, Heartbeat, HeartbeatAck, NewOrder,
                             ResendRequest, response_decoder)
from ext.types import Side, TimeInForce
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

ORDERS = 400  # far-off IOC buys: NEW then CANCELED each, 800 reports missed


def _dealer(endpoint, rcvhwm=1000):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _recv(sock, decode, timeout=5.0, got=()):
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError(f"nothing more after {len(got)} messages, seq "
                             f"{[m.seq for m in got[:3]]}...{[m.seq for m in got[-3:]]}")
    return decode(sock.recv())


def test_a_resumed_session_replays_a_large_gap_to_a_slow_reader(tmp_path):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 60000\nsend_hwm = 4"))
    decode = response_decoder().decode
    encode = msgspec.msgpack.encode
    with ThreadedEngine(path) as engine:
        first = _dealer(endpoint)
        first.send(encode(Heartbeat()))
        ack = _recv(first, decode)
        assert isinstance(ack, HeartbeatAck) and ack.seq == 1
        for k in range(0, ORDERS, 200):
            first.send(encode(BulkNewOrders(orders=[
                NewOrder(cl_ord_id=f"o{n}", account="DEMO1", symbol="AAA", side=Side.BUY,
                         qty="1", price="1.00", time_in_force=TimeInForce.IOC)
                for n in range(k, k + 200)])))
        last = 1 + 2 * ORDERS
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
                if len(got) == ORDERS:
                    again.send(encode(Heartbeat(test_req_id="mid")))
                if len(got) % 50 == 0:
                    time.sleep(0.02)  # a slow reader
            closing = next(m for m in got if isinstance(m, HeartbeatAck)
                           and m.resend_end_seq is not None)
            assert (closing.resend_begin_seq, closing.resend_end_seq) == (2, last)
            replay = [m for m in got if isinstance(m, ExecutionReport)]
            assert [m.seq for m in replay] == list(range(2, last + 1)), "a gap or a repeat"
            assert sorted((m.cl_ord_id, m.exec_type.name) for m in replay) == sorted(
                (f"o{n}", t) for n in range(ORDERS) for t in ("NEW", "CANCELED"))
            # The closing ack, then the mid-replay heartbeat's, numbered on.
            assert [m.seq for m in got[len(replay):]] == [last + 1, last + 2]
        finally:
            again.close()
