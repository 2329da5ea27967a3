# cython: language_level=3
"""Interface of the simulator's event loop (``simloop.pyx``).

The loop owns the time line of a simulated market: background flow (numpy
chunks of book operations), strategy messages in flight (orders travelling to
a venue, reports travelling back, timers) and venue sessions. It drives one
book per (venue, instrument) through a ``BookPort``, so the Cython
``OrderBook`` is called at C level and any Python book with the same API (the
pure-Python reference) can be plugged in for comparison.
"""
cimport cython
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t

from ext.book cimport OrderBook, Fill, Event, Op
from ext.idmap cimport IdMap

cdef extern from *:
    # gcc's 128-bit integer: the fee of a fill and the market's cumulative
    # notional are products of two int64 (price x quantity) that need not
    # fit in 64 bits on a fine price and lot grid.
    ctypedef long long i128 "__int128"

# ---------------------------------------------------------------- report kinds
# What a child order's owner hears back. 1-5 mirror EventKind so a book event
# becomes a report without a table; FILL and CANCEL_REJECTED are venue-level.
cpdef enum ReportKind:
    RPT_ACCEPTED = 1
    RPT_REJECTED = 2
    RPT_CANCELED = 3
    RPT_EXPIRED = 4
    RPT_REPLACED = 5
    RPT_FILL = 6
    RPT_CANCEL_REJECTED = 7   # a cancel or replace the venue refused (FIX 35=9)

# FIX LastLiquidityInd (tag 851): 1 added liquidity, 2 removed it.
cpdef enum Liquidity:
    LIQ_NONE = 0
    LIQ_MAKER = 1
    LIQ_TAKER = 2

# ---------------------------------------------------------------- records
ctypedef struct Msg:
    # One timed item on the loop's heap: an order message arriving at a venue,
    # a report arriving at its owner, a timer, or a session open/close.
    int64_t ts                # when it is due
    int64_t seq               # tie-break: FIFO among equal times, so runs repeat exactly
    int64_t child_id
    int64_t price             # NEW/REPLACE: limit in ticks; REPORT: last price in half-ticks
    int64_t qty               # NEW/REPLACE: order quantity; REPORT: last quantity
    int64_t leaves            # REPORT: leaves_qty after this report
    int64_t cum               # REPORT: cum_qty after this report
    int64_t order_qty         # REPORT: order quantity (changes with a replace); NEW: min_qty
    int64_t fee               # REPORT: fee of this fill, in fee units (negative: rebate)
    int64_t venue_ts          # REPORT: when it happened at the venue
    int32_t kind              # MSG_*
    int32_t target            # book (orders), venue (sessions) or callback slot (timers)
    int32_t rec               # orders and reports: the child's record slot (held while named)
    int32_t _pad
    uint16_t reason           # REPORT: RejectReason or CancelReason
    uint8_t report            # REPORT: ReportKind
    uint8_t liquidity         # REPORT: Liquidity
    uint8_t side
    uint8_t ord_type
    uint8_t tif
    uint8_t flags

ctypedef struct HeapKey:
    # The heap orders these small keys; the message itself stays in a pool
    # slot, so sifting moves 24 bytes instead of a whole Msg.
    int64_t ts
    int64_t seq
    Py_ssize_t slot

ctypedef struct Child:
    # The loop's record of one strategy (child) order, updated at venue time;
    # freed once it is done and no message names it (see ``_release``).
    int64_t submit_ts
    int64_t qty               # current order quantity
    int64_t cum
    int64_t limit             # limit price in ticks (0: market or pure midpoint peg)
    int64_t account
    int32_t book
    int32_t stp
    uint8_t side
    uint8_t state             # CHILD_*
    uint8_t reported          # first report delivered (for the measured latency)
    uint8_t quiet_ack         # its owner ignores acks (a StrategyCore)
    uint8_t retiring          # its id is on the loop's retiring queue
    int32_t slot              # its owner's working-order slot (StrategyCore), -1: none
    int32_t refs              # messages naming it in the heap or held (an ack)
    int64_t retire_ts         # done and unnamed: its record may be freed from then on

