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


def test_a_request_between_a_step_and_the_next_tick_sees_the_step_first(tmp_path, monkeypatch):
    """A request (or a venue report) handled after a step and before the next tick was
    judged against the router's unshifted deadlines, and a child it sent took its send
    time from the stepped clock, then was shifted once more by the tick: its venue was
    given 10 s more to answer. The request looks at the clock first (Pipeline.watch_clock)."""
    from engine.messages import NewOrder, Side
    path, endpoint = engine_config(tmp_path, sim=slow_sim(tmp_path, 300_000),
                                   extra="[router]\nack_timeout_ns = 2000000000\n")
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        router = pipeline.router
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="o1")
        time.sleep(0.1)                             # o1's child is on its way (0.3 s)
        o1 = engine.call(lambda: pipeline.orders.find("DEMO1", "o1"))
        session = engine.call(lambda: pipeline.sessions[o1.session_id])
        real = time.time_ns
        step = 10_000_000_000

        def step_then_request():
            # On the loop, so no tick runs between the step and the request.
            before = router.live_children(o1.order_id)[0]["sent_ts"]
            monkeypatch.setattr(time, "time_ns", lambda: real() + step)
            pipeline.handle(session, NewOrder(cl_ord_id="o2", account="DEMO1", symbol="AAA",
                                              side=Side.BUY, qty="10", price="48.00"))
            o2 = pipeline.orders.find("DEMO1", "o2")
            return (before, router.live_children(o1.order_id)[0]["sent_ts"],
                    o2.order_id, router.live_children(o2.order_id)[0]["sent_ts"], real())

        before, o1_sent, o2_id, o2_sent, at = engine.call(step_then_request)
        # Shifted at the request, not later (by the step as measured: within a millisecond).
        assert abs(o1_sent - (before + step)) < 1_000_000
        assert at + step - 10**9 < o2_sent <= real() + step   # the stepped clock's time
        time.sleep(0.2)                             # ticks run: nothing is shifted again
        assert engine.call(lambda: router.live_children(o2_id)[0]["sent_ts"]) == o2_sent
        assert engine.call(lambda: router.live_children(o1.order_id)[0]["sent_ts"]) == o1_sent
