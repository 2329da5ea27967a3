"""Durability: every acknowledged order and every fill survives kill -9 of the engine.

A real engine runs as a subprocess with the default fsync policy. A client
sends a stream of orders (resting, crossing, canceled); the engine is killed
with SIGKILL at several random moments and restarted on the same journal.
After each restart every order the client saw acknowledged is there with the
state the client last saw, every fill is in the trade history, new order ids
continue after the old ones, and resending an acknowledged order creates no
duplicate.
"""
import os
import random
import threading
import signal
import time

from engine.client import Client
from engine.messages import (ExecType, ExecutionReport, HeartbeatAck, OrderStatusReply, Reject,
                             TradeHistoryReply)
from tests.integration.engine_harness import config_text, free_port, kill_9, start_subprocess


def send_load(client, prefix, n, rng):
    """Send ``n`` orders; returns every execution report received (in order).

    Sends pace out over about a quarter second so the kill lands mid-stream.
    """
    for i in range(n):
        if i % 20 == 0:
            time.sleep(0.02)
        cid = f"{prefix}-{i}"
        r = rng.random()
        if r < 0.4:   # resting bid
            client.new_order("AAA", "buy", str(rng.randint(1, 20)), f"49.{rng.randint(50, 89)}",
                             account="DEMO1", cl_ord_id=cid)
        elif r < 0.7:  # resting short offer that later buys may hit
            client.new_order("AAA", "sell_short", str(rng.randint(1, 20)),
                             f"50.{rng.randint(0, 5):02d}", account="DEMO2", cl_ord_id=cid,
                             locate=True)
        else:          # marketable buy
            client.new_order("AAA", "buy", str(rng.randint(1, 20)), "50.10", account="DEMO1",
                             cl_ord_id=cid, time_in_force=3)
    reports = []
    deadline = time.monotonic() + 0.3 + 0.002 * n
    while time.monotonic() < deadline:
        try:
            msg = client.recv(0.05)
        except TimeoutError:
            continue
        if isinstance(msg, ExecutionReport):
            reports.append(msg)
    return reports


def test_acknowledged_orders_and_fills_survive_kill_9(tmp_path):
    port = free_port()
    cfg = tmp_path / "engine.toml"
    cfg.write_text(config_text(port, tmp_path / "journal"))
    endpoint = f"tcp://127.0.0.1:{port}"
    rng = random.Random(7)
    seen: dict[str, ExecutionReport] = {}     # cl_ord_id -> last report the client saw
    fills: set[str] = set()                   # exec ids the client saw
    max_order_id = 0
    for round_ in range(3):
        proc = start_subprocess(cfg, tmp_path / "engine.log")
        try:
            with Client(endpoint) as client:
                # Everything acknowledged before the kill is still there, as last seen.
                for cid, last in seen.items():
                    client.status(cid, account=last.account)
                    reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
                    assert reply.found, cid
                    got = reply.report
                    assert int(got.cum_qty) >= int(last.cum_qty), cid
                    assert got.order_id == last.order_id
                for account in ("DEMO1", "DEMO2"):
                    client.history(account, 0, 2**62)
                    parts = client.recv_until(
                        lambda m: isinstance(m, TradeHistoryReply) and m.last, 5)
                    have = {f.exec_id for p in parts if isinstance(p, TradeHistoryReply)
                            for f in p.fills}
                    assert {e for e in fills if e in have} == {
                        e for e in fills if seen_account(seen, e) == account}
                # Resending an acknowledged order is refused, not duplicated.
                if seen:
                    cid, last = next(iter(seen.items()))
                    client.new_order("AAA", "buy", "1", "1.00", account=last.account,
                                     cl_ord_id=cid)
                    dup = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
                    assert dup.reject_name == "DUPLICATE_CL_ORD_ID"
                # New load, with kill -9 at a random moment while it runs.
                killer = threading.Timer(rng.uniform(0.02, 0.25), os.kill,
                                         (proc.pid, signal.SIGKILL))
                killer.start()
                for r in send_load(client, f"r{round_}", rng.randint(100, 200), rng):
                    if r.exec_type == ExecType.REJECTED and r.cl_ord_id not in seen:
                        continue
                    seen[r.cl_ord_id] = r
                    if r.exec_id:
                        fills.add(r.exec_id)
                    new_id = int(r.order_id)
                    assert new_id > 0
                    if round_ and r.exec_type == ExecType.NEW:
                        assert new_id > max_order_id or r.cl_ord_id.startswith(f"r{round_}")
                max_order_id = max([max_order_id] + [int(r.order_id) for r in seen.values()])
        finally:
            kill_9(proc)
    assert len(seen) > 60 and fills, "the load produced acknowledged orders and fills"
    log = (tmp_path / "engine.log").read_text()
    assert log.count("recovery: records ") >= 2, "restarts replayed the journal"
    assert "ERROR" not in log, log[log.find("ERROR") - 200:log.find("ERROR") + 300]


