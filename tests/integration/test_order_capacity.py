"""[orders] max_orders: a full order table refuses new orders, and nothing else changes.

A real engine on the quiet test market, with room for three orders. The
bound turns running out of memory into refusals a client can act on; the
journal never holds a refused order, so a restart with a larger bound takes
the refused ids.
"""
import re
import urllib.error
import urllib.request

import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, NewOrder, OrderStatusReply, Reject
from ext.types import Side
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port


def _engine_config(path, port, metrics_port, journal, max_orders):
    text = config_text(port, journal, fsync="always", extra=f"[orders]\nmax_orders = {max_orders}\n")
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))


def _first(client, predicate):
    return client.recv_until(predicate, 5)[-1]


def _reject(client, cl_ord_id):
    return _first(client, lambda m: isinstance(m, Reject) and m.cl_ord_id == cl_ord_id)


def _report(client, cl_ord_id, exec_type):
    return _first(client, lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                  and m.exec_type == exec_type)


def _held(metrics_port) -> int:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return int(float(re.search(rb"^kronos_orders_held (\S+)$", body, re.M).group(1)))


def test_a_full_order_table_refuses_new_orders_and_keeps_everything_else(tmp_path):
    port, metrics_port = free_port(), free_port()
    path, journal = tmp_path / "engine.toml", tmp_path / "journal"
    _engine_config(path, port, metrics_port, journal, 3)
    endpoint = f"tcp://127.0.0.1:{port}"
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="w1")
        _report(client, "w1", ExecType.NEW)
        client.new_order("AAA", "buy", "10", "40.001", account="DEMO1", cl_ord_id="r1")  # off tick
        _report(client, "r1", ExecType.REJECTED)  # a rejected order holds a place too
        client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="w2")
        _report(client, "w2", ExecType.NEW)
        assert _held(metrics_port) == 3

        client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="x1")
        refused = _reject(client, "x1")
        assert (refused.reject_name, refused.ref_type) == ("ORDER_CAPACITY", "NewOrder")
        assert "max_orders is 3" in refused.text
        # A bulk: each order refused under its own id; an id the engine has is a duplicate.
        client.bulk([NewOrder(cl_ord_id=c, account="DEMO1", symbol="AAA", side=Side.BUY,
                              qty="10", price="40.00") for c in ("x2", "w1")])
        refused = _reject(client, "x2")
        assert refused.reject_name == "ORDER_CAPACITY"
        assert refused.text.startswith("BulkNewOrders orders[0]: the engine holds 3 orders")
        duplicate = _reject(client, "w1")
        assert (duplicate.reject_name, duplicate.ref_type) == ("DUPLICATE_CL_ORD_ID",
                                                               "BulkNewOrders")
        # What is there keeps working: a replace, a cancel, a status query.
        client.replace("w2", account="DEMO1", price="39.00", cl_ord_id="w2-r")
        _report(client, "w2-r", ExecType.REPLACED)
        client.cancel("w1", account="DEMO1", cl_ord_id="w1-c")
        _report(client, "w1-c", ExecType.CANCELED)
        client.status("x1", account="DEMO1")
        assert not _first(client, lambda m: isinstance(m, OrderStatusReply)).found
        assert _held(metrics_port) == 3
        # /healthz says so (audit, stop 33: it said "ok: serving" while every new order
        # was refused until a restart).
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5)
        assert caught.value.code == 503
        assert caught.value.read().decode().startswith(
            "not serving new orders: the order table is full ([orders] max_orders = 3)")

    # A restart with room for more: the refused ids were never spent, and the
    # orders the engine had are all there.
    _engine_config(path, port, metrics_port, journal, 10)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        assert len(engine.service.pipeline.orders) == 3
        client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="x1")
        assert _report(client, "x1", ExecType.NEW).price == "40"
        client.status("w2-r", account="DEMO1")
        reply = _first(client, lambda m: isinstance(m, OrderStatusReply))
        assert reply.found and reply.report.price == "39"
        assert _held(metrics_port) == 4
        health = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5)
        assert health.status == 200
