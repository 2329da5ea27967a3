"""What is left of a scheduled order after a replace or a restart (pipeline._remaining_schedule)."""
from engine.orders import Order
from engine.pipeline import _remaining_schedule
from ext.router import STRAT_TWAP, STRAT_VWAP

S = 10**9


DEFAULT_SLICES = 10  # the router's twap_slices


def order(schedule, created=0, strategy=STRAT_TWAP):
    return Order(order_id=1, cl_ord_id="a", session_id="s", account="A", symbol="X", side=1,
                 ord_type=2, tif=0, price=100, qty=100, created_ns=created, schedule=schedule,
                 strategy=strategy)


def remaining(order_, now):
    return _remaining_schedule(order_, now, DEFAULT_SLICES)


def test_a_twap_keeps_the_slices_it_has_left_from_the_next_one():
    # In its second slice (1 s to 2 s), whose share has gone out: the rest from 2 s,
    # in the 2 slices left. (Spread from now, a new first slice was due at once: an
    # audit's TWAP, its price replaced four times in slice 0, bought four slices' worth.)
    rest = remaining(order((0, 4 * S, 4, None, -1)), int(1.5 * S))
    assert (rest["start_ns"], rest["end_ns"], rest["slices"]) == (2 * S, 4 * S, 2)


def test_in_its_last_slice_what_is_left_is_due_now():
    rest = remaining(order((0, 4 * S, 4, None, -1)), int(3.5 * S))
    assert (rest["start_ns"], rest["slices"]) == (int(3.5 * S), 1)


def test_before_its_start_a_schedule_is_kept_whole():
    rest = remaining(order((2 * S, 4 * S, 4, None, -1)), S)
    assert (rest["start_ns"], rest["slices"]) == (2 * S, 4)


def test_the_next_slice_starts_where_the_router_starts_it():
    # 3 slices over 10 s: slice 1 begins at ceil(10/3) s in ns, as the router's _target.
    rest = remaining(order((0, 10 * S, 3, None, -1)), S)
    assert rest["start_ns"] == -(-10 * S // 3) and rest["slices"] == 2


def test_a_vwap_keeps_its_remaining_buckets():
    rest = remaining(order((0, 3 * S, -1, (1, 2, 3), -1), strategy=STRAT_VWAP), int(1.2 * S))
    assert (rest["start_ns"], rest["profile"]) == (2 * S, (3,))


def test_a_vwap_whose_remaining_buckets_expect_nothing_trades_what_is_left_now():
    # (1, 0): everything was due in the first bucket; an all-zero rest would be refused.
    rest = remaining(order((0, 2 * S, -1, (1, 0), -1), strategy=STRAT_VWAP), int(1.5 * S))
    assert rest["profile"] == (1,)


def test_a_schedule_without_a_start_runs_from_the_orders_arrival():
    rest = remaining(order((-1, 12 * S, 4, None, -1), created=8 * S), 9 * S)
    assert (rest["start_ns"], rest["slices"]) == (10 * S, 2)


def test_a_twap_that_named_no_slices_keeps_those_of_the_default_it_has_left():
    """It named none (-1: the router's twap_slices): passed on as -1 after a replace or a
    restart, the router spread what was left over a fresh full set of slices (protocol.md:
    "a twap in the slices it has left")."""
    rest = remaining(order((0, 10 * S, -1, None, -1)), int(7.5 * S))
    assert (rest["start_ns"], rest["slices"]) == (8 * S, 2)
