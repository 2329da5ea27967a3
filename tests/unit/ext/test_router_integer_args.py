"""The router takes integers only (ticks, lots, weights): a float or Decimal is refused, never truncated."""
import numpy as np
import pytest

from ext.router import Router, STRAT_VWAP
from ext.types import Side


def _router():
    r = Router(n_venues=1)
    r.update_book(0, 0, bids=[(98, 1000)], asks=[(100, 1000)])
    return r


@pytest.mark.parametrize("profile", [[1.7, 2.2], np.array([1.5, 3.9]), [1, 2.5]])
def test_a_float_vwap_weight_is_refused_never_truncated(profile):
    """docs/router.md: a float "raises TypeError and changes nothing; it is never
    truncated". Before: the profile was cast to int64, so [1.5, 3.9] traded as [1, 3]
    (a quarter then three quarters instead of 28% then 72%) and the parent was accepted."""
    r = _router()
    with pytest.raises(TypeError, match="profile must be integers"):
        r.route(1, 0, Side.BUY, 10, 101, now=0, strategy=STRAT_VWAP, start_ns=0, end_ns=1000,
                profile=profile)
    assert r.n_active == 0 and len(r.drain_actions()) == 0


@pytest.mark.parametrize("profile", [[1, 3], np.array([1, 3], dtype=np.uint16), (1, 3)])
def test_integer_vwap_weights_still_route(profile):
    r = _router()
    assert r.route(1, 0, Side.BUY, 8, 101, now=0, strategy=STRAT_VWAP, start_ns=0,
                   end_ns=1000, profile=profile) == 0
    r.tick(0)
    assert [int(a["qty"]) for a in r.drain_actions()] == [2]        # a quarter of 8 first


@pytest.mark.parametrize("bids, asks", [
    ([(99.5, 10)], [(101, 10)]),                      # a float price
    ([(99, 10)], [(101, 10.7)]),                      # a float size
    (np.array([(99.0, 10.0)]), []),                   # a float array
    (np.array([(99.5, 10)], dtype=[("price", "f8"), ("qty", "i8")]), []),
])
def test_a_float_level_in_a_book_update_is_refused_never_truncated(bids, asks):
    """update_book takes ticks and lots. Before: a float level was cast to int64, so a bid
    of 99.5 ticks was held at 99 (and 10.7 lots as 10), the update accepted."""
    r = Router(n_venues=1)
    r.update_book(0, 0, bids=[(98, 5)], asks=[(102, 5)])
    with pytest.raises(TypeError, match="levels must be integers"):
        r.update_book(0, 0, bids=bids, asks=asks)
    assert r.depth(0, 0) == ([(98, 5)], [(102, 5)])            # nothing changed


def test_a_decimal_level_is_refused_and_integer_levels_still_update():
    from decimal import Decimal
    r = Router(n_venues=1)
    with pytest.raises(TypeError, match=r"not Decimal \(Decimal\('99.5'\)\)"):
        r.update_book(0, 0, bids=[(Decimal("99.5"), 10)], asks=[])
    assert r.update_book(0, 0, bids=[(99, 10), (np.int64(98), 3)], asks=[(101, True)]) == 0
    assert r.depth(0, 0) == ([(99, 10), (98, 3)], [(101, 1)])
