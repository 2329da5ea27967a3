# cython: language_level=3
"""Interface of the pre-trade risk engine, for Cython callers.

Python callers (the engine) use the ``def`` methods documented in
``risk.pyx``; a Cython caller (the router, a replay tool) may call
``check_new_c`` and the ``on_*_c`` twins directly with C values.
"""
cimport cython
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t

# ---------------------------------------------------------------- public enums
# Order flags the engine sets from the client's message (bit mask).
cpdef enum RiskFlag:
    FLAG_LOCATE = 1                 # SELL_SHORT: a locate was obtained
    FLAG_INTENDED_DUPLICATE = 2     # client says the repeat order is intended
    FLAG_ADMITTED = 4               # the throttle was judged already (SessionGate.admit)

# Which configuration layer a limit came from; named in the reject text.
cpdef enum LimitLayer:
    LAYER_NONE = 0
    LAYER_FIRM = 1
    LAYER_ACCOUNT = 2
    LAYER_INSTRUMENT = 3
    LAYER_ACCOUNT_INSTRUMENT = 4    # an account's override for one instrument
    LAYER_SESSION = 5

# What a reject detail's ``limit`` and ``value`` measure (for the text).
cpdef enum Measure:
    M_NONE = 0
    M_LOTS = 1
    M_MONEY = 2
    M_ORDERS = 3
    M_TICKS = 4
    M_NS = 5

# ---------------------------------------------------------------- state records
# Effective limits of one account in one instrument: the tightest value over
# firm, account, instrument and account-instrument layers, resolved once per
# (re)load so that a check is one comparison. INT64_MAX means unlimited.
ctypedef struct CellLimits:
    int64_t max_order_qty           # lots
    int64_t max_order_notional      # money units
    int64_t max_gross               # lots
    int64_t max_net                 # lots
    int64_t max_open                # working orders of the account in the instrument
    int64_t collar_bps              # -1: no band in basis points
    int64_t collar_ticks            # -1: no band in ticks
    uint8_t layer_qty
    uint8_t layer_notional
    uint8_t layer_gross
    uint8_t layer_net
    uint8_t layer_open
    uint8_t layer_bps
    uint8_t layer_ticks
    uint8_t entitled
    uint8_t restricted              # 0, or the layer whose list restricts it
    uint8_t _pad[7]

# Exposure of one account in one instrument (kept by fills, cancels, ...).
ctypedef struct CellState:
    int64_t position                # signed lots, long > 0
    int64_t open_buy                # leaves of working buys, lots
    int64_t open_sell               # leaves of working sells (SELL and SELL_SHORT)
    int64_t cost                    # money units of the open position (paid if long,
                                    # received if short), for realized P&L
    int64_t open_orders

ctypedef struct AccountLimits:
    int64_t cash                    # money units, configured start-of-day cash
    int64_t credit                  # money units
    int64_t max_open
    int64_t max_daily_notional
    int64_t max_daily_loss
    uint8_t known
    uint8_t active
    uint8_t allow_short
    uint8_t killed
    uint8_t _pad[4]

ctypedef struct AccountState:
    int64_t cash_flow               # money in (sells) minus out (buys) from fills
    int64_t reserved                # worst-case cost of working BUY and SELL_SHORT
    int64_t short_basis             # proceeds held against open short positions
    int64_t open_notional           # worst-case notional of all working orders
    int64_t open_orders
    int64_t traded_notional         # today, from fills
    int64_t realized_pnl            # today, money units

ctypedef struct InstrumentInfo:
    int64_t min_lots
    int64_t mult                    # money units per (tick x lot)
    int64_t ref_price               # ticks; 0: none yet
    int64_t ref_ns
    int64_t max_ref_age_ns
    int64_t max_open                # working orders in the instrument, all accounts
    int64_t open_orders
    uint8_t layer_ref_age
    uint8_t known
    uint8_t halted
    uint8_t killed
    # 0: ref_ns is the reference's time. Else it is the market's quote, kept fresh by
    # market_checked: the RiskEngine.market_gen it was set in (see RiskEngine._ref_ns).
    uint32_t ref_gen

