"""A cl_ord_id names one order per account (docs/protocol.md), in risk's check as well.

Risk keyed the ids it had seen by session alone: a session trading two accounts had
its order for the second account refused DUPLICATE_CL_ORD_ID when the first had
used the id, though the engine's order table (per account) had let it through.
"""

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject
from ext.types import RejectReason
from tests.integration.engine_harness import config_text, free_port, kill_9, kill_if_running, \
    start_subprocess


def send(client, account, cl_ord_id):
    client.new_order("AAA", "buy", "10", "47.50", account=account, cl_ord_id=cl_ord_id)
    return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def test_one_session_uses_one_id_in_two_accounts_once_each_also_after_a_restart(tmp_path):
    port = free_port()
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, tmp_path / "journal", fsync="always"))
    endpoint, log = f"tcp://127.0.0.1:{port}", tmp_path / "engine.log"
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            client.heartbeat()
            ack = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
            assert send(client, "DEMO1", "same").exec_type == ExecType.NEW
            second = send(client, "DEMO2", "same")
            assert (second.account, second.exec_type) == ("DEMO2", ExecType.NEW)
            assert send(client, "DEMO1", "same").reject_reason == RejectReason.DUPLICATE_CL_ORD_ID
            last_seq = client.last_seq
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            client.resume(ack.session_id, last_seq)
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            # Still spent in both accounts, and a fresh id still free in either.
            for account in ("DEMO1", "DEMO2"):
                assert send(client, account, "same").reject_reason == \
                    RejectReason.DUPLICATE_CL_ORD_ID
            assert send(client, "DEMO2", "fresh").exec_type == ExecType.NEW
    finally:
        kill_if_running(proc)
