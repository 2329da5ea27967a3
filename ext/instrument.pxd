# cython: language_level=3
from libc.stdint cimport int64_t


cdef class Instrument:
    # ------------------------------------------------------------ definition
    cdef readonly str symbol
    cdef readonly str tick_size
    cdef readonly str lot_size
    cdef readonly str min_qty
    cdef readonly int64_t min_lots
    # Each size as mantissa * 10**-exponent, exact.
    cdef int64_t _tick_m
    cdef int _tick_e
    cdef int64_t _lot_m
    cdef int _lot_e

    # ------------------------------------------------------------ conversions
    cdef object _to_units(self, str text, str field, int64_t size_m, int size_e,
                          int invalid, int off_grid)
    cpdef int64_t price_to_ticks(self, str price) except? -1
    cpdef int64_t qty_to_lots(self, str qty) except? -1
    cpdef str ticks_to_price(self, int64_t ticks)
    cpdef str lots_to_qty(self, int64_t lots)
    cpdef str half_ticks_to_price(self, int64_t price_x2)
    cpdef str avg_px(self, object notional_x2, int64_t cum_qty)
