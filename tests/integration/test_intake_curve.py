"""CURVE security end to end: real keys, real ZAP authentication, real sockets.

Known keys are served with their own entitlements; unknown keys, wrong
server keys and plaintext peers get no reply at all; a key cannot act for,
resume or receive another key's session.
"""
import time

import pytest
import zmq

from engine.client import Client, load_client_keys
from engine.config import ClientKey, IntakeConfig, SecurityConfig
from engine.intake import IntakeServer, IntakeThread, generate_keypair, load_keypair
from engine.messages import AdminReply, ExecType, HeartbeatAck, KillSwitch, RejectReason
from tests.unit.engine.test_intake import EchoHandler, order_for, roundtrip

SILENCE = 0.5  # how long "no reply" is waited for


@pytest.fixture
def keys(tmp_path):
    made = {}
    for name in ("server", "alice", "bob", "ops", "mallory"):
        public_file, secret_file = generate_keypair(tmp_path / "keys", name)
        made[name] = {"public_file": public_file, "secret_file": secret_file,
                      "pair": load_client_keys(secret_file)}
    return made


def security_for(keys, *, drop=()):
    clients = [
        ClientKey(name="alice", public_key=keys["alice"]["pair"][0].decode(), accounts=["ACC1"]),
        ClientKey(name="bob", public_key_file=str(keys["bob"]["public_file"]), accounts=["ACC2"]),
        ClientKey(name="ops", public_key=keys["ops"]["pair"][0].decode(), accounts=["*"], admin=True),
    ]
    return SecurityConfig(server_secret_key_file=str(keys["server"]["secret_file"]),
                          clients=[c for c in clients if c.name not in drop])


@pytest.fixture
def running(tmp_path, keys):
    config = IntakeConfig(endpoints=["tcp://127.0.0.1:*", f"ipc://{tmp_path}/curve.sock"],
                          heartbeat_interval_ms=200, heartbeat_timeout_ms=2000)
    thread = IntakeThread(IntakeServer(config, security_for(keys), EchoHandler())).start()
    yield thread
    thread.stop()


def connect(running, keys, who, *, endpoint=0, server_key=None):
    return Client(running.server.endpoints[endpoint],
                  server_key=server_key or running.server.server_public_key,
                  client_keypair=keys[who]["pair"] if who else None)


def silent(client, request) -> bool:
    client.send(request) if not isinstance(request, bytes) else client.send_raw(request)
    try:
        client.recv(SILENCE)
    except TimeoutError:
        return True
    return False


def test_known_key_is_served_with_its_identity(running, keys):
    with connect(running, keys, "alice") as alice:
        alice.heartbeat()
        ack = alice.recv(5)
        assert isinstance(ack, HeartbeatAck)
        order = order_for(alice, account="ACC1")
        assert roundtrip(alice, order).exec_type == ExecType.NEW
    session = running.server.sessions[ack.session_id]
    assert session.principal == keys["alice"]["pair"][0].decode()
    assert session.client_name == "alice" and session.accounts == frozenset({"ACC1"})
    assert running.server.server_public_key == load_keypair(keys["server"]["public_file"])[0]


def test_curve_over_ipc(running, keys):
    with connect(running, keys, "bob", endpoint=1) as bob:
        order = order_for(bob, account="ACC2")
        assert roundtrip(bob, order).cl_ord_id == order.cl_ord_id


def test_accounts_are_checked_per_key(running, keys):
    with connect(running, keys, "alice") as alice, connect(running, keys, "bob") as bob:
        refused = roundtrip(alice, order_for(alice, account="ACC2"))
        assert refused.reject_reason == RejectReason.NOT_AUTHORIZED and "ACC2" in refused.text
        assert roundtrip(bob, order_for(bob, account="ACC2")).exec_type == ExecType.NEW
        assert roundtrip(bob, order_for(bob, account="ACC1")).reject_reason == RejectReason.NOT_AUTHORIZED
    accounts = [r.account for _, r in running.call(lambda: running.server.handler.requests)]
    assert accounts == ["ACC2"]


