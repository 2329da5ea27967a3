# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Event loop of the market simulator: venues, latency and strategy messages in C.

Role in the pipeline: this is what stands in for the venues. ``sim/`` builds a
``MarketLoop`` from its configuration (one book per venue and instrument,
fees, latency models, a background-flow source) and both the backtester and
the engine's real-time adaptor drive it with ``run_until(ts)``.

Time is integer nanoseconds. Two streams are merged in timestamp order:

* background flow: numpy chunks of ``Op`` records (``OP_DTYPE``) with a book
  index each, generated vectorized in ``sim/flow.py`` (or by replay) and
  applied here one by one at C level;
* a binary heap of timed messages: child orders travelling to a venue,
  reports travelling back, strategy timers and venue open/close.

A child order sent at ``now`` reaches its venue after a latency drawn from
that venue's model, and every report comes back after another draw. A venue
channel never reorders messages (TCP does not either), so a message never
arrives before one sent earlier on the same channel. Ties are broken by a
sequence number: with the same inputs every run is identical.

Dark pools. A dark book holds midpoint orders: every order sits in an
``OrderBook`` at one pseudo price (``DARK_PX``), so the book's time priority
and self-trade rules apply unchanged, and every fill is reported at the
midpoint of the lit venues' NBBO for that instrument, in half-ticks. An order
is *eligible* when that NBBO is valid (two-sided, not locked or crossed) and
the mid is within its limit (a limit of 0 is a pure peg). Ineligible orders
wait outside the book ("parked") and re-enter, in arrival order, as soon as
the mid allows; a resting order whose limit the mid leaves is taken out. So
matching happens on arrival and whenever the reference mid moves, and time
priority among eligible orders is the time they became eligible.

