"""Unit tests of the pre-trade risk checks: each limit exactly at and just over.

Every test runs twice, against the Cython core and the pure-Python reference
(the ``make`` fixture is parametrized), so each rule is pinned down in both;
assertions on what only the core offers (reject text, audit log) are guarded
by ``h.cython``.
"""
import copy
import importlib.machinery
import logging

import pytest

import ext.risk
from ext.risk import ConfigError, LimitLayer as L, RiskEngine, RiskFlag
from ext.types import OrdType, RejectReason as R, Side
from tests.reference.risk_reference import RiskReference

BUY, SELL, SHORT = Side.BUY, Side.SELL, Side.SELL_SHORT
LIMIT, MARKET = OrdType.LIMIT, OrdType.MARKET
LOCATE, INTENDED = RiskFlag.FLAG_LOCATE, RiskFlag.FLAG_INTENDED_DUPLICATE
MS = 1_000_000
# tick 0.01 x lot 1 / money unit 0.0001: one tick-lot is 100 money units, $1 is 10_000.
BASE = {
    "instruments": {"AAPL": {"tick_size": "0.01", "lot_size": "1"}, "MSFT": {"tick_size": "0.01"}},
    "accounts": {"A1": {"cash": "1000000"}, "A2": {"cash": "1000000"}},
}


def merged(base, changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class Harness:
    """An engine (either implementation) with name-based helpers for tests."""

    def __init__(self, cls, config):
        self.engine = cls(config)
        self.cython = cls is RiskEngine
        self.key = 0
        self.cl = 1000

    def new(self, side=BUY, qty=1, price=10000, ord_type=LIMIT, flags=0, now=0, account="A1",
            instrument="AAPL", session="S1", cl=None):
        self.key += 1
        self.cl += 1
        e = self.engine
        reason = e.check_new(self.key, e.session_index(session), e.account_index(account),
                             e.instrument_index(instrument), side, ord_type, qty, price, flags,
                             self.cl if cl is None else cl, now)
        if reason and self.cython:
            self.check_text(reason, account, instrument)
        return reason

    def check_text(self, reason, account, instrument):
        """Every reject's text starts with its reason and names its layer."""
        text = self.engine.last_reject_text()
        assert text.startswith(R(reason).name + ": "), text
        layer = self.layer()
        phrase = {L.LAYER_FIRM: "firm", L.LAYER_ACCOUNT: f"account {account}",
                  L.LAYER_INSTRUMENT: f"instrument {instrument}", L.LAYER_SESSION: "session",
                  L.LAYER_ACCOUNT_INSTRUMENT: f"account {account} in {instrument}"}.get(layer)
        if reason == R.KILL_SWITCH:  # named as a KillSwitch request names it
            phrase = {L.LAYER_FIRM: "(global)", L.LAYER_ACCOUNT: f"(account {account})",
                      L.LAYER_INSTRUMENT: f"(symbol {instrument})"}.get(layer)
        if "{layer}" in ext.risk._REASON_TEXT[reason] and layer != L.LAYER_NONE:
            # layered limits say which layer ("the account A1 max_order_qty ...")
            assert phrase and phrase in text, text

    def fill_last(self, qty, price):
        return self.engine.on_fill(self.key, qty, price)

    def trade(self, side, qty, price, account="A1", instrument="AAPL", flags=0):
        """A new order filled in full at its price."""
        assert self.new(side, qty, price, account=account, instrument=instrument, flags=flags) == 0
        assert self.fill_last(qty, price) == 0

    def layer(self):
        return int(self.engine.last_reject()["layer"])

    def limit(self):
        return self.engine.last_reject()["limit"]

    def text(self):
        return self.engine.last_reject_text() if self.cython else ""

    def exposure(self, account="A1", instrument="AAPL"):
        e = self.engine
        return e.exposure(e.account_index(account), e.instrument_index(instrument))

    def money(self, account="A1"):
        return self.engine.account_state(self.engine.account_index(account))


@pytest.fixture(params=["cython", "reference"])
def make(request):
    cls = RiskEngine if request.param == "cython" else RiskReference

    def build(changes=None):
        return Harness(cls, merged(BASE, changes or {}))
    return build


def test_extension_is_compiled():
    assert isinstance(ext.risk.__loader__, importlib.machinery.ExtensionFileLoader)


# ---------------------------------------------------------------- known, tradable, entitled
def test_unknown_instrument_account_and_session(make):
    h = make()
    e = h.engine
    s, a = e.session_index("S1"), e.account_index("A1")
    assert e.check_new(1, s, a, 99, BUY, LIMIT, 1, 100, 0, 1, 0) == R.UNKNOWN_INSTRUMENT
    assert e.check_new(2, s, 99, e.instrument_index("AAPL"), BUY, LIMIT, 1, 100, 0, 2, 0) == R.UNKNOWN_ACCOUNT
    assert e.check_new(3, 99, a, e.instrument_index("AAPL"), BUY, LIMIT, 1, 100, 0, 3, 0) == R.UNKNOWN_SESSION
    assert e.check_new(4, s, a, e.instrument_index("AAPL"), BUY, LIMIT, 1, 100, 0, 4, 0) == 0


def test_inactive_account(make):
    h = make({"accounts": {"A1": {"active": False}}})
    assert h.new() == R.ACCOUNT_INACTIVE
    assert h.new(account="A2") == 0


def test_halted_in_config_and_at_run_time(make):
    h = make({"instruments": {"MSFT": {"halted": True}}})
    assert h.new(instrument="MSFT") == R.INSTRUMENT_HALTED
    assert h.new() == 0
    h.engine.set_halted("AAPL", True, 5)
    assert h.new() == R.INSTRUMENT_HALTED
    h.engine.set_halted("AAPL", False, 6)
    assert h.new() == 0


@pytest.mark.parametrize("where, layer", [("firm", L.LAYER_FIRM), ("account", L.LAYER_ACCOUNT)])
def test_restricted_list_names_its_layer(make, where, layer):
    changes = ({"firm": {"restricted": ["AAPL"]}} if where == "firm"
               else {"accounts": {"A1": {"restricted": ["AAPL"]}}})
    h = make(changes)
    assert h.new() == R.INSTRUMENT_RESTRICTED
    assert h.layer() == layer
    if h.cython:
        assert ("the firm restricted" if where == "firm" else "the account A1 restricted") in h.text()
    assert h.new(instrument="MSFT") == 0
    assert (h.new(account="A2") == 0) == (where == "account")


def test_entitlements(make):
    h = make({"accounts": {"A1": {"entitlements": ["MSFT"]}}})
    assert h.new() == R.NOT_ENTITLED
    assert h.new(instrument="MSFT") == 0
    assert h.new(account="A2") == 0


def test_entitled_to_all_written_as_a_list(make):
    """Audit (stop 33): ["*"] (how security.clients write "all accounts") was the symbol "*",
    so the account was entitled to nothing."""
    h = make({"accounts": {"A1": {"entitlements": ["*"]}}})
    assert h.new() == 0 and h.new(instrument="MSFT") == 0


@pytest.mark.parametrize("changes,field", [
    ({"firm": {"restricted": ["AAPL", "AAPL."]}}, "firm.restricted"),
    ({"accounts": {"A1": {"restricted": ["msft"]}}}, "accounts.A1.restricted"),
    ({"accounts": {"A1": {"entitlements": ["MSFT", "AAPLE"]}}}, "accounts.A1.entitlements"),
])
def test_a_misspelt_symbol_in_a_list_is_refused(changes, field):
    """Audit (stop 33): restricted = ["AAA."] restricted nothing, without a word."""
    with pytest.raises(ConfigError, match=rf"^{field}: '\w+\.?': no such instrument in this "
                                          r"config \(instruments: AAPL, MSFT\)"):
        RiskEngine(merged(BASE, changes))


# ---------------------------------------------------------------- the order's own fields
def test_order_field_checks(make):
    h = make({"instruments": {"AAPL": {"min_qty": "5"}}})
    assert h.new(qty=0) == R.INVALID_QTY
    assert h.new(qty=-3) == R.INVALID_QTY
    assert h.new(qty=4) == R.BELOW_MIN_QTY
    assert h.limit() == 5
    assert h.new(qty=5) == 0
    assert h.new(side=7, qty=5) == R.INVALID_SIDE
    assert h.new(ord_type=9, qty=5) == R.INVALID_ORD_TYPE
    assert h.new(price=0, qty=5) == R.PRICE_REQUIRED
    assert h.new(price=-1, qty=5) == R.INVALID_PRICE


# ---------------------------------------------------------------- fat finger, layered
@pytest.mark.parametrize("tightest", ["firm", "account", "instrument", "account_instrument"])
def test_max_order_qty_tightest_layer_names_itself(make, tightest):
    limits = {"firm": 1000, "account": 1000, "instrument": 1000, "account_instrument": 1000}
    limits[tightest] = 500
    h = make({"firm": {"max_order_qty": limits["firm"]},
              "accounts": {"A1": {"max_order_qty": limits["account"],
                                  "limits": {"AAPL": {"max_order_qty": limits["account_instrument"]}}}},
              "instruments": {"AAPL": {"max_order_qty": limits["instrument"]}}})
    assert h.new(qty=500) == 0
    assert h.new(qty=501) == R.MAX_ORDER_QTY
    assert h.layer() == {"firm": L.LAYER_FIRM, "account": L.LAYER_ACCOUNT, "instrument": L.LAYER_INSTRUMENT,
                         "account_instrument": L.LAYER_ACCOUNT_INSTRUMENT}[tightest]
    assert h.limit() == 500
    if h.cython:
        want = {"firm": "firm", "account": "account A1", "instrument": "instrument AAPL",
                "account_instrument": "account A1 in AAPL"}[tightest]
        assert f"the {want} max_order_qty 500" in h.text()
    # the other account is held only to the firm/instrument layers
    assert (h.new(qty=501, account="A2") == 0) == (tightest in ("account", "account_instrument"))


def test_quantity_limits_are_in_quantity_units(make):
    # lot 0.1: a limit of 10 shares is 100 lots
    h = make({"instruments": {"AAPL": {"lot_size": "0.1", "tick_size": "0.01"}},
              "accounts": {"A1": {"max_order_qty": 10}}})
    assert h.new(qty=100, price=100) == 0
    assert h.new(qty=101, price=100) == R.MAX_ORDER_QTY


def test_max_order_notional(make):
    # $1000: 10 lots at $100.00 is exactly it; one tick more is over.
    h = make({"instruments": {"AAPL": {"max_order_notional": "1000"}}})
    assert h.new(qty=10, price=10000) == 0
    assert h.new(qty=10, price=10001) == R.MAX_ORDER_NOTIONAL
    assert h.layer() == L.LAYER_INSTRUMENT
    assert h.limit() == 10_000_000
    if h.cython:
        assert "instrument AAPL max_order_notional 1000" in h.text()


def test_notional_overflow_is_rejected_not_wrapped(make):
    h = make({"accounts": {"A1": {"cash": "100000000000000000000"}}})
    assert h.new(qty=2**40, price=2**40) == R.MAX_ORDER_NOTIONAL
    assert h.exposure()["open_buy"] == 0
    if h.cython:
        assert "too large to represent" in h.text()


# ---------------------------------------------------------------- reference price and collar
def test_collar_in_basis_points(make):
    h = make({"firm": {"collar_bps": 100}})
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 10000, 0)
    assert h.new(price=10100) == 0
    assert h.new(price=10101) == R.PRICE_COLLAR
    assert h.new(price=9900) == 0
    assert h.new(price=9899) == R.PRICE_COLLAR
    assert h.layer() == L.LAYER_FIRM
    assert h.limit() == 100


