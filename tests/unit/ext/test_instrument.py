"""The decimal boundary (ext.instrument) against exact arithmetic.

Prices and quantities are parsed in C when they are plain decimals that fit
64 bits, and written out in C when the product fits; everything else takes
Python's integers. These tests hold both paths to an independent oracle
(``decimal.Decimal`` at 100 digits and ``fractions.Fraction``), including
values beyond 64 bits, so neither path can drift from the other.
"""
from __future__ import annotations

import doctest
import re
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import example, given, settings, strategies as st

import ext.instrument
from ext.instrument import ConversionError, Instrument
from ext.types import RejectReason

INT64_MAX = 2**63 - 1
PLAIN = re.compile(r"[+-]?(\d*)\.?(\d*)")

# Grids as the configuration writes them, including trailing zeros and sizes above 1.
SIZES = st.sampled_from(["0.01", "0.05", "0.0001", "1", "0.5", "0.000001", "5", "10",
                         "0.25", "0.010", "100", "0.000000001"])


def exact(units: int, size: str) -> str:
    """``units * size`` as the shortest plain decimal string."""
    with localcontext() as ctx:
        ctx.prec = 100
        value = (Decimal(units) * Decimal(size)).normalize()
    return format(value, "f")


def expected_units(text: str, size: str, invalid: RejectReason, off_grid: RejectReason):
    """What converting ``text`` onto ``size``'s grid must give: units, or the reason it fails."""
    match = PLAIN.fullmatch(text)
    if len(text) == 0 or len(text) > 40 or not match or not (match[1] or match[2]) \
            or not text.isascii():
        return invalid
    value = Fraction(text)
    if value <= 0:
        return invalid
    units = value / Fraction(size)
    if units.denominator != 1:
        return off_grid
    if units > INT64_MAX:
        return RejectReason.VALUE_OUT_OF_RANGE
    return int(units)


def convert(fn, text):
    try:
        return fn(text)
    except ConversionError as exc:
        return exc.reason


decimal_texts = st.one_of(
    # plain decimals, short and long, with and without a point
    st.builds(lambda w, f, dot, sign: sign + w + ("." if dot else "") + f,
              st.text("0123456789", max_size=22), st.text("0123456789", max_size=22),
              st.booleans(), st.sampled_from(["", "", "", "-", "+"])),
    # whatever else a client might send
    st.text(max_size=45),
)


@settings(max_examples=1500, deadline=None)
@given(text=decimal_texts, tick=SIZES, lot=SIZES)
@example(text="189.25", tick="0.01", lot="1")
@example(text="9223372036854775807", tick="1", lot="1")       # INT64_MAX units
@example(text="9223372036854775808", tick="1", lot="1")       # one more
@example(text="92233720368547758.07", tick="0.01", lot="1")   # 18 digits past the C path
@example(text="1000000000000000001", tick="1", lot="1")      # was rounded through a double
@example(text="0.000000000000000001", tick="0.01", lot="1")
@example(text="1.", tick="0.01", lot="1")
@example(text=".5", tick="0.5", lot="0.5")
@example(text="0000000000000000000000000000000000001", tick="1", lot="1")
@example(text="١٢", tick="1", lot="1")                       # non-ASCII digits
def test_parsing_matches_exact_arithmetic(text, tick, lot):
    inst = Instrument("X", tick_size=tick, lot_size=lot)
    assert convert(inst.price_to_ticks, text) == expected_units(
        text, tick, RejectReason.INVALID_PRICE, RejectReason.OFF_TICK)
    want = expected_units(text, lot, RejectReason.INVALID_QTY, RejectReason.OFF_LOT)
    if isinstance(want, int) and want < inst.min_lots:
        want = RejectReason.BELOW_MIN_QTY
    assert convert(inst.qty_to_lots, text) == want


units64 = st.one_of(st.integers(-10**6, 10**6), st.integers(-INT64_MAX, INT64_MAX))


@settings(max_examples=1500, deadline=None)
@given(units=units64, tick=SIZES, lot=SIZES)
@example(units=INT64_MAX, tick="0.01", lot="100")             # the product overflows 64 bits
@example(units=-INT64_MAX, tick="10", lot="1")
@example(units=0, tick="0.01", lot="1")
def test_formatting_matches_exact_arithmetic(units, tick, lot):
    inst = Instrument("X", tick_size=tick, lot_size=lot)
    assert inst.ticks_to_price(units) == exact(units, tick)
    assert inst.lots_to_qty(units) == exact(units, lot)
    assert inst.half_ticks_to_price(units) == exact(units, str(Decimal(tick) / 2))


def exact_avg(notional_x2: int, cum_qty: int, tick: str) -> str:
    """The average price rounded half to even at 6 digits past the tick's decimals."""
    decimals = max(0, -Decimal(tick).normalize().as_tuple().exponent) + 6
    units = round(Fraction(notional_x2, 2 * cum_qty) * Fraction(tick) * 10**decimals)
    return exact(units, f"1e-{decimals}")   # round(): half to even


@settings(max_examples=1500, deadline=None)
@given(notional_x2=st.one_of(st.integers(0, 10**9), st.integers(0, 2**80)),
       cum_qty=st.one_of(st.integers(1, 1000), st.integers(1, INT64_MAX)), tick=SIZES)
@example(notional_x2=3, cum_qty=1, tick="0.01")                # exactly half: to even
@example(notional_x2=1, cum_qty=1, tick="0.01")
@example(notional_x2=INT64_MAX // 1_000_000, cum_qty=1, tick="0.01")
@example(notional_x2=INT64_MAX // 1_000_000 + 1, cum_qty=1, tick="0.01")
def test_average_price_matches_exact_arithmetic(notional_x2, cum_qty, tick):
    inst = Instrument("X", tick_size=tick)
    assert inst.avg_px(notional_x2, cum_qty) == exact_avg(notional_x2, cum_qty, tick)


def test_average_price_of_nothing_is_none():
    assert Instrument("X").avg_px(0, 0) is None


def test_examples_in_the_docstrings():
    failed, tried = doctest.testmod(ext.instrument)
    assert tried >= 4 and failed == 0


@pytest.mark.parametrize("tick, ticks, text", [
    ("0.01", 18925, "189.25"), ("0.05", 3, "0.15"), ("5", 7, "35"), ("0.010", 100, "1"),
    ("0.0001", -12345, "-1.2345"), ("0.01", 0, "0"),
])
def test_price_strings(tick, ticks, text):
    inst = Instrument("X", tick_size=tick)
    assert inst.ticks_to_price(ticks) == text
    if ticks > 0:
        assert inst.price_to_ticks(text) == ticks


def test_a_tick_finer_than_12_decimals_is_refused():
    """avg_px carries 6 digits past the tick's decimals, and the wire's decimal strings have at
    most 18: a 1e-13 tick gave a 19-decimal avg_px that the protocol's own check refuses."""
    fine = Instrument("X", tick_size="0.000000000001")
    assert fine.avg_px(2 * 1, 3) == "0.000000000000333333"
    with pytest.raises(ConversionError) as refused:
        Instrument("X", tick_size="0.0000000000001")
    assert refused.value.reason == RejectReason.VALUE_OUT_OF_RANGE
    assert "has 13 decimals; at most 12" in str(refused.value)
