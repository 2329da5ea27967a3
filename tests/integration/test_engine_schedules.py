"""Scheduled strategies through the engine: TWAP, VWAP and POV orders over the real protocol.

The quiet test market has no background flow: the only liquidity and the
only printed volume are what a test puts there, so how much a scheduled
order has traded at each moment follows from its schedule alone.
"""
import time

import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply, Reject
from tests.integration.engine_harness import acked_at_venue, serving


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("schedules")) as (_, endpoint), \
            Client(endpoint) as client:
        yield client


def fills_until_done(client, cl_ord_id, timeout=5.0):
    """(arrival time, report) of each fill of ``cl_ord_id`` up to the one that completes it."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = client.recv(deadline - time.monotonic())
        if isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id and \
                m.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL):
            got.append((time.monotonic(), m))
            if m.exec_type == ExecType.FILL:
                return got
    raise AssertionError(f"{cl_ord_id} not filled: {[r.cum_qty for _, r in got]}")


def offer(client, cl_ord_id, qty, price):
    client.new_order("AAA", "sell_short", qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                     locate=True)
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id, 5)
    acked_at_venue(client, cl_ord_id, account="DEMO2")  # at its venue, where buys find it


def cancel(client, cl_ord_id, account="DEMO2"):
    client.cancel(cl_ord_id, account=account, cl_ord_id=f"{cl_ord_id}-x")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == f"{cl_ord_id}-x",
                      5)


def test_twap_trades_in_equal_slices_across_its_window(client):
    offer(client, "tw-ask", "100", "50.10")
    start = time.time_ns()
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="tw",
                     strategy="twap", end_time=start + 800_000_000, slices=4)
    fills = fills_until_done(client, "tw")
    assert [r.last_qty for _, r in fills] == ["10", "10", "10", "10"]
    # Slice k starts at k * 200 ms: the last cannot come before 600 ms.
    assert fills[-1][0] - fills[0][0] >= 0.5
    cancel(client, "tw-ask")


def test_vwap_follows_its_volume_profile(client):
    offer(client, "vw-ask", "100", "50.10")
    start = time.time_ns()
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="vw",
                     strategy="vwap", end_time=start + 600_000_000, profile=[1, 0, 3])
    fills = fills_until_done(client, "vw")
    # A quarter of the volume in the first bucket, nothing more in the second.
    assert [r.cum_qty for _, r in fills] == ["10", "40"]
    assert fills[1][0] - fills[0][0] >= 0.3
    cancel(client, "vw-ask")


def test_pov_trades_a_share_of_the_printed_volume(client):
    offer(client, "pv-ask", "1000", "50.10")
    client.new_order("AAA", "buy", "100", "50.10", account="DEMO1", cl_ord_id="pv",
                     strategy="pov", participation="0.5")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "pv", 5)
    time.sleep(0.3)
    client.status("pv", account="DEMO1")
    quiet = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert quiet.report.cum_qty == "0"  # no volume printed, nothing to take a share of
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="pv-print",
                     time_in_force="ioc")
    deadline, cum = time.monotonic() + 3, 0
    while time.monotonic() < deadline and cum < 20:
        time.sleep(0.1)
        client.status("pv", account="DEMO1")
        cum = int(client.recv_until(lambda m: isinstance(m, OrderStatusReply) and
                                    m.cl_ord_id == "pv", 5)[-1].report.cum_qty)
    # Half of everything printed, its own fills included: 40 others -> 40 of its own at most.
    assert 20 <= cum <= 40
    for cid, account in (("pv", "DEMO1"), ("pv-ask", "DEMO2")):
        cancel(client, cid, account)


def test_pov_takes_no_share_of_what_printed_before_it_arrived(client):
    offer(client, "pa-ask", "1000", "50.10")
    client.new_order("AAA", "buy", "500", "50.10", account="DEMO1", cl_ord_id="pa-print",
                     time_in_force="ioc")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "pa-print"
                      and m.exec_type == ExecType.FILL, 5)
    # Printed, and the router told of it only at its next tick (every 50 ms or so):
    # the POV arrives before that tick, and must not count those 500 lots as its own.
    client.new_order("AAA", "buy", "1000", "50.10", account="DEMO1", cl_ord_id="pa",
                     strategy="pov", participation="0.1")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "pa", 5)
    time.sleep(0.3)
    client.status("pa", account="DEMO1")
    quiet = client.recv_until(lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == "pa",
                              5)[-1]
    assert quiet.report.cum_qty == "0"  # nothing printed since it arrived
    for cid, account in (("pa", "DEMO1"), ("pa-ask", "DEMO2")):
        cancel(client, cid, account)


@pytest.mark.parametrize("fields, field", [
    ({"strategy": "twap"}, "end_time"),
    ({"strategy": "vwap", "end_time": 2**62}, "profile"),
    ({"strategy": "pov", "participation": "1.5"}, "participation"),
    ({"slices": 3}, "slices"),
    ({"strategy": "twap", "start_time": 2**62, "end_time": 2**61}, "end_time"),
])
def test_a_schedule_that_does_not_fit_its_strategy_is_refused(client, fields, field):
    order = client.new_order("AAA", "buy", "1", "50.00", account="DEMO1", **fields)
    refused = client.recv_until(lambda m: isinstance(m, Reject) and
                                m.cl_ord_id == order.cl_ord_id, 5)[-1]
    assert refused.reject_name == "INVALID_SCHEDULE" and field in refused.text


def test_a_replaced_twap_keeps_its_schedule(client):
    offer(client, "rt-ask", "200", "50.10")
    start, began = time.time_ns(), time.monotonic()
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="rt",
                     strategy="twap", end_time=start + 1_000_000_000, slices=4)
    # Slices start every 250 ms; replaced in the second (its 10 lots filled).
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "rt" and
                      m.cum_qty == "20", 5)
    time.sleep(max(0.0, (start + 350_000_000 - time.time_ns()) / 1e9))
    client.replace("rt", account="DEMO1", qty="80", cl_ord_id="rt2")
    replaced = client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                 m.cl_ord_id == "rt2" and m.exec_type == ExecType.REPLACED, 5)[-1]
    assert replaced.cum_qty == "20"
    # The second slice's share went out: the 60 left go in the 2 slices after it, at
    # 500 and 750 ms of the window (its own grid), not at once.
    fills = fills_until_done(client, "rt2")
    assert [r.last_qty for _, r in fills] == ["30", "30"]
    assert fills[0][0] - began >= 0.45             # the third slice's start, not at once
    assert fills[-1][0] - fills[0][0] >= 0.2
    cancel(client, "rt-ask")


def test_replacing_a_twaps_price_does_not_trade_ahead_of_its_schedule(client):
    """Each replace spread what was left from that moment, a new first slice due at once
    on top of the slice under way: an audit's TWAP, its price replaced four times in its
    first slice, had bought four slices' worth (40 of 100 against 10)."""
    offer(client, "rp-ask", "200", "50.10")
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="rp0",
                     strategy="twap", end_time=time.time_ns() + 2_000_000_000, slices=4)
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "rp0" and
                      m.cum_qty == "10", 5)
    for k in range(1, 4):       # within the first slice (500 ms)
        client.replace(f"rp{k - 1}", account="DEMO1", price=f"50.1{k}", cl_ord_id=f"rp{k}")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                          m.cl_ord_id == f"rp{k}" and m.exec_type == ExecType.REPLACED, 5)
    time.sleep(0.1)
    client.status("rp3", account="DEMO1")
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert status.report.cum_qty == "10"          # still the first slice's share
    fills = fills_until_done(client, "rp3")
    assert [r.last_qty for _, r in fills] == ["10", "10", "10"]
    cancel(client, "rp-ask")


