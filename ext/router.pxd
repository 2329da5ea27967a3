# cython: language_level=3
"""Interface of the smart order router, for Cython callers.

Python callers (the engine pipeline, tests, the backtester) use the ``def``
methods documented in ``router.pyx``; a Cython caller may call the ``*_c``
twins with C values and read ``actions[0:n_actions]`` in place, then reset
``n_actions``.
"""
cimport cython
from ext.idmap cimport IdMap
from ext.slotheap cimport SlotHeap
from libc.stdint cimport int64_t, int32_t, uint32_t, uint8_t, uint16_t

cdef extern from *:
    # 128-bit products where two int64 factors may not fit in int64 (fee of a
    # fill, passive score, schedule targets); never stored, only compared or
    # divided back into int64 range.
    ctypedef long long i128 "__int128"

# ---------------------------------------------------------------- public enums
cpdef enum Strategy:
    STRAT_AUTO = 0          # marketable or IOC: SWEEP; otherwise: rest at the limit (PASSIVE)
    STRAT_SWEEP = 1         # best price sweep across lit venues (IOC children)
    STRAT_DARK_FIRST = 2    # midpoint IOC pings to the dark venues, then SWEEP
    STRAT_PASSIVE = 3       # rest at the best venue, reprice when the NBBO moves away
    STRAT_TWAP = 4          # equal slices over [start, end), each swept
    STRAT_VWAP = 5          # slices following a volume profile
    STRAT_POV = 6           # a percentage of the market volume reported
    # Not a strategy: "the parent names none", so the router's configured
    # default (config ``strategy``) applies. STRAT_AUTO is always auto itself.
    STRAT_DEFAULT = 255

cpdef enum ActionKind:
    ACT_NEW = 1
    ACT_CANCEL = 2
    ACT_REPLACE = 3         # price change, same total quantity (FIX 35=G)

cpdef enum ChildFlag:
    CF_POST_ONLY = 1
    CF_MID_PEG = 2          # execute at the venue's midpoint (dark); ``price``: protective limit
    CF_ISO = 4              # intermarket sweep: every better protected quote is taken by siblings

cpdef enum ChildRole:
    ROLE_SWEEP = 1
    ROLE_DARK = 2
    ROLE_POST = 3

cpdef enum Phase:
    PH_DARK = 1
    PH_SWEEP = 2
    PH_POST = 3
    PH_SCHED = 4
    PH_DONE = 5

cpdef enum VenueHealth:
    HEALTH_UP = 0
    HEALTH_DOWN = 1         # stopped responding; routable again from ``retry_at`` (as a probe)

cpdef enum:
    MAX_VENUES = 16         # per-parent statistics are fixed arrays of this size

cpdef enum:
    # Parent.stp when the parent's children carry the venue's default mode,
    # which the router does not know: no own liquidity is assumed out of reach.
    STP_UNKNOWN = 255

cdef enum ClockState:
    # Parent.clock. A posted parent whose tick would do nothing until its
    # instrument's market moves far enough (or an event touches it) is parked,
    # off the clock's list, so a tick costs what is awake, not what rests.
    CLOCK_OFF = 0           # done (or a free slot)
    CLOCK_AWAKE = 1         # on the clock's list: every tick visits it
    CLOCK_WOKEN = 2         # woken since the last tick: the next one puts it back on the list
    CLOCK_PARKED = 3        # in a heap, until the market reaches its key or an event
    CLOCK_ASLEEP = 4        # no market move can make it reprice: only an event wakes it

cdef enum:
    # The heaps per instrument: a posted buy joins the bid (its reprice bound is
    # min(bid, ask - 1)) or rests at its limit (ask - 1); a sell, mirrored.
    PARK_BUY_JOIN = 0
    PARK_BUY_LIMIT = 1
    PARK_SELL_JOIN = 2
    PARK_SELL_LIMIT = 3
    PARK_KINDS = 4

ctypedef struct Woken:
    int64_t seq               # the parent's seq when woken (a reused slot has another)
    int32_t slot

cpdef enum CancelMode:
    # Parent.cancel_requested: why the parent stops once its children are done.
    CR_NONE = 0
    CR_USER = 1             # cancel_parent(): ends CANCELED
    CR_EXPIRE = 2           # a DAY child expired at its venue: ends EXPIRED

