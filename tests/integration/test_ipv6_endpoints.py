"""IPv6 endpoints (``tcp://[::1]:port``): the engine's intake and the ZeroMQ gateway bind them.

libzmq refuses an IPv6 address ("No such device") on a socket without its
``ZMQ_IPV6`` option; the option is set for bracketed IPv6 endpoints only, so an
IPv4 endpoint bound beside one is bound (and reported) as it always was.
"""
import socket
import time

import msgspec
import pytest
import zmq

from engine.client import Client
from engine.journal import JournalWriter
from engine.messages import ExecType, ExecutionReport
from gateways import from_config
from gateways.zmq_pub import Subscriber
from tests.integration.engine_harness import ThreadedEngine, config_text
from tests.unit.gateways.helpers import write_fills


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _ipv6_loopback(),
                                reason="this machine has no IPv6 loopback (cannot bind ::1)")


def test_intake_serves_a_dealer_on_ipv6_loopback(tmp_path):
    text = config_text(0, tmp_path / "journal").replace(
        'plaintext_endpoints = ["tcp://127.0.0.1:0"]',
        'plaintext_endpoints = ["tcp://[::1]:0", "tcp://127.0.0.1:0"]')
    assert "tcp://[::1]:0" in text
    path = tmp_path / "engine.toml"
    path.write_text(text)
    with ThreadedEngine(path) as engine:
        ipv6, ipv4 = engine.service.endpoints
        assert ipv6.startswith("tcp://[::1]:") and not ipv6.endswith(":0")
        # The IPv4 endpoint is not bound IPv4-mapped (tcp://[::ffff:127.0.0.1]:port).
        assert ipv4.startswith("tcp://127.0.0.1:")
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.ipv6 = True
        try:
            dealer.connect(ipv6)
            dealer.send(msgspec.msgpack.encode({"type": "Heartbeat", "v": 1, "test_req_id": "hb-v6"}))
            assert dealer.poll(10_000), "no answer on the IPv6 endpoint"
            reply = msgspec.msgpack.decode(dealer.recv())
        finally:
            dealer.close()
            context.term()
    assert reply["type"] == "HeartbeatAck"
    assert reply["test_req_id"] == "hb-v6"


def test_the_engine_client_trades_on_ipv6_loopback(tmp_path):
    """engine.client (and so ``kronos-exec client``) connects to a bracketed IPv6 endpoint."""
    text = config_text(0, tmp_path / "journal").replace(
        'plaintext_endpoints = ["tcp://127.0.0.1:0"]', 'plaintext_endpoints = ["tcp://[::1]:0"]')
    path = tmp_path / "engine.toml"
    path.write_text(text)
    with ThreadedEngine(path) as engine, Client(engine.service.endpoints[0]) as client:
        client.new_order("AAA", "buy", "10", "47.50", account="DEMO1", cl_ord_id="v6")
        ack = client.recv_until(lambda m: isinstance(m, ExecutionReport), 10)[-1]
    assert (ack.cl_ord_id, ack.exec_type) == ("v6", ExecType.NEW)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_zmq_gateway_publishes_and_replays_on_ipv6_loopback(tmp_path, isolation):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    table = {"type": "zmq", "endpoint": "tcp://[::1]:0", "replay_endpoint": "tcp://[::1]:0",
             "heartbeat_ms": 50, "poll_interval_ms": 1, "isolation": isolation}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    try:
        replayed = write_fills(writer, 1, 5)  # before anyone subscribes: only a replay has them
        gateway.start()
        assert gateway.endpoint.startswith("tcp://[::1]:")
        assert gateway.replay_endpoint.startswith("tcp://[::1]:")
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0) as sub:
            live = write_fills(writer, 6, 5)
            got = []
            deadline = time.monotonic() + 20
            while len(got) < 10 and time.monotonic() < deadline:
                got += sub.recv(timeout_ms=50)
        assert [e.seq for e in got] == replayed + live
        assert [e.exec_id for e in got] == [f"E{i}" for i in range(1, 11)]
    finally:
        gateway.stop()
        writer.close()