Money. Fees are integers in *fee units* of 1e-4 tick x lot: a per-lot fee is
``per_lot * qty`` and a basis-point fee ``price_x2 * qty * cbps / 200``
(``cbps``: hundredths of a basis point) rounded half away from zero. Fill
prices are reported in half-ticks (``price_x2``) so a midpoint fill is exact.
On a fine grid (tick 0.0001, lot 0.000001) a price times a quantity passes
2^63, so fees are computed with 128-bit intermediates (exact whenever the fee
itself fits in int64, an ``OverflowError`` otherwise) and the market's
cumulative notional is kept in 128 bits. Nothing wraps.
"""
cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport Py_TYPE
from libc.string cimport memcmp, memcpy, memmove, memset
from libc.stdint cimport (
    int64_t, int32_t, uint8_t, uint16_t, uint64_t, INT32_MAX, INT64_MAX, INT64_MIN,
)
from libc.stdlib cimport qsort

import numpy as np
cimport numpy as cnp

from ext.book cimport (
    OrderBook, Order, Fill, Event, Op, LevelArray, OP_ADD, OP_CANCEL, OP_REPLACE, FLAG_POST_ONLY, STP_DEFAULT,
)
from ext.types cimport (
    BUY, SELL, SELL_SHORT, MARKET, LIMIT, DAY, GTC, IOC, FOK, STP_NONE, CANCEL_NEWEST, CANCEL_OLDEST,
    EV_ACCEPTED, EV_REJECTED, EV_CANCELED, EV_EXPIRED, EV_REPLACED,
    CXL_USER, CXL_IOC_REMAINDER, CXL_FOK_UNFILLABLE, CXL_END_OF_DAY, CXL_MIN_QTY_UNFILLABLE,
    INVALID_FIELD, INVALID_QTY, INVALID_PRICE, INVALID_SIDE, INVALID_ORD_TYPE, INVALID_TIF,
    INVALID_STP_MODE, CANCEL_BOTH, ORDER_NOT_REPLACEABLE, VENUE_CLOSED, INVALID_ORDER_ID,
    DUPLICATE_ORDER_ID, C_MAX_PRICE,
)
from ext.simflow cimport FLAG_PEG_MID, PEG_SCALE
from ext.idmap cimport idmap_del, idmap_free, idmap_get, idmap_init, idmap_put
from ext.intarg cimport big_arg, small_arg
from ext.buffers cimport grow_buffer as _grow
from ext.book import FILL_DTYPE, EVENT_DTYPE, OP_DTYPE, DEPTH_DTYPE

cnp.import_array()

cdef extern from *:
    # gcc's checked arithmetic: the result is stored wrapped and the call
    # returns true when it did not fit.
    bint _mul_overflow_i128 "__builtin_mul_overflow"(i128 a, i128 b, i128* out) noexcept nogil
    bint _mul_overflow_i64 "__builtin_mul_overflow"(int64_t a, int64_t b,
                                                     int64_t* out) noexcept nogil
    bint _add_overflow_i64 "__builtin_add_overflow"(int64_t a, int64_t b,
                                                     int64_t* out) noexcept nogil

# ---------------------------------------------------------------- constants
#: Child (strategy) order ids start above this; background and replay orders
#: use ids below it, so a fill tells whose order it touched by its id alone.
cdef int64_t _CHILD_ID_BASE = (<int64_t>1) << 48
CHILD_ID_BASE = _CHILD_ID_BASE
#: The one price every dark-pool order rests at inside its matching book.
cdef int64_t _DARK_PX = 1
DARK_PX = _DARK_PX
#: Below this magnitude ``_div_round`` (which forms ``2 * a``) cannot overflow.
cdef int64_t _I64_QUARTER = (<int64_t>1) << 62
#: int64 words per instrument in a sample row (the notional takes two).
cdef Py_ssize_t _SAMPLE_WORDS = 5
#: Account of child orders when the caller names none.
DEFAULT_ACCOUNT = 1000
#: Simulated time a finished child's record is kept after the last message naming it
#: (its final report, or a later cancel's answer): a cancel or replace its owner sends
#: in that time is answered as for any finished child (a cancel reject, the venue's
#: ``UNKNOWN_ORDER``), one sent later raises ``KeyError`` like an id never sent. Its
#: owner was told it finished when that report arrived; the window only covers an
#: owner that acts on a report it has not read yet.
cdef int64_t _FINISHED_KEEP_NS = 1_000_000_000
FINISHED_KEEP_NS = _FINISHED_KEEP_NS

#: Levels per side a venue's market-data ring records for strategies when
#: ``md_depth`` does not say (``venues[].market_data_depth``): the built-in
#: sweeps' ``depth``. Each recorded change copies 2 x depth levels, so the
#: key is bounded by ``MAX_MD_DEPTH``.
MD_DEPTH_DEFAULT = 10
MAX_MD_DEPTH = 1000
#: Latency draws fetched from a model at a time.
cdef Py_ssize_t LAT_BATCH = 4096
#: Weight of the newest round trip in the measured-latency moving average.
cdef double RTT_ALPHA = 0.05

cdef enum:
    MSG_NEW = 1
    MSG_CANCEL = 2
    MSG_REPLACE = 3
    MSG_REPORT = 4
    MSG_TIMER = 5
    MSG_OPEN = 6
    MSG_CLOSE = 7

cdef enum:
    CHILD_PENDING = 0   # sent, not yet at the venue
    CHILD_LIVE = 1
    CHILD_DONE = 2

TRADE_DTYPE = np.dtype([
    ("ts", "<i8"), ("price_x2", "<i8"), ("qty", "<i8"), ("book", "<i4"),
    ("aggressor_side", "u1"), ("_pad", "V3"),
])
QUOTE_DTYPE = np.dtype([
    ("ts", "<i8"), ("bid_px", "<i8"), ("bid_qty", "<i8"), ("ask_px", "<i8"),
    ("ask_qty", "<i8"), ("book", "<i4"), ("_pad", "V4"),
])


# ---------------------------------------------------------------- helpers

cdef inline bint _before(const HeapKey* a, const HeapKey* b) noexcept nogil:
    return a.ts < b.ts or (a.ts == b.ts and a.seq < b.seq)


cdef inline int64_t _div_round(int64_t a, int64_t b) noexcept nogil:
    """``a / b`` rounded half away from zero, for ``b > 0``."""
    if a >= 0:
        return (2 * a + b) // (2 * b)
    return -((-2 * a + b) // (2 * b))


cdef inline i128 _div_round128(i128 a, int64_t b) noexcept nogil:
    """``a / b`` rounded half away from zero, for ``b > 0``, without forming ``2 * a``."""
    cdef i128 q = a // b            # cdivision: truncates toward zero
    cdef i128 r = a - q * b         # |r| < b
    if a >= 0:
        if 2 * r >= b:
            q += 1
    elif -2 * r >= b:
        q -= 1
    return q


cdef object _py_int128(i128 x):
    """An exact Python int (Cython would convert through ``long long``)."""
    if INT64_MIN <= x <= INT64_MAX:
        return <int64_t>x
    return (<object>(<int64_t>(x >> 64))) * 18446744073709551616 + <object>(<uint64_t>x)


cdef inline bint _eligible(int side, int64_t limit, int64_t mid2) noexcept nogil:
    """Can a midpoint order with this limit trade at ``mid2`` (half-ticks)?"""
    if mid2 <= 0:
        return False
    if limit <= 0:
        return True
    if side == BUY:
        return mid2 <= 2 * limit
    return mid2 >= 2 * limit


# ---------------------------------------------------------------- book ports

cdef object _md_levels(const MdLevel* lv, Py_ssize_t n):
    """``n`` recorded levels as a ``DEPTH_DTYPE`` array (``OrderBook.depth``'s layout)."""
    cdef Py_ssize_t i
    cdef cnp.ndarray price = np.empty(n, dtype=np.int64)
    cdef cnp.ndarray qty = np.empty(n, dtype=np.int64)
    cdef cnp.ndarray count = np.empty(n, dtype=np.int32)
    cdef int64_t* p = <int64_t*>cnp.PyArray_DATA(price)
    cdef int64_t* q = <int64_t*>cnp.PyArray_DATA(qty)
    cdef int32_t* c = <int32_t*>cnp.PyArray_DATA(count)
    for i in range(n):
        p[i], q[i], c[i] = lv[i].price, lv[i].qty, <int32_t>lv[i].count
    out = np.empty(n, dtype=DEPTH_DTYPE)
    out["price"], out["qty"], out["count"] = price, qty, count
    return out


cdef class BookPort:
    """How the loop talks to one book; see ``CyBookPort`` and ``PyBookPort``.

    Not constructed directly: ``MarketLoop`` wraps each book it is given.
    """

    cdef int add(self, int64_t order_id, int side, int64_t price, int64_t qty, int64_t account,
                 int ord_type, int tif, int flags, int stp, int64_t ts,
                 bint keep_events) except -1:
        raise NotImplementedError

    cdef int cancel(self, int64_t order_id, int64_t ts, bint keep_events) except -1:
        raise NotImplementedError

    cdef int replace(self, int64_t order_id, int64_t price, int64_t qty, int64_t ts,
                     bint keep_events) except -1:
        raise NotImplementedError

    cdef int expire_day(self, int64_t ts) except -1:
        raise NotImplementedError

    cdef void clear(self) noexcept:
        self.n_fills = 0
        self.n_events = 0

    cdef int64_t best_bid(self) except -1:
        raise NotImplementedError

    cdef int64_t best_ask(self) except -1:
        raise NotImplementedError

    cdef int64_t best_bid_qty(self) except -1:
        raise NotImplementedError

    cdef int64_t best_ask_qty(self) except -1:
        raise NotImplementedError

    cdef Py_ssize_t levels(self, int side_index, MdLevel* out, Py_ssize_t n) except -1:
        """Up to ``n`` levels of one side (0: bids, 1: asks), best first; returns how many."""
        raise NotImplementedError

    cdef int64_t leaves(self, int64_t order_id) except -1:
        raise NotImplementedError

    cdef int can_fill(self, bint is_buy, int64_t limit, int64_t qty, int64_t account,
                      int stp) except -1:
        """1 if an incoming limit order could fill ``qty`` at once, else 0.

        Counted as the book would match it: contra orders in priority order,
        without those of ``account`` that self-trade prevention (``stp``;
        -1: the book's default) will not trade with, and up to the first one
        that would cancel the incoming order (the book's FOK rule).
        """
        raise NotImplementedError


cdef inline void _report_rec(ReportRec* rec, const Msg* m, int venue, int book) noexcept nogil:
    """``rec`` as the report ``m`` gives it to a strategy, at ``venue`` and ``book``."""
    memset(rec, 0, sizeof(ReportRec))
    rec.child_id, rec.ts, rec.recv_ts = m.child_id, m.venue_ts, m.ts
    rec.price_x2, rec.last_qty, rec.order_qty = m.price, m.qty, m.order_qty
    rec.leaves_qty, rec.cum_qty, rec.fee = m.leaves, m.cum, m.fee
    rec.venue, rec.book, rec.reason = venue, book, m.reason
    rec.kind, rec.side, rec.liquidity = m.report, m.side, m.liquidity


cdef inline int _price_out_of_bounds(int64_t price) noexcept nogil:
    """``INVALID_PRICE`` for a price past the bound the router and risk keep to
    (``ext/types.pxd``, 2^40 ticks) or below 0, else 0. A strategy or a caller of
    ``submit`` can send any int64; a venue takes only a price its reports can carry
    (they give it in half-ticks, 2 * price). Quantities are the book's to judge."""
    if price < 0 or price > C_MAX_PRICE:
        return INVALID_PRICE
    return 0


@cython.final
cdef class CyBookPort(BookPort):
    """The Cython ``OrderBook`` called at C level; output read in place."""

    def __init__(self, OrderBook book not None):
        self.book = book
        self.cy = book

    cdef int add(self, int64_t order_id, int side, int64_t price, int64_t qty, int64_t account,
                 int ord_type, int tif, int flags, int stp, int64_t ts,
                 bint keep_events) except -1:
        cdef OrderBook cy = self.cy
        cdef int r
        cy.record_events = keep_events
        r = cy.add_c(order_id, side, price, qty, account, ord_type, tif, flags, stp, ts)
        cy.record_events = True
        self.fills, self.n_fills = cy.fills, cy.n_fills
        self.events, self.n_events = cy.events, cy.n_events
        return r

    cdef int cancel(self, int64_t order_id, int64_t ts, bint keep_events) except -1:
        cdef OrderBook cy = self.cy
        cdef int r
        cy.record_events = keep_events
        r = cy.cancel_c(order_id, CXL_USER, ts)
        cy.record_events = True
        self.fills, self.n_fills = cy.fills, cy.n_fills
        self.events, self.n_events = cy.events, cy.n_events
        return r

    cdef int replace(self, int64_t order_id, int64_t price, int64_t qty, int64_t ts,
                     bint keep_events) except -1:
        cdef OrderBook cy = self.cy
        cdef int r
        cy.record_events = keep_events
        r = cy.replace_c(order_id, price, qty, ts)
        cy.record_events = True
        self.fills, self.n_fills = cy.fills, cy.n_fills
        self.events, self.n_events = cy.events, cy.n_events
        return r

    cdef int expire_day(self, int64_t ts) except -1:
        self.cy.expire_day(ts)
        self.fills, self.n_fills = self.cy.fills, self.cy.n_fills
        self.events, self.n_events = self.cy.events, self.cy.n_events
        return 0

    cdef void clear(self) noexcept:
        self.cy.n_fills = 0
        self.cy.n_events = 0
        self.n_fills = 0
        self.n_events = 0

    cdef int64_t best_bid(self) except -1:
        return self.cy.best_bid_c()

    cdef int64_t best_ask(self) except -1:
        return self.cy.best_ask_c()

    cdef int64_t best_bid_qty(self) except -1:
        return self.cy.best_bid_qty_c()

    cdef int64_t best_ask_qty(self) except -1:
        return self.cy.best_ask_qty_c()

    cdef Py_ssize_t levels(self, int side_index, MdLevel* out, Py_ssize_t n) except -1:
        # The book's arrays keep the best price last.
        cdef LevelArray* a = &self.cy.bids if side_index == 0 else &self.cy.asks
        cdef Py_ssize_t k = min(n, a.n), i
        for i in range(k):
            out[i].price = a.data[a.n - 1 - i].price
            out[i].qty = a.data[a.n - 1 - i].qty
            out[i].count = a.data[a.n - 1 - i].count
        return k

    cdef int64_t leaves(self, int64_t order_id) except -1:
        cdef Order* o = self.cy.find_c(order_id)
        return 0 if o == NULL else o.leaves

    cdef int can_fill(self, bint is_buy, int64_t limit, int64_t qty, int64_t account,
                      int stp) except -1:
        # The book's own FOK test: the same walk its matching will do.
        return self.cy._fok_fillable(is_buy, False, limit, qty, account,
                                     self.cy.default_stp if stp < 0 else stp)


@cython.final
cdef class PyBookPort(BookPort):
    """Any book with ``OrderBook``'s Python API (the pure-Python reference).

    Output is drained after each operation and copied into C buffers, so the
    loop reads both kinds of port the same way. Used as the baseline the
    Cython path is measured against, and to hold the two to the same result.
    """

    def __init__(self, book):
        self.book = book
        self._add, self._cancel, self._replace = book.add, book.cancel, book.replace
        self._drain_fills, self._drain_events = book.drain_fills, book.drain_events
        self._bbo, self._order = book.bbo, book.order
        # A book that can stop recording events saves building them for
        # background orders nobody reads (ReferenceBook can, like OrderBook).
        self.can_mute = hasattr(book, "record_events")
        self.fills_cap = 64
        self.events_cap = 64
        self.fills = <Fill*>PyMem_Malloc(self.fills_cap * sizeof(Fill))
        self.events = <Event*>PyMem_Malloc(self.events_cap * sizeof(Event))
        if self.fills == NULL or self.events == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.fills)
        PyMem_Free(self.events)

    cdef int _mute(self, bint keep_events) except -1:
        if self.can_mute:
            self.book.record_events = keep_events
        return 0

    cdef int _take_output(self, bint keep_events) except -1:
        cdef cnp.ndarray arr
        cdef Py_ssize_t n
        arr = np.ascontiguousarray(self._drain_fills(), dtype=FILL_DTYPE)
        n = arr.shape[0]
        self.fills = <Fill*>_grow(self.fills, &self.fills_cap, n, sizeof(Fill))
        if n:
            memcpy(self.fills, cnp.PyArray_DATA(arr), n * sizeof(Fill))
        self.n_fills = n
        arr = np.ascontiguousarray(self._drain_events(), dtype=EVENT_DTYPE)
        n = arr.shape[0] if keep_events else 0
        self.events = <Event*>_grow(self.events, &self.events_cap, n, sizeof(Event))
        if n:
            memcpy(self.events, cnp.PyArray_DATA(arr), n * sizeof(Event))
        self.n_events = n
        return 0

    cdef int add(self, int64_t order_id, int side, int64_t price, int64_t qty, int64_t account,
                 int ord_type, int tif, int flags, int stp, int64_t ts,
                 bint keep_events) except -1:
        self._mute(keep_events)
        try:
            r = self._add(order_id, side, price, qty, account, ord_type, tif,
                          bool(flags & FLAG_POST_ONLY), stp, ts)
        finally:
            self._mute(True)
        self._take_output(keep_events)
        return r

    cdef int cancel(self, int64_t order_id, int64_t ts, bint keep_events) except -1:
        self._mute(keep_events)
        try:
            r = self._cancel(order_id, ts)
        finally:
            self._mute(True)
        self._take_output(keep_events)
        return r

    cdef int replace(self, int64_t order_id, int64_t price, int64_t qty, int64_t ts,
                     bint keep_events) except -1:
        self._mute(keep_events)
        try:
            r = self._replace(order_id, price, qty, ts)
        finally:
            self._mute(True)
        self._take_output(keep_events)
        return r

    cdef int expire_day(self, int64_t ts) except -1:
        self.book.expire_day(ts)
        self._take_output(True)
        return 0

    cdef int64_t best_bid(self) except -1:
        return self._bbo()[0]

    cdef int64_t best_ask(self) except -1:
        return self._bbo()[2]

    cdef int64_t best_bid_qty(self) except -1:
        return self._bbo()[1]

    cdef int64_t best_ask_qty(self) except -1:
        return self._bbo()[3]

    cdef Py_ssize_t levels(self, int side_index, MdLevel* out, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0
        for price, qty, count in self.book.depth(n)[side_index].tolist():
            out[i].price, out[i].qty, out[i].count = price, qty, count
            i += 1
        return i

    cdef int64_t leaves(self, int64_t order_id) except -1:
        o = self._order(order_id)
        return 0 if o is None else o["leaves_qty"]

    cdef int can_fill(self, bint is_buy, int64_t limit, int64_t qty, int64_t account,
                      int stp) except -1:
        # From the public L3 snapshot (priority order, bids then asks), so
        # any book with OrderBook's Python API will do; both books default to
        # cancel-newest.
        cdef int64_t avail = 0
        if stp < 0:
            stp = getattr(self.book, "default_stp", CANCEL_NEWEST)
        for row in self.book.snapshot():
            if (int(row["side"]) == BUY) == is_buy:
                continue
            if (row["price"] > limit) if is_buy else (row["price"] < limit):
                break
            if stp != STP_NONE and row["account"] == account:
                if stp != CANCEL_OLDEST:
                    break                    # STP cancels the incoming order here
                continue                     # STP cancels this resting one instead
            avail += row["leaves_qty"]
            if avail >= qty:
                return 1
        return 0


def make_port(book):
    """Wrap a book for the loop: C calls for ``OrderBook``, Python calls otherwise."""
    if isinstance(book, OrderBook):
        return CyBookPort(book)
    return PyBookPort(book)


# ---------------------------------------------------------------- dark pool state

cdef inline bint _dark_before(const DarkOrder* a, const DarkOrder* b) noexcept nogil:
    return a.key < b.key or (a.key == b.key and a.prio < b.prio)


cdef int _due_cmp(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const DarkDue*>a).prio, y = (<const DarkDue*>b).prio
    return (x > y) - (x < y)


@cython.final
cdef class DarkBook:
    """Midpoint orders of one dark book that the mid may flip in or out of its matching book.

    Every parked order (outside the book: not eligible at the last mid) and
    every tracked one (in the book with a limit the mid may leave) has a slot,
    found by order id through ``ids``, and sits in one of four heaps (see
    ``DARK_PARKED_BUY``). Each heap is keyed so that the orders one mid move
    flips come off its top, so a refresh looks at those and one more per heap,
    not at every order waiting; a cancel finds its order in O(1) and takes it
    out of its heap in O(log n).
    """

    def __cinit__(self):
        cdef int k
        self.orders = NULL
        self.free_slots = NULL
        self.due = NULL
        self.n_slots = self.slots_cap = self.n_free = self.due_cap = 0
        for k in range(4):
            self.heaps[k].slots = NULL
            self.heaps[k].n = self.heaps[k].cap = 0
        self.last_mid2 = -1
        self.visited = 0
        idmap_init(&self.ids, 64)

    def __dealloc__(self):
        cdef int k
        PyMem_Free(self.orders)
        PyMem_Free(self.free_slots)
        PyMem_Free(self.due)
        for k in range(4):
            PyMem_Free(self.heaps[k].slots)
        idmap_free(&self.ids)

    cdef int32_t slot_of(self, int64_t order_id) noexcept:
        if order_id <= 0:
            return -1
        return idmap_get(&self.ids, order_id)

    cdef int32_t add_slot(self, DarkOrder* o) except -1:
        """A slot holding a copy of ``o``, in no heap yet; ``orders`` may move."""
        cdef int32_t s
        cdef Py_ssize_t cap
        if self.n_free > 0:
            self.n_free -= 1
            s = self.free_slots[self.n_free]
        else:
            if self.n_slots >= INT32_MAX:
                raise OverflowError("too many orders waiting in one dark book")
            cap = self.slots_cap
            self.orders = <DarkOrder*>_grow(self.orders, &self.slots_cap, self.n_slots + 1,
                                            sizeof(DarkOrder))
            # The free stack never holds more than every slot: grown with them,
            # so freeing a slot never allocates.
            self.free_slots = <int32_t*>_grow(self.free_slots, &cap, self.slots_cap,
                                              sizeof(int32_t))
            s = <int32_t>self.n_slots
            self.n_slots += 1
        idmap_put(&self.ids, o.order_id, s)
        self.orders[s] = o[0]
        self.orders[s].heap = DARK_NONE
        return s

    cdef void free_slot(self, int32_t s) noexcept:
        """Forget the order in slot ``s`` (already out of its heap)."""
        idmap_del(&self.ids, self.orders[s].order_id)
        self.free_slots[self.n_free] = s
        self.n_free += 1

    cdef void drop(self, int32_t s) noexcept:
        """Forget the order in slot ``s``: out of its heap, its slot and id free."""
        self.take(s)
        self.free_slot(s)

    cdef int32_t tracked_slot(self, int64_t order_id) noexcept:
        """The slot of ``order_id`` if it is a tracked order (in the book with a limit), else -1."""
        cdef int32_t s = self.slot_of(order_id)
        if s >= 0 and DARK_TRACKED_BUY <= self.orders[s].heap <= DARK_TRACKED_SELL:
            return s
        return -1

    cdef void sift(self, DarkHeap* h, Py_ssize_t at) noexcept:
        """Move the entry at ``at`` up or down to where its (key, prio) belongs."""
        cdef int32_t s = h.slots[at], other
        cdef DarkOrder* o = &self.orders[s]
        cdef Py_ssize_t parent, child
        while at > 0:
            parent = (at - 1) >> 1
            other = h.slots[parent]
            if not _dark_before(o, &self.orders[other]):
                break
            h.slots[at] = other
            self.orders[other].pos = <int32_t>at
            at = parent
        while True:
            child = 2 * at + 1
            if child >= h.n:
                break
            if child + 1 < h.n and _dark_before(&self.orders[h.slots[child + 1]],
                                                &self.orders[h.slots[child]]):
                child += 1
            other = h.slots[child]
            if not _dark_before(&self.orders[other], o):
                break
            h.slots[at] = other
            self.orders[other].pos = <int32_t>at
            at = child
        h.slots[at] = s
        o.pos = <int32_t>at

    cdef int push(self, int which, int64_t key, int32_t s) except -1:
        cdef DarkHeap* h = &self.heaps[which]
        h.slots = <int32_t*>_grow(h.slots, &h.cap, h.n + 1, sizeof(int32_t))
        self.orders[s].key = key
        self.orders[s].heap = <uint8_t>which
        h.slots[h.n] = s
        h.n += 1
        self.sift(h, h.n - 1)
        return 0

    cdef void take(self, int32_t s) noexcept:
        """Take slot ``s`` out of its heap (it keeps its slot and id)."""
        cdef DarkOrder* o = &self.orders[s]
        cdef DarkHeap* h
        cdef Py_ssize_t at = o.pos
        if o.heap == DARK_NONE:
            return
        h = &self.heaps[o.heap]
        o.heap = DARK_NONE
        h.n -= 1
        if at < h.n:
            h.slots[at] = h.slots[h.n]
            self.orders[h.slots[at]].pos = <int32_t>at
            self.sift(h, at)

    cdef int park(self, int32_t s) except -1:
        """Wait outside the book: the highest buy limit (pure pegs first) and
        the lowest sell limit are the first a mid move lets in."""
        cdef DarkOrder* o = &self.orders[s]
        if o.side == BUY:
            return self.push(DARK_PARKED_BUY, -o.limit if o.limit > 0 else INT64_MIN, s)
        return self.push(DARK_PARKED_SELL, o.limit, s)

    cdef int track(self, int32_t s) except -1:
        """Rest in the book with a limit: the lowest buy limit and the highest
        sell limit are the first a mid move takes out."""
        cdef DarkOrder* o = &self.orders[s]
        if o.side == BUY:
            return self.push(DARK_TRACKED_BUY, o.limit, s)
        return self.push(DARK_TRACKED_SELL, -o.limit, s)

    cdef int add_due(self, Py_ssize_t n, int32_t s) except -1:
        self.due = <DarkDue*>_grow(self.due, &self.due_cap, n + 1, sizeof(DarkDue))
        self.due[n].prio = self.orders[s].prio
        self.due[n].slot = s
        self.due[n]._pad = 0
        return 0

    cdef Py_ssize_t n_parked(self) noexcept:
        return self.heaps[DARK_PARKED_BUY].n + self.heaps[DARK_PARKED_SELL].n

    cdef Py_ssize_t n_tracked(self) noexcept:
        return self.heaps[DARK_TRACKED_BUY].n + self.heaps[DARK_TRACKED_SELL].n

    @property
    def visited(self):
        """Heap entries the mid refreshes have looked at so far: the orders
        they flipped, and at most one more per heap each."""
        return self.visited

    def check(self):
        """Raise ``AssertionError`` unless every heap, slot and id agree (tests)."""
        cdef int k
        cdef Py_ssize_t i, n = 0
        cdef DarkHeap* h
        cdef DarkOrder* o
        for k in range(4):
            h = &self.heaps[k]
            for i in range(h.n):
                o = &self.orders[h.slots[i]]
                assert o.heap == k and o.pos == i, (k, i, o.heap, o.pos)
                assert idmap_get(&self.ids, o.order_id) == h.slots[i], o.order_id
                assert i == 0 or not _dark_before(o, &self.orders[h.slots[(i - 1) >> 1]]), \
                    (k, i)
                if k == DARK_PARKED_BUY or k == DARK_TRACKED_BUY:
                    assert o.side == BUY
                else:
                    assert o.side != BUY
                if k >= DARK_TRACKED_BUY:
                    assert o.limit > 0
            n += h.n
        assert self.ids.used == n, (self.ids.used, n)
        assert self.n_slots == n + self.n_free, (self.n_slots, n, self.n_free)

    def waiting(self):
        """``(parked, tracked)``: order ids in each, in arrival order."""
        cdef int k
        cdef Py_ssize_t i
        cdef DarkOrder* o
        parked, tracked = [], []
        for k in range(4):
            for i in range(self.heaps[k].n):
                o = &self.orders[self.heaps[k].slots[i]]
                (parked if k < DARK_TRACKED_BUY else tracked).append((o.prio, o.order_id))
        return [i for _, i in sorted(parked)], [i for _, i in sorted(tracked)]


# ---------------------------------------------------------------- reports

# A report lives only while its owner's callback runs (the engine reads it and drops
# it): a freelist recycles the object instead of allocating one per report.
@cython.final
@cython.freelist(16)
cdef class Report:
    """What a venue tells the owner of a child order, as it arrives.

    Attributes
    ----------
    kind : ReportKind
        ``RPT_ACCEPTED``, ``RPT_FILL``, ``RPT_CANCELED``, ``RPT_EXPIRED``,
        ``RPT_REJECTED``, ``RPT_REPLACED`` or ``RPT_CANCEL_REJECTED``.
    child_id : int
        The id ``MarketLoop.submit`` returned.
    venue, book : int
        Venue index and book index (venue x instrument).
    side : Side
    ts : int
        When it happened at the venue (ns).
    recv_ts : int
        When the report reached its owner (``ts`` plus the venue's latency).
    price_x2 : int
        Fill: the price in half-ticks (a midpoint fill may fall between
        ticks). Other reports: twice the order's limit price.
    last_qty : int
        Fill quantity in lots; 0 for other reports.
    order_qty, leaves_qty, cum_qty : int
        Order quantity and state after this report (FIX OrderQty, LeavesQty,
        CumQty): ``order_qty == cum_qty + leaves_qty`` while the order is
        live, ``leaves_qty == 0`` once it is done.
    liquidity : Liquidity
        Fill: ``LIQ_MAKER`` (added liquidity) or ``LIQ_TAKER``.
    fee : int
        Fill: fee in fee units (1e-4 tick x lot); negative is a rebate.
    reason : int
        ``RejectReason`` for rejects, ``CancelReason`` for cancels.
    """

    def __init__(self):
        raise TypeError("Report objects are made by MarketLoop")

    @staticmethod
    cdef Report new(Msg* m, int venue, int book, int side):
        cdef Report r = Report.__new__(Report)
        r.kind = m.report
        r.child_id = m.child_id
        r.venue = venue
        r.book = book
        r.side = side
        r.ts = m.venue_ts
        r.recv_ts = m.ts
        r.price_x2 = m.price
        r.last_qty = m.qty
        r.order_qty = m.order_qty
        r.leaves_qty = m.leaves
        r.cum_qty = m.cum
        r.liquidity = m.liquidity
        r.fee = m.fee
        r.reason = m.reason
        return r

    @staticmethod
    cdef Report from_rec(const ReportRec* rec):
        cdef Report r = Report.__new__(Report)
        r.kind = rec.kind
        r.child_id = rec.child_id
        r.venue = rec.venue
        r.book = rec.book
        r.side = rec.side
        r.ts = rec.ts
        r.recv_ts = rec.recv_ts
        r.price_x2 = rec.price_x2
        r.last_qty = rec.last_qty
        r.order_qty = rec.order_qty
        r.leaves_qty = rec.leaves_qty
        r.cum_qty = rec.cum_qty
        r.liquidity = rec.liquidity
        r.fee = rec.fee
        r.reason = rec.reason
        return r

    def as_tuple(self):
        """All fields, in the order of ``Report.FIELDS``."""
        return (self.kind, self.child_id, self.venue, self.book, self.side, self.ts, self.recv_ts,
                self.price_x2, self.last_qty, self.order_qty, self.leaves_qty, self.cum_qty,
                self.liquidity, self.fee, self.reason)

    FIELDS = ("kind", "child_id", "venue", "book", "side", "ts", "recv_ts", "price_x2",
              "last_qty", "order_qty", "leaves_qty", "cum_qty", "liquidity", "fee", "reason")

    def __repr__(self):
        return ("Report(" + ", ".join(f"{k}={v}" for k, v in zip(self.FIELDS, self.as_tuple()))
                + ")")


# ---------------------------------------------------------------- samples

class SampleTable:
    """``MarketLoop.samples()`` once a cumulative notional has passed 2^63 - 1.

    Indexed like the int64 array it stands for: ``table[:, k]`` is that int64
    column, except a ``cum_notional_x2`` column that no longer fits, which is
    an object array of exact Python ints. ``numpy.asarray(table)`` is the
    whole table as an object array.
    """

    def __init__(self, ints, wide):
        self._ints = ints
        self._wide = wide
        self.shape = ints.shape

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], (int, np.integer)):
            col = int(key[1])
            if col < 0:
                col += self.shape[1]
            if col in self._wide:
                return self._wide[col][key[0]]
            return self._ints[key[0], col]
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        out = self._ints.astype(object)
        for col, values in self._wide.items():
            out[:, col] = values
        return out if dtype is None else out.astype(dtype)


# ---------------------------------------------------------------- the loop