# ---------------------------------------------------------------- records
# The router's output: one instruction for a venue. ACTION_DTYPE in router.pyx
# mirrors it byte for byte.
ctypedef struct Action:
    int64_t child_id
    int64_t parent_id
    int64_t price             # limit in ticks; 0: market (or a pure midpoint peg)
    int64_t qty               # NEW: order quantity; REPLACE: new total quantity
    int64_t min_qty           # NEW: minimum fill size (dark pings), 0: none
    int64_t ts                # the ``now`` of the call that produced it
    int32_t venue
    int32_t instrument
    uint8_t kind              # ActionKind
    uint8_t side              # Side
    uint8_t ord_type          # OrdType
    uint8_t tif               # TimeInForce
    uint8_t flags             # ChildFlag bits
    uint8_t role              # ChildRole
    uint8_t _pad[2]

# A finished parent's best-execution record. BESTEX_DTYPE in router.pyx
# mirrors it byte for byte (packed: numpy's unaligned layout).
ctypedef packed struct BestEx:
    int64_t parent_id
    int32_t instrument
    uint8_t side
    uint8_t strategy
    uint8_t status
    uint8_t tif
    uint16_t reason
    int64_t qty
    int64_t limit_px
    int64_t cum_qty
    int64_t leaves_qty
    int64_t avg_px_num
    int64_t avg_px_den
    int64_t notional_x2
    int64_t fees
    int64_t arrival_ts
    int64_t done_ts
    int64_t arr_bid_px
    int64_t arr_bid_qty
    int64_t arr_ask_px
    int64_t arr_ask_qty
    int64_t pi_x2
    double pi_bps
    double vs_mid_bps
    int32_t n_children
    uint32_t venues_used
    int32_t venue_children[MAX_VENUES]
    int64_t venue_sent[MAX_VENUES]
    int64_t venue_filled[MAX_VENUES]
    int64_t venue_fees[MAX_VENUES]
    double venue_fill_rate[MAX_VENUES]

# A parent order for the batch API (PARENT_DTYPE).
ctypedef struct ParentOrder:
    int64_t parent_id
    int64_t qty
    int64_t limit_px          # 0: market
    int32_t instrument
    uint8_t side
    uint8_t tif
    uint8_t strategy
    uint8_t _pad

# Optional per-order parameters of ``route_c``; -1 (or NULL) means "the
# router's configured default".
ctypedef struct RouteParams:
    int64_t start_ns
    int64_t end_ns
    int64_t slices
    int64_t pov_ppm
    int64_t dark_min_qty
    int64_t post_residual
    const int64_t* profile    # VWAP weights, one per bucket
    Py_ssize_t n_profile
    int64_t stp_account       # the venue account its children carry (self-trade scope)
    int64_t stp               # StpMode its children carry; -1: the venue's default (unknown here)

# ---------------------------------------------------------------- internals
# Fees of one venue for one instrument: a fee unit is 1e-4 tick x lot, so the
# same per-share fee is a different number of units per lot when ticks or
# lots differ between instruments.
ctypedef struct Fees:
    int64_t maker_per_lot     # fee units (1e-4 tick) per lot; negative: rebate
    int64_t taker_per_lot
    int64_t maker_cbps        # hundredths of a basis point of notional
    int64_t taker_cbps

ctypedef struct Venue:
    int64_t latency_ns        # measured, from the caller; breaks ties
    int64_t retry_at          # HEALTH_DOWN: routable again (as a probe) from here
    int64_t passive_sent      # lots of finished passive children (fill-rate history)
    int64_t passive_filled
    int64_t n_sent            # children sent
    int64_t n_rejects
    int64_t n_timeouts
    int64_t n_fills_outside_limit   # fills reported at a worse price than the child's limit
    int64_t n_overfills       # fills reported above the child's leaves (booked all the same)
    int32_t n_down            # consecutive timeouts: the backoff exponent
    uint8_t dark
    uint8_t open              # session open (caller); closed venues are never routed to
    uint8_t health            # VenueHealth
    uint8_t _pad

