"""Every request kind that names an account, sent by a CURVE key not entitled to it, to a
running engine over real sockets: each is refused ``NOT_AUTHORIZED`` and changes nothing;
a key cannot resume another key's session, cancel another account's order by naming its
``cl_ord_id`` under an account of its own, nor receive another key's reports.

(Intake's own tests check this against an echo handler; this is the engine: pipeline,
journal and risk behind intake.)
"""
import time

import pytest

from engine.client import Client, load_client_keys
from engine.intake import generate_keypair
from engine.messages import (BulkNewOrders, ExecutionReport, HeartbeatAck, KillSwitch,
                             OrderStatusReply, Reject, ReloadLimits, RejectReason)
from tests.integration.engine_harness import config_text, free_ports, kill_9, start_subprocess


@pytest.fixture
def engine(tmp_path):
    """A running engine with a CURVE endpoint for alice (DEMO1) and bob (DEMO2), neither
    admin; yields (endpoint, server key, alice's pair, bob's pair)."""
    _, server_secret = generate_keypair(tmp_path / "keys", "server")
    pairs = {name: load_client_keys(generate_keypair(tmp_path / "keys", name)[1])
             for name in ("alice", "bob")}
    port, curve_port = free_ports(2)
    text = config_text(port, tmp_path / "journal")
    text = text.replace("[intake]\n", f'[intake]\nendpoints = ["tcp://127.0.0.1:{curve_port}"]\n', 1)
    text = text.replace("[security]\n", f'[security]\nserver_secret_key_file = "{server_secret}"\n', 1)
    for name, account in (("alice", "DEMO1"), ("bob", "DEMO2")):
        text += (f'\n[[security.clients]]\nname = "{name}"\npublic_key = '
                 f'"{pairs[name][0].decode()}"\naccounts = ["{account}"]\n')
    cfg = tmp_path / "engine.toml"
    cfg.write_text(text)
    proc = start_subprocess(cfg, tmp_path / "engine.log")
    try:
        yield (f"tcp://127.0.0.1:{curve_port}", load_client_keys(server_secret)[0],
               pairs["alice"], pairs["bob"])
    finally:
        kill_9(proc)


def _answer(client, ref_type):
    return client.recv_until(lambda m: isinstance(m, (Reject, ExecutionReport, OrderStatusReply))
                             and getattr(m, "ref_type", ref_type) == ref_type, 5)[-1]


def test_another_keys_account_is_refused_for_every_request_kind(engine):
    endpoint, server_key, alice_keys, bob_keys = engine
    with Client(endpoint, server_key=server_key, client_keypair=alice_keys) as alice, \
            Client(endpoint, server_key=server_key, client_keypair=bob_keys) as bob:
        alice.new_order("AAA", "buy", "10", "1.00", account="DEMO1", cl_ord_id="a-1")
        ack = alice.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
        assert (ack.cl_ord_id, ack.account, ack.leaves_qty) == ("a-1", "DEMO1", "10")
        alice.heartbeat()
        alice_session = alice.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1].session_id

        now = time.time_ns()
        refused = {}
        bob.new_order("AAA", "sell", "10", "1.00", account="DEMO1", cl_ord_id="b-1")
        refused["NewOrder"] = _answer(bob, "NewOrder")
        bob.cancel("a-1", account="DEMO1", cl_ord_id="b-2")
        refused["Cancel"] = _answer(bob, "Cancel")
        bob.replace("a-1", account="DEMO1", qty="20", cl_ord_id="b-3")
        refused["Replace"] = _answer(bob, "Replace")
        bob.status("a-1", account="DEMO1")
        refused["OrderStatusRequest"] = _answer(bob, "OrderStatusRequest")
        bob.history("DEMO1", now - 10**12, now + 10**12, req_id="h-1")
        refused["TradeHistoryRequest"] = _answer(bob, "TradeHistoryRequest")
        bob.send(KillSwitch(req_id="k-1", action="engage", scope="account", target="DEMO1"))
        refused["KillSwitch"] = _answer(bob, "KillSwitch")
        bob.send(ReloadLimits(req_id="r-1"))
        refused["ReloadLimits"] = _answer(bob, "ReloadLimits")
        for kind, answer in refused.items():
            assert isinstance(answer, Reject), (kind, answer)
            assert answer.reject_reason == RejectReason.NOT_AUTHORIZED, (kind, answer)

        # A bulk is answered per order: its DEMO1 order refused, its own account's taken.
        bob.send(BulkNewOrders(orders=[
            bob.build_new_order("AAA", "buy", "5", "1.00", account="DEMO2", cl_ord_id="b-4"),
            bob.build_new_order("AAA", "sell", "5", "1.00", account="DEMO1", cl_ord_id="b-5")]))
        answers = {}
        while len(answers) < 2:
            m = bob.recv(5)
            if getattr(m, "cl_ord_id", None) in ("b-4", "b-5"):
                answers.setdefault(m.cl_ord_id, m)
        assert isinstance(answers["b-5"], Reject) and \
            answers["b-5"].reject_reason == RejectReason.NOT_AUTHORIZED
        assert isinstance(answers["b-4"], ExecutionReport) and answers["b-4"].account == "DEMO2"

        # Naming alice's order under bob's own account finds nothing (ids are per account).
        bob.cancel("a-1", account="DEMO2", cl_ord_id="b-6")
        unknown = bob.recv_until(lambda m: getattr(m, "cl_ord_id", None) == "b-6", 5)[-1]
        assert unknown.reject_reason == RejectReason.UNKNOWN_CL_ORD_ID

        # Alice's order is as it was, and bob never heard of it.
        alice.status("a-1", account="DEMO1")
        status = alice.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.found and (status.report.cum_qty, status.report.leaves_qty) == ("0", "10")
        bob.heartbeat()
        seen = bob.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        assert not [m for m in seen if getattr(m, "account", None) == "DEMO1"
                    and not isinstance(m, Reject)]

    # Bob cannot resume alice's session, nor read its messages.
    with Client(endpoint, server_key=server_key, client_keypair=bob_keys) as intruder:
        intruder.resume(alice_session, 0)
        answer = intruder.recv_until(lambda m: isinstance(m, (Reject, HeartbeatAck, ExecutionReport)), 5)
        assert not [m for m in answer if isinstance(m, ExecutionReport)]
        assert isinstance(answer[-1], Reject) and answer[-1].reject_reason == RejectReason.RESUME_REFUSED
