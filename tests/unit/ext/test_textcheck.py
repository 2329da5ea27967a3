"""The wire's text syntax (ext.textcheck) against the regular expressions it stands for.

``ext.textcheck.PATTERNS`` holds the reference expression of each kind;
``re.fullmatch`` of it must agree with the C check on every string, so the
hand-written scanner can neither let through nor refuse anything the
documented syntax does not.
"""
from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import example, given, strategies as st

from engine.messages import NewOrder, OrderStatusRequest
from ext.textcheck import PATTERNS, TextKind, first_bad_field, matches

KINDS = list(TextKind)
COMPILED = {kind: re.compile(pattern) for kind, pattern in PATTERNS.items()}

# Strings near the languages' edges: digits, dots, ASCII borders, non-ASCII.
near = st.text(alphabet=st.sampled_from("0123456789.  \n\t!~\x20\x21\x7e\x7f\x00é€-+eE"), max_size=42)
decimals = st.from_regex(r"\A[0-9]{0,22}(\.[0-9]{0,20})?\Z")


@given(text=st.one_of(near, decimals, st.text(max_size=70)), kind=st.sampled_from(KINDS))
@example(text="10\n", kind=TextKind.TEXT_POSITIVE_DECIMAL)  # Python's $ let this through
@example(text="abc\n", kind=TextKind.TEXT_ID)
@example(text="0.000", kind=TextKind.TEXT_POSITIVE_DECIMAL)
@example(text="0.000", kind=TextKind.TEXT_DECIMAL)
@example(text="." , kind=TextKind.TEXT_DECIMAL)
@example(text="1.", kind=TextKind.TEXT_DECIMAL)
@example(text=".5", kind=TextKind.TEXT_DECIMAL)
@example(text="9" * 20 + "." + "9" * 18, kind=TextKind.TEXT_POSITIVE_DECIMAL)
@example(text="9" * 21, kind=TextKind.TEXT_POSITIVE_DECIMAL)
@example(text="x" * 64, kind=TextKind.TEXT_ID)
@example(text="x" * 65, kind=TextKind.TEXT_ID)
@example(text="x" * 33, kind=TextKind.TEXT_SYMBOL)
def test_matches_agrees_with_the_reference_expression(text, kind):
    assert matches(text, kind) == (COMPILED[kind].fullmatch(text) is not None)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown text kind"):
        matches("1", 9)


def test_first_bad_field_names_the_first_offender_and_skips_absent_fields():
    spec = (("cl_ord_id", TextKind.TEXT_ID), ("account", TextKind.TEXT_ID), ("symbol", TextKind.TEXT_SYMBOL),
            ("qty", TextKind.TEXT_POSITIVE_DECIMAL), ("price", TextKind.TEXT_POSITIVE_DECIMAL))
    good = NewOrder(cl_ord_id="c-1", account="A", symbol="AAPL", side=1, ord_type=1, qty="10")
    assert good.price is None and first_bad_field(good, spec) == -1
    assert first_bad_field(msgspec.structs.replace(good, qty="0", price="x"), spec) == 3
    assert first_bad_field(msgspec.structs.replace(good, price="1.5.0"), spec) == 4
    assert first_bad_field(OrderStatusRequest(cl_ord_id="ok", account="a b"), spec[:2]) == 1
