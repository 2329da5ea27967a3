"""A venue's health is judged on the answers that have arrived, not on what the loop saw.

The router marks a venue down when a child goes unacknowledged for
``ack_timeout_ns`` (docs/router.md, "Health"). The simulated venues answer
when their pacer advances the market; after the engine's loop was held (a
long callback, a collector pause) the pacer and the router's tick are due
together, and a tick that ran first timed out children whose acknowledgement
had arrived meanwhile: a healthy venue went down and the child was canceled.
"""
import time

from engine.client import Client
from engine.messages import ExecType
from ext.router import VenueHealth
from tests.integration.engine_harness import serving
from tests.integration.test_engine_replace import report


def test_a_tick_after_the_loop_was_held_takes_in_the_acks_before_judging_them(tmp_path):
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        pipeline, venues = engine.service.pipeline, engine.service.venues
        # The pacer stopped: from now only the tick can take in the venues' answers
        # (the held loop's worst case, the tick due and run before the pacer).
        engine.call(lambda: venues._task.cancel())
        client.new_order("AAA", "buy", "10", "45.00", account="DEMO1", cl_ord_id="b1",
                         time_in_force="gtc")
        report(client, "b1", ExecType.NEW)
        time.sleep(0.2)  # past the router's 50 ms ack timeout, several ticks meanwhile
        engine.call(lambda: pipeline.tick(time.time_ns()))
        states = engine.call(lambda: [pipeline.router.venue_state(v)
                                      for v in range(len(pipeline.venue_names))])
        assert [s["timeouts"] for s in states] == [0] * len(states), states
        assert sum(s["children_sent"] for s in states) == 1
        assert [s["health"] for s in states] == [VenueHealth.HEALTH_UP] * len(states)
        assert not [m for m in client.drain(0.05)
                    if getattr(m, "exec_type", None) == ExecType.CANCELED]
