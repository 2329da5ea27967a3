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
from tests.integration.engine_harness import serving, stop_pacing
from tests.integration.test_engine_replace import report


def test_a_tick_after_the_loop_was_held_takes_in_the_acks_before_judging_them(tmp_path):
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        pipeline = engine.service.pipeline
        # The pacer stopped: from now only the tick can take in the venues' answers
        # (the held loop's worst case, the tick due and run before the pacer).
        stop_pacing(engine)
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


def test_an_error_handling_a_venue_report_in_the_tick_leaves_the_routers_clock_running(
        tmp_path, monkeypatch, caplog):
    # The tick takes in the venues' reports; one whose handling raises (an engine bug)
    # used to leave the tick with it, and the service's clock task died for good: no
    # more ack timeouts, schedules, reprices or day rolls for any order.
    from engine.pipeline import Pipeline

    def broken(self, child_id):
        raise RuntimeError("a bug in a report's handling")
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        stop_pacing(engine)  # (only the tick takes reports in)
        monkeypatch.setattr(Pipeline, "_child_accepted", broken)
        client.new_order("AAA", "buy", "10", "45.00", account="DEMO1", cl_ord_id="b1",
                         time_in_force="gtc")
        report(client, "b1", ExecType.NEW)
        time.sleep(0.2)  # several ticks, each taking in the venue's ack
        assert "a bug in a report's handling" in caplog.text
        assert not engine.call(lambda: engine.service._ticker.done())


def test_a_day_rolled_by_a_report_the_tick_takes_in_is_not_a_clock_going_back(
        tmp_path, caplog):
    # A report taken in by the tick can roll the day at its own time, later than the
    # tick's `now`: judged after it, the tick saw its `now` before the day's start, warned
    # that the wall clock went back and moved the day's start back to `now`.
    with serving(tmp_path) as (engine, endpoint):
        pipeline, venues = engine.service.pipeline, engine.service.venues
        catch_up = venues.catch_up

        def tick_with_a_rolling_report():
            now = time.time_ns()
            pipeline._next_roll = now + 1  # (the roll falls due inside the catch-up)

            def report_that_rolls():
                while time.time_ns() <= pipeline._next_roll:
                    pass
                pipeline.roll_day(time.time_ns())  # (what _venue_report does first)
            venues.catch_up = report_that_rolls
            try:
                pipeline.tick(now)
            finally:
                venues.catch_up = catch_up
            return now, pipeline._day_entered
        now, entered = engine.call(tick_with_a_rolling_report)
    assert "went back" not in caplog.text
    assert entered >= now