def test_collar_tightest_of_bps_and_ticks(make):
    h = make({"firm": {"collar_bps": 100}, "instruments": {"AAPL": {"collar_ticks": 50}}})
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 10000, 0)
    assert h.new(price=10050) == 0
    assert h.new(price=10051) == R.PRICE_COLLAR
    assert h.layer() == L.LAYER_INSTRUMENT and h.limit() == 50


def test_a_band_below_one_tick_values_a_market_buy_at_the_reference_and_says_collared(make):
    """20 bps of a 4.01 reference is 0.8 tick: the band rounds down to none, and a market
    buy is valued at the reference, as one with no collar is. ``collared`` tells them
    apart: the engine holds the collared one there (Pipeline._protect)."""
    h = make({"accounts": {"A1": {"collar_bps": 20}}})
    e = h.engine
    aapl = e.instrument_index("AAPL")
    e.set_reference_price(aapl, 401, 0)
    assert h.new(qty=10, ord_type=MARKET, price=0) == 0
    assert e.value_price(h.key) == 401
    assert h.new(qty=10, ord_type=MARKET, price=0, account="A2") == 0
    assert e.value_price(h.key) == 401
    assert e.collared(e.account_index("A1"), aapl)
    assert not e.collared(e.account_index("A2"), aapl)
    h2 = make({"accounts": {"A2": {"limits": {"MSFT": {"collar_ticks": 0}}}}})
    e2 = h2.engine
    assert e2.collared(e2.account_index("A2"), e2.instrument_index("MSFT"))
    assert not e2.collared(e2.account_index("A2"), e2.instrument_index("AAPL"))


def test_no_reference_price(make):
    h = make({"instruments": {"MSFT": {"collar_bps": 10}}})
    assert h.new(ord_type=MARKET, price=0) == R.NO_REFERENCE_PRICE
    assert h.new(instrument="MSFT") == R.NO_REFERENCE_PRICE
    assert h.new() == 0      # a LIMIT order without a collar needs no reference


def test_stale_reference_fails_closed(make):
    h = make({"firm": {"collar_bps": 100, "max_reference_age_ms": 1000}})
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 10000, 5)
    assert h.new(now=5 + 1000 * MS) == 0
    assert h.new(now=5 + 1000 * MS + 1) == R.STALE_REFERENCE_PRICE
    assert h.limit() == 1000 * MS


