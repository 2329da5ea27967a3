# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled execution strategies: a strategy whose decisions stay in C.

Role in the pipeline: in a backtest, a strategy works a parent order into
child orders (``sim.strategies``). A Python strategy costs one interpreter
call per decision; a compiled one is a Cython ``cdef class`` deriving from
``ext.simloop.StrategyCore`` that overrides the C hooks

``on_timer_c()``
    a timer fired (``wake_at_c(ts)``, or ``wake_every`` re-armed in C);
``on_fill_c(const ReportRec* r)``
    a fill was booked (``r`` points at the fill's record);
``on_child_done_c(const ReportRec* r)``
    a child finished (filled, canceled, expired or rejected);

and acts with ``send_c``, ``cancel_c``, ``replace_c`` and ``wake_at_c``; it
reads the market with ``seen_top_c(venue, out)``, ``seen_nbbo_c`` and
``seen_mid2_c``: the quotes a Python strategy gets from ``self.market``, as
they were each venue's market-data latency ago. The
loop calls those hooks through the type's vtable, so from the timer to the
order entering the venue's book nothing goes through Python (as in a
numba-compiled backtester). Bookkeeping (``filled``, ``working``, ``fills``)
is ``StrategyCore``'s, the same as for Python strategies.

To use one in a backtest, combine it with ``sim.strategies.ExecutionStrategy``
(which adds the market, the parent order and the parameters) in a Python
class: ``class PeriodicTaker(PeriodicTakerCore, ExecutionStrategy)``; see
``sim.strategies.PeriodicTakerStrategy``. A strategy of your own is a
``.pyx`` that ``cimport``s ``ext.simloop`` and is built like this module.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t, int32_t

from ext.simloop cimport StrategyCore
from ext.types cimport BUY, LIMIT, MARKET, IOC
from ext.intarg cimport big_arg, small_arg


cdef class PeriodicTakerCore(StrategyCore):
    """Every period, one marketable child order, rotating over venues.

    Each ``on_timer_c`` sends ``min(child_qty, remaining - open)`` lots as a
    market IOC order on the next venue of the rotation, until the parent is
    filled or stopped; with ``limit_ticks``, a limit IOC at that venue's far
    touch as seen (``seen_top_c``) plus ``limit_ticks`` ticks for a buy,
    minus for a sell (at least 1), and no order on a tick when that side is
    empty as seen (the rotation moves on). Configure with
    ``configure_taker`` and start the timer with ``wake_every(period)``.
    """

    cdef int64_t child_qty
    cdef int32_t* venue_list
    cdef int n_venue_list
    cdef int64_t n_sent
    cdef int64_t limit_ticks            # -1: market orders

    def __dealloc__(self):
        PyMem_Free(self.venue_list)

    def configure_taker(self, child_qty, venues, limit_ticks=None):
        """Lots per child order, the venue indices to rotate over, and
        ``limit_ticks`` (None: market orders; else ticks through the seen touch).

        Raises
        ------
        TypeError
            If ``child_qty`` or a venue is not an integer (never truncated).
        ValueError
            If ``child_qty`` is not positive, ``limit_ticks`` negative or ``venues`` empty,
            or a number is beyond its C type.
        """
        cdef Py_ssize_t k, n = len(venues)
        cdef int32_t* buf
        cdef int64_t lots = big_arg(child_qty, "child_qty")
        cdef int64_t through = -1 if limit_ticks is None else big_arg(limit_ticks, "limit_ticks")
        if lots <= 0:
            raise ValueError("child_qty must be positive")
        if limit_ticks is not None and through < 0:
            raise ValueError("limit_ticks must be >= 0")
        if n == 0:
            raise ValueError("a periodic taker needs at least one venue")
        buf = <int32_t*>PyMem_Malloc(n * sizeof(int32_t))
        if buf == NULL:
            raise MemoryError()
        for k in range(n):
            try:
                buf[k] = small_arg(venues[k], "venues")
            except BaseException:
                PyMem_Free(buf)
                raise
        PyMem_Free(self.venue_list)
        self.venue_list, self.n_venue_list = buf, <int>n
        self.child_qty = lots
        self.limit_ticks = through

    @property
    def n_sent(self):
        """Turns of the rotation taken: child orders sent by the timer, plus the
        ticks ``limit_ticks`` skipped on an empty seen side."""
        return self.n_sent

    def on_timer(self):
        """Send the next child order now (what the timer does, callable from Python)."""
        if not self.stopped and self.filled < self.qty:
            self.on_timer_c()

    cdef int on_timer_c(self) except -1:
        cdef int64_t open_qty = 0, qty, price = 0
        cdef int64_t top[4]
        cdef int venue, ord_type = MARKET
        cdef Py_ssize_t k
        if self.n_venue_list == 0:
            return 0
        for k in range(self.w_n):
            if self.w_ids[k]:
                open_qty += self.w_leaves[k]
        qty = self.qty - self.filled - open_qty
        if qty > self.child_qty:
            qty = self.child_qty
        if qty <= 0:
            return 0
        # The first child to the first venue listed (the venues in order of preference).
        venue = self.venue_list[self.n_sent % self.n_venue_list]
        self.n_sent += 1
        if self.limit_ticks >= 0:
            # Priced on the quote as it has reached the strategy, as a Python
            # strategy reading ``self.market.bbo`` would price it.
            self.seen_top_c(venue, top)
            price = top[2] if self.side == BUY else top[0]
            if price <= 0:
                return 0
            price = price + self.limit_ticks if self.side == BUY else price - self.limit_ticks
            if price < 1:
                price = 1
            ord_type = LIMIT
        self.send_c(venue, qty, price, ord_type, IOC, 0)
        return 0
