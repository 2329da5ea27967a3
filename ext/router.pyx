# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, binding=False
"""Smart order router: parent orders in, child orders for venues out.

Role in the pipeline: a parent order that passed pre-trade risk comes here
(``route``); the router answers with *actions* (new child orders, cancels,
replaces, each for one venue) that the engine sends, and it is told what
happens to them (``on_ack``, ``on_fill``, ``on_reject``, ``on_canceled`` ...).
It keeps each parent's state as the exact sum of its children's fills until
the parent is done, then hands over a best-execution record.

The router owns no clock and no sockets. Every call carries ``now`` (int ns)
from the caller: the engine's clock in production, the simulator's clock in a
backtest, a literal in a test. Everything that depends on time (schedule
slices, acknowledgement timeouts, venue recovery, repricing) is driven by
those values, so a replay of the same calls gives the same actions.

The market view is C data: per (instrument, venue) up to ``max_levels``
price levels per side and the fees; per venue its measured latency, lit or
dark and open or closed. The engine (or the simulator glue) writes it with
``update_book`` / ``update_side_c``; nothing here reads a venue directly.

Integer units, all exact:

* prices in ticks, quantities in lots; fill prices in half-ticks
  (``last_px_x2``) because a dark midpoint can fall between two ticks;
* fees in *fee units* of 1e-4 tick x lot (so per instrument: its tick and lot
  sizes set what a unit is worth). A venue's fee is a per-lot amount
  in fee units plus a rate in hundredths of a basis point (cbps, 1e-6) of the
  notional; negative is a rebate. The fee of a fill is
  ``per_lot * qty + round(px_x2 * qty * cbps / 200)``, the rate part rounded
  half away from zero: the simulator's venues (docs/sim.md) use the same rule,
  so a fee the router computes equals the one the venue charges;
* venue order compares the fee-adjusted price per lot in 1e-6 tick,
  ``price * 1e6 + per_lot * 100 + price * cbps`` (buys; sells subtract the fee
  and prefer the higher value), which is exact in int64 for prices up to
  ``MAX_PRICE``.

Order protection (as in Reg NMS): a sweep takes displayed prices best first
across every routable lit venue, so it never trades at a price while a better
displayed price at another routable venue is left untaken; the fee-adjusted
price orders the venues within a price, latency breaks the remaining ties. A
quantity-constrained sweep cannot do better: to trade at a worse price it
must take every better displayed lot anyway, so only the marginal price level
leaves a choice, and that choice is made on the fee-adjusted price. A venue
that stopped responding is not routable and its quote is not protected (the
self-help exception).
"""
cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.math cimport NAN
from libc.string cimport memcpy, memmove, memset
from ext.idmap cimport idmap_del, idmap_free, idmap_get, idmap_init, idmap_put, idmap_set
from ext.intarg cimport big_arg, small_arg
from ext.slotheap cimport slotheap_free, slotheap_init, slotheap_push, slotheap_remove
from ext.buffers cimport grow_buffer
from libc.stdlib cimport qsort
from ext.book cimport OrderBook
from libc.stdint cimport (int64_t, int32_t, uint32_t, uint8_t, uint16_t, uint64_t, INT64_MAX,
                          INT64_MIN)

import math

import numpy as np
cimport numpy as cnp

from ext.types cimport (
    BUY, SELL, SELL_SHORT, MARKET, LIMIT, DAY, GTC, IOC,
    NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED,
    UNKNOWN_ORDER, DUPLICATE_ORDER_ID, INVALID_QTY, INVALID_PRICE, INVALID_SIDE, INVALID_TIF,
    VALUE_OUT_OF_RANGE, INVALID_ORDER_ID, UNKNOWN_INSTRUMENT,
    NO_ROUTE, VENUE_UNAVAILABLE, VENUE_CLOSED, NO_LIQUIDITY, REROUTE_LIMIT, INVALID_STRATEGY,
    INVALID_SCHEDULE, INVALID_STP_MODE, CANCEL_OLDEST, CANCEL_BOTH, ORDER_NOT_REPLACEABLE,
    POST_ONLY_WOULD_CROSS, C_MAX_PRICE, C_MAX_QTY,
)

cnp.import_array()

# ---------------------------------------------------------------- limits and units
#: Largest price (ticks) and quantity (lots) the router accepts: the
#: fee-adjusted comparison ``price * (1e6 + cbps)`` stays exact in int64.
#: (Defined once in ``types.pxd``; risk takes the same bounds.)
MAX_PRICE = C_MAX_PRICE
MAX_QTY = C_MAX_QTY
#: Largest per-lot fee (fee units) and fee rate (cbps, 1e6 = 100%) in magnitude.
MAX_FEE_PER_LOT = 1 << 40
MAX_CBPS = 1_000_000
#: Fee units per tick x lot.
FEE_UNITS_PER_TICK = 10_000

cdef int64_t E6 = 1000000
cdef int64_t NO_FEE = -(1 << 62)       # on_fill_c: "compute the fee from the schedule"

#: Configuration keys with their defaults (see docs/router.md).
DEFAULT_CONFIG = {
    "strategy": "auto",                 # default strategy of a parent that names none
    "dark_min_qty": 0,                  # minimum fill size of a dark ping (lots), 0: none
    "max_reroutes": 5,                  # routing rounds without a fill after the first
    "post_residual": True,              # a DAY/GTC limit parent rests what a sweep left
    "ack_timeout_ns": 50_000_000,       # a child unacknowledged this long: venue down
    "recovery_ns": 1_000_000_000,       # first retry of a down venue after this long...
    "recovery_max_ns": 60_000_000_000,  # ...doubling per consecutive timeout, up to this
    "reprice_ticks": 1,                 # NBBO must move away this far before a reprice
    "reprice_interval_ns": 1_000_000,   # and no two reprices of a parent closer than this
    "twap_slices": 10,                  # TWAP slices when the order names none
    "slice_min_qty": 1,                 # scheduled strategies send no child below this
    "queue_ref_lots": 1000,             # a queue this long ahead halves the fill estimate
    "fill_rate_prior_ppm": 500_000,     # passive fill rate assumed for a venue with no history
    "fill_rate_prior_lots": 100,        # ...with the weight of this many posted lots
    "passive_value": 10_000,            # value of a passive fill per lot (fee units; 1 tick)
    "child_id_base": 1,                 # first child id
}

STRATEGY_NAMES = {
    "auto": STRAT_AUTO, "sweep": STRAT_SWEEP, "dark_first": STRAT_DARK_FIRST,
    "passive": STRAT_PASSIVE, "twap": STRAT_TWAP, "vwap": STRAT_VWAP, "pov": STRAT_POV,
}

# ---------------------------------------------------------------- numpy views
# Field order and padding mirror the structs in router.pxd byte for byte; the
# assertions at the bottom of this module fail the import if they drift.
ACTION_DTYPE = np.dtype([
    ("child_id", "<i8"), ("parent_id", "<i8"), ("price", "<i8"), ("qty", "<i8"),
    ("min_qty", "<i8"), ("ts", "<i8"), ("venue", "<i4"), ("instrument", "<i4"),
    ("kind", "u1"), ("side", "u1"), ("ord_type", "u1"), ("tif", "u1"), ("flags", "u1"),
    ("role", "u1"), ("_pad", "V2"),
])
PARENT_DTYPE = np.dtype([
    ("parent_id", "<i8"), ("qty", "<i8"), ("limit_px", "<i8"), ("instrument", "<i4"),
    ("side", "u1"), ("tif", "u1"), ("strategy", "u1"), ("_pad", "V1"),
])
BESTEX_DTYPE = np.dtype([
    ("parent_id", "<i8"), ("instrument", "<i4"), ("side", "u1"), ("strategy", "u1"),
    ("status", "u1"), ("tif", "u1"), ("reason", "<u2"), ("qty", "<i8"), ("limit_px", "<i8"),
    ("cum_qty", "<i8"), ("leaves_qty", "<i8"), ("avg_px_num", "<i8"), ("avg_px_den", "<i8"),
    ("notional_x2", "<i8"), ("fees", "<i8"), ("arrival_ts", "<i8"), ("done_ts", "<i8"),
    ("arr_bid_px", "<i8"), ("arr_bid_qty", "<i8"), ("arr_ask_px", "<i8"), ("arr_ask_qty", "<i8"),
    ("pi_x2", "<i8"), ("pi_bps", "<f8"), ("vs_mid_bps", "<f8"), ("n_children", "<i4"),
    ("venues_used", "<u4"),
    ("venue_children", "<i4", (MAX_VENUES,)), ("venue_sent", "<i8", (MAX_VENUES,)),
    ("venue_filled", "<i8", (MAX_VENUES,)), ("venue_fees", "<i8", (MAX_VENUES,)),
    ("venue_fill_rate", "<f8", (MAX_VENUES,)),
])

# ---------------------------------------------------------------- helpers


cdef inline int64_t _gcd(int64_t a, int64_t b) noexcept nogil:
    # b > 0; the result is positive.
    cdef int64_t t
    if a < 0:
        a = -a
    while a:
        t = b % a
        b = a
        a = t
    return b


cdef inline int64_t _sat64(i128 x) noexcept nogil:
    if x > INT64_MAX:
        return INT64_MAX
    if x < -INT64_MAX:
        return -INT64_MAX
    return <int64_t>x


cdef inline i128 _round_div(i128 a, int64_t b) noexcept nogil:
    # b > 0; rounds half away from zero.
    if a >= 0:
        return (a + b / 2) / b
    return -((-a + b / 2) / b)


cdef inline i128 _ceil_div(i128 a, int64_t b) noexcept nogil:
    # b > 0; C division truncates toward zero, which is already the ceiling
    # for a negative numerator.
    cdef i128 q = a / b
    if a > 0 and a % b != 0:
        q += 1
    return q


cdef inline int64_t _level_avail(const int64_t* qty, const int64_t* own, int k) noexcept nogil:
    # Lots at level k a sweep can take: all of them, less our own resting
    # lots there that the venue's self-trade prevention keeps from us.
    if own == NULL or own[k] <= 0:
        return qty[k]
    return qty[k] - own[k] if own[k] < qty[k] else 0


cdef inline bint _is_buy(int side) noexcept nogil:
    return side == BUY


cdef inline bint _outside_limit(bint buy, int64_t px_x2, int64_t limit,
                                int64_t pending) noexcept nogil:
    # A replace in flight: the venue may fill at either price, the looser counts.
    if pending > 0 and (pending > limit if buy else pending < limit):
        limit = pending
    return px_x2 > 2 * limit if buy else px_x2 < 2 * limit


cdef inline int64_t _park_bound(int kind, int64_t bid, int64_t ask) noexcept nogil:
    """What the market offers a parked parent of heap ``kind``: it wakes when its key is at most this.

    From ``_passive_price``: a buy posts at min(limit, bid if it joins, ask - 1),
    so with its limit past its key it reprices once min(bid, ask - 1) (joining)
    or ask - 1 (at its limit) reaches the key; a sell, mirrored, once
    max(ask, bid + 1) or bid + 1 falls to its key (heap keys and bounds of
    sells are negated, so that every heap is a min-heap). A missing side
    bounds nothing.
    """
    cdef int64_t m
    if kind == PARK_BUY_JOIN or kind == PARK_BUY_LIMIT:
        m = ask - 1 if ask > 0 else INT64_MAX
        if kind == PARK_BUY_JOIN and 0 < bid < m:
            m = bid
        return m
    m = bid + 1 if bid > 0 else 0
    if kind == PARK_SELL_JOIN and ask > m:
        m = ask
    return -m


cdef inline int64_t _post_key(int instrument, int venue, int side_index,
                              int64_t price) noexcept nogil:
    """``post_index``'s key of a book side's price: a hash (positive, never 0), since
    instrument, venue, side and price take more than 63 bits; lists are checked."""
    cdef uint64_t x = (<uint64_t>price) * <uint64_t>0x9E3779B97F4A7C15
    x ^= ((<uint64_t>instrument << 5) | (<uint64_t>venue << 1) | <uint64_t>side_index) \
        * <uint64_t>0xC2B2AE3D27D4EB4F
    x >>= 1
    return <int64_t>x if x else 1


cdef int _woken_cmp(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const Woken*>a).seq, y = (<const Woken*>b).seq
    return (x > y) - (x < y)


cdef object _as_int(object value, str key):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"router config {key!r} must be an integer, not {value!r}")
    return value


cdef int _strategy_code(object value) except -1:
    if isinstance(value, str):
        if value not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {value!r}; one of {sorted(STRATEGY_NAMES)}")
        return STRATEGY_NAMES[value]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= STRAT_POV:
        raise ValueError(f"unknown strategy {value!r}")
    return value


cdef int _check_fees(object maker_fee, object taker_fee, object maker_cbps,
                     object taker_cbps) except -1:
    # big_arg first: a float fee passed the bounds and was then cut to an int64 (2.5 was 2).
    for name, value, bound in (("maker_fee", maker_fee, MAX_FEE_PER_LOT),
                               ("taker_fee", taker_fee, MAX_FEE_PER_LOT),
                               ("maker_cbps", maker_cbps, MAX_CBPS),
                               ("taker_cbps", taker_cbps, MAX_CBPS)):
        if value is not None and not -bound <= big_arg(value, name) <= bound:
            raise ValueError(f"{name} must be within +-{bound}")
    return 0


def _integers(object arr, str name):
    """Refuse a depth array that is not integers (a float price or size was cut to int64)."""
    if arr.size == 0 or arr.dtype.kind in "iub":
        return
    if arr.dtype.kind == "O":
        for x in arr.flat:
            if isinstance(x, (int, np.integer)):
                continue
            raise TypeError(f"{name} levels must be integers (ticks, lots), not "
                            f"{type(x).__name__} ({x!r}): never truncated")
        return
    raise TypeError(f"{name} levels must be integers (ticks, lots), not {arr.dtype}: "
                    "never truncated")


def _levels(object side, str name="book"):
    """A depth side as two contiguous int64 arrays (price, qty); ``TypeError`` for a float."""
    if side is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    arr = np.asarray(side)
    if arr.dtype.names is not None:
        _integers(arr["price"], name)
        _integers(arr["qty"], name)
        return (np.ascontiguousarray(arr["price"], dtype=np.int64),
                np.ascontiguousarray(arr["qty"], dtype=np.int64))
    _integers(arr, name)
    arr = np.asarray(side, dtype=np.int64).reshape(-1, 2)
    return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])