ctypedef struct Retiring:
    # A finished child waiting out FINISHED_KEEP_NS: its id, its record's slot,
    # and its record's ``retire_ts`` when queued (another there now: named again since).
    int64_t child_id
    int64_t ts
    int32_t rec
    int32_t _pad

ctypedef struct DarkOrder:
    # A midpoint order of the dark pool outside the matching book (parked) or
    # inside it with a limit that the mid may leave (tracked): one slot of a
    # ``DarkBook``, in one of its four heaps.
    int64_t order_id
    int64_t account
    int64_t limit             # ticks; 0 means a pure peg (any mid)
    int64_t leaves
    int64_t prio              # arrival order, kept through park/unpark
    int64_t key               # its heap's key (see DarkBook): the mid at which it flips
    int32_t stp
    int32_t pos               # index in its heap
    uint8_t side
    uint8_t tif
    uint8_t heap              # DARK_PARKED_BUY .. DARK_TRACKED_SELL, or DARK_NONE
    uint8_t _pad[1]

ctypedef struct DarkHeap:
    # A binary min-heap of DarkBook slots by (key, prio); each slot knows its
    # index (``DarkOrder.pos``), so one can leave from anywhere in O(log n).
    int32_t* slots
    Py_ssize_t n, cap

ctypedef struct DarkDue:
    # A parked order the mid lets in, sorted by arrival before it re-enters.
    int64_t prio
    int32_t slot
    int32_t _pad

ctypedef struct ReportRec:
    # A report as its owner receives it: the fields of ``Report``, in C. A
    # ``StrategyCore`` keeps its fills as these and makes ``Report`` objects
    # only when Python asks for them.
    int64_t child_id
    int64_t ts                # at the venue
    int64_t recv_ts           # at the owner
    int64_t price_x2
    int64_t last_qty
    int64_t order_qty
    int64_t leaves_qty
    int64_t cum_qty
    int64_t fee
    int32_t venue
    int32_t book
    uint16_t reason
    uint8_t kind              # ReportKind
    uint8_t side
    uint8_t liquidity
    uint8_t _pad[3]

ctypedef struct Trade:
    int64_t ts
    int64_t price_x2
    int64_t qty
    int32_t book
    uint8_t aggressor_side
    uint8_t _pad[3]

ctypedef struct MdQuote:
    # One state of a book as a strategy will see it, from ``seen_ts`` on
    # (the venue's market-data latency after the change): its top, its
    # cumulative trades, and how many levels per side its ring's ``lv``
    # holds for it (up to the ring's ``depth``).
    int64_t seen_ts
    int64_t bid_px
    int64_t bid_qty
    int64_t ask_px
    int64_t ask_qty
    int64_t vol_qty            # lots traded on the book so far
    i128 vol_n2                # and their notional, half-ticks x lots
    int32_t n_bids
    int32_t n_asks

ctypedef struct MdLevel:
    # One price level as recorded for strategies (``DEPTH_DTYPE``'s fields;
    # count widened so a record has no padding and compares bytewise).
    int64_t price
    int64_t qty
    int64_t count

ctypedef struct MdRing:
    # A book's states not yet superseded for a strategy: ``q[lo]`` is the
    # one it sees now, ``q[lo + 1:hi]`` are still in flight (``seen_ts`` not
    # decreasing). ``lv[k * 2 * depth:]`` holds state k's first ``depth``
    # bid levels then its first ``depth`` ask levels (a dark book: depth 0).
    # Grows by doubling, compacts in place: no steady-state allocation.
    MdQuote* q
    MdLevel* lv
    Py_ssize_t lo, hi, cap, lv_cap
    int32_t depth

ctypedef struct Quote:
    int64_t ts
    int64_t bid_px
    int64_t bid_qty
    int64_t ask_px
    int64_t ask_qty
    int32_t book
    int32_t _pad


