# cython: language_level=3
"""Interface of the background-flow assembler (``simflow.pyx``).

``sim.flow.SyntheticFlow`` draws random numbers vectorized with numpy, one
chunk at a time; ``FlowAssembler`` turns each chunk of draws into book
operations in C, keeping the per-book state (order ids, the ring of each
book's live liquidity-provider orders, the reference price per instrument)
from chunk to chunk.
"""
cimport cython
from libc.stdint cimport int64_t, int32_t, uint8_t

from ext.book cimport Op

# An Op flag the flow sets and ``ext.simloop`` resolves (and clears before the
# book sees it): ``price`` is then a signed offset from the instrument's lit
# NBBO mid at the moment the operation is applied, in 1/PEG_SCALE ticks; the
# price is mid + offset rounded down (a buy) or up (a sell) to a tick. Pegged
# flow follows whatever drives the lit books, e.g. a replay.
cdef enum:
    FLAG_PEG_MID = 0x80
    PEG_SCALE = 1024


@cython.final
cdef class FlowAssembler:
    # ------------------------------------------------------------ categories
    cdef Py_ssize_t n_cat
    cdef double* cum_p            # cumulative probability per (book, kind)
    cdef int32_t* cat_book
    cdef uint8_t* cat_kind
    cdef double* cat_log1mp       # size distribution per category
    # ------------------------------------------------------------ books
    cdef Py_ssize_t n_books
    cdef int32_t* book_instr
    cdef uint8_t* book_dark
    cdef int64_t* book_unit
    cdef int64_t* open_ns
    cdef int64_t* close_ns
    cdef int64_t* next_id
    cdef int64_t* ring            # last `window` LP order ids per book (0: gone)
    cdef int64_t* ring_off
    cdef int64_t* ring_pos
    cdef int64_t* ring_count
    cdef int64_t* window
    # ------------------------------------------------------------ reference prices
    cdef Py_ssize_t n_instr
    cdef double* state            # log(price in ticks) for GBM, price in ticks otherwise
    cdef double* sigma            # per sqrt(second)
    cdef uint8_t* gbm
    cdef int64_t* last_t
    cdef double half_spread
    cdef double level_log1mp
    cdef bint pegged              # lit LP prices as FLAG_PEG_MID offsets

    cdef double _reference(self, int32_t instr, int64_t ts, double z) noexcept nogil
    cdef Py_ssize_t _assemble(self, Py_ssize_t n, const int64_t* t, const double* uc,
                              const double* us, const double* uq, const double* ul,
                              const double* ux, const double* zz, Op* out,
                              int32_t* bout) noexcept nogil