def test_admin_requests_need_an_admin_key(running, keys):
    kill = KillSwitch(req_id="k1", action="engage", scope="symbol", target="AAPL")
    with connect(running, keys, "ops") as ops, connect(running, keys, "alice") as alice:
        reply = roundtrip(ops, kill)
        assert isinstance(reply, AdminReply) and reply.ok and reply.req_id == "k1"
        assert roundtrip(alice, kill).reject_reason == RejectReason.NOT_AUTHORIZED
        assert roundtrip(ops, order_for(ops, account="ANY")).exec_type == ExecType.NEW  # "*"


def test_unknown_key_gets_no_reply(running, keys):
    with connect(running, keys, "mallory") as mallory, connect(running, keys, "alice") as alice:
        assert silent(mallory, order_for(mallory, account="ACC1"))
        assert roundtrip(alice, order_for(alice)).exec_type == ExecType.NEW
    assert all(s.client_name != "mallory" for s in running.server.sessions.values())
    assert running.call(lambda: len(running.server.handler.requests)) == 1


def test_wrong_server_key_and_plaintext_peer_get_no_reply(running, keys):
    wrong_server = keys["mallory"]["pair"][0]
    with connect(running, keys, "alice", server_key=wrong_server) as confused:
        assert silent(confused, order_for(confused))
    with Client(running.server.endpoints[0]) as plain:  # no CURVE at all
        assert silent(plain, order_for(plain))
    assert running.call(lambda: running.server.handler.requests) == []


def test_revoked_key_loses_its_accounts_and_cannot_reconnect(running, keys):
    with connect(running, keys, "bob") as bob:
        assert roundtrip(bob, order_for(bob, account="ACC2")).exec_type == ExecType.NEW
        running.call(running.server.update_security, security_for(keys, drop=("bob",)))
        assert roundtrip(bob, order_for(bob, account="ACC2")).reject_reason == RejectReason.NOT_AUTHORIZED
    with connect(running, keys, "bob") as again:
        assert silent(again, order_for(again, account="ACC2"))


def assert_resumed_with_the_late_report(running, keys, session_id, order):
    """Alice, back with her key, resumes ``session_id`` and gets the report sent while she
    was away (seq 3, after her HeartbeatAck and her order's NEW)."""
    with connect(running, keys, "alice") as alice:
        alice.resume(session_id, 2)
        late = alice.recv(5)
        assert late.seq == 3 and late.cl_ord_id == order.cl_ord_id


def test_a_session_belongs_to_its_key(running, keys):
    with connect(running, keys, "alice") as alice:
        alice.heartbeat()
        alice_session = alice.recv(5).session_id
        order = order_for(alice)
        roundtrip(alice, order)
    route = running.call(lambda: running.server.sessions[alice_session]._route)
    # Bob cannot resume Alice's session...
    with connect(running, keys, "bob") as bob:
        bob.resume(alice_session, 0)
        assert bob.recv(5).reject_reason == RejectReason.RESUME_REFUSED
    # ...nor receive her messages by claiming her routing id once she is gone.
    time.sleep(0.2)
    thief = Client(running.server.endpoints[0], server_key=running.server.server_public_key,
                   client_keypair=keys["bob"]["pair"], routing_id=route)
    try:
        thief.heartbeat()
        thief_ack = thief.recv(5)
        assert thief_ack.session_id != alice_session
        session = running.call(lambda: running.server.sessions[alice_session])
        assert running.call(lambda: session.connected) is False
        report = running.server.handler.orders[order.cl_ord_id]
        running.call(session.send, report)  # a late message for Alice
        with pytest.raises(TimeoutError):
            thief.recv(SILENCE)
    finally:
        thief.close()
    assert_resumed_with_the_late_report(running, keys, alice_session, order)