@cython.final
cdef class Router:
    """Smart order router over ``n_venues`` venues for ``n_instruments`` instruments.

    Parameters
    ----------
    n_venues : int
        Number of venues (1 to ``MAX_VENUES``), addressed by index.
    n_instruments : int, optional
        Number of instruments, addressed by index (the engine's instrument index).
    max_levels : int, optional
        Depth levels kept per side per venue; deeper levels given are ignored.
    config : dict, optional
        Overrides of ``DEFAULT_CONFIG`` (see docs/router.md).

    Raises
    ------
    ValueError
        If a size or a configuration value is out of range or a key is unknown.

    Notes
    -----
    Every call that can send something appends *actions* (``ACTION_DTYPE``)
    to a buffer the caller drains with ``drain_actions``: ``ACT_NEW`` (send a
    child order), ``ACT_CANCEL``, ``ACT_REPLACE`` (new price, same quantity).
    Child ids are assigned by the router, increasing from ``child_id_base``.

    Examples
    --------
    >>> from ext.types import Side
    >>> r = Router(2)
    >>> r.set_venue(0, taker_fee=3000)      # 0.3 tick per lot
    >>> r.set_venue(1, taker_fee=1000)
    >>> r.update_book(0, 0, bids=[(99, 50)], asks=[(100, 50)])
    0
    >>> r.update_book(0, 1, bids=[(99, 50)], asks=[(100, 30), (101, 40)])
    0
    >>> r.route(1, 0, Side.BUY, 60, 101, now=0)
    0
    >>> [(int(a["venue"]), int(a["price"]), int(a["qty"])) for a in r.drain_actions()]
    [(1, 100, 30), (0, 100, 30)]
    """

    def __cinit__(self):
        self.venues = NULL
        self.fees = NULL
        self.lvl_px = NULL
        self.lvl_qty = NULL
        self.lvl_n = NULL
        self.stale = NULL
        self.res_live = NULL
        self.res_filled = NULL
        self.own_lvl = NULL
        self.book_seq = NULL
        self.volume = NULL
        self.parents = NULL
        self.parents_cap = 0
        self.parent_free = -1
        self.active_head = -1
        self.active_tail = -1
        self.next_seq = 0
        self.awake_head = -1
        self.awake_tail = -1
        self.woken = NULL
        self.n_woken = 0
        self.woken_cap = 0
        self.parked = NULL
        self.park_pos = NULL
        self.n_parked = 0
        self.last_tick_ns = INT64_MIN
        self.finished = NULL
        self.n_finished = 0
        self.finished_cap = 0
        self.children = NULL
        self.children_cap = 0
        self.child_free = -1
        self.parent_ids.keys = NULL
        self.parent_ids.vals = NULL
        self.child_ids.keys = NULL
        self.child_ids.vals = NULL
        self.drain_ids.keys = NULL
        self.drain_ids.vals = NULL
        self.post_index.keys = NULL
        self.post_index.vals = NULL
        self.actions = NULL
        self.n_actions = 0
        self.actions_cap = 0

    def __init__(self, n_venues, n_instruments=1, max_levels=10, dict config=None):
        cdef Py_ssize_t books, v
        # small_arg: an int parameter took n_venues=2.7 as 2 venues.
        cdef int nv = small_arg(n_venues, "n_venues")
        cdef int ni = small_arg(n_instruments, "n_instruments")
        cdef int ml = small_arg(max_levels, "max_levels")
        if not 1 <= nv <= MAX_VENUES:
            raise ValueError(f"n_venues must be 1 to {MAX_VENUES}")
        if not 1 <= ni <= 1 << 20:
            raise ValueError("n_instruments must be 1 to 2**20")
        if not 1 <= ml <= 1024:
            raise ValueError("max_levels must be 1 to 1024")
        if self.venues != NULL:
            raise RuntimeError("Router.__init__ called twice")
        self.n_venues = nv
        self.n_instruments = ni
        self.max_levels = ml
        self._configure(config or {})
        books = <Py_ssize_t>ni * nv
        self.venues = <Venue*>PyMem_Malloc(nv * sizeof(Venue))
        self.fees = <Fees*>PyMem_Malloc(books * sizeof(Fees))
        self.lvl_px = <int64_t*>PyMem_Malloc(books * 2 * ml * sizeof(int64_t))
        self.lvl_qty = <int64_t*>PyMem_Malloc(books * 2 * ml * sizeof(int64_t))
        self.lvl_n = <int32_t*>PyMem_Malloc(books * 2 * sizeof(int32_t))
        self.stale = <uint8_t*>PyMem_Malloc(books * sizeof(uint8_t))
        self.res_live = <int64_t*>PyMem_Malloc(books * 2 * sizeof(int64_t))
        self.res_filled = <int64_t*>PyMem_Malloc(books * 2 * sizeof(int64_t))
        self.own_lvl = <int64_t*>PyMem_Malloc(<Py_ssize_t>nv * ml * sizeof(int64_t))
        self.book_seq = <int64_t*>PyMem_Malloc(books * 2 * sizeof(int64_t))
        self.volume = <int64_t*>PyMem_Malloc(ni * sizeof(int64_t))
        self.actions_cap = 256
        self.actions = <Action*>PyMem_Malloc(self.actions_cap * sizeof(Action))
        self.finished_cap = 256
        self.finished = <int32_t*>PyMem_Malloc(self.finished_cap * sizeof(int32_t))
        self.parked = <SlotHeap*>PyMem_Malloc(<Py_ssize_t>ni * PARK_KINDS
                                              * sizeof(SlotHeap))
        if self.parked != NULL:
            for v in range(<Py_ssize_t>ni * PARK_KINDS):
                slotheap_init(&self.parked[v])
        if (self.venues == NULL or self.fees == NULL or self.lvl_px == NULL or self.lvl_qty == NULL
                or self.lvl_n == NULL or self.stale == NULL or self.res_live == NULL
                or self.res_filled == NULL or self.own_lvl == NULL or self.book_seq == NULL
                or self.volume == NULL or self.parked == NULL
                or self.actions == NULL or self.finished == NULL):
            raise MemoryError()
        memset(self.venues, 0, nv * sizeof(Venue))
        memset(self.fees, 0, books * sizeof(Fees))
        for v in range(nv):
            self.venues[v].open = 1
        memset(self.lvl_n, 0, books * 2 * sizeof(int32_t))
        memset(self.stale, 0, books * sizeof(uint8_t))
        memset(self.res_live, 0, books * 2 * sizeof(int64_t))
        memset(self.res_filled, 0, books * 2 * sizeof(int64_t))
        memset(self.book_seq, 0, books * 2 * sizeof(int64_t))
        memset(self.volume, 0, ni * sizeof(int64_t))
        idmap_init(&self.parent_ids, 1024)
        idmap_init(&self.child_ids, 4096)
        idmap_init(&self.drain_ids, 64)
        idmap_init(&self.post_index, 1024)
        self._grow_parents()
        self._grow_children()

    cdef int _configure(self, dict overrides) except -1:
        unknown = set(overrides) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown router config keys: {sorted(unknown)}")
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(overrides)
        for key, value in cfg.items():
            if key == "strategy":
                self.default_strategy = _strategy_code(value)
            elif key == "post_residual":
                if not isinstance(value, bool):
                    raise ValueError("router config 'post_residual' must be a bool")
            else:
                _as_int(value, key)
        if cfg["dark_min_qty"] < 0 or cfg["dark_min_qty"] > MAX_QTY:
            raise ValueError("router config 'dark_min_qty' must be 0 to MAX_QTY")
        if not 0 <= cfg["max_reroutes"] <= 1_000_000:
            raise ValueError("router config 'max_reroutes' must be 0 to 1e6")
        for key in ("ack_timeout_ns", "recovery_ns", "recovery_max_ns", "twap_slices",
                    "slice_min_qty", "queue_ref_lots", "fill_rate_prior_lots", "reprice_ticks",
                    "child_id_base"):
            if not 1 <= cfg[key] <= 1 << 62:
                raise ValueError(f"router config {key!r} must be positive")
        if cfg["twap_slices"] > 1_000_000:
            raise ValueError("router config 'twap_slices' must be at most 1e6")
        if cfg["recovery_max_ns"] < cfg["recovery_ns"]:
            # The cap would win from the first retry: not the delay the file says.
            raise ValueError(f"router config 'recovery_max_ns' ({cfg['recovery_max_ns']}) must be "
                             f"at least 'recovery_ns' ({cfg['recovery_ns']})")
        if not 0 <= cfg["reprice_interval_ns"] <= 1 << 62:
            raise ValueError("router config 'reprice_interval_ns' must be 0 or more")
        if not 0 <= cfg["fill_rate_prior_ppm"] <= E6:
            raise ValueError("router config 'fill_rate_prior_ppm' must be 0 to 1e6")
        if not 0 <= cfg["passive_value"] <= MAX_FEE_PER_LOT:
            raise ValueError("router config 'passive_value' must be 0 to MAX_FEE_PER_LOT")
        if cfg["queue_ref_lots"] > MAX_QTY or cfg["fill_rate_prior_lots"] > MAX_QTY:
            raise ValueError("router config lots must be at most MAX_QTY")
        self.dark_min_qty = cfg["dark_min_qty"]
        self.max_reroutes = cfg["max_reroutes"]
        self.post_residual = cfg["post_residual"]
        self.ack_timeout_ns = cfg["ack_timeout_ns"]
        self.recovery_ns = cfg["recovery_ns"]
        self.recovery_max_ns = cfg["recovery_max_ns"]
        self.reprice_ticks = cfg["reprice_ticks"]
        self.reprice_interval_ns = cfg["reprice_interval_ns"]
        self.twap_slices = cfg["twap_slices"]
        self.slice_min_qty = cfg["slice_min_qty"]
        self.queue_ref_lots = cfg["queue_ref_lots"]
        self.fill_prior_ppm = cfg["fill_rate_prior_ppm"]
        self.fill_prior_lots = cfg["fill_rate_prior_lots"]
        self.passive_value = cfg["passive_value"]
        self.next_child_id = cfg["child_id_base"]
        self.config = cfg
        return 0

    def __dealloc__(self):
        cdef int32_t k
        cdef Py_ssize_t h
        if self.parents != NULL:
            for k in range(self.parents_cap):
                PyMem_Free(self.parents[k].cum_weight)
        if self.parked != NULL:
            for h in range(<Py_ssize_t>self.n_instruments * PARK_KINDS):
                slotheap_free(&self.parked[h])
        PyMem_Free(self.parked)
        PyMem_Free(self.park_pos)
        PyMem_Free(self.woken)
        PyMem_Free(self.venues)
        PyMem_Free(self.fees)
        PyMem_Free(self.lvl_px)
        PyMem_Free(self.lvl_qty)
        PyMem_Free(self.lvl_n)
        PyMem_Free(self.stale)
        PyMem_Free(self.res_live)
        PyMem_Free(self.res_filled)
        PyMem_Free(self.own_lvl)
        PyMem_Free(self.book_seq)
        PyMem_Free(self.volume)
        PyMem_Free(self.parents)
        PyMem_Free(self.children)
        PyMem_Free(self.finished)
        PyMem_Free(self.actions)
        idmap_free(&self.parent_ids)
        idmap_free(&self.child_ids)
        idmap_free(&self.drain_ids)
        idmap_free(&self.post_index)

    # ============================================================ storage
    cdef int _grow_parents(self) except -1:
        cdef int32_t old = self.parents_cap
        cdef int32_t cap = old * 2 if old else 256
        cdef int32_t k
        cdef Parent* grown = <Parent*>PyMem_Realloc(self.parents, cap * sizeof(Parent))
        cdef int32_t* pos
        if grown == NULL:
            raise MemoryError()
        self.parents = grown
        pos = <int32_t*>PyMem_Realloc(self.park_pos, cap * sizeof(int32_t))
        if pos == NULL:
            raise MemoryError()
        self.park_pos = pos
        memset(&self.parents[old], 0, (cap - old) * sizeof(Parent))
        # Thread the new slots onto the free list, lowest first.
        for k in range(cap - 1, old - 1, -1):
            self.parents[k].next_active = self.parent_free
            self.parents[k].phase = PH_DONE
            self.parent_free = k
        self.parents_cap = cap
        return 0

    cdef int _grow_children(self) except -1:
        cdef int32_t old = self.children_cap
        cdef int32_t cap = old * 2 if old else 1024
        cdef int32_t k
        cdef Child* grown = <Child*>PyMem_Realloc(self.children, cap * sizeof(Child))
        if grown == NULL:
            raise MemoryError()
        self.children = grown
        memset(&self.children[old], 0, (cap - old) * sizeof(Child))
        for k in range(cap - 1, old - 1, -1):
            self.children[k].next = self.child_free
            self.child_free = k
        self.children_cap = cap
        return 0

    cdef int _grow_actions(self) except -1:
        cdef Py_ssize_t cap = self.actions_cap * 2
        cdef Action* grown = <Action*>PyMem_Realloc(self.actions, cap * sizeof(Action))
        if grown == NULL:
            raise MemoryError()
        self.actions = grown
        self.actions_cap = cap
        return 0

    # ============================================================ market view
    def set_venue(self, venue, *, dark=None, maker_fee=None, taker_fee=None,
                  maker_cbps=None, taker_cbps=None, latency_ns=None, open=None):
        """Set a venue's properties; arguments left out keep their value.

        Parameters
        ----------
        venue : int
            Venue index.
        dark : bool, optional
            A dark pool: no displayed depth, midpoint pings only.
        maker_fee, taker_fee : int, optional
            Per-lot fee in fee units (1e-4 tick); negative is a rebate. Set
            for every instrument; ``set_fees`` sets one instrument's.
        maker_cbps, taker_cbps : int, optional
            Fee rate in hundredths of a basis point of the notional.
        latency_ns : int, optional
            Measured latency to the venue; breaks ties between equal venues.
        open : bool, optional
            The venue's session is open; a closed venue is never routed to.

        Raises
        ------
        TypeError
            If ``venue``, a fee or the latency is not an integer (a float is never
            truncated), naming it.
        IndexError
            If ``venue`` is out of range.
        ValueError
            If a fee or latency is out of range, or ``venue`` beyond a C int.
        """
        cdef int v = small_arg(venue, "venue")
        cdef Venue* vn = self._venue(v)
        cdef int i
        if latency_ns is not None and not 0 <= big_arg(latency_ns, "latency_ns") < 1 << 62:
            raise ValueError("latency_ns must be 0 or more")
        _check_fees(maker_fee, taker_fee, maker_cbps, taker_cbps)
        for i in range(self.n_instruments):
            self.set_fees(i, v, maker_fee=maker_fee, taker_fee=taker_fee,
                          maker_cbps=maker_cbps, taker_cbps=taker_cbps)
        if dark is not None:
            vn.dark = bool(dark)
        if latency_ns is not None:
            vn.latency_ns = latency_ns
        if open is not None:
            vn.open = bool(open)

    def set_fees(self, instrument, venue, *, maker_fee=None, taker_fee=None,
                 maker_cbps=None, taker_cbps=None):
        """Set one venue's fees for one instrument (units as in ``set_venue``).

        Raises
        ------
        TypeError
            If an index or a fee is not an integer, naming it.
        IndexError
            If an index is out of range.
        ValueError
            If a fee is out of range, or an index beyond a C int.
        """
        cdef Fees* f = self._fees(instrument, venue)
        _check_fees(maker_fee, taker_fee, maker_cbps, taker_cbps)
        if maker_fee is not None:
            f.maker_per_lot = maker_fee
        if taker_fee is not None:
            f.taker_per_lot = taker_fee
        if maker_cbps is not None:
            f.maker_cbps = maker_cbps
        if taker_cbps is not None:
            f.taker_cbps = taker_cbps

    def get_fees(self, instrument, venue):
        """One venue's fees for one instrument as a dict (fee units per lot, cbps)."""
        cdef Fees* f = self._fees(instrument, venue)
        return {"maker_fee": f.maker_per_lot, "taker_fee": f.taker_per_lot,
                "maker_cbps": f.maker_cbps, "taker_cbps": f.taker_cbps}

    cdef Fees* _fees(self, object instrument, object venue) except NULL:
        cdef int i = small_arg(instrument, "instrument"), v = small_arg(venue, "venue")
        self._check_book(i, v)
        return &self.fees[<Py_ssize_t>i * self.n_venues + v]

    cdef Venue* _venue(self, int venue) except NULL:
        if not 0 <= venue < self.n_venues:
            raise IndexError(f"venue {venue} out of range (0 to {self.n_venues - 1})")
        return &self.venues[venue]

    def set_latency(self, venue, latency_ns):
        """Record a venue's measured latency (ns)."""
        self.set_venue(venue, latency_ns=latency_ns)

    def set_open(self, venue, bint is_open):
        """Open or close a venue's session (a closed venue is never routed to)."""
        self._venue(small_arg(venue, "venue")).open = is_open

    def update_book(self, instrument, venue, bids=None, asks=None):
        """Replace one venue's displayed depth for one instrument.

        Parameters
        ----------
        instrument, venue : int
            Indexes.
        bids, asks : array-like
            Levels best first: a numpy array with ``price`` and ``qty`` fields
            (``OrderBook.depth()`` output), or ``(price, qty)`` pairs. Levels
            past ``max_levels`` are ignored.

        Returns
        -------
        int
            0, or ``INVALID_PRICE`` / ``INVALID_QTY`` (nothing changed) when
            prices are not positive, above ``MAX_PRICE`` or not strictly
            ordered best first, or a quantity is not positive. A level of
            more than ``MAX_QTY`` lots is held as ``MAX_QTY`` lots.

        Raises
        ------
        TypeError
            If a price or quantity is not an integer (a float, a ``Decimal``):
            never truncated, nothing changed.

        Notes
        -----
        An update is the new truth for that venue: it clears the venue's
        "displayed size proved absent" mark and ends the claims of the sweep
        children sent before it. Such a child may already have executed there,
        so the update may show the book without the lots it took: keeping its
        claim, or counting its fills against this book, would hide real
        liquidity and let a sweep trade through it (see docs/router.md).
        """
        cdef int i = small_arg(instrument, "instrument"), v = small_arg(venue, "venue")
        self._check_book(i, v)
        bpx, bqty = _levels(bids, "bids")
        apx, aqty = _levels(asks, "asks")
        if len(bpx) != len(bqty) or len(apx) != len(aqty):
            raise ValueError("price and qty arrays differ in length")
        cdef int64_t[::1] bp = bpx, bq = bqty, ap = apx, aq = aqty
        cdef int code = self._validate_side(0, &bp[0] if bp.shape[0] else NULL,
                                            &bq[0] if bq.shape[0] else NULL, bp.shape[0])
        if code == 0:
            code = self._validate_side(1, &ap[0] if ap.shape[0] else NULL,
                                       &aq[0] if aq.shape[0] else NULL, ap.shape[0])
        if code:
            return code
        self.update_side_c(i, v, 0, &bp[0] if bp.shape[0] else NULL,
                           &bq[0] if bq.shape[0] else NULL, bp.shape[0])
        self.update_side_c(i, v, 1, &ap[0] if ap.shape[0] else NULL,
                           &aq[0] if aq.shape[0] else NULL, ap.shape[0])
        return 0

    def update_book_from(self, instrument, venue, OrderBook book):
        """``update_book(instrument, venue, *book.depth(max_levels))``, read from the book in C.

        The engine refreshes its view of every changed lit book before each
        order; through ``depth()`` that built eight numpy arrays per venue.
        Same checks, same result codes, same effect.
        """
        cdef int i = small_arg(instrument, "instrument"), v = small_arg(venue, "venue")
        self._check_book(i, v)
        cdef int64_t bp[1024]
        cdef int64_t bq[1024]
        cdef int64_t ap[1024]
        cdef int64_t aq[1024]
        cdef Py_ssize_t nb = book.depth_c(0, bp, bq, self.max_levels)
        cdef Py_ssize_t na = book.depth_c(1, ap, aq, self.max_levels)
        cdef int code = self._validate_side(0, bp, bq, nb)
        if code == 0:
            code = self._validate_side(1, ap, aq, na)
        if code:
            return code
        self.update_side_c(i, v, 0, bp, bq, nb)
        self.update_side_c(i, v, 1, ap, aq, na)
        return 0

    cdef int _check_book(self, int instrument, int venue) except -1:
        if not 0 <= instrument < self.n_instruments:
            raise IndexError(f"instrument {instrument} out of range")
        if not 0 <= venue < self.n_venues:
            raise IndexError(f"venue {venue} out of range")
        return 0

    cdef int _validate_side(self, int side_index, const int64_t* px, const int64_t* qty,
                            Py_ssize_t n) noexcept:
        cdef Py_ssize_t k
        if n > self.max_levels:
            n = self.max_levels
        for k in range(n):
            if px[k] <= 0 or px[k] > C_MAX_PRICE:
                return INVALID_PRICE
            if qty[k] <= 0:
                return INVALID_QTY
            # Bids strictly descending, asks strictly ascending: best first.
            if k and (px[k] >= px[k - 1] if side_index == 0 else px[k] <= px[k - 1]):
                return INVALID_PRICE
        return 0

    cdef int update_side_c(self, int instrument, int venue, int side_index, const int64_t* px,
                           const int64_t* qty, Py_ssize_t n) except -1:
        """Replace one side (0: bids, 1: asks) of one venue's depth; returns 0 or a code."""
        cdef int code = self._validate_side(side_index, px, qty, n)
        cdef Py_ssize_t book = <Py_ssize_t>instrument * self.n_venues + venue
        cdef Py_ssize_t b = book * 2 + side_index, k
        if code:
            return code
        if n > self.max_levels:
            n = self.max_levels
        if n:
            memcpy(&self.lvl_px[b * self.max_levels], px, n * sizeof(int64_t))
        for k in range(n):
            # A level beyond MAX_QTY is more than any parent can take; holding
            # it as MAX_QTY keeps every sum over levels and claims in int64.
            self.lvl_qty[b * self.max_levels + k] = qty[k] if qty[k] < C_MAX_QTY else C_MAX_QTY
        self.lvl_n[b] = <int32_t>n
        self.stale[book] = 0
        # Children sent before this update no longer claim anything here:
        # _sweep_claim tells them apart by the update count.
        self.book_seq[b] += 1
        self.res_live[b] = 0
        self.res_filled[b] = 0
        return 0

    def depth(self, instrument, venue):
        """The depth the router holds for one venue: ``(bids, asks)`` lists of (price, qty)."""
        cdef int i = small_arg(instrument, "instrument"), v = small_arg(venue, "venue")
        self._check_book(i, v)
        cdef Py_ssize_t b = (<Py_ssize_t>i * self.n_venues + v) * 2, s, k
        cdef int L = self.max_levels
        sides = ([], [])
        for s in range(2):
            for k in range(self.lvl_n[b + s]):
                sides[s].append((self.lvl_px[(b + s) * L + k], self.lvl_qty[(b + s) * L + k]))
        return sides

    def book_state(self, instrument, venue):
        """Routing marks on one venue's book: stale flag and the lots reserved per side."""
        cdef int i = small_arg(instrument, "instrument"), v = small_arg(venue, "venue")
        self._check_book(i, v)
        cdef Py_ssize_t book = <Py_ssize_t>i * self.n_venues + v
        return {"stale": bool(self.stale[book]),
                "reserved_bids": self.res_live[book * 2] + self.res_filled[book * 2],
                "reserved_asks": self.res_live[book * 2 + 1] + self.res_filled[book * 2 + 1]}

    cdef void nbbo_c(self, int instrument, int64_t* out) noexcept:
        """NBBO over the open lit venues: out = bid, bid_qty, ask, ask_qty."""
        cdef int v, nv = self.n_venues, L = self.max_levels
        cdef Py_ssize_t b
        cdef int64_t px
        out[0] = out[1] = out[2] = out[3] = 0
        for v in range(nv):
            if self.venues[v].dark or not self.venues[v].open:
                continue
            b = (<Py_ssize_t>instrument * nv + v) * 2
            if self.lvl_n[b] > 0:
                px = self.lvl_px[b * L]
                if px > out[0]:
                    out[0] = px
                    out[1] = self.lvl_qty[b * L]
                elif px == out[0]:
                    out[1] += self.lvl_qty[b * L]
            if self.lvl_n[b + 1] > 0:
                px = self.lvl_px[(b + 1) * L]
                if out[2] == 0 or px < out[2]:
                    out[2] = px
                    out[3] = self.lvl_qty[(b + 1) * L]
                elif px == out[2]:
                    out[3] += self.lvl_qty[(b + 1) * L]

    def nbbo(self, instrument):
        """``(bid_px, bid_qty, ask_px, ask_qty)`` over the open lit venues; 0 where empty."""
        cdef int64_t q[4]
        cdef int i = small_arg(instrument, "instrument")
        self._check_book(i, 0)
        self.nbbo_c(i, q)
        return (q[0], q[1], q[2], q[3])

    def on_market_volume(self, instrument, qty):
        """Add traded volume (lots, as printed, including this router's fills) for POV."""
        cdef int i = small_arg(instrument, "instrument")
        cdef int64_t lots = big_arg(qty, "qty")
        self._check_book(i, 0)
        if lots < 0 or lots > C_MAX_QTY:
            raise ValueError("qty must be 0 to MAX_QTY")
        self.volume[i] += lots

    # ============================================================ venue health
    cdef bint routable_c(self, int venue, int64_t now) noexcept:
        cdef Venue* vn = &self.venues[venue]
        return vn.open and (vn.health == HEALTH_UP or now >= vn.retry_at)

    cdef void _heard_from(self, int32_t ci, int64_t now) noexcept:
        # A child's first answer within the ack timeout proves the venue
        # responsive: healthy, and its backoff starts over. A late answer
        # (or a report on a resting child) proves it alive but not prompt:
        # it stays avoided until its retry, and the backoff is kept, so a
        # venue that always answers late is retried ever less often.
        cdef Child* c = &self.children[ci]
        cdef Venue* vn = &self.venues[c.venue]
        if not c.acked and now - c.sent_ts < self.ack_timeout_ns:
            vn.n_down = 0
        elif vn.health == HEALTH_DOWN and now < vn.retry_at:
            return
        vn.health = HEALTH_UP

    cdef void _mark_down(self, int venue, int64_t now) noexcept:
        cdef Venue* vn = &self.venues[venue]
        cdef int shift
        cdef int64_t delay
        if vn.health == HEALTH_DOWN and now < vn.retry_at:
            return      # already avoided: one outage is one backoff step
        vn.n_down += 1
        vn.health = HEALTH_DOWN
        shift = vn.n_down - 1 if vn.n_down - 1 < 62 else 62
        # recovery_ns doubled per consecutive timeout, capped (without overflowing).
        if self.recovery_ns > (self.recovery_max_ns >> shift):
            delay = self.recovery_max_ns
        else:
            delay = self.recovery_ns << shift
        vn.retry_at = now + delay

    cdef bint _any_open_lit(self) noexcept:
        cdef int v
        for v in range(self.n_venues):
            if not self.venues[v].dark and self.venues[v].open:
                return True
        return False

    cdef bint _any_routable_lit(self, int64_t now) noexcept:
        cdef int v
        for v in range(self.n_venues):
            if not self.venues[v].dark and self.routable_c(v, now):
                return True
        return False

    def venue_state(self, venue, now=0):
        """A venue's routing state and history as a dict.

        ``fill_rate_ppm`` is the passive fill-rate estimate used to choose
        where to post (history blended with the configured prior).
        """
        cdef int v = small_arg(venue, "venue")
        cdef int64_t now_c = big_arg(now, "now")
        cdef Venue* vn = self._venue(v)
        return {
            "dark": bool(vn.dark), "open": bool(vn.open),
            "health": VenueHealth(vn.health), "routable": bool(self.routable_c(v, now_c)),
            "retry_at": vn.retry_at, "consecutive_timeouts": vn.n_down,
            "latency_ns": vn.latency_ns, "children_sent": vn.n_sent, "rejects": vn.n_rejects,
            "timeouts": vn.n_timeouts, "fills_outside_limit": vn.n_fills_outside_limit,
            "overfills": vn.n_overfills,
            "passive_sent": vn.passive_sent,
            "passive_filled": vn.passive_filled, "fill_rate_ppm": self._fill_rate_ppm(vn),
        }

    cdef int64_t _fill_rate_ppm(self, Venue* vn) noexcept:
        return <int64_t>(((<i128>vn.passive_filled) * E6
                          + (<i128>self.fill_prior_ppm) * self.fill_prior_lots)
                         / (vn.passive_sent + self.fill_prior_lots))

    cdef i128 _fee(self, int instrument, int venue, bint maker, int64_t px_x2,
                   int64_t qty) noexcept:
        cdef Fees* f = &self.fees[<Py_ssize_t>instrument * self.n_venues + venue]
        cdef int64_t per = f.maker_per_lot if maker else f.taker_per_lot
        cdef int64_t cbps = f.maker_cbps if maker else f.taker_cbps
        # px_x2/2 * qty * cbps/1e6 ticks x lots, times 1e4 fee units per tick x lot.
        return (<i128>per) * qty + _round_div((<i128>px_x2) * qty * cbps, 200)

    # ============================================================ children
    cdef int _emit(self, int kind, int32_t ci, int64_t price, int64_t qty, int64_t min_qty,
                   int ord_type, int tif, int flags, int64_t now) except -1:
        cdef Action* a
        cdef Child* c = &self.children[ci]
        if self.n_actions == self.actions_cap:
            self._grow_actions()
        a = &self.actions[self.n_actions]
        a.child_id = c.child_id
        a.parent_id = self.parents[c.parent].parent_id
        a.price = price
        a.qty = qty
        a.min_qty = min_qty
        a.ts = now
        a.venue = c.venue
        a.instrument = self.parents[c.parent].instrument
        a.kind = <uint8_t>kind
        a.side = c.side
        a.ord_type = <uint8_t>ord_type
        a.tif = <uint8_t>tif
        a.flags = <uint8_t>flags
        a.role = c.role
        a._pad[0] = 0
        a._pad[1] = 0
        self.n_actions += 1
        return 0

    cdef int32_t _new_child(self, int32_t pi, int venue, int role, int64_t price, int64_t qty,
                            int64_t min_qty, int ord_type, int tif, int flags,
                            int64_t now) except -2:
        cdef int32_t ci
        cdef Child* c
        cdef Parent* p = &self.parents[pi]
        cdef Py_ssize_t b
        if self.child_free < 0:
            self._grow_children()
        ci = self.child_free
        c = &self.children[ci]
        self.child_free = c.next
        c.child_id = self.next_child_id
        self.next_child_id += 1
        c.price = price
        c.pending_price = 0
        c.pending_qty = 0
        c.qty = qty
        c.cum = 0
        c.sent_ts = now
        c.parent = pi
        c.venue = venue
        c.side = p.side
        c.role = <uint8_t>role
        c.acked = 0
        c.cancel_sent = 0
        c.next = -1
        c.prev = p.tail
        if p.tail >= 0:
            self.children[p.tail].next = ci
        else:
            p.head = ci
        p.tail = ci
        p.n_live += 1
        p.n_children += 1
        p.working += qty
        p.v_sent[venue] += qty
        p.v_children[venue] += 1
        self.venues[venue].n_sent += 1
        c.book_seq = 0
        if role == ROLE_SWEEP:
            b = (<Py_ssize_t>p.instrument * self.n_venues + venue) * 2 + (
                1 if _is_buy(p.side) else 0)
            c.book_seq = self.book_seq[b]
            self.res_live[b] += qty
        elif role == ROLE_POST:
            self._post_link(ci)
        idmap_put(&self.child_ids, c.child_id, ci)
        self._emit(ACT_NEW, ci, price, qty, min_qty, ord_type, tif, flags, now)
        return ci

    cdef Py_ssize_t _sweep_claim(self, int32_t ci) noexcept:
        """The book side a sweep child's lots count against (res_live, res_filled), or -1.

        -1 for any other role, and for a sweep child sent before its book's
        last update: that update may already show what the child took, so
        the child's lots must not hide anything on it.
        """
        cdef Child* c = &self.children[ci]
        cdef Py_ssize_t b
        if c.role != ROLE_SWEEP:
            return -1
        b = (<Py_ssize_t>self.parents[c.parent].instrument * self.n_venues + c.venue) * 2 + (
            1 if _is_buy(c.side) else 0)
        return b if c.book_seq == self.book_seq[b] else -1

    cdef void _confirm_resting(self, int32_t ci) noexcept:
        """The venue confirmed a passive child resting at its price (ack, replace, fill).

        Its own book side's update count is noted: only an update after this
        one can show the child in the displayed depth (``_own_resting``).
        """
        cdef Child* c = &self.children[ci]
        if c.role == ROLE_POST:
            c.book_seq = self.book_seq[
                (<Py_ssize_t>self.parents[c.parent].instrument * self.n_venues + c.venue) * 2
                + (0 if _is_buy(c.side) else 1)]

    cdef uint32_t _own_resting(self, Parent* p, int s) noexcept:
        """Fill ``own_lvl`` with our resting children that ``p``'s sweep cannot take.

        Under CANCEL_OLDEST a venue cancels the resting order of the same
        account that an incoming order meets and goes on matching: those lots
        are no liquidity for ``p``, yet they are no obstacle either. Counted
        per displayed level of book side ``s`` on every venue: the leaves of
        the live passive children of parents with ``p``'s ``stp_account``,
        confirmed at their price (no replace in flight) before the venue's
        last update, so that the depth the router holds shows them. Returns
        the venues where there are any (a bit per venue). Only the children
        resting at a displayed price are looked at (``post_index``): the cost
        is the displayed depth, not the number of orders resting.
        """
        cdef int nv = self.n_venues, L = self.max_levels, k, v
        cdef int32_t ci
        cdef Parent* q
        cdef Child* c
        cdef Py_ssize_t b
        cdef int64_t px
        cdef uint32_t found = 0
        memset(self.own_lvl, 0, <Py_ssize_t>nv * L * sizeof(int64_t))
        if self.post_index.used == 0:
            return 0
        for v in range(nv):
            b = (<Py_ssize_t>p.instrument * nv + v) * 2 + s
            for k in range(self.lvl_n[b]):
                px = self.lvl_px[b * L + k]
                ci = idmap_get(&self.post_index, _post_key(p.instrument, v, s, px))
                while ci >= 0:
                    c = &self.children[ci]
                    q = &self.parents[c.parent]
                    # (the index's keys are hashes: another book's children may share a list)
                    if (c.venue == v and c.price == px and (0 if _is_buy(c.side) else 1) == s
                            and q.instrument == p.instrument and q.stp_account == p.stp_account
                            and c.acked and c.pending_price == 0 and self.book_seq[b] > c.book_seq):
                        self.own_lvl[v * L + k] += c.qty - c.cum
                        found |= (<uint32_t>1) << v
                    ci = c.px_next
        return found

    cdef int64_t _post_key_of(self, int32_t ci) noexcept:
        """The ``post_index`` key child ``ci`` is under: its book side at its price."""
        cdef Child* c = &self.children[ci]
        return _post_key(self.parents[c.parent].instrument, c.venue,
                         0 if _is_buy(c.side) else 1, c.price)

    cdef int _post_link(self, int32_t ci) except -1:
        """Index passive child ``ci`` under its book side and price (after the list's first)."""
        cdef Child* c = &self.children[ci]
        cdef int64_t key = self._post_key_of(ci)
        cdef int32_t head = idmap_get(&self.post_index, key)
        c.px_prev = head
        c.px_next = -1
        if head < 0:
            idmap_put(&self.post_index, key, ci)
        else:
            c.px_next = self.children[head].px_next
            if c.px_next >= 0:
                self.children[c.px_next].px_prev = ci
            self.children[head].px_next = ci
        return 0

    cdef void _post_unlink(self, int32_t ci) noexcept:
        """Take passive child ``ci`` out of the index (before its price changes or it ends)."""
        cdef Child* c = &self.children[ci]
        cdef int64_t key
        if c.px_prev >= 0:
            self.children[c.px_prev].px_next = c.px_next
        else:
            key = self._post_key_of(ci)
            if c.px_next >= 0:
                idmap_set(&self.post_index, key, c.px_next)
            else:
                idmap_del(&self.post_index, key)
        if c.px_next >= 0:
            self.children[c.px_next].px_prev = c.px_prev
        c.px_prev = c.px_next = -1

    cdef int32_t _live_child(self, int64_t child_id) noexcept:
        if child_id <= 0:
            return -1
        return idmap_get(&self.child_ids, child_id)

    cdef void _child_done(self, int32_t ci) noexcept:
        """Retire a child: what it did not fill goes back to its parent."""
        self._child_off(ci)
        idmap_del(&self.child_ids, self.children[ci].child_id)
        self._free_child(ci)

    cdef void _ended_short(self, int32_t ci) noexcept:
        """Its venue ended a live child (a cancel, a fill with leaves 0): one of a sweep
        that came back short of its quantity, not by our cancel, says the displayed
        size was not there, so a sweep leaves that book alone until it updates."""
        cdef Child* c = &self.children[ci]
        if c.role == ROLE_SWEEP and not c.cancel_sent and c.cum < c.qty:
            self.stale[<Py_ssize_t>self.parents[c.parent].instrument * self.n_venues
                       + c.venue] = 1

    cdef void _free_child(self, int32_t ci) noexcept:
        self.children[ci].child_id = 0
        self.children[ci].next = self.child_free
        self.child_free = ci

    cdef void _child_off(self, int32_t ci) noexcept:
        """Take a child off its parent's live children: what it did not fill goes back to
        the parent (its slot and id are the caller's)."""
        cdef Child* c = &self.children[ci]
        cdef Parent* p = &self.parents[c.parent]
        cdef int64_t leaves = c.qty - c.cum
        cdef Py_ssize_t b = self._sweep_claim(ci)
        p.working -= leaves
        if c.pending_qty:
            # Its amend will not happen, but the lots it was to take off the
            # parent are at no venue now: they go at once, as reduce_parent
            # takes such lots (never below what the child filled). Kept, the
            # parent would route them again, and the caller, its resize not
            # done, would cancel them as they went out.
            p.qty -= c.qty - (c.pending_qty if c.pending_qty > c.cum else c.cum)
            c.pending_qty = 0
            p.n_amending -= 1
        if b >= 0:
            self.res_live[b] -= leaves
        elif c.role == ROLE_POST:
            self.venues[c.venue].passive_sent += c.qty
            self.venues[c.venue].passive_filled += c.cum
            self._post_unlink(ci)
        if c.prev >= 0:
            self.children[c.prev].next = c.next
        else:
            p.head = c.next
        if c.next >= 0:
            self.children[c.next].prev = c.prev
        else:
            p.tail = c.prev
        p.n_live -= 1

    # A child whose fills reached its quantity while its venue still works lots
    # of it (a venue that overfilled it, or counts it larger) is *draining*: done
    # here (off the live children, its lots neither working nor routable), but
    # the venue can fill it until the cancel of its remainder lands, and those
    # lots were traded. They are booked in the parent as the engine books them
    # in the order and risk (refused, the router routed them again), and the
    # parent ends only once no child of it can fill any more, so no fill ever
    # follows its end. A draining child sits in ``drain_ids``, looked up only
    # when a report names no live child: the live paths cost nothing more.

    cdef int32_t _draining_child(self, int64_t child_id) noexcept:
        if child_id <= 0:
            return -1
        return idmap_get(&self.drain_ids, child_id)

    cdef int _drain(self, int32_t ci, int64_t now) except -1:
        """Make a live child draining, and ask its venue (once) to cancel what it works."""
        cdef Child* c = &self.children[ci]
        if not c.cancel_sent:
            c.cancel_sent = 1
            self._emit(ACT_CANCEL, ci, c.price, c.qty, 0, 0, 0, 0, now)
        self._child_off(ci)
        idmap_del(&self.child_ids, c.child_id)
        idmap_put(&self.drain_ids, c.child_id, ci)
        self.parents[c.parent].n_draining += 1
        return 0

    cdef int _drained(self, int32_t ci, int64_t now) except -1:
        """Its venue is done with a draining child: forget it; its parent may end."""
        cdef int32_t pi = self.children[ci].parent
        idmap_del(&self.drain_ids, self.children[ci].child_id)
        self._free_child(ci)
        self.parents[pi].n_draining -= 1
        return self._advance(pi, now)

    cdef int _drain_report(self, int64_t child_id, bint ended, int64_t now) except -1:
        """A report other than a fill naming no live child: 0 for a draining one (``ended``:
        the venue says it is done there: canceled, expired or rejected), else
        ``UNKNOWN_ORDER``. Nothing else of it matters: its price, size and the
        parent's session are no longer the router's (the cancel asked for is
        what an expiry of it answers)."""
        cdef int32_t ci = self._draining_child(child_id)
        if ci < 0:
            return UNKNOWN_ORDER
        self._heard_from(ci, now)
        return self._drained(ci, now) if ended else 0

    # ============================================================ strategies
    cdef int64_t _sweep(self, int32_t pi, int64_t want, int64_t now) except -1:
        """Take up to ``want`` lots across the routable lit venues; returns the lots sent.

        A k-way merge over the venues' levels, best price first, then the
        lower fee-adjusted price, then the lower latency, then the lower venue
        index. Each venue gets one IOC child at the worst price taken there.
        Displayed size claimed or filled by our sweep children sent since
        the venue's last update is skipped (children sent before it claim
        nothing: the update may already show what they took).

        Under CANCEL_OLDEST, our own resting children in the parent's
        self-trade scope (``_own_resting``) are skipped on a venue whose child
        goes past them: the venue cancels them on the way instead of trading,
        so they are not there to take, and the child is priced down to the
        level that holds what it can take. A level of ours the sweep reaches
        but its venue's child would stop short of (or that would get none)
        counts as before: the child goes through it, so that the sweep never
        trades through our own quote (nor leaves standing in its way the
        order the parent's mode says to cancel).
        """
        cdef Parent* p = &self.parents[pi]
        cdef int nv = self.n_venues, L = self.max_levels, i = p.instrument
        cdef bint buy = _is_buy(p.side)
        cdef int s = 1 if buy else 0       # the book side we take: asks for a buy
        # Per candidate venue: its levels, where we are in them, and what the
        # comparison needs, loaded once so the merge loop touches only these.
        cdef const int64_t* lpx[MAX_VENUES]
        cdef const int64_t* lqty[MAX_VENUES]
        cdef const int64_t* lown[MAX_VENUES]   # our lots to skip per level, or NULL
        cdef int32_t pos[MAX_VENUES]
        cdef int32_t nlev[MAX_VENUES]
        cdef int64_t cur[MAX_VENUES]       # price at pos
        cdef int64_t avail[MAX_VENUES]     # lots left at pos
        cdef int64_t per_lot[MAX_VENUES]
        cdef int64_t cbps[MAX_VENUES]
        cdef int64_t lat[MAX_VENUES]
        cdef int64_t alloc[MAX_VENUES]
        cdef int64_t worst[MAX_VENUES]
        cdef int cand[MAX_VENUES]          # venues with levels left, ascending index
        cdef int order[MAX_VENUES]         # venues in the order first used
        # Venues whose own lots are skipped: their first level not all
        # claimed, the lots of it claimed, and their levels within the limit.
        cdef int32_t first[MAX_VENUES]
        cdef int64_t first_claimed[MAX_VENUES]
        cdef int32_t nlim[MAX_VENUES]
        cdef int n_cand, n_order, v, j, best, k, n
        cdef int64_t limit = p.limit_px, remaining, skip, px, bpx, take
        cdef int64_t first_px, last_px = 0, fee_v, fee_b, hide
        cdef uint32_t hidden = 0           # venues with lots of ours in own_lvl
        cdef uint32_t used                 # venues with a child
        cdef bint settled
        cdef Py_ssize_t b
        cdef Venue* vn
        # The venue's self-trade prevention acts on the incoming order's mode:
        # only CANCEL_OLDEST removes our resting orders and keeps matching.
        # (CANCEL_NEWEST and CANCEL_BOTH end the child on meeting them: the
        # engine cancels the parent, saying why; STP_NONE trades with them.)
        if p.stp == CANCEL_OLDEST:
            hidden = self._own_resting(p, s)
        while True:
            n_cand = n_order = 0
            remaining = want
            first_px = 0
            for v in range(nv):
                first[v] = -1
                vn = &self.venues[v]
                if vn.dark or not self.routable_c(v, now) or self.stale[<Py_ssize_t>i * nv + v]:
                    continue
                b = (<Py_ssize_t>i * nv + v) * 2 + s
                n = self.lvl_n[b]
                lpx[v] = &self.lvl_px[b * L]
                lqty[v] = &self.lvl_qty[b * L]
                skip = self.res_live[b] + self.res_filled[b]
                k = 0
                while k < n and skip >= lqty[v][k]:
                    skip -= lqty[v][k]
                    k += 1
                if limit > 0:
                    # Levels are best first: stop at the first one beyond the limit.
                    while n > k and (lpx[v][n - 1] > limit if buy else lpx[v][n - 1] < limit):
                        n -= 1
                if k >= n:
                    continue
                avail[v] = lqty[v][k] - skip
                lown[v] = NULL
                if (hidden >> v) & 1:
                    lown[v] = &self.own_lvl[v * L]
                    first[v], first_claimed[v], nlim[v] = k, skip, n
                    # Claims are counted from the best level down, as if our
                    # children had taken our own resting lots first: that
                    # never hides more than can still be ours (hiding a third
                    # party's lots could make the sweep trade through them).
                    hide = lown[v][k] - skip
                    if hide > 0:
                        avail[v] -= hide if hide < avail[v] else avail[v]
                    while avail[v] == 0:
                        k += 1
                        if k >= n:
                            break
                        avail[v] = _level_avail(lqty[v], lown[v], k)
                    if k >= n:
                        continue
                pos[v] = k
                nlev[v] = n
                cur[v] = lpx[v][k]
                per_lot[v] = self.fees[<Py_ssize_t>i * nv + v].taker_per_lot * 100
                cbps[v] = self.fees[<Py_ssize_t>i * nv + v].taker_cbps
                lat[v] = vn.latency_ns
                alloc[v] = 0
                cand[n_cand] = v
                n_cand += 1
            while remaining > 0 and n_cand > 0:
                best = cand[0]
                bpx = cur[best]
                for j in range(1, n_cand):
                    v = cand[j]
                    px = cur[v]
                    if px != bpx:
                        if (px < bpx) == buy:
                            best, bpx = v, px
                        continue
                    # Same price: the lower fee-adjusted price, then the faster venue.
                    fee_v = per_lot[v] + px * cbps[v]
                    fee_b = per_lot[best] + px * cbps[best]
                    if fee_v < fee_b or (fee_v == fee_b and lat[v] < lat[best]):
                        best = v
                if first_px == 0:
                    first_px = bpx
                last_px = bpx
                take = avail[best] if avail[best] < remaining else remaining
                if alloc[best] == 0:
                    order[n_order] = best
                    n_order += 1
                alloc[best] += take
                worst[best] = bpx
                remaining -= take
                avail[best] -= take
                if avail[best] == 0:
                    pos[best] += 1
                    while pos[best] < nlev[best]:
                        avail[best] = _level_avail(lqty[best], lown[best], pos[best])
                        if avail[best] > 0:
                            break
                        pos[best] += 1      # only our own lots there
                    if pos[best] < nlev[best]:
                        cur[best] = lpx[best][pos[best]]
                    else:
                        # Exhausted: drop it, keeping the rest in index order.
                        j = 0
                        while cand[j] != best:
                            j += 1
                        while j < n_cand - 1:
                            cand[j] = cand[j + 1]
                            j += 1
                        n_cand -= 1
            if hidden == 0:
                break
            # Every level of ours the sweep reaches (at or better than the
            # worst price taken; any within the limit while lots are left to
            # take) must lie on its venue's child's way. The first one per
            # venue that does not counts as before, and the allocation is made
            # again: each pass counts at least one more level, so this ends.
            used = 0
            for j in range(n_order):
                used |= (<uint32_t>1) << order[j]
            settled = True
            for v in range(nv):
                if not (hidden >> v) & 1 or first[v] < 0:
                    continue
                for k in range(first[v], nlim[v]):
                    if self.own_lvl[v * L + k] - (first_claimed[v] if k == first[v] else 0) <= 0:
                        continue
                    px = lpx[v][k]
                    if remaining == 0 and (px > last_px if buy else px < last_px):
                        break           # the sweep does not get that far
                    # At the child's own worst price it may stop short of our
                    # lots (behind others' in the queue): counted, unless the
                    # sweep goes no further anywhere and fills the parent.
                    if (not (used >> v) & 1 or (worst[v] < px if buy else worst[v] > px)
                            or (worst[v] == px and (remaining > 0 or (
                                last_px > px if buy else last_px < px)))):
                        self.own_lvl[v * L + k] = 0
                        settled = False
                        break
            if settled:
                break
        for j in range(n_order):
            v = order[j]
            # Beyond the best price the child relies on its siblings taking
            # every better protected quote: an intermarket sweep order.
            self._new_child(pi, v, ROLE_SWEEP, worst[v], alloc[v], 0, LIMIT, IOC,
                            CF_ISO if worst[v] != first_px else 0, now)
        return want - remaining

    cdef int _ping_dark(self, int32_t pi, int64_t now) except -1:
        """Send one midpoint IOC to the best untried dark venue; returns 1 if sent."""
        cdef Parent* p = &self.parents[pi]
        cdef int64_t q[4]
        cdef int64_t mid2, free, key, best_key = 0
        cdef int v, best = -1
        cdef Venue* vn
        cdef Fees* f
        self.nbbo_c(p.instrument, q)
        if q[0] == 0 or q[2] == 0:
            return 0                        # no two-sided NBBO: no midpoint
        mid2 = q[0] + q[2]
        if p.limit_px > 0 and (mid2 > 2 * p.limit_px if _is_buy(p.side)
                               else mid2 < 2 * p.limit_px):
            return 0                        # the midpoint is outside the limit
        free = p.qty - p.cum - p.working
        if free <= 0 or free < p.dark_min_qty:
            return 0
        for v in range(self.n_venues):
            vn = &self.venues[v]
            if not vn.dark or (p.dark_tried >> v) & 1 or not self.routable_c(v, now):
                continue
            f = &self.fees[<Py_ssize_t>p.instrument * self.n_venues + v]
            key = f.taker_per_lot * 200 + mid2 * f.taker_cbps   # fee at the mid, 2e-6 tick/lot
            if best < 0 or key < best_key or (
                    key == best_key and vn.latency_ns < self.venues[best].latency_ns):
                best, best_key = v, key
        if best < 0:
            return 0
        p.dark_tried |= (<uint32_t>1) << best
        self._new_child(pi, best, ROLE_DARK, p.limit_px, free, p.dark_min_qty,
                        LIMIT if p.limit_px > 0 else MARKET, IOC, CF_MID_PEG, now)
        return 1

    cdef int64_t _passive_price(self, Parent* p) noexcept:
        """Where a resting child goes: at the limit (``post_at_limit``) or joining the
        national best on our side within the limit; never crossing the far touch."""
        cdef int64_t q[4]
        cdef int64_t px = p.limit_px
        self.nbbo_c(p.instrument, q)
        if _is_buy(p.side):
            if not p.post_at_limit and q[0] > 0 and q[0] < px:
                px = q[0]
            if q[2] > 0 and px >= q[2]:
                px = q[2] - 1
        else:
            if not p.post_at_limit and q[2] > 0 and q[2] > px:
                px = q[2]
            if q[0] > 0 and px <= q[0]:
                px = q[0] + 1
        # 0: nowhere to post (a bid at the top of the price range leaves a
        # seller no passive price); the parent waits for the book to move.
        return px if 0 < px <= C_MAX_PRICE else 0

    cdef int _choose_post_venue(self, Parent* p, int64_t px, int64_t now) noexcept:
        """The lit venue with the best expected value of posting at ``px``.

        score = fill estimate (ppm) * (passive_value - maker fee) per lot,
        fill estimate = fill rate * queue_ref / (queue_ref + lots ahead at px).
        The edge is floored at 1 so that, when every maker fee exceeds the
        value, the likelier fill still wins. Ties: lower latency, lower index.
        """
        cdef int v, best = -1, k, n
        cdef int s = 0 if _is_buy(p.side) else 1      # our own side of the book
        cdef Py_ssize_t b
        cdef int64_t ahead, pfill, edge
        cdef i128 score, best_score = 0
        cdef Venue* vn
        cdef Fees* f
        for v in range(self.n_venues):
            vn = &self.venues[v]
            if (vn.dark or not self.routable_c(v, now)
                    or self.stale[<Py_ssize_t>p.instrument * self.n_venues + v]):
                continue
            b = ((<Py_ssize_t>p.instrument * self.n_venues + v) * 2 + s) * self.max_levels
            n = self.lvl_n[(<Py_ssize_t>p.instrument * self.n_venues + v) * 2 + s]
            ahead = 0
            for k in range(n):
                if self.lvl_px[b + k] == px:
                    ahead = self.lvl_qty[b + k]
                    break
            pfill = <int64_t>((<i128>self._fill_rate_ppm(vn)) * self.queue_ref_lots
                              / (self.queue_ref_lots + ahead))
            f = &self.fees[<Py_ssize_t>p.instrument * self.n_venues + v]
            edge = self.passive_value * 100 - (f.maker_per_lot * 100 + px * f.maker_cbps)
            if edge < 1:
                edge = 1
            score = (<i128>pfill) * edge
            if best < 0 or score > best_score or (
                    score == best_score and vn.latency_ns < self.venues[best].latency_ns):
                best, best_score = v, score
        return best

    cdef int _post(self, int32_t pi, int64_t now) except -1:
        cdef Parent* p = &self.parents[pi]
        cdef int64_t free = p.qty - p.cum - p.working
        cdef int64_t px
        cdef int v
        if free <= 0:
            return 0
        px = self._passive_price(p)
        if px <= 0:
            return 0
        v = self._choose_post_venue(p, px, now)
        if v < 0:
            return 0
        p.last_reprice_ts = now
        self._new_child(pi, v, ROLE_POST, px, free, 0, LIMIT, p.tif, CF_POST_ONLY, now)
        return 1

    cdef int _reprice(self, int32_t pi, int64_t now) except -1:
        """Move the resting child to the new national best when it moved away from us."""
        cdef Parent* p = &self.parents[pi]
        cdef int32_t ci = p.head
        cdef Child* c
        cdef int64_t px, moved
        if ci < 0:
            return 0
        c = &self.children[ci]
        if (c.role != ROLE_POST or not c.acked or c.pending_price or c.pending_qty
                or c.cancel_sent
                or now - p.last_reprice_ts < self.reprice_interval_ns):
            return 0
        px = self._passive_price(p)
        if px <= 0:
            return 0
        moved = px - c.price if _is_buy(p.side) else c.price - px
        if moved < self.reprice_ticks:
            return 0
        c.pending_price = px
        p.last_reprice_ts = now
        self._emit(ACT_REPLACE, ci, px, c.qty, 0, LIMIT, p.tif, CF_POST_ONLY, now)
        return 1

    cdef int64_t _target(self, Parent* p, int64_t now) noexcept:
        """Cumulative quantity a scheduled parent should have sent by ``now``
        (before its ``end_ns``: ``_advance`` ends a schedule at its end)."""
        cdef int64_t k, n = p.n_slices, target
        cdef i128 t
        if p.strategy == STRAT_POV:
            if now <= p.start_ns:
                # Volume counts from the start: what printed until then is not
                # the order's to take part in (volume comes in before the tick).
                p.vol_start = self.volume[p.instrument]
                return 0
            t = (<i128>(self.volume[p.instrument] - p.vol_start)) * p.pov_ppm / E6
            return p.qty if t > p.qty else <int64_t>t
        if now < p.start_ns:
            return 0
        # Slice k (0-based) begins at start + ceil(k * duration / n); capped, a
        # moment past the end still means the whole quantity, never a bucket past it.
        k = <int64_t>((<i128>(now - p.start_ns)) * n / (p.end_ns - p.start_ns)) + 1
        if k > n:
            k = n
        if p.strategy == STRAT_TWAP:
            target = <int64_t>((<i128>p.qty) * k / n)
        else:
            # Exact: qty * (weights through bucket k) / (all weights), floored.
            target = <int64_t>((<i128>p.qty) * p.cum_weight[k - 1] / p.cum_weight[n - 1])
        return target

    # ============================================================ the parent's state machine
    cdef int _advance(self, int32_t pi, int64_t now) except -1:
        """Do whatever the parent needs next; called after every event that touches it."""
        cdef Parent* p = &self.parents[pi]
        cdef int64_t free, target
        if p.phase == PH_DONE:
            return 0
        if p.clock >= CLOCK_PARKED:
            # An event touched it: the clock visits it again from the next tick.
            self._wake(pi)
        # Filled first: a child may fill in full after a cancel was asked for
        # (the cancel came too late), and the record must then say FILLED.
        # cum == qty leaves nothing working, unless a venue overfilled a
        # child: the others are then canceled (what they fill meanwhile is
        # booked too), and the parent ends FILLED when they are done.
        if p.cum >= p.qty:
            if p.n_live > 0:
                self._cancel_children(pi, now)
            else:
                self._end(pi, FILLED, 0, now)
            return 0
        if p.cancel_requested != CR_NONE:
            if p.n_live == 0:
                self._end(pi, CANCELED if p.cancel_requested == CR_USER else EXPIRED, 0, now)
            return 0
        if p.phase == PH_DARK:
            if p.n_live > 0 or self._ping_dark(pi, now):
                return 0
            p.phase = PH_SWEEP
            p.rounds = 0
        if p.phase == PH_SWEEP:
            free = p.qty - p.cum - p.working
            if free > 0 and p.rounds <= self.max_reroutes:
                if self._sweep(pi, free, now) > 0:
                    p.rounds += 1
                    return 0
            if p.n_live > 0:
                return 0
            if p.post_residual and p.limit_px > 0 and (p.tif == DAY or p.tif == GTC):
                # The rest of a limit order rests at its limit, as on an exchange.
                p.phase = PH_POST
                p.post_at_limit = 1
                p.rounds = 0
            else:
                self._end(pi, CANCELED,
                          REROUTE_LIMIT if p.rounds > self.max_reroutes
                          else NO_LIQUIDITY if self._any_routable_lit(now) else NO_ROUTE,
                          now)
                return 0
        if p.phase == PH_POST:
            if p.n_live > 0:
                self._reprice(pi, now)
                return 0
            if p.rounds > self.max_reroutes:
                self._end(pi, CANCELED, REROUTE_LIMIT, now)
                return 0
            if self._post(pi, now):
                p.rounds += 1
            elif p.tif == DAY and not self._any_open_lit():
                # Every lit venue is closed (a child refused at the close): a
                # day order's day is over. A GTC one waits for the next open,
                # and any order for a venue that is only down.
                self._end(pi, EXPIRED, VENUE_CLOSED, now)
            return 0
        if p.phase == PH_SCHED:
            if p.end_ns > 0 and now >= p.end_ns:
                # The window is over: nothing new is sent (a child that came back
                # unfilled is not swept again); what is left expires once the
                # children still working are done.
                if p.n_live == 0:
                    self._end(pi, EXPIRED, 0, now)
                return 0
            target = self._target(p, now)
            if target > p.last_target:
                p.last_target = target
                p.rounds = 0            # a new slice: a fresh set of routing rounds
            free = target - p.cum - p.working
            if (free > 0 and (free >= self.slice_min_qty or target == p.qty)
                    and p.rounds <= self.max_reroutes):
                if self._sweep(pi, free, now) > 0:
                    p.rounds += 1
                    return 0
        return 0

    cdef int _end(self, int32_t pi, int status, int reason, int64_t now) except -1:
        """Finish a parent, unless a child of it is draining: it may still fill, and an
        order's fills never follow its end. Its last draining child's end comes back
        here through ``_advance``, which decides again (a fill meanwhile can make
        it FILLED, or leave lots to route)."""
        if self.parents[pi].n_draining:
            return 0
        return self._finish(pi, status, reason, now)

    cdef int _finish(self, int32_t pi, int status, int reason, int64_t now) except -1:
        cdef Parent* p = &self.parents[pi]
        cdef int32_t* grown
        p.phase = PH_DONE
        p.status = <uint8_t>status
        p.reason = <uint16_t>reason
        p.done_ts = now
        if p.prev_active >= 0:
            self.parents[p.prev_active].next_active = p.next_active
        else:
            self.active_head = p.next_active
        if p.next_active >= 0:
            self.parents[p.next_active].prev_active = p.prev_active
        else:
            self.active_tail = p.prev_active
        p.prev_active = p.next_active = -1
        if p.clock == CLOCK_AWAKE:
            self._awake_unlink(pi)
        elif p.clock >= CLOCK_PARKED:     # (events wake a parent before finishing it)
            self._unpark(pi)
        p.clock = CLOCK_OFF             # (a WOKEN entry left behind is skipped)
        if self.n_finished == self.finished_cap:
            grown = <int32_t*>PyMem_Realloc(self.finished, 2 * self.finished_cap * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self.finished = grown
            self.finished_cap *= 2
        self.finished[self.n_finished] = pi
        self.n_finished += 1
        return 0

    # ============================================================ C API: orders
    cdef int route_c(self, int64_t parent_id, int instrument, int side, int64_t qty,
                     int64_t limit_px, int strategy, int tif, int64_t now,
                     const RouteParams* params) except -1:
        """Accept a parent order and send its first children; returns 0 or a RejectReason."""
        cdef int64_t q[4]
        cdef int64_t start = now, end = 0, slices = 0, pov = 0, w
        cdef int64_t dark_min = self.dark_min_qty
        cdef bint post_residual = self.post_residual, marketable, buy = side == BUY
        cdef bint at_limit = False
        cdef int64_t stp_account = 0, stp = -1
        cdef int32_t pi
        cdef Parent* p
        cdef Py_ssize_t k
        cdef i128 acc = 0
        cdef int v
        if parent_id <= 0:
            return INVALID_ORDER_ID
        if idmap_get(&self.parent_ids, parent_id) >= 0:
            return DUPLICATE_ORDER_ID
        if instrument < 0 or instrument >= self.n_instruments:
            return UNKNOWN_INSTRUMENT
        if side != BUY and side != SELL and side != SELL_SHORT:
            return INVALID_SIDE
        if qty <= 0 or qty > C_MAX_QTY:
            return INVALID_QTY
        if limit_px < 0 or limit_px > C_MAX_PRICE:
            return INVALID_PRICE
        if tif != DAY and tif != GTC and tif != IOC:
            return INVALID_TIF          # FOK cannot be honoured across venues
        # Only a parent naming no strategy takes the configured default: one
        # naming STRAT_AUTO is routed by auto whatever the default is.
        if strategy == STRAT_DEFAULT:
            strategy = self.default_strategy
        if strategy < STRAT_AUTO or strategy > STRAT_POV:
            return INVALID_STRATEGY
        self.nbbo_c(instrument, q)
        if strategy == STRAT_AUTO:
            marketable = limit_px == 0 or (
                q[2] > 0 and limit_px >= q[2] if buy else q[0] > 0 and limit_px <= q[0])
            strategy = STRAT_SWEEP if marketable or tif == IOC else STRAT_PASSIVE
            at_limit = True     # a plain limit order rests at its limit
        if strategy == STRAT_PASSIVE and (limit_px == 0 or tif == IOC):
            return INVALID_STRATEGY     # resting needs a price and a resting time in force
        if params != NULL:
            if params.start_ns >= 0:
                start = params.start_ns
            if params.end_ns >= 0:
                end = params.end_ns
            if params.slices >= 0:
                slices = params.slices
            if params.pov_ppm >= 0:
                pov = params.pov_ppm
            if params.dark_min_qty >= 0:
                dark_min = params.dark_min_qty
            if params.post_residual >= 0:
                post_residual = params.post_residual != 0
            stp_account = params.stp_account
            stp = params.stp
        if stp < -1 or stp > CANCEL_BOTH:
            return INVALID_STP_MODE
        if strategy == STRAT_TWAP or strategy == STRAT_VWAP:
            if end <= start:
                return INVALID_SCHEDULE
            if strategy == STRAT_TWAP:
                if slices == 0:
                    slices = self.twap_slices
                if slices > 1000000:
                    return INVALID_SCHEDULE
            else:
                if params == NULL or params.profile == NULL or params.n_profile < 1 \
                        or params.n_profile > 1000000:
                    return INVALID_SCHEDULE
                for k in range(params.n_profile):
                    w = params.profile[k]
                    if w < 0 or w > C_MAX_QTY * 1024:
                        return INVALID_SCHEDULE
                    acc += w
                if acc <= 0:
                    return INVALID_SCHEDULE
                slices = params.n_profile
        elif strategy == STRAT_POV:
            if pov < 1 or pov > E6 or (end != 0 and end <= start):
                return INVALID_SCHEDULE
        if dark_min > C_MAX_QTY:
            return INVALID_QTY
        for v in range(self.n_venues):
            if self.routable_c(v, now):
                break
        else:
            return NO_ROUTE

        if self.parent_free < 0:
            self._grow_parents()
        pi = self.parent_free
        p = &self.parents[pi]
        self.parent_free = p.next_active
        memset(p, 0, sizeof(Parent))
        if strategy == STRAT_VWAP:
            # The profile becomes cumulative weights (128 bits: up to 1e6 buckets
            # of 2^50 each), so a bucket's target is qty times an exact share,
            # and the last bucket's is exactly the whole qty.
            p.cum_weight = <i128*>PyMem_Malloc(params.n_profile * sizeof(i128))
            if p.cum_weight == NULL:
                raise MemoryError()
            acc = 0
            for k in range(params.n_profile):
                acc += params.profile[k]
                p.cum_weight[k] = acc
        p.parent_id = parent_id
        p.qty = qty
        p.limit_px = limit_px
        p.arrival_ts = now
        p.arr_bid, p.arr_bid_qty, p.arr_ask, p.arr_ask_qty = q[0], q[1], q[2], q[3]
        p.start_ns = start
        p.end_ns = end
        p.pov_ppm = pov
        p.vol_start = self.volume[instrument]
        p.dark_min_qty = dark_min
        p.n_slices = <int32_t>slices
        p.instrument = instrument
        p.head = p.tail = -1
        p.side = <uint8_t>side
        p.ord_type = LIMIT if limit_px > 0 else MARKET
        p.tif = <uint8_t>tif
        p.strategy = <uint8_t>strategy
        p.status = NEW
        p.post_residual = post_residual
        p.post_at_limit = at_limit
        p.stp_account = stp_account
        p.stp = <uint8_t>(STP_UNKNOWN if stp < 0 else stp)
        if strategy == STRAT_DARK_FIRST:
            p.phase = PH_DARK
        elif strategy == STRAT_SWEEP:
            p.phase = PH_SWEEP
        elif strategy == STRAT_PASSIVE:
            p.phase = PH_POST
        else:
            p.phase = PH_SCHED
        idmap_put(&self.parent_ids, parent_id, pi)
        p.next_active = -1
        p.prev_active = self.active_tail
        if self.active_tail >= 0:
            self.parents[self.active_tail].next_active = pi
        else:
            self.active_head = pi
        self.active_tail = pi
        p.seq = self.next_seq
        self.next_seq += 1
        self._awake_link_before(pi, -1)
        p.clock = CLOCK_AWAKE
        self._advance(pi, now)
        return 0

    cdef int cancel_parent_c(self, int64_t parent_id, int64_t now) except -1:
        """Stop a parent: cancel its live children; it ends CANCELED when they are done."""
        cdef int32_t pi = idmap_get(&self.parent_ids, parent_id) if parent_id > 0 else -1
        if pi < 0 or self.parents[pi].phase == PH_DONE:
            return UNKNOWN_ORDER
        self.parents[pi].cancel_requested = CR_USER
        self._cancel_children(pi, now)
        self._advance(pi, now)
        return 0

    cdef int _cancel_children(self, int32_t pi, int64_t now) except -1:
        """Queue an ``ACT_CANCEL`` for each live child of a parent not already canceling."""
        cdef int32_t ci = self.parents[pi].head
        cdef Child* c
        while ci >= 0:
            c = &self.children[ci]
            if not c.cancel_sent:
                c.cancel_sent = 1
                self._emit(ACT_CANCEL, ci, c.price, c.qty, 0, 0, 0, 0, now)
            ci = c.next
        return 0

    cdef int reduce_parent_c(self, int64_t parent_id, int64_t cut, int64_t now) except -1:
        """Take ``cut`` lots off a parent in place, keeping its children's queue places.

        Lots not at any venue go at once; the rest come off the newest
        resting child (it has the least queue place to lose) by an amend
        (same price, lower quantity: the venue keeps its place), taking
        effect when the venue confirms it (``on_replaced``); until then the
        child can still fill its old size. A child that ends before (a short
        fill with leaves 0, a venue's cancel) leaves those lots at no venue:
        they go then, and the rest of the new size is routed again. Refused (``ORDER_NOT_REPLACEABLE``,
        nothing changed) unless every live child is an acknowledged passive
        child with nothing else in flight at an open venue (a closed one
        refuses the amend), and the newest keeps lots after the cut; the
        caller then cancels and routes again instead (so, too, while a child is
        draining: what it fills meanwhile settles before the new terms).
        """
        cdef int32_t pi = idmap_get(&self.parent_ids, parent_id) if parent_id > 0 else -1
        cdef int32_t ci
        cdef Parent* p
        cdef Child* c
        cdef int64_t free, rest
        if pi < 0 or self.parents[pi].phase == PH_DONE:
            return UNKNOWN_ORDER
        p = &self.parents[pi]
        if (cut <= 0 or cut >= p.qty - p.cum or p.cancel_requested != CR_NONE
                or p.n_amending or p.n_draining or p.strategy == STRAT_TWAP
                or p.strategy == STRAT_VWAP or p.strategy == STRAT_POV):
            return ORDER_NOT_REPLACEABLE
        ci = p.tail
        while ci >= 0:
            c = &self.children[ci]
            if (c.role != ROLE_POST or not c.acked or c.cancel_sent or c.pending_price
                    or c.pending_qty or not self.venues[c.venue].open):
                return ORDER_NOT_REPLACEABLE
            ci = c.prev
        free = p.qty - p.cum - p.working
        if free < 0:
            free = 0
        rest = cut - free if cut > free else 0      # (then there is a live child)
        if rest:
            c = &self.children[p.tail]
            if rest >= c.qty - c.cum:
                return ORDER_NOT_REPLACEABLE        # cut to nothing: that is a cancel
            c.pending_qty = c.qty - rest
            p.n_amending += 1
            self._emit(ACT_REPLACE, p.tail, c.price, c.pending_qty, 0, LIMIT, p.tif,
                       CF_POST_ONLY, now)
        p.qty -= cut - rest             # lots at no venue go at once
        if p.clock >= CLOCK_PARKED:
            self._wake(pi)              # (its tick would do nothing; kept simple: events wake)
        return 0

    # ============================================================ C API: reports
    cdef int on_ack_c(self, int64_t child_id, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        if ci < 0:
            return self._drain_report(child_id, False, now)
        self._heard_from(ci, now)
        self.children[ci].acked = 1
        self._confirm_resting(ci)
        return self._advance(self.children[ci].parent, now)

    cdef int on_fill_c(self, int64_t child_id, int64_t last_qty, int64_t last_px_x2,
                       int64_t fee, bint has_fee, int64_t leaves, int64_t now) except -1:
        # ``leaves``: what the venue says it still works of the child after this
        # fill; negative: not said (the router's own count).
        cdef int32_t ci = self._live_child(child_id)
        cdef int32_t pi
        cdef Child* c
        cdef Parent* p
        cdef i128 fill_fee, fee_total, notional, venue_fees
        cdef int64_t booked
        cdef Py_ssize_t k
        cdef bint draining = False
        if ci < 0:
            ci = self._draining_child(child_id)
            if ci < 0:
                return UNKNOWN_ORDER
            draining = True
        c = &self.children[ci]
        pi = c.parent
        p = &self.parents[pi]
        if last_qty <= 0 or last_qty > C_MAX_QTY or last_px_x2 <= 0 \
                or last_px_x2 > 2 * C_MAX_PRICE:
            if leaves == 0:
                # Not a fill it can book, but the venue works nothing more of the
                # child: it ends there as by a cancel, its lots unfilled (the
                # engine forgets it at such a report; kept, the parent waited).
                self.on_canceled_c(child_id, now)
            return INVALID_QTY if last_qty <= 0 or last_qty > C_MAX_QTY else INVALID_PRICE
        # A venue that fills past the child's leaves is at fault, but the lots
        # were traded: all of them are booked (refused, the router would route
        # them again), the child ends with its leaves, and the venue's count
        # says it happened. (A draining child has none left: every lot of its
        # fills is such an excess, and the rest below moves no claim of it.)
        booked = c.qty - c.cum
        if last_qty > booked:
            self.venues[c.venue].n_overfills += 1
        else:
            booked = last_qty
        fill_fee = self._fee(p.instrument, c.venue, c.role == ROLE_POST, last_px_x2,
                             last_qty) if not has_fee \
            else <i128>fee
        # The fill happened at the venue, so its lots are always booked: a
        # refused fill would leave the router routing lots already bought.
        # The money sums are int64 and saturate (as risk's do); the parent
        # then says its average price is not exact (the engine keeps its own).
        notional = (<i128>last_qty) * last_px_x2 + p.notional_x2
        fee_total = fill_fee + p.fees
        venue_fees = fill_fee + p.v_fees[c.venue]
        if (notional > INT64_MAX or fee_total > INT64_MAX or fee_total < -INT64_MAX
                or venue_fees > INT64_MAX or venue_fees < -INT64_MAX):
            p.sums_saturated = 1
        if c.price > 0 and _outside_limit(_is_buy(c.side), last_px_x2, c.price, c.pending_price):
            # A venue fault, but the fill happened: booked (the engine books
            # it in the order and risk whatever the router does), and counted.
            self.venues[c.venue].n_fills_outside_limit += 1
        self._heard_from(ci, now)
        if not c.acked:
            self._confirm_resting(ci)   # a fill before the ack: it was at the venue
        c.acked = 1
        c.cum += booked
        p.cum += last_qty
        p.working -= booked
        p.notional_x2 = _sat64(notional)
        p.fees = _sat64(fee_total)
        p.v_filled[c.venue] += last_qty
        p.v_fees[c.venue] = _sat64(venue_fees)
        p.rounds = 0
        if p.status == NEW:
            p.status = PARTIALLY_FILLED
        k = self._sweep_claim(ci)
        if k >= 0:
            # The lots move from "claimed by a live child" to "taken since
            # the venue's last update": both keep the next sweep off them.
            # Every lot filled left the book, those past the child's leaves
            # (an overfill, a draining child's) too: a sweep sent at them
            # would come back short.
            self.res_live[k] -= booked
            self.res_filled[k] += last_qty
        if c.cum == c.qty:
            if leaves > 0:
                if not draining:
                    self._drain(ci, now)
            elif draining:
                return self._drained(ci, now)
            else:
                self._child_done(ci)
        elif leaves == 0:
            # The venue works nothing more of it, short of its quantity (it cut
            # the order, or dropped an IOC's rest without a report of its own):
            # done, as a cancel would end it, or the parent would wait for it
            # forever. A cancel or expiry of it that follows finds no child
            # (UNKNOWN_ORDER, nothing applied; the engine forgot it already).
            self._ended_short(ci)
            self._child_done(ci)
        return self._advance(pi, now)

    cdef int on_reject_c(self, int64_t child_id, int reason, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        cdef int32_t pi
        cdef Child* c
        cdef int v
        if ci < 0:
            return self._drain_report(child_id, True, now)
        c = &self.children[ci]
        pi = c.parent
        v = c.venue
        self.venues[v].n_rejects += 1
        if reason == VENUE_UNAVAILABLE:
            self._mark_down(v, now)
        elif reason == VENUE_CLOSED:
            self.venues[v].open = 0
        else:
            self._heard_from(ci, now)
            if c.role == ROLE_SWEEP or reason == POST_ONLY_WOULD_CROSS:
                # What we saw there did not take this order: leave its book
                # alone until it updates (a post-only child the market moved
                # onto would otherwise go again at once, be refused again,
                # and use up the rounds). A passive child refused for another
                # reason (a venue's throttle) says nothing of the book.
                self.stale[<Py_ssize_t>self.parents[pi].instrument * self.n_venues + v] = 1
        self._child_done(ci)
        return self._advance(pi, now)

    cdef int on_canceled_c(self, int64_t child_id, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        cdef int32_t pi
        cdef Child* c
        if ci < 0:
            return self._drain_report(child_id, True, now)
        c = &self.children[ci]
        pi = c.parent
        self._heard_from(ci, now)
        self._ended_short(ci)
        self._child_done(ci)
        return self._advance(pi, now)

    cdef int on_expired_c(self, int64_t child_id, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        cdef int32_t pi
        cdef Parent* p
        if ci < 0:
            return self._drain_report(child_id, True, now)
        pi = self.children[ci].parent
        self._heard_from(ci, now)
        self._child_done(ci)
        p = &self.parents[pi]
        if p.phase != PH_DONE and p.cancel_requested == CR_NONE:
            # The venue's session ended (DAY): so does the parent's.
            p.cancel_requested = CR_EXPIRE
            self._cancel_children(pi, now)
        return self._advance(pi, now)

    cdef int on_replaced_c(self, int64_t child_id, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        cdef int32_t pi
        cdef Child* c
        cdef Parent* p
        if ci < 0:
            return self._drain_report(child_id, False, now)
        c = &self.children[ci]
        self._heard_from(ci, now)
        c.acked = 1
        if c.pending_price:
            if c.role == ROLE_POST:
                self._post_unlink(ci)
            c.price = c.pending_price
            c.pending_price = 0
            if c.role == ROLE_POST:
                self._post_link(ci)
        if c.pending_qty:
            # The amend took: those lots leave the child and the parent. (A
            # venue confirming it below what the child filled meanwhile, as
            # a real one should refuse, takes only the unfilled lots: the
            # child is done there, and the parent never holds less than it
            # bought.)
            pi = c.parent
            p = &self.parents[pi]
            if c.pending_qty < c.cum:
                c.pending_qty = c.cum
            p.qty -= c.qty - c.pending_qty
            p.working -= c.qty - c.pending_qty
            c.qty = c.pending_qty
            c.pending_qty = 0
            p.n_amending -= 1
            if c.cum == c.qty:
                self._child_done(ci)
                return self._advance(pi, now)
        self._confirm_resting(ci)       # at its new price (or size) from here
        return self._advance(c.parent, now)

    cdef int on_replace_rejected_c(self, int64_t child_id, int64_t now) except -1:
        cdef int32_t ci = self._live_child(child_id)
        if ci < 0:
            return self._drain_report(child_id, False, now)
        self._heard_from(ci, now)
        self.children[ci].pending_price = 0
        if self.children[ci].pending_qty:
            self.children[ci].pending_qty = 0     # the child keeps its size, the parent its lots
            self.parents[self.children[ci].parent].n_amending -= 1
        return self._advance(self.children[ci].parent, now)

    # ============================================================ the clock
    # A tick visits the awake parents only. A posted parent whose tick found
    # nothing to do, and would find nothing until its instrument's market moves
    # far enough for a reprice, is parked: in a heap keyed by the market level
    # that would make it reprice (ASLEEP if none can), until the market gets
    # there or an event touches it (every event ends in ``_advance``, which
    # wakes it). Parked parents would only have been no-ops, so a tick does
    # the same as one visiting every active parent in arrival order, the
    # reference model's, at the cost of what is awake plus what woke.

    cdef void _awake_link_before(self, int32_t pi, int32_t at) noexcept:
        """Put parent ``pi`` on the clock's list before ``at`` (-1: at the end)."""
        cdef Parent* p = &self.parents[pi]
        p.next_awake = at
        p.prev_awake = self.parents[at].prev_awake if at >= 0 else self.awake_tail
        if p.prev_awake >= 0:
            self.parents[p.prev_awake].next_awake = pi
        else:
            self.awake_head = pi
        if at >= 0:
            self.parents[at].prev_awake = pi
        else:
            self.awake_tail = pi

    cdef void _awake_unlink(self, int32_t pi) noexcept:
        cdef Parent* p = &self.parents[pi]
        if p.prev_awake >= 0:
            self.parents[p.prev_awake].next_awake = p.next_awake
        else:
            self.awake_head = p.next_awake
        if p.next_awake >= 0:
            self.parents[p.next_awake].prev_awake = p.prev_awake
        else:
            self.awake_tail = p.prev_awake
        p.prev_awake = p.next_awake = -1

    cdef void _unpark(self, int32_t pi) noexcept:
        """Parked or asleep parent ``pi`` leaves its heap (if in one) and the count."""
        cdef Parent* p = &self.parents[pi]
        if p.clock == CLOCK_PARKED:
            slotheap_remove(&self.parked[<Py_ssize_t>p.instrument * PARK_KINDS + p.park_kind],
                            self.park_pos[pi], self.park_pos)
        self.n_parked -= 1

    cdef int _wake(self, int32_t pi) except -1:
        """A parked or asleep parent goes back on the clock's list at the next tick."""
        cdef Parent* p = &self.parents[pi]
        self._unpark(pi)
        self.woken = <Woken*>grow_buffer(self.woken, &self.woken_cap, self.n_woken + 1,
                                         sizeof(Woken))
        self.woken[self.n_woken].seq = p.seq
        self.woken[self.n_woken].slot = pi
        self.n_woken += 1
        p.clock = CLOCK_WOKEN
        return 0

    cdef int _wake_moved(self) except -1:
        """Wake the parked parents whose instrument's market reached their key."""
        cdef Py_ssize_t i, h
        cdef int kind
        cdef int64_t q[4]
        cdef int64_t bound
        cdef SlotHeap* heap
        if self.n_parked == 0:
            return 0
        for i in range(self.n_instruments):
            heap = &self.parked[i * PARK_KINDS]
            if heap[0].n == 0 and heap[1].n == 0 and heap[2].n == 0 and heap[3].n == 0:
                continue
            self.nbbo_c(<int>i, q)
            for kind in range(PARK_KINDS):
                bound = _park_bound(kind, q[0], q[2])
                while heap[kind].n and heap[kind].keys[0] <= bound:
                    self._wake(heap[kind].slots[0])
        return 0

    cdef int _wake_all(self) except -1:
        """Wake every parked parent: the caller's clock went back (a wall clock step), and
        a parent parked past its reprice interval may be within it again, asking for a
        wake-up the reference would report (it is visited until the interval passes)."""
        cdef int32_t pi = self.active_head
        while pi >= 0:
            if self.parents[pi].clock >= CLOCK_PARKED:
                self._wake(pi)
            pi = self.parents[pi].next_active
        return 0

    cdef int _merge_woken(self) except -1:
        """Put the parents woken since the last tick back on the clock's list, in arrival order."""
        cdef Py_ssize_t k
        cdef int32_t at = self.awake_head, pi
        cdef Parent* p
        if self.n_woken == 0:
            return 0
        qsort(self.woken, self.n_woken, sizeof(Woken), _woken_cmp)
        for k in range(self.n_woken):
            pi = self.woken[k].slot
            p = &self.parents[pi]
            if p.clock != CLOCK_WOKEN or p.seq != self.woken[k].seq:
                continue                # done since, its slot perhaps another parent's
            while at >= 0 and self.parents[at].seq < p.seq:
                at = self.parents[at].next_awake
            self._awake_link_before(pi, at)
            p.clock = CLOCK_AWAKE
        self.n_woken = 0
        return 0

    cdef int _try_park(self, int32_t pi, int64_t now) except -1:
        """Park ``pi`` if its ticks would do nothing until its market moves (see above).

        That is a posted parent whose one child rests, acknowledged, with
        nothing in flight, past its reprice interval (so it asks for no
        wake-up), whose reprice bound the market has not reached: its tick
        would only find its child where ``_reprice`` leaves it.
        """
        cdef Parent* p = &self.parents[pi]
        cdef Child* c
        cdef int64_t key
        cdef int64_t q[4]
        cdef int kind
        cdef bint asleep
        if (p.clock != CLOCK_AWAKE or p.phase != PH_POST or p.n_live != 1 or p.cum >= p.qty
                or p.cancel_requested != CR_NONE
                or now - p.last_reprice_ts < self.reprice_interval_ns):
            return 0
        c = &self.children[p.head]
        if (c.role != ROLE_POST or not c.acked or c.pending_price or c.pending_qty
                or c.cancel_sent):
            return 0
        # _reprice moves a buy once its passive price reaches price + reprice_ticks,
        # a sell once it falls to price - reprice_ticks: never if the limit is short of it.
        if _is_buy(p.side):
            key = c.price + self.reprice_ticks
            kind = PARK_BUY_LIMIT if p.post_at_limit else PARK_BUY_JOIN
            asleep = p.limit_px < key
        else:
            key = -(c.price - self.reprice_ticks)
            kind = PARK_SELL_LIMIT if p.post_at_limit else PARK_SELL_JOIN
            asleep = p.limit_px > -key
        if not asleep:
            self.nbbo_c(p.instrument, q)
            if key <= _park_bound(kind, q[0], q[2]):
                return 0                # (a reprice _reprice declined: no passive price)
            slotheap_push(&self.parked[<Py_ssize_t>p.instrument * PARK_KINDS + kind], key, pi,
                          self.park_pos)
            p.park_kind = <uint8_t>kind
        self._awake_unlink(pi)
        p.clock = CLOCK_ASLEEP if asleep else CLOCK_PARKED
        self.n_parked += 1
        return 0

    cdef int tick_c(self, int64_t now) except -1:
        """Acknowledgement timeouts, then every awake parent in arrival order (see above)."""
        cdef int32_t pi, nxt, ci
        cdef Child* c
        cdef Py_ssize_t n0 = self.n_actions
        if now < self.last_tick_ns and self.n_parked:
            self._wake_all()        # (rare: O(active parents))
        self.last_tick_ns = now
        self._wake_moved()
        self._merge_woken()
        pi = self.awake_head
        while pi >= 0:
            ci = self.parents[pi].head
            while ci >= 0:
                c = &self.children[ci]
                if not c.acked and not c.cancel_sent and now - c.sent_ts >= self.ack_timeout_ns:
                    # No answer in time: avoid the venue, and ask it to cancel.
                    # The child's lots stay reserved until the venue reports,
                    # so the parent can never be overfilled.
                    self.venues[c.venue].n_timeouts += 1
                    self._mark_down(c.venue, now)
                    c.cancel_sent = 1
                    self._emit(ACT_CANCEL, ci, c.price, c.qty, 0, 0, 0, 0, now)
                ci = self.children[ci].next
            pi = self.parents[pi].next_awake
        pi = self.awake_head
        while pi >= 0:
            nxt = self.parents[pi].next_awake
            self._advance(pi, now)
            self._try_park(pi, now)
            pi = nxt
        return <int>(self.n_actions - n0)

    # ============================================================ Python API: orders
    # The Python API's 64-bit numbers are Py_ssize_t (int64 here): Cython converts those
    # with operator.index, which refuses a float or a Decimal (TypeError), where an
    # int64_t parameter would truncate 5.7 lots to 5 in silence. The C-int enums and indices
    # pass small_arg for the same reason (an int parameter took side=1.7 as BUY).
    def route(self, Py_ssize_t parent_id, instrument, side, Py_ssize_t qty,
              Py_ssize_t limit_px=0, Py_ssize_t now=0, strategy=STRAT_DEFAULT,
              tif=DAY, *, Py_ssize_t start_ns=-1, Py_ssize_t end_ns=-1,
              Py_ssize_t slices=-1, object profile=None, Py_ssize_t pov_ppm=-1,
              Py_ssize_t dark_min_qty=-1, object post_residual=None,
              Py_ssize_t stp_account=0, Py_ssize_t stp=-1):
        """Route a parent order that passed risk; its first actions are queued.

        Parameters
        ----------
        parent_id : int
            The engine's order id (positive, unique among live parents).
        instrument : int
            Instrument index.
        side : Side
            BUY, SELL or SELL_SHORT.
        qty : int
            Quantity in lots.
        limit_px : int, optional
            Limit price in ticks; 0 for a market order.
        now : int, optional
            Caller's clock, ns.
        strategy : Strategy, optional
            ``STRAT_DEFAULT`` (the parent names none): config ``strategy``.
            ``STRAT_AUTO`` picks SWEEP for a marketable or IOC order and
            otherwise rests at the limit, whatever the configured default.
        tif : TimeInForce, optional
            DAY, GTC or IOC (FOK is refused: it cannot hold across venues).
        start_ns, end_ns : int, optional
            Schedule window (TWAP and VWAP need ``end_ns``; POV may run
            without one). ``start_ns`` defaults to ``now``.
        slices : int, optional
            TWAP slice count (default: config ``twap_slices``).
        profile : sequence of int, optional
            VWAP: relative volume per bucket, buckets splitting the window evenly
            (integers: a float weight is a ``TypeError``, never truncated).
        pov_ppm : int, optional
            POV participation rate in parts per million of the market volume.
        dark_min_qty : int, optional
            DARK_FIRST minimum fill size (default: config ``dark_min_qty``).
        post_residual : bool, optional
            Rest what a sweep could not fill (DAY/GTC limit orders only).
        stp_account : int, optional
            The account the caller sends this parent's children under, the
            one venue self-trade prevention compares: parents with the same
            value are in one self-trade scope.
        stp : StpMode, optional
            The self-trade prevention mode the caller sends the children with;
            -1 (default): the venue's default, unknown to the router. Under
            ``CANCEL_OLDEST`` a sweep does not count our own resting children
            in the same scope as liquidity (docs/router.md, "Own resting
            orders").

        Returns
        -------
        int
            0 when accepted, else a ``RejectReason`` and nothing is kept
            (``INVALID_STP_MODE`` for an ``stp`` outside -1 to 3).

        Raises
        ------
        TypeError
            If a number is not an integer (``side=1.7``, a ``profile`` weight of 1.5);
            nothing is kept.
        ValueError
            If ``instrument``, ``side``, ``strategy`` or ``tif`` is beyond a C int (the
            message names it); within a C int an unknown value is a reject code.
        """
        cdef int instrument_c = small_arg(instrument, "instrument")
        cdef int side_c = small_arg(side, "side")
        cdef int strategy_c = small_arg(strategy, "strategy")
        cdef int tif_c = small_arg(tif, "tif")
        cdef RouteParams prm
        cdef int64_t[::1] prof
        if profile is not None:
            # The weights are integers like every number here: a float one was
            # cast to int64, truncated in silence ([1.5, 3.9] traded as [1, 3]).
            weights = np.asarray(profile)
            if weights.size and weights.dtype.kind not in "iub":
                raise TypeError(f"profile must be integers (relative volume per bucket), not "
                                f"{weights.dtype} ({profile!r}): never truncated")
            if weights.size and weights.dtype.kind == "u" and weights.max() > INT64_MAX:
                raise ValueError(f"profile: a weight above 2^63 - 1 ({profile!r})")
        prm.start_ns = start_ns
        prm.end_ns = end_ns
        prm.slices = slices
        prm.pov_ppm = pov_ppm
        prm.dark_min_qty = dark_min_qty
        prm.post_residual = -1 if post_residual is None else (1 if post_residual else 0)
        prm.profile = NULL
        prm.n_profile = 0
        prm.stp_account = stp_account
        prm.stp = stp
        if profile is not None:
            prof = np.ascontiguousarray(profile, dtype=np.int64)
            if prof.shape[0]:
                prm.profile = &prof[0]
                prm.n_profile = prof.shape[0]
        return self.route_c(parent_id, instrument_c, side_c, qty, limit_px, strategy_c, tif_c, now,
                            &prm)

    def route_batch(self, cnp.ndarray orders not None, Py_ssize_t now=0):
        """Route many parents in one call (``PARENT_DTYPE`` array); returns their codes (uint16).

        Every parent uses the configured defaults for the optional parameters;
        a ``strategy`` of ``STRAT_DEFAULT`` takes config ``strategy``.
        """
        if orders.dtype != PARENT_DTYPE or not orders.flags.c_contiguous:
            raise TypeError("orders must be a C-contiguous PARENT_DTYPE array")
        cdef Py_ssize_t n = orders.shape[0], k
        cdef cnp.ndarray out = np.empty(n, dtype=np.uint16)
        cdef const ParentOrder* o = <const ParentOrder*>cnp.PyArray_DATA(orders)
        cdef uint16_t* codes = <uint16_t*>cnp.PyArray_DATA(out)
        for k in range(n):
            codes[k] = <uint16_t>self.route_c(o[k].parent_id, o[k].instrument, o[k].side,
                                              o[k].qty, o[k].limit_px, o[k].strategy,
                                              o[k].tif, now, NULL)
        return out

    def cancel_parent(self, Py_ssize_t parent_id, Py_ssize_t now=0):
        """Cancel a parent; returns the ids of the children to cancel (numpy int64).

        The same cancels are queued as ``ACT_CANCEL`` actions (send those;
        the returned ids are for the caller's bookkeeping). The parent ends
        ``CANCELED`` once every child has reported its end. Returns None if
        the parent is unknown or already done.
        """
        cdef Py_ssize_t n0 = self.n_actions, k
        if self.cancel_parent_c(parent_id, now):
            return None
        return np.array([self.actions[k].child_id for k in range(n0, self.n_actions)
                         if self.actions[k].kind == ACT_CANCEL], dtype=np.int64)

    def reduce_parent(self, Py_ssize_t parent_id, Py_ssize_t cut, Py_ssize_t now=0):
        """Take ``cut`` lots off a working parent in place (see ``reduce_parent_c``).

        Returns 0 (amends queued as ``ACT_REPLACE``; ``parent(id)["amending"]``
        counts those the venues have not confirmed), ``UNKNOWN_ORDER``, or
        ``ORDER_NOT_REPLACEABLE`` when it cannot be done in place.
        """
        return self.reduce_parent_c(parent_id, cut, now)

    def tick(self, Py_ssize_t now):
        """Advance time: ack timeouts, schedule slices, reprices; returns the actions queued."""
        return self.tick_c(now)

    def next_wakeup(self, Py_ssize_t now):
        """Earliest time after ``now`` at which ``tick`` has work (ns), or -1 for none known.

        Covers acknowledgement deadlines, schedule slice starts and ends and
        repricing intervals; market data and volume updates also call for a
        tick, whenever they arrive. (Parked parents ask for none: they wait
        for the market, past their reprice interval.)
        """
        cdef int64_t best = -1
        cdef int32_t pi = self.awake_head
        cdef Py_ssize_t k
        while pi >= 0:
            best = self._wakeup_of(pi, now, best)
            pi = self.parents[pi].next_awake
        for k in range(self.n_woken):
            pi = self.woken[k].slot
            if self.parents[pi].clock == CLOCK_WOKEN and self.parents[pi].seq == self.woken[k].seq:
                best = self._wakeup_of(pi, now, best)
        return best

    cdef int64_t _wakeup_of(self, int32_t pi, int64_t now, int64_t best) noexcept:
        """``best``, or parent ``pi``'s next deadline after ``now`` if that is sooner."""
        cdef int64_t t, k, d
        cdef Parent* p = &self.parents[pi]
        cdef int32_t ci = p.head
        cdef Child* c
        while ci >= 0:
            c = &self.children[ci]
            if not c.acked and not c.cancel_sent:
                t = c.sent_ts + self.ack_timeout_ns
                if t > now and (best < 0 or t < best):
                    best = t
            ci = c.next
        t = -1
        if p.phase == PH_SCHED and now < p.start_ns:
            t = p.start_ns      # (POV too: its volume counts from then)
        elif p.phase == PH_SCHED and p.strategy != STRAT_POV:
            if now < p.end_ns:
                d = p.end_ns - p.start_ns
                k = <int64_t>((<i128>(now - p.start_ns)) * p.n_slices / d) + 1
                t = p.start_ns + <int64_t>_ceil_div((<i128>k) * d, p.n_slices) \
                    if k < p.n_slices else p.end_ns
        elif p.phase == PH_SCHED and p.end_ns > now:
            t = p.end_ns
        elif p.phase == PH_POST and p.n_live > 0:
            t = p.last_reprice_ts + self.reprice_interval_ns
        if t > now and (best < 0 or t < best):
            best = t
        return best

    # ============================================================ Python API: reports
    def on_ack(self, Py_ssize_t child_id, Py_ssize_t now=0):
        """The venue accepted a child. Returns 0 or ``UNKNOWN_ORDER``."""
        return self.on_ack_c(child_id, now)

    def on_fill(self, Py_ssize_t child_id, Py_ssize_t last_qty, Py_ssize_t last_px_x2,
                Py_ssize_t now=0, fee=None, Py_ssize_t leaves=-1):
        """A child (partly) filled.

        Parameters
        ----------
        child_id : int
        last_qty : int
            Lots filled.
        last_px_x2 : int
            Fill price in half-ticks (twice the price in ticks), so that a
            midpoint between two ticks is exact.
        now : int, optional
        fee : int, optional
            The fee the venue charged for this fill (fee units, negative for
            a rebate); when None it is computed from the venue's schedule.
        leaves : int, optional
            What the venue says it still works of the child after this fill
            (its report's ``leaves_qty``); negative (the default): the
            router's own count, ``qty - cum_qty`` of the child. 0 before the
            child filled its quantity ends it short, as ``on_canceled`` does
            (the venue cut it, or dropped an IOC's rest without a report of
            its own); a cancel or expiry of it that follows returns
            ``UNKNOWN_ORDER`` and changes nothing.

        Returns
        -------
        int
            0; ``UNKNOWN_ORDER`` (no such live or draining child), ``INVALID_QTY`` (not
            positive or above ``MAX_QTY``) or ``INVALID_PRICE``; nothing of
            the fill is applied on a non-zero code (with ``leaves`` 0 the child
            still ends, as by a cancel: the venue works nothing more of it). A fill whose notional or fees pass
            int64 is booked with those sums saturated, and the parent's
            ``sums_saturated`` says so (its ``avg_px`` is then None). A fill
            above the child's leaves (a venue's overfill) is booked in full:
            the child is done, ``venue_state(v)["overfills"]`` counts it, and
            a parent filled past its quantity says ``overfilled``. A child
            whose fills reach its quantity while ``leaves`` is above 0 is
            *draining* (docs/router.md): its venue is asked once to cancel
            the rest, and its later fills are booked in the parent (each an
            overfill) until a fill with ``leaves`` 0 or a cancel, expiry or
            reject of it; the parent ends only after that.
        """
        cdef Py_ssize_t given        # (Py_ssize_t: a float fee is refused, see route)
        if fee is None:
            return self.on_fill_c(child_id, last_qty, last_px_x2, 0, False, leaves, now)
        given = fee
        return self.on_fill_c(child_id, last_qty, last_px_x2, given, True, leaves, now)

    def on_reject(self, Py_ssize_t child_id, reason, Py_ssize_t now=0):
        """The venue rejected a new child (``reason``: a RejectReason). Its lots are re-routed.

        ``VENUE_UNAVAILABLE`` marks the venue down, ``VENUE_CLOSED`` closes
        it; any other reason marks that venue's book stale for a sweep. A
        ``reason`` that is not an integer is a ``TypeError``, one beyond a C
        int a ``ValueError`` (never truncated to another reason).
        """
        return self.on_reject_c(child_id, small_arg(reason, "reason"), now)

    def on_canceled(self, Py_ssize_t child_id, Py_ssize_t now=0):
        """A child ended without filling in full (IOC remainder, cancel done): re-route the rest."""
        return self.on_canceled_c(child_id, now)

    def on_expired(self, Py_ssize_t child_id, Py_ssize_t now=0):
        """A DAY child expired at its venue: the parent cancels the rest and ends EXPIRED."""
        return self.on_expired_c(child_id, now)

    def on_replaced(self, Py_ssize_t child_id, Py_ssize_t now=0):
        """The venue confirmed a replace (reprice) of a child."""
        return self.on_replaced_c(child_id, now)

    def on_replace_rejected(self, Py_ssize_t child_id, Py_ssize_t now=0):
        """The venue refused a replace; the child keeps its price."""
        return self.on_replace_rejected_c(child_id, now)

    # ============================================================ Python API: output
    def drain_actions(self):
        """Return the actions queued since the last drain (``ACTION_DTYPE``) and forget them."""
        cdef cnp.ndarray out = np.empty(self.n_actions, dtype=ACTION_DTYPE)
        if self.n_actions:
            memcpy(cnp.PyArray_DATA(out), self.actions, self.n_actions * sizeof(Action))
        self.n_actions = 0
        return out

    def take_actions(self):
        """The queued actions as a list of tuples, and forget them.

        Each tuple is ``(kind, child_id, parent_id, venue, instrument, side,
        price, qty, ord_type, tif, flags, min_qty)``: the fields a caller needs to
        send the action, built in C (the engine's per-order path; a numpy
        array per call and its ``tolist`` cost more than the routing).
        """
        cdef Py_ssize_t k, n = self.n_actions
        cdef Action* a
        out = []
        for k in range(n):
            a = &self.actions[k]
            out.append((a.kind, a.child_id, a.parent_id, a.venue, a.instrument, a.side,
                        a.price, a.qty, a.ord_type, a.tif, a.flags, a.min_qty))
        self.n_actions = 0
        return out

    def drain_into(self, cnp.ndarray out not None, Py_ssize_t start=0):
        """Move queued actions into ``out[start:]`` (a reused ``ACTION_DTYPE`` array).

        The allocation-free twin of ``drain_actions`` for the hot path: at most
        ``len(out) - start`` actions are moved, oldest first; any others stay
        queued for the next call. Returns the number moved.
        """
        cdef Py_ssize_t n = self.n_actions
        # C-API checks: ``out.flags`` would build a Python object per call.
        if <object>cnp.PyArray_DESCR(out) is not ACTION_DTYPE and out.dtype != ACTION_DTYPE:
            raise TypeError("out must be an ACTION_DTYPE array")
        if not cnp.PyArray_IS_C_CONTIGUOUS(out) or not cnp.PyArray_ISWRITEABLE(out):
            raise TypeError("out must be C-contiguous and writeable")
        if start < 0 or start > out.shape[0]:
            raise IndexError("start out of range")
        if n > out.shape[0] - start:
            n = out.shape[0] - start
        if n:
            memcpy(<Action*>cnp.PyArray_DATA(out) + start, self.actions, n * sizeof(Action))
            if n < self.n_actions:
                memmove(self.actions, &self.actions[n], (self.n_actions - n) * sizeof(Action))
        self.n_actions -= n
        return n

    @property
    def pending_actions(self):
        """Number of actions waiting to be drained."""
        return self.n_actions

    @property
    def n_active(self):
        """Number of parents still working."""
        cdef int32_t pi = self.active_head
        cdef int n = 0
        while pi >= 0:
            n += 1
            pi = self.parents[pi].next_active
        return n

    @property
    def n_parked(self):
        """Working parents the clock skips until their market moves or an event touches them."""
        return self.n_parked

    @property
    def next_child_id(self):
        """The id the next child order gets (ids only increase, from ``child_id_base``)."""
        return self.next_child_id

    def shift_clock(self, Py_ssize_t delta):
        """The caller's clock stepped by ``delta`` ns (a wall clock set forward or back):
        move the router's own deadlines with it, so that a step is neither a timeout nor a
        hidden venue: children's send times, venues' retry times, parents' last reprices.

        Schedule windows are the client's wall times, and stay; records' arrival and done
        times stay too.
        """
        cdef int32_t pi = self.active_head, ci
        cdef int v
        for v in range(self.n_venues):
            self.venues[v].retry_at += delta
        while pi >= 0:
            self.parents[pi].last_reprice_ts += delta
            ci = self.parents[pi].head
            while ci >= 0:
                self.children[ci].sent_ts += delta
                ci = self.children[ci].next
            pi = self.parents[pi].next_active
        if self.last_tick_ns != INT64_MIN:
            self.last_tick_ns += delta

    def skip_child_ids(self, Py_ssize_t first):
        """Give the next child order id ``first`` or more: after a restart, the ids the
        journal's children had are not handed out again (a parent's children are keyed
        by id). Never moves back."""
        if first > self.next_child_id:
            self.next_child_id = first

    cdef Parent* _parent(self, int64_t parent_id) except NULL:
        cdef int32_t pi = idmap_get(&self.parent_ids, parent_id) if parent_id > 0 else -1
        if pi < 0:
            raise KeyError(parent_id)
        return &self.parents[pi]

    def parent(self, Py_ssize_t parent_id):
        """A parent's state: status, quantities and the exact average price.

        ``avg_px`` is ``(numerator, denominator)`` in ticks, reduced
        (``Decimal(num) / Decimal(den) * tick_size`` is the price); (0, 1)
        before the first fill. Raises KeyError for an unknown (or drained) id.
        """
        cdef Parent* p = self._parent(parent_id)
        return {"parent_id": p.parent_id, "status": p.status, "phase": Phase(p.phase),
                "strategy": Strategy(p.strategy), "qty": p.qty, "cum_qty": p.cum,
                "leaves_qty": max(p.qty - p.cum, 0), "working_qty": p.working,
                "avg_px": self._avg_px(p), "notional_x2": p.notional_x2, "fees": p.fees,
                "live_children": p.n_live, "children": p.n_children, "rounds": p.rounds,
                "reason": p.reason, "done": p.phase == PH_DONE,
                "sums_saturated": bool(p.sums_saturated), "amending": p.n_amending,
                "overfilled": p.cum > p.qty, "draining": p.n_draining}

    def live_children(self, Py_ssize_t parent_id):
        """The live children of a parent: a list of dicts, creation order."""
        cdef Parent* p = self._parent(parent_id)
        cdef int32_t ci = p.head
        cdef Child* c
        out = []
        while ci >= 0:
            c = &self.children[ci]
            out.append({"child_id": c.child_id, "venue": c.venue, "role": ChildRole(c.role),
                        "price": c.price, "pending_price": c.pending_price,
                        "pending_qty": c.pending_qty, "qty": c.qty,
                        "cum_qty": c.cum, "acked": bool(c.acked),
                        "cancel_sent": bool(c.cancel_sent), "sent_ts": c.sent_ts})
            ci = c.next
        return out

    cdef tuple _avg_px(self, Parent* p):
        if p.sums_saturated:
            return None
        if p.cum == 0:
            return (0, 1)
        g = math.gcd(p.notional_x2, 2 * p.cum)
        return (p.notional_x2 // g, 2 * p.cum // g)

    cdef void _bestex(self, Parent* p, BestEx* out) noexcept:
        # Written straight into a BESTEX_DTYPE row: draining finished parents
        # is on the engine's per-order path, so no Python objects here.
        cdef int v
        cdef bint buy = _is_buy(p.side)
        cdef int64_t g, den
        cdef i128 ref, edge, mid_x2, pi_x2
        cdef i128 cum = p.cum, notional_x2 = p.notional_x2
        memset(out, 0, sizeof(BestEx))
        out.parent_id, out.instrument, out.side = p.parent_id, p.instrument, p.side
        out.strategy, out.status, out.tif, out.reason = p.strategy, p.status, p.tif, p.reason
        out.qty, out.limit_px, out.cum_qty = p.qty, p.limit_px, p.cum
        out.leaves_qty = p.qty - p.cum if p.cum < p.qty else 0
        # Exact average price as a reduced fraction (half-ticks over 2 x lots).
        if p.cum == 0:
            out.avg_px_num, out.avg_px_den = 0, 1
        elif p.sums_saturated:
            out.avg_px_num, out.avg_px_den = 0, 0    # not exact: the sums saturated
        else:
            den = 2 * p.cum
            g = _gcd(p.notional_x2, den)
            out.avg_px_num, out.avg_px_den = p.notional_x2 // g, den // g
        out.notional_x2, out.fees = p.notional_x2, p.fees
        out.arrival_ts, out.done_ts = p.arrival_ts, p.done_ts
        out.arr_bid_px, out.arr_bid_qty = p.arr_bid, p.arr_bid_qty
        out.arr_ask_px, out.arr_ask_qty = p.arr_ask, p.arr_ask_qty
        # 128-bit products: prices times quantities may exceed int64 even
        # when every stored sum fits; the stored figure saturates.
        ref = p.arr_ask if buy else p.arr_bid
        if ref > 0 and cum > 0 and not p.sums_saturated:
            pi_x2 = (2 * ref * cum - notional_x2) if buy else (notional_x2 - 2 * ref * cum)
            out.pi_x2 = _sat64(pi_x2)
            out.pi_bps = <double>pi_x2 / <double>(2 * ref * cum) * 1e4
        else:
            out.pi_x2, out.pi_bps = 0, NAN
        if p.arr_bid > 0 and p.arr_ask > 0 and cum > 0 and not p.sums_saturated:
            mid_x2 = <i128>p.arr_bid + p.arr_ask
            edge = (mid_x2 * cum - notional_x2) if buy else (notional_x2 - mid_x2 * cum)
            out.vs_mid_bps = <double>edge / <double>(mid_x2 * cum) * 1e4
        else:
            out.vs_mid_bps = NAN
        out.n_children = p.n_children
        for v in range(MAX_VENUES):
            if v < self.n_venues and p.v_children[v]:
                out.venues_used |= 1u << v
            out.venue_children[v] = p.v_children[v]
            out.venue_sent[v] = p.v_sent[v]
            out.venue_filled[v] = p.v_filled[v]
            out.venue_fees[v] = p.v_fees[v]
            out.venue_fill_rate[v] = (<double>p.v_filled[v] / p.v_sent[v]) if p.v_sent[v] else NAN

    def bestex(self, Py_ssize_t parent_id):
        """The best-execution record of a parent (live or finished, until drained), a dict.

        Fields are those of ``BESTEX_DTYPE``: arrival NBBO, exact average
        price, price improvement against the arrival NBBO's far touch
        (``pi_x2`` in half-tick x lots, ``pi_bps``; positive is better) and
        against the arrival midpoint (``vs_mid_bps``), fees, and per venue
        (index = venue) children, lots sent, lots filled, fees and fill rate.
        """
        cdef Parent* p = self._parent(parent_id)
        cdef cnp.ndarray row = np.zeros(1, dtype=BESTEX_DTYPE)
        self._bestex(p, <BestEx*>cnp.PyArray_DATA(row))
        return {name: row[name][0].tolist() for name in BESTEX_DTYPE.names}

    cdef void _release_parent(self, int32_t pi) noexcept:
        # A drained parent: its id is forgotten and its slot reused.
        cdef Parent* p = &self.parents[pi]
        idmap_del(&self.parent_ids, p.parent_id)
        PyMem_Free(p.cum_weight)
        p.cum_weight = NULL
        p.next_active = self.parent_free
        self.parent_free = pi

    def take_finished(self):
        """``(parent_id, status, reason)`` of each parent finished since the last drain.

        The engine's per-order twin of ``drain_finished``: the same parents
        are drained and forgotten, without building best-execution rows
        (a numpy array per call costs more than the rest of the drain).
        """
        cdef Py_ssize_t k, n = self.n_finished
        cdef int32_t pi
        cdef Parent* p
        out = []
        for k in range(n):
            pi = self.finished[k]
            p = &self.parents[pi]
            out.append((p.parent_id, p.status, p.reason))
            self._release_parent(pi)
        self.n_finished = 0
        return out

    def drain_finished(self):
        """Best-execution records (``BESTEX_DTYPE``) of the parents finished since the last drain.

        Their ids are then forgotten (``parent``/``bestex`` raise KeyError).
        """
        cdef Py_ssize_t k, n = self.n_finished
        cdef int32_t pi
        cdef Parent* p
        cdef cnp.ndarray out = np.empty(n, dtype=BESTEX_DTYPE)
        cdef BestEx* rows = <BestEx*>cnp.PyArray_DATA(out)
        for k in range(n):
            pi = self.finished[k]
            p = &self.parents[pi]
            self._bestex(p, &rows[k])
            self._release_parent(pi)
        self.n_finished = 0
        return out

    @property
    def pending_finished(self):
        """Number of finished parents waiting for ``drain_finished``."""
        return self.n_finished


# Enum members are module constants too (``from ext.router import ACT_NEW``),
# as ``ext.book`` exports its op codes: the engine and tests compare plain ints.
for _enum in (Strategy, ActionKind, ChildFlag, ChildRole, Phase, VenueHealth):
    globals().update({_m.name: _m for _m in _enum})
del _enum

# Import-time guard: the numpy views must mirror the C structs.
assert ACTION_DTYPE.itemsize == sizeof(Action), (ACTION_DTYPE.itemsize, sizeof(Action))
assert PARENT_DTYPE.itemsize == sizeof(ParentOrder), (PARENT_DTYPE.itemsize, sizeof(ParentOrder))
assert BESTEX_DTYPE.itemsize == sizeof(BestEx), (BESTEX_DTYPE.itemsize, sizeof(BestEx))
