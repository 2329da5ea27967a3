"""An order the engine took out of the market on its own account stays out across a kill -9.

A kill switch (or cancel-on-disconnect, or self-trade prevention) marks its orders pulled
and cancels their children; the order ends CANCELED when the venues' cancels come back.
The pull was only in memory: killed before the cancels came back, the restarted engine
found the orders working in the journal and routed them to the market again, though the
admin had been told they were canceled (here the switch was released at once, so no
switch engaged after the restart held them back). The pull is journaled now
(``JournalPulled``), and recovery cancels such orders.
"""
import time

from engine.client import Client
from engine.messages import AdminReply, ExecType, ExecutionReport, KillSwitch, OrderStatusReply, \
    OrdStatus
from tests.integration.engine_harness import config_text, free_port, kill_9, kill_if_running, \
    slow_sim, start_subprocess


def test_orders_a_released_kill_switch_pulled_stay_canceled_after_a_kill_9(tmp_path):
    port = free_port()
    endpoint, config, log = f"tcp://127.0.0.1:{port}", tmp_path / "engine.toml", \
        tmp_path / "engine.log"
    # Venues 0.5 s away: the venue cancels are still on their way at the kill.
    config.write_text(config_text(port, tmp_path / "journal", fsync="always",
                                  sim=slow_sim(tmp_path, 500_000.0)))
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="o1")
            client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                              m.exec_type == ExecType.NEW, 5)
            time.sleep(1.2)  # its child is at its venue
            for action in ("engage", "release"):
                client.send(KillSwitch(req_id=action, action=action, scope="account",
                                       target="DEMO1"))
                assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            deadline = time.monotonic() + 3  # past the venue's round trip: a child would show
            while True:
                client.status("o1", account="DEMO1")
                status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status.report.ord_status == OrdStatus.CANCELED
            assert "kill switch" in status.report.text
            assert not [c for c in status.children if not c.done]
        assert "0 of 1 working orders routed again" in log.read_text()
    finally:
        kill_if_running(proc)