# ---------------------------------------------------------------- book ports
cdef class BookPort:
    # After each operation ``fills[0:n_fills]`` and ``events[0:n_events]`` hold
    # its output until ``clear()``.
    cdef readonly object book
    cdef Fill* fills
    cdef Py_ssize_t n_fills
    cdef Event* events
    cdef Py_ssize_t n_events

    cdef int add(self, int64_t order_id, int side, int64_t price, int64_t qty, int64_t account,
                 int ord_type, int tif, int flags, int stp, int64_t ts,
                 bint keep_events) except -1
    cdef int cancel(self, int64_t order_id, int64_t ts, bint keep_events) except -1
    cdef int replace(self, int64_t order_id, int64_t price, int64_t qty, int64_t ts,
                     bint keep_events) except -1
    cdef int expire_day(self, int64_t ts) except -1
    cdef void clear(self) noexcept
    cdef int64_t best_bid(self) except -1
    cdef int64_t best_ask(self) except -1
    cdef int64_t best_bid_qty(self) except -1
    cdef int64_t best_ask_qty(self) except -1
    cdef Py_ssize_t levels(self, int side_index, MdLevel* out, Py_ssize_t n) except -1
    cdef int64_t leaves(self, int64_t order_id) except -1
    cdef int can_fill(self, bint is_buy, int64_t limit, int64_t qty, int64_t account,
                      int stp) except -1


@cython.final
cdef class CyBookPort(BookPort):
    cdef OrderBook cy


@cython.final
cdef class PyBookPort(BookPort):
    cdef object _add, _cancel, _replace, _drain_fills, _drain_events, _bbo, _order
    cdef bint can_mute
    cdef Py_ssize_t fills_cap, events_cap
    cdef int _take_output(self, bint keep_events) except -1
    cdef int _mute(self, bint keep_events) except -1


# ---------------------------------------------------------------- dark pool state
cdef enum:
    # A DarkBook's heaps. Each is a min-heap on a key chosen so that the
    # orders a mid move flips are a prefix: parked buys by -limit (pure pegs
    # first), parked sells by limit, tracked buys by limit, tracked sells by
    # -limit.
    DARK_PARKED_BUY = 0
    DARK_PARKED_SELL = 1
    DARK_TRACKED_BUY = 2
    DARK_TRACKED_SELL = 3
    DARK_NONE = 4

@cython.final
cdef class DarkBook:
    cdef DarkOrder* orders    # by slot
    cdef Py_ssize_t n_slots, slots_cap
    cdef int32_t* free_slots  # stack of free slots (capacity slots_cap)
    cdef Py_ssize_t n_free
    cdef IdMap ids            # order id -> slot, for every parked or tracked order
    cdef DarkHeap heaps[4]
    cdef DarkDue* due         # scratch of a refresh and of the close
    cdef Py_ssize_t due_cap
    cdef int64_t last_mid2
    cdef int64_t visited      # heap entries a refresh looked at (tests: ``dark_visited``)

    cdef int32_t slot_of(self, int64_t order_id) noexcept
    cdef int32_t add_slot(self, DarkOrder* o) except -1
    cdef void free_slot(self, int32_t s) noexcept
    cdef void drop(self, int32_t s) noexcept
    cdef int32_t tracked_slot(self, int64_t order_id) noexcept
    cdef int push(self, int which, int64_t key, int32_t s) except -1
    cdef void take(self, int32_t s) noexcept
    cdef void sift(self, DarkHeap* h, Py_ssize_t at) noexcept
    cdef int park(self, int32_t s) except -1
    cdef int track(self, int32_t s) except -1
    cdef int add_due(self, Py_ssize_t n, int32_t s) except -1
    cdef Py_ssize_t n_parked(self) noexcept
    cdef Py_ssize_t n_tracked(self) noexcept


cdef class MarketLoop


# ---------------------------------------------------------------- reports
@cython.final
cdef class Report:
    cdef readonly int kind, venue, book, side, liquidity, reason
    cdef readonly int64_t child_id, ts, recv_ts, price_x2, last_qty, order_qty
    cdef readonly int64_t leaves_qty, cum_qty, fee

    @staticmethod
    cdef Report new(Msg* m, int venue, int book, int side)
    @staticmethod
    cdef Report from_rec(const ReportRec* r)