ctypedef struct Child:
    int64_t child_id
    int64_t price             # limit in ticks (confirmed)
    int64_t pending_price     # replace in flight, 0: none
    int64_t pending_qty       # amend in flight (its new, lower order quantity), 0: none
    int64_t qty               # order quantity
    int64_t cum
    int64_t sent_ts
    int64_t book_seq          # sweep: its book side's update count when it was sent;
                              # post: its own side's count when the venue last confirmed
                              # it resting at ``price`` (ack, replace, first fill)
    int32_t parent            # parent slot
    int32_t prev              # live siblings, creation order; free list through ``next``
    int32_t next
    int32_t venue
    uint8_t side
    uint8_t role              # ChildRole
    uint8_t acked
    uint8_t cancel_sent
    uint8_t _pad[4]
    int32_t px_prev           # passive children resting at one price of one venue's book
    int32_t px_next           # side (``post_index``), in no order

ctypedef struct Parent:
    int64_t parent_id
    int64_t qty
    int64_t limit_px          # 0: market
    int64_t cum
    int64_t notional_x2       # sum of last_qty * last_px_x2 (half-ticks x lots)
    int64_t fees              # fee units (1e-4 tick x lot); negative: net rebate
    int64_t working           # sum of the live children's leaves
    int64_t arrival_ts
    int64_t done_ts
    int64_t arr_bid
    int64_t arr_bid_qty
    int64_t arr_ask
    int64_t arr_ask_qty
    int64_t start_ns
    int64_t end_ns            # 0: none (POV)
    int64_t pov_ppm
    int64_t vol_start
    int64_t last_target
    int64_t dark_min_qty
    int64_t last_reprice_ts
    int64_t stp_account       # venue account of its children: who self-trade prevention
                              # compares (parents with the same one share the scope)
    i128* cum_weight          # VWAP: cumulative profile weights (the last is their total),
                              # owned; NULL otherwise
    int32_t n_slices          # TWAP slices, VWAP buckets
    int32_t instrument
    int32_t head              # live children, creation order
    int32_t tail
    int32_t n_live
    int32_t n_children
    int32_t rounds            # routing rounds since the last fill (bounded by max_reroutes)
    int32_t n_amending        # children with an amend (pending_qty) in flight
    int32_t n_draining        # done children whose venue still works lots (``drain_ids``):
                              # their fills are booked, and the parent ends after them
    int32_t prev_active       # active parents in arrival order; free list through next_active
    int32_t next_active
    int32_t prev_awake        # the clock's list: awake parents in arrival order
    int32_t next_awake
    int64_t seq               # arrival order (the clock visits parents in it)
    uint32_t dark_tried       # dark venues already pinged (bit per venue)
    uint8_t side
    uint8_t ord_type
    uint8_t tif
    uint8_t strategy          # resolved (never STRAT_AUTO)
    uint8_t phase             # Phase
    uint8_t status            # OrdStatus
    uint8_t post_residual
    uint8_t cancel_requested  # CancelMode
    uint8_t sums_saturated    # notional_x2 or fees passed int64 and saturated (avg_px not exact)
    uint16_t reason           # RejectReason explaining an unfilled end, 0 otherwise
    uint8_t post_at_limit     # rest at the limit (limit-order semantics), not joining the NBBO
    uint8_t stp               # StpMode of its children; STP_UNKNOWN: the venue's default
    uint8_t clock             # ClockState: whether the clock visits it
    uint8_t park_kind         # PARKED: which of its instrument's PARK_KINDS heaps holds it
    uint8_t _pad[2]
    int64_t v_sent[MAX_VENUES]
    int64_t v_filled[MAX_VENUES]
    int64_t v_fees[MAX_VENUES]
    int32_t v_children[MAX_VENUES]


