"""MarketLoop.take_changed: the instruments whose NBBO or printed volume may have moved.

The engine's tick reads only these (Pipeline.tick), so an instrument missing
from the list is a quote or a trade the engine never sees.
"""
from ext.book import OP_ADD, OP_CANCEL
from tests.unit.sim.helpers import BUY, LIMIT, QUIET, SELL, STP_NONE, quiet_market

GTC = 1
TWO = {"instruments": QUIET["instruments"] + [
    {"symbol": "BBB", "tick_size": "0.01", "lot_size": "1", "price": "20.00"}]}


def op(m, venue, symbol, kind, order_id, side=BUY, price=0, qty=0):
    return m.loop.external(m.book_index(venue, symbol), kind, order_id, side, price, qty,
                           LIMIT, GTC, 1, STP_NONE)


def test_the_first_call_lists_every_instrument_then_only_news():
    m = quiet_market(**TWO)
    assert sorted(m.loop.take_changed()) == [0, 1]
    assert m.loop.take_changed() == []
    bbb = m.instrument_index("BBB")
    op(m, "FAST", "BBB", OP_ADD, 1, BUY, 1990, 10)
    op(m, "BPS", "BBB", OP_ADD, 2, BUY, 1991, 10)       # listed once
    assert m.loop.take_changed() == [bbb]
    op(m, "FAST", "BBB", OP_CANCEL, 1)
    assert m.loop.take_changed() == [bbb]
    assert m.loop.take_changed() == []


def test_a_dark_trade_is_news_and_a_dark_order_that_rests_is_not():
    m = quiet_market(**TWO)
    op(m, "FAST", "AAA", OP_ADD, 1, BUY, 4990, 10)
    op(m, "FAST", "AAA", OP_ADD, 2, SELL, 5010, 10)
    m.loop.take_changed()
    op(m, "POOL", "AAA", OP_ADD, 3, BUY, 5005, 10)      # rests at the mid: no quote, no trade
    assert m.loop.take_changed() == []
    before = m.market_volume("AAA")[0]
    op(m, "POOL", "AAA", OP_ADD, 4, SELL, 4995, 10)     # trades at the mid: printed volume
    assert m.market_volume("AAA")[0] == before + 10
    assert m.loop.take_changed() == [m.instrument_index("AAA")]


def test_a_venue_opening_or_closing_lists_every_instrument():
    """The NBBO spans the open venues: every instrument's may move."""
    m = quiet_market(**TWO)
    m.loop.take_changed()
    now = m.loop.now
    m.loop.set_session(0, now + 10**9, now + 2 * 10**9)  # closed now, opens in 1 s
    assert sorted(m.loop.take_changed()) == [0, 1]
    m.run_until(now + 10**9)
    assert m.loop.is_open(0)
    assert sorted(m.loop.take_changed()) == [0, 1]
    m.run_until(now + 2 * 10**9)
    assert not m.loop.is_open(0)
    assert sorted(m.loop.take_changed()) == [0, 1]
