# cython: language_level=3
"""Instrument definitions and the decimal-string boundary.

Prices and quantities are exact integers inside the engine: a price is a count
of ticks (``tick_size``) and a quantity a count of lots (``lot_size``; a lot
below 1 is how fractional shares are traded). This module is the only place
where decimal strings such as ``"101.25"`` become ticks and back, and it never
goes through a float: a value is parsed into an integer mantissa and a decimal
exponent and divided exactly, so ``"0.1"`` is exactly one tenth.
"""
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t

from ext.types import RejectReason


class ConversionError(ValueError):
    """A decimal string that cannot become ticks or lots.

    Attributes
    ----------
    reason : RejectReason
        The reject code the engine sends back (``OFF_TICK``, ``OFF_LOT``,
        ``INVALID_PRICE``, ``INVALID_QTY``, ``BELOW_MIN_QTY``,
        ``VALUE_OUT_OF_RANGE``).
    field : str
        ``"price"`` or ``"qty"`` (or the name of a definition field).
    """

    def __init__(self, reason, field, message):
        super().__init__(message)
        self.reason = RejectReason(reason)
        self.field = field


cdef tuple _parse_decimal(str text, str field, int invalid):
    """Split a plain decimal string into ``(mantissa, exponent)``.

    Accepts an optional sign, digits and at most one decimal point; no
    exponent, whitespace, ``nan`` or ``inf``, so that what a client sends is
    what the engine reads.
    """
    cdef Py_ssize_t n = len(text)
    if n == 0 or n > 40:
        raise ConversionError(invalid, field, f"{field} {text!r} is not a decimal number")
    cdef str body = text
    cdef bint negative = False
    if body[0] == "-" or body[0] == "+":
        negative = body[0] == "-"
        body = body[1:]
    cdef Py_ssize_t dot = body.find(".")
    cdef str whole = body if dot < 0 else body[:dot]
    cdef str frac = "" if dot < 0 else body[dot + 1:]
    if (not whole and not frac) or not (whole + frac).isdigit() or not (whole + frac).isascii():
        raise ConversionError(invalid, field, f"{field} {text!r} is not a decimal number")
    mantissa = int(whole + frac)
    return (-mantissa if negative else mantissa), len(frac)


cdef tuple _parse_size(str text, str field):
    """A positive size (tick, lot, minimum) as exact ``(mantissa, exponent)``."""
    if not isinstance(text, str):
        raise ConversionError(RejectReason.INVALID_FIELD, field, f"{field} must be a decimal string")
    mantissa, exponent = _parse_decimal(text, field, RejectReason.INVALID_FIELD)
    if mantissa <= 0:
        raise ConversionError(RejectReason.INVALID_FIELD, field, f"{field} must be positive, got {text!r}")
    while exponent > 0 and mantissa % 10 == 0:
        mantissa //= 10
        exponent -= 1
    if mantissa > INT64_MAX or exponent > 18:
        raise ConversionError(RejectReason.VALUE_OUT_OF_RANGE, field, f"{field} {text!r} is out of range")
    return mantissa, exponent


#: Decimals a tick size may have: ``avg_px`` is given to 6 more, and the wire's
#: decimal strings have at most 18.
MAX_TICK_DECIMALS = 12

cdef extern from *:
    # gcc/clang builtin: the product, and whether it overflowed int64.
    bint _mul_overflow "__builtin_mul_overflow"(int64_t a, int64_t b, int64_t* out) nogil


cdef str _format(object units, int64_t size_m, int size_e):
    """``units * size`` as the shortest exact decimal string.

    Reports format several quantities and prices per order, so a value that
    fits 64 bits is written out in C (``_format_i64``); anything larger
    takes Python's arbitrary-precision integers, with the same result.
    """
    cdef int64_t small
    if type(units) is int and -INT64_MAX <= units <= INT64_MAX:
        small = units
        return _format_i64(small, size_m, size_e)
    return _format_big(units, size_m, size_e)