def seen_account(seen, exec_id):
    order_id = exec_id.split("-")[0]
    for r in seen.values():
        if r.order_id == order_id:
            return r.account
    return None


def test_session_sequence_numbers_survive_kill_9(tmp_path):
    """After kill -9 and a restart, a client resumes its session: what it missed comes
    again with the same seqs, and new messages continue after the last one sent."""
    port = free_port()
    cfg = tmp_path / "engine.toml"
    cfg.write_text(config_text(port, tmp_path / "journal"))
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = start_subprocess(cfg, tmp_path / "engine.log")
    try:
        with Client(endpoint) as client:
            client.heartbeat(test_req_id="hello")
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            session_id = client.session_id
            for i in range(4):
                client.new_order("AAA", "buy", "1", f"49.{50 + i}", account="DEMO1",
                                 cl_ord_id=f"s{i}")
            client.new_order("AAA", "buy", "1", "1.005", account="DEMO1", cl_ord_id="bad")
            got = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "bad", 5)
            time.sleep(0.2)
            got += client.drain(0.2)
            before = [(m.seq, type(m).__name__, getattr(m, "cl_ord_id", None)) for m in got]
            last_seq = client.last_seq
        assert last_seq >= 6 and [s for s, _, _ in before] == list(range(2, last_seq + 1))
    finally:
        kill_9(proc)
    proc = start_subprocess(cfg, tmp_path / "engine.log")
    try:
        with Client(endpoint) as client:
            # Resume as if only the first two messages had arrived before the crash.
            client.resume(session_id, 2)
            replay = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            again = [(m.seq, type(m).__name__, getattr(m, "cl_ord_id", None))
                     for m in replay[:-1]]
            assert again == [b for b in before if b[0] > 2]
            ack = replay[-1]
            assert ack.session_id == session_id and ack.seq == last_seq + 1
            client.new_order("AAA", "buy", "1", "49.10", account="DEMO1", cl_ord_id="after")
            new = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            assert new.cl_ord_id == "after" and new.seq == last_seq + 2
            assert client.gaps == [] and client.lost == []
    finally:
        kill_9(proc)


def test_curve_session_is_restored_for_its_own_key_only(tmp_path):
    """A CURVE session that only ever sent heartbeats (no command names its key in the
    journal) is restored after kill -9 for that key, on the CURVE endpoint: its owner
    resumes it, a plaintext client asking for it is refused."""
    from engine.client import load_client_keys
    from engine.intake import generate_keypair
    from engine.messages import RejectReason

    server_public, server_secret = generate_keypair(tmp_path / "keys", "server")
    _, alice_secret = generate_keypair(tmp_path / "keys", "alice")
    alice = load_client_keys(alice_secret)
    port, curve_port = free_port(), free_port()
    text = config_text(port, tmp_path / "journal")
    text = text.replace("[intake]\n", f'[intake]\nendpoints = ["tcp://127.0.0.1:{curve_port}"]\n', 1)
    text = text.replace("[security]\n", f'[security]\nserver_secret_key_file = "{server_secret}"\n', 1)
    text += f'\n[[security.clients]]\nname = "alice"\npublic_key = "{alice[0].decode()}"\n' \
            f'accounts = ["DEMO1"]\n'
    cfg = tmp_path / "engine.toml"
    cfg.write_text(text)
    server_key = load_client_keys(server_secret)[0]
    curve = f"tcp://127.0.0.1:{curve_port}"
    plain = f"tcp://127.0.0.1:{port}"
    proc = start_subprocess(cfg, tmp_path / "engine.log")
    try:
        with Client(curve, server_key=server_key, client_keypair=alice) as client:
            client.heartbeat(test_req_id="only")
            first = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
            session_id = client.session_id
        assert first.seq == 1 and session_id
    finally:
        kill_9(proc)
    proc = start_subprocess(cfg, tmp_path / "engine.log")
    try:
        with Client(plain) as intruder:
            intruder.resume(session_id, 0)
            refused = intruder.recv_until(lambda m: isinstance(m, (Reject, HeartbeatAck)), 5)[-1]
            assert isinstance(refused, Reject) and \
                refused.reject_reason == RejectReason.RESUME_REFUSED, refused
        with Client(curve, server_key=server_key, client_keypair=alice) as client:
            client.resume(session_id, 0)
            replay = client.recv_until(lambda m: isinstance(m, HeartbeatAck) and m.seq > 1, 5)
            assert [(type(m).__name__, m.seq) for m in replay] == \
                [("HeartbeatAck", 1), ("HeartbeatAck", 2)]
            assert replay[0].test_req_id == "only" and replay[-1].session_id == session_id
    finally:
        kill_9(proc)