cdef int _check_op_fields(int side, int ord_type, int tif, int stp) except -1:
    """Refuse an order's enum that does not fit its byte in ``OP_DTYPE`` / the child record.

    A wider value would wrap (side 257 stored as 1, BUY); within the byte an unknown
    value is left to the book, which answers with its reject code.
    """
    if 0 <= side <= 255 and 0 <= ord_type <= 255 and 0 <= tif <= 255 and -1 <= stp <= 255:
        return 0        # (the per-order path: C comparisons only)
    for name, value, low in (("side", side, 0), ("ord_type", ord_type, 0), ("tif", tif, 0),
                             ("stp", stp, -1)):
        if not low <= value <= 255:
            raise ValueError(f"{name} {value} is out of range ({low} to 255)")
    return 0


cdef inline Child* _child_rec(MarketLoop loop, int64_t child_id) noexcept:
    """The record of child order ``child_id`` (above ``CHILD_ID_BASE``), or NULL: freed."""
    cdef int32_t s
    if child_id == loop.cur_id:
        return &loop.children[loop.cur_rec]
    s = idmap_get(&loop.child_index, child_id)
    return &loop.children[s] if s >= 0 else NULL


cdef inline Child* _known_child(MarketLoop loop, int64_t child_id) except NULL:
    """The record of a child that a message in flight or a book names: it has one, as
    neither lets it be freed (``MarketLoop._release``)."""
    cdef Child* ch = _child_rec(loop, child_id)
    if ch == NULL:
        raise SystemError(f"child order {child_id} has no record but is still named")
    return ch


cdef inline int _retire_due(MarketLoop loop) except -1:
    """Free the records whose time has come, if any has (the usual case: none)."""
    if loop.retiring_lo < loop.retiring_hi and loop.retiring[loop.retiring_lo].ts <= loop.now:
        return loop._retire()
    return 0


