"""Compiled strategies (``ext.simstrat``) and the C bookkeeping of ``StrategyCore``.

A compiled strategy must behave exactly like the same logic written in
Python: same child orders at the same times, same fills. The bookkeeping
behind ``working``, ``fills`` and ``children`` is kept in C and shown to
Python on demand; these tests pin what Python sees.
"""
from ext.simloop import ReportKind as K, StrategyCore
from ext.simstrat import PeriodicTakerCore
from ext.types import OrdType, TimeInForce
from sim import Backtest
from sim.strategies import ExecutionStrategy, ParentOrder, PeriodicTakerStrategy, resolve_strategy
from tests.unit.sim.helpers import BUY, SELL, SMALL, US, add, config, quiet_market

S = 1_000_000_000
MARKET, IOC = int(OrdType.MARKET), int(TimeInForce.IOC)


class PythonPeriodicTaker(ExecutionStrategy):
    """``PeriodicTakerStrategy`` written in Python, line for line."""

    name = "py_periodic_taker"
    defaults = {"interval": S, "child_qty": 1, "venues": None}

    def on_start(self):
        self.n_sent = 0
        self.venue_list = self.params["venues"] or [v.index for v in self.market.lit_venues()]
        self.on_timer()
        self.wake_every(self.params["interval"])

    def on_timer(self):
        qty = min(self.params["child_qty"], self.remaining - self.open_qty)
        if qty > 0:
            self.send(self.venue_list[self.n_sent % len(self.venue_list)], qty, 0, MARKET, IOC)
            self.n_sent += 1


def fill_rows(result):
    return list(zip(*(result.fills[k] for k in ("child_id", "venue", "venue_ts", "recv_ts",
                                                  "price_x2", "lots", "fee_units"))))


def assert_twins_trade_alike(cfg, params, python_strategy):
    """``periodic_taker`` and its Python twin ``python_strategy`` (a dotted path) make the
    same orders and fills on ``cfg`` (seeded); returns the compiled one's result."""
    cy = Backtest(cfg, strategy="periodic_taker", params=params, seed=11).run()
    py = Backtest(cfg, strategy=python_strategy, params=params, seed=11).run()
    assert len(fill_rows(cy)) > 20
    assert fill_rows(cy) == fill_rows(py)
    strip = lambda orders: [repr({k: v for k, v in o.items() if k != "strategy"})  # noqa: E731
                            for o in orders]                         # repr: NaN == NaN
    assert strip(cy.orders) == strip(py.orders)
    return cy


def test_compiled_and_python_versions_trade_identically():
    assert_twins_trade_alike(config(SMALL), {"interval": 2 * S, "child_qty": 40},
                             "tests.unit.sim.test_compiled:PythonPeriodicTaker")


def test_periodic_taker_stops_at_the_parent_quantity():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 1000)
    parent = ParentOrder(1, "AAA", BUY, 25, m.now, m.now + 60 * S)
    s = PeriodicTakerStrategy(m, parent, interval="1s", child_qty=10, venues=["FAST"])
    assert isinstance(s, PeriodicTakerCore) and isinstance(s, StrategyCore)
    assert resolve_strategy("periodic_taker") is PeriodicTakerStrategy
    m.set_timer(parent.start_ns, s.start)
    m.run_until(m.now + 10 * S)
    assert s.filled == 25 and s.n_sent == 3
    assert [f.last_qty for f in s.fills] == [10, 10, 5]
    assert all(f.venue == 0 and f.price_x2 == 10002 for f in s.fills)
    # one per second from the start, each filled 200 us later (100 us each way)
    t0 = parent.start_ns
    assert [f.recv_ts - t0 for f in s.fills] == [200 * US, S + 200 * US, 2 * S + 200 * US]


def test_periodic_taker_sends_its_first_child_to_the_first_venue_listed():
    """Audit (stop 33): it counted before choosing, so the first child went to the second."""
    m = quiet_market()
    for venue in ("FAST", "BPS", "INV"):
        add(m, venue, 1, SELL, 5001, 1000)
    parent = ParentOrder(1, "AAA", BUY, 30, m.now, m.now + 60 * S)
    s = PeriodicTakerStrategy(m, parent, interval="1s", child_qty=10, venues=["INV", "FAST"])
    m.set_timer(parent.start_ns, s.start)
    m.run_until(m.now + 10 * S)
    assert [f.venue for f in s.fills] == [2, 0, 2]       # INV, FAST, INV


def test_fills_children_and_working_are_stable_python_views():
    class Two(ExecutionStrategy):
        name = "two"

        def on_start(self):
            self.a = self.send(0, 5, 5001)          # rests 2 after taking 3
            self.b = self.send(2, 4, 4990)          # rests whole

    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 3)
    s = Two(m, ParentOrder(1, "AAA", BUY, 100, m.now, m.now + 60 * S))
    m.set_timer(m.now, s.start)
    m.run_until(m.now + S // 100)
    assert s.children == [s.a, s.b] and s.children is s.children
    fills = s.fills
    assert [f.last_qty for f in fills] == [3] and s.fills[0] is fills[0]
    assert s.working == {s.a: 2, s.b: 4} and s.open_qty == 6 and s.n_working == 2
    s.cancel(s.b)
    m.run_until(m.now + S // 100)
    assert s.working == {s.a: 2} and s.n_working == 1
    add(m, "FAST", 2, SELL, 5001, 2)            # a maker fill for a's rest
    m.run_until(m.now + S // 100)
    assert s.working == {} and s.filled == 5
    assert s.fills is fills and [f.last_qty for f in fills] == [3, 2]
    assert fills[1].kind == K.RPT_FILL and fills[1].leaves_qty == 0


def test_an_elided_ack_still_measures_the_round_trip():
    # A strategy ignores acks: an IOC's ack is dropped when its fill or
    # cancel comes in the same batch, but the first report still times
    # the round trip, and a plain callback still gets every ack.
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 3)
    s = PeriodicTakerStrategy(m, ParentOrder(1, "AAA", BUY, 3, m.now, m.now + 60 * S),
                              interval="1s", child_qty=3, venues=[0])
    m.set_timer(m.now, s.start)
    m.run_until(m.now + S // 100)
    assert s.filled == 3
    assert m.latency(0)[1:] == (200 * US, 1)
    seen = []
    add(m, "FAST", 2, SELL, 5001, 3)
    m.submit("FAST", "AAA", BUY, 3, 5001, OrdType.LIMIT, TimeInForce.IOC,
             on_report=lambda r: seen.append(K(r.kind)))
    m.run_until(m.now + S // 100)
    assert seen == [K.RPT_ACCEPTED, K.RPT_FILL]
    assert m.latency(0)[1:] == (200 * US, 2)
