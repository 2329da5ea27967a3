"""``Instrument.avg_px`` rounds on the decimal grid protocol.md documents.

The average price is exact up to 6 digits past the tick's decimals and
rounded half to even there, whatever the tick's mantissa: a tick of 0.25 or
0.05 has 2 decimals, so its averages round at 1e-8, not at a millionth of a
tick. The oracle is ``fractions.Fraction`` quantized by ``decimal.Decimal``.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import example, given, settings, strategies as st

from ext.instrument import Instrument

INT64_MAX = 2**63 - 1
TICKS = st.sampled_from(["0.01", "0.05", "0.0001", "1", "0.5", "0.000001", "5", "10",
                         "0.25", "0.010", "100", "0.000000001", "0.125", "2.5"])


def documented_avg(notional_x2: int, cum_qty: int, tick: str) -> str:
    """notional_x2 half-ticks * lots over cum_qty lots, rounded half to even at tick decimals + 6."""
    tick_dec = Decimal(tick).normalize()
    decimals = max(0, -tick_dec.as_tuple().exponent) + 6
    exact = Fraction(notional_x2, 2 * cum_qty) * Fraction(tick)
    with localcontext() as ctx:
        ctx.prec = 200
        value = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
            Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN).normalize()
    return "0" if value == 0 else format(value, "f")


@pytest.mark.parametrize("tick, notional_x2, cum_qty, want", [
    # tick 0.25, lot 0.5: 1.5 @ 100.75, 1 @ 100, 0.5 @ 100.25 (lots 3, 2, 1)
    ("0.25", 2 * (3 * 403 + 2 * 400 + 1 * 401), 6, "100.41666667"),
    ("0.05", 2 * (400 + 2 * 401), 3, "20.03333333"),
    # 78124 lots at 100.00 and 1 lot at 100.25: exactly 100.0000032, 7 decimals
    ("0.25", 2 * (78124 * 400 + 401), 78125, "100.0000032"),
    ("0.01", 2, 3, "0.00333333"),
])
def test_non_decimal_ticks_round_on_the_decimal_grid(tick, notional_x2, cum_qty, want):
    assert Instrument("X", tick_size=tick).avg_px(notional_x2, cum_qty) == want


@settings(max_examples=2000, deadline=None)
@given(notional_x2=st.one_of(st.integers(0, 10**9), st.integers(0, 10**13), st.integers(0, 2**80)),
       cum_qty=st.one_of(st.integers(1, 1000), st.integers(1, 10**6), st.integers(1, INT64_MAX)),
       tick=TICKS)
@example(notional_x2=3, cum_qty=1, tick="0.01")                 # exactly half: to even
@example(notional_x2=1, cum_qty=4, tick="0.25")                 # 0.03125, 7 decimals: exact on 1e-8
@example(notional_x2=1, cum_qty=2 * 10**7, tick="0.25")         # half of 1e-8 exactly: to even (0)
@example(notional_x2=3, cum_qty=2 * 10**7, tick="0.25")         # one and a half: to even (2e-8)
@example(notional_x2=INT64_MAX // 25_000_000, cum_qty=1, tick="0.25")   # last before overflow
@example(notional_x2=INT64_MAX // 25_000_000 + 1, cum_qty=1, tick="0.25")
@example(notional_x2=INT64_MAX, cum_qty=INT64_MAX // 2, tick="0.05")
def test_average_price_matches_the_documented_rounding(notional_x2, cum_qty, tick):
    assert Instrument("X", tick_size=tick).avg_px(notional_x2, cum_qty) == \
        documented_avg(notional_x2, cum_qty, tick)
