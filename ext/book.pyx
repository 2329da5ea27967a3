# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, binding=False
"""L3 limit order book with price-time priority matching.

Role in the pipeline: the matching engine of every simulated venue, and the
engine's own book of record. All state is C data: resting orders live in one
pool of ``Order`` structs (a free list reuses slots as orders leave), an
open-addressing hash maps order ids to pool slots (O(1) cancel), and each side
is an array of price levels sorted so the best price is last (the top of the
book, where most inserts and removals happen, moves the fewest entries). Each
level is a FIFO doubly linked list through the pool, which is what makes queue
position honest: a new order waits behind everything already at its price.

Output (fills and order events) accumulates in C buffers until drained, so a
caller pays one Python round trip per batch of work, not per fill.

Rules, as documented in docs/book.md:

* LIMIT and MARKET orders; time in force DAY, GTC, IOC, FOK. A MARKET order
  never rests (any time in force other than FOK behaves as IOC).
* Post-only orders that would cross are rejected (``POST_ONLY_WOULD_CROSS``),
  never slid: a reject is explicit, a slide silently changes the price.
* Replace keeps priority only when the price is unchanged and the quantity does
  not increase; any other replace moves the order to the back of its (new)
  level and may trade at once if the new price crosses.
* Self-trade prevention compares accounts: CANCEL_NEWEST cancels the incoming
  order, CANCEL_OLDEST cancels the resting one and keeps matching,
  CANCEL_BOTH cancels both. STP_NONE lets an account trade with itself.
* FOK fills in full or not at all; STP is honoured in the feasibility check
  (an own order that would cancel the FOK makes it unfillable).
"""
cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy, memmove, memset
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t, uint64_t, INT64_MAX

import numpy as np
cimport numpy as cnp

from ext.idmap cimport idmap_del, idmap_free, idmap_get, idmap_init, idmap_put
from ext.intarg cimport big_arg, small_arg
from ext.types cimport (
    Side, BUY, SELL, SELL_SHORT, OrdType, MARKET, LIMIT, DAY, GTC, IOC, FOK,
    STP_NONE, CANCEL_NEWEST, CANCEL_OLDEST, CANCEL_BOTH,
    EV_ACCEPTED, EV_REJECTED, EV_CANCELED, EV_EXPIRED, EV_REPLACED,
    CXL_USER, CXL_IOC_REMAINDER, CXL_FOK_UNFILLABLE, CXL_SELF_TRADE,
    CXL_END_OF_DAY, CXL_MASS_CANCEL,
    REJ_NONE, UNKNOWN_ORDER, DUPLICATE_ORDER_ID, INVALID_QTY, INVALID_PRICE,
    INVALID_SIDE, INVALID_ORD_TYPE, INVALID_TIF, POST_ONLY_WOULD_CROSS,
    REPLACE_QTY_NOT_ABOVE_FILLED, INVALID_STP_MODE, INVALID_ORDER_ID, VALUE_OUT_OF_RANGE,
)

cnp.import_array()

# ---------------------------------------------------------------- numpy views
# Field order and padding mirror the structs in book.pxd byte for byte; the
# assertions at the bottom of this module fail the import if they ever drift.
FILL_DTYPE = np.dtype([
    ("seq", "<i8"), ("ts", "<i8"), ("maker_id", "<i8"), ("taker_id", "<i8"),
    ("maker_account", "<i8"), ("taker_account", "<i8"), ("price", "<i8"),
    ("qty", "<i8"), ("maker_leaves", "<i8"), ("taker_leaves", "<i8"),
    ("aggressor_side", "u1"), ("_pad", "V7"),
])
EVENT_DTYPE = np.dtype([
    ("seq", "<i8"), ("ts", "<i8"), ("order_id", "<i8"), ("account", "<i8"),
    ("price", "<i8"), ("qty", "<i8"), ("leaves_qty", "<i8"), ("cum_qty", "<i8"),
    ("kind", "u1"), ("side", "u1"), ("reason", "<u2"), ("_pad", "V4"),
])
OP_DTYPE = np.dtype([
    ("op", "u1"), ("side", "u1"), ("ord_type", "u1"), ("tif", "u1"),
    ("flags", "u1"), ("stp", "u1"), ("_pad", "V2"),
    ("order_id", "<i8"), ("account", "<i8"), ("price", "<i8"), ("qty", "<i8"),
    ("ts", "<i8"),
])
DEPTH_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8"), ("count", "<i4")])
SNAPSHOT_DTYPE = np.dtype([
    ("order_id", "<i8"), ("account", "<i8"), ("side", "u1"), ("tif", "u1"),
    ("flags", "u1"), ("stp", "u1"), ("price", "<i8"), ("qty", "<i8"),
    ("leaves_qty", "<i8"), ("ts", "<i8"),
])

# ---------------------------------------------------------------- helpers


cdef inline int64_t _key(int64_t price, bint is_bid) noexcept nogil:
    # Both sides sort ascending by key with the best price last: bids by
    # price, asks by negated price.
    return price if is_bid else -price


