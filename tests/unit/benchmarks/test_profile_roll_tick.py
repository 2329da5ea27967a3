"""profile_roll.py and profile_tick.py: the loop-pause harnesses run and report what they say."""
import uvloop

from benchmarks import profile_roll, profile_tick


def test_the_roll_harness_forgets_every_order_in_steps():
    figures = uvloop.run(profile_roll.main(5_000))
    assert figures["held_after"] == 0
    # 5,000 orders and the 2,500 ids their cancels spent leave in steps of FORGET_STEP.
    assert figures["steps"] >= 4
    assert figures["second_roll_call_ms"] < 50


def test_the_tick_harness_quotes_every_instrument():
    figures = uvloop.run(profile_tick.main([3]))
    assert set(figures) == {"3"} and figures["3"] > 0
