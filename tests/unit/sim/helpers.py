"""Small markets and configurations for the simulator tests.

``quiet_market`` has no background flow and fixed latencies, so a test places
every order itself and can state exact times, prices, fills and fees.
``small_config`` is a two-minute session with flow, for backtests that must
run in well under a second.
"""
from __future__ import annotations

import copy

from ext.book import OP_ADD, OP_CANCEL, OrderBook
from ext.types import OrdType, Side, StpMode, TimeInForce
from sim.config import SimConfig, config_from_dict
from sim.market import Market

US = 1_000
BUY, SELL = int(Side.BUY), int(Side.SELL)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
GTC, DAY, IOC, FOK = (int(TimeInForce.GTC), int(TimeInForce.DAY), int(TimeInForce.IOC),
                      int(TimeInForce.FOK))
STP_NONE = int(StpMode.STP_NONE)

#: Venue 0 maker-taker per share, 1 in basis points, 2 inverted, 3 dark.
QUIET = {
    "session": {"date": "2026-01-05", "start": "10:00:00", "end": "10:10:00", "warmup": "0s",
                "seed": 1, "sample_interval": "1s"},
    "instruments": [{"symbol": "AAA", "tick_size": "0.01", "lot_size": "1", "price": "50.00"}],
    "venues": [
        {"name": "FAST", "fees": {"maker_per_share": "-0.0020", "taker_per_share": "0.0030"},
         "latency": {"model": "fixed", "mean_us": 100.0}},
        {"name": "BPS", "fees": {"maker_bps": "-0.10", "taker_bps": "0.25"},
         "latency": {"model": "fixed", "mean_us": 300.0}},
        {"name": "INV", "fees": {"maker_per_share": "0.0010", "taker_per_share": "-0.0005"},
         "latency": {"model": "fixed", "mean_us": 200.0}},
        {"name": "POOL", "kind": "dark",
         "fees": {"maker_per_share": "0.0010", "taker_per_share": "0.0010"},
         "latency": {"model": "fixed", "mean_us": 50.0}},
    ],
    "parents": [{"symbol": "AAA", "side": "buy", "qty": "1000"}],
}

SMALL = {
    "session": {"date": "2026-01-05", "start": "10:00:00", "end": "10:02:00", "warmup": "5s",
                "seed": 7, "sample_interval": "1s"},
    "instruments": [{"symbol": "AAA", "tick_size": "0.01", "lot_size": "1", "price": "50.00",
                     "volatility": 0.3}],
    "flow": {"lp_rate": 150.0, "cancel_rate": 50.0, "taker_rate": 20.0, "max_orders": 80,
             "dark_rate": 4.0, "dark_taker_rate": 3.0},
    "venues": copy.deepcopy(QUIET["venues"]),
    "strategy": {"name": "twap", "params": {"slices": 4}},
    "parents": [{"symbol": "AAA", "side": "buy", "qty": "3000", "start": "10:00:00",
                 "duration": "90s"}],
    "output": {"plots": False},
}


def config(base: dict, **sections) -> SimConfig:
    """A configuration from one of the dicts above, with sections replaced."""
    data = copy.deepcopy(base)
    data.update(copy.deepcopy(sections))
    return config_from_dict(data)


def quiet_market(book_class=OrderBook, record_tape: bool = False, **sections) -> Market:
    """No background flow, fixed latencies; the clock at the session start."""
    m = Market(config(QUIET, **sections), book_class=book_class, flow=False,
               record_tape=record_tape)
    m.run_until(m.session_start)
    return m


class Recorder:
    """An ``on_report`` callback that keeps every report as a tuple of its fields."""

    def __init__(self) -> None:
        self.reports = []

    def __call__(self, report) -> None:
        self.reports.append(report)

    def kinds(self):
        return [int(r.kind) for r in self.reports]


def add(m: Market, venue: str, order_id: int, side: int, price: int, qty: int,
        account: int = 1, tif: int = GTC, ord_type: int = LIMIT) -> int:
    """A background order on a venue, now."""
    return m.loop.external(m.book_index(venue, "AAA"), OP_ADD, order_id, side, price, qty,
                           ord_type, tif, account, STP_NONE)


def cancel(m: Market, venue: str, order_id: int) -> int:
    return m.loop.external(m.book_index(venue, "AAA"), OP_CANCEL, order_id)
