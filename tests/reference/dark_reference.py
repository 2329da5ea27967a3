"""Pure-Python model of one dark pool's midpoint matching (``ext/simloop.pyx``).

The rules of docs/sim.md, written the plain way the loop once ran them: on
every mid move, walk every resting order with a limit and take out those the
mid has left, then walk every parked order in arrival order and let in those
the mid now allows, each matching on entry. The Cython loop keeps its waiting
orders in heaps and touches only the ones a move flips; the property tests
in ``tests/unit/sim/test_dark_pool.py`` hold it to this model.

Scope: background orders (no reports) without self-trade prevention (the
tests' orders use ``STP_NONE``), limit orders with DAY, GTC or IOC.
"""
from __future__ import annotations

from dataclasses import dataclass

BUY = 1


def eligible(side: int, limit: int, mid2: int) -> bool:
    """Can a midpoint order with this limit trade at ``mid2`` (half-ticks)?"""
    if mid2 <= 0:
        return False
    if limit <= 0:
        return True
    return mid2 <= 2 * limit if side == BUY else mid2 >= 2 * limit


@dataclass
class DarkOrder:
    order_id: int
    side: int
    limit: int
    leaves: int
    tif: int
    prio: int


class DarkPoolReference:
    """Parked orders in arrival order; the book as one time-priority queue.

    ``trades`` collects ``(price_x2, qty, aggressor_side)`` in the order the
    pool executes them.
    """

    def __init__(self, day: int, gtc: int) -> None:
        self.resting_tifs = (day, gtc)
        self.parked: list[DarkOrder] = []      # by prio
        self.book: list[DarkOrder] = []        # time priority, both sides
        self.last_mid2 = -1
        self.prio = 0
        self.trades: list[tuple[int, int, int]] = []

    # ------------------------------------------------------------ queries
    def parked_ids(self) -> list[int]:
        return [o.order_id for o in self.parked]

    def tracked_ids(self) -> list[int]:
        """Orders in the book with a limit, in arrival order."""
        return [o.order_id for o in sorted(self.book, key=lambda o: o.prio) if o.limit > 0]

    def book_rows(self) -> list[tuple[int, int]]:
        """``(order_id, leaves)`` as ``OrderBook.snapshot`` lists them: bids, then asks."""
        return ([(o.order_id, o.leaves) for o in self.book if o.side == BUY]
                + [(o.order_id, o.leaves) for o in self.book if o.side != BUY])

    # ------------------------------------------------------------ operations
    def refresh(self, mid2: int) -> None:
        """The lit mid is now ``mid2``: pull out, let in, match."""
        if mid2 == self.last_mid2:
            return
        self.last_mid2 = mid2
        for o in list(self.book):
            if o.limit > 0 and not eligible(o.side, o.limit, mid2):
                self.book.remove(o)
                self._park(o)
        if mid2 <= 0:
            return
        for o in list(self.parked):
            if eligible(o.side, o.limit, mid2):
                self.parked.remove(o)
                self._enter(o, mid2)

    def new(self, order_id: int, side: int, limit: int, qty: int, tif: int, mid2: int) -> None:
        self.refresh(mid2)
        o = DarkOrder(order_id, side, limit, qty, tif, self.prio)
        self.prio += 1
        if eligible(side, limit, mid2):
            self._enter(o, mid2)
        elif tif in self.resting_tifs:
            self._park(o)

    def cancel(self, order_id: int) -> None:
        for queue in (self.parked, self.book):
            for o in queue:
                if o.order_id == order_id:
                    queue.remove(o)
                    return

    def close(self, day: int) -> None:
        """The session ends: DAY orders expire, parked or resting."""
        self.parked = [o for o in self.parked if o.tif != day]
        self.book = [o for o in self.book if o.tif != day]

    # ------------------------------------------------------------ internals
    def _park(self, o: DarkOrder) -> None:
        k = len(self.parked)
        while k > 0 and self.parked[k - 1].prio > o.prio:
            k -= 1
        self.parked.insert(k, o)

    def _enter(self, o: DarkOrder, mid2: int) -> None:
        for r in [r for r in self.book if (r.side == BUY) != (o.side == BUY)]:
            if o.leaves == 0:
                break
            q = min(o.leaves, r.leaves)
            self.trades.append((mid2, q, o.side))
            o.leaves -= q
            r.leaves -= q
            if r.leaves == 0:
                self.book.remove(r)
        if o.leaves > 0 and o.tif in self.resting_tifs:
            self.book.append(o)
