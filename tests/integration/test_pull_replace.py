"""A Replace that arrives while the engine takes its order down on its own account (a kill
switch, cancel-on-disconnect) is refused with the same reason, and the order ends canceled.

It used to bring the order back: under a kill switch, risk refused the new terms and the
order was routed again on its old ones (and traded while the switch was engaged); after a
cancel-on-disconnect from another session of the account, the replace was applied. Venues
300 ms away keep the pull in flight while the Replace arrives.
"""
import time

from engine.client import Client
from engine.messages import (AdminReply, ExecType, ExecutionReport, KillSwitch,
                             OrderStatusReply)
from ext.types import OrdStatus
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port, serving,
                                              slow_sim)


def reports(client, cl_ord_id, until, timeout=5.0):
    """Reports under ``cl_ord_id`` until one with ``exec_type`` ``until``."""
    return [m for m in client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                         and m.cl_ord_id == cl_ord_id
                                         and m.exec_type == until, timeout)
            if isinstance(m, ExecutionReport)]


def settle(client, cl_ord_id, account):
    """The order's status once the venues have answered (the pull's cancel included)."""
    client.drain(1.0)
    client.status(cl_ord_id, account=account)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]


def test_a_replace_during_a_kill_switch_pull_is_refused_and_the_order_stays_down(tmp_path):
    with serving(tmp_path, sim=slow_sim(tmp_path, 300_000)) as (_, endpoint), \
            Client(endpoint) as client:
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="k1")
        reports(client, "k1", ExecType.NEW)
        client.drain(0.8)  # resting at its venue
        client.send(KillSwitch(req_id="ks1", action="engage", scope="account", target="DEMO1"))
        client.replace("k1", account="DEMO1", qty="50", cl_ord_id="k1-r")
        refused = reports(client, "k1-r", ExecType.REJECTED)[-1]
        assert refused.reject_name == "KILL_SWITCH"
        status = settle(client, "k1", "DEMO1")
        assert status.report.ord_status == OrdStatus.CANCELED
        assert all(child.done for child in status.children)
        # Nothing of DEMO1 is left to trade against.
        client.new_order("AAA", "sell_short", "100", "48.00", account="DEMO2", cl_ord_id="hit",
                         locate=True)
        reports(client, "hit", ExecType.NEW)
        assert settle(client, "k1", "DEMO1").report.cum_qty == "0"


def test_a_replace_from_another_session_during_a_disconnect_pull_is_refused(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal", sim=slow_sim(tmp_path, 300_000))
                    .replace("heartbeat_timeout_ms = 60000",
                             "heartbeat_timeout_ms = 400\nheartbeat_interval_ms = 100"))
    with ThreadedEngine(path) as engine, Client(endpoint) as silent, Client(endpoint) as other:
        silent.heartbeat(cancel_on_disconnect=True)
        silent.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="c1")
        reports(silent, "c1", ExecType.NEW)
        order_id = int(engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "c1"))
                       .order_id)
        # ``silent`` says nothing more; once the engine starts pulling its order (the
        # venue's answer is 300 ms away), ``other``, on the same account, replaces it.
        deadline = time.monotonic() + 5
        while engine.call(lambda: engine.service.pipeline.orders.by_id[order_id].pulled) is None:
            assert time.monotonic() < deadline, "the disconnect pull never started"
            other.heartbeat()
            time.sleep(0.01)
        other.replace("c1", account="DEMO1", qty="50", cl_ord_id="c1-r")
        refused = reports(other, "c1-r", ExecType.REJECTED)[-1]
        assert refused.reject_name == "ORDER_NOT_REPLACEABLE"
        status = settle(other, "c1", "DEMO1")
        # Canceled under its own id: the replace was not applied.
        assert (status.report.ord_status, status.report.cl_ord_id) == (OrdStatus.CANCELED, "c1")


def test_a_replace_in_flight_when_self_trade_prevention_cancels_the_order_is_refused(tmp_path):
    """The venue cancels the order's child by self-trade prevention while a Replace of the
    order is taking its children down: the order ends canceled, saying why, and the replace is
    refused. It used to be replaced and routed again, to meet its own account once more (and
    then stay working with a live child, its later replaces refused as canceled)."""
    with serving(tmp_path, sim=slow_sim(tmp_path, 20_000)) as (_, endpoint), \
            Client(endpoint) as client:
        client.new_order("AAA", "sell_short", "10", "50.00", account="DEMO1", cl_ord_id="rest",
                         locate=True)
        reports(client, "rest", ExecType.NEW)
        client.drain(0.15)  # resting at its venue
        client.new_order("AAA", "buy", "10", "50.00", account="DEMO1", cl_ord_id="x")
        reports(client, "x", ExecType.NEW)
        client.replace("x", account="DEMO1", qty="8", cl_ord_id="x-r")  # before the venue's STP
        refused = reports(client, "x-r", ExecType.REJECTED)[-1]
        assert refused.reject_name == "ORDER_NOT_REPLACEABLE"
        assert refused.text.startswith("canceled by self-trade prevention at ")
        status = settle(client, "x", "DEMO1")
        assert status.report.ord_status == OrdStatus.CANCELED
        assert status.report.text.startswith("canceled by self-trade prevention at ")
        assert status.children and all(child.done for child in status.children)