def silent_connection(running, keys, who, routing_id):
    """A CURVE DEALER of ``who`` under ``routing_id`` that sends nothing, once connected."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    socket.curve_serverkey = running.server.server_public_key
    socket.curve_publickey, socket.curve_secretkey = keys[who]["pair"]
    socket.routing_id = routing_id
    monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    socket.connect(running.server.endpoints[0])
    assert monitor.poll(5000), "the handshake did not succeed"
    socket.disable_monitor()
    monitor.close()
    return socket


def test_a_routing_id_taken_by_a_silent_connection_is_sent_nothing(running, keys):
    # Alice's connection under a routing id of her own goes; Bob's key connects
    # under that id and never speaks, so the engine cannot tell his key from
    # hers. Her session's messages must wait for her resume, not go to him.
    routing_id = b"alice-fixed-id"
    with Client(running.server.endpoints[0], server_key=running.server.server_public_key,
                client_keypair=keys["alice"]["pair"], routing_id=routing_id,
                auto_resume=False) as alice:
        alice.heartbeat()
        alice_session = alice.recv(5).session_id
        order = order_for(alice)
        roundtrip(alice, order)
    time.sleep(0.3)  # her connection is closed at the engine, and the id free
    thief = silent_connection(running, keys, "bob", routing_id)
    try:
        time.sleep(0.2)  # his connection holds the id at the ROUTER
        session = running.call(lambda: running.server.sessions[alice_session])
        report = running.server.handler.orders[order.cl_ord_id]
        running.call(session.send, report)  # a fill for Alice, say
        assert not thief.poll(SILENCE * 1000), f"Bob received Alice's {thief.recv()!r}"
        assert running.call(lambda: session.connected) is False
    finally:
        thief.close()
    assert_resumed_with_the_late_report(running, keys, alice_session, order)


def test_start_refuses_a_public_only_server_key(tmp_path, keys):
    config = IntakeConfig(endpoints=["tcp://127.0.0.1:*"])
    security = SecurityConfig(server_secret_key_file=str(keys["server"]["public_file"]))
    with pytest.raises(ValueError, match="no secret key"):
        IntakeThread(IntakeServer(config, security, EchoHandler())).start()


def test_zap_is_enforced(running):
    # Without a ZAP answer libzmq would admit any key; the socket says it must not.
    socket = running.server._listeners[0].socket
    assert running.call(socket.getsockopt, zmq.ZAP_ENFORCE_DOMAIN) == 1


def test_one_keys_sessions_are_capped_not_the_other_keys(tmp_path, keys):
    """A key's leaked connections (each a session, all connected) used to fill the engine's
    max_sessions and lock every other key out; now the key is refused at its own cap."""
    from engine.messages import Reject
    config = IntakeConfig(endpoints=["tcp://127.0.0.1:*"], max_sessions_per_key=2,
                          heartbeat_interval_ms=200, heartbeat_timeout_ms=60_000)
    thread = IntakeThread(IntakeServer(config, security_for(keys), EchoHandler())).start()
    clients = []
    try:
        answers = []
        for who in ("alice", "alice", "alice", "bob"):  # one at a time: arrival order
            client = connect(thread, keys, who)
            clients.append(client)
            client.heartbeat()
            answers.append(client.recv(5))
        assert [type(m).__name__ for m in answers] == ["HeartbeatAck", "HeartbeatAck", "Reject",
                                                       "HeartbeatAck"]
        refused = answers[2]
        assert isinstance(refused, Reject) and refused.seq == 0
        assert refused.reject_name == "NOT_AUTHORIZED"
        assert "too many sessions for key alice" in refused.text
        assert "max_sessions_per_key (2)" in refused.text
        held = sorted(s.client_name for s in thread.call(lambda: list(thread.server.sessions.values())))
        assert held == ["alice", "alice", "bob"]
    finally:
        for client in clients:
            client.close()
        thread.stop()
