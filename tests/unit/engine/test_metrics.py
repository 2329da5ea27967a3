"""The loop-only metric families: scraped exactly as prometheus_client's own metrics would be."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from engine.metrics import LATENCY_BUCKETS, LoopFamily, Metrics


def samples(registry: CollectorRegistry, name: str) -> list[str]:
    """The sample lines of ``name`` (no comments, no ``_created`` series)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith(name) and "_created" not in line]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["intake", "risk", "route"]),
                          st.floats(min_value=0, max_value=5, allow_nan=False)), max_size=60))
def test_histogram_scrapes_like_prometheus_client(observations):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopFamily("x_seconds", "doc", ("stage",), buckets=LATENCY_BUCKETS, registry=ours)
    ref = Histogram("x_seconds", "doc", ["stage"], buckets=LATENCY_BUCKETS, registry=theirs)
    for stage, value in observations:
        loop.labels(stage).observe(value)
        ref.labels(stage).observe(value)
    # Same series in the same order: make the reference's series in our order.
    assert sorted(samples(ours, "x_seconds")) == sorted(samples(theirs, "x_seconds"))


def test_bucket_bounds_are_inclusive():
    family = LoopFamily("b_seconds", "doc", buckets=(1.0, 2.0))
    family.observe(1.0)
    family.observe(1.5)
    family.observe(3.0)
    (metric,) = family.collect()
    buckets = {s.labels["le"]: s.value for s in metric.samples if s.name == "b_seconds_bucket"}
    assert buckets == {"1.0": 1, "2.0": 2, "+Inf": 3}
    total = [s.value for s in metric.samples if s.name == "b_seconds_sum"]
    assert total == [5.5]


def test_counters_scrape_like_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopFamily("c", "doc", ("reason", "stage"), registry=ours)
    ref = Counter("c", "doc", ["reason", "stage"], registry=theirs)
    for labels, amount in ((("A", "intake"), 1), (("B", "risk"), 3), (("A", "intake"), 2)):
        loop.labels(*labels).inc(amount)
        ref.labels(*labels).inc(amount)
    assert samples(ours, "c_total") == samples(theirs, "c_total")
    plain = LoopFamily("p", "doc")
    plain.inc()
    plain.inc(4)
    assert plain.value == 5
    with pytest.raises(ValueError):
        plain.inc(-1)
    assert plain.value == 5


def test_wrong_label_count_is_refused():
    family = LoopFamily("w", "doc", ("type",))
    with pytest.raises(ValueError):
        family.labels()
    with pytest.raises(ValueError):
        family.labels("a", "b")


def test_a_name_registered_twice_is_refused():
    registry = CollectorRegistry()
    LoopFamily("dup", "doc", registry=registry)
    with pytest.raises(ValueError):
        Counter("dup", "doc", registry=registry)


def test_scrape_while_the_loop_counts():
    metrics = Metrics()
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            metrics.messages_in.labels(f"T{n % 50}").inc()
            metrics.stage_latency.labels("intake").observe(1e-5)
            n += 1

    worker = threading.Thread(target=count)
    worker.start()
    try:
        for _ in range(200):
            text = metrics.scrape().decode()
            assert "kronos_stage_latency_seconds_count" in text
    finally:
        stop.set()
        worker.join()
    final = metrics.scrape().decode()
    count_line = next(line for line in final.splitlines()
                      if line.startswith('kronos_stage_latency_seconds_count{stage="intake"}'))
    inf_line = next(line for line in final.splitlines()
                    if line.startswith('kronos_stage_latency_seconds_bucket{le="+Inf",stage="intake"}'))
    assert count_line.split()[-1] == inf_line.split()[-1]


def _ipv6_loopback() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_the_endpoint_binds_an_ipv6_address():
    """``[metrics] host = "::1"`` passed the configuration's check ("an IP address") and then
    could never be bound (the HTTP server was IPv4 only)."""
    import urllib.request

    from engine.metrics import Metrics, MetricsServer
    server = MetricsServer(Metrics(), "::1", 0).start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.stop()


def test_the_process_figures_are_exported():
    """A connection flood shows as descriptors in use against the limit, memory growth as
    resident bytes: prometheus_client's process collector, on the engine's registry."""
    from prometheus_client import generate_latest

    from engine.metrics import Metrics
    text = generate_latest(Metrics().registry).decode()
    for name in ("process_open_fds", "process_max_fds", "process_resident_memory_bytes"):
        assert f"\n{name} " in text


def test_serve_raises_the_open_files_limit_to_the_hard_one():
    import resource

    from engine.service import raise_open_files_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip("needs a finite hard limit of at least 64")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
        raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
