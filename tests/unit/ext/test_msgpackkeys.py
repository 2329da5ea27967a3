"""Repeated map keys in msgpack (ext.msgpackkeys) against a reference built with the data.

Maps are written here from lists of (key, value) pairs, repeats allowed, so the
first repeated key, in the order a reader meets it, is known from the pairs
themselves; everything else is encoded by msgspec.
"""
from __future__ import annotations

import struct

import msgspec
from hypothesis import given, strategies as st

from ext.msgpackkeys import MAX_DEPTH, duplicate_key

ENC = msgspec.msgpack.Encoder()


class PairMap(list):
    """A msgpack map as the list of its (key, value) pairs, in order."""


def encode(value) -> bytes:
    if isinstance(value, PairMap):
        n = len(value)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(encode(k) + encode(v) for k, v in value)
    if isinstance(value, list):
        n = len(value)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(encode(v) for v in value)
    return ENC.encode(value)


def first_repeat(value, path="$"):
    """(path, key) of the first key a map holds twice, in reading order; None if none."""
    if isinstance(value, PairMap):
        seen = set()
        for key, item in value:
            if key in seen:
                return path, key
            seen.add(key)
            found = first_repeat(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = first_repeat(item, f"{path}[{i}]")
            if found:
                return found
    return None


keys = st.sampled_from(["type", "qty", "price", "orders", "v", "a", "é", "x" * 40])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(),
                    st.text(max_size=300), st.binary(max_size=300))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=20),
                            st.lists(st.tuples(keys, inner), max_size=20).map(PairMap)),
    max_leaves=40)


@given(value=values)
def test_the_first_repeated_key_is_found_with_its_path(value):
    assert duplicate_key(encode(value)) == first_repeat(value)


@given(value=values)
def test_msgspecs_own_encodings_have_none(value):
    # A dict cannot hold a key twice: what msgspec writes from one never repeats.
    def plain(v):
        if isinstance(v, PairMap):
            return {k: plain(x) for k, x in v}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v
    assert duplicate_key(ENC.encode(plain(value))) is None


def test_a_request_with_a_repeated_field():
    order = b"\x83\xa4type\xa8NewOrder\xa3qty\xa11\xa3qty\xa41000"
    assert duplicate_key(order) == ("$", "qty")
    bulk = encode(PairMap([("type", "BulkNewOrders"), ("orders", [
        PairMap([("qty", "1")]), PairMap([("price", "1"), ("qty", "2"), ("price", "3")])])]))
    assert duplicate_key(bulk) == ("$.orders[1]", "price")


@given(data=st.binary(max_size=200))
def test_any_bytes_are_walked_safely(data):
    result = duplicate_key(data)
    assert result is None or (isinstance(result, tuple) and result[0].startswith("$"))


def test_truncated_and_deep_input_give_up_quietly():
    assert duplicate_key(b"") is None
    assert duplicate_key(b"\xc1") is None                    # never used in msgpack
    assert duplicate_key(b"\xdd\xff\xff\xff\xff") is None    # claims 4 billion items
    assert duplicate_key(b"\xdb\xff\xff\xff\xff") is None    # a string longer than the data
    deep = b"\x91" * (MAX_DEPTH + 5) + b"\x82\xa1a\x01\xa1a\x02"
    assert duplicate_key(deep) is None                       # beyond the walk: the decoder's
    shallow = b"\x91" * 3 + b"\x82\xa1a\x01\xa1a\x02"
    assert duplicate_key(shallow) == ("$[0][0][0]", "a")


def test_one_key_in_two_string_forms_is_one_key():
    """A fixstr and a str8 of one text are one field to the decoder (it kept the last)."""
    data = b"\x82" + b"\xa3qty" + b"\xa11" + b"\xd9\x03qty" + b"\xa41000"
    assert msgspec.msgpack.decode(data) == {"qty": "1000"}
    assert duplicate_key(data) == ("$", "qty")


def test_a_map_of_more_than_64_entries_is_walked():
    """Padding a map past the stack table's size used to end the walk with no answer."""
    enc = msgspec.msgpack.encode
    padded = b"\xde\x00\x47" + b"".join(enc(f"k{i}") + enc(i) for i in range(70)) \
        + enc("qty") + enc(1)
    assert duplicate_key(padded) is None  # 71 distinct keys
    repeated = b"\xde\x00\x47" + b"".join(enc(f"k{i}") + enc(i) for i in range(70)) \
        + enc("k3") + enc(1)
    assert duplicate_key(repeated) == ("$", "k3")
    # A bulk whose first order is a big map: the second's repeat is still found.
    big = enc({f"f{i}": i for i in range(100)})
    second = b"\x82" + enc("qty") + enc(1) + enc("qty") + enc(2)
    bulk = b"\x81" + enc("orders") + b"\x92" + big + second
    assert duplicate_key(bulk) == ("$.orders[1]", "qty")
    many = {f"A{i}": {"cash": i} for i in range(5000)}
    assert duplicate_key(enc({"accounts": many})) is None