cdef class MarketLoop:
    """The simulated market's event loop: books, venues, latency, messages.

    Built by ``sim.market.Market`` from configuration; tests and benchmarks
    may build one directly.

    Parameters
    ----------
    books : list
        One book per (venue, instrument): ``ext.book.OrderBook`` (driven at C
        level) or any object with the same Python API (``ReferenceBook``).
    book_venue, book_instrument : list of int
        Venue index and instrument index of each book.
    venue_dark : list of bool
        Per venue: a dark (midpoint) pool rather than a lit book.
    maker_fee_per_lot, taker_fee_per_lot : list of int
        Per book, fee units (1e-4 tick x lot) per lot; negative is a rebate.
        Per book rather than per venue because a per-share fee is a different
        number of fee units for instruments with different ticks.
    maker_fee_cbps, taker_fee_cbps : list of int
        Per book, hundredths of a basis point of notional.
    latency : list
        Per venue, an object whose ``sample(n)`` returns ``n`` one-way
        latencies in ns (``sim.latency.LatencyModel``); one draw per message
        to the venue and one per batch of reports back.
    flow : object, optional
        Background flow: ``next_chunk()`` returns ``(ops, books)`` (an
        ``OP_DTYPE`` array in time order and an ``int32`` array of book
        indices) or ``None`` when exhausted.
    start_ts : int, optional
        Initial time (ns).
    sample_ns : int, optional
        Record the NBBO and cumulative volume of every instrument every
        ``sample_ns`` (0: never); see ``samples()``.
    record_tape : bool, optional
        Record every trade and every lit BBO change (``tape()``).
    md_latency : list, optional
        Per venue, a latency model (as ``latency``) of its market data, or
        None for none. A strategy reading with ``seen=True`` (``bbo``,
        ``nbbo``, ``mid2``, ``depth``, ``market_volume``) sees a book as it
        was one draw ago, each change drawn once and a venue's feed kept in
        order; the venues themselves (matching, dark midpoints, pegged flow,
        samples) always use the books as they are. None or all None: every
        read is live, as without the argument.
    md_depth : list of int, optional
        Per venue, the levels per side recorded for ``depth(..., seen=True)``
        (1 to ``MAX_MD_DEPTH``; default ``MD_DEPTH_DEFAULT``); only read for
        venues with ``md_latency``. A change beyond them is not a change.
    """

    def __cinit__(self):
        self.book_venue = self.book_instr = NULL
        self.lit_books = self.n_lit = self.dark_books = self.n_dark = NULL
        self.venue_dark = self.venue_open = self.dark_watch = NULL
        self.maker_per_lot = self.taker_per_lot = self.maker_cbps = self.taker_cbps = NULL
        self.lat_ptr = NULL
        self.lat_pos = self.lat_len = NULL
        self.last_in = self.last_out = NULL
        self.md_on = NULL
        self.md = NULL
        self.md_last = NULL
        self.book_vol_qty = NULL
        self.book_vol_n2 = NULL
        self.rtt_ewma = NULL
        self.rtt_n = self.rtt_sum = NULL
        self.heap = NULL
        self.pool = NULL
        self.pool_free = NULL
        self.children = NULL
        self.child_free = NULL
        self.child_index.keys = NULL
        self.child_index.vals = NULL
        self.retiring = NULL
        self.cum_qty = self.cum_notional2 = NULL
        self.changed = NULL
        self.changed_list = NULL
        self.sample_buf = NULL
        self.trades = NULL
        self.quotes = NULL
        self.last_bbo = NULL
        self.cops = NULL
        self.cbooks = NULL
        self.free_slots = NULL

    def __init__(self, list books not None, book_venue, book_instrument, venue_dark,
                 maker_fee_per_lot, taker_fee_per_lot, maker_fee_cbps, taker_fee_cbps,
                 list latency not None, flow=None, start_ts=0, sample_ns=0,
                 bint record_tape=False, md_latency=None, md_depth=None):
        cdef Py_ssize_t b, v, i, nb = len(books), nv = len(venue_dark)
        cdef MdRing* r
        # big_arg: an int64_t parameter took start_ts=1.5 as 1, in silence.
        cdef int64_t start_c = big_arg(start_ts, "start_ts")
        cdef int64_t sample_c = big_arg(sample_ns, "sample_ns")
        if nb == 0 or nv == 0:
            raise ValueError("a market needs at least one venue and one book")
        for seq in (book_venue, book_instrument):
            if len(seq) != nb:
                raise ValueError("book_venue and book_instrument need one entry per book")
        for seq in (maker_fee_per_lot, taker_fee_per_lot, maker_fee_cbps, taker_fee_cbps):
            if len(seq) != nb:
                raise ValueError("fees need one entry per book")
        if len(latency) != nv:
            raise ValueError("latency needs one model per venue")
        md_models = [None] * nv if md_latency is None else list(md_latency)
        if len(md_models) != nv:
            raise ValueError("md_latency needs one model (or None) per venue")
        depths = [MD_DEPTH_DEFAULT] * nv if md_depth is None else list(md_depth)
        if len(depths) != nv:
            raise ValueError("md_depth needs one level count per venue")
        for v in range(nv):
            depths[v] = small_arg(depths[v], "md_depth")
            if not 1 <= depths[v] <= MAX_MD_DEPTH:
                raise ValueError(f"md_depth {depths[v]} of venue {v}: must be from 1 to "
                                 f"{MAX_MD_DEPTH}")
        if sample_c < 0:
            raise ValueError("sample_ns must be >= 0")
        ni = max(book_instrument) + 1
        self.n_books, self.n_venues, self.n_instruments = nb, nv, ni
        self.book_venue = <int32_t*>PyMem_Malloc(nb * sizeof(int32_t))
        self.book_instr = <int32_t*>PyMem_Malloc(nb * sizeof(int32_t))
        self.lit_books = <int32_t*>PyMem_Malloc(ni * nv * sizeof(int32_t))
        self.dark_books = <int32_t*>PyMem_Malloc(ni * nv * sizeof(int32_t))
        self.n_lit = <int32_t*>PyMem_Malloc(ni * sizeof(int32_t))
        self.n_dark = <int32_t*>PyMem_Malloc(ni * sizeof(int32_t))
        self.venue_dark = <uint8_t*>PyMem_Malloc(nv)
        self.venue_open = <uint8_t*>PyMem_Malloc(nv)
        self.dark_watch = <uint8_t*>PyMem_Malloc(ni)
        self.maker_per_lot = <int64_t*>PyMem_Malloc(nb * sizeof(int64_t))
        self.taker_per_lot = <int64_t*>PyMem_Malloc(nb * sizeof(int64_t))
        self.maker_cbps = <int64_t*>PyMem_Malloc(nb * sizeof(int64_t))
        self.taker_cbps = <int64_t*>PyMem_Malloc(nb * sizeof(int64_t))
        # Two latency channels per venue: orders and reports (v), market data (nv + v).
        self.lat_ptr = <int64_t**>PyMem_Malloc(2 * nv * sizeof(int64_t*))
        self.lat_pos = <Py_ssize_t*>PyMem_Malloc(2 * nv * sizeof(Py_ssize_t))
        self.lat_len = <Py_ssize_t*>PyMem_Malloc(2 * nv * sizeof(Py_ssize_t))
        self.md_on = <uint8_t*>PyMem_Malloc(nv)
        self.md_last = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.md = <MdRing*>PyMem_Malloc(nb * sizeof(MdRing))
        if self.md != NULL:
            memset(self.md, 0, nb * sizeof(MdRing))     # __dealloc__ frees each q and lv
        self.book_vol_qty = <int64_t*>PyMem_Malloc(nb * sizeof(int64_t))
        self.book_vol_n2 = <i128*>PyMem_Malloc(nb * sizeof(i128))
        self.last_in = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.last_out = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.batch_gen_of = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.batch_at = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.rtt_ewma = <double*>PyMem_Malloc(nv * sizeof(double))
        self.rtt_n = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.rtt_sum = <int64_t*>PyMem_Malloc(nv * sizeof(int64_t))
        self.cum_qty = <int64_t*>PyMem_Malloc(ni * sizeof(int64_t))
        self.cum_notional2 = <i128*>PyMem_Malloc(ni * sizeof(i128))
        self.changed = <uint8_t*>PyMem_Malloc(ni)
        self.changed_list = <int32_t*>PyMem_Malloc(ni * sizeof(int32_t))
        self.last_bbo = <int64_t*>PyMem_Malloc(4 * nb * sizeof(int64_t))
        if (self.book_venue == NULL or self.book_instr == NULL or self.lit_books == NULL
                or self.dark_books == NULL or self.n_lit == NULL or self.n_dark == NULL
                or self.venue_dark == NULL or self.venue_open == NULL or self.dark_watch == NULL
                or self.maker_per_lot == NULL or self.taker_per_lot == NULL
                or self.maker_cbps == NULL or self.taker_cbps == NULL or self.lat_ptr == NULL
                or self.lat_pos == NULL or self.lat_len == NULL or self.last_in == NULL
                or self.last_out == NULL or self.batch_gen_of == NULL or self.batch_at == NULL
                or self.md_on == NULL or self.md_last == NULL or self.md == NULL
                or self.book_vol_qty == NULL
                or self.book_vol_n2 == NULL
                or self.rtt_ewma == NULL or self.rtt_n == NULL
                or self.rtt_sum == NULL or self.cum_qty == NULL or self.cum_notional2 == NULL
                or self.changed == NULL or self.changed_list == NULL
                or self.last_bbo == NULL):
            raise MemoryError()
        for v in range(nv):
            self.venue_dark[v] = 1 if venue_dark[v] else 0
            self.venue_open[v] = 1
            self.lat_ptr[v] = self.lat_ptr[nv + v] = NULL
            self.lat_pos[v] = self.lat_len[v] = self.lat_pos[nv + v] = self.lat_len[nv + v] = 0
            self.md_on[v] = md_models[v] is not None
            self.md_last[v] = start_c
            self.last_in[v] = self.last_out[v] = start_c
            self.batch_gen_of[v] = -1
            self.rtt_ewma[v] = 0.0
            self.rtt_n[v] = self.rtt_sum[v] = 0
        for i in range(ni):
            self.n_lit[i] = self.n_dark[i] = 0
            self.dark_watch[i] = 0
            self.cum_qty[i] = self.cum_notional2[i] = 0
        self.n_changed = 0
        memset(self.changed, 0, ni)
        self._mark_all_changed()            # (never asked: everything is news)
        self.ports = []
        self.darks = []
        self.all_cy = True
        for b in range(nb):
            v, i = book_venue[b], book_instrument[b]
            if not 0 <= v < nv or not 0 <= i < ni:
                raise ValueError(f"book {b} has an invalid venue or instrument index")
            self.book_venue[b], self.book_instr[b] = v, i
            self.maker_per_lot[b] = maker_fee_per_lot[b]
            self.taker_per_lot[b] = taker_fee_per_lot[b]
            self.maker_cbps[b] = maker_fee_cbps[b]
            self.taker_cbps[b] = taker_fee_cbps[b]
            port = make_port(books[b])
            self.all_cy = self.all_cy and isinstance(port, CyBookPort)
            self.ports.append(port)
            if self.venue_dark[v]:
                self.darks.append(DarkBook())
                self.dark_books[i * nv + self.n_dark[i]] = b
                self.n_dark[i] += 1
            else:
                self.darks.append(None)
                self.lit_books[i * nv + self.n_lit[i]] = b
                self.n_lit[i] += 1
            for k in range(4):
                self.last_bbo[4 * b + k] = 0
            self.book_vol_qty[b] = self.book_vol_n2[b] = 0
        self.lat_models = list(latency) + md_models
        self.lat_arrays = [None] * (2 * nv)
        for v in range(2 * nv):
            # Filled up front, so the first order does not pay for the batch.
            if self.lat_models[v] is not None:
                self._fill_latency(<int>v)
        for b in range(nb):
            v = book_venue[b]
            if self.md_on[v]:
                # What a strategy sees before any change arrives: the book as given.
                r = &self.md[b]
                r.depth = 0 if self.venue_dark[v] else depths[v]
                r.q = <MdQuote*>_grow(NULL, &r.cap, 1, sizeof(MdQuote))
                r.lv = <MdLevel*>_grow(NULL, &r.lv_cap, 2 * r.depth * r.cap + 1,
                                       sizeof(MdLevel))
                self._md_snapshot(<int32_t>b, r.q, r.lv)
                r.q[0].seen_ts = start_c
                r.lo, r.hi = 0, 1
        self.now = start_c
        self.heap_cap = self.heap_n = self.n_pool_free = 0
        self._grow_heap()
        self.children_cap = self.n_child_slots = self.n_children = 0
        self.children = <Child*>_grow(NULL, &self.children_cap, 64, sizeof(Child))
        self.child_free_cap = self.n_child_free = 0
        self.child_free = <int32_t*>_grow(NULL, &self.child_free_cap, 64, sizeof(int32_t))
        idmap_init(&self.child_index, 128)
        self.retiring_cap = self.retiring_lo = self.retiring_hi = 0
        self.retiring = <Retiring*>_grow(NULL, &self.retiring_cap, 64, sizeof(Retiring))
        self.owners = []
        self.timer_cbs = []
        self.n_free = self.free_cap = 0
        self.flow = flow
        self.flow_done = flow is None
        self.cpos = self.clen = 0
        self.sample_ns = sample_c
        self.next_sample = start_c if sample_c > 0 else INT64_MAX
        self.samples_cap = self.n_samples = 0
        self.record_tape = record_tape
        self.trades_cap = self.n_trades = 0
        self.quotes_cap = self.n_quotes = 0
        self.batch_gen = 0
        self.pending_ack = 0
        self.cur_id = 0

    def __dealloc__(self):
        cdef Py_ssize_t b
        PyMem_Free(self.book_venue)
        PyMem_Free(self.book_instr)
        PyMem_Free(self.lit_books)
        PyMem_Free(self.dark_books)
        PyMem_Free(self.n_lit)
        PyMem_Free(self.n_dark)
        PyMem_Free(self.venue_dark)
        PyMem_Free(self.venue_open)
        PyMem_Free(self.dark_watch)
        PyMem_Free(self.maker_per_lot)
        PyMem_Free(self.taker_per_lot)
        PyMem_Free(self.maker_cbps)
        PyMem_Free(self.taker_cbps)
        PyMem_Free(self.lat_ptr)
        PyMem_Free(self.lat_pos)
        PyMem_Free(self.lat_len)
        if self.md != NULL:
            for b in range(self.n_books):
                PyMem_Free(self.md[b].q)
                PyMem_Free(self.md[b].lv)
        PyMem_Free(self.md)
        PyMem_Free(self.book_vol_qty)
        PyMem_Free(self.book_vol_n2)
        PyMem_Free(self.md_on)
        PyMem_Free(self.md_last)
        PyMem_Free(self.last_in)
        PyMem_Free(self.last_out)
        PyMem_Free(self.batch_gen_of)
        PyMem_Free(self.batch_at)
        PyMem_Free(self.rtt_ewma)
        PyMem_Free(self.rtt_n)
        PyMem_Free(self.rtt_sum)
        PyMem_Free(self.heap)
        PyMem_Free(self.pool)
        PyMem_Free(self.pool_free)
        PyMem_Free(self.children)
        PyMem_Free(self.child_free)
        idmap_free(&self.child_index)
        PyMem_Free(self.retiring)
        PyMem_Free(self.cum_qty)
        PyMem_Free(self.cum_notional2)
        PyMem_Free(self.changed)
        PyMem_Free(self.changed_list)
        PyMem_Free(self.sample_buf)
        PyMem_Free(self.trades)
        PyMem_Free(self.quotes)
        PyMem_Free(self.last_bbo)
        PyMem_Free(self.free_slots)

    # ------------------------------------------------------------ heap

    cdef int _grow_heap(self) except -1:
        """Double the heap, its message pool and the free-slot stack (new slots free)."""
        cdef Py_ssize_t old = self.heap_cap, cap, k
        cap = old
        self.heap = <HeapKey*>_grow(self.heap, &cap, old + 1, sizeof(HeapKey))
        cap = old
        self.pool = <Msg*>_grow(self.pool, &cap, old + 1, sizeof(Msg))
        cap = old
        self.pool_free = <Py_ssize_t*>_grow(self.pool_free, &cap, old + 1, sizeof(Py_ssize_t))
        self.heap_cap = cap
        for k in range(cap - 1, old - 1, -1):
            self.pool_free[self.n_pool_free] = k
            self.n_pool_free += 1
        return 0

    cdef int _push(self, Msg* m) except -1:
        cdef Py_ssize_t i, parent, slot
        cdef HeapKey key
        if self.heap_n == self.heap_cap:
            self._grow_heap()
        self.msg_seq += 1
        m.seq = self.msg_seq
        self.n_pool_free -= 1
        slot = self.pool_free[self.n_pool_free]
        self.pool[slot] = m[0]
        key.ts, key.seq, key.slot = m.ts, m.seq, slot
        i = self.heap_n
        self.heap_n += 1
        while i > 0:
            parent = (i - 1) >> 1
            if not _before(&key, &self.heap[parent]):
                break
            self.heap[i] = self.heap[parent]
            i = parent
        self.heap[i] = key
        return 0

    cdef void _pop(self, Msg* out) noexcept:
        cdef Py_ssize_t i = 0, child, n
        cdef HeapKey* last
        out[0] = self.pool[self.heap[0].slot]
        self.pool_free[self.n_pool_free] = self.heap[0].slot
        self.n_pool_free += 1
        self.heap_n -= 1
        n = self.heap_n
        if n == 0:
            return
        last = &self.heap[n]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and _before(&self.heap[child + 1], &self.heap[child]):
                child += 1
            if not _before(&self.heap[child], last):
                break
            self.heap[i] = self.heap[child]
            i = child
        self.heap[i] = last[0]

    # ------------------------------------------------------------ flow, latency, fees

    cdef int _refill(self) except -1:
        cdef cnp.ndarray ops, books
        while not self.flow_done:
            chunk = self.flow.next_chunk()
            if chunk is None:
                self.flow_done = True
                self.chunk_ops = self.chunk_books = None
                self.cops, self.cbooks = NULL, NULL
                self.cpos = self.clen = 0
                return 0
            ops, books = chunk
            if ops.dtype != OP_DTYPE or not ops.flags.c_contiguous:
                raise TypeError("flow chunks must be C-contiguous OP_DTYPE arrays")
            books = np.ascontiguousarray(books, dtype=np.int32)
            if books.shape[0] != ops.shape[0]:
                raise ValueError("a flow chunk needs one book index per operation")
            if ops.shape[0] == 0:
                continue
            if books.min() < 0 or books.max() >= self.n_books:
                raise ValueError("a flow chunk names a book that does not exist")
            self.chunk_ops, self.chunk_books = ops, books
            self.cops = <const Op*>cnp.PyArray_DATA(ops)
            self.cbooks = <const int32_t*>cnp.PyArray_DATA(books)
            self.cpos, self.clen = 0, ops.shape[0]
            return 0
        return 0

    cdef int _fill_latency(self, int v) except -1:
        cdef cnp.ndarray arr
        arr = np.ascontiguousarray(self.lat_models[v].sample(LAT_BATCH), dtype=np.int64)
        if arr.shape[0] == 0 or arr.min() < 0:
            raise ValueError("a latency model returned no or negative latencies")
        self.lat_arrays[v] = arr
        self.lat_ptr[v] = <int64_t*>cnp.PyArray_DATA(arr)
        self.lat_pos[v], self.lat_len[v] = 0, arr.shape[0]
        return 0

    cdef int64_t _latency(self, int v) except -1:
        if self.lat_pos[v] >= self.lat_len[v]:
            self._fill_latency(v)
        self.lat_pos[v] += 1
        return self.lat_ptr[v][self.lat_pos[v] - 1]

    cdef int64_t _arrival(self, int v) except -1:
        """When a message sent now reaches venue ``v`` (never before an earlier one)."""
        cdef int64_t t = self.now + self._latency(v)
        if t < self.last_in[v]:
            t = self.last_in[v]
        self.last_in[v] = t
        return t

    cdef int64_t _deliver_at(self, int v, int64_t venue_ts) except -1:
        """Delivery time of the current batch of reports from venue ``v``.

        Everything one venue operation produces at one venue (ack, fills,
        cancel of the rest) leaves in one batch, so one latency draw covers
        it. An operation that reaches two venues (a lit trade that moves the
        mid and fills a dark peg) sends a batch from each: each venue draws
        from its own model and keeps its own channel in order.
        """
        cdef int64_t t
        if self.batch_gen_of[v] != self.batch_gen:
            t = venue_ts + self._latency(v)
            if t < self.last_out[v]:
                t = self.last_out[v]
            self.last_out[v] = t
            self.batch_gen_of[v] = self.batch_gen
            self.batch_at[v] = t
        return self.batch_at[v]

    cdef int _md_snapshot(self, int32_t b, MdQuote* q, MdLevel* lv) except -1:
        """Book ``b`` as it is, into ``q`` and its ring's ``2 x depth`` levels ``lv``.

        A dark book shows no quotes: only its trades are recorded.
        """
        cdef BookPort port
        cdef Py_ssize_t k = self.md[b].depth
        q.vol_qty, q.vol_n2 = self.book_vol_qty[b], self.book_vol_n2[b]
        q.bid_px = q.bid_qty = q.ask_px = q.ask_qty = 0
        q.n_bids = q.n_asks = 0
        if k == 0:
            return 0
        port = <BookPort>self.ports[b]
        q.n_bids = <int32_t>port.levels(0, lv, k)
        q.n_asks = <int32_t>port.levels(1, lv + k, k)
        if q.n_bids:
            q.bid_px, q.bid_qty = lv[0].price, lv[0].qty
        if q.n_asks:
            q.ask_px, q.ask_qty = lv[k].price, lv[k].qty
        return 0

    cdef int _md_record(self, int32_t b, int64_t ts) except -1:
        """Queue book ``b``'s state for its strategies if it changed (venue ``md_on``).

        The state is its first ``depth`` levels per side and its cumulative
        trades. One latency draw per change, on the venue's market-data
        channel; a venue's feed never reorders (a later change is never
        seen first).
        """
        cdef MdRing* r = &self.md[b]
        cdef Py_ssize_t k = r.depth, stride = 2 * r.depth
        cdef MdQuote* new
        cdef MdQuote* last
        cdef MdLevel* new_lv
        cdef int v = self.book_venue[b]
        cdef int64_t seen
        # Drop the states already superseded now (keeping the one seen now),
        # as a read would: otherwise a book no strategy reads keeps every
        # change of the run. ``now`` never goes back, so no later read differs.
        self._md_seen(b)
        if r.hi == r.cap:
            if r.lo > 0:
                # Reuse the room of states already superseded before growing.
                memmove(r.q, &r.q[r.lo], (r.hi - r.lo) * sizeof(MdQuote))
                memmove(r.lv, r.lv + r.lo * stride, (r.hi - r.lo) * stride * sizeof(MdLevel))
                r.hi -= r.lo
                r.lo = 0
            else:
                r.q = <MdQuote*>_grow(r.q, &r.cap, r.hi + 1, sizeof(MdQuote))
                r.lv = <MdLevel*>_grow(r.lv, &r.lv_cap, stride * r.cap + 1, sizeof(MdLevel))
        # Taken straight into the next slot, which becomes the ring's only
        # if the state changed: no copy of the levels on the way.
        new, new_lv = &r.q[r.hi], r.lv + r.hi * stride
        last = new - 1
        self._md_snapshot(b, new, new_lv)
        if (new.n_bids == last.n_bids and new.n_asks == last.n_asks
                and new.vol_qty == last.vol_qty and new.vol_n2 == last.vol_n2
                and memcmp(new_lv, new_lv - stride, new.n_bids * sizeof(MdLevel)) == 0
                and memcmp(new_lv + k, new_lv - stride + k, new.n_asks * sizeof(MdLevel)) == 0):
            return 0
        seen = ts + self._latency(self.n_venues + v)
        if seen < self.md_last[v]:
            seen = self.md_last[v]
        self.md_last[v] = seen
        new.seen_ts = seen
        r.hi += 1
        return 0

    cdef const MdQuote* _md_seen(self, int32_t b) noexcept:
        """The state of book ``b`` a strategy sees now (its venue ``md_on``)."""
        cdef MdRing* r = &self.md[b]
        while r.hi - r.lo > 1 and r.q[r.lo + 1].seen_ts <= self.now:
            r.lo += 1
        return &r.q[r.lo]

    cdef int _top(self, int32_t b, bint seen, int64_t* out) except -1:
        """``out[0:4]`` = bid, bid qty, ask, ask qty of lit book ``b``: live, or as seen."""
        cdef BookPort port
        cdef const MdQuote* q
        if seen and self.md_on[self.book_venue[b]]:
            q = self._md_seen(b)
            out[0], out[1], out[2], out[3] = q.bid_px, q.bid_qty, q.ask_px, q.ask_qty
            return 0
        port = <BookPort>self.ports[b]
        out[0], out[1] = port.best_bid(), port.best_bid_qty()
        out[2], out[3] = port.best_ask(), port.best_ask_qty()
        return 0

    cdef int64_t fee_c(self, int32_t b, int liquidity, int64_t price_x2,
                       int64_t qty) except? 0x7FFFFFFFFFFFFFFF:
        cdef int64_t per_lot, cbps
        cdef i128 fee, bps
        if liquidity == LIQ_MAKER:
            per_lot, cbps = self.maker_per_lot[b], self.maker_cbps[b]
        else:
            per_lot, cbps = self.taker_per_lot[b], self.taker_cbps[b]
        # Products of two int64 fit in 128 bits; price_x2 * qty alone passes
        # 2^63 on a fine grid (1e7 half-ticks x 1e11 lots), so 64 bits wrap.
        fee = (<i128>per_lot) * qty
        if cbps != 0:
            if _mul_overflow_i128((<i128>price_x2) * qty, cbps, &bps):
                raise OverflowError(f"the fee of a fill of {qty} lots at {price_x2} half-ticks "
                                    f"(book {b}) does not fit in 128 bits")
            if -_I64_QUARTER < bps < _I64_QUARTER:
                fee += _div_round(<int64_t>bps, 200)    # the usual case: no 128-bit division
            else:
                fee += _div_round128(bps, 200)
        if fee > INT64_MAX or fee < INT64_MIN:
            raise OverflowError(f"the fee of a fill of {qty} lots at {price_x2} half-ticks "
                                f"(book {b}) is {_py_int128(fee)} fee units, beyond int64")
        return <int64_t>fee

    cdef Child* _child(self, int64_t child_id) except NULL:
        """The record of a child order named from outside; ``KeyError`` if there is none."""
        cdef Child* ch = _child_rec(self, child_id) if child_id > _CHILD_ID_BASE else NULL
        if ch != NULL:
            return ch
        if _CHILD_ID_BASE < child_id <= _CHILD_ID_BASE + self.n_children:
            raise KeyError(f"child order {child_id} finished more than {_FINISHED_KEEP_NS} ns "
                           f"ago: its record is freed")
        raise KeyError(f"unknown child order id {child_id}")

    cdef int _release(self, int32_t s, int64_t child_id) except -1:
        """A message naming child ``child_id`` (record slot ``s``) is done with: a
        finished child no message names any more goes on the retiring queue, to be
        freed FINISHED_KEEP_NS from now."""
        cdef Child* ch = &self.children[s]
        ch.refs -= 1
        if ch.refs or ch.state != CHILD_DONE:
            return 0
        ch.retire_ts = self.now + _FINISHED_KEEP_NS
        if ch.retiring:
            return 0        # (still queued: ``_retire`` finds the later time there)
        ch.retiring = 1
        return self._queue_retiring(child_id, s, ch.retire_ts)

    cdef int _queue_retiring(self, int64_t child_id, int32_t s, int64_t ts) except -1:
        cdef Retiring* r
        if self.retiring_hi == self.retiring_cap:
            if 2 * self.retiring_lo >= self.retiring_hi:
                # Half of it or more is gone from the front: compact (amortized O(1)).
                memmove(self.retiring, &self.retiring[self.retiring_lo],
                        (self.retiring_hi - self.retiring_lo) * sizeof(Retiring))
                self.retiring_hi -= self.retiring_lo
                self.retiring_lo = 0
            else:
                self.retiring = <Retiring*>_grow(self.retiring, &self.retiring_cap,
                                                 self.retiring_hi + 1, sizeof(Retiring))
        r = &self.retiring[self.retiring_hi]
        r.child_id, r.ts, r.rec = child_id, ts, s
        self.retiring_hi += 1
        return 0

    cdef int _retire(self) except -1:
        """Free the records of the finished children whose time has come.

        The queue is in the order they finished. One named again since (a late
        cancel) leaves the front: if a message still names it, ``_release``
        queues it again; if not, it goes to the back with its later time (so
        it never holds up those behind it).
        """
        cdef Retiring r
        cdef Child* ch
        while self.retiring_lo < self.retiring_hi:
            r = self.retiring[self.retiring_lo]
            if r.ts > self.now:
                break
            self.retiring_lo += 1
            ch = &self.children[r.rec]
            if ch.refs:
                ch.retiring = 0
                continue
            if ch.retire_ts != r.ts:
                self._queue_retiring(r.child_id, r.rec, ch.retire_ts)
                continue
            ch.retiring = 0
            idmap_del(&self.child_index, r.child_id)
            if self.n_child_free == self.child_free_cap:
                self.child_free = <int32_t*>_grow(self.child_free, &self.child_free_cap,
                                                  self.n_child_free + 1, sizeof(int32_t))
            self.child_free[self.n_child_free] = r.rec
            self.n_child_free += 1
            self.owners[r.rec] = None
        if self.retiring_lo == self.retiring_hi:
            self.retiring_lo = self.retiring_hi = 0
        return 0

    # ------------------------------------------------------------ market data

    cdef int _nbbo(self, int instr, int64_t* bid, int64_t* ask, bint seen) except -1:
        """Best bid and ask of the open lit venues: live, or as a strategy sees them.

        Which venues are open is their published hours, known to everyone
        at once: only the quotes are late.
        """
        cdef int32_t k, b
        cdef int64_t x, y
        cdef BookPort port
        cdef const MdQuote* q
        bid[0] = 0
        ask[0] = 0
        for k in range(self.n_lit[instr]):
            b = self.lit_books[instr * self.n_venues + k]
            if not self.venue_open[self.book_venue[b]]:
                continue
            if seen and self.md_on[self.book_venue[b]]:
                q = self._md_seen(b)
                x, y = q.bid_px, q.ask_px
            else:
                port = <BookPort>self.ports[b]
                x, y = port.best_bid(), port.best_ask()
            if x > bid[0]:
                bid[0] = x
            x = y
            if x > 0 and (ask[0] == 0 or x < ask[0]):
                ask[0] = x
        return 0

    cdef int _seen_volume(self, int instr, int64_t* qty, i128* n2) except -1:
        """Cumulative trades of an instrument over its books, each as a strategy sees it."""
        cdef Py_ssize_t b
        cdef const MdQuote* q
        qty[0] = 0
        n2[0] = 0
        for b in range(self.n_books):
            if self.book_instr[b] != instr:
                continue
            if self.md_on[self.book_venue[b]]:
                q = self._md_seen(<int32_t>b)
                qty[0] += q.vol_qty
                n2[0] += q.vol_n2
            else:
                qty[0] += self.book_vol_qty[b]
                n2[0] += self.book_vol_n2[b]
        return 0

    cdef int64_t mid2_c(self, int instr, bint seen) except -1:
        """Twice the NBBO midpoint of the open lit venues (live or seen), or 0 if not valid."""
        cdef int64_t bid, ask
        self._nbbo(instr, &bid, &ask, seen)
        if bid > 0 and ask > 0 and bid < ask:
            return bid + ask
        return 0

    # ------------------------------------------------------------ running

    def run_until(self, until):
        """Process everything due at or before ``until`` (ns); ``now`` becomes ``until``.

        Returns
        -------
        int
            Number of background operations and messages processed.

        Raises
        ------
        TypeError
            If ``until`` is not an integer (``run_until(2.7)`` ran to 2).
        ValueError
            If it is beyond int64.
        """
        cdef int64_t until_c = big_arg(until, "until")
        if self.running:
            raise RuntimeError("run_until called from inside the loop (a callback)")
        self.running = True
        try:
            return self._run(until_c)
        finally:
            self.running = False
            self.cur_id = 0

    cdef int64_t _run(self, int64_t until) except -1:
        cdef Msg m
        cdef int64_t bg_ts, msg_ts, n = 0
        cdef const Op* op
        while True:
            if self.cpos >= self.clen and not self.flow_done:
                self._refill()
            bg_ts = self.cops[self.cpos].ts if self.cpos < self.clen else INT64_MAX
            msg_ts = self.heap[0].ts if self.heap_n > 0 else INT64_MAX
            self.batch_gen += 1
            if msg_ts <= bg_ts:
                if msg_ts > until:
                    break
                if msg_ts >= self.next_sample:
                    self._sample(msg_ts)
                self._pop(&m)
                if m.ts > self.now:
                    self.now = m.ts
                self._handle(&m)
                if self.pending_ack:
                    self._flush_ack()
            else:
                if bg_ts > until:
                    break
                if bg_ts >= self.next_sample:
                    self._sample(bg_ts)
                if bg_ts > self.now:
                    self.now = bg_ts
                op = &self.cops[self.cpos]
                self.cpos += 1
                # (no ack is ever held here: background operations report
                # only fills and re-entries of strategy orders, never acks)
                self._bg_op(op, self.cbooks[self.cpos - 1])
            n += 1
        if until > self.now:
            self.now = until
        if self.now >= self.next_sample:
            self._sample(self.now)
        _retire_due(self)
        return n

    def next_message_due(self):
        """Time of the next message (an order, a report, a timer), ignoring background flow.

        Real-time pacing wakes for these exactly; background operations
        between them are caught up in batches (see ``sim.realtime``).
        None: no message pending.
        """
        return self.heap[0].ts if self.heap_n > 0 else None

    def next_due(self):
        """Time of the next background operation or message (None: nothing left)."""
        if self.cpos >= self.clen and not self.flow_done:
            self._refill()
        t = INT64_MAX
        if self.cpos < self.clen:
            t = self.cops[self.cpos].ts
        if self.heap_n > 0 and self.heap[0].ts < t:
            t = self.heap[0].ts
        return None if t == INT64_MAX else t

    # ------------------------------------------------------------ background operations

    cdef int _bg_op(self, const Op* op, int32_t b) except -1:
        """Apply one background (flow or replay) operation; returns its code."""
        cdef int v = self.book_venue[b], r = 0
        cdef int stp = -1 if op.stp == STP_DEFAULT else op.stp
        cdef BookPort port
        cdef int64_t price = op.price, mid2
        self.n_bg_ops += 1
        if not self.venue_open[v]:
            return VENUE_CLOSED
        if self.venue_dark[v]:
            if op.op == OP_ADD:
                return self._dark_new(b, op.order_id, op.side, op.price, op.qty, op.account,
                                      op.ord_type, op.tif, op.flags, stp, op.ts, False, 0)
            if op.op == OP_CANCEL:
                return self._dark_cancel(b, op.order_id, op.ts, False)
            return ORDER_NOT_REPLACEABLE
        port = <BookPort>self.ports[b]
        if op.flags & FLAG_PEG_MID:
            # Pegged flow: the price is an offset from the lit mid of now.
            mid2 = self.mid2_c(self.book_instr[b], False)
            if mid2 <= 0:
                return INVALID_PRICE        # no valid NBBO to peg to: not sent
            price += mid2 * (PEG_SCALE // 2)
            if price < PEG_SCALE:
                price = 1
            elif op.side == BUY:
                price = price // PEG_SCALE
            else:
                price = (price + PEG_SCALE - 1) // PEG_SCALE
        if op.op == OP_ADD:
            r = port.add(op.order_id, op.side, price, op.qty, op.account, op.ord_type,
                         op.tif, op.flags & ~FLAG_PEG_MID, stp, op.ts, False)
        elif op.op == OP_CANCEL:
            r = port.cancel(op.order_id, op.ts, False)
        elif op.op == OP_REPLACE:
            r = port.replace(op.order_id, op.price, op.qty, op.ts, False)
        else:
            r = INVALID_ORD_TYPE
        if port.n_fills or port.n_events:
            self._output(b, op.ts, 0, False)
        self._after_lit(b, op.ts)
        return r

    cdef int _after_lit(self, int32_t b, int64_t ts) except -1:
        """What a change to a lit book may set off: tape, market data, dark pools on its mid."""
        self._mark_changed(self.book_instr[b])
        if self.md_on[self.book_venue[b]]:
            self._md_record(b, ts)
        if self.record_tape:
            self._tape_quote(b, ts)
        if self.dark_watch[self.book_instr[b]]:
            self._dark_watch_instr(self.book_instr[b], ts)
        return 0

    cdef int _output(self, int32_t b, int64_t ts, int64_t mid2, bint internal) except -1:
        """Turn a book's fills and events into statistics and child-order reports.

        ``mid2`` (half-ticks) prices the fills of a dark book; 0 for a lit one.
        ``internal`` marks a dark order re-entering its book: its owner was
        acked long ago and hears only of fills.
        """
        cdef BookPort port = <BookPort>self.ports[b]
        cdef Py_ssize_t i = 0, j = 0, nf = port.n_fills, ne = port.n_events
        cdef int instr = self.book_instr[b]
        cdef Fill* f
        cdef Event* e
        cdef Child* ch
        cdef Trade* t
        cdef int64_t px2
        # A dark order rests at the pool's placeholder price: its reports
        # carry the order's own limit (0: a pure peg), as a parked one's do.
        cdef bint dark = self.venue_dark[self.book_venue[b]]
        # A tracked dark order that leaves the book (filled, or canceled by
        # self-trade prevention or the close) leaves the dark book's heaps too.
        cdef DarkBook dk = <DarkBook>self.darks[b] if dark else None
        cdef bint watch_orders = dark and dk.ids.used > 0
        cdef int32_t s
        while i < nf or j < ne:
            # Fills and events share one sequence: merging by it replays the
            # book's exact order (ack, fills, then the cancel of an IOC rest).
            if j >= ne or (i < nf and port.fills[i].seq < port.events[j].seq):
                f = &port.fills[i]
                i += 1
                px2 = mid2 if mid2 > 0 else 2 * f.price
                self.cum_qty[instr] += f.qty
                self._mark_changed(instr)
                self.cum_notional2[instr] += (<i128>px2) * f.qty
                self.book_vol_qty[b] += f.qty
                self.book_vol_n2[b] += (<i128>px2) * f.qty
                if self.record_tape:
                    self.trades = <Trade*>_grow(self.trades, &self.trades_cap, self.n_trades + 1,
                                                sizeof(Trade))
                    t = &self.trades[self.n_trades]
                    self.n_trades += 1
                    memset(t, 0, sizeof(Trade))     # padding too: tapes compare bytewise
                    t.ts, t.price_x2, t.qty, t.book = ts, px2, f.qty, b
                    t.aggressor_side = f.aggressor_side
                if watch_orders:
                    s = dk.tracked_slot(f.maker_id)
                    if s >= 0 and port.leaves(f.maker_id) <= 0:
                        dk.drop(s)
                if f.maker_id > _CHILD_ID_BASE:
                    self._report(f.maker_id, RPT_FILL, px2, f.qty, LIQ_MAKER, 0, ts)
                if f.taker_id > _CHILD_ID_BASE:
                    self._report(f.taker_id, RPT_FILL, px2, f.qty, LIQ_TAKER, 0, ts)
            else:
                e = &port.events[j]
                j += 1
                if watch_orders and (e.kind == EV_CANCELED or e.kind == EV_EXPIRED):
                    s = dk.tracked_slot(e.order_id)
                    if s >= 0:
                        dk.drop(s)
                if e.order_id <= _CHILD_ID_BASE:
                    continue
                if internal and e.kind == EV_ACCEPTED:
                    continue
                if e.kind == EV_REPLACED or dark:
                    ch = _known_child(self, e.order_id)
                    if e.kind == EV_REPLACED:
                        ch.qty = e.qty
                        ch.limit = e.price
                px2 = 2 * (ch.limit if dark else e.price)
                self._report(e.order_id, e.kind, px2, 0, LIQ_NONE, e.reason, ts)
        port.clear()
        if dark and nf and self.md_on[self.book_venue[b]]:
            # A dark pool's prints reach strategies late too (a lit book's
            # change is recorded by ``_after_lit``).
            self._md_record(b, ts)
        return 0

    cdef int _report(self, int64_t child_id, int kind, int64_t price_x2, int64_t last_qty,
                     int liquidity, int reason, int64_t ts) except -1:
        """Update a child order at venue time and send its report on its way."""
        # The id comes from a book or a message of ours: a known child.
        cdef Child* ch = _known_child(self, child_id)
        cdef int v = self.book_venue[ch.book]
        cdef Msg m
        memset(&m, 0, sizeof(Msg))
        if kind == RPT_FILL:
            ch.cum += last_qty
            m.fee = self.fee_c(ch.book, liquidity, price_x2, last_qty)
            if ch.cum >= ch.qty:
                ch.state = CHILD_DONE
        elif kind == RPT_ACCEPTED:
            if ch.state == CHILD_PENDING:
                ch.state = CHILD_LIVE
        elif kind == RPT_REJECTED or kind == RPT_CANCELED or kind == RPT_EXPIRED:
            ch.state = CHILD_DONE
        m.ts = self._deliver_at(v, ts)
        m.kind = MSG_REPORT
        m.child_id = child_id
        m.price = price_x2
        m.qty = last_qty
        m.order_qty = ch.qty
        m.cum = ch.cum
        m.leaves = 0 if ch.state == CHILD_DONE else ch.qty - ch.cum
        m.venue_ts = ts
        m.report = <uint8_t>kind
        m.liquidity = <uint8_t>liquidity
        m.reason = <uint16_t>reason
        m.side = ch.side
        m.rec = <int32_t>(ch - self.children)
        ch.refs += 1                # this report, queued or held, names it
        if self.pending_ack:
            if self.pending_ack == child_id:
                # The held ack would arrive together with this report (same
                # batch, same time); its owner ignores acks and this report
                # carries the round trip, so the ack is never queued.
                self.pending_ack = 0
                self.n_reports += 1
                ch.refs -= 1
            else:
                self._flush_ack()
        if kind == RPT_ACCEPTED and ch.quiet_ack:
            # Held until the end of the venue operation: most strategy orders
            # trade or are canceled in the same batch (an IOC), and then the
            # ack costs no message.
            self.pending_ack_msg = m
            self.pending_ack = child_id
            return 0
        return self._push(&m)

    cdef int _flush_ack(self) except -1:
        """Send the held ack: nothing else for its order came in the same batch."""
        self.pending_ack = 0
        return self._push(&self.pending_ack_msg)

    # ------------------------------------------------------------ messages

    cdef int _handle(self, Msg* m) except -1:
        cdef object cb
        # (A child message names its record by slot: it holds the record, so the
        # slot is its child's until the message is released.)
        if m.kind == MSG_REPORT:
            self._deliver(m)
            return self._release(m.rec, m.child_id)
        if m.kind == MSG_NEW or m.kind == MSG_CANCEL or m.kind == MSG_REPLACE:
            self.cur_id, self.cur_rec = m.child_id, m.rec
            self._on_order(m)
            self.cur_id = 0         # (after an exception: run_until's ``finally``)
            return self._release(m.rec, m.child_id)
        if m.kind == MSG_TIMER:
            cb = self.timer_cbs[m.target]
            self.timer_cbs[m.target] = None
            self.free_slots[self.n_free] = m.target      # room reserved by set_timer_c
            self.n_free += 1
            if isinstance(cb, PeriodicTimer):
                return self._tick(<PeriodicTimer>cb)
            if isinstance(cb, StrategyCore):
                if (<StrategyCore>cb).stopped or (<StrategyCore>cb).filled >= (<StrategyCore>cb).qty:
                    return 0
                return (<StrategyCore>cb).on_timer_c()
            cb()
            return 0
        return self._on_session(m)

    cdef int _tick(self, PeriodicTimer pt) except -1:
        cdef StrategyCore owner = pt.owner
        if not pt.active or owner.stopped or owner.filled >= owner.qty:
            pt.active = False
            return 0
        # Re-armed before the call, so the strategy may stop it from inside.
        self.set_timer_c(self.now + pt.period, pt)
        return owner.on_timer_c()

    cdef int _on_order(self, Msg* m) except -1:
        cdef int32_t b = m.target
        cdef int v = self.book_venue[b], r
        cdef Child* ch = &self.children[m.rec]
        cdef BookPort port = <BookPort>self.ports[b]
        self.n_strategy_msgs += 1
        if m.kind == MSG_NEW:
            r = _price_out_of_bounds(m.price)
            if r:
                # Refused before anything doubles the price: the half-ticks every report
                # carries (2 * price) wrap past 2^62 ticks.
                return self._report(m.child_id, RPT_REJECTED, 0, 0, LIQ_NONE, r, m.ts)
            if not self.venue_open[v]:
                return self._report(m.child_id, RPT_REJECTED, 2 * m.price, 0, LIQ_NONE,
                                    VENUE_CLOSED, m.ts)
            if self.venue_dark[v]:
                return self._dark_new(b, m.child_id, m.side, m.price, m.qty, ch.account,
                                      m.ord_type, m.tif, m.flags, ch.stp, m.ts, True,
                                      m.order_qty)
            if m.order_qty:
                # Lit books here have no minimum-quantity orders: refused, not ignored.
                return self._report(m.child_id, RPT_REJECTED, 2 * m.price, 0, LIQ_NONE,
                                    INVALID_FIELD, m.ts)
            port.add(m.child_id, m.side, m.price, m.qty, ch.account, m.ord_type, m.tif, m.flags,
                     ch.stp, m.ts, True)
            self._output(b, m.ts, 0, False)
            return self._after_lit(b, m.ts)
        if m.kind == MSG_CANCEL:
            if self.venue_dark[v]:
                return self._dark_cancel(b, m.child_id, m.ts, True)
            r = port.cancel(m.child_id, m.ts, True)
            if r != 0:
                port.clear()
                return self._report(m.child_id, RPT_CANCEL_REJECTED, 2 * ch.limit, 0, LIQ_NONE,
                                    r, m.ts)
            self._output(b, m.ts, 0, False)
            return self._after_lit(b, m.ts)
        # MSG_REPLACE
        r = _price_out_of_bounds(m.price)
        if r:
            return self._report(m.child_id, RPT_CANCEL_REJECTED, 2 * ch.limit, 0, LIQ_NONE, r,
                                m.ts)
        if self.venue_dark[v] or not self.venue_open[v]:
            return self._report(m.child_id, RPT_CANCEL_REJECTED, 2 * ch.limit, 0, LIQ_NONE,
                                ORDER_NOT_REPLACEABLE if self.venue_dark[v] else VENUE_CLOSED,
                                m.ts)
        r = port.replace(m.child_id, m.price, m.qty, m.ts, True)
        if r != 0:
            port.clear()
            return self._report(m.child_id, RPT_CANCEL_REJECTED, 2 * ch.limit, 0, LIQ_NONE, r,
                                m.ts)
        self._output(b, m.ts, 0, False)
        return self._after_lit(b, m.ts)

    cdef int _on_session(self, Msg* m) except -1:
        cdef int v = m.target
        cdef int32_t b
        cdef Py_ssize_t k
        cdef BookPort port
        # Open or closed, every instrument's NBBO may move (it spans the open venues).
        self._mark_all_changed()
        if m.kind == MSG_OPEN:
            self.venue_open[v] = 1
            return 0
        self.venue_open[v] = 0
        for b in range(self.n_books):
            if self.book_venue[b] != v:
                continue
            port = <BookPort>self.ports[b]
            if self.venue_dark[v]:
                self._dark_close(<DarkBook>self.darks[b], m.ts)
            port.expire_day(m.ts)
            self._output(b, m.ts, 0, False)
            if self.md_on[v] and not self.venue_dark[v]:
                # The close empties the book: its strategies see that too, late.
                self._md_record(b, m.ts)
        for k in range(self.n_instruments):
            self._update_watch(<int>k)
            if self.dark_watch[k]:
                self._dark_watch_instr(<int>k, m.ts)
        return 0

    cdef int _deliver(self, Msg* m) except -1:
        cdef Child* ch = &self.children[m.rec]
        cdef int v = self.book_venue[ch.book]
        cdef int64_t rtt
        cdef object cb
        if not ch.reported:
            # Round trip of the first answer: what the router can measure.
            ch.reported = 1
            rtt = m.ts - ch.submit_ts
            self.rtt_n[v] += 1
            self.rtt_sum[v] += rtt
            if self.rtt_n[v] == 1:
                self.rtt_ewma[v] = <double>rtt
            else:
                self.rtt_ewma[v] += RTT_ALPHA * (<double>rtt - self.rtt_ewma[v])
        self.n_reports += 1
        cb = self.owners[m.rec]
        if cb is None:
            return 0
        if ch.quiet_ack:             # the owner is a StrategyCore (set by submit_c)
            if m.report == RPT_ACCEPTED:
                return 0        # nothing to book (see StrategyCore.on_report_c)
            # A strategy's bookkeeping runs at C level, without a Report
            # object; only its own hooks (if it has any) cost a Python call.
            return (<StrategyCore>cb).on_report_c(m, v, ch.book)
        cb(Report.new(m, v, ch.book, ch.side))
        return 0

    # ------------------------------------------------------------ dark pools

    cdef int _dark_new(self, int32_t d, int64_t order_id, int side, int64_t limit, int64_t qty,
                       int64_t account, int ord_type, int tif, int flags, int stp, int64_t ts,
                       bint strategy, int64_t min_qty) except -1:
        cdef int instr = self.book_instr[d]
        cdef DarkBook dk = <DarkBook>self.darks[d]
        cdef BookPort port = <BookPort>self.ports[d]
        cdef int64_t mid2 = self.mid2_c(instr, False), lv
        cdef int reason = 0
        cdef DarkOrder o
        self._dark_refresh(d, mid2, ts)
        if ord_type == MARKET:
            limit = 0
            if tif != FOK:
                tif = IOC
        if strategy:
            # What its reports carry from the book (a market order has none).
            _known_child(self, order_id).limit = limit
        if flags & FLAG_POST_ONLY or (ord_type != LIMIT and ord_type != MARKET):
            # A midpoint order neither adds nor removes visible liquidity:
            # post-only has no meaning here and is refused, not ignored.
            reason = INVALID_ORD_TYPE
        elif limit < 0:
            reason = INVALID_PRICE
        elif qty <= 0:
            reason = INVALID_QTY
        elif side != BUY and side != SELL and side != SELL_SHORT:
            reason = INVALID_SIDE
        elif tif != DAY and tif != GTC and tif != IOC and tif != FOK:
            reason = INVALID_TIF
        elif stp > CANCEL_BOTH or stp < -1:  # (-1: the pool's default mode)
            # Refused here as the lit books refuse it: the minimum-quantity
            # check below would otherwise take it for a mode and cancel.
            reason = INVALID_STP_MODE
        elif min_qty < 0 or min_qty > qty:
            reason = INVALID_QTY
        elif min_qty > 0 and tif != IOC:
            # A minimum quantity is honoured for immediate orders (the
            # router's dark pings); on a resting order every later execution
            # would have to meet it too, which this pool does not model.
            reason = INVALID_TIF
        elif order_id <= 0:
            reason = INVALID_ORDER_ID
        elif dk.slot_of(order_id) >= 0 or port.leaves(order_id) > 0:
            # The book refuses an id it holds; so does the pool for one it
            # keeps outside the book (which the book cannot see).
            reason = DUPLICATE_ORDER_ID
        if reason != 0:
            if strategy:
                self._report(order_id, RPT_REJECTED, 2 * limit, 0, LIQ_NONE, reason, ts)
            return reason
        if min_qty > 0 and _eligible(side, limit, mid2) and \
                not port.can_fill(side == BUY, _DARK_PX, min_qty, account, stp):
            # Every eligible contra order rests at the one dark price; what
            # could fill at once is that level less the account's own orders
            # that self-trade prevention will not trade with. Short of the
            # minimum, nothing trades (all or at least min_qty, as venues'
            # MinQty on IOC).
            if strategy:
                self._report(order_id, RPT_ACCEPTED, 2 * limit, 0, LIQ_NONE, 0, ts)
                self._report(order_id, RPT_CANCELED, 2 * limit, 0, LIQ_NONE,
                             CXL_MIN_QTY_UNFILLABLE, ts)
            self._update_watch(instr)
            return 0
        if _eligible(side, limit, mid2):
            # Events kept for background orders too: one that self-trade
            # prevention cancels may be a tracked order (see ``_output``).
            port.add(order_id, side, _DARK_PX, qty, account, LIMIT, tif, 0, stp, ts, True)
            self._output(d, ts, mid2, False)
            if limit > 0 and (tif == DAY or tif == GTC):
                lv = port.leaves(order_id)
                if lv > 0:
                    memset(&o, 0, sizeof(DarkOrder))
                    o.order_id, o.account, o.limit, o.leaves = order_id, account, limit, lv
                    o.prio, o.stp, o.side, o.tif = self.dark_prio, stp, side, tif
                    self.dark_prio += 1
                    dk.track(dk.add_slot(&o))
        else:
            if strategy:
                self._report(order_id, RPT_ACCEPTED, 2 * limit, 0, LIQ_NONE, 0, ts)
            if tif == IOC or tif == FOK:
                if strategy:
                    self._report(order_id, RPT_CANCELED, 2 * limit, 0, LIQ_NONE,
                                 CXL_IOC_REMAINDER if tif == IOC else CXL_FOK_UNFILLABLE, ts)
            else:
                memset(&o, 0, sizeof(DarkOrder))
                o.order_id, o.account, o.limit, o.leaves = order_id, account, limit, qty
                o.prio, o.stp, o.side, o.tif = self.dark_prio, stp, side, tif
                self.dark_prio += 1
                dk.park(dk.add_slot(&o))
        self._update_watch(instr)
        return 0

    cdef int _dark_cancel(self, int32_t d, int64_t order_id, int64_t ts, bint strategy) except -1:
        cdef DarkBook dk = <DarkBook>self.darks[d]
        cdef BookPort port = <BookPort>self.ports[d]
        cdef int32_t s = dk.slot_of(order_id)
        cdef int r
        cdef int64_t limit
        if s >= 0 and dk.orders[s].heap <= DARK_PARKED_SELL:
            limit = dk.orders[s].limit
            dk.drop(s)
            if strategy:
                self._report(order_id, RPT_CANCELED, 2 * limit, 0, LIQ_NONE, CXL_USER, ts)
            self._update_watch(self.book_instr[d])
            return 0
        r = port.cancel(order_id, ts, strategy)
        if s >= 0:
            # A tracked order: out of the book now (or, were the two ever to
            # disagree, already out of it).
            dk.drop(s)
            self._update_watch(self.book_instr[d])
        if r != 0:
            port.clear()
            if strategy:
                self._report(order_id, RPT_CANCEL_REJECTED, 0, 0, LIQ_NONE, r, ts)
            return r
        self._output(d, ts, 0, False)
        return 0

    cdef int _dark_refresh(self, int32_t d, int64_t mid2, int64_t ts) except -1:
        """Bring a dark book up to date with the mid: pull out, let in, match.

        Only the orders the move flips are touched: the tracked orders whose
        limit the mid has left come off the tops of the tracked heaps, the
        parked ones it now allows off the tops of the parked heaps. Those
        re-enter the book in arrival order (``prio``), as they would from one
        list of every parked order in that order.
        """
        cdef DarkBook dk = <DarkBook>self.darks[d]
        cdef BookPort port
        cdef DarkHeap* h
        cdef DarkOrder* p
        cdef DarkOrder o
        cdef Py_ssize_t k, n_due
        cdef int which
        cdef int32_t s
        cdef int64_t lv
        if mid2 == dk.last_mid2:
            return 0
        dk.last_mid2 = mid2
        if dk.ids.used == 0:
            return 0
        port = <BookPort>self.ports[d]
        for which in range(DARK_TRACKED_BUY, DARK_TRACKED_SELL + 1):
            h = &dk.heaps[which]
            while h.n > 0:
                s = h.slots[0]
                p = &dk.orders[s]
                dk.visited += 1
                if _eligible(p.side, p.limit, mid2):
                    break
                dk.take(s)
                lv = port.leaves(p.order_id)
                if lv <= 0:
                    dk.free_slot(s)         # (gone from the book unseen: not expected)
                    continue
                port.cancel(p.order_id, ts, False)
                port.clear()
                p.leaves = lv
                dk.park(s)
        if mid2 <= 0:
            return 0
        n_due = 0
        for which in range(DARK_PARKED_BUY, DARK_PARKED_SELL + 1):
            h = &dk.heaps[which]
            while h.n > 0:
                s = h.slots[0]
                dk.visited += 1
                if not _eligible(dk.orders[s].side, dk.orders[s].limit, mid2):
                    break
                dk.take(s)
                dk.add_due(n_due, s)
                n_due += 1
        if n_due > 1:
            qsort(dk.due, n_due, sizeof(DarkDue), _due_cmp)
        for k in range(n_due):
            s = dk.due[k].slot
            o = dk.orders[s]
            port.add(o.order_id, o.side, _DARK_PX, o.leaves, o.account, LIMIT, o.tif, 0, o.stp,
                     ts, True)
            self._output(d, ts, mid2, True)
            lv = port.leaves(o.order_id) if o.limit > 0 else 0
            if lv > 0:
                dk.orders[s].leaves = lv
                dk.track(s)
            else:
                dk.free_slot(s)
        return 0

    cdef int _dark_close(self, DarkBook dk, int64_t ts) except -1:
        """The close: parked DAY orders expire, in arrival order (the book's
        own expire next, and ``_output`` drops the tracked ones it expires)."""
        cdef Py_ssize_t i, n = 0
        cdef int which
        cdef int32_t s
        cdef DarkOrder* p
        for which in range(DARK_PARKED_BUY, DARK_PARKED_SELL + 1):
            for i in range(dk.heaps[which].n):
                s = dk.heaps[which].slots[i]
                if dk.orders[s].tif == DAY:
                    dk.add_due(n, s)
                    n += 1
        if n > 1:
            qsort(dk.due, n, sizeof(DarkDue), _due_cmp)
        for i in range(n):
            s = dk.due[i].slot
            p = &dk.orders[s]
            if p.order_id > _CHILD_ID_BASE:
                self._report(p.order_id, RPT_EXPIRED, 2 * p.limit, 0, LIQ_NONE, CXL_END_OF_DAY,
                             ts)
            dk.drop(s)
        return 0

    cdef int _dark_watch_instr(self, int instr, int64_t ts) except -1:
        cdef int64_t mid2 = self.mid2_c(instr, False)
        cdef int32_t k, d
        cdef DarkBook dk
        for k in range(self.n_dark[instr]):
            d = self.dark_books[instr * self.n_venues + k]
            if not self.venue_open[self.book_venue[d]]:
                continue
            dk = <DarkBook>self.darks[d]
            if dk.ids.used:
                self._dark_refresh(d, mid2, ts)
        self._update_watch(instr)
        return 0

    cdef void _mark_changed(self, int instr) noexcept:
        if not self.changed[instr]:
            self.changed[instr] = 1
            self.changed_list[self.n_changed] = instr
            self.n_changed += 1

    cdef void _mark_all_changed(self) noexcept:
        cdef int i
        for i in range(self.n_instruments):
            self._mark_changed(i)

    cdef void _update_watch(self, int instr) noexcept:
        cdef int32_t k
        cdef DarkBook dk
        cdef uint8_t watch = 0
        for k in range(self.n_dark[instr]):
            dk = <DarkBook>self.darks[self.dark_books[instr * self.n_venues + k]]
            if dk.ids.used:
                watch = 1
        self.dark_watch[instr] = watch

    # ------------------------------------------------------------ recording

    cdef int _sample(self, int64_t upto) except -1:
        # A row is ts, then per instrument bid, ask, cum_qty and the 128-bit
        # cumulative notional as two words (low, high); ``samples()`` joins them.
        cdef Py_ssize_t width = 1 + _SAMPLE_WORDS * self.n_instruments, i
        cdef int64_t* row
        cdef int64_t bid, ask
        cdef i128 notional
        while self.next_sample <= upto:
            self.sample_buf = <int64_t*>_grow(self.sample_buf, &self.samples_cap,
                                           (self.n_samples + 1) * width, sizeof(int64_t))
            row = &self.sample_buf[self.n_samples * width]
            row[0] = self.next_sample
            for i in range(self.n_instruments):
                self._nbbo(<int>i, &bid, &ask, False)
                notional = self.cum_notional2[i]
                row[1 + _SAMPLE_WORDS * i] = bid
                row[2 + _SAMPLE_WORDS * i] = ask
                row[3 + _SAMPLE_WORDS * i] = self.cum_qty[i]
                row[4 + _SAMPLE_WORDS * i] = <int64_t>(<uint64_t>notional)
                row[5 + _SAMPLE_WORDS * i] = <int64_t>(notional >> 64)
            self.n_samples += 1
            self.next_sample += self.sample_ns
        return 0

    cdef int _tape_quote(self, int32_t b, int64_t ts) except -1:
        cdef BookPort port = <BookPort>self.ports[b]
        cdef int64_t bp = port.best_bid(), bq = port.best_bid_qty()
        cdef int64_t ap = port.best_ask(), aq = port.best_ask_qty()
        cdef int64_t* last = &self.last_bbo[4 * b]
        cdef Quote* q
        if bp == last[0] and bq == last[1] and ap == last[2] and aq == last[3]:
            return 0
        last[0], last[1], last[2], last[3] = bp, bq, ap, aq
        self.quotes = <Quote*>_grow(self.quotes, &self.quotes_cap, self.n_quotes + 1,
                                    sizeof(Quote))
        q = &self.quotes[self.n_quotes]
        self.n_quotes += 1
        memset(q, 0, sizeof(Quote))
        q.ts, q.bid_px, q.bid_qty, q.ask_px, q.ask_qty, q.book = ts, bp, bq, ap, aq, b
        return 0

    # ------------------------------------------------------------ Python API: orders

    cdef int64_t submit_c(self, int book, int side, int64_t qty, int64_t price, int ord_type,
                          int tif, int flags, int64_t account, int stp, int64_t min_qty,
                          object owner) except -1:
        cdef Child* ch
        cdef Msg m
        cdef int v = self.book_venue[book]
        cdef int32_t s
        _retire_due(self)
        if self.n_child_free:
            self.n_child_free -= 1
            s = self.child_free[self.n_child_free]
            self.owners[s] = owner
        else:
            if self.n_child_slots == self.children_cap:
                self.children = <Child*>_grow(self.children, &self.children_cap,
                                              self.n_child_slots + 1, sizeof(Child))
            s = <int32_t>self.n_child_slots
            self.n_child_slots += 1
            self.owners.append(owner)
        idmap_put(&self.child_index, _CHILD_ID_BASE + self.n_children + 1, s)
        ch = &self.children[s]
        memset(ch, 0, sizeof(Child))
        ch.submit_ts = self.now
        ch.qty = qty
        ch.limit = price
        ch.account = account
        ch.book = book
        ch.stp = stp
        ch.side = <uint8_t>side
        ch.state = CHILD_PENDING
        ch.slot = -1
        ch.quiet_ack = isinstance(owner, StrategyCore)
        ch.refs = 1                 # the order on its way
        self.n_children += 1
        memset(&m, 0, sizeof(Msg))
        m.ts = self._arrival(v)
        m.kind = MSG_NEW
        m.target = book
        m.rec = s
        m.child_id = _CHILD_ID_BASE + self.n_children
        m.price = price
        m.qty = qty
        m.side = <uint8_t>side
        m.ord_type = <uint8_t>ord_type
        m.tif = <uint8_t>tif
        m.flags = <uint8_t>flags
        m.order_qty = min_qty
        self._push(&m)
        self.cur_id, self.cur_rec = m.child_id, s
        return m.child_id

    cdef int cancel_c(self, int64_t child_id) except -1:
        cdef Child* ch
        cdef Msg m
        _retire_due(self)
        ch = self._child(child_id)
        memset(&m, 0, sizeof(Msg))
        m.ts = self._arrival(self.book_venue[ch.book])
        m.kind = MSG_CANCEL
        m.target = ch.book
        m.rec = <int32_t>(ch - self.children)
        m.child_id = child_id
        ch.refs += 1
        return self._push(&m)

    cdef int replace_c(self, int64_t child_id, int64_t price, int64_t qty) except -1:
        cdef Child* ch
        cdef Msg m
        _retire_due(self)
        ch = self._child(child_id)
        memset(&m, 0, sizeof(Msg))
        m.ts = self._arrival(self.book_venue[ch.book])
        m.kind = MSG_REPLACE
        m.target = ch.book
        m.rec = <int32_t>(ch - self.children)
        m.child_id = child_id
        m.price = price
        m.qty = qty
        ch.refs += 1
        return self._push(&m)

    cdef int set_timer_c(self, int64_t ts, object callback) except -1:
        cdef Msg m
        cdef int slot
        if self.n_free:
            self.n_free -= 1
            slot = self.free_slots[self.n_free]
            self.timer_cbs[slot] = callback
        else:
            slot = len(self.timer_cbs)
            self.timer_cbs.append(callback)
            # Every slot can come back free at once: keep room for all.
            self.free_slots = <int32_t*>_grow(self.free_slots, &self.free_cap, slot + 1,
                                              sizeof(int32_t))
        memset(&m, 0, sizeof(Msg))
        m.ts = ts if ts > self.now else self.now
        m.kind = MSG_TIMER
        m.target = slot
        return self._push(&m)

    # The Python API's numbers are Py_ssize_t (int64 here), converted with operator.index,
    # and its enums and indices pass small_arg: an int64_t or int parameter converts a
    # float through __int__, so submit(b, 1.7, 5.7, ...) sent a BUY of 5 lots in silence.
    def submit(self, book, side, Py_ssize_t qty, Py_ssize_t price=0, ord_type=LIMIT,
               tif=DAY, bint post_only=False, Py_ssize_t account=DEFAULT_ACCOUNT, stp=-1,
               on_report=None, Py_ssize_t min_qty=0):
        """Send a child order to a book; it arrives after the venue's latency.

        Parameters
        ----------
        book : int
            Book index (venue x instrument; see ``sim.market.Market.book_index``).
        side : Side
        qty : int
            Lots.
        price : int, optional
            Limit in ticks. For a dark pool, the midpoint order's limit (0: a
            pure peg that trades at any mid).
        ord_type : OrdType, optional
        tif : TimeInForce, optional
        post_only : bool, optional
        account : int, optional
            Compared for self-trade prevention against the book's other orders.
        stp : StpMode, optional
            -1: the book's default.
        on_report : callable, optional
            Called with each ``Report`` when it arrives back (a ``StrategyCore``
            is called at C level).
        min_qty : int, optional
            Minimum quantity (lots) of an IOC order at a dark pool: unless at
            least this much can fill at once, nothing fills (canceled with
            ``CXL_MIN_QTY_UNFILLABLE``). 0: none. A dark pool refuses it on
            a resting order (``INVALID_TIF``), a lit book refuses it
            (``INVALID_FIELD``).

        Returns
        -------
        int
            The child order id (above ``CHILD_ID_BASE``).

        Raises
        ------
        TypeError
            If a number, enum or index is not an integer (a float); nothing is sent.
        ValueError
            If ``side``, ``ord_type``, ``tif`` or ``stp`` is out of range (the message
            names it); nothing is sent.
        IndexError
            If there is no book ``book``.
        """
        cdef int book_c = small_arg(book, "book"), side_c = small_arg(side, "side")
        cdef int ord_type_c = small_arg(ord_type, "ord_type"), tif_c = small_arg(tif, "tif")
        cdef int stp_c = small_arg(stp, "stp")
        _check_op_fields(side_c, ord_type_c, tif_c, stp_c)
        if book_c < 0 or book_c >= self.n_books:
            raise IndexError(f"no book {book_c}")
        return self.submit_c(book_c, side_c, qty, price, ord_type_c, tif_c,
                             FLAG_POST_ONLY if post_only else 0, account, stp_c, min_qty, on_report)

    def cancel(self, Py_ssize_t child_id):
        """Send a cancel for a child order (answered by RPT_CANCELED or RPT_CANCEL_REJECTED)."""
        self.cancel_c(child_id)

    def replace(self, Py_ssize_t child_id, Py_ssize_t price, Py_ssize_t qty):
        """Send a cancel/replace: new limit (ticks) and new total quantity (lots).

        Priority is kept only for a same-price quantity decrease (book rules);
        dark pools refuse replaces (``ORDER_NOT_REPLACEABLE``).
        """
        self.replace_c(child_id, price, qty)

    # Indices and timestamps below pass small_arg and big_arg: an int or int64_t parameter
    # converted a float through __int__ (set_session(0.9, ...) set venue 0's hours).

    def set_timer(self, ts, callback not None):
        """Call ``callback()`` at ``ts`` (or now, if ``ts`` has passed)."""
        self.set_timer_c(big_arg(ts, "ts"), callback)

    def set_session(self, venue, open_ts, close_ts):
        """Trading hours of a venue: closed before ``open_ts`` and from ``close_ts``.

        At the close every resting DAY order of the venue expires; orders
        that arrive while it is closed are rejected (``VENUE_CLOSED``).

        Raises
        ------
        TypeError
            If an argument is not an integer, naming it.
        ValueError
            If ``close_ts`` is not after ``open_ts``, or an argument is beyond its C type
            (a C int for ``venue``, int64 for the times), naming it.
        IndexError
            If there is no such venue.
        """
        cdef Msg m
        cdef int v = small_arg(venue, "venue")
        cdef int64_t open_c = big_arg(open_ts, "open_ts"), close_c = big_arg(close_ts, "close_ts")
        if v < 0 or v >= self.n_venues:
            raise IndexError(f"no venue {v}")
        if close_c <= open_c:
            raise ValueError("close_ts must be after open_ts")
        self.venue_open[v] = 1 if open_c <= self.now < close_c else 0
        self._mark_all_changed()
        memset(&m, 0, sizeof(Msg))
        m.target = v
        if open_c > self.now:
            m.ts, m.kind = open_c, MSG_OPEN
            self._push(&m)
        if close_c > self.now:
            m.ts, m.kind = close_c, MSG_CLOSE
            self._push(&m)

    def external(self, book, op, Py_ssize_t order_id, side=BUY, Py_ssize_t price=0,
                 Py_ssize_t qty=0, ord_type=LIMIT, tif=GTC, Py_ssize_t account=0,
                 stp=-1):
        """Apply one background operation now, as flow would (replay uses this).

        ``order_id`` must be below ``CHILD_ID_BASE``. Returns the book's code.
        Arguments are checked as ``submit``'s: a float is a ``TypeError``, an
        ``op``, ``side``, ``ord_type``, ``tif`` or ``stp`` beyond its byte in
        ``OP_DTYPE`` a ``ValueError`` naming it (it used to wrap: side 257 was BUY).
        """
        cdef Op o
        cdef int book_c = small_arg(book, "book"), op_c = small_arg(op, "op")
        cdef int side_c = small_arg(side, "side"), ord_type_c = small_arg(ord_type, "ord_type")
        cdef int tif_c = small_arg(tif, "tif"), stp_c = small_arg(stp, "stp")
        _check_op_fields(side_c, ord_type_c, tif_c, stp_c)
        if not 0 <= op_c <= 255:
            raise ValueError(f"op {op_c} is out of range (0 to 255)")
        if book_c < 0 or book_c >= self.n_books:
            raise IndexError(f"no book {book_c}")
        if not 0 < order_id < _CHILD_ID_BASE:
            raise ValueError("background order ids are positive and below CHILD_ID_BASE")
        if self.running:
            raise RuntimeError("external() called from inside the loop")
        memset(&o, 0, sizeof(Op))
        o.op, o.side, o.ord_type, o.tif = op_c, side_c, ord_type_c, tif_c
        o.stp = STP_DEFAULT if stp_c < 0 else stp_c
        o.order_id, o.account, o.price, o.qty, o.ts = order_id, account, price, qty, self.now
        if self.now >= self.next_sample:
            self._sample(self.now)
        self.batch_gen += 1
        r = self._bg_op(&o, book_c)
        if self.pending_ack:
            self._flush_ack()
        return r

    # ------------------------------------------------------------ Python API: market data

    # ``seen=True`` reads what a strategy sees: each lit book's top as it was
    # its venue's market-data latency ago (``md_latency``); live without one.

    def bbo(self, book, bint seen=False):
        """``(bid_px, bid_qty, ask_px, ask_qty)`` of a book, live or ``seen``.

        A dark book shows zeros.
        """
        cdef int64_t top[4]
        cdef int b = small_arg(book, "book")
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        if self.venue_dark[self.book_venue[b]]:
            return (0, 0, 0, 0)
        self._top(b, seen, top)
        return (top[0], top[1], top[2], top[3])

    def depth(self, book, n=10, bint seen=False):
        """L2 ``(bids, asks)`` (``DEPTH_DTYPE``); a dark book shows none.

        ``n`` levels per side at most, any int64 as for ``OrderBook.depth``.
        ``seen`` on a venue with market-data latency: the ladder as it was
        that latency ago, at most the venue's ``md_depth`` levels per side
        (the ones recorded).
        """
        cdef int b = small_arg(book, "book")
        cdef int64_t levels = big_arg(n, "n")
        cdef const MdQuote* q
        cdef const MdLevel* lv
        cdef MdRing* r
        cdef Py_ssize_t k, nb, na
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        if self.venue_dark[self.book_venue[b]]:
            return np.zeros(0, dtype=DEPTH_DTYPE), np.zeros(0, dtype=DEPTH_DTYPE)
        if not (seen and self.md_on[self.book_venue[b]]):
            return (<BookPort>self.ports[b]).book.depth(levels)
        r = &self.md[b]
        q = self._md_seen(b)
        k = r.depth
        lv = r.lv + (q - r.q) * 2 * k
        nb = min(max(levels, 0), q.n_bids)
        na = min(max(levels, 0), q.n_asks)
        return _md_levels(lv, nb), _md_levels(lv + k, na)

    def nbbo(self, instrument, bint seen=False):
        """Best bid and ask (ticks) over the open lit venues, live or ``seen``; 0 where empty."""
        cdef int64_t bid, ask
        cdef int i = small_arg(instrument, "instrument")
        if i < 0 or i >= self.n_instruments:
            raise IndexError(f"no instrument {i}")
        self._nbbo(i, &bid, &ask, seen)
        return bid, ask

    def mid2(self, instrument, bint seen=False):
        """Twice the NBBO mid in ticks (half-ticks), live or ``seen``.

        0 if one-sided, locked or crossed.
        """
        cdef int i = small_arg(instrument, "instrument")
        if i < 0 or i >= self.n_instruments:
            raise IndexError(f"no instrument {i}")
        return self.mid2_c(i, seen)

    def md_pending(self, book):
        """States of a book recorded and not yet superseded for its strategies.

        1 when its venue has no market-data latency or nothing is in flight;
        tests use it to see the ring drain.
        """
        cdef int b = small_arg(book, "book")
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        if not self.md_on[self.book_venue[b]]:
            return 1
        self._md_seen(b)
        return self.md[b].hi - self.md[b].lo

    def md_ring(self, book):
        """``(held, capacity)`` of a book's market-data ring, read as is.

        ``held`` counts the states it keeps (the one seen at its last drop
        plus those in flight), ``capacity`` its room in states; unlike
        ``md_pending`` it drops nothing first. ``(0, 0)`` when its venue has
        no market-data latency. Tests use it to check the ring stays
        bounded when no strategy reads the book.
        """
        cdef int b = small_arg(book, "book")
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        if not self.md_on[self.book_venue[b]]:
            return (0, 0)
        return (self.md[b].hi - self.md[b].lo, self.md[b].cap)

    def is_open(self, venue):
        """Is the venue in its trading hours now?"""
        cdef int v = small_arg(venue, "venue")
        if v < 0 or v >= self.n_venues:
            raise IndexError(f"no venue {v}")
        return bool(self.venue_open[v])

    def fee(self, book, liquidity, price_x2, qty):
        """Fee in fee units (1e-4 tick x lot) a book's venue charges for a fill."""
        cdef int b = small_arg(book, "book"), liq = small_arg(liquidity, "liquidity")
        cdef int64_t px2 = big_arg(price_x2, "price_x2"), lots = big_arg(qty, "qty")
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        return self.fee_c(b, liq, px2, lots)

    def latency(self, venue):
        """Measured round trip to ``venue`` (submit to first report).

        Returns
        -------
        tuple
            ``(ewma_ns, mean_ns, count)``; 0.0 means not measured yet.
        """
        cdef int v = small_arg(venue, "venue")
        if v < 0 or v >= self.n_venues:
            raise IndexError(f"no venue {v}")
        n = self.rtt_n[v]
        return (self.rtt_ewma[v], self.rtt_sum[v] / n if n else 0.0, n)

    def take_changed(self):
        """Instruments whose live NBBO or traded volume may have moved since the last call.

        Returns a list of instrument indices, each once, and starts a new
        list: an instrument is listed when one of its lit books changed
        (any order added, canceled, replaced, filled or expired), when it
        traded on any venue, dark ones included (``market_volume``), and
        every instrument when a venue opened or closed (the NBBO spans the
        open venues). The first call lists every instrument. One reader
        only: a second would take the first's news (the engine's tick is
        the reader; see ``Pipeline.tick``).
        """
        cdef Py_ssize_t k
        cdef int32_t i
        out = [None] * self.n_changed
        for k in range(self.n_changed):
            i = self.changed_list[k]
            self.changed[i] = 0
            out[k] = i
        self.n_changed = 0
        return out

    def market_volume(self, instrument, bint seen=False):
        """Cumulative traded ``(qty, notional_x2)`` of an instrument on all venues.

        ``seen``: each venue's trades as a strategy sees them (those of a
        venue with market-data latency once that latency has passed).
        """
        cdef int i = small_arg(instrument, "instrument")
        cdef int64_t qty
        cdef i128 n2
        if i < 0 or i >= self.n_instruments:
            raise IndexError(f"no instrument {i}")
        if not seen:
            return self.cum_qty[i], _py_int128(self.cum_notional2[i])
        self._seen_volume(i, &qty, &n2)
        return qty, _py_int128(n2)

    def child(self, child_id):
        """The venue-side state of a child order as a dict.

        Raises
        ------
        KeyError
            For an id never sent, or one finished more than ``FINISHED_KEEP_NS``
            ago (its record is freed).
        """
        cdef int64_t cid = big_arg(child_id, "child_id")
        cdef Child* ch
        _retire_due(self)
        ch = self._child(cid)
        return {"child_id": cid, "book": ch.book, "venue": self.book_venue[ch.book],
                "side": ch.side, "qty": ch.qty, "cum_qty": ch.cum, "limit": ch.limit,
                "submit_ts": ch.submit_ts,
                "state": ("pending", "live", "done")[ch.state]}

    def book(self, book):
        """The book object behind a book index (for inspection in tests)."""
        cdef int b = small_arg(book, "book")
        if b < 0 or b >= self.n_books:
            raise IndexError(f"no book {b}")
        return (<BookPort>self.ports[b]).book

    def dark_waiting(self, book):
        """``(parked, tracked)`` order counts of a dark book.

        Parked: waiting outside the book for the mid; tracked: resting in the
        book with a limit the mid may leave (pure pegs in the book are neither).
        """
        cdef DarkBook dk = self.darks[small_arg(book, "book")]
        return dk.n_parked(), dk.n_tracked()

    def dark_book(self, book):
        """The ``DarkBook`` of a dark book (tests: ``check()``, ``waiting()``, ``visited``)."""
        return self.darks[small_arg(book, "book")]

    def samples(self):
        """NBBO and cumulative volume every ``sample_ns``.

        Returns
        -------
        numpy.ndarray or SampleTable
            int64, shape ``(n, 1 + 4 * n_instruments)``: ``ts`` then, per
            instrument, ``bid, ask, cum_qty, cum_notional_x2``. When a
            cumulative notional has passed 2^63 - 1 (a fine price and lot
            grid), a ``SampleTable`` indexed the same way (``[:, k]``) whose
            notional column is exact Python ints.
        """
        cdef Py_ssize_t ni = self.n_instruments, i, k
        cdef Py_ssize_t words = 1 + _SAMPLE_WORDS * ni
        raw = np.empty((self.n_samples, words), dtype=np.int64)
        if self.n_samples:
            memcpy(cnp.PyArray_DATA(raw), self.sample_buf,
                   self.n_samples * words * sizeof(int64_t))
        out = np.empty((self.n_samples, 1 + 4 * ni), dtype=np.int64)
        out[:, 0] = raw[:, 0]
        wide = {}
        for i in range(ni):
            k = 1 + _SAMPLE_WORDS * i
            out[:, 1 + 4 * i:5 + 4 * i] = raw[:, k:k + 4]
            low, high = raw[:, k + 3], raw[:, k + 4]
            if not np.array_equal(high, low >> 63):        # not just the sign of the low word
                wide[4 + 4 * i] = np.array(
                    [h * 18446744073709551616 + (l & 0xFFFFFFFFFFFFFFFF)
                     for h, l in zip(high.tolist(), low.tolist())], dtype=object)
        return SampleTable(out, wide) if wide else out

    def tape(self):
        """Recorded ``(trades, quotes)`` (``TRADE_DTYPE``, ``QUOTE_DTYPE``) when ``record_tape``."""
        trades = np.empty(self.n_trades, dtype=TRADE_DTYPE)
        quotes = np.empty(self.n_quotes, dtype=QUOTE_DTYPE)
        if self.n_trades:
            memcpy(cnp.PyArray_DATA(trades), self.trades, self.n_trades * sizeof(Trade))
        if self.n_quotes:
            memcpy(cnp.PyArray_DATA(quotes), self.quotes, self.n_quotes * sizeof(Quote))
        return trades, quotes

    @property
    def busy(self):
        """True while ``run_until`` is running (i.e. inside a report or timer callback)."""
        return self.running

    @property
    def pending_messages(self):
        """Messages in flight (orders, reports, timers, sessions)."""
        return self.heap_n

    @property
    def n_child_orders(self):
        """Child orders submitted so far."""
        return self.n_children

    @property
    def n_child_records(self):
        """Child records held: the children working, and those finished less than
        ``FINISHED_KEEP_NS`` ago or still named by a message in flight."""
        return self.n_child_slots - self.n_child_free

    @property
    def child_records_capacity(self):
        """Child records the loop has room for (it grows with the most held at once)."""
        return self.children_cap


# ---------------------------------------------------------------- strategy base

cdef inline bint _has_instance_dict(object obj) noexcept:
    return Py_TYPE(obj).tp_dictoffset != 0


@cython.final
cdef class PeriodicTimer:
    """The timer behind ``StrategyCore.wake_every`` (made by it, not directly)."""

    def __init__(self):
        raise TypeError("PeriodicTimer objects are made by StrategyCore.wake_every")


cdef class StrategyCore:
    """C half of an execution strategy: sending child orders and booking reports.

    ``sim.strategies.ExecutionStrategy`` subclasses this; strategies
    subclass that. Reports for its child orders are booked here at C level
    (filled quantity, notional, fees, working orders, fills) without making
    Python objects, and the Python hooks ``on_fill(report)``,
    ``on_child_done(report)``, ``on_cancel_rejected(report)`` and
    ``on_timer()`` are called only when the subclass defines them, so a
    report costs no Python call unless the strategy wants to see it.

    A compiled strategy (a Cython ``cdef class`` deriving from this one, see
    ``ext/simstrat.pyx``) overrides the C hooks ``on_timer_c()``,
    ``on_fill_c(rec)`` and ``on_child_done_c(rec)`` and acts with
    ``send_c``/``cancel_c``/``replace_c``/``wake_at_c``: the whole decision
    then stays in C.

    ``working`` maps each child's id to its open quantity from ``send``
    until a fill, cancel, expiry or reject says otherwise (acks change
    nothing there); it is rebuilt from the C records when read after a
    change, so treat it as read-only. ``fills`` lists the fills as
    ``Report`` objects, made when first read (the same objects every time);
    ``children`` the child ids in send order.

    Parameters
    ----------
    loop : MarketLoop
    instrument : int
        Instrument index; ``send`` takes a venue index and trades this
        instrument there.
    side : Side
    qty : int
        Parent quantity (lots).
    account : int
        Account of the child orders.
    """

    def __cinit__(self, *args, **kwargs):
        self.child_ids = NULL
        self.fill_recs = NULL
        self.w_ids = self.w_leaves = NULL
        self.n_child_ids = self.child_ids_cap = self.n_children_listed = 0
        self.n_fill_recs = self.fill_recs_cap = self.n_fills_listed = 0
        self.w_n = self.w_live = self.w_cap = 0

    def __dealloc__(self):
        PyMem_Free(self.child_ids)
        PyMem_Free(self.fill_recs)
        PyMem_Free(self.w_ids)
        PyMem_Free(self.w_leaves)

    def __init__(self, MarketLoop loop not None, instrument, side, Py_ssize_t qty,
                 Py_ssize_t account=DEFAULT_ACCOUNT):
        # small_arg and Py_ssize_t refuse a float (side=1.7 was BUY; qty=5.7 was 5 lots).
        instrument, side = small_arg(instrument, "instrument"), small_arg(side, "side")
        if not 0 <= instrument < loop.n_instruments:
            raise IndexError(f"no instrument {instrument}")
        if _has_instance_dict(self):
            # CPython 3.11: a Python subclass of an extension type made by the
            # type's own tp_new gets a split-keys instance dict on its first
            # attribute store, and the interpreter's attribute cache for such
            # a dict misses every time (LOAD_ATTR_WITH_HINT reads the combined
            # layout), so every ``self.x`` in a strategy took the slow path.
            # A plain (combined) dict keeps those lookups cached: about 900
            # fewer instructions per strategy order in bench_sim. Copied, in
            # case a subclass set attributes before calling this.
            object.__setattr__(self, "__dict__", dict(object.__getattribute__(self, "__dict__")))
        self.loop = loop
        self.instrument = instrument
        self.n_instruments = loop.n_instruments
        self.side = side
        self.qty = qty
        self.account = account
        self.filled = self.notional_x2 = self.fees = 0
        self.finished_at = -1
        self._fills = []
        self._children = []
        self._working = {}
        self.working_dirty = False
        self.ticker = None
        self.started = self.stopped = False
        cls = type(self)
        self.hook_fill = cls.on_fill is not StrategyCore.on_fill
        self.hook_done = cls.on_child_done is not StrategyCore.on_child_done
        self._on_timer = self.on_timer      # bound once, not looked up per timer

    # ------------------------------------------------------------ state

    @property
    def remaining(self):
        """Lots still to fill."""
        return self.qty - self.filled

    @property
    def open_qty(self):
        """Lots in child orders not yet finished (as last reported)."""
        cdef int64_t total = 0
        cdef Py_ssize_t k
        for k in range(self.w_n):
            if self.w_ids[k]:
                total += self.w_leaves[k]
        return total

    @property
    def done(self):
        """The parent is filled."""
        return self.filled >= self.qty

    @property
    def finished_ts(self):
        """When the last fill reached the strategy (None while not filled)."""
        return None if self.finished_at < 0 else self.finished_at

    @property
    def working(self):
        """``{child_id: leaves_qty}`` of the working child orders, in send order (read-only)."""
        cdef dict d
        cdef Py_ssize_t k
        if self.working_dirty:
            d = self._working
            d.clear()
            for k in range(self.w_n):
                if self.w_ids[k]:
                    d[self.w_ids[k]] = self.w_leaves[k]
            self.working_dirty = False
        return self._working

    @property
    def n_working(self):
        """Number of working child orders (as last reported), without building ``working``."""
        return self.w_live

    @property
    def fills(self):
        """The fills so far, as ``Report`` objects (one list, extended as fills come)."""
        cdef Py_ssize_t k
        for k in range(self.n_fills_listed, self.n_fill_recs):
            self._fills.append(Report.from_rec(&self.fill_recs[k]))
        self.n_fills_listed = self.n_fill_recs
        return self._fills

    @property
    def children(self):
        """Ids of every child order sent, in send order (one list, extended as orders go)."""
        cdef Py_ssize_t k
        for k in range(self.n_children_listed, self.n_child_ids):
            self._children.append(self.child_ids[k])
        self.n_children_listed = self.n_child_ids
        return self._children

    # ------------------------------------------------------------ actions

    def send(self, venue, Py_ssize_t qty, Py_ssize_t price=0, ord_type=LIMIT, tif=DAY,
             bint post_only=False):
        """Send a child order on venue ``venue`` (index); returns its id.

        A float (``qty=5.7``, ``tif=1.5``) is a ``TypeError``, never truncated; an
        index or enum beyond a C int a ``ValueError`` naming it.
        """
        return self.send_c(small_arg(venue, "venue"), qty, price, small_arg(ord_type, "ord_type"),
                           small_arg(tif, "tif"), FLAG_POST_ONLY if post_only else 0)

    def cancel(self, Py_ssize_t child_id):
        """Ask the venue to cancel a child order."""
        self.loop.cancel_c(child_id)

    def cancel_all(self):
        """Cancel every working child order."""
        cdef list ids = []
        cdef Py_ssize_t k
        for k in range(self.w_n):
            if self.w_ids[k]:
                ids.append(self.w_ids[k])
        for child_id in ids:
            self.loop.cancel_c(child_id)

    def replace(self, Py_ssize_t child_id, Py_ssize_t price, Py_ssize_t qty):
        """Ask the venue to change a child order's limit and total quantity."""
        self.loop.replace_c(child_id, price, qty)

    def wake_at(self, ts):
        """Have ``on_timer()`` called at ``ts`` (skipped once stopped or filled).

        A float ``ts`` is a ``TypeError`` naming it, never truncated; one beyond int64 a
        ``ValueError``.
        """
        self.loop.set_timer_c(big_arg(ts, "ts"), self)

    def wake_every(self, period, first=None):
        """Have ``on_timer()`` called every ``period`` ns, from ``first`` (default: now + period).

        Re-armed at C level before each call, until ``stop_waking()``, the
        parent is filled or it stops. One periodic timer per strategy: a new
        call replaces the previous one. ``period`` and ``first`` are integers (a float
        is a ``TypeError`` naming it, never truncated).
        """
        cdef PeriodicTimer pt
        cdef int64_t period_c = big_arg(period, "period")
        cdef int64_t first_c = 0 if first is None else big_arg(first, "first")
        if period_c <= 0:
            raise ValueError("period must be positive")
        if self.ticker is not None:
            self.ticker.active = False
        pt = PeriodicTimer.__new__(PeriodicTimer)
        pt.owner, pt.period, pt.active = self, period_c, True
        self.ticker = pt
        self.loop.set_timer_c(self.loop.now + period_c if first is None else first_c, pt)

    def stop_waking(self):
        """Stop the periodic timer of ``wake_every``."""
        if self.ticker is not None:
            self.ticker.active = False
            self.ticker = None

    # ------------------------------------------------------------ actions (C)

    cdef int64_t send_c(self, int venue, int64_t qty, int64_t price, int ord_type, int tif,
                        int flags) except -1:
        """``send`` for compiled strategies: no Python object made.

        Refuses (``ValueError``) a child that, with the working ones and
        what has filled, would take the parent past its quantity: no
        strategy, compiled or Python, can overfill its parent.
        """
        cdef int book = venue * self.n_instruments + self.instrument
        cdef int64_t child_id, committed = self.filled
        cdef int slot
        cdef Py_ssize_t k
        if venue < 0 or book >= self.loop.n_books:
            raise IndexError(f"no venue {venue}")
        for k in range(self.w_n):
            if self.w_ids[k]:
                committed += self.w_leaves[k]
        if qty > self.qty - committed:
            raise ValueError(f"a child of {qty} lots would overfill the parent: {self.qty} lots, "
                             f"{self.filled} filled and {committed - self.filled} working")
        child_id = self.loop.submit_c(book, self.side, qty, price, ord_type, tif, flags,
                                      self.account, -1, 0, self)
        if self.n_child_ids == self.child_ids_cap:
            self.child_ids = <int64_t*>_grow(self.child_ids, &self.child_ids_cap,
                                             self.n_child_ids + 1, sizeof(int64_t))
        self.child_ids[self.n_child_ids] = child_id
        self.n_child_ids += 1
        slot = self._w_add(child_id, qty)
        _known_child(self.loop, child_id).slot = slot    # (after: _w_add moves slots)
        return child_id

    cdef int cancel_c(self, int64_t child_id) except -1:
        return self.loop.cancel_c(child_id)

    cdef int replace_c(self, int64_t child_id, int64_t price, int64_t qty) except -1:
        return self.loop.replace_c(child_id, price, qty)

    cdef int wake_at_c(self, int64_t ts) except -1:
        return self.loop.set_timer_c(ts, self)

    cdef int64_t leaves_c(self, int64_t child_id) noexcept:
        """Open quantity of a child as last reported; 0 if it is not working."""
        cdef Child* ch = _child_rec(self.loop, child_id) if child_id > _CHILD_ID_BASE else NULL
        if ch == NULL:
            return 0        # (never sent, or finished long ago)
        return self.w_leaves[ch.slot] if ch.slot >= 0 else 0

    # ------------------------------------------------------------ market data (C)
    # The same reads as ``self.market`` gives a Python strategy (``bbo``,
    # ``nbbo``, ``mid_x2`` of ``Market.seen``), so a compiled strategy and
    # its Python twin decide on the same quotes under market-data latency.

    cdef int seen_top_c(self, int venue, int64_t* out) except -1:
        """``out[0:4]`` = bid, bid qty, ask, ask qty of ``venue``'s book of this
        parent's instrument, as seen; zeros for a dark pool."""
        cdef int book = venue * self.n_instruments + self.instrument
        if venue < 0 or book >= self.loop.n_books:
            raise IndexError(f"no venue {venue}")
        if self.loop.venue_dark[venue]:
            out[0] = out[1] = out[2] = out[3] = 0
            return 0
        return self.loop._top(book, True, out)

    cdef int seen_nbbo_c(self, int64_t* bid, int64_t* ask) except -1:
        """Best bid and ask (ticks; 0 where empty) over the open lit venues, each as seen."""
        return self.loop._nbbo(self.instrument, bid, ask, True)

    cdef int64_t seen_mid2_c(self) except -1:
        """Twice the seen NBBO mid (half-ticks); 0 when one-sided, locked or crossed."""
        return self.loop.mid2_c(self.instrument, True)

    # ------------------------------------------------------------ hooks (override in Python)

    def on_timer(self):
        """A timer set with ``wake_at`` fired."""

    def on_fill(self, report):
        """A child order traded."""

    def on_child_done(self, report):
        """A child order finished (filled, canceled, expired or rejected)."""

    def on_cancel_rejected(self, report):
        """The venue refused a cancel or replace of a working child (``RPT_CANCEL_REJECTED``).

        The child is as it was: ``report.price_x2`` is its limit at the venue
        (twice it; 0 at a dark pool), ``report.reason`` why. Called only when
        a subclass defines it, and not once the parent has stopped.
        """

    def on_finished(self, int64_t ts):
        """The parent just got filled (``ts``: when the last fill arrived)."""

    # ------------------------------------------------------------ hooks (override in Cython)

    cdef int on_timer_c(self) except -1:
        """A timer fired (the parent is neither stopped nor filled): calls ``on_timer()``."""
        self._on_timer()
        return 0

    cdef int on_fill_c(self, const ReportRec* r) except -1:
        """A fill was booked: calls ``on_fill(report)`` if the class defines it."""
        if self.hook_fill:
            self.on_fill(self._report_obj(r))
        return 0

    cdef int on_child_done_c(self, const ReportRec* r) except -1:
        """A child finished: calls ``on_child_done(report)`` if the class defines it."""
        if self.hook_done:
            self.on_child_done(self._report_obj(r))
        return 0

    # ------------------------------------------------------------ booking

    def book_report(self, Report report not None):
        """Book a report as the loop does (for callers outside the loop)."""
        cdef Msg m
        memset(&m, 0, sizeof(Msg))
        m.ts, m.venue_ts, m.child_id = report.recv_ts, report.ts, report.child_id
        m.price, m.qty, m.order_qty = report.price_x2, report.last_qty, report.order_qty
        m.leaves, m.cum, m.fee = report.leaves_qty, report.cum_qty, report.fee
        m.reason, m.report, m.liquidity = report.reason, report.kind, report.liquidity
        m.side = report.side
        m.rec = <int32_t>(self.loop._child(report.child_id) - self.loop.children)
        self.on_report_c(&m, report.venue, report.book)

    cdef object _report_obj(self, const ReportRec* r):
        """The ``Report`` of a record: the one in ``fills`` for the newest fill."""
        if self.n_fill_recs and r == &self.fill_recs[self.n_fill_recs - 1]:
            return self.fills[self.n_fill_recs - 1]
        return Report.from_rec(r)

    cdef int _w_add(self, int64_t child_id, int64_t leaves) except -1:
        cdef Py_ssize_t k, j = 0
        if self.w_n == self.w_cap:
            if self.w_live < self.w_n // 2:
                # Mostly freed slots: close the gaps (send order kept).
                for k in range(self.w_n):
                    if self.w_ids[k]:
                        self.w_ids[j], self.w_leaves[j] = self.w_ids[k], self.w_leaves[k]
                        # (a working child has a record: its final report is not in yet)
                        _known_child(self.loop, self.w_ids[j]).slot = <int32_t>j
                        j += 1
                self.w_n = j
            else:
                k = self.w_cap
                self.w_ids = <int64_t*>_grow(self.w_ids, &k, self.w_n + 1, sizeof(int64_t))
                k = self.w_cap
                self.w_leaves = <int64_t*>_grow(self.w_leaves, &k, self.w_n + 1,
                                                sizeof(int64_t))
                self.w_cap = k
        self.w_ids[self.w_n] = child_id
        self.w_leaves[self.w_n] = leaves
        self.w_n += 1
        self.w_live += 1
        self.working_dirty = True
        return <int>(self.w_n - 1)

    cdef void _w_remove(self, Child* ch) noexcept:
        if ch.slot < 0:
            return
        self.w_ids[ch.slot] = 0
        ch.slot = -1
        self.w_live -= 1
        while self.w_n > 0 and self.w_ids[self.w_n - 1] == 0:
            self.w_n -= 1
        self.working_dirty = True

    cdef int on_report_c(self, const Msg* m, int venue, int book) except -1:
        cdef int kind = m.report
        cdef Child* ch
        cdef ReportRec* rec
        cdef ReportRec tmp
        cdef int64_t filled, notional_x2, fees
        if kind == RPT_ACCEPTED:
            # An ack changes nothing here: ``send`` already booked the order
            # quantity as working, and an ack carries leaves_qty == qty.
            return 0
        if kind == RPT_CANCEL_REJECTED:
            # Nothing to book: the child is as it was (a refused replace left
            # its price and quantity). A strategy that keeps what it asked for
            # (a reprice) hears of it, if its class defines the hook; the type
            # is looked up here rather than cached: refusals are rare.
            if not self.stopped and \
                    type(self).on_cancel_rejected is not StrategyCore.on_cancel_rejected:
                _report_rec(&tmp, m, venue, book)
                self.on_cancel_rejected(Report.from_rec(&tmp))
            return 0
        ch = &self.loop.children[m.rec]
        if kind == RPT_FILL:
            # The parent's sums are int64 (fields compiled strategies share):
            # refuse to go on rather than wrap.
            if (_add_overflow_i64(self.filled, m.qty, &filled)
                    or _mul_overflow_i64(m.price, m.qty, &notional_x2)
                    or _add_overflow_i64(self.notional_x2, notional_x2, &notional_x2)
                    or _add_overflow_i64(self.fees, m.fee, &fees)):
                raise OverflowError(
                    f"a parent's filled notional ({self.notional_x2} + {m.price} x {m.qty} "
                    f"half-tick x lots) or fees ({self.fees} + {m.fee} fee units) passed "
                    f"2^63 - 1; use a coarser tick_size or lot_size for this instrument")
            self.filled, self.notional_x2, self.fees = filled, notional_x2, fees
            if self.n_fill_recs == self.fill_recs_cap:
                self.fill_recs = <ReportRec*>_grow(self.fill_recs, &self.fill_recs_cap,
                                                   self.n_fill_recs + 1, sizeof(ReportRec))
            rec = &self.fill_recs[self.n_fill_recs]
            self.n_fill_recs += 1
        else:
            rec = &tmp
        _report_rec(rec, m, venue, book)
        if kind == RPT_FILL:
            if m.leaves:
                if ch.slot >= 0:
                    self.w_leaves[ch.slot] = m.leaves
                    self.working_dirty = True
                else:
                    ch.slot = self._w_add(m.child_id, m.leaves)
            else:
                self._w_remove(ch)
            if self.filled >= self.qty and self.finished_at < 0:
                self.finished_at = m.ts
                self.on_finished(m.ts)
            if not self.stopped:
                # Re-read: on_finished may have run Python code.
                rec = &self.fill_recs[self.n_fill_recs - 1]
                self.on_fill_c(rec)
                if m.leaves == 0:
                    self.on_child_done_c(&self.fill_recs[self.n_fill_recs - 1])
        elif kind == RPT_CANCELED or kind == RPT_EXPIRED or kind == RPT_REJECTED:
            self._w_remove(ch)
            if not self.stopped:
                self.on_child_done_c(rec)
        elif kind == RPT_REPLACED:
            if ch.slot >= 0:
                self.w_leaves[ch.slot] = m.leaves
                self.working_dirty = True
        return 0


assert TRADE_DTYPE.itemsize == sizeof(Trade), "TRADE_DTYPE does not match struct Trade"
assert QUOTE_DTYPE.itemsize == sizeof(Quote), "QUOTE_DTYPE does not match struct Quote"
