"""Venue fee schedules in exact integer units.

Role in the pipeline: a venue charges (or, as a negative fee, rebates) every
fill. Configuration writes fees the way venues publish them, per share in
currency (``"0.0030"``) or in basis points of notional (``"0.2"``); this
module turns them into the integers the event loop (``ext.simloop``) uses, and
back into currency for reports.

Fee units. One fee unit is 1e-4 of a *tick-lot* (the value of one tick on one
lot). A fill of ``qty`` lots at ``price_x2`` half-ticks pays::

    fee = per_lot * qty + round(price_x2 * qty * cbps / 200)

where ``per_lot`` is fee units per lot and ``cbps`` hundredths of a basis
point; the bps part is rounded half away from zero. With a tick of $0.01 and
a lot of one share, a fee of $0.0030 per share is 3,000 fee units per lot and
one fee unit is $0.000001.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

from ext.instrument import Instrument

#: Fee units per tick-lot.
FEE_UNITS_PER_TICK_LOT = 10_000


def _exact(text: str, field: str) -> Fraction:
    if isinstance(text, float):
        raise ValueError(f"{field}: write fees as decimal strings (e.g. \"0.0030\"), not floats")
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise ValueError(f"{field}: {text!r} is not a decimal number") from exc
    if not value.is_finite():
        raise ValueError(f"{field}: {text!r} is not a finite number")
    return Fraction(value)


@dataclass(frozen=True)
class FeeSchedule:
    """One venue's published fees (decimal strings; negative is a rebate).

    Parameters
    ----------
    maker_per_share, taker_per_share : str
        Currency per unit of quantity (per share).
    maker_bps, taker_bps : str
        Basis points of notional; at most two decimals (0.01 bps).
    """

    maker_per_share: str = "0"
    taker_per_share: str = "0"
    maker_bps: str = "0"
    taker_bps: str = "0"

    def per_lot_units(self, instrument: Instrument) -> tuple[int, int]:
        """``(maker, taker)`` fee units per lot for an instrument.

        Raises
        ------
        ValueError
            If a per-share fee is not a whole number of fee units per lot.
        """
        tick = Fraction(Decimal(instrument.tick_size))
        out = []
        for field in ("maker_per_share", "taker_per_share"):
            per_share = _exact(getattr(self, field), field)
            # fee per lot / value of a tick-lot = per_share * lot / (tick * lot).
            units = per_share / tick * FEE_UNITS_PER_TICK_LOT
            if units.denominator != 1:
                raise ValueError(f"{field} {getattr(self, field)} is finer than one fee unit "
                                 f"(1e-4 of a tick) for {instrument.symbol}")
            out.append(int(units))
        return out[0], out[1]

    def cbps(self) -> tuple[int, int]:
        """``(maker, taker)`` basis-point fees in hundredths of a basis point."""
        out = []
        for field in ("maker_bps", "taker_bps"):
            value = _exact(getattr(self, field), field) * 100
            if value.denominator != 1:
                raise ValueError(f"{field} {getattr(self, field)}: at most two decimals")
            out.append(int(value))
        return out[0], out[1]


def fee_units(per_lot: int, cbps: int, price_x2: int, qty: int) -> int:
    """The fee of one fill in fee units, exactly as the event loop computes it.

    Parameters
    ----------
    per_lot : int
        Fee units per lot.
    cbps : int
        Hundredths of a basis point.
    price_x2 : int
        Fill price in half-ticks.
    qty : int
        Lots.
    """
    fee = per_lot * qty
    if cbps:
        a, b = price_x2 * qty * cbps, 200
        fee += (2 * a + b) // (2 * b) if a >= 0 else -((-2 * a + b) // (2 * b))
    return fee


def units_to_currency(units: int, instrument: Instrument) -> Decimal:
    """Fee units as an exact amount of currency (for reports)."""
    # Exact: the default context's 28 digits could round an int64 of units
    # times a tick and a lot size with long mantissas.
    with localcontext(prec=60):
        return (Decimal(int(units)) * Decimal(instrument.tick_size)
                * Decimal(instrument.lot_size) / FEE_UNITS_PER_TICK_LOT)


def price_x2_to_decimal(price_x2: int, instrument: Instrument) -> Decimal:
    """A half-tick price as an exact decimal price."""
    return Decimal(int(price_x2)) * Decimal(instrument.tick_size) / 2


def decimal_text(value: Decimal) -> str:
    """A decimal as report text: every digit, never an exponent, zero as ``"0"``.

    ``str(Decimal)`` switches to scientific notation for small values
    (``"0E-10"``, ``"1.2E-13"``), which spreadsheets and many readers take
    for a float or a string; trailing zeros of a non-zero value are kept
    (``"0.30"``: the precision it was computed in).
    """
    return "0" if value == 0 else format(value, "f")
