# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Background-flow assembler: numpy draws in, book operations out.

Role in the pipeline: the simulated market's background participants.
``sim.flow.SyntheticFlow`` draws a chunk of random numbers with numpy (event
times, uniforms, normals) and hands them here; ``assemble`` walks the chunk
once in C and writes ``Op`` records (``OP_DTYPE``) with a book index each, in
time order, which ``ext.simloop.MarketLoop`` then applies. The draws stay
vectorized; only the part that needs state (order ids, the ring of each
book's live liquidity-provider orders, the reference price) is a C loop.

Per event: a category (book x kind) is chosen by the uniform ``u_cat``
against the cumulative rate shares; events of a closed venue are dropped.

* ADD (liquidity provider): a new limit order on a side chosen by
  ``u_side``, ``level`` ticks behind the quote around the reference price; if
  the book's ring of ``window`` live LP orders is full, the oldest is canceled
  just before (the provider refreshes its quotes). Dark books: a pure
  midpoint peg (price 0).
* CANCEL: one of the book's ring orders, picked by ``u_cancel``.
* TAKE: a market order (lit) or an IOC midpoint order (dark).

Sizes and levels are geometric draws by inversion of ``u_qty``/``u_level``.
The reference price of an instrument is advanced only when a lit LP order
needs it, by one Gaussian step over the time since the last one: Brownian
increments add up, so sampling it less often does not change its law.
"""
cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.math cimport exp, floor, ceil, log, sqrt, INFINITY
from libc.stdint cimport int64_t, int32_t, uint8_t

import numpy as np
cimport numpy as cnp

from ext.book cimport Op, OP_ADD, OP_CANCEL
from ext.types cimport BUY, SELL, MARKET, LIMIT, GTC, IOC, STP_NONE
from ext.intarg cimport big_arg, small_arg
from ext.book import OP_DTYPE

cnp.import_array()

#: Accounts of the background participants (strategy accounts are larger).
LP_ACCOUNT, TAKER_ACCOUNT, DARK_LP_ACCOUNT, DARK_TAKER_ACCOUNT = 1, 2, 3, 4
KIND_ADD, KIND_CANCEL, KIND_TAKE = 0, 1, 2
#: ``Op.flags`` bit of a pegged operation and the offset's units per tick (see simflow.pxd).
PEG_MID_FLAG = <int>FLAG_PEG_MID
PEG_UNITS_PER_TICK = <int>PEG_SCALE

cdef enum:
    LP = 1
    TAKER = 2
    DARK_LP = 3
    DARK_TAKER = 4

cdef enum:
    K_ADD = 0
    K_CANCEL = 1
    K_TAKE = 2


cdef inline int64_t _geometric(double u, double log1mp) noexcept nogil:
    """Geometric on {1, 2, ...} by inversion; ``log1mp = log(1 - p)``."""
    if log1mp == -INFINITY or log1mp >= 0.0:
        return 1
    return 1 + <int64_t>floor(log(1.0 - u) / log1mp)


cdef int64_t* _copy_i64(object values, Py_ssize_t n) except NULL:
    cdef int64_t* out = <int64_t*>PyMem_Malloc(max(n, 1) * sizeof(int64_t))
    cdef Py_ssize_t i
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


cdef double* _copy_f64(object values, Py_ssize_t n) except NULL:
    cdef double* out = <double*>PyMem_Malloc(max(n, 1) * sizeof(double))
    cdef Py_ssize_t i
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


@cython.final
cdef class FlowAssembler:
    """Stateful C half of ``sim.flow.SyntheticFlow``.

    Parameters
    ----------
    cum_p : sequence of float
        Cumulative share of the total event rate per category; category
        ``c`` is book ``c // 3`` and kind ``c % 3`` (add, cancel, take).
    cat_log1mp : sequence of float
        ``log(1 - p)`` of each category's geometric size (in ``book_unit`` lots).
    book_instr, book_dark, book_unit, open_ns, close_ns, window : sequences
        Per book: instrument index, dark flag, lots per size unit, trading
        hours, and how many live LP orders the book keeps.
    price_ticks, sigma, gbm : sequences
        Per instrument: starting reference price (ticks), volatility per
        square-root second, and GBM (else arithmetic random walk, with
        ``sigma`` in ticks).
    start_ns : int
        Time the reference prices start at.
    half_spread : float
        Ticks between the reference price and the best LP quote.
    level_log1mp : float
        ``log(1 - depth_decay)``: geometric distance of quotes behind the best.
    pegged : bool, optional
        Lit LP orders are placed relative to the lit NBBO mid when they reach
        the book (``FLAG_PEG_MID``), not to the model's reference price: flow
        alongside a replay follows the replayed prices.
    """

    def __cinit__(self):
        self.cum_p = self.cat_log1mp = self.state = self.sigma = NULL
        self.cat_book = self.book_instr = NULL
        self.cat_kind = self.book_dark = self.gbm = NULL
        self.book_unit = self.open_ns = self.close_ns = self.next_id = NULL
        self.ring = self.ring_off = self.ring_pos = self.ring_count = self.window = NULL
        self.last_t = NULL

    def __init__(self, cum_p, cat_log1mp, book_instr, book_dark, book_unit, open_ns, close_ns,
                 window, price_ticks, sigma, gbm, start_ns, double half_spread,
                 double level_log1mp, bint pegged=False):
        cdef Py_ssize_t nb = len(book_instr), ni = len(price_ticks), c, b, total = 0
        # big_arg: an int64_t parameter took start_ns=1.5 as 1, in silence.
        cdef int64_t start_c = big_arg(start_ns, "start_ns")
        if len(cum_p) != 3 * nb or len(cat_log1mp) != 3 * nb:
            raise ValueError("cum_p and cat_log1mp need three categories per book")
        for seq in (book_dark, book_unit, open_ns, close_ns, window):
            if len(seq) != nb:
                raise ValueError("per-book parameters need one entry per book")
        if len(sigma) != ni or len(gbm) != ni:
            raise ValueError("per-instrument parameters need one entry per instrument")
        if min(window) < 1:
            raise ValueError("window must be >= 1")
        self.n_cat, self.n_books, self.n_instr = 3 * nb, nb, ni
        self.cum_p = _copy_f64(cum_p, 3 * nb)
        self.cat_log1mp = _copy_f64(cat_log1mp, 3 * nb)
        self.cat_book = <int32_t*>PyMem_Malloc(3 * nb * sizeof(int32_t))
        self.cat_kind = <uint8_t*>PyMem_Malloc(3 * nb)
        self.book_instr = <int32_t*>PyMem_Malloc(nb * sizeof(int32_t))
        self.book_dark = <uint8_t*>PyMem_Malloc(nb)
        self.gbm = <uint8_t*>PyMem_Malloc(ni)
        if (self.cat_book == NULL or self.cat_kind == NULL or self.book_instr == NULL
                or self.book_dark == NULL or self.gbm == NULL):
            raise MemoryError()
        for c in range(3 * nb):
            self.cat_book[c] = <int32_t>(c // 3)
            self.cat_kind[c] = <uint8_t>(c % 3)
        for b in range(nb):
            if not 0 <= book_instr[b] < ni:
                raise ValueError(f"book {b} has an invalid instrument index")
            self.book_instr[b] = book_instr[b]
            self.book_dark[b] = 1 if book_dark[b] else 0
        self.book_unit = _copy_i64(book_unit, nb)
        self.open_ns = _copy_i64(open_ns, nb)
        self.close_ns = _copy_i64(close_ns, nb)
        self.window = _copy_i64(window, nb)
        self.next_id = _copy_i64([0] * nb, nb)
        self.ring_pos = _copy_i64([0] * nb, nb)
        self.ring_count = _copy_i64([0] * nb, nb)
        offsets = []
        for b in range(nb):
            offsets.append(total)
            total += window[b]
        self.ring_off = _copy_i64(offsets, nb)
        self.ring = _copy_i64([0] * total, total)
        self.sigma = _copy_f64(sigma, ni)
        self.state = _copy_f64([log(p) if g else float(p) for p, g in zip(price_ticks, gbm)], ni)
        self.last_t = _copy_i64([start_c] * ni, ni)
        for c in range(ni):
            self.gbm[c] = 1 if gbm[c] else 0
        self.half_spread = half_spread
        self.level_log1mp = level_log1mp
        self.pegged = pegged

    def __dealloc__(self):
        PyMem_Free(self.cum_p)
        PyMem_Free(self.cat_log1mp)
        PyMem_Free(self.cat_book)
        PyMem_Free(self.cat_kind)
        PyMem_Free(self.book_instr)
        PyMem_Free(self.book_dark)
        PyMem_Free(self.gbm)
        PyMem_Free(self.book_unit)
        PyMem_Free(self.open_ns)
        PyMem_Free(self.close_ns)
        PyMem_Free(self.window)
        PyMem_Free(self.next_id)
        PyMem_Free(self.ring_pos)
        PyMem_Free(self.ring_count)
        PyMem_Free(self.ring_off)
        PyMem_Free(self.ring)
        PyMem_Free(self.sigma)
        PyMem_Free(self.state)
        PyMem_Free(self.last_t)

    cdef double _reference(self, int32_t instr, int64_t ts, double z) noexcept nogil:
        cdef double dt = (ts - self.last_t[instr]) * 1e-9, s = self.sigma[instr]
        self.last_t[instr] = ts
        if self.gbm[instr]:
            self.state[instr] += s * sqrt(dt) * z - 0.5 * s * s * dt
            return exp(self.state[instr])
        self.state[instr] += s * sqrt(dt) * z
        return self.state[instr] if self.state[instr] > 1.0 else 1.0

    def reference(self, instrument):
        """Current reference price of an instrument, in ticks (a float)."""
        cdef int i = small_arg(instrument, "instrument")
        if not 0 <= i < self.n_instr:
            raise IndexError(f"no instrument {i}")
        return exp(self.state[i]) if self.gbm[i] else self.state[i]

    def assemble(self, cnp.ndarray ts not None, cnp.ndarray u_cat not None,
                 cnp.ndarray u_side not None, cnp.ndarray u_qty not None,
                 cnp.ndarray u_level not None, cnp.ndarray u_cancel not None,
                 cnp.ndarray z not None):
        """Turn one chunk of draws into operations.

        Parameters
        ----------
        ts : numpy.ndarray of int64
            Event times, non-decreasing.
        u_cat, u_side, u_qty, u_level, u_cancel : numpy.ndarray of float64
            Uniforms on [0, 1), one per event.
        z : numpy.ndarray of float64
            Standard normals, one per event.

        Returns
        -------
        tuple
            ``(ops, books)``: an ``OP_DTYPE`` array and an int32 array of
            book indices, in time order.
        """
        cdef Py_ssize_t n = ts.shape[0], k, m = 0
        for arr, dt in ((ts, np.int64), (u_cat, np.float64), (u_side, np.float64),
                        (u_qty, np.float64), (u_level, np.float64), (u_cancel, np.float64),
                        (z, np.float64)):
            if arr.dtype != dt or not arr.flags.c_contiguous or arr.shape[0] != n:
                raise ValueError("assemble() needs contiguous arrays of one length "
                                 "(ts int64, the rest float64)")
        # An add may bring the cancel of the order it replaces: at most 2n ops.
        cdef cnp.ndarray ops = np.zeros(2 * n, dtype=OP_DTYPE)
        cdef cnp.ndarray books = np.empty(2 * n, dtype=np.int32)
        cdef Op* out = <Op*>cnp.PyArray_DATA(ops)
        cdef int32_t* bout = <int32_t*>cnp.PyArray_DATA(books)
        cdef const int64_t* t = <const int64_t*>cnp.PyArray_DATA(ts)
        cdef const double* uc = <const double*>cnp.PyArray_DATA(u_cat)
        cdef const double* us = <const double*>cnp.PyArray_DATA(u_side)
        cdef const double* uq = <const double*>cnp.PyArray_DATA(u_qty)
        cdef const double* ul = <const double*>cnp.PyArray_DATA(u_level)
        cdef const double* ux = <const double*>cnp.PyArray_DATA(u_cancel)
        cdef const double* zz = <const double*>cnp.PyArray_DATA(z)
        with nogil:
            m = self._assemble(n, t, uc, us, uq, ul, ux, zz, out, bout)
        return ops[:m], books[:m]

    cdef Py_ssize_t _assemble(self, Py_ssize_t n, const int64_t* t, const double* uc,
                              const double* us, const double* uq, const double* ul,
                              const double* ux, const double* zz, Op* out,
                              int32_t* bout) noexcept nogil:
        cdef Py_ssize_t k, m = 0, lo, hi, mid
        cdef int32_t b, instr
        cdef int kind, side
        cdef int64_t ts, w, c, back, slot, target, order_id, qty, price, level
        cdef uint8_t flags
        cdef double ref
        cdef bint dark
        cdef Op* o
        for k in range(n):
            ts = t[k]
            lo, hi = 0, self.n_cat - 1
            while lo < hi:
                mid = (lo + hi) >> 1
                if self.cum_p[mid] > uc[k]:
                    hi = mid
                else:
                    lo = mid + 1
            b = self.cat_book[lo]
            kind = self.cat_kind[lo]
            if ts < self.open_ns[b] or ts >= self.close_ns[b]:
                continue
            dark = self.book_dark[b]
            w = self.window[b]
            if kind == K_CANCEL:
                c = self.ring_count[b]
                if c == 0:
                    continue
                back = 1 + <int64_t>(ux[k] * c)
                if back > c:
                    back = c
                slot = self.ring_off[b] + (self.ring_pos[b] - back + w) % w
                target = self.ring[slot]
                if target == 0:
                    continue
                self.ring[slot] = 0
                o = &out[m]
                o.op, o.order_id, o.ts = OP_CANCEL, target, ts
                o.stp = STP_NONE
                bout[m] = b
                m += 1
                continue
            self.next_id[b] += 1
            order_id = self.next_id[b]
            qty = self.book_unit[b] * _geometric(uq[k], self.cat_log1mp[lo])
            side = BUY if us[k] < 0.5 else SELL
            if kind == K_TAKE:
                o = &out[m]
                o.op, o.side, o.tif, o.stp = OP_ADD, side, IOC, STP_NONE
                o.ord_type = LIMIT if dark else MARKET
                o.order_id, o.qty, o.ts = order_id, qty, ts
                o.account = DARK_TAKER if dark else TAKER
                bout[m] = b
                m += 1
                continue
            # An LP add: the oldest of the book's live LP orders makes way.
            slot = self.ring_off[b] + self.ring_pos[b]
            if self.ring_count[b] == w:
                target = self.ring[slot]
                if target != 0:
                    o = &out[m]
                    o.op, o.order_id, o.ts = OP_CANCEL, target, ts
                    o.stp = STP_NONE
                    bout[m] = b
                    m += 1
            else:
                self.ring_count[b] += 1
            self.ring[slot] = order_id
            self.ring_pos[b] = (self.ring_pos[b] + 1) % w
            flags = 0
            if dark:
                price = 0
            elif self.pegged:
                # The same distance from the mid as from the reference price
                # below, resolved by the loop against the NBBO of that moment.
                level = _geometric(ul[k], self.level_log1mp) - 1
                if side == BUY:
                    price = -<int64_t>floor(self.half_spread * PEG_SCALE + 0.5) - level * PEG_SCALE
                else:
                    price = <int64_t>floor(self.half_spread * PEG_SCALE + 0.5) + level * PEG_SCALE
                flags = FLAG_PEG_MID
            else:
                instr = self.book_instr[b]
                ref = self._reference(instr, ts, zz[k])
                level = _geometric(ul[k], self.level_log1mp) - 1
                if side == BUY:
                    price = <int64_t>floor(ref - self.half_spread) - level
                else:
                    price = <int64_t>ceil(ref + self.half_spread) + level
                if price < 1:
                    price = 1
            o = &out[m]
            o.op, o.side, o.ord_type, o.tif, o.stp = OP_ADD, side, LIMIT, GTC, STP_NONE
            o.order_id, o.price, o.qty, o.ts = order_id, price, qty, ts
            o.flags = flags
            o.account = DARK_LP if dark else LP
            bout[m] = b
            m += 1
        return m
