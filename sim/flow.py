"""Synthetic background flow: the other participants of the simulated market.

Role in the pipeline: the venues' books need someone to trade with. This
module draws random numbers vectorized with numpy, one chunk at a time, and
``ext.simflow.FlowAssembler`` turns each chunk into book operations
(``ext.book.OP_DTYPE``) with a book index each, in timestamp order, which the
event loop (``ext.simloop.MarketLoop``) applies one by one at C level.

The model, per book (one venue, one instrument), as in ``FlowConfig``:

* a reference price per instrument, a geometric Brownian motion (or an
  arithmetic random walk) with the instrument's annualised volatility
  (252 days of 6.5 hours);
* liquidity providers adding limit orders a geometric number of ticks behind
  a quote ``half_spread_ticks`` from the reference price, each new order
  replacing the oldest of their ``max_orders`` live orders in that book (a
  cancel just before it), so books stay bounded and quotes follow the price;
  plus random cancels of their live orders;
* takers sending market orders that cross the spread;
* in dark pools, resting midpoint pegs and IOC midpoint orders.

All event kinds of all books form one Poisson process (exponential gaps at
the total rate) whose events are assigned to (book, kind) in proportion to
the rates; events of a venue outside its hours are dropped, which thins a
Poisson process into a Poisson process. Everything is drawn from one seeded
``numpy.random.Generator``: the same seed gives the same operations.

Background orders use accounts 1-4 (``LP_ACCOUNT`` ...) and ``STP_NONE``, and
ids counted per book from 1, far below ``ext.simloop.CHILD_ID_BASE``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ext.simflow import (  # noqa: F401  (account constants are part of this API)
    DARK_LP_ACCOUNT, DARK_TAKER_ACCOUNT, KIND_ADD, KIND_CANCEL, KIND_TAKE, LP_ACCOUNT,
    TAKER_ACCOUNT, FlowAssembler,
)
from sim.config import FlowConfig, InstrumentConfig

#: Seconds in a trading year, for annualised volatility (252 days x 6.5 h).
TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600


@dataclass(frozen=True)
class FlowBook:
    """What the generator needs to know about one book."""

    instrument: int
    dark: bool
    open_ns: int
    close_ns: int
    scale: float


def _log1mp(mean: float) -> float:
    """``log(1 - p)`` of the geometric distribution on {1, ...} with this mean."""
    p = 1.0 / max(mean, 1.0)
    return math.log1p(-p) if p < 1.0 else -math.inf


class SyntheticFlow:
    """Seeded generator of background operations for every book of a market.

    Parameters
    ----------
    books : list of FlowBook
        One per book, in book-index order.
    instruments : list of InstrumentConfig
        Instrument parameters (reference price and its process).
    flow : FlowConfig
        Rates and shapes (see ``sim.config.FlowConfig``).
    start_ns, end_ns : int
        Time span of the flow.
    seed : int
        Seed of the generator.
    pegged : bool, optional
        Lit liquidity providers quote around the lit NBBO mid of the moment
        their order arrives rather than around the model's reference price
        (background flow alongside a replay).

    Notes
    -----
    ``next_chunk()`` returns ``(ops, books)`` until ``end_ns``, then None;
    this is the protocol ``MarketLoop`` consumes.
    """

    def __init__(self, books: list[FlowBook], instruments: list[InstrumentConfig],
                 flow: FlowConfig, start_ns: int, end_ns: int, seed: int,
                 pegged: bool = False) -> None:
        self.flow = flow
        self.end_ns = int(end_ns)
        self.t = int(start_ns)
        self.rng = np.random.default_rng(seed)
        self.done = False
        self.n_generated = 0
        insts = [ic.instrument() for ic in instruments]
        ticks = [inst.price_to_ticks(ic.price) for inst, ic in zip(insts, instruments)]
        gbm = [ic.model == "gbm" for ic in instruments]
        per_sqrt_s = [ic.volatility / math.sqrt(TRADING_SECONDS_PER_YEAR) for ic in instruments]
        # The random walk's volatility is absolute (ticks), set by the start price.
        sigma = [s if g else s * t for s, t, g in zip(per_sqrt_s, ticks, gbm)]

        rates, log1mp, unit = [], [], []
        for b in books:
            k, s = b.instrument, b.scale * instruments[b.instrument].activity
            u = insts[k].qty_to_lots(flow.qty_unit)
            unit.append(u)
            if b.dark:
                m = insts[k].qty_to_lots(flow.dark_qty) / u
                rates += [flow.dark_rate * s, 0.0, flow.dark_taker_rate * s]
                log1mp += [_log1mp(m), 0.0, _log1mp(m)]
            else:
                rates += [flow.lp_rate * s, flow.cancel_rate * s, flow.taker_rate * s]
                log1mp += [_log1mp(insts[k].qty_to_lots(flow.lp_qty) / u), 0.0,
                           _log1mp(insts[k].qty_to_lots(flow.taker_qty) / u)]
        r = np.array(rates, dtype=np.float64)
        self.total_rate = float(r.sum())
        if not (math.isfinite(self.total_rate) and r.min(initial=0.0) >= 0):
            # A nan or infinite rate would make every gap 0 or nan: time
            # would never advance (``sim.config`` refuses such values first).
            raise ValueError(f"background flow rates must be finite and >= 0, got {rates}")
        if self.total_rate <= 0:
            self.done = True
            cum_p = np.ones_like(r)
        else:
            cum_p = np.cumsum(r) / self.total_rate
            cum_p[-1] = 1.0
        level_log1mp = math.log1p(-flow.depth_decay) if flow.depth_decay < 1 else -math.inf
        self.assembler = FlowAssembler(
            cum_p, log1mp, [b.instrument for b in books], [b.dark for b in books], unit,
            [b.open_ns for b in books], [b.close_ns for b in books],
            [flow.dark_max_orders if b.dark else flow.max_orders for b in books],
            ticks, sigma, gbm, self.t, flow.half_spread_ticks, level_log1mp, pegged)

    def reference(self, instrument: int) -> float:
        """The instrument's reference price now, in ticks (a float: it is a model value)."""
        return self.assembler.reference(instrument)

    def next_chunk(self):
        """The next operations, as ``(ops, books)`` in time order, or None at the end."""
        while not self.done:
            chunk = self._generate()
            if chunk is not None and len(chunk[0]):
                self.n_generated += len(chunk[0])
                return chunk
        return None

    def _generate(self):
        rng, n = self.rng, self.flow.chunk_events
        ts = self.t + np.cumsum(rng.exponential(1e9 / self.total_rate, n)).astype(np.int64)
        if ts[-1] >= self.end_ns:
            n = int(np.searchsorted(ts, self.end_ns))
            ts = ts[:n]
            self.done = True
        if n == 0:
            return None
        self.t = int(ts[-1])
        u = rng.random((5, n))
        z = rng.standard_normal(n)
        return self.assembler.assemble(ts, u[0], u[1], u[2], u[3], u[4], z)
