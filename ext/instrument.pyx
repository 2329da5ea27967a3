# cython: language_level=3
"""Instrument definitions and the decimal-string boundary.

Prices and quantities are exact integers inside the engine: a price is a count
of ticks (``tick_size``) and a quantity a count of lots (``lot_size``; a lot
below 1 is how fractional shares are traded). This module is the only place
where decimal strings such as ``"101.25"`` become ticks and back, and it never
goes through a float: a value is parsed into an integer mantissa and a decimal
exponent and divided exactly, so ``"0.1"`` is exactly one tenth.
"""
from libc.stdint cimport INT64_MAX

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


cdef str _format(object units, int64_t size_m, int size_e):
    """``units * size`` as the shortest exact decimal string."""
    value = units * size_m
    sign = "-" if value < 0 else ""
    digits = str(abs(value))
    if size_e == 0:
        return sign + digits
    digits = digits.rjust(size_e + 1, "0")
    whole, frac = digits[:-size_e], digits[-size_e:].rstrip("0")
    return sign + whole + ("." + frac if frac else "")


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
        If a size is not a positive decimal string or ``min_qty`` is off-lot.

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
        mantissa, exponent = _parse_decimal(text, field, invalid)
        if mantissa <= 0:
            raise ConversionError(invalid, field, f"{field} must be positive, got {text!r}")
        # value / size = (mantissa * 10**size_e) / (size_m * 10**exponent), exactly.
        numerator = mantissa * 10 ** size_e
        denominator = size_m * 10 ** exponent
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
                              RejectReason.INVALID_PRICE, RejectReason.OFF_TICK)

    cpdef int64_t qty_to_lots(self, str qty) except? -1:
        """Convert a quantity string to integer lots.

        Raises
        ------
        ConversionError
            ``INVALID_QTY`` (not a number, zero or negative), ``OFF_LOT``,
            ``BELOW_MIN_QTY`` or ``VALUE_OUT_OF_RANGE``.
        """
        cdef int64_t lots = self._to_units(qty, "qty", self._lot_m, self._lot_e,
                                           RejectReason.INVALID_QTY, RejectReason.OFF_LOT)
        if lots < self.min_lots:
            raise ConversionError(RejectReason.BELOW_MIN_QTY, "qty",
                                  f"qty {qty!r} is below the minimum {self.min_qty}")
        return lots

    cpdef str ticks_to_price(self, int64_t ticks):
        """Integer ticks back to the exact decimal price string."""
        return _format(ticks, self._tick_m, self._tick_e)

    cpdef str lots_to_qty(self, int64_t lots):
        """Integer lots back to the exact decimal quantity string."""
        return _format(lots, self._lot_m, self._lot_e)

    def notional(self, int64_t ticks, int64_t lots):
        """Exact ``price * qty`` as a decimal string (for reports, not the hot path)."""
        return _format(int(ticks) * int(lots) * self._tick_m * self._lot_m,
                       1, self._tick_e + self._lot_e)
