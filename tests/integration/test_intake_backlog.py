"""A client that reads slower than the engine sends misses nothing: the engine holds what
ZeroMQ will not take yet and sends it, in order, as the client catches up.

A real engine with a small ``send_hwm`` and a raw DEALER with a small receive
queue that does not read while thousands of reports are sent (more than the
two queues and the kernel's socket buffers hold): ZeroMQ refuses frames for
that peer. Before, each refused frame waited only in the resend ring and the
client saw gaps; the same holds for a resend's replay, which used to go out
in one burst.
"""
import time

import msgspec
import zmq

from engine.messages import (BulkNewOrders, ExecutionReport, HeartbeatAck, NewOrder,
                             ResendRequest, response_decoder)
from ext.types import Side, TimeInForce
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

ORDERS = 3000  # far-off IOC buys: NEW then CANCELED each, 6,000 reports


def _dealer(endpoint):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


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
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    path = tmp_path / "engine.toml"
    # The engine's own send queue per peer: 10 messages.
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 60000\nsend_hwm = 10"))
    decode = response_decoder().decode
    encode = msgspec.msgpack.encode
    with ThreadedEngine(path):
        sock = _dealer(endpoint)
        try:
            for k in range(0, ORDERS, 200):  # (bulks within max_message_bytes)
                sock.send(encode(BulkNewOrders(orders=[
                    NewOrder(cl_ord_id=f"o{n}", account="DEMO1", symbol="AAA", side=Side.BUY,
                             qty="1", price="1.00", time_in_force=TimeInForce.IOC)
                    for n in range(k, k + 200)])))
            time.sleep(1.5)  # not reading: the engine meets a full queue
            got = _read_all(sock, decode, lambda m: isinstance(m, ExecutionReport) and
                            m.cl_ord_id == f"o{ORDERS - 1}" and m.exec_type.name == "CANCELED")
            seqs = [m.seq for m in got]
            assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat"
            assert len(seqs) == 2 * ORDERS
            # The same client asks for everything again: the replay arrives whole.
            sock.send(encode(ResendRequest(begin_seq=1)))
            time.sleep(1.0)
            replay = _read_all(sock, decode, lambda m: isinstance(m, HeartbeatAck))
            assert [m.seq for m in replay[:-1]] == seqs
        finally:
            sock.close()
