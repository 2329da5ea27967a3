"""A routing id another key tried to take over, refused at that key's session limit, on a
real engine (CURVE keys, journal, pipeline, simulator venues).

Another key can speak on a routing id whose session intake holds only if intake
never read the disconnect notice of the first connection under that id (the
notices are read before every batch and every handshake; the test drops them,
as a monitor queue that overflowed would). The take-over detaches the session;
refused, it used to leave the routing id leading to it: once intake dropped the
session (``session_retention_s``), the first key's orders on that id were
handled by the dropped session: accepted and sent to the market, journaled
under a session the journal had ended (``JournalSessionEnd``), re-registered
with risk, and acknowledged to nobody (a restart then numbers none of its
reports, and the session cannot be resumed).
"""
import time

from engine import intake
from engine.client import Client, load_client_keys
from engine.intake import generate_keypair, load_keypair
from engine.journal import JournalReader
from engine.messages import ExecType, ExecutionReport, Reject
from tests.integration.engine_harness import ThreadedEngine, config_text, free_ports

ROUTE = b"alice-fixed-routing-id-7f3c0e9a51d2"


def test_a_dropped_sessions_routing_id_opens_a_session_for_its_next_order(tmp_path,
                                                                          monkeypatch):
    keys = {name: generate_keypair(tmp_path / "keys", name) for name in ("server", "alice", "bob")}
    port, curve_port = free_ports(2)
    text = config_text(port, tmp_path / "journal").replace(
        "[intake]\n", f'[intake]\nendpoints = ["tcp://127.0.0.1:{curve_port}"]\n'
                      f'max_sessions_per_key = 1\nsession_retention_s = 2\n', 1).replace(
        "heartbeat_timeout_ms = 60000", "heartbeat_timeout_ms = 1500\nheartbeat_interval_ms = 200"
    ).replace("[security]\n", f'[security]\nserver_secret_key_file = "{keys["server"][1]}"\n', 1)
    for name, account in (("alice", "DEMO1"), ("bob", "DEMO2")):
        text += (f'\n[[security.clients]]\nname = "{name}"\naccounts = ["{account}"]\n'
                 f'public_key_file = "{keys[name][0]}"\n')
    path = tmp_path / "engine.toml"
    path.write_text(text)
    endpoint = f"tcp://127.0.0.1:{curve_port}"
    server_key = load_keypair(keys["server"][0])[0]

    def client(who, routing_id=None):
        return Client(endpoint, server_key=server_key, routing_id=routing_id,
                      client_keypair=load_client_keys(keys[who][1]), auto_resume=False,
                      heartbeat_s=0)

    monkeypatch.setattr(intake._Listener, "read_disconnects", lambda self: None)
    with ThreadedEngine(path) as engine:
        service = engine.service
        routes = service.intake._listeners[0].routes
        with client("alice", ROUTE) as alice:
            alice.heartbeat()
            dropped = alice.recv(5).session_id
            alice.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a-1")
            alice.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        time.sleep(0.3)
        with client("bob") as bob:
            bob.heartbeat()
            bob.recv(5)
            with client("bob", ROUTE) as thief:  # Bob holds his one session, busy: refused
                thief.heartbeat()
                refused = thief.recv(5)
                assert isinstance(refused, Reject) and refused.reject_name == "NOT_AUTHORIZED"
            assert engine.call(lambda: ROUTE in routes) is False
            deadline = time.monotonic() + 10
            while engine.call(lambda: dropped in service.intake.sessions):  # its retention
                assert time.monotonic() < deadline
                bob.heartbeat()
                time.sleep(0.2)
        with client("alice", ROUTE) as alice:
            alice.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="a-2")
            ack = alice.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            assert (ack.cl_ord_id, ack.exec_type, ack.seq) == ("a-2", ExecType.NEW, 1)
            session = engine.call(lambda: routes[ROUTE])
            assert session.session_id != dropped
            order = engine.call(lambda: service.pipeline.orders.find("DEMO1", "a-2"))
            assert order.session_id == session.session_id
            assert engine.call(lambda: dropped in service.pipeline.sessions) is False
            assert engine.call(lambda: dropped in service.pipeline._gates) is False
    # Nothing in the journal names the dropped session after its end.
    named = [record.payload for record in JournalReader(tmp_path / "journal").records(0)
             if dropped.encode() in record.payload]
    assert b"JournalSessionEnd" in named[-1]