ctypedef struct ThrottleBucket:
    # One per session profile (the engine's client key): every session of a key
    # draws from it, so opening more sessions does not multiply the key's rate.
    int64_t rate                    # orders per second; 0: not throttled
    int64_t capacity                # burst, in nano-tokens (1e9 per order)
    int64_t tokens                  # nano-tokens
    int64_t last_ns

ctypedef struct SessionState:
    int64_t open_orders
    int32_t bucket                  # index into RiskEngine.buckets
    uint8_t known
    uint8_t releasing               # released with working orders: freed when the last is done
    uint8_t _pad[2]
    # How many sessions held this slot before: part of its cl_ord_id keys
    # (_clord_key), so a reused slot inherits none of the day's pairs.
    uint32_t generation
    uint32_t _pad2

# The scopes a mass cancel selects by (cancel on disconnect, kill switches):
# each working order is on one list per scope, so that a mass cancel walks
# the orders in scope and not the whole pool (whose size is the day's peak).
cpdef enum Scope:
    SCOPE_SESSION = 0
    SCOPE_ACCOUNT = 1
    SCOPE_INSTRUMENT = 2

# An order's place on one scope's list: pool slots, -1 at either end.
ctypedef struct ScopeLink:
    int32_t prev
    int32_t next

# The ends of one session's, account's or instrument's list (pool slots, -1: empty),
# in admission order.
ctypedef struct ScopeList:
    int32_t head
    int32_t tail

ctypedef struct WorkingOrder:
    int64_t key
    int64_t qty                     # order quantity (cum + leaves), lots
    int64_t leaves
    int64_t price                   # limit price, ticks (0 for MARKET)
    int64_t value_price             # price the reservation is valued at
    int32_t session
    int32_t account
    int32_t instrument
    int32_t next_free               # free list, -1 at the end
    ScopeLink link[3]               # [Scope]: its place on its session's, account's and
                                    # instrument's lists (only while ``used``)
    uint8_t side
    uint8_t ord_type
    uint8_t flags
    uint8_t used

# Order key -> pool slot. 8 bytes, not 16: the key itself lives in the pool
# and is compared there only when ``hash`` matches, so the index (probed at
# random once per order) takes half the cache it would with the key inline.
ctypedef struct IndexEntry:
    uint32_t hash                   # low 32 bits of kx_mix(key): home bucket and filter
    int32_t slot                    # -1: empty bucket

ctypedef struct DupEntry:
    int64_t qty
    int64_t price
    int64_t expires_ns              # identical orders are duplicative until then
    int64_t owner                   # order key whose pass set ``expires_ns`` (0: unknown)
    int64_t prev_expires_ns         # what it was before that pass (INT64_MIN: none), so a
                                    # downstream reject of the owner undoes its pass
    int32_t account
    int32_t instrument
    uint32_t hash                   # _dup_hash of the fields: home bucket, and a filter that
                                    # spares the field compare and the rehash on delete
    uint8_t side
    uint8_t used
    uint8_t _pad[2]

# Why the last order was rejected, filled only on the reject path.
ctypedef struct RejectDetail:
    int64_t limit
    int64_t value
    int32_t account
    int32_t instrument
    int32_t session
    uint16_t reason
    uint8_t layer
    uint8_t measure

ctypedef struct FirmState:
    int64_t open_orders
    int64_t open_notional
    int64_t traded_notional
    int64_t realized_pnl
    int64_t max_open
    int64_t max_daily_notional
    int64_t max_daily_loss
    uint8_t killed
    uint8_t _pad[7]


