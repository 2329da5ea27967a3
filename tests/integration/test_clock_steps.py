"""The wall clock set forward while a child is on its way to its venue.

The router times acknowledgements with the wall clock, as everything the engine
stamps. A step forward of 10 s between sending a child and its acknowledgement
counted as a timeout: the venue was marked down and the child canceled,
though the venue answered in time (failure audit). The service's tick sees
the step against the monotonic clock and moves the router's deadlines with it.
"""
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from ext.router import VenueHealth
from tests.integration.engine_harness import ThreadedEngine, engine_config, slow_sim


def test_a_step_forward_while_a_child_is_in_flight_is_not_a_timeout(tmp_path, monkeypatch,
                                                                     caplog):
    # Venues 300 ms away each way, and 2 s to answer: the child is in flight for 0.6 s.
    path, endpoint = engine_config(tmp_path, sim=slow_sim(tmp_path, 300_000),
                                   extra="[router]\nack_timeout_ns = 2000000000\n")
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        router = engine.service.pipeline.router
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="o1")
        time.sleep(0.1)
        real = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: real() + 10_000_000_000)
        ack = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
        assert (ack.cl_ord_id, ack.exec_type) == ("o1", ExecType.NEW)
        time.sleep(0.2)
        health = engine.call(lambda: [router.venue_state(v)["health"]
                                      for v in range(router.n_venues)])
        assert health == [VenueHealth.HEALTH_UP] * len(health)
        assert not [m for m in client.drain(0.3) if isinstance(m, ExecutionReport)
                    and m.exec_type == ExecType.CANCELED]
    assert any("wall clock stepped +10.0" in r.getMessage() for r in caplog.records)