cdef str _format_big(object units, int64_t size_m, int size_e):
    """``_format`` with Python integers: any size."""
    value = units * size_m
    sign = "-" if value < 0 else ""
    digits = str(abs(value))
    if size_e == 0:
        return sign + digits
    digits = digits.rjust(size_e + 1, "0")
    whole, frac = digits[:-size_e], digits[-size_e:].rstrip("0")
    return sign + whole + ("." + frac if frac else "")


cdef str _format_i64(int64_t units, int64_t size_m, int size_e):
    """``_format`` for a 64-bit ``units``: digits written into a C buffer."""
    cdef int64_t value
    if _mul_overflow(units, size_m, &value) or value == INT64_MIN or size_e > 40:
        return _format_big(units, size_m, size_e)
    cdef char digits[64]
    cdef char out[72]
    cdef uint64_t mag = <uint64_t>(-value if value < 0 else value)
    cdef int n = 0, k = 0, whole, last
    while True:                     # least significant digit first
        digits[n] = <char>(48 + mag % 10)
        mag //= 10
        n += 1
        if mag == 0:
            break
    while n < size_e + 1:           # at least one digit before the point
        digits[n] = 48
        n += 1
    if value < 0:
        out[k] = 45                 # "-"
        k += 1
    whole = n - size_e
    while n > size_e:
        n -= 1
        out[k] = digits[n]
        k += 1
    last = 0                        # the last nonzero fraction digit
    while last < size_e and digits[last] == 48:
        last += 1
    if last < size_e:
        out[k] = 46                 # "."
        k += 1
        while n > last:
            n -= 1
            out[k] = digits[n]
            k += 1
    return out[:k].decode("ascii")


# The codes every conversion passes along, as C ints: reading them off the
# RejectReason enum class costs a Python attribute lookup per call.
cdef int _INVALID_PRICE = RejectReason.INVALID_PRICE
cdef int _OFF_TICK = RejectReason.OFF_TICK
cdef int _INVALID_QTY = RejectReason.INVALID_QTY
cdef int _OFF_LOT = RejectReason.OFF_LOT


cdef int64_t _POW10[19]
_POW10[0] = 1
for _k in range(1, 19):
    _POW10[_k] = _POW10[_k - 1] * 10


cdef int64_t _to_units_i64(str text, int64_t size_m, int size_e):
    """Whole units of ``size`` in a plain positive decimal string, in C; 0 if it
    is not one that fits (the caller then takes the Python path, which accepts
    or refuses it with a reason).

    Every order's price and quantity pass here, so the common case (digits,
    at most one point, at most 18 significant digits, on the grid) costs no
    Python objects.
    """
    cdef Py_ssize_t n = len(text), i
    if n == 0 or n > 40:
        return 0
    cdef Py_UCS4 uch
    cdef int64_t mantissa = 0, den
    cdef int digits = 0, exponent = 0, shift
    cdef long ch
    cdef bint seen_dot = False, any_digit = False
    for i in range(n):
        uch = text[i]
        ch = <long>uch              # the code point (Py_UCS4 itself does str arithmetic)
        if ch == 46:                # "."
            if seen_dot:
                return 0
            seen_dot = True
        elif 48 <= ch <= 57:
            any_digit = True
            if mantissa or ch != 48:
                digits += 1
                if digits > 18:
                    return 0
            mantissa = mantissa * 10 + (ch - 48)
            if seen_dot:
                exponent += 1
        else:
            return 0
    if not any_digit or mantissa == 0 or exponent > 18:
        return 0
    # value / size = (mantissa * 10**size_e) / (size_m * 10**exponent), exactly.
    den = size_m
    shift = size_e - exponent
    if shift > 0:
        if shift > 18 or _mul_overflow(mantissa, _POW10[shift], &mantissa):
            return 0
    elif shift < 0:
        if -shift > 18 or _mul_overflow(den, _POW10[-shift], &den):
            return 0
    if mantissa % den:
        return 0
    return mantissa // den


