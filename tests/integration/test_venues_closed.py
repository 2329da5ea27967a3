"""After the venues' close ([sim] duration): a DAY order expires saying the venues closed,
and a Replace of a GTC order still working is refused, the order keeping its terms.

The DAY order's text said "its time in force ran out" (its child was expired by the venue,
which the router reports with no reason of its own); the Replace took the GTC order's
children down and, with nowhere to route the new terms, canceled the order.
"""
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply
from ext.types import OrdStatus
from tests.integration.engine_harness import QUIET_SIM, ThreadedEngine, config_text, free_port


def test_at_the_close_a_day_order_expires_and_a_gtc_order_keeps_its_terms(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal")
                    .replace('duration = "6h"', 'duration = "2s"'))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="day1",
                         time_in_force="day")
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="gtc1",
                         time_in_force="gtc")
        expired = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "day1"
                                    and m.exec_type == ExecType.EXPIRED, 10)[-1]
        assert expired.text == "the venues closed: its day is over"
        assert engine.call(engine.service.venues.open_count) == 0
        client.replace("gtc1", account="DEMO1", qty="20", cl_ord_id="gtc1-r")
        refused = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "gtc1-r", 5)[-1]
        assert (refused.exec_type, refused.reject_name, refused.text) == (
            ExecType.REJECTED, "NO_ROUTE", "the venues are closed: the order keeps its terms")
        time.sleep(0.3)
        client.status("gtc1", account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert (status.report.cl_ord_id, status.report.ord_status, status.report.qty) == \
            ("gtc1", OrdStatus.NEW, "10")


def test_after_the_close_a_new_order_is_refused_no_route_under_a_price_collar(tmp_path):
    """With a collar, risk's reference price goes stale once the venues close: new orders
    were refused STALE_REFERENCE_PRICE, while /healthz and the docs promise NO_ROUTE."""
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    quoting = tmp_path / "quoting_sim.toml"  # (quotes for the reference price)
    quoting.write_text(QUIET_SIM.read_text().replace("lp_rate = 0.0", "lp_rate = 50.0"))
    path.write_text(config_text(port, tmp_path / "journal", sim=quoting)
                    .replace('duration = "6h"', 'duration = "3s"')
                    .replace("throttle_rate = 100000",
                             "throttle_rate = 100000\ncollar_bps = 500\nmax_reference_age_ms = 300"))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        time.sleep(0.5)  # (the first quotes reach risk)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="open1")
        opened = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                   and m.cl_ord_id == "open1", 5)[-1]
        assert opened.exec_type == ExecType.NEW  # (the collar passes while the venues trade)
        deadline = time.monotonic() + 10
        while engine.call(engine.service.venues.open_count) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the last reference price is older than max_reference_age_ms
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="late1")
        refused = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "late1", 5)[-1]
    assert (refused.exec_type, refused.reject_name, refused.text) == (
        ExecType.REJECTED, "NO_ROUTE", "the venues are closed: no venue to route to")