def test_a_market_reference_is_as_fresh_as_the_last_market_check(make):
    """The engine's tick checks the market once (market_checked) instead of stamping every
    instrument: a market reference is then as of the check, not of when it was set."""
    h = make({"firm": {"collar_bps": 100, "max_reference_age_ms": 1000}})
    e = h.engine
    e.set_market_reference(e.instrument_index("AAPL"), 10000, 5)
    e.market_checked(5 * 1000 * MS)
    assert h.new(now=6 * 1000 * MS) == 0
    assert h.new(now=6 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE
    assert h.limit() == 1000 * MS
    # A price set otherwise is not the market's: a check keeps it no fresher.
    e.set_reference_price(e.instrument_index("AAPL"), 10000, 10 * 1000 * MS)
    e.market_checked(20 * 1000 * MS)
    assert h.new(now=11 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE


def test_a_lost_market_reference_ages_from_the_last_time_the_market_quoted_it(make):
    h = make({"firm": {"collar_bps": 100, "max_reference_age_ms": 1000}})
    e = h.engine
    i = e.instrument_index("AAPL")
    e.set_market_reference(i, 10000, 0)
    e.market_checked(3 * 1000 * MS)
    e.market_reference_lost(i)      # (one-sided now)
    e.market_checked(4 * 1000 * MS)  # later checks leave it alone
    assert h.new(now=4 * 1000 * MS) == 0
    assert h.new(now=4 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE
    # Lost again: still as of the last quote, not of the loss.
    e.market_reference_lost(i)
    e.market_checked(9 * 1000 * MS)
    assert h.new(now=4 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE


def test_a_market_reference_set_after_a_check_is_as_of_its_own_time(make):
    """Whichever stamp came last decides, as one stamp per instrument at each check did:
    after a clock stepped back, a quote set at 2 s is as of 2 s, not of a check at 3 s."""
    h = make({"firm": {"collar_bps": 100, "max_reference_age_ms": 1000}})
    e = h.engine
    i = e.instrument_index("AAPL")
    e.market_checked(3 * 1000 * MS)
    e.set_market_reference(i, 10000, 2 * 1000 * MS)
    assert h.new(now=3 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE
    e.market_reference_lost(i)
    assert h.new(now=3 * 1000 * MS) == 0
    assert h.new(now=3 * 1000 * MS + 1) == R.STALE_REFERENCE_PRICE


def test_the_snapshot_holds_a_market_reference_as_of_the_last_check():
    e = RiskEngine(BASE)
    i = e.instrument_index("AAPL")
    e.set_market_reference(i, 10000, 5)
    e.market_checked(7_000)
    assert e.snapshot()["instrument_state"][i][:2] == [10000, 7_000]
    restored = RiskEngine(BASE)
    restored.restore(e.snapshot())
    restored.market_checked(9_000)  # restored as of its time, not kept by later checks
    assert restored.snapshot()["instrument_state"][i][:2] == [10000, 7_000]


def test_market_reference_arguments_are_checked(make):
    h = make({"firm": {"collar_bps": 100}})
    e = h.engine
    if isinstance(e, RiskEngine):
        with pytest.raises(IndexError):
            e.set_market_reference(99, 10000, 0)
        with pytest.raises(IndexError):
            e.market_reference_lost(-1)
    # A price that is none is refused, changing nothing, by both implementations.
    for setter in (e.set_market_reference, e.set_reference_price):
        for price in (0, -5):
            with pytest.raises(ValueError, match="reference price must be positive"):
                setter(0, price, 0)
    aapl = e.instrument_index("AAPL")
    e.set_market_reference(aapl, 10000, 0)
    e.market_checked(0)
    assert h.new(ord_type=MARKET, price=0) == 0
    e.clear_reference_prices()          # (recovery's: the market must quote afresh)
    e.market_checked(0)
    assert h.new(ord_type=MARKET, price=0) == R.NO_REFERENCE_PRICE


def test_market_order_valued_at_collar_edge(make):
    h = make({"firm": {"collar_bps": 100}})
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 10000, 0)
    assert h.new(ord_type=MARKET, price=0, qty=3) == 0
    assert e.working_order(h.key)["value_price"] == 10100
    assert h.money()["reserved"] == 3 * 10100 * 100
    h.trade(BUY, 5, 10000)
    open_notional = h.money()["open_notional"]
    # a sell too: its highest fill price is the worst case of the notional limits
    assert h.new(side=SELL, ord_type=MARKET, price=0, qty=2) == 0
    assert e.working_order(h.key)["value_price"] == 10100
    assert h.money()["open_notional"] == open_notional + 2 * 10100 * 100
    # (what the engine journals for recovery; -1 once the order is not working)
    assert e.value_price(h.key) == 10100 and e.value_price(h.key + 1000) == -1


# ---------------------------------------------------------------- short sales: valued at the highest fill price
# cash $1000; a short's fill holds twice its proceeds, so the fill price that
# could take buying power below zero is the highest one.
SHORT_CASH = {"accounts": {"A1": {"cash": "1000", "allow_short": True}}}


def test_collared_limit_short_valued_at_band_upper_edge(make):
    h = make(merged(SHORT_CASH, {"firm": {"collar_bps": 2000}}))      # 20%: 10.00 +- 2.00
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 1000, 0)
    # 100 @ 9.00 could fill at up to 12.00 and hold 2 x $1200 against $1000 + $1200
    assert h.new(side=SHORT, qty=100, price=900, flags=LOCATE) == R.INSUFFICIENT_BUYING_POWER
    assert h.limit() == 10_000_000 and h.engine.last_reject()["value"] == 100 * 1200 * 100
    assert h.new(side=SHORT, qty=80, price=900, flags=LOCATE) == 0
    assert e.working_order(h.key)["value_price"] == 1200
    assert h.money()["reserved"] == 80 * 1200 * 100
    assert h.fill_last(80, 1200) == 0                                  # the best fill the band allows
    assert h.money()["buying_power"] == 400_000                        # $1000 - $960, never below 0


@pytest.mark.parametrize("fill", [500, 1000, 1499, 1500])
def test_market_short_fill_anywhere_in_the_band_keeps_buying_power(make, fill):
    h = make(merged(SHORT_CASH, {"firm": {"collar_bps": 5000}}))      # 50%: 5.00 .. 15.00
    e = h.engine
    e.set_reference_price(e.instrument_index("AAPL"), 1000, 0)
    assert h.new(side=SHORT, ord_type=MARKET, price=0, qty=67, flags=LOCATE) == R.INSUFFICIENT_BUYING_POWER
    assert h.new(side=SHORT, ord_type=MARKET, price=0, qty=66, flags=LOCATE) == 0
    assert e.working_order(h.key)["value_price"] == 1500
    assert h.fill_last(66, fill) == 0
    assert h.money()["buying_power"] == 10_000_000 - 66 * fill * 100 >= 100_000


def test_uncollared_sell_limit_valued_at_least_at_the_reference(make):
    h = make(SHORT_CASH)
    e = h.engine
    # no reference, no collar: nothing bounds the fill price; the limit is all risk knows
    assert h.new(side=SHORT, qty=10, price=900, flags=LOCATE) == 0
    assert e.working_order(h.key)["value_price"] == 900
    e.set_reference_price(e.instrument_index("AAPL"), 1200, 0)
    # a marketable short limit fills at the bids, below a mid reference of 12.00
    assert h.new(side=SHORT, qty=10, price=900, flags=LOCATE) == 0
    assert e.working_order(h.key)["value_price"] == 1200
    assert h.new(side=SHORT, qty=10, price=1300, flags=LOCATE) == 0   # resting above: its limit
    assert e.working_order(h.key)["value_price"] == 1300
    assert h.new(qty=10, price=900) == 0                               # a buy never fills above its limit
    assert e.working_order(h.key)["value_price"] == 900


# ---------------------------------------------------------------- open orders, layered
@pytest.mark.parametrize("where, layer", [
    ({"firm": {"max_open_orders": 2}}, L.LAYER_FIRM),
    ({"accounts": {"A1": {"max_open_orders": 2}}}, L.LAYER_ACCOUNT),
    ({"instruments": {"AAPL": {"max_open_orders": 2}}}, L.LAYER_INSTRUMENT),
    ({"accounts": {"A1": {"limits": {"AAPL": {"max_open_orders": 2}}}}}, L.LAYER_ACCOUNT_INSTRUMENT),
])
def test_max_open_orders(make, where, layer):
    h = make(where)
    assert h.new() == 0
    first = h.key
    assert h.new(account="A2" if layer == L.LAYER_INSTRUMENT else "A1") == 0
    assert h.new() == R.MAX_OPEN_ORDERS
    assert h.layer() == layer and h.limit() == 2
    assert h.engine.on_cancel(first) == 0
    assert h.new() == 0


# ---------------------------------------------------------------- positions, worst case
def test_max_net_position_counts_working_orders(make):
    h = make({"firm": {"max_net_position": 100}, "accounts": {"A1": {"allow_short": True}}})
    assert h.new(qty=60) == 0
    assert h.new(qty=40) == 0
    assert h.new(qty=1) == R.MAX_NET_POSITION
    assert h.limit() == 100
    assert h.new(side=SHORT, qty=100, flags=LOCATE) == 0
    assert h.new(side=SHORT, qty=1, flags=LOCATE) == R.MAX_NET_POSITION


def test_max_gross_position(make):
    h = make({"instruments": {"AAPL": {"max_gross_position": 150}}, "accounts": {"A1": {"allow_short": True}}})
    assert h.new(qty=40) == 0                                 # flat: working buys and sells both count
    assert h.new(side=SHORT, qty=110, flags=LOCATE) == 0      # 40 + 110 = 150
    assert h.new(side=SHORT, qty=1, flags=LOCATE) == R.MAX_GROSS_POSITION
    assert h.engine.last_reject()["value"] == 151
    assert h.layer() == L.LAYER_INSTRUMENT
    h2 = make({"instruments": {"AAPL": {"max_gross_position": 150}}, "accounts": {"A1": {"allow_short": True}}})
    h2.trade(BUY, 30, 10000)                                  # long 30
    assert h2.new(qty=70) == 0                                # longest: 100
    assert h2.new(side=SHORT, qty=80, flags=LOCATE) == 0      # 30 of it closes the long: shortest 50
    assert h2.new(side=SHORT, qty=1, flags=LOCATE) == R.MAX_GROSS_POSITION
    assert h2.engine.last_reject()["value"] == 151


def test_gross_limit_lets_a_position_close_out(make):
    h = make({"instruments": {"AAPL": {"max_gross_position": 10}}, "accounts": {"A1": {"allow_short": True}}})
    h.trade(BUY, 10, 10000)                                   # long 10, at the limit
    assert h.new(qty=1) == R.MAX_GROSS_POSITION
    assert h.new(side=SELL, qty=6) == 0                       # reduce-only sells add nothing
    assert h.new(side=SHORT, qty=4, flags=LOCATE) == 0        # (a short sale closes a long first)
    assert h.new(side=SHORT, qty=1, flags=LOCATE) == R.MAX_GROSS_POSITION    # would open a short
    assert h.engine.on_fill(h.key - 1, 4, 10000) == 0
    assert h.engine.on_fill(h.key - 2, 6, 10000) == 0
    assert h.exposure()["position"] == 0
    h.trade(SHORT, 10, 10000, flags=LOCATE)                   # short 10, at the limit
    assert h.new(side=SHORT, qty=1, flags=LOCATE) == R.MAX_GROSS_POSITION
    assert h.new(qty=10) == 0                                 # the covering buy
    assert h.new(qty=1) == R.MAX_GROSS_POSITION               # would open a long


def test_sell_needs_position_net_of_working_sells(make):
    h = make()
    assert h.new(side=SELL, qty=1) == R.INSUFFICIENT_POSITION
    h.trade(BUY, 10, 10000)
    assert h.new(side=SELL, qty=4) == 0
    assert h.new(side=SELL, qty=6) == 0
    assert h.new(side=SELL, qty=1) == R.INSUFFICIENT_POSITION
    assert h.limit() == 0


def test_short_sale_needs_permission_and_locate(make):
    h = make({"accounts": {"A2": {"allow_short": True}}})
    assert h.new(side=SHORT, flags=LOCATE) == R.SHORT_SELL_NOT_ALLOWED
    assert h.new(side=SHORT, account="A2") == R.LOCATE_REQUIRED
    assert h.new(side=SHORT, account="A2", flags=LOCATE) == 0


# ---------------------------------------------------------------- money
def test_buying_power_exact(make):
    h = make({"accounts": {"A1": {"cash": "1000"}}})
    assert h.new(price=100001) == R.INSUFFICIENT_BUYING_POWER
    assert h.limit() == 10_000_000
    assert h.new(price=100000) == 0                           # exactly $1000
    assert h.new(price=1) == R.INSUFFICIENT_BUYING_POWER


def test_credit_and_fills_move_buying_power(make):
    h = make({"accounts": {"A1": {"cash": "500", "credit_limit": "500", "allow_short": True}}})
    h.trade(BUY, 5, 10000)                                    # spends $500
    assert h.money()["buying_power"] == 5_000_000
    assert h.new(side=SELL, qty=5, price=11000) == 0
    assert h.fill_last(5, 11000) == 0                         # + $550
    assert h.money()["buying_power"] == 10_500_000
    assert h.money()["realized_pnl"] == 500_000
    # a short sale holds its proceeds and as much again
    assert h.new(side=SHORT, qty=10, price=10000, flags=LOCATE) == 0
    assert h.fill_last(10, 10000) == 0
    assert h.money()["buying_power"] == 10_500_000 - 10_000_000
    assert h.new(qty=1, price=5001) == R.INSUFFICIENT_BUYING_POWER
    assert h.new(qty=1, price=5000) == 0


def test_daily_notional_counts_working_and_traded(make):
    h = make({"accounts": {"A1": {"max_daily_notional": "2000"}}})
    h.trade(BUY, 10, 10000)                                   # $1000 traded
    assert h.new(qty=5, price=10000) == 0                     # + $500 working
    assert h.new(qty=5, price=10001) == R.DAILY_NOTIONAL_LIMIT
    assert h.layer() == L.LAYER_ACCOUNT
    assert h.new(qty=5, price=10000) == 0                     # exactly $2000
    h.engine.reset_daily(1)
    assert h.new(qty=10, price=10000) == 0


def test_firm_daily_notional(make):
    h = make({"firm": {"max_daily_notional": "1000"}})
    assert h.new(qty=5, price=10000) == 0
    assert h.new(qty=5, price=10000, account="A2") == 0
    assert h.new(qty=1, price=1, account="A2") == R.DAILY_NOTIONAL_LIMIT
    assert h.layer() == L.LAYER_FIRM


@pytest.mark.parametrize("sell_price, rejected", [(9990, False), (9989, True)])
def test_daily_loss(make, sell_price, rejected):
    h = make({"accounts": {"A1": {"max_daily_loss": "1"}}})
    h.trade(BUY, 10, 10000)
    h.trade(SELL, 10, sell_price)                             # loss $1.00 or $1.10
    assert h.money()["realized_pnl"] == -10 * (10000 - sell_price) * 100
    assert (h.new() == R.DAILY_LOSS_LIMIT) == rejected
    assert h.new(account="A2") == 0


# ---------------------------------------------------------------- session checks
def test_throttle_token_bucket(make):
    h = make({"firm": {"throttle_rate": 10, "throttle_burst": 3}})
    assert [h.new(now=0) for _ in range(4)] == [0, 0, 0, R.THROTTLED]
    assert h.new(now=100 * MS - 1) == R.THROTTLED             # 0.99999999 of a token
    assert h.new(now=100 * MS) == 0
    assert h.new(now=100 * MS) == R.THROTTLED
    assert h.new(now=100 * MS, session="S2") == 0             # per session
    assert h.new(now=10_000 * MS) == 0                        # refill caps at burst
    assert [h.new(now=10_000 * MS) for _ in range(3)] == [0, 0, R.THROTTLED]


def test_a_wall_clock_step_back_does_not_freeze_the_throttle(make):
    """The bucket refilled only once the clock passed its last time: a step back of an hour
    refused every order for an hour (failure audit). It refills from the new time."""
    h = make({"firm": {"throttle_rate": 10, "throttle_burst": 2}})
    hour = 3_600_000 * MS
    assert [h.new(now=hour) for _ in range(3)] == [0, 0, R.THROTTLED]
    assert h.new(now=1 * MS) == R.THROTTLED                  # stepped back: nothing to refill
    assert h.new(now=1 * MS + 100 * MS) == 0                 # a tenth of a second later
    assert h.new(now=1 * MS + 100 * MS) == R.THROTTLED


def test_a_session_takes_the_throttle_of_its_profile(make):
    """The engine names sessions by random ids and passes the client key's name as the
    profile; a profile given later (after journal replay) takes over, tokens kept."""
    h = make({"firm": {"throttle_rate": 1}, "sessions": {"algo-1": {"throttle_rate": 100,
                                                                      "throttle_burst": 3}}})
    e = h.engine
    e.session_index("9f2c", "algo-1")
    assert [h.new(session="9f2c") for _ in range(4)] == [0, 0, 0, R.THROTTLED]
    e.session_index("77aa")                  # replay: registered before its key is known
    assert h.new(session="77aa") == 0
    e.session_index("77aa", "algo-1")        # its key's table from now on
    # A second on, the firm's bucket would hold one token; the key's holds three.
    assert [h.new(session="77aa", now=1_000 * MS) for _ in range(4)] == [0, 0, 0, R.THROTTLED]


def test_session_override_of_throttle(make):
    h = make({"firm": {"throttle_rate": 1}, "sessions": {"FAST": {"throttle_rate": 100, "throttle_burst": 5}}})
    assert [h.new(session="FAST") for _ in range(6)] == [0] * 5 + [R.THROTTLED]
    assert [h.new(session="SLOW") for _ in range(2)] == [0, R.THROTTLED]


def test_the_sessions_of_one_profile_share_its_bucket(make):
    """A client key may open many sessions: were each a bucket of its own, every
    new session would add ``throttle_burst`` orders and ``throttle_rate`` per
    second to what the key may send."""
    h = make({"firm": {"throttle_rate": 1000}, "sessions": {"algo-1": {"throttle_rate": 10,
                                                                         "throttle_burst": 3}}})
    e = h.engine
    for name in ("s1", "s2", "s3"):
        e.session_index(name, "algo-1")
    assert [h.new(session=s) for s in ("s1", "s2", "s3", "s1")] == [0, 0, 0, R.THROTTLED]
    e.session_index("s4", "algo-1")          # a new session finds the bucket as it is
    assert h.new(session="s4") == R.THROTTLED
    if h.cython:
        assert "throttle of algo-1 (10 orders per second, burst 3)" in e.last_reject_text()
    assert h.new(session="other") == 0       # another profile: its own bucket
    # Refilled at the key's rate, whichever session draws on it.
    assert [h.new(session=s, now=200 * MS) for s in ("s2", "s4", "s1")] == [0, 0, R.THROTTLED]
    # A reload resizes the one bucket for all of them.
    h.engine.update({"sessions": {"algo-1": {"throttle_rate": 10, "throttle_burst": 1}}}, 200 * MS)
    assert [h.new(session=s, now=10_000 * MS) for s in ("s3", "s1")] == [0, R.THROTTLED]


def test_a_replace_is_throttled_when_it_arrives(make):
    """The engine asks admit_replace before it takes the order's children down (the throttle
    does not depend on the new terms); on_replace(admitted=True) then uses no second token."""
    h = make({"firm": {"throttle_rate": 10, "throttle_burst": 3}})
    e = h.engine
    assert h.new(qty=5) == 0                                   # token 1
    key = h.key
    assert e.admit_replace(key, 0) == 0                        # token 2
    assert e.on_replace(key, 6, 10000, 901, 0, admitted=True) == 0
    assert e.working_order(key)["qty"] == 6
    assert e.admit_replace(key, 0) == 0                        # token 3
    assert e.admit_replace(key, 0) == R.THROTTLED
    assert e.on_replace(key, 7, 10000, 902, 0) == R.THROTTLED  # the one-call form uses one too
    assert e.working_order(key)["qty"] == 6
    assert e.admit_replace(10**9, 0) == R.UNKNOWN_ORDER


def test_a_replace_pays_the_bucket_of_the_session_that_sends_it(make):
    """Any session of the account may replace an order: the sender's key pays the token,
    not the key that placed the order (a throttled key replaced at another's rate)."""
    h = make({"firm": {"throttle_rate": 1000}, "sessions": {"slow": {"throttle_rate": 1,
                                                                       "throttle_burst": 1}}})
    e = h.engine
    fast, slow = e.session_index("f1", "fast"), e.session_index("s1", "slow")
    assert h.new(session="f1") == 0
    key = h.key
    assert e.admit_replace(key, 0, slow) == 0               # the slow key's one token
    assert e.admit_replace(key, 0, slow) == R.THROTTLED
    if h.cython:
        assert "throttle of slow (1 orders per second, burst 1)" in e.last_reject_text()
    assert e.admit_replace(key, 0, fast) == 0               # the fast key's own tokens
    assert e.admit_replace(key, 0) == 0                     # -1: the order's own session
    if h.cython:
        assert e.admit_replace(key, 0, 99) == R.UNKNOWN_SESSION


def test_duplicate_cl_ord_id_per_session(make):
    h = make()
    assert h.new(cl=42) == 0
    assert h.new(cl=42, price=10001) == R.DUPLICATE_CL_ORD_ID
    assert h.new(cl=42, session="S2") == 0
    h.engine.reset_daily(1)
    assert h.new(cl=42) == 0


def test_duplicative_order_window(make):
    h = make({"firm": {"duplicative_window_ms": 1000}})
    assert h.new(qty=7, now=0) == 0
    assert h.new(qty=7, now=1000 * MS - 1) == R.DUPLICATIVE_ORDER
    assert h.new(qty=7, now=1000 * MS - 1, flags=INTENDED) == 0
    assert h.new(qty=7, price=10001, now=1000 * MS - 1) == 0
    assert h.new(qty=7, account="A2", now=1) == 0
    assert h.new(qty=7, now=2000 * MS - 2) == R.DUPLICATIVE_ORDER     # window from the intended one
    assert h.new(qty=7, now=2000 * MS - 1) == 0


def test_duplicative_window_change_applies_to_orders_after_it(make):
    h = make({"firm": {"duplicative_window_ms": 10}})
    assert h.new(qty=7, now=0) == 0
    h.engine.update({"firm": {"duplicative_window_ms": 1000}}, now_ns=1)
    assert h.new(qty=7, now=10 * MS) == 0                     # blocked only for its own 10 ms
    assert h.new(qty=7, now=1009 * MS) == R.DUPLICATIVE_ORDER   # the new order blocks for 1000 ms
    h.engine.update({"firm": {"duplicative_window_ms": 1}}, now_ns=2)
    assert h.new(qty=7, now=1010 * MS - 1) == R.DUPLICATIVE_ORDER
    assert h.new(qty=7, now=1010 * MS) == 0


def test_duplicative_window_set_to_zero_keeps_earlier_passes_windows(make):
    # risk.md: each passed order blocks its twins for the window in force when it passed.
    h = make({"firm": {"duplicative_window_ms": 1000}})
    assert h.new(qty=7, now=0) == 0
    h.engine.update({"firm": {"duplicative_window_ms": 0}}, now_ns=1)
    assert h.new(qty=7, now=600 * MS) == R.DUPLICATIVE_ORDER
    assert h.new(qty=7, now=1000 * MS) == 0
    assert h.new(qty=7, now=1000 * MS + 1) == 0          # (that pass, under window 0, blocks nothing)


def test_a_downstream_reject_takes_back_the_duplicative_pass(make):
    # Refused after risk passed it (router, strategy, post-only...), the order never
    # worked: its corrected resend is no duplicate of it.
    h = make({"firm": {"duplicative_window_ms": 1000}})
    assert h.new(qty=7, now=0) == 0
    assert h.engine.on_reject(h.key) == 0
    assert h.new(qty=7, now=1 * MS) == 0
    assert h.new(qty=7, now=2 * MS) == R.DUPLICATIVE_ORDER   # the resend works: its twins wait


def test_a_downstream_reject_leaves_the_working_twins_windows(make):
    h = make({"firm": {"duplicative_window_ms": 1000}})
    assert h.new(qty=7, now=0) == 0                          # A works
    assert h.new(qty=7, now=500 * MS, flags=INTENDED) == 0   # B, meant, refused downstream
    assert h.engine.on_reject(h.key) == 0
    assert h.new(qty=7, now=1000 * MS - 1) == R.DUPLICATIVE_ORDER   # A's window, not B's
    assert h.new(qty=7, now=1000 * MS) == 0
    # Refused after a later twin passed, an order's reject leaves that twin's window.
    assert h.new(qty=8, now=2000 * MS) == 0
    first = h.key
    assert h.new(qty=8, now=2500 * MS, flags=INTENDED) == 0
    assert h.engine.on_reject(first) == 0
    assert h.new(qty=8, now=3500 * MS - 1) == R.DUPLICATIVE_ORDER
    assert h.new(qty=8, now=3500 * MS) == 0


def test_a_cancel_keeps_the_duplicative_pass(make):
    # A canceled order did work: a twin inside the window is still duplicative.
    h = make({"firm": {"duplicative_window_ms": 1000}})
    assert h.new(qty=7, now=0) == 0
    assert h.engine.on_cancel(h.key) == 0
    assert h.new(qty=7, now=1 * MS) == R.DUPLICATIVE_ORDER


def test_duplicative_history_survives_purges(make):
    # Far more distinct orders than the table holds before it purges, then a twin of each live one.
    h = make({"firm": {"duplicative_window_ms": 1}, "accounts": {"A1": {"cash": "100000000000"}}})
    for k in range(5000):
        assert h.new(qty=1 + k % 50, price=1000 + k, now=k * 1000) == 0
    now = 5000 * 1000
    recent = [k for k in range(5000) if now - k * 1000 < MS]
    assert len(recent) == 999
    assert all(h.new(qty=1 + k % 50, price=1000 + k, now=now) == R.DUPLICATIVE_ORDER for k in recent)
    assert h.new(qty=1 + 4000 % 50, price=1000 + 4000, now=now) == 0


# ---------------------------------------------------------------- kill switch, disconnect
@pytest.mark.parametrize("scope, target, layer", [("global", None, L.LAYER_FIRM),
                                                  ("account", "A1", L.LAYER_ACCOUNT),
                                                  ("instrument", "AAPL", L.LAYER_INSTRUMENT)])
def test_kill_switch(make, scope, target, layer, caplog):
    h = make()
    assert h.new() == 0
    k1 = h.key
    assert h.new(account="A2", instrument="MSFT") == 0
    k2 = h.key
    with caplog.at_level(logging.WARNING, logger="kronos.risk"):
        keys = h.engine.engage_kill_switch(scope, target, now_ns=7, actor="ops", reason="test")
    assert keys == ([k1, k2] if scope == "global" else [k1])
    assert h.new() == R.KILL_SWITCH and h.layer() == layer
    assert (h.new(account="A2", instrument="MSFT") == 0) == (scope != "global")
    h.engine.release_kill_switch(scope, target, now_ns=8, actor="ops")
    assert h.new() == 0
    if h.cython:
        log = h.engine.audit_log
        assert [(e["action"], e["scope"], e["target"], e["actor"]) for e in log[-2:]] == [
            ("kill_switch_engage", scope, target, "ops"), ("kill_switch_release", scope, target, "ops")]
        assert log[-2]["orders"] == len(keys)
        assert any(r.risk_event["action"] == "kill_switch_engage" for r in caplog.records)


def test_cancel_on_disconnect_returns_session_orders(make):
    h = make()
    assert h.new(session="S1") == 0
    a = h.key
    assert h.new(session="S2") == 0
    assert h.new(session="S1", price=9999) == 0
    c = h.key
    assert h.engine.cancel_on_disconnect("S1", 5) == [a, c]
    for key in (a, c):
        assert h.engine.on_cancel(key) == 0
    assert h.engine.cancel_on_disconnect("S1", 6) == []
    assert h.exposure()["open_orders"] == 1
    # A session that opted in but never placed an order has nothing to cancel
    # (it raised KeyError, logged as a traceback by the engine at every timeout).
    assert h.engine.cancel_on_disconnect("never-ordered", 7) == []


def test_the_audit_log_keeps_the_latest_entries_only():
    """One entry per cancel-on-disconnect grew the list for the process's life."""
    engine = RiskEngine(BASE)
    for n in range(ext.risk.AUDIT_LOG_KEEP + 10):
        engine.release_kill_switch("global", now_ns=n, actor="ops")
    assert len(engine.audit_log) <= ext.risk.AUDIT_LOG_KEEP
    assert engine.audit_log[-1]["ts_ns"] == ext.risk.AUDIT_LOG_KEEP + 9


# ---------------------------------------------------------------- lifecycle and replace
def test_fill_cancel_reject_release_exposure(make):
    h = make()
    assert h.new(qty=10) == 0
    k = h.key
    assert h.exposure()["open_buy"] == 10
    assert h.engine.on_fill(k, 0, 10000) == R.INVALID_QTY
    assert h.engine.on_fill(k, 4, 9990) == 0
    assert h.exposure() == {"position": 4, "open_buy": 6, "open_sell": 0, "cost": 4 * 9990 * 100,
                            "open_orders": 1}
    assert h.money()["reserved"] == 6 * 10000 * 100
    assert h.engine.on_cancel(k) == 0
    assert h.engine.on_cancel(k) == R.UNKNOWN_ORDER
    assert h.exposure()["open_buy"] == 0 and h.money()["reserved"] == 0
    assert h.new(qty=3) == 0
    assert h.engine.on_reject(h.key) == 0
    assert h.exposure()["open_orders"] == 0


def test_an_overfill_moves_the_position_by_every_lot_traded(make):
    # A venue's overfill is a fact: the engine books every lot, so risk's
    # position must too (refused, the two disagreed about what was bought).
    h = make()
    assert h.new(qty=10) == 0
    k = h.key
    assert h.engine.on_fill(k, 4, 10000) == 0
    assert h.engine.on_fill(k, 9, 10000) == 0            # 6 left, 9 traded
    assert h.exposure() == {"position": 13, "open_buy": 0, "open_sell": 0,
                            "cost": 13 * 10000 * 100, "open_orders": 0}
    assert h.money()["reserved"] == 0
    assert h.engine.on_fill(k, 1, 10000) == R.UNKNOWN_ORDER   # done: not its order any more
    e = h.engine
    a, i = e.account_index("A1"), e.instrument_index("AAPL")
    assert e.on_fill_done(a, i, BUY, 2, 10000) == 0          # a later overfill of it
    assert e.on_fill_done(a, i, BUY, 0, 10000) == R.INVALID_QTY
    assert e.on_fill_done(a, i, BUY, 1, 0) == R.INVALID_PRICE
    assert h.exposure()["position"] == 15 and h.exposure()["cost"] == 15 * 10000 * 100


def test_replace_checked_against_limits(make):
    h = make({"accounts": {"A1": {"max_order_qty": 100}}})
    assert h.new(qty=50) == 0
    k = h.key
    assert h.fill_last(20, 10000) == 0
    assert h.engine.on_replace(k, 101, 10000, 9001, 1) == R.MAX_ORDER_QTY
    assert h.engine.working_order(k)["leaves"] == 30          # unchanged
    assert h.exposure()["open_buy"] == 30
    assert h.engine.on_replace(k, 100, 10005, 9002, 1) == 0
    assert h.engine.working_order(k)["leaves"] == 80
    assert h.exposure()["open_buy"] == 80
    assert h.money()["reserved"] == 80 * 10005 * 100
    assert h.engine.on_replace(k, 20, 10005, 9003, 1) == R.REPLACE_QTY_NOT_ABOVE_FILLED
    assert h.engine.on_replace(k, 100, 10005, 9002, 1) == R.DUPLICATE_CL_ORD_ID



def test_reduce_only_replace_passes_limits_tightened_below_it(make):
    # A trader cuts an order that tightened limits (or a halt) left above what
    # a new order could be: fewer lots at the same price take risk away and
    # must go through, as a cancel would; anything else is judged.
    h = make()
    assert h.new(qty=50) == 0
    k = h.key
    assert h.fill_last(10, 10000) == 0
    h.engine.reload(merged(BASE, {"accounts": {"A1": {"max_order_qty": 5}}}))
    h.engine.set_halted("AAPL", True, 2)
    assert h.engine.on_replace(k, 30, 10000, 9001, 3) == 0       # 40 -> 20 leaves, same price
    assert h.engine.working_order(k)["leaves"] == 20
    assert h.exposure()["open_buy"] == 20
    assert h.money()["reserved"] == 20 * 10000 * 100           # shrunk exactly
    assert h.engine.on_replace(k, 30, 10000, 9002, 4) == 0       # same lots: no change either
    assert h.engine.on_replace(k, 25, 9999, 9003, 5) == R.INSTRUMENT_HALTED   # new price: judged
    h.engine.set_halted("AAPL", False, 6)
    assert h.engine.on_replace(k, 25, 9999, 9004, 7) == R.MAX_ORDER_QTY
    assert h.engine.on_replace(k, 31, 10000, 9005, 8) == R.MAX_ORDER_QTY   # more lots: judged
    assert h.engine.working_order(k)["leaves"] == 20
    assert h.money()["reserved"] == 20 * 10000 * 100
    assert h.engine.on_replace(k, 10, 10000, 9006, 9) == R.REPLACE_QTY_NOT_ABOVE_FILLED
    assert h.engine.on_replace(k, 11, 10000, 9006, 9) == R.DUPLICATE_CL_ORD_ID


# ---------------------------------------------------------------- run-time reload
def test_reload_keeps_counters_and_applies_new_limits(make):
    h = make()
    assert h.new(qty=10) == 0
    k = h.key
    h.fill_last(4, 10000)
    before = (h.exposure(), h.money())
    config = merged(BASE, {"accounts": {"A1": {"max_order_qty": 5}, "A3": {"cash": "10"}}})
    h.engine.reload(config)
    assert (h.exposure(), h.money()) == before
    assert h.new(qty=6) == R.MAX_ORDER_QTY
    assert h.new(qty=5) == 0
    assert h.new(account="A3", price=100) == 0
    assert h.engine.on_fill(k, 6, 10000) == 0
    assert h.exposure()["position"] == 10


def test_reload_drops_an_account_but_keeps_its_state(make):
    h = make()
    assert h.new(qty=2) == 0
    config = copy.deepcopy(BASE)
    del config["accounts"]["A1"]
    h.engine.reload(config)
    assert h.new() == R.UNKNOWN_ACCOUNT
    assert h.exposure()["open_buy"] == 2


def test_invalid_reload_changes_nothing():
    risk = RiskEngine(merged(BASE, {"accounts": {"A1": {"max_order_qty": 5}}}))
    bad = [
        merged(BASE, {"accounts": {"A1": {"max_order_qty": 1.5}}}),       # float
        merged(BASE, {"accounts": {"A1": {"max_ordr_qty": 1}}}),           # typo
        merged(BASE, {"firm": {"money_unit": "0.01"}, "instruments": {"X": {"tick_size": "0.001"}}}),
        merged(BASE, {"accounts": {"A1": {"cash": "-1"}}}),
    ]
    for config in bad:
        with pytest.raises(ConfigError):
            risk.reload(config)
    s, a, i = risk.session_index("S"), risk.account_index("A1"), risk.instrument_index("AAPL")
    assert risk.check_new(1, s, a, i, BUY, LIMIT, 6, 100, 0, 1, 0) == R.MAX_ORDER_QTY
    assert risk.instruments == ["AAPL", "MSFT"]


def test_a_limit_for_an_instrument_the_config_lacks_is_refused():
    # A misspelt symbol would leave the limit meant for the real one off, silently.
    config = merged(BASE, {"accounts": {"A1": {"limits": {"APPL": {"max_order_qty": 10}}}}})
    with pytest.raises(ConfigError, match=r"^accounts\.A1\.limits\.APPL: no such instrument in "
                                          r"this config \(instruments: AAPL, MSFT\)"):
        RiskEngine(config)
    risk = RiskEngine(BASE)
    with pytest.raises(ConfigError, match=r"limits\.APPL: no such instrument"):
        risk.reload(config)
    ok = merged(BASE, {"accounts": {"A1": {"limits": {"AAPL": {"max_order_qty": 10}}}}})
    risk.reload(ok)
    s, a, i = risk.session_index("S"), risk.account_index("A1"), risk.instrument_index("AAPL")
    assert risk.check_new(1, s, a, i, BUY, LIMIT, 11, 100, 0, 1, 0) == R.MAX_ORDER_QTY


@pytest.mark.parametrize("changes, key", [
    ({"firm": {"money_unit": "0.01"}}, "firm.money_unit"),
    ({"instruments": {"AAPL": {"tick_size": "0.05"}}}, "instruments.AAPL.tick_size"),
    ({"instruments": {"AAPL": {"lot_size": "100"}}}, "instruments.AAPL.lot_size"),
])
def test_reload_refuses_new_units(make, changes, key):
    # Counters, positions and working orders are integers of the units in force:
    # read in new ones they would be wrong (buying power $900 -> -$9000 here).
    h = make()
    h.trade(BUY, 10, 10000)
    assert h.new(qty=5) == 0
    before = (h.exposure(), h.money())
    for change in (lambda: h.engine.reload(merged(BASE, changes)), lambda: h.engine.update(changes)):
        with pytest.raises(ValueError) as exc:
            change()
        if h.cython:
            assert isinstance(exc.value, ConfigError)
            assert str(exc.value).startswith(f"{key}: cannot change from ")
            assert "restart the engine on a new journal" in str(exc.value)
    assert (h.exposure(), h.money()) == before
    assert h.new(qty=4, price=10000) == 0                     # the old limits and units still work
    # the same units written another way are no change
    h.engine.reload(merged(BASE, {"firm": {"money_unit": "0.00010"},
                                  "instruments": {"AAPL": {"tick_size": "0.010", "lot_size": "1.0"}}}))
    assert (h.exposure()["position"], h.exposure()["open_buy"]) == (10, 9)


def test_reload_refuses_new_grid_for_a_symbol_that_was_left_out(make):
    h = make()
    h.trade(BUY, 10, 10000, instrument="MSFT")
    config = copy.deepcopy(BASE)
    del config["instruments"]["MSFT"]
    h.engine.reload(config)                                   # left out: its state is kept
    with pytest.raises(ValueError):
        h.engine.reload(merged(BASE, {"instruments": {"MSFT": {"lot_size": "10"}}}))
    h.engine.reload(BASE)
    assert h.exposure(instrument="MSFT")["position"] == 10


@pytest.mark.parametrize("config, key", [
    ({"firm": {"throttle_rate": 1000, "throttle_burst": 0}}, "firm.throttle_burst"),
    ({"firm": {"throttle_burst": "0"}}, "firm.throttle_burst"),
    ({"sessions": {"S1": {"throttle_rate": 5, "throttle_burst": 0}}}, "sessions.S1.throttle_burst"),
])
def test_zero_throttle_burst_is_refused(config, key):
    # A bucket that cannot hold one order's token throttles every order forever.
    with pytest.raises(ConfigError, match=rf"^{key}: .* must be at least 1 .*throttle_rate = 0"):
        RiskEngine(merged(BASE, config))
    risk = RiskEngine(merged(BASE, {"firm": {"throttle_rate": 1000}}))
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        risk.reload(merged(BASE, config))
    s = risk.session_index("S1")
    assert risk.check_new(1, s, 0, 0, BUY, LIMIT, 1, 100, 0, 1, 0) == 0     # burst kept at 1000


def test_update_merges_an_admin_message(make):
    h = make()
    assert h.new(qty=10, price=100) == 0
    h.engine.update({"accounts": {"A1": {"max_order_qty": 3}}}, now_ns=9, actor="ops")
    assert h.new(qty=4, price=100) == R.MAX_ORDER_QTY
    assert h.new(qty=3, price=100) == 0                       # cash and other keys kept
    assert h.exposure()["open_buy"] == 13
    if h.cython:
        assert h.engine.config["accounts"]["A1"]["cash"] == "1000000"
        assert h.engine.audit_log[-1]["action"] == "update" and h.engine.audit_log[-1]["actor"] == "ops"


# ---------------------------------------------------------------- Cython-only surface
def test_reject_text_is_actionable():
    h = Harness(RiskEngine, merged(BASE, {"accounts": {"A1": {"cash": "1000"}}}))
    assert h.new(price=100001) == R.INSUFFICIENT_BUYING_POWER
    text = h.text()
    assert text.startswith("INSUFFICIENT_BUYING_POWER: order cost 1000.01 exceeds the buying power 1000")
    assert "account A1" in text and "AAPL" in text


def test_reject_text_refuses_a_float_reason():
    """reject_text(38.9) explained MAX_ORDER_QTY (38): an int parameter truncated it (review)."""
    h = Harness(RiskEngine, merged(BASE, {"accounts": {"A1": {"cash": "1000"}}}))
    assert h.new(price=100001) == R.INSUFFICIENT_BUYING_POWER
    with pytest.raises(TypeError, match="^reason must be an integer"):
        h.engine.reject_text(float(R.MAX_ORDER_QTY) + 0.9)
    with pytest.raises(ValueError, match="^reason "):
        h.engine.reject_text(2**70)
    assert h.engine.reject_text(R.INSUFFICIENT_BUYING_POWER) == h.text()



    config = merged(BASE, {"firm": {"duplicative_window_ms": 100, "throttle_rate": 50}})
    h = Harness(RiskEngine, config)
    h.engine.set_reference_price(0, 10000, 0)
    h.engine.session_index("S1")                     # index 0, used below
    h.engine.session_index("S2", "S1")               # shares S1's bucket
    h.engine.session_index("S3")
    h.engine.session_index("S3", "K")                # moved: its old bucket stays
    assert h.new(qty=10) == 0
    h.fill_last(3, 10000)
    assert h.new(side=SELL, qty=2, price=10100) == 0
    snap = h.engine.snapshot()
    other = RiskEngine(config)
    other.restore(snap)
    assert other.snapshot() == snap
    # both go on identically
    for engine in (h.engine, other):
        assert engine.check_new(50, 0, 0, 0, BUY, LIMIT, 10, 10000, 0, 1001, 1) == R.DUPLICATE_CL_ORD_ID
        assert engine.check_new(50, 0, 0, 0, BUY, LIMIT, 10, 10000, 0, 7, 2) == R.DUPLICATIVE_ORDER
        assert engine.on_fill(1, 7, 10010) == 0
    assert other.snapshot() == h.engine.snapshot()


def test_batch_matches_single_calls():
    import numpy as np
    rows = np.array([[k, 0, k % 2, k % 2, BUY if k % 3 else SELL, LIMIT, 1 + k % 5, 10000 + k, 0, k, k]
                     for k in range(1, 200)], dtype=np.int64)
    batch = RiskEngine(BASE)
    batch.session_index("S1")
    out = np.zeros(len(rows), dtype=np.uint16)
    passed = batch.check_new_batch(rows, out)
    single = RiskEngine(BASE)
    single.session_index("S1")
    expect = [single.check_new(*map(int, row)) for row in rows]
    assert out.tolist() == expect and passed == expect.count(0)
    assert batch.snapshot() == single.snapshot()


M64 = (1 << 64) - 1
MIX1, MIX2 = 0xbf58476d1ce4e5b9, 0x94d049bb133111eb


def mix(x):
    """ext/risk.pyx's kx_mix (the splitmix64 finaliser), on unsigned 64-bit ints."""
    x &= M64
    x = ((x ^ (x >> 30)) * MIX1) & M64
    x = ((x ^ (x >> 27)) * MIX2) & M64
    return x ^ (x >> 31)


def unmix(y):
    """The key ``x`` with ``mix(x) == y`` (every step of the finaliser is invertible)."""
    def unshift(v, s):
        x = v
        for _ in range(64 // s + 1):
            x = v ^ (x >> s)
        return x
    x = unshift(y, 31)
    x = unshift((x * pow(MIX2, -1, 1 << 64)) & M64, 27)
    x = unshift((x * pow(MIX1, -1, 1 << 64)) & M64, 30)
    assert mix(x) == y
    return x - (1 << 64) if x >= 1 << 63 else x


def test_order_keys_sharing_an_index_hash_stay_apart():
    """The order index keeps 32 bits of each key's hash and reads the key from the pool
    only when they match: keys whose hashes agree in all 32 bits are still told apart."""
    engine = RiskEngine(BASE)
    s = engine.session_index("S1")
    first = 12345
    twins = [unmix((mix(first) & 0xFFFFFFFF) | (k << 32)) for k in range(1, 6)]
    keys = [first] + twins
    for n, key in enumerate(keys):
        assert engine.check_new(key, s, 0, 0, BUY, LIMIT, 1, 10000 + n, 0, 100 + n, 0) == 0
    with pytest.raises(ValueError, match="already working"):
        engine.check_new(twins[2], s, 0, 0, BUY, LIMIT, 1, 10000, 0, 999, 0)
    assert [engine.working_order(k)["price"] for k in keys] == [10000 + n for n in range(len(keys))]
    assert engine.on_cancel(twins[0]) == 0 and engine.on_fill(first, 1, 10000) == 0
    assert engine.working_order(twins[0]) is None and engine.working_order(first) is None
    assert [engine.working_order(k)["price"] for k in twins[1:]] == [10002, 10003, 10004, 10005]
    assert engine.on_cancel(twins[0]) == R.UNKNOWN_ORDER
    assert engine.n_working == 4


def test_cl_ord_id_whose_table_key_is_zero():
    """The cl_ord_id table keeps one 8-byte key per (session, hash) pair, 0 marking an
    empty bucket; the one pair whose key is 0 is still recorded, per session and day."""
    golden = 0x9E3779B97F4A7C15
    engine = RiskEngine(BASE)
    s1, s2 = engine.session_index("S1"), engine.session_index("S2")
    zero = unmix(0) ^ ((s1 * golden) & M64)            # _clord_key(zero, s1) == 0
    zero = zero - (1 << 64) if zero >= 1 << 63 else zero

    def new(key, session, cl):
        return engine.check_new(key, session, 0, 0, BUY, LIMIT, 1, 10000 + key, 0, cl, key)
    assert new(1, s1, zero) == 0
    assert new(2, s1, zero) == R.DUPLICATE_CL_ORD_ID
    assert new(3, s2, zero) == 0 and new(4, s1, zero + 1) == 0
    other = RiskEngine(BASE)
    other.restore(engine.snapshot())
    assert other.snapshot() == engine.snapshot()
    assert other.check_new(5, s1, 0, 0, BUY, LIMIT, 1, 10005, 0, zero, 5) == R.DUPLICATE_CL_ORD_ID
    engine.reset_daily(10)
    assert new(6, s1, zero) == 0 and new(7, s1, zero) == R.DUPLICATE_CL_ORD_ID


def test_cl_ord_hash_is_fnv1a_64_of_the_utf8():
    """The duplicate checks' key of a cl_ord_id: stable across restarts (published vectors)."""
    from ext.risk import cl_ord_hash

    def signed(x):
        return x - (1 << 64) if x >= 1 << 63 else x
    assert cl_ord_hash("") == signed(0xcbf29ce484222325)
    assert cl_ord_hash("a") == signed(0xaf63dc4c8601ec8c)
    assert cl_ord_hash("foobar") == signed(0x85944171f73967e8)
    assert cl_ord_hash("é") != cl_ord_hash("e")  # UTF-8 bytes, not a lossy encoding
    assert len({cl_ord_hash(f"algo-{i}") for i in range(10_000)}) == 10_000


def test_a_float_quantity_or_price_is_refused_never_truncated(make):
    """on_fill(key, 2.5, ...) booked 2 lots: the Python API's int64 parameters cut floats
    down in silence (audit of the book; the same in risk)."""
    h = make()
    assert h.new(qty=5) == 0
    for call in (lambda: h.engine.on_fill(h.key, 2.5, 10000),
                 lambda: h.engine.on_fill(h.key, 2, 10000.5),
                 lambda: h.engine.on_replace(h.key, 4.5, 10000, 99, 1)):
        with pytest.raises(TypeError):
            call()
    assert h.exposure()["position"] == 0 and h.exposure()["open_buy"] == 5


def test_a_market_reference_stays_as_of_the_last_check_across_the_generations_wrap():
    # market_checked counts checks in 32 bits (the per-instrument record stays one cache
    # line): 2^32 checks after a quote that never changed again, the count must not meet
    # the quote's generation and have it judged by its own, older, time.
    h = Harness(RiskEngine, {**BASE, "firm": {"collar_bps": 100, "max_reference_age_ms": 1000}})
    e = h.engine
    i = e.instrument_index("AAPL")
    e.market_gen = 2**32 - 2
    e.set_market_reference(i, 10000, 5)     # (its generation: 2^32 - 2)
    e.market_checked(1000 * MS)
    e.market_checked(2000 * MS)             # the count wraps
    e.market_gen = 2**32 - 3                # (as if 2^32 - 4 more checks came)
    e.market_checked(3000 * MS)             # the count is the quote's generation again
    assert e.snapshot()["instrument_state"][i][:2] == [10000, 3000 * MS]
    assert h.new(now=4000 * MS) == 0
    assert h.new(now=4000 * MS + 1) == R.STALE_REFERENCE_PRICE
