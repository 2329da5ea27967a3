"""What one client's pipelined requests can make the engine hold in memory.

ZeroMQ reads a connection ahead of the engine into a queue of at most
``[intake] recv_hwm`` frames; past it libzmq stops reading, and the client's
further requests wait in TCP, on its side. With the old default (100,000
frames) a client that wrote bulks faster than the engine answered them grew
the engine by hundreds of MB (audit: 10,000 frames of 90 KB, +840 MB).
"""
import time

import msgspec
import zmq

from tests.integration.engine_harness import (config_text, free_port, kill_if_running,
                                              start_subprocess)

BULKS = 3000  # 270 MB of requests, written before the engine has answered many


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_writing_faster_than_the_engine_reads_waits_in_its_own_socket(tmp_path):
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    proc = start_subprocess(path, tmp_path / "engine.log")
    ctx = zmq.Context()
    try:
        # One order more than max_bulk_orders: intake refuses each bulk whole, in
        # one reply, so no order state is made and the replies are few.
        bulk = msgspec.msgpack.encode({"type": "BulkNewOrders", "v": 1, "orders": [
            {"type": "NewOrder", "cl_ord_id": f"f{i}", "account": "DEMO1", "symbol": "AAA",
             "side": 1, "qty": "1", "ord_type": 2, "price": "49.80"} for i in range(1001)]})
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.sndhwm = dealer.rcvhwm = 0
        dealer.connect(f"tcp://127.0.0.1:{port}")
        before = rss_mb(proc.pid)
        for _ in range(BULKS):
            dealer.send(bulk)
        peak, replies, deadline = before, 0, time.monotonic() + 120
        while replies < BULKS and time.monotonic() < deadline:
            while dealer.poll(0):
                dealer.recv()
                replies += 1
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.02)
        assert replies == BULKS  # every bulk refused
        # 1,000 frames of 90 KB read ahead at most; the old default held nearly
        # all 270 MB.
        assert peak - before < 150, (before, peak)
        print(f"engine RSS {before:.0f} -> peak {peak:.0f} MB")
    finally:
        ctx.destroy(0)
        kill_if_running(proc)
