"""A ZeroMQ gateway's sockets refuse an oversize frame from a peer that has not authenticated.

Before, neither the PUB socket nor the replay service set ``ZMQ_MAXMSGSIZE``: a peer
that only connected, CURVE gateway or not, could announce a frame of any size in its
first handshake command and libzmq read all of it into memory (measured: 250 MiB sent,
the process grew by 250 MiB), with no key and no limit but the sender's bandwidth.
"""
import logging
import socket
import struct

import msgspec
import pytest
import zmq

from engine.intake import generate_keypair, load_keypair
from engine.journal import JournalWriter
from gateways import from_config
from gateways.zmq_pub import MAX_INBOUND_BYTES, Subscriber
from tests.integration.test_gateway_zmq import collect
from tests.unit.gateways.helpers import write_fills


def _greeting(mechanism: bytes) -> bytes:
    """A ZMTP 3.0 greeting (64 bytes) naming ``mechanism``, as a server's peer sends it."""
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\0") + b"\0" * 32


@pytest.fixture(params=["curve", "plaintext"])
def gateway(request, tmp_path):
    """A running ZeroMQ gateway, with CURVE or without; (gateway, writer, subscriber kwargs)."""
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "heartbeat_ms": 50, "poll_interval_ms": 1}
    curve = {}
    if request.param == "curve":
        server_public, server_secret = generate_keypair(tmp_path / "keys", "gateway")
        alice_public, alice_secret = generate_keypair(tmp_path / "keys", "alice")
        table.update(curve_secret_key_file=str(server_secret),
                     subscriber_key_files=[str(alice_public)])
        curve = {"server_key": load_keypair(server_public)[0],
                 "client_keypair": (load_keypair(alice_public)[0], load_keypair(alice_secret)[1])}
    [gw] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    gw.start()
    yield gw, writer, curve
    gw.stop()
    writer.close()


@pytest.mark.parametrize("which", ["endpoint", "replay_endpoint"])
def test_an_oversize_first_frame_drops_the_connection(gateway, which):
    gw, writer, curve = gateway
    host, port = getattr(gw, which)[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as peer:
        peer.sendall(_greeting(b"CURVE" if curve else b"NULL"))
        assert len(peer.recv(64)) > 0  # the gateway's greeting: the connection is up
        # A command frame (flags 0x06: long, command) announcing 256 MiB, then 4 MiB of it.
        peer.sendall(b"\x06" + struct.pack(">Q", 256 << 20))
        closed = False
        try:
            for _ in range(4):
                peer.sendall(b"\0" * (1 << 20))
            closed = peer.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        except socket.timeout:
            closed = False  # still reading it: every byte sent is held in the gateway's memory
        assert closed, f"the gateway's {which} kept reading a 256 MiB frame from an unknown peer"
    # Subscribers are served as before (a replay request included).
    seqs = write_fills(writer, 1, 20, with_commands=False)
    with Subscriber(gw.endpoint, gw.replay_endpoint, start_seq=0, replay_timeout_ms=2000,
                    **curve) as sub:
        assert [e.seq for e in collect(sub, 20, 10)] == seqs
        assert sub.replayed == 20


def test_a_replay_request_within_the_limit_is_answered(gateway):
    """The limit leaves room for a subscriber of many topics (10,000 of them, about 200 KB)."""
    gw, writer, curve = gateway
    write_fills(writer, 1, 5, with_commands=False)
    topics = [f"fill.SYM{i:05d}.XNAS" for i in range(10_000)] + ["fill."]
    request = msgspec.msgpack.encode({"from": 1, "to": 0, "topics": topics[:-1], "prefixes": ["fill."]})
    assert 100_000 < len(request) < MAX_INBOUND_BYTES
    with zmq.Context() as context, context.socket(zmq.REQ) as req:
        req.linger = 0
        if curve:
            req.curve_serverkey = curve["server_key"]
            req.curve_publickey, req.curve_secretkey = curve["client_keypair"]
        req.connect(gw.replay_endpoint)
        req.send(request)
        assert req.poll(5000), "no answer to a replay request of 10,000 topics"
        status, *frames = req.recv_multipart()
    assert msgspec.msgpack.decode(status)["ok"] is True
    assert len(frames) == 15  # the five fills, three frames each


def test_bad_replay_requests_are_answered_each_and_logged_sparsely(tmp_path, caplog):
    """Before, each bad request was one WARNING line: any peer that reached the replay port
    (every local user, for a gateway without CURVE) could write the log at line rate."""
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "isolation": "thread"}
    [gw] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    gw.start()
    try:
        with caplog.at_level(logging.INFO, logger="gateways"), zmq.Context() as context, \
                context.socket(zmq.DEALER) as dealer:
            dealer.linger = 0
            dealer.connect(gw.replay_endpoint)
            answers = []
            for i in range(500):  # (each answer read before the next: as a REQ would)
                dealer.send_multipart([b"", b"not msgpack \xc1" if i % 2 else
                                       msgspec.msgpack.encode({"from": -1})])
                if dealer.poll(5000):
                    answers.append(msgspec.msgpack.decode(dealer.recv_multipart()[-1]))
        assert len(answers) == 500 and not any(a["ok"] for a in answers)
        assert "'from' must be >= 1" in answers[0]["error"]
        lines = [r for r in caplog.records if "gateway replay" in r.getMessage()]
        assert 1 <= len(lines) <= 11
    finally:
        gw.stop()
        writer.close()