# ---------------------------------------------------------------- the loop
cdef class MarketLoop:
    # ------------------------------------------------------------ layout
    cdef readonly int n_venues, n_instruments, n_books
    cdef list ports                   # BookPort per book (venue-major)
    cdef list darks                   # DarkBook, or None for a lit book
    cdef bint all_cy                  # every port is a CyBookPort
    cdef int32_t* book_venue
    cdef int32_t* book_instr
    cdef int32_t* lit_books           # [instrument * n_venues + k]
    cdef int32_t* n_lit
    cdef int32_t* dark_books
    cdef int32_t* n_dark
    cdef uint8_t* venue_dark
    cdef uint8_t* venue_open
    cdef uint8_t* dark_watch          # per instrument: a dark book waits on the mid

    # ------------------------------------------------------------ fees per book (fee units: 1e-4 tick*lot)
    cdef int64_t* maker_per_lot
    cdef int64_t* taker_per_lot
    cdef int64_t* maker_cbps          # hundredths of a basis point
    cdef int64_t* taker_cbps

    # ------------------------------------------------------------ latency
    cdef list lat_models
    cdef list lat_arrays
    cdef int64_t** lat_ptr
    cdef Py_ssize_t* lat_pos
    cdef Py_ssize_t* lat_len
    cdef int64_t* last_in             # FIFO per venue channel: no overtaking
    cdef int64_t* last_out
    cdef double* rtt_ewma
    cdef int64_t* rtt_n
    cdef int64_t* rtt_sum
    # The current response batch (one venue operation's reports): its number, and per
    # venue the batch it last drew a delivery time for, and that time.
    cdef int64_t batch_gen
    cdef int64_t* batch_gen_of
    cdef int64_t* batch_at

    # ------------------------------------------------------------ market-data latency
    # Channels ``n_venues + v`` of the latency arrays above draw venue v's
    # market-data latency; ``md_on[v]`` is 0 when it has none (reads are live).
    cdef uint8_t* md_on
    cdef MdRing* md                   # per book (books of md_on venues only)
    cdef int64_t* md_last             # per venue: latest seen_ts (its feed never reorders)
    cdef int64_t* book_vol_qty        # per book: lots traded so far (what rings record)
    cdef i128* book_vol_n2

    # ------------------------------------------------------------ time and heap
    cdef readonly int64_t now
    cdef bint running
    cdef HeapKey* heap
    cdef Msg* pool                    # message of each heap key, by slot
    cdef Py_ssize_t* pool_free        # stack of free pool slots
    cdef Py_ssize_t heap_n, heap_cap, n_pool_free
    cdef int64_t msg_seq

    # ------------------------------------------------------------ strategy orders
    # Records of the children still working or finished less than
    # FINISHED_KEEP_NS ago, in reused slots: memory follows the live children,
    # not every child ever sent.
    cdef Child* children              # by record slot
    cdef Py_ssize_t n_child_slots, children_cap
    cdef int32_t* child_free          # stack of free record slots
    cdef Py_ssize_t n_child_free, child_free_cap
    cdef IdMap child_index            # child id -> record slot
    cdef int64_t n_children           # child ids handed out (the newest is BASE + n_children)
    cdef list owners                  # by record slot (None in a free one)
    # Finished children waiting out FINISHED_KEEP_NS, oldest first:
    # ``retiring[retiring_lo:retiring_hi]``.
    cdef Retiring* retiring
    cdef Py_ssize_t retiring_lo, retiring_hi, retiring_cap
    # A child whose record is held (a message names it) and is about to be
    # looked up: the one whose order message is being handled (its reports name
    # it), else the newest sent (its strategy books it). 0: none. Its record
    # is found without a lookup.
    cdef int64_t cur_id
    cdef int32_t cur_rec
    cdef list timer_cbs               # callback per timer slot (None: free)
    cdef int32_t* free_slots          # stack of free timer slots
    cdef Py_ssize_t n_free, free_cap
    cdef int64_t dark_prio
    cdef int64_t pending_ack          # child whose ack waits for the end of the event (0: none)
    cdef Msg pending_ack_msg

    # ------------------------------------------------------------ background flow
    cdef object flow
    cdef object chunk_ops, chunk_books
    cdef const Op* cops
    cdef const int32_t* cbooks
    cdef Py_ssize_t cpos, clen
    cdef bint flow_done

    # ------------------------------------------------------------ statistics and tape
    cdef readonly int64_t n_bg_ops, n_strategy_msgs, n_reports
    cdef int64_t* cum_qty
    cdef i128* cum_notional2          # 128 bits: a session's notional can pass 2^63
    # Instruments whose lit quotes, venues' hours or traded volume moved since the last
    # take_changed(): a flag each, and the flagged ones listed, so that a reader costs
    # what changed and not the number of instruments.
    cdef uint8_t* changed
    cdef int32_t* changed_list
    cdef Py_ssize_t n_changed
    cdef int64_t sample_ns, next_sample
    cdef int64_t* sample_buf
    cdef Py_ssize_t n_samples, samples_cap
    cdef bint record_tape
    cdef Trade* trades
    cdef Py_ssize_t n_trades, trades_cap
    cdef Quote* quotes
    cdef Py_ssize_t n_quotes, quotes_cap
    cdef int64_t* last_bbo            # 4 per book

    # ------------------------------------------------------------ internals
    cdef int _grow_heap(self) except -1
    cdef int _push(self, Msg* m) except -1
    cdef void _pop(self, Msg* out) noexcept
    cdef int _refill(self) except -1
    cdef int64_t _run(self, int64_t until) except -1
    cdef int _fill_latency(self, int v) except -1
    cdef int64_t _latency(self, int v) except -1
    cdef int64_t _deliver_at(self, int v, int64_t venue_ts) except -1
    cdef int _md_snapshot(self, int32_t b, MdQuote* q, MdLevel* lv) except -1
    cdef int _md_record(self, int32_t b, int64_t ts) except -1
    cdef const MdQuote* _md_seen(self, int32_t b) noexcept
    cdef int _seen_volume(self, int instr, int64_t* qty, i128* n2) except -1
    cdef int _top(self, int32_t b, bint seen, int64_t* out) except -1
    cdef int64_t fee_c(self, int32_t b, int liquidity, int64_t price_x2,
                       int64_t qty) except? 0x7FFFFFFFFFFFFFFF
    cdef int64_t mid2_c(self, int instr, bint seen) except -1
    cdef int _bg_op(self, const Op* op, int32_t b) except -1
    cdef int64_t _arrival(self, int v) except -1
    cdef Child* _child(self, int64_t child_id) except NULL
    cdef int _release(self, int32_t s, int64_t child_id) except -1
    cdef int _queue_retiring(self, int64_t child_id, int32_t s, int64_t ts) except -1
    cdef int _retire(self) except -1
    cdef int _nbbo(self, int instr, int64_t* bid, int64_t* ask, bint seen) except -1
    cdef int _after_lit(self, int32_t b, int64_t ts) except -1
    cdef int _output(self, int32_t b, int64_t ts, int64_t mid2, bint internal) except -1
    cdef int _report(self, int64_t child_id, int kind, int64_t price_x2, int64_t last_qty,
                     int liquidity, int reason, int64_t ts) except -1
    cdef int _flush_ack(self) except -1
    cdef int _handle(self, Msg* m) except -1
    cdef int _on_order(self, Msg* m) except -1
    cdef int _tick(self, PeriodicTimer pt) except -1
    cdef int _on_session(self, Msg* m) except -1
    cdef int _deliver(self, Msg* m) except -1
    cdef int _dark_new(self, int32_t d, int64_t order_id, int side, int64_t limit, int64_t qty,
                       int64_t account, int ord_type, int tif, int flags, int stp, int64_t ts,
                       bint strategy, int64_t min_qty) except -1
    cdef int _dark_cancel(self, int32_t d, int64_t order_id, int64_t ts, bint strategy) except -1
    cdef int _dark_refresh(self, int32_t d, int64_t mid2, int64_t ts) except -1
    cdef int _dark_close(self, DarkBook dk, int64_t ts) except -1
    cdef int _dark_watch_instr(self, int instr, int64_t ts) except -1
    cdef void _update_watch(self, int instr) noexcept
    cdef void _mark_changed(self, int instr) noexcept
    cdef void _mark_all_changed(self) noexcept
    cdef int _sample(self, int64_t upto) except -1
    cdef int _tape_quote(self, int32_t b, int64_t ts) except -1
    cdef int64_t submit_c(self, int book, int side, int64_t qty, int64_t price, int ord_type,
                          int tif, int flags, int64_t account, int stp, int64_t min_qty,
                          object owner) except -1
    cdef int cancel_c(self, int64_t child_id) except -1
    cdef int replace_c(self, int64_t child_id, int64_t price, int64_t qty) except -1
    cdef int set_timer_c(self, int64_t ts, object callback) except -1