cdef class Instrument:
    """A tradable instrument: its symbol and its exact price and quantity grid.

    Parameters
    ----------
    symbol : str
        Identifier used on the wire and in configuration.
    tick_size : str
        Smallest price increment as a decimal string, e.g. ``"0.01"``.
    lot_size : str
        Smallest quantity increment, e.g. ``"1"`` or ``"0.000001"`` for
        fractional shares.
    min_qty : str, optional
        Smallest order quantity; must be a whole number of lots. Defaults to
        one lot.

    Raises
    ------
    ConversionError
        If a size is not a positive decimal string, the tick has more than
        ``MAX_TICK_DECIMALS`` decimals, or ``min_qty`` is off-lot.

    Examples
    --------
    >>> inst = Instrument("AAPL", tick_size="0.01", lot_size="0.001")
    >>> inst.price_to_ticks("189.25"), inst.qty_to_lots("2.5")
    (18925, 2500)
    >>> inst.ticks_to_price(18925), inst.lots_to_qty(2500)
    ('189.25', '2.5')
    """

    def __init__(self, str symbol, str tick_size="0.01", str lot_size="1", str min_qty=None):
        if not symbol:
            raise ConversionError(RejectReason.INVALID_FIELD, "symbol", "symbol must not be empty")
        self.symbol = symbol
        self._tick_m, self._tick_e = _parse_size(tick_size, "tick_size")
        if self._tick_e > MAX_TICK_DECIMALS:
            # avg_px has 6 digits past the tick's decimals: the wire's
            # decimal strings have at most 18 (docs/protocol.md).
            raise ConversionError(
                RejectReason.VALUE_OUT_OF_RANGE, "tick_size",
                f"tick_size {tick_size!r} has {self._tick_e} decimals; at most "
                f"{MAX_TICK_DECIMALS}, as avg_px carries 6 more and the protocol's "
                f"decimal strings at most 18")
        self._lot_m, self._lot_e = _parse_size(lot_size, "lot_size")
        self.tick_size = _format(1, self._tick_m, self._tick_e)
        self.lot_size = _format(1, self._lot_m, self._lot_e)
        self.min_lots = 1 if min_qty is None else self.qty_to_lots(min_qty)
        self.min_qty = self.lots_to_qty(self.min_lots)

    def __repr__(self):
        return (f"Instrument({self.symbol!r}, tick_size={self.tick_size!r}, "
                f"lot_size={self.lot_size!r}, min_qty={self.min_qty!r})")

    def __reduce__(self):
        return Instrument, (self.symbol, self.tick_size, self.lot_size, self.min_qty)

    cdef object _to_units(self, str text, str field, int64_t size_m, int size_e,
                          int invalid, int off_grid):
        if not isinstance(text, str):
            raise ConversionError(invalid, field, f"{field} must be a decimal string, got {type(text).__name__}")
        cdef int64_t fast = _to_units_i64(text, size_m, size_e)
        if fast > 0:
            return fast
        # Anything the C path declines (a sign, junk, zero, off the grid, more
        # than 18 digits) is decided here, with the reason it is refused.
        mantissa, exponent = _parse_decimal(text, field, invalid)
        if mantissa <= 0:
            raise ConversionError(invalid, field, f"{field} must be positive, got {text!r}")
        # value / size = (mantissa * 10**size_e) / (size_m * 10**exponent), exactly.
        # The power of ten must be a Python int: Cython computes ``10 ** size_e``
        # of a C int with the C library's pow(), a double, which silently
        # rounded values of 19 digits and more.
        numerator = mantissa * (<object>10) ** size_e
        denominator = size_m * (<object>10) ** exponent
        units, remainder = divmod(numerator, denominator)
        if remainder:
            size = _format(1, size_m, size_e)
            raise ConversionError(off_grid, field, f"{field} {text!r} is not a multiple of {size}")
        if units > INT64_MAX:
            raise ConversionError(RejectReason.VALUE_OUT_OF_RANGE, field, f"{field} {text!r} is out of range")
        return units

    cpdef int64_t price_to_ticks(self, str price) except? -1:
        """Convert a price string to integer ticks.

        Raises
        ------
        ConversionError
            ``INVALID_PRICE`` (not a number, zero or negative), ``OFF_TICK``
            or ``VALUE_OUT_OF_RANGE``.
        """
        return self._to_units(price, "price", self._tick_m, self._tick_e,
                              _INVALID_PRICE, _OFF_TICK)

    cpdef int64_t qty_to_lots(self, str qty) except? -1:
        """Convert a quantity string to integer lots.

        Raises
        ------
        ConversionError
            ``INVALID_QTY`` (not a number, zero or negative), ``OFF_LOT``,
            ``BELOW_MIN_QTY`` or ``VALUE_OUT_OF_RANGE``.
        """
        cdef int64_t lots = self._to_units(qty, "qty", self._lot_m, self._lot_e,
                                           _INVALID_QTY, _OFF_LOT)
        if lots < self.min_lots:
            raise ConversionError(RejectReason.BELOW_MIN_QTY, "qty",
                                  f"qty {qty!r} is below the minimum {self.min_qty}")
        return lots

    cpdef str ticks_to_price(self, int64_t ticks):
        """Integer ticks back to the exact decimal price string."""
        return _format_i64(ticks, self._tick_m, self._tick_e)

    cpdef str lots_to_qty(self, int64_t lots):
        """Integer lots back to the exact decimal quantity string."""
        return _format_i64(lots, self._lot_m, self._lot_e)

    cpdef str half_ticks_to_price(self, int64_t price_x2):
        """A price in half-ticks (a midpoint fill) as the exact decimal string.

        >>> Instrument("X", "0.01").half_ticks_to_price(37851)
        '189.255'
        """
        # price_x2 * tick / 2 == (price_x2 * 5) * (tick / 10)
        cdef int64_t fives
        if _mul_overflow(price_x2, 5, &fives):
            return _format_big((<object>price_x2) * 5, self._tick_m, self._tick_e + 1)
        return _format_i64(fives, self._tick_m, self._tick_e + 1)

    cpdef str avg_px(self, object notional_x2, int64_t cum_qty):
        """Average price, exact up to 6 digits past the tick's decimals, as a decimal string, or None.

        ``notional_x2`` is the sum of ``qty * price`` in lots and half-ticks.
        The average is taken in units of ``10**-(tick decimals + 6)``,
        rounded half to even; integers only. (Millionths of a *tick* would
        not do: a tick of 0.25 would then round at 0.00000025, off the
        documented decimal grid.)

        >>> Instrument("X", "0.01").avg_px(2, 3)
        '0.00333333'
        >>> Instrument("X", "0.05").avg_px(2 * (400 + 2 * 401), 3)
        '20.03333333'
        """
        if cum_qty == 0:
            return None
        # average = notional_x2 * tick_m * 10**-tick_e / (2 * cum_qty), so in
        # units of 10**-(tick_e + 6): notional_x2 * tick_m * 10**6 / (2 * cum_qty).
        cdef int64_t n, scaled, units, rem
        if (type(notional_x2) is int and 0 <= notional_x2 <= INT64_MAX
                and 0 < cum_qty <= INT64_MAX // 2):
            n = notional_x2
            if (not _mul_overflow(n, self._tick_m, &scaled)
                    and not _mul_overflow(scaled, 1_000_000, &scaled)):
                units = scaled // (2 * cum_qty)
                rem = scaled % (2 * cum_qty)
                # rem against half the divisor (2 * cum_qty): cum_qty itself
                if rem > cum_qty or (rem == cum_qty and units % 2):
                    units += 1
                return _format_i64(units, 1, self._tick_e + 6)
        half = <object>cum_qty          # Python ints from here: no 64-bit overflow
        big, big_rem = divmod(notional_x2 * self._tick_m * 1_000_000, 2 * half)
        if big_rem > half or (big_rem == half and big % 2):
            big += 1
        return _format(big, 1, self._tick_e + 6)

    def notional(self, int64_t ticks, int64_t lots):
        """Exact ``price * qty`` as a decimal string (for reports, not the hot path)."""
        return _format(int(ticks) * int(lots) * self._tick_m * self._lot_m,
                       1, self._tick_e + self._lot_e)