@cython.final
cdef class Router:
    # ------------------------------------------------------------ layout
    cdef readonly int n_venues
    cdef readonly int n_instruments
    cdef readonly int max_levels
    cdef readonly dict config

    # ------------------------------------------------------------ market view
    cdef Venue* venues
    cdef Fees* fees                   # [instrument*n_venues + venue]
    cdef int64_t* lvl_px              # [((instrument*n_venues + venue)*2 + side)*max_levels + k]
    cdef int64_t* lvl_qty             # side 0: bids (best first), 1: asks (best first)
    cdef int32_t* lvl_n               # [(instrument*n_venues + venue)*2 + side]
    cdef uint8_t* stale               # [instrument*n_venues + venue]: displayed size proved absent
    cdef int64_t* res_live            # per book side: leaves there of the live sweep children
                                      # sent since its last update
    cdef int64_t* res_filled          # per book side: what those children filled there
    cdef int64_t* own_lvl             # sweep scratch [venue*max_levels + k]: lots at level k
                                      # of our resting children the parent's STP cancels
    cdef int64_t* book_seq            # per book side: updates received (children compare)
    cdef int64_t* volume              # per instrument: market volume reported (POV)

    # ------------------------------------------------------------ parents and children
    cdef Parent* parents
    cdef int32_t parents_cap
    cdef int32_t parent_free
    cdef int32_t active_head
    cdef int32_t active_tail
    cdef int64_t next_seq
    cdef int32_t awake_head           # the clock's list (see ClockState)
    cdef int32_t awake_tail
    cdef Woken* woken                 # woken since the last tick, in no order
    cdef Py_ssize_t n_woken
    cdef Py_ssize_t woken_cap
    cdef SlotHeap* parked             # [instrument*PARK_KINDS + kind]
    cdef int32_t* park_pos            # per parent slot: its index in its heap
    cdef Py_ssize_t n_parked
    cdef int64_t last_tick_ns         # the last tick's now (a clock step back wakes all)
    cdef int32_t* finished
    cdef Py_ssize_t n_finished
    cdef Py_ssize_t finished_cap
    cdef Child* children
    cdef int32_t children_cap
    cdef int32_t child_free
    cdef IdMap parent_ids
    cdef IdMap child_ids              # live children
    cdef IdMap drain_ids              # draining children: done here, still worked at the venue
    cdef IdMap post_index             # _post_key(instrument, venue, side, price) -> a passive child
    cdef int64_t next_child_id

    # ------------------------------------------------------------ output
    cdef Action* actions
    cdef Py_ssize_t n_actions
    cdef Py_ssize_t actions_cap

    # ------------------------------------------------------------ configuration (C copies)
    cdef readonly int default_strategy   # the strategy of a parent naming none (config)
    cdef int max_reroutes
    cdef bint post_residual
    cdef int64_t dark_min_qty
    cdef int64_t ack_timeout_ns
    cdef int64_t recovery_ns
    cdef int64_t recovery_max_ns
    cdef int64_t reprice_ticks
    cdef int64_t reprice_interval_ns
    cdef int64_t twap_slices
    cdef int64_t slice_min_qty
    cdef int64_t queue_ref_lots
    cdef int64_t fill_prior_ppm
    cdef int64_t fill_prior_lots
    cdef int64_t passive_value

    # ------------------------------------------------------------ C API: market view
    cdef int update_side_c(self, int instrument, int venue, int side_index, const int64_t* px,
                           const int64_t* qty, Py_ssize_t n) except -1
    cdef void nbbo_c(self, int instrument, int64_t* out) noexcept
    cdef bint routable_c(self, int venue, int64_t now) noexcept

    # ------------------------------------------------------------ C API: orders and reports
    cdef int route_c(self, int64_t parent_id, int instrument, int side, int64_t qty,
                     int64_t limit_px, int strategy, int tif, int64_t now,
                     const RouteParams* params) except -1
    cdef int on_ack_c(self, int64_t child_id, int64_t now) except -1
    cdef int on_fill_c(self, int64_t child_id, int64_t last_qty, int64_t last_px_x2,
                       int64_t fee, bint has_fee, int64_t leaves, int64_t now) except -1
    cdef int on_reject_c(self, int64_t child_id, int reason, int64_t now) except -1
    cdef int on_canceled_c(self, int64_t child_id, int64_t now) except -1
    cdef int on_expired_c(self, int64_t child_id, int64_t now) except -1
    cdef int on_replaced_c(self, int64_t child_id, int64_t now) except -1
    cdef int on_replace_rejected_c(self, int64_t child_id, int64_t now) except -1
    cdef int tick_c(self, int64_t now) except -1
    cdef int cancel_parent_c(self, int64_t parent_id, int64_t now) except -1
    cdef int reduce_parent_c(self, int64_t parent_id, int64_t cut, int64_t now) except -1

    # ------------------------------------------------------------ internals
    cdef int _configure(self, dict overrides) except -1
    cdef Venue* _venue(self, int venue) except NULL
    cdef int _check_book(self, int instrument, int venue) except -1
    cdef Fees* _fees(self, object instrument, object venue) except NULL
    cdef int _validate_side(self, int side_index, const int64_t* px, const int64_t* qty,
                            Py_ssize_t n) noexcept
    cdef int64_t _fill_rate_ppm(self, Venue* vn) noexcept
    cdef Parent* _parent(self, int64_t parent_id) except NULL
    cdef tuple _avg_px(self, Parent* p)
    cdef int _grow_parents(self) except -1
    cdef int _grow_children(self) except -1
    cdef int _grow_actions(self) except -1
    cdef int _emit(self, int kind, int32_t ci, int64_t price, int64_t qty, int64_t min_qty,
                   int ord_type, int tif, int flags, int64_t now) except -1
    cdef int32_t _new_child(self, int32_t pi, int venue, int role, int64_t price, int64_t qty,
                            int64_t min_qty, int ord_type, int tif, int flags,
                            int64_t now) except -2
    cdef Py_ssize_t _sweep_claim(self, int32_t ci) noexcept
    cdef void _confirm_resting(self, int32_t ci) noexcept
    cdef uint32_t _own_resting(self, Parent* p, int s) noexcept
    cdef int32_t _live_child(self, int64_t child_id) noexcept
    cdef int64_t _post_key_of(self, int32_t ci) noexcept
    cdef int _post_link(self, int32_t ci) except -1
    cdef void _post_unlink(self, int32_t ci) noexcept
    cdef void _child_off(self, int32_t ci) noexcept
    cdef void _free_child(self, int32_t ci) noexcept
    cdef void _child_done(self, int32_t ci) noexcept
    cdef void _ended_short(self, int32_t ci) noexcept
    cdef int32_t _draining_child(self, int64_t child_id) noexcept
    cdef int _drain(self, int32_t ci, int64_t now) except -1
    cdef int _drain_report(self, int64_t child_id, bint ended, int64_t now) except -1
    cdef int _drained(self, int32_t ci, int64_t now) except -1
    cdef void _heard_from(self, int32_t ci, int64_t now) noexcept
    cdef void _mark_down(self, int venue, int64_t now) noexcept
    cdef int64_t _sweep(self, int32_t pi, int64_t want, int64_t now) except -1
    cdef int _ping_dark(self, int32_t pi, int64_t now) except -1
    cdef int64_t _passive_price(self, Parent* p) noexcept
    cdef int _choose_post_venue(self, Parent* p, int64_t px, int64_t now) noexcept
    cdef int _post(self, int32_t pi, int64_t now) except -1
    cdef int _reprice(self, int32_t pi, int64_t now) except -1
    cdef int64_t _target(self, Parent* p, int64_t now) noexcept
    cdef int _advance(self, int32_t pi, int64_t now) except -1
    cdef int _end(self, int32_t pi, int status, int reason, int64_t now) except -1
    cdef int _finish(self, int32_t pi, int status, int reason, int64_t now) except -1
    cdef int _cancel_children(self, int32_t pi, int64_t now) except -1
    cdef i128 _fee(self, int instrument, int venue, bint maker, int64_t px_x2,
                   int64_t qty) noexcept
    cdef bint _any_open_lit(self) noexcept
    cdef bint _any_routable_lit(self, int64_t now) noexcept
    cdef void _bestex(self, Parent* p, BestEx* out) noexcept
    cdef void _release_parent(self, int32_t pi) noexcept
    cdef void _awake_link_before(self, int32_t pi, int32_t at) noexcept
    cdef void _awake_unlink(self, int32_t pi) noexcept
    cdef void _unpark(self, int32_t pi) noexcept
    cdef int _wake(self, int32_t pi) except -1
    cdef int _wake_moved(self) except -1
    cdef int _wake_all(self) except -1
    cdef int _merge_woken(self) except -1
    cdef int _try_park(self, int32_t pi, int64_t now) except -1
    cdef int64_t _wakeup_of(self, int32_t pi, int64_t now, int64_t best) noexcept