@cython.final
cdef class RiskEngine:
    # ------------------------------------------------------------ dimensions
    cdef int32_t n_accounts
    cdef int32_t n_instruments
    cdef int32_t n_sessions
    cdef int32_t cap_accounts
    cdef int32_t cap_instruments
    cdef int32_t cap_sessions
    cdef int32_t n_buckets
    cdef int32_t cap_buckets

    # ------------------------------------------------------------ C state
    cdef FirmState firm
    # The last market_checked: its time, and its generation (counted from 1, 0 skipped).
    cdef int64_t market_checked_ns
    cdef public uint32_t market_gen   # (public: a test sets it near its wrap)
    cdef AccountLimits* acct_limits
    cdef AccountState* acct_state
    cdef InstrumentInfo* inst
    cdef CellLimits* cell_limits     # [account * cap_instruments + instrument]
    cdef CellState* cell_state
    cdef SessionState* sessions
    cdef int32_t* free_sessions       # released slots, the next session_index takes the last
    cdef int32_t n_free_sessions
    cdef ThrottleBucket* buckets      # [bucket]; names in _bucket_names
    cdef int64_t dup_window_ns       # 0: duplicative check off

    # working orders: pool + open-addressing index key -> pool slot
    cdef WorkingOrder* orders
    cdef int32_t orders_cap
    cdef int32_t orders_free
    cdef int64_t n_orders
    cdef IndexEntry* oindex
    cdef int64_t omask
    # [Scope] -> one list per session (cap_sessions), account (cap_accounts) and
    # instrument (cap_instruments): the working orders of each, for mass cancels.
    cdef ScopeList* scope_lists[3]
    cdef int64_t scope_visits        # slots the last mass cancel's walk looked at (debug_scope)

    # The day's (session, cl_ord_id) pairs, one 8-byte key each (_clord_key; 0: empty
    # bucket, and the pair whose key is 0 is the flag clord_zero instead).
    cdef uint64_t* clord
    cdef int64_t clord_mask
    cdef int64_t clord_used
    cdef bint clord_zero

    cdef DupEntry* dup
    cdef int64_t dup_mask
    cdef int64_t dup_used
    cdef int64_t dup_purge_at
    cdef DupEntry* dup_hit           # bucket the last duplicative check looked at
    cdef DupEntry* dup_reuse         # first expired bucket on that probe path, or NULL
    cdef uint32_t dup_hash           # _dup_hash of the order check_new_c is checking

    cdef RejectDetail detail
    # Names of the call in progress, copied into ``detail`` only on a reject.
    cdef int32_t cur_account
    cdef int32_t cur_instrument
    cdef int32_t cur_session

    # ------------------------------------------------------------ Python state
    cdef dict _account_ix
    cdef dict _instrument_ix
    cdef dict _session_ix
    cdef list _account_names
    cdef list _instrument_names
    cdef list _session_names
    cdef dict _bucket_ix              # profile -> index into buckets
    cdef list _bucket_names           # per bucket: its profile ([sessions.<name>] table's name)
    cdef dict _instruments           # symbol -> ext.instrument.Instrument
    cdef dict _grids                 # symbol -> Instrument, every symbol ever configured
    cdef dict _config
    cdef object _plan_cache          # the validated form of _config
    cdef readonly list audit_log
    cdef bint _log_events             # audit events also to the kronos.risk logger

    # ------------------------------------------------------------ C API
    cdef int check_new_c(self, int64_t order_key, int32_t session, int32_t account,
                         int32_t instrument, int side, int ord_type, int64_t qty,
                         int64_t price, int flags, int64_t cl_ord_hash,
                         int64_t now_ns) except -1
    cdef int on_fill_c(self, int64_t order_key, int64_t qty, int64_t price) except -1
    cdef int _book_fill(self, int32_t account, int32_t instrument, int side, int64_t qty,
                        int64_t price) except -1
    cdef int on_done_c(self, int64_t order_key) except -1
    cdef int on_replace_c(self, int64_t order_key, int64_t new_qty, int64_t new_price,
                          int64_t cl_ord_hash, int64_t now_ns, bint admitted) except -1
    cdef int admit_replace_c(self, int64_t order_key, int64_t now_ns, int32_t session) noexcept
    cdef int32_t _replace_slot(self, int64_t order_key) noexcept

    # ------------------------------------------------------------ checks
    cdef int _reject(self, int reason, int layer, int measure, int64_t limit,
                     int64_t value) noexcept
    cdef int _throttle(self, int32_t session, int64_t now_ns) noexcept
    cdef int64_t _ref_ns(self, const InstrumentInfo* ins) noexcept
    cdef InstrumentInfo* _ref_slot(self, object instrument) except NULL
    cdef int _evaluate(self, int32_t account, int32_t instrument, int side, int ord_type,
                       int64_t qty, int64_t leaves, int64_t price, int flags, int64_t now_ns,
                       bint is_new, int64_t* value_price, int64_t* leaves_notional) noexcept

    # ------------------------------------------------------------ exposure
    cdef void _reserve(self, WorkingOrder* o, int64_t leaves_notional, bint count) noexcept
    cdef void _release(self, WorkingOrder* o, int64_t lots, bint count) noexcept
    cdef int64_t _close(self, CellState* cs, int64_t qty, int64_t price, int64_t mult,
                        int long_side) noexcept
    cdef int _remove(self, int32_t slot) noexcept
    cdef ScopeList* _ends(self, WorkingOrder* o, int kind) noexcept
    cdef int32_t _scope_count(self, int kind) noexcept
    cdef void _link(self, int32_t slot) noexcept
    cdef void _unlink(self, int32_t slot) noexcept

    # ------------------------------------------------------------ tables
    cdef int _ensure_dims(self, int32_t n_acc, int32_t n_ins, int32_t n_ses) except -1
    cdef int _grow_orders(self, int32_t cap) except -1
    cdef int _grow_scope_lists(self, int kind, int32_t old_cap, int32_t cap) except -1
    cdef int _set_order_index(self, int64_t size) except -1
    cdef int64_t _index_probe(self, int64_t key, uint32_t hash) noexcept
    cdef int32_t _find(self, int64_t key) noexcept
    cdef int _index_insert(self, int64_t key, int32_t slot) noexcept
    cdef int _index_remove(self, int64_t key) noexcept
    cdef int _set_clord(self, int64_t size) except -1
    cdef int _clord_add(self, uint64_t key) except -1
    cdef int _set_dup(self, int64_t size) except -1
    cdef DupEntry* _dup_find(self, int32_t account, int32_t instrument, int side,
                             int64_t qty, int64_t price, int64_t now_ns, uint32_t hash) noexcept
    cdef int _dup_record(self, int32_t account, int32_t instrument, int side,
                         int64_t qty, int64_t price, int64_t now_ns, uint32_t hash,
                         DupEntry* found, int64_t owner) except -1
    cdef int _dup_undo(self, WorkingOrder* o) noexcept
    cdef int _dup_purge(self, int64_t now_ns) noexcept
    cdef int _dup_delete(self, int64_t h) noexcept

    # ------------------------------------------------------------ config, admin, text
    cdef int _apply(self, dict config, int64_t now_ns, str action, str actor) except -1
    cdef int _check_units(self, object plan, dict config) except -1
    cdef int _set_cell(self, int32_t a, int32_t i, str symbol, dict f, dict acct, dict ins,
                       dict cell) except -1
    cdef int32_t _bucket_of(self, str profile) except -1
    cdef str _profile(self, int32_t s)
    cdef int32_t _take_session_slot(self, str name, str profile) except -1
    cdef void _free_session(self, int32_t s) noexcept
    cdef int _set_throttle(self, int32_t b, object plan, bint fresh) except -1
    cdef list _kill(self, str scope, object target, bint engage)
    cdef list _working_keys(self, int kind, int32_t ix)
    cdef int _walk_scope(self, list keys, int kind, int32_t ix) except -1
    cdef int _audit(self, int64_t now_ns, str action, str scope, object target, str actor,
                    str reason, dict extra) except -1
    cdef str _name(self, list names, int32_t index)
    cdef str _show(self, int measure, int64_t value, str symbol)
    cdef str _money_unit_text(self)


@cython.final
cdef class SessionGate:
    """A client session's per-order entry point (``RiskEngine.session_gate``)."""
    cdef RiskEngine risk
    cdef readonly int32_t session
    cdef readonly str name

    @staticmethod
    cdef SessionGate new(RiskEngine risk, int32_t session, str name)
