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


def test_a_twap_keeps_the_slices_it_has_left():
    rest = remaining(order((0, 4 * S, 4, None, -1)), int(1.5 * S))
    assert (rest["start_ns"], rest["end_ns"], rest["slices"]) == (int(1.5 * S), 4 * S, 3)


def test_a_vwap_keeps_its_remaining_buckets():
    rest = remaining(order((0, 3 * S, -1, (1, 2, 3), -1), strategy=STRAT_VWAP), int(1.2 * S))
    assert rest["profile"] == (2, 3)


def test_a_vwap_whose_remaining_buckets_expect_nothing_trades_what_is_left_now():
    # (1, 0): everything was due in the first bucket; an all-zero rest would be refused.
    rest = remaining(order((0, 2 * S, -1, (1, 0), -1), strategy=STRAT_VWAP), int(1.5 * S))
    assert rest["profile"] == (1,)


def test_a_schedule_without_a_start_runs_from_the_orders_arrival():
    rest = remaining(order((-1, 12 * S, 4, None, -1), created=8 * S), 9 * S)
    assert (rest["start_ns"], rest["slices"]) == (9 * S, 3)


def test_a_twap_that_named_no_slices_keeps_those_of_the_default_it_has_left():
    """It named none (-1: the router's twap_slices): passed on as -1 after a replace or a
    restart, the router spread what was left over a fresh full set of slices (protocol.md:
    "a twap in the slices it has left")."""
    rest = remaining(order((0, 10 * S, -1, None, -1)), 7 * S)
    assert (rest["start_ns"], rest["slices"]) == (7 * S, 3)
