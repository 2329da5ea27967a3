# cython: language_level=3
"""Interface of the L3 order book (price-time priority), for Cython callers.

Python callers use the ``def`` methods documented in ``book.pyx``; Cython
callers (the simulator's venues, the router) use the ``*_c`` methods and read
the fill and event buffers in place, then reset ``n_fills`` / ``n_events``.
"""
cimport cython
from ext.idmap cimport IdMap
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t

# ---------------------------------------------------------------- records
# Fill and Event are the book's output. Both carry ``seq`` from one per-book
# counter, so merging the two buffers by ``seq`` gives the exact order of what
# happened. Their numpy twins are FILL_DTYPE and EVENT_DTYPE in book.pyx.
ctypedef struct Fill:
    int64_t seq
    int64_t ts
    int64_t maker_id
    int64_t taker_id
    int64_t maker_account
    int64_t taker_account
    int64_t price
    int64_t qty
    int64_t maker_leaves      # maker's leaves_qty after this fill (0: filled)
    int64_t taker_leaves      # taker's leaves_qty after this fill
    uint8_t aggressor_side    # Side of the taker
    uint8_t _pad[7]

ctypedef struct Event:
    int64_t seq
    int64_t ts
    int64_t order_id
    int64_t account
    int64_t price
    int64_t qty               # order quantity (after a replace: the new one)
    int64_t leaves_qty
    int64_t cum_qty
    uint8_t kind              # EventKind
    uint8_t side              # Side
    uint16_t reason           # RejectReason for EV_REJECTED, CancelReason else
    uint8_t _pad[4]

# A batch operation (OP_DTYPE in book.pyx).
ctypedef struct Op:
    uint8_t op                # OP_ADD, OP_CANCEL, OP_REPLACE
    uint8_t side
    uint8_t ord_type
    uint8_t tif
    uint8_t flags             # FLAG_POST_ONLY
    uint8_t stp               # StpMode
    uint8_t _pad[2]
    int64_t order_id
    int64_t account
    int64_t price
    int64_t qty
    int64_t ts

cpdef enum:
    OP_ADD = 1
    OP_CANCEL = 2
    OP_REPLACE = 3

cpdef enum:
    FLAG_POST_ONLY = 1

cpdef enum:
    STP_DEFAULT = 255         # ``Op.stp``: use the book's default mode

cdef enum:
    NIL = -1                  # "no order" in pool links and lookups

# ---------------------------------------------------------------- internals
ctypedef struct Order:
    int64_t id
    int64_t account
    int64_t price
    int64_t qty               # current order quantity (cum + leaves)
    int64_t leaves
    int64_t ts
    int32_t prev              # pool index within the price level, -1 at head
    int32_t next              # -1 at tail
    uint8_t side
    uint8_t tif
    uint8_t flags
    uint8_t stp
    uint8_t _pad[4]

ctypedef struct Level:
    int64_t price
    int64_t qty               # sum of leaves at this price
    int32_t head              # oldest order (first to fill)
    int32_t tail
    int32_t count

ctypedef struct LevelArray:
    # Sorted so that the best price is at the END: inserts and removals near
    # the top of the book move few entries.
    Level* data
    int32_t n
    int32_t cap


@cython.final
cdef class OrderBook:
    # ------------------------------------------------------------ state
    cdef readonly str symbol
    cdef readonly int64_t seq           # last sequence number used
    cdef int default_stp
    cdef public bint record_events      # False: events are not kept (fills always are)
    cdef Order* pool
    cdef int32_t pool_cap
    cdef int32_t free_head              # free list threaded through Order.next
    cdef int32_t n_orders
    cdef IdMap ids                      # order id -> pool index
    cdef LevelArray bids                # ascending price, best bid last
    cdef LevelArray asks                # descending price, best ask last

    # ------------------------------------------------------------ output buffers
    cdef Fill* fills
    cdef Py_ssize_t n_fills
    cdef Py_ssize_t fills_cap
    cdef Event* events
    cdef Py_ssize_t n_events
    cdef Py_ssize_t events_cap

    # ------------------------------------------------------------ C API
    cdef int add_c(self, int64_t order_id, int side, int64_t price, int64_t qty,
                   int64_t account, int ord_type, int tif, int flags, int stp,
                   int64_t ts) except -1
    cdef int cancel_c(self, int64_t order_id, int reason, int64_t ts) except -1
    cdef int replace_c(self, int64_t order_id, int64_t price, int64_t qty,
                       int64_t ts) except -1
    cdef int apply_c(self, const Op* ops, Py_ssize_t n, uint16_t* results) except -1
    cdef int64_t best_bid_c(self) noexcept
    cdef int64_t best_ask_c(self) noexcept
    cdef int64_t best_bid_qty_c(self) noexcept
    cdef int64_t best_ask_qty_c(self) noexcept
    cdef Order* find_c(self, int64_t order_id) noexcept
    cdef Py_ssize_t depth_c(self, int side_index, int64_t* px, int64_t* qty,
                            Py_ssize_t n) noexcept

    # ------------------------------------------------------------ internals
    cdef int _grow_pool(self, int32_t new_cap) except -1
    cdef int _alloc_levels(self, LevelArray* a, int32_t cap) except -1
    cdef int _grow_levels(self, LevelArray* a) except -1
    cdef inline int _event(self, int kind, int64_t order_id, int64_t account, int side,
                    int64_t price, int64_t qty, int64_t leaves, int64_t cum,
                    int reason, int64_t ts) except -1
    cdef inline int _fill(self, Order* maker, int64_t taker_id, int64_t taker_account,
                   int taker_side, int64_t qty, int64_t taker_leaves,
                   int64_t ts) except -1
    cdef int32_t _level_index(self, bint is_bid, int64_t price) noexcept nogil
    cdef inline void _unlink(self, Level* lvl, int32_t oi) noexcept nogil
    cdef void _remove_level(self, LevelArray* a, int32_t li) noexcept nogil
    cdef inline int _rest(self, int64_t order_id, int64_t account, bint is_buy, int side,
                   int64_t price, int64_t qty, int64_t leaves, int tif, int flags,
                   int stp, int64_t ts) except -1
    cdef bint _fok_fillable(self, bint is_buy, bint is_market, int64_t limit,
                            int64_t qty, int64_t account, int stp) noexcept nogil
    cdef int64_t _match(self, int64_t taker_id, int64_t account, bint is_buy, int side,
                        bint is_market, int64_t limit, int64_t qty, int64_t leaves,
                        int stp, int64_t ts, bint* stp_canceled) except -1
    cdef Py_ssize_t _cancel_where(self, bint by_account, int64_t account, int tif, int reason,
                                  int64_t ts) except -1
    cdef object _side_depth(self, LevelArray* a, Py_ssize_t n)