cdef inline int32_t _lower_bound(LevelArray* a, int64_t key, bint is_bid) noexcept nogil:
    """First index whose level key is >= ``key``."""
    cdef int32_t lo = 0, hi = a.n, mid
    # Almost all activity is within a few levels of the top (the end of the
    # array): walk down from there first, and bisect only deeper prices.
    cdef int32_t stop = hi - 8 if hi > 8 else 0
    while hi > stop and _key(a.data[hi - 1].price, is_bid) >= key:
        hi -= 1
    if hi > stop or hi == 0:
        return hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if _key(a.data[mid].price, is_bid) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t _level_qty(LevelArray* a, int64_t price, bint is_bid) noexcept nogil:
    """Total resting quantity at ``price`` on one side (0 without a level there)."""
    cdef int32_t li = _lower_bound(a, _key(price, is_bid), is_bid)
    return a.data[li].qty if li < a.n and a.data[li].price == price else 0


cdef inline bint _valid_side(int side) noexcept nogil:
    return side == BUY or side == SELL or side == SELL_SHORT


cdef inline bint _crosses(bint is_buy, int64_t limit, int64_t level_price) noexcept nogil:
    return level_price <= limit if is_buy else level_price >= limit


@cython.final
cdef class OrderBook:
    """An L3 order book for one instrument, with price-time priority matching.

    Prices are integer ticks and quantities integer lots (see
    ``ext.instrument.Instrument`` for the decimal boundary).

    Parameters
    ----------
    symbol : str, optional
        Instrument identifier, for the caller's bookkeeping.
    capacity : int, optional
        Initial number of resting-order slots; the pool grows by doubling.
    stp : StpMode, optional
        Self-trade prevention applied when an order does not name its own.

    Attributes
    ----------
    record_events : bool
        When False, order events are not kept (sequence numbers still
        advance, fills are always kept). True by default.

    Notes
    -----
    Per-call methods (``add``, ``cancel``, ``replace``) return a
    ``RejectReason`` code (0 when accepted) and append fills and order events
    to internal buffers; ``drain_fills`` and ``drain_events`` hand them over
    as numpy structured arrays (``FILL_DTYPE``, ``EVENT_DTYPE``). ``apply``
    runs a whole numpy array of operations in one call.

    Examples
    --------
    >>> from ext.types import Side
    >>> book = OrderBook("AAPL")
    >>> book.add(1, Side.SELL, 10050, 100, account=7)
    0
    >>> book.add(2, Side.BUY, 10050, 40, account=8)
    0
    >>> fills = book.drain_fills()
    >>> int(fills[0]["qty"]), int(fills[0]["maker_id"]), book.bbo()
    (40, 1, (0, 0, 10050, 60))
    """

    def __cinit__(self, str symbol="", Py_ssize_t capacity=1024, stp=CANCEL_NEWEST):
        cdef Py_ssize_t slots = 16
        cdef int stp_mode = small_arg(stp, "stp")
        if capacity < 1:
            capacity = 1
        if capacity > 1 << 30:
            raise ValueError("capacity is above 2**30 resting orders")
        self.symbol = symbol
        self.seq = 0
        self.record_events = True
        self.pool = NULL
        self.ids.keys = NULL
        self.ids.vals = NULL
        self.fills = NULL
        self.events = NULL
        self.bids.data = NULL
        self.asks.data = NULL
        if stp_mode < STP_NONE or stp_mode > CANCEL_BOTH:
            raise ValueError(f"unknown self-trade prevention mode {stp_mode}")
        self.default_stp = stp_mode
        self.pool_cap = 0
        self.free_head = NIL
        self.n_orders = 0
        self._grow_pool(<int32_t>capacity)
        while slots < 2 * capacity:
            slots <<= 1
        idmap_init(&self.ids, slots)
        self._alloc_levels(&self.bids, 64)
        self._alloc_levels(&self.asks, 64)
        self.fills_cap = 1024
        self.fills = <Fill*>PyMem_Malloc(self.fills_cap * sizeof(Fill))
        self.n_fills = 0
        self.events_cap = 1024
        self.events = <Event*>PyMem_Malloc(self.events_cap * sizeof(Event))
        self.n_events = 0
        if self.fills == NULL or self.events == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.pool)
        idmap_free(&self.ids)
        PyMem_Free(self.bids.data)
        PyMem_Free(self.asks.data)
        PyMem_Free(self.fills)
        PyMem_Free(self.events)

    # ------------------------------------------------------------ memory

    cdef int _grow_pool(self, int32_t new_cap) except -1:
        cdef Order* pool = <Order*>PyMem_Realloc(self.pool, new_cap * sizeof(Order))
        cdef int32_t i
        if pool == NULL:
            raise MemoryError()
        self.pool = pool
        # Thread the new slots onto the free list, lowest index first.
        for i in range(new_cap - 1, self.pool_cap - 1, -1):
            pool[i].next = self.free_head
            self.free_head = i
        self.pool_cap = new_cap
        return 0

    cdef int _alloc_levels(self, LevelArray* a, int32_t cap) except -1:
        a.data = <Level*>PyMem_Malloc(cap * sizeof(Level))
        if a.data == NULL:
            raise MemoryError()
        a.n = 0
        a.cap = cap
        return 0

    cdef int _grow_levels(self, LevelArray* a) except -1:
        cdef Level* data = <Level*>PyMem_Realloc(a.data, 2 * a.cap * sizeof(Level))
        if data == NULL:
            raise MemoryError()
        a.data = data
        a.cap *= 2
        return 0

    # ------------------------------------------------------------ output

    cdef inline int _event(self, int kind, int64_t order_id, int64_t account, int side,
                    int64_t price, int64_t qty, int64_t leaves, int64_t cum,
                    int reason, int64_t ts) except -1:
        cdef Event* e
        self.seq += 1
        if not self.record_events:
            return 0
        if self.n_events == self.events_cap:
            e = <Event*>PyMem_Realloc(self.events, 2 * self.events_cap * sizeof(Event))
            if e == NULL:
                raise MemoryError()
            self.events = e
            self.events_cap *= 2
        e = &self.events[self.n_events]
        self.n_events += 1
        e.seq = self.seq
        e.ts = ts
        e.order_id = order_id
        e.account = account
        e.price = price
        e.qty = qty
        e.leaves_qty = leaves
        e.cum_qty = cum
        e.kind = <uint8_t>kind
        e.side = <uint8_t>side
        e.reason = <uint16_t>reason
        memset(e._pad, 0, sizeof(e._pad))
        return 0

    cdef inline int _fill(self, Order* maker, int64_t taker_id, int64_t taker_account,
                   int taker_side, int64_t qty, int64_t taker_leaves,
                   int64_t ts) except -1:
        cdef Fill* f
        if self.n_fills == self.fills_cap:
            f = <Fill*>PyMem_Realloc(self.fills, 2 * self.fills_cap * sizeof(Fill))
            if f == NULL:
                raise MemoryError()
            self.fills = f
            self.fills_cap *= 2
        self.seq += 1
        f = &self.fills[self.n_fills]
        self.n_fills += 1
        f.seq = self.seq
        f.ts = ts
        f.maker_id = maker.id
        f.taker_id = taker_id
        f.maker_account = maker.account
        f.taker_account = taker_account
        f.price = maker.price
        f.qty = qty
        f.maker_leaves = maker.leaves
        f.taker_leaves = taker_leaves
        f.aggressor_side = <uint8_t>taker_side
        # Zero the padding so equal fills are equal bytes (determinism checks).
        memset(f._pad, 0, sizeof(f._pad))
        return 0

    # ------------------------------------------------------------ resting orders

    cdef int32_t _level_index(self, bint is_bid, int64_t price) noexcept nogil:
        """Index of the level at ``price`` on one side (it must exist)."""
        cdef LevelArray* a = &self.bids if is_bid else &self.asks
        return _lower_bound(a, _key(price, is_bid), is_bid)

    cdef inline void _unlink(self, Level* lvl, int32_t oi) noexcept nogil:
        """Take one order out of its level's queue, the id map and the pool.

        The level itself stays even when it empties; the caller removes it,
        because only the caller knows whether level indices may move now.
        """
        cdef Order* o = &self.pool[oi]
        if o.prev != NIL:
            self.pool[o.prev].next = o.next
        else:
            lvl.head = o.next
        if o.next != NIL:
            self.pool[o.next].prev = o.prev
        else:
            lvl.tail = o.prev
        lvl.count -= 1
        lvl.qty -= o.leaves
        idmap_del(&self.ids, o.id)
        o.next = self.free_head
        self.free_head = oi
        self.n_orders -= 1

    cdef void _remove_level(self, LevelArray* a, int32_t li) noexcept nogil:
        if li < a.n - 1:
            memmove(&a.data[li], &a.data[li + 1], (a.n - 1 - li) * sizeof(Level))
        a.n -= 1

    cdef inline int _rest(self, int64_t order_id, int64_t account, bint is_buy, int side,
                   int64_t price, int64_t qty, int64_t leaves, int tif, int flags,
                   int stp, int64_t ts) except -1:
        """Put an order at the back of the queue at its price."""
        cdef LevelArray* a = &self.bids if is_buy else &self.asks
        cdef int64_t key = _key(price, is_buy)
        cdef int32_t li, oi
        cdef Level* lvl
        cdef Order* o
        if self.free_head == NIL:
            if self.pool_cap >= (1 << 30):
                raise MemoryError("order book is full")
            self._grow_pool(self.pool_cap * 2)
        oi = self.free_head
        idmap_put(&self.ids, order_id, oi)
        self.free_head = self.pool[oi].next
        li = _lower_bound(a, key, is_buy)
        if li == a.n or a.data[li].price != price:
            if a.n == a.cap:
                self._grow_levels(a)
            if li < a.n:
                memmove(&a.data[li + 1], &a.data[li], (a.n - li) * sizeof(Level))
            a.n += 1
            lvl = &a.data[li]
            lvl.price = price
            lvl.qty = 0
            lvl.head = NIL
            lvl.tail = NIL
            lvl.count = 0
        else:
            lvl = &a.data[li]
        o = &self.pool[oi]
        o.id = order_id
        o.account = account
        o.price = price
        o.qty = qty
        o.leaves = leaves
        o.ts = ts
        o.side = <uint8_t>side
        o.tif = <uint8_t>tif
        o.flags = <uint8_t>flags
        o.stp = <uint8_t>stp
        o.next = NIL
        o.prev = lvl.tail
        if lvl.tail != NIL:
            self.pool[lvl.tail].next = oi
        else:
            lvl.head = oi
        lvl.tail = oi
        lvl.count += 1
        lvl.qty += leaves
        self.n_orders += 1
        return 0

    # ------------------------------------------------------------ matching

    cdef bint _fok_fillable(self, bint is_buy, bint is_market, int64_t limit,
                            int64_t qty, int64_t account, int stp) noexcept nogil:
        cdef LevelArray* opp = &self.asks if is_buy else &self.bids
        cdef int32_t li = opp.n - 1
        cdef int32_t oi
        cdef int64_t avail = 0
        cdef Order* o
        while li >= 0:
            if not is_market and not _crosses(is_buy, limit, opp.data[li].price):
                return False
            # avail < qty throughout (it returns on reaching qty), so
            # comparing against ``qty - avail`` before adding cannot overflow.
            if stp == STP_NONE:
                if opp.data[li].qty >= qty - avail:
                    return True
                avail += opp.data[li].qty
            else:
                oi = opp.data[li].head
                while oi != NIL:
                    o = &self.pool[oi]
                    if o.account == account:
                        if stp != CANCEL_OLDEST:
                            # STP would cancel the FOK before it is filled.
                            return avail >= qty
                    else:
                        if o.leaves >= qty - avail:
                            return True
                        avail += o.leaves
                    oi = o.next
            if avail >= qty:
                return True
            li -= 1
        return avail >= qty

    cdef int64_t _match(self, int64_t taker_id, int64_t account, bint is_buy, int side,
                        bint is_market, int64_t limit, int64_t qty, int64_t leaves,
                        int stp, int64_t ts, bint* stp_canceled) except -1:
        """Trade ``leaves`` of an incoming order against the opposite side.

        Returns the quantity left; sets ``stp_canceled`` when self-trade
        prevention canceled the incoming order (its event is already out).
        """
        cdef LevelArray* opp = &self.asks if is_buy else &self.bids
        cdef Level* lvl
        cdef Order* o
        cdef int32_t oi, nxt
        cdef int64_t q
        stp_canceled[0] = False
        while leaves > 0 and opp.n > 0:
            lvl = &opp.data[opp.n - 1]
            if not is_market and not _crosses(is_buy, limit, lvl.price):
                break
            oi = lvl.head
            while oi != NIL and leaves > 0:
                o = &self.pool[oi]
                nxt = o.next
                if stp != STP_NONE and o.account == account:
                    if stp == CANCEL_OLDEST or stp == CANCEL_BOTH:
                        self._event(EV_CANCELED, o.id, o.account, o.side, o.price,
                                    o.qty, 0, o.qty - o.leaves, CXL_SELF_TRADE, ts)
                        self._unlink(lvl, oi)
                    if stp == CANCEL_NEWEST or stp == CANCEL_BOTH:
                        self._event(EV_CANCELED, taker_id, account, side, limit,
                                    qty, 0, qty - leaves, CXL_SELF_TRADE, ts)
                        stp_canceled[0] = True
                        if lvl.count == 0:
                            opp.n -= 1
                        return leaves
                    oi = nxt
                    continue
                q = o.leaves if o.leaves < leaves else leaves
                o.leaves -= q
                lvl.qty -= q
                leaves -= q
                self._fill(o, taker_id, account, side, q, leaves, ts)
                if o.leaves == 0:
                    self._unlink(lvl, oi)
                oi = nxt
            if lvl.count == 0:
                opp.n -= 1
        return leaves

    # ------------------------------------------------------------ C API

    cdef int add_c(self, int64_t order_id, int side, int64_t price, int64_t qty,
                   int64_t account, int ord_type, int tif, int flags, int stp,
                   int64_t ts) except -1:
        cdef int reason = REJ_NONE
        cdef bint is_buy = side == BUY
        cdef bint is_market = ord_type == MARKET
        cdef bint stp_canceled = False
        cdef int64_t leaves
        cdef LevelArray* opp
        if stp == -1:
            stp = self.default_stp
        if order_id <= 0:
            reason = INVALID_ORDER_ID
        elif idmap_get(&self.ids, order_id) != NIL:
            reason = DUPLICATE_ORDER_ID
        elif not _valid_side(side):
            reason = INVALID_SIDE
        elif qty <= 0:
            reason = INVALID_QTY
        elif ord_type != LIMIT and ord_type != MARKET:
            reason = INVALID_ORD_TYPE
        elif flags & ~FLAG_POST_ONLY:
            # (Only the batch API can send other bits.) Stored, an unknown bit would
            # make the book's own snapshot one that from_snapshot refuses.
            reason = INVALID_ORD_TYPE
        elif not is_market and price <= 0:
            reason = INVALID_PRICE
        elif tif != DAY and tif != GTC and tif != IOC and tif != FOK:
            reason = INVALID_TIF
        elif stp < STP_NONE or stp > CANCEL_BOTH:
            reason = INVALID_STP_MODE
        elif flags & FLAG_POST_ONLY:
            if is_market:
                reason = INVALID_ORD_TYPE
            elif tif == IOC or tif == FOK:
                reason = INVALID_TIF
            else:
                opp = &self.asks if is_buy else &self.bids
                if opp.n > 0 and _crosses(is_buy, price, opp.data[opp.n - 1].price):
                    reason = POST_ONLY_WOULD_CROSS
        if (reason == REJ_NONE and not is_market and (tif == DAY or tif == GTC)
                and qty > INT64_MAX - _level_qty(&self.bids if is_buy else &self.asks, price,
                                                 is_buy)):
            # Resting in full would overflow its level's total (depth, bbo).
            reason = VALUE_OUT_OF_RANGE
        if reason != REJ_NONE:
            self._event(EV_REJECTED, order_id, account, side, price, qty, 0, 0, reason, ts)
            return reason
        if is_market:
            price = 0
        self._event(EV_ACCEPTED, order_id, account, side, price, qty, qty, 0, 0, ts)
        if tif == FOK and not self._fok_fillable(is_buy, is_market, price, qty, account, stp):
            self._event(EV_CANCELED, order_id, account, side, price, qty, 0, 0,
                        CXL_FOK_UNFILLABLE, ts)
            return REJ_NONE
        leaves = self._match(order_id, account, is_buy, side, is_market, price, qty, qty,
                             stp, ts, &stp_canceled)
        if stp_canceled or leaves == 0:
            return REJ_NONE
        if is_market or tif == IOC or tif == FOK:
            self._event(EV_CANCELED, order_id, account, side, price, qty, 0, qty - leaves,
                        CXL_IOC_REMAINDER, ts)
        else:
            self._rest(order_id, account, is_buy, side, price, qty, leaves, tif, flags, stp, ts)
        return REJ_NONE

    cdef int cancel_c(self, int64_t order_id, int reason, int64_t ts) except -1:
        cdef int32_t oi = idmap_get(&self.ids, order_id) if order_id > 0 else NIL
        cdef Order* o
        cdef bint is_bid
        cdef LevelArray* a
        cdef int32_t li
        if oi == NIL:
            return UNKNOWN_ORDER
        o = &self.pool[oi]
        is_bid = o.side == BUY
        a = &self.bids if is_bid else &self.asks
        self._event(EV_EXPIRED if reason == CXL_END_OF_DAY else EV_CANCELED,
                    o.id, o.account, o.side, o.price, o.qty, 0, o.qty - o.leaves, reason, ts)
        li = self._level_index(is_bid, o.price)
        self._unlink(&a.data[li], oi)
        if a.data[li].count == 0:
            self._remove_level(a, li)
        return REJ_NONE

    cdef int replace_c(self, int64_t order_id, int64_t price, int64_t qty,
                       int64_t ts) except -1:
        cdef int32_t oi = idmap_get(&self.ids, order_id) if order_id > 0 else NIL
        cdef Order* o
        cdef bint is_bid, stp_canceled = False
        cdef LevelArray* a
        cdef LevelArray* opp
        cdef int32_t li
        cdef int64_t cum, leaves, account
        cdef int side, tif, flags, stp
        if oi == NIL:
            return UNKNOWN_ORDER
        if price <= 0:
            return INVALID_PRICE
        if qty <= 0:
            return INVALID_QTY
        o = &self.pool[oi]
        cum = o.qty - o.leaves
        if qty <= cum:
            return REPLACE_QTY_NOT_ABOVE_FILLED
        is_bid = o.side == BUY
        a = &self.bids if is_bid else &self.asks
        li = self._level_index(is_bid, o.price)
        if price == o.price and qty <= o.qty:
            # Amend down in place: the order keeps its place in the queue.
            a.data[li].qty -= o.qty - qty
            o.leaves -= o.qty - qty
            o.qty = qty
            self._event(EV_REPLACED, o.id, o.account, o.side, price, qty, o.leaves, cum, 0, ts)
            return REJ_NONE
        if o.flags & FLAG_POST_ONLY:
            opp = &self.bids if not is_bid else &self.asks
            if opp.n > 0 and _crosses(is_bid, price, opp.data[opp.n - 1].price):
                return POST_ONLY_WOULD_CROSS
        # Resting in full at the new price must not overflow that level's
        # total (the order's own leaves leave it first when the price stays).
        if qty - cum > INT64_MAX - (_level_qty(a, price, is_bid)
                                    - (o.leaves if price == o.price else 0)):
            return VALUE_OUT_OF_RANGE
        # Any other change loses priority: leave the queue, re-enter as new.
        account, side, tif, flags, stp = o.account, o.side, o.tif, o.flags, o.stp
        leaves = qty - cum
        self._unlink(&a.data[li], oi)
        if a.data[li].count == 0:
            self._remove_level(a, li)
        self._event(EV_REPLACED, order_id, account, side, price, qty, leaves, cum, 0, ts)
        leaves = self._match(order_id, account, is_bid, side, False, price, qty, leaves,
                             stp, ts, &stp_canceled)
        if not stp_canceled and leaves > 0:
            self._rest(order_id, account, is_bid, side, price, qty, leaves, tif, flags, stp, ts)
        return REJ_NONE

    cdef int apply_c(self, const Op* ops, Py_ssize_t n, uint16_t* results) except -1:
        cdef Py_ssize_t i
        cdef int r
        cdef const Op* op
        for i in range(n):
            op = &ops[i]
            if op.op == OP_ADD:
                r = self.add_c(op.order_id, op.side, op.price, op.qty, op.account,
                               op.ord_type, op.tif, op.flags,
                               -1 if op.stp == STP_DEFAULT else op.stp, op.ts)
            elif op.op == OP_CANCEL:
                r = self.cancel_c(op.order_id, CXL_USER, op.ts)
            elif op.op == OP_REPLACE:
                r = self.replace_c(op.order_id, op.price, op.qty, op.ts)
            else:
                r = INVALID_ORD_TYPE
            if results != NULL:
                results[i] = <uint16_t>r
        return 0

    cdef int64_t best_bid_c(self) noexcept:
        return self.bids.data[self.bids.n - 1].price if self.bids.n else 0

    cdef int64_t best_ask_c(self) noexcept:
        return self.asks.data[self.asks.n - 1].price if self.asks.n else 0

    cdef int64_t best_bid_qty_c(self) noexcept:
        return self.bids.data[self.bids.n - 1].qty if self.bids.n else 0

    cdef int64_t best_ask_qty_c(self) noexcept:
        return self.asks.data[self.asks.n - 1].qty if self.asks.n else 0

    cdef Order* find_c(self, int64_t order_id) noexcept:
        cdef int32_t oi = idmap_get(&self.ids, order_id) if order_id > 0 else NIL
        return NULL if oi == NIL else &self.pool[oi]

    # ------------------------------------------------------------ Python API: orders
    # The 64-bit numbers are Py_ssize_t (int64 here), which Cython converts with
    # operator.index: a float or a Decimal raises TypeError, where an int64_t
    # parameter would truncate it (100.9 ticks resting at 100). Enums pass small_arg, which
    # refuses a float the same way and names the argument it refuses.

    def add(self, Py_ssize_t order_id, side, Py_ssize_t price, Py_ssize_t qty,
            Py_ssize_t account=0, ord_type=LIMIT, tif=GTC, bint post_only=False, stp=-1,
            Py_ssize_t ts=0):
        """Submit a new order; it matches at once and any remainder rests.

        Parameters
        ----------
        order_id : int
            Positive id, unique among the book's live orders.
        side : Side
            BUY, SELL or SELL_SHORT (the last two rest on the ask side).
        price : int
            Limit price in ticks; ignored for MARKET orders.
        qty : int
            Quantity in lots, positive.
        account : int, optional
            Owner, compared for self-trade prevention.
        ord_type : OrdType, optional
        tif : TimeInForce, optional
        post_only : bool, optional
            Reject instead of trading on arrival.
        stp : StpMode, optional
            Self-trade prevention for this order; -1 uses the book's default.
        ts : int, optional
            Caller's timestamp (ns), stamped on the resulting fills and events.

        Returns
        -------
        int
            ``RejectReason``: 0 if accepted, otherwise why not (the book is
            unchanged apart from a REJECTED event).

        Raises
        ------
        TypeError
            If a number is not an integer (a float, a Decimal); nothing changed.
        OverflowError
            If a 64-bit number is beyond int64; nothing changed.
        ValueError
            If an enum (``side``, ``ord_type``, ``tif``, ``stp``) is beyond a C int, naming
            it; nothing changed. Within a C int an unknown value is a reject code.
        """
        return self.add_c(order_id, small_arg(side, "side"), price, qty, account,
                          small_arg(ord_type, "ord_type"), small_arg(tif, "tif"),
                          FLAG_POST_ONLY if post_only else 0, small_arg(stp, "stp"), ts)

    def cancel(self, Py_ssize_t order_id, Py_ssize_t ts=0):
        """Cancel a resting order. Returns 0, or ``UNKNOWN_ORDER`` (``TypeError`` for an
        id that is not an integer)."""
        return self.cancel_c(order_id, CXL_USER, ts)

    def replace(self, Py_ssize_t order_id, Py_ssize_t price, Py_ssize_t qty, Py_ssize_t ts=0):
        """Change a resting order's price and/or total quantity.

        ``qty`` is the new order quantity including what has already filled
        (FIX OrderQty). Priority is kept only when the price is unchanged and
        ``qty`` does not increase.

        Returns
        -------
        int
            0, or ``UNKNOWN_ORDER``, ``INVALID_PRICE``, ``INVALID_QTY``,
            ``REPLACE_QTY_NOT_ABOVE_FILLED``, ``POST_ONLY_WOULD_CROSS``,
            ``VALUE_OUT_OF_RANGE``; on a reject the order is unchanged
            (``TypeError`` for a number that is not an integer).
        """
        return self.replace_c(order_id, price, qty, ts)

    def expire_day(self, Py_ssize_t ts=0):
        """Expire every resting DAY order (end of session). Returns the count."""
        return self._cancel_where(False, 0, DAY, CXL_END_OF_DAY, ts)

    def cancel_account(self, Py_ssize_t account, Py_ssize_t ts=0):
        """Cancel every resting order of one account. Returns the count."""
        return self._cancel_where(True, account, -1, CXL_MASS_CANCEL, ts)

    cdef Py_ssize_t _cancel_where(self, bint by_account, int64_t account, int tif, int reason,
                                  int64_t ts) except -1:
        # ``by_account`` says whether ``account`` filters: accounts are any int64
        # (negative ones included), so no account value can mean "every account".
        cdef list ids = []
        cdef int32_t li, oi
        cdef int s
        cdef LevelArray* a
        cdef Order* o
        for s in range(2):
            a = &self.bids if s == 0 else &self.asks
            for li in range(a.n):
                oi = a.data[li].head
                while oi != NIL:
                    o = &self.pool[oi]
                    if (not by_account or o.account == account) and (tif < 0 or o.tif == tif):
                        ids.append(o.id)
                    oi = o.next
        for order_id in ids:
            self.cancel_c(order_id, reason, ts)
        return len(ids)

    # ------------------------------------------------------------ Python API: output

    def drain_fills(self):
        """Return the fills since the last drain (``FILL_DTYPE``) and forget them."""
        cdef cnp.ndarray out = np.empty(self.n_fills, dtype=FILL_DTYPE)
        if self.n_fills:
            memcpy(cnp.PyArray_DATA(out), self.fills, self.n_fills * sizeof(Fill))
        self.n_fills = 0
        return out

    def drain_events(self):
        """Return the order events since the last drain (``EVENT_DTYPE``) and forget them."""
        cdef cnp.ndarray out = np.empty(self.n_events, dtype=EVENT_DTYPE)
        if self.n_events:
            memcpy(cnp.PyArray_DATA(out), self.events, self.n_events * sizeof(Event))
        self.n_events = 0
        return out

    @property
    def pending_fills(self):
        """Number of fills waiting to be drained."""
        return self.n_fills

    @property
    def pending_events(self):
        """Number of order events waiting to be drained."""
        return self.n_events

    def apply(self, cnp.ndarray ops not None, results=None, bint keep_events=False):
        """Run a batch of operations; return every fill not yet drained.

        Parameters
        ----------
        ops : numpy.ndarray
            C-contiguous array of ``OP_DTYPE``: ``op`` is OP_ADD, OP_CANCEL or
            OP_REPLACE; ``flags`` holds FLAG_POST_ONLY; ``stp`` STP_DEFAULT (255)
            means the book's default.
        results : numpy.ndarray of uint16, optional
            If given (same length as ``ops``), receives each operation's
            ``RejectReason`` code.
        keep_events : bool, optional
            Keep the batch's order events for ``drain_events``; by default
            they are not recorded (sequence numbers still advance).

        Returns
        -------
        numpy.ndarray
            Fills (``FILL_DTYPE``), as ``drain_fills`` would return them.
        """
        cdef uint16_t* res = NULL
        cdef cnp.ndarray res_arr
        cdef bint recording = self.record_events
        if ops.dtype != OP_DTYPE:
            raise TypeError(f"ops must have dtype OP_DTYPE, not {ops.dtype}")
        if ops.ndim != 1 or not ops.flags.c_contiguous:
            # (of a 2-D array only its first dimension's count would run)
            raise ValueError("ops must be a one-dimensional C-contiguous array")
        if results is not None:
            res_arr = results
            if res_arr.dtype != np.uint16 or not res_arr.flags.c_contiguous \
                    or not res_arr.flags.writeable or res_arr.shape[0] != ops.shape[0]:
                raise ValueError("results must be a writable contiguous uint16 array as long as ops")
            res = <uint16_t*>cnp.PyArray_DATA(res_arr)
        self.record_events = keep_events
        try:
            self.apply_c(<const Op*>cnp.PyArray_DATA(ops), ops.shape[0], res)
        finally:
            self.record_events = recording
        return self.drain_fills()

    # ------------------------------------------------------------ Python API: market data

    def bbo(self):
        """Best bid and offer as ``(bid_px, bid_qty, ask_px, ask_qty)``; 0 where a side is empty."""
        return (self.best_bid_c(), self.best_bid_qty_c(), self.best_ask_c(), self.best_ask_qty_c())

    @property
    def best_bid(self):
        """Best bid price in ticks, or None."""
        return self.bids.data[self.bids.n - 1].price if self.bids.n else None

    @property
    def best_ask(self):
        """Best ask price in ticks, or None."""
        return self.asks.data[self.asks.n - 1].price if self.asks.n else None

    cdef Py_ssize_t depth_c(self, int side_index, int64_t* px, int64_t* qty,
                            Py_ssize_t n) noexcept:
        """Up to ``n`` levels of one side (0: bids, 1: asks), best first, into ``px``/``qty``;
        returns how many. What ``depth()`` gives, without building arrays."""
        cdef LevelArray* a = &self.bids if side_index == 0 else &self.asks
        cdef Py_ssize_t k = min(max(n, 0), a.n), i
        for i in range(k):
            px[i] = a.data[a.n - 1 - i].price
            qty[i] = a.data[a.n - 1 - i].qty
        return k

    def depth(self, n=10):
        """L2 depth: ``(bids, asks)`` as ``DEPTH_DTYPE`` arrays, best level first.

        ``n`` levels per side at most (any int64: a large ``n`` is every level). A float
        ``n`` raises ``TypeError`` and one beyond int64 ``ValueError``, both naming it.
        """
        cdef int64_t levels = big_arg(n, "n")
        return self._side_depth(&self.bids, levels), self._side_depth(&self.asks, levels)

    cdef object _side_depth(self, LevelArray* a, Py_ssize_t n):
        cdef Py_ssize_t k = min(max(n, 0), a.n), i
        cdef cnp.ndarray price = np.empty(k, dtype=np.int64)
        cdef cnp.ndarray qty = np.empty(k, dtype=np.int64)
        cdef cnp.ndarray count = np.empty(k, dtype=np.int32)
        cdef int64_t* p = <int64_t*>cnp.PyArray_DATA(price)
        cdef int64_t* q = <int64_t*>cnp.PyArray_DATA(qty)
        cdef int32_t* c = <int32_t*>cnp.PyArray_DATA(count)
        for i in range(k):
            p[i] = a.data[a.n - 1 - i].price
            q[i] = a.data[a.n - 1 - i].qty
            c[i] = a.data[a.n - 1 - i].count
        out = np.empty(k, dtype=DEPTH_DTYPE)
        out["price"], out["qty"], out["count"] = price, qty, count
        return out

    def snapshot(self):
        """L3 snapshot: every resting order in priority order (``SNAPSHOT_DTYPE``).

        Bids come first, best price first and oldest first within a price;
        then asks the same way. ``OrderBook.from_snapshot(snap, seq=book.seq,
        stp=<the book's default STP mode>)`` rebuilds an identical book (the
        snapshot holds the orders, not the book's own settings).
        """
        cdef cnp.ndarray out = np.empty(self.n_orders, dtype=SNAPSHOT_DTYPE)
        cdef int32_t li, oi
        cdef LevelArray* a
        cdef Order* o
        cdef int s
        rows = []
        for s in range(2):
            a = &self.bids if s == 0 else &self.asks
            for li in range(a.n - 1, -1, -1):
                oi = a.data[li].head
                while oi != NIL:
                    o = &self.pool[oi]
                    rows.append((o.id, o.account, o.side, o.tif, o.flags, o.stp, o.price,
                                 o.qty, o.leaves, o.ts))
                    oi = o.next
        out[:] = rows
        return out

    @staticmethod
    def from_snapshot(snapshot, Py_ssize_t seq=0, str symbol="", stp=CANCEL_NEWEST):
        """Rebuild a book from ``snapshot()`` output; priority and ids are kept.

        Raises
        ------
        ValueError
            If the snapshot has duplicate or invalid ids, a row that could not
            be resting (side, price, quantities, a time in force other than
            DAY/GTC, an unknown STP mode or flag), a level whose total would
            exceed 2**63-1 lots, or is crossed. The message names the order
            and the field.
        """
        cdef OrderBook book = OrderBook(symbol, max(len(snapshot), 16), stp)
        cdef int64_t bid = 0, ask = 0
        cdef int tif, row_stp, flags
        for row in snapshot:
            order_id, side, price = int(row["order_id"]), int(row["side"]), int(row["price"])
            qty, leaves = int(row["qty"]), int(row["leaves_qty"])
            tif, row_stp, flags = int(row["tif"]), int(row["stp"]), int(row["flags"])
            if order_id <= 0 or idmap_get(&book.ids, order_id) != NIL:
                raise ValueError(f"snapshot has a duplicate or invalid order id {order_id}")
            if not _valid_side(side) or price <= 0 or leaves <= 0 or leaves > qty:
                raise ValueError(f"snapshot row for order {order_id} is invalid "
                                 f"(side {side}, price {price}, qty {qty}, leaves_qty {leaves})")
            if tif != DAY and tif != GTC:
                raise ValueError(f"snapshot row for order {order_id}: tif {tif} cannot rest "
                                 f"(only DAY or GTC orders rest)")
            if row_stp < STP_NONE or row_stp > CANCEL_BOTH:
                raise ValueError(f"snapshot row for order {order_id}: unknown stp mode {row_stp}")
            if flags & ~FLAG_POST_ONLY:
                raise ValueError(f"snapshot row for order {order_id}: unknown flags {flags}")
            if leaves > INT64_MAX - _level_qty(&book.bids if side == BUY else &book.asks, price,
                                               side == BUY):
                raise ValueError(f"snapshot row for order {order_id}: the level at price "
                                 f"{price} would hold more than 2**63-1 lots")
            book._rest(order_id, int(row["account"]), side == BUY, side, price, qty, leaves,
                       tif, flags, row_stp, int(row["ts"]))
        bid, ask = book.best_bid_c(), book.best_ask_c()
        if bid and ask and bid >= ask:
            raise ValueError(f"snapshot is crossed: bid {bid} >= ask {ask}")
        book.seq = seq
        return book

    def order(self, Py_ssize_t order_id):
        """State of a resting order as a dict, or None if it is not resting."""
        cdef Order* o = self.find_c(order_id)
        if o == NULL:
            return None
        return {
            "order_id": o.id, "account": o.account, "side": o.side, "price": o.price,
            "qty": o.qty, "leaves_qty": o.leaves, "cum_qty": o.qty - o.leaves,
            "tif": o.tif, "post_only": bool(o.flags & FLAG_POST_ONLY), "stp": o.stp,
            "ts": o.ts,
        }

    def __len__(self):
        return self.n_orders

    def __contains__(self, order_id):
        cdef Py_ssize_t key
        try:
            key = order_id
        except (TypeError, OverflowError):  # (1.5 is no order id, nor is 2**64)
            return False
        return self.find_c(key) != NULL

    def __repr__(self):
        return (f"<OrderBook {self.symbol!r} orders={self.n_orders} "
                f"levels={self.bids.n}x{self.asks.n} bbo={self.bbo()}>")


assert FILL_DTYPE.itemsize == sizeof(Fill), "FILL_DTYPE does not match struct Fill"
assert EVENT_DTYPE.itemsize == sizeof(Event), "EVENT_DTYPE does not match struct Event"
assert OP_DTYPE.itemsize == sizeof(Op), "OP_DTYPE does not match struct Op"