# ---------------------------------------------------------------- strategy base
cdef class StrategyCore


@cython.final
cdef class PeriodicTimer:
    # A strategy's ``wake_every``: re-armed in C before each call.
    cdef StrategyCore owner
    cdef int64_t period
    cdef bint active


cdef class StrategyCore:
    # The per-report bookkeeping of one parent's child orders, in C; the
    # strategy's decisions stay in its subclass: a Python one (hooks called
    # only when defined) or a compiled one overriding the ``*_c`` hooks.
    cdef readonly MarketLoop loop
    cdef readonly int instrument, side, n_instruments
    cdef readonly int64_t qty, account
    cdef readonly int64_t filled, notional_x2, fees, finished_at
    cdef public bint started, stopped
    cdef bint hook_fill, hook_done
    cdef PeriodicTimer ticker
    cdef object _on_timer                # the bound Python hook, looked up once

    # child ids in send order; ``children`` lists them for Python on demand
    cdef int64_t* child_ids
    cdef Py_ssize_t n_child_ids, child_ids_cap, n_children_listed
    cdef list _children
    # fills; ``fills`` makes their Report objects on demand (once each)
    cdef ReportRec* fill_recs
    cdef Py_ssize_t n_fill_recs, fill_recs_cap, n_fills_listed
    cdef list _fills
    # working orders in send order (id 0: a freed slot); ``working`` is
    # rebuilt from them when Python reads it after a change
    cdef int64_t* w_ids
    cdef int64_t* w_leaves
    cdef Py_ssize_t w_n, w_live, w_cap
    cdef dict _working
    cdef bint working_dirty

    # ------------------------------------------------------------ actions (C)
    cdef int64_t send_c(self, int venue, int64_t qty, int64_t price, int ord_type, int tif,
                        int flags) except -1
    cdef int cancel_c(self, int64_t child_id) except -1
    cdef int replace_c(self, int64_t child_id, int64_t price, int64_t qty) except -1
    cdef int wake_at_c(self, int64_t ts) except -1
    cdef int64_t leaves_c(self, int64_t child_id) noexcept

    # ------------------------------------------------------------ market data (C)
    # What ``self.market`` shows a Python strategy: each venue's books as
    # they were its market-data latency ago (live without one).
    cdef int seen_top_c(self, int venue, int64_t* out) except -1
    cdef int seen_nbbo_c(self, int64_t* bid, int64_t* ask) except -1
    cdef int64_t seen_mid2_c(self) except -1

    # ------------------------------------------------------------ hooks (override in Cython)
    cdef int on_timer_c(self) except -1
    cdef int on_fill_c(self, const ReportRec* r) except -1
    cdef int on_child_done_c(self, const ReportRec* r) except -1

    # ------------------------------------------------------------ booking
    cdef int on_report_c(self, const Msg* m, int venue, int book) except -1
    cdef object _report_obj(self, const ReportRec* r)
    cdef int _w_add(self, int64_t child_id, int64_t leaves) except -1
    cdef void _w_remove(self, Child* ch) noexcept