def test_a_schedule_already_over_is_refused_not_traded_at_once(client):
    offer(client, "old-ask", "100", "50.10")
    now = time.time_ns()
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="old",
                     strategy="twap", start_time=now - 3600 * 10**9, end_time=now - 10**9)
    refused = client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                m.cl_ord_id == "old", 5)[-1]
    assert (refused.exec_type, refused.reject_name, refused.cum_qty) == \
        (ExecType.REJECTED, "INVALID_SCHEDULE", "0")
    assert "not in the future" in refused.text
    cancel(client, "old-ask")


def test_a_schedule_that_ends_with_quantity_left_expires_saying_why(client):
    offer(client, "end-ask", "100", "50.10")
    client.new_order("AAA", "buy", "40", "50.00", account="DEMO1", cl_ord_id="end",
                     strategy="twap", end_time=time.time_ns() + 300_000_000, slices=2)
    done = client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "end"
                             and m.exec_type == ExecType.EXPIRED, 5)[-1]
    assert (done.cum_qty, done.text) == ("0", "its schedule's window ended")
    cancel(client, "end-ask")


def test_a_start_time_already_past_is_taken_as_the_orders_arrival(client):
    """A TWAP whose start_time was 9 s ago, ending in 1 s, was one sweep at arrival (all its
    slices due at once), what a past end_time is refused for."""
    offer(client, "past-ask", "100", "50.10")
    now = time.time_ns()
    client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="past",
                     strategy="twap", start_time=now - 9_000_000_000,
                     end_time=now + 800_000_000, slices=4)
    fills = fills_until_done(client, "past")
    assert [r.last_qty for _, r in fills] == ["10", "10", "10", "10"]
    assert fills[-1][0] - fills[0][0] >= 0.5
    cancel(client, "past-ask")
