"""The market's names and indices: the book of a (venue, instrument) pair."""
import pytest

from tests.unit.sim.helpers import quiet_market


def test_book_index_by_name_and_by_index_agree_with_the_layout():
    # Every spelling of a pair (names, indices, a mix, an int-like bool or float) gives
    # venue * n_instruments + instrument, the layout the loop's books follow.
    m = quiet_market()
    ni = m.n_instruments
    seen = set()
    for v, venue in enumerate(m.venue_names):
        for k, symbol in enumerate(m.symbols):
            expected = v * ni + k
            for pair in ((venue, symbol), (v, symbol), (venue, k), (v, k), (float(v), symbol)):
                assert m.book_index(*pair) == expected
            seen.add(expected)
    assert seen == set(range(len(m.venue_names) * ni))
    assert m.book_index(True, 0) == ni


def test_book_index_of_an_unknown_name_says_which():
    m = quiet_market()
    with pytest.raises(KeyError, match="no venue 'NOPE'"):
        m.book_index("NOPE", m.symbols[0])
    with pytest.raises(KeyError, match="no instrument 'ZZZ'"):
        m.book_index(m.venue_names[0], "ZZZ")
    with pytest.raises(TypeError):
        m.book_index([0], m.symbols[0])  # (unhashable: the slow path's int() refuses it)
