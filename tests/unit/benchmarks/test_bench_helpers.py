"""The benchmarks' own helpers: the sleeping client's wait and the gateway verdict's interval.

``wait_readable`` runs on real ZeroMQ sockets (inproc, so no port is taken);
``bootstrap_median_ci`` on fixed numbers.
"""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from benchmarks.bench_e2e import wait_readable
from benchmarks.bench_gateways import bootstrap_median_ci, verdict


@pytest.fixture
def pair():
    ctx = zmq.Context()
    server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    server.bind("inproc://wait-readable")
    client.connect("inproc://wait-readable")
    yield server, client
    server.close(linger=0)
    client.close(linger=0)
    ctx.term()


def test_wait_readable_sleeps_to_the_timeout_without_a_message(pair):
    server, _ = pair
    start = time.perf_counter()
    wait_readable(server, 0.05)
    waited = time.perf_counter() - start
    assert 0.045 <= waited < 1.0
    with pytest.raises(zmq.Again):
        server.recv_multipart(zmq.NOBLOCK)


def test_wait_readable_returns_at_once_for_a_queued_message(pair):
    server, client = pair
    client.send(b"hello")
    # Let the message reach the server's queue; the FD's edge may be gone by then.
    deadline = time.monotonic() + 2
    while not server.getsockopt(zmq.EVENTS) & zmq.POLLIN and time.monotonic() < deadline:
        time.sleep(0.001)
    start = time.perf_counter()
    wait_readable(server, 5.0)
    assert time.perf_counter() - start < 1.0
    assert server.recv_multipart(zmq.NOBLOCK)[1] == b"hello"


def test_wait_readable_wakes_when_a_message_arrives(pair):
    server, client = pair
    timer = threading.Timer(0.05, client.send, args=(b"late",))
    timer.start()
    start = time.perf_counter()
    # The FD can also signal ZeroMQ's own bookkeeping: wait until the message is there.
    while not server.getsockopt(zmq.EVENTS) & zmq.POLLIN and time.perf_counter() - start < 5:
        wait_readable(server, 5.0)
    timer.join()
    assert time.perf_counter() - start < 2.0
    assert server.recv_multipart(zmq.NOBLOCK)[1] == b"late"


def test_bootstrap_interval_holds_the_median_and_is_reproducible():
    values = [1.1, 1.3, 0.9, 1.2, 1.0, 1.6, 1.05]
    low, high = bootstrap_median_ci(values)
    assert low <= sorted(values)[3] <= high
    assert min(values) <= low < high <= max(values)
    assert bootstrap_median_ci(values) == (low, high)


def test_bootstrap_interval_of_constant_values_is_a_point():
    assert bootstrap_median_ci([1.25] * 6) == (1.25, 1.25)


def test_bootstrap_interval_narrows_with_more_rounds():
    few = bootstrap_median_ci([0.9, 1.3, 1.0, 1.2])
    many = bootstrap_median_ci([0.9, 1.3, 1.0, 1.2] * 10)
    assert many[1] - many[0] < few[1] - few[0]


def test_verdict_reads_the_interval_not_the_median():
    """A gateway is 'met' only when its whole interval is within the 5% target, 'missed'
    only when the whole interval is beyond it; an interval across the target is unresolved."""
    assert verdict(0.90, 1.04) == "met"
    assert verdict(0.90, 1.05) == "met"
    assert verdict(1.06, 1.80) == "missed"
    assert verdict(0.78, 2.20) == "unresolved"
    assert verdict(1.05, 1.30) == "unresolved"
