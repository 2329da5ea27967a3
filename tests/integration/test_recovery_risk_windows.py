"""Risk's time windows after a restart: the duplicative-order window holds across kill -9.

Recovery replays the journal's orders into risk under a permissive copy of the limits; that
copy used to leave out ``duplicative_window_ms``, so the replayed orders were recorded
nowhere and a twin sent right after a restart passed, inside the window it should have
been refused in (docs/risk.md: "each passed order blocks its twins for the window").
"""

from engine.client import Client
from engine.messages import ExecutionReport, Reject
from ext.types import RejectReason
from tests.integration.engine_harness import config_text, free_port, kill_9, kill_if_running, \
    start_subprocess


def send(client, cl_ord_id, **fields):
    """A resting buy of 10 AAA at 47.50 for DEMO1; its first answer."""
    client.new_order("AAA", "buy", "10", "47.50", account="DEMO1", cl_ord_id=cl_ord_id, **fields)
    return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def _windowed_engine(tmp_path):
    """An engine config (fsync always) with a 10-minute duplicative window: (config path,
    endpoint, log path)."""
    port = free_port()
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, tmp_path / "journal", fsync="always").replace(
        "throttle_rate = 100000", "throttle_rate = 100000\nduplicative_window_ms = 600000"))
    return config, f"tcp://127.0.0.1:{port}", tmp_path / "engine.log"


def test_an_order_before_a_kill_9_still_blocks_its_twin_after_the_restart(tmp_path):
    config, endpoint, log = _windowed_engine(tmp_path)
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            assert send(client, "first").reject_reason == 0
            assert send(client, "twin-1").reject_reason == RejectReason.DUPLICATIVE_ORDER
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            twin = send(client, "twin-2")
            assert (twin.reject_reason, twin.reject_name) == (
                RejectReason.DUPLICATIVE_ORDER, "DUPLICATIVE_ORDER")
            # The flag that says a twin is meant still lets it through, and the
            # first order is still working (replayed, not refused).
            assert send(client, "meant", intended_duplicate=True).reject_reason == 0
    finally:
        kill_if_running(proc)


def test_an_order_refused_after_risk_passed_it_blocks_no_twin(tmp_path):
    """Refused past risk (an unknown strategy, a post-only order that would cross), the
    order never worked: its corrected resend is judged as if it had not come, live and
    after a restart alike. The resend, which works, blocks its own twins."""
    config, endpoint, log = _windowed_engine(tmp_path)
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            refused = send(client, "bad", strategy="bogus")
            assert refused.reject_name == "INVALID_STRATEGY", refused
            assert send(client, "fixed").reject_reason == 0
            assert send(client, "twin-1").reject_reason == RejectReason.DUPLICATIVE_ORDER
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            assert send(client, "twin-2").reject_reason == RejectReason.DUPLICATIVE_ORDER
            # A refused order's twin passes after the restart as it did before it.
            client.new_order("AAA", "buy", "11", "47.50", account="DEMO1", cl_ord_id="bad-2",
                             strategy="bogus")
            client.recv_until(lambda m: getattr(m, "cl_ord_id", None) == "bad-2", 5)
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "11", "47.50", account="DEMO1", cl_ord_id="fixed-2")
            answer = client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                       and m.cl_ord_id == "fixed-2", 5)[-1]
            assert answer.reject_reason == 0, answer
    finally:
        kill_if_running(proc)
