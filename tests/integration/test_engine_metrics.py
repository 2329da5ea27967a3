"""The Prometheus metrics count what the client saw, scraped over HTTP from a running engine."""
import collections
import re
import time
import urllib.request

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, Reject
from tests.integration.engine_harness import (ThreadedEngine, acked_at_venue, config_text,
                                              free_port, stop_pacing)


def test_rejects_fills_and_stage_times_match_what_the_client_saw(tmp_path):
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal", fsync="always")
    assert "[metrics]\nport = 0" in text
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))
    seen = collections.Counter()
    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}") as client:
        client.new_order("AAA", "sell_short", "100", "50.00", account="DEMO2", cl_ord_id="s1",
                         locate=True)
        answers = client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                    m.cl_ord_id == "s1", 5)
        time.sleep(0.1)  # at its venue, where the buy finds it
        client.new_order("AAA", "buy", "100", "50.00", account="DEMO1", cl_ord_id="b1")
        answers += client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                     m.cl_ord_id == "b1" and m.exec_type == ExecType.FILL, 5)
        client.new_order("AAA", "buy", "10", "50.001", account="DEMO1", cl_ord_id="b2")  # off tick
        client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="b1")  # duplicate
        client.cancel("nope", account="DEMO1", cl_ord_id="c1")  # unknown order
        client.cancel("b1", account="DEMO1", cl_ord_id="c2")  # filled: too late
        client.replace("s1", account="DEMO2", qty="200", cl_ord_id="c3")  # filled: too late
        client.new_order("AAA", "buy", "10", "49.00", account="OTHER", cl_ord_id="b3")  # intake
        answers += client.recv_until(lambda m: isinstance(m, Reject) and m.cl_ord_id == "b3", 5)
        for m in answers:
            if isinstance(m, Reject) or (isinstance(m, ExecutionReport) and
                                         m.exec_type == ExecType.REJECTED):
                seen[m.reject_name] += 1
            elif isinstance(m, ExecutionReport) and m.exec_type in (ExecType.FILL,
                                                                    ExecType.PARTIAL_FILL):
                seen["fill"] += 1
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
    counted = collections.Counter()
    for reason, value in re.findall(r'^kronos_rejects_total\{reason="([^"]+)",stage="[^"]+"\} '
                                    r'(\S+)$', body, re.M):
        counted[reason] += int(float(value))
    counted["fill"] = int(float(re.search(r"^kronos_fills_total (\S+)$", body, re.M).group(1)))
    assert set(seen) == {"fill", "OFF_TICK", "DUPLICATE_CL_ORD_ID", "UNKNOWN_CL_ORD_ID",
                         "TOO_LATE_TO_CANCEL", "NOT_AUTHORIZED"}
    assert counted == seen, (seen, counted)
    timed = set(re.findall(r'^kronos_stage_latency_seconds_count\{stage="([^"]+)"\} [1-9]', body,
                           re.M))
    assert timed == {"intake", "validate", "risk", "route", "journal"}


def test_replaces_are_counted_by_path(tmp_path):
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))

    def replaced(client, cl_ord_id):
        return client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                 m.cl_ord_id == cl_ord_id and m.exec_type == ExecType.REPLACED, 5)

    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}") as client:
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="r0")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "r0", 5)
        # A replace amends in place only a child its venue has acknowledged.
        acked_at_venue(client, "r0")
        client.replace("r0", account="DEMO1", qty="60", cl_ord_id="r1")     # in place
        replaced(client, "r1")
        client.replace("r1", account="DEMO1", qty="50", price="47.90", cl_ord_id="r2")
        replaced(client, "r2")
        acked_at_venue(client, "r2")                        # its new child
        client.replace("r2", account="DEMO1", qty="40", cl_ord_id="r3")     # in place
        replaced(client, "r3")
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
    counted = {path: int(float(value)) for path, value in re.findall(
        r'^kronos_replaces_total\{path="([^"]+)"\} (\S+)$', body, re.M)}
    assert counted == {"in_place": 2, "routed_again": 1}


def test_a_replace_whose_amended_child_the_venue_ended_first_counts_as_routed_again(tmp_path):
    # The venue ends the child (its own cancel) while the amend to 60 is in flight: the
    # router gives up the cut lots and routes the rest in a new child, and the replace
    # is reported as such. It was counted in_place, where the children rest, though its
    # child had lost its queue place.
    from tests.integration.test_venue_overfill import venue_canceled
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))
    with ThreadedEngine(path) as engine, Client(f"tcp://127.0.0.1:{port}") as client:
        pipeline = engine.service.pipeline
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="r0")
        (child,) = acked_at_venue(client, "r0").children
        order_id = engine.call(lambda: pipeline.orders.find("DEMO1", "r0").order_id)
        stop_pacing(engine)  # (the amend stays in flight)
        client.replace("r0", account="DEMO1", qty="60", cl_ord_id="r1")
        deadline = time.monotonic() + 5
        while not engine.call(lambda: pipeline.router.parent(order_id)["amending"]):
            assert time.monotonic() < deadline, "the amend never went out"
            time.sleep(0.001)
        venue_canceled(engine, int(child.child_id))
        done = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                 and m.cl_ord_id == "r1", 5)[-1]
        assert (done.exec_type, done.qty, done.leaves_qty) == (ExecType.REPLACED, "60", "60")
        assert engine.call(lambda: pipeline.router.parent(order_id)["children"]) == 2
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
    counted = {path: int(float(value)) for path, value in re.findall(
        r'^kronos_replaces_total\{path="([^"]+)"\} (\S+)$', body, re.M)}
    assert counted == {"in_place": 0, "routed_again": 1}


def test_the_counters_to_alert_on_are_served_at_zero_from_the_start(tmp_path):
    """``kronos_overfills_total{venue}`` (docs: alert on any) and ``kronos_replaces_total{path}``
    were served only from their first increment on. Prometheus's ``increase()`` and ``rate()``
    take a series that appears at 1 for one that was always 1, so the first overfill of a
    venue after each start (often the only one) moved no rate-based alert, and an absent
    series cannot be told from a broken scrape. Each venue's and each path's series is
    served from the start, at 0."""
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))
    with ThreadedEngine(path) as engine:
        venues = {info.name for info in engine.service.venues.market.venues}
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
    assert len(venues) == 4
    overfills = dict(re.findall(r'^kronos_overfills_total\{venue="([^"]+)"\} (\S+)$', body, re.M))
    assert overfills == {venue: "0.0" for venue in venues}
    replaces = dict(re.findall(r'^kronos_replaces_total\{path="([^"]+)"\} (\S+)$', body, re.M))
    assert replaces == {"in_place": "0.0", "routed_again": "0.0"}
