"""Micro benchmarks of the book for pytest-benchmark (not part of the test suite).

    pytest benchmarks/ --benchmark-only --benchmark-autosave
    pytest benchmarks/ --benchmark-only --benchmark-compare   # against the last saved run

Each benchmark has its pure-Python reference twin in the same group, so the
comparison table shows the ratio within one run.
"""
import numpy as np
import pytest

from benchmarks.bench_book import make_stream
from ext.book import OrderBook
from ext.types import Side
from tests.reference.book_reference import ReferenceBook

BOOKS = [pytest.param(OrderBook, id="cython"), pytest.param(ReferenceBook, id="reference")]


@pytest.fixture(scope="module")
def stream():
    return make_stream(20_000, seed=7)


def _deep_book(cls):
    book = cls(capacity=1 << 12)
    book.record_events = False
    for i in range(1, 1001):
        book.add(i, Side.BUY, 10_000 - i % 50, 10, i)
        book.add(10_000 + i, Side.SELL, 10_001 + i % 50, 10, i)
    return book


@pytest.mark.benchmark(group="add-cancel passive")
@pytest.mark.parametrize("cls", BOOKS)
def test_add_cancel(benchmark, cls):
    book = _deep_book(cls)

    def add_cancel():
        book.add(999_999, Side.BUY, 9_990, 5, 1)
        book.cancel(999_999)
    benchmark(add_cancel)
    assert 999_999 not in book


@pytest.mark.benchmark(group="marketable sweep 3 levels")
@pytest.mark.parametrize("cls", BOOKS)
def test_sweep(benchmark, cls):
    def setup():
        return (_deep_book(cls),), {}

    def sweep(book):
        book.add(888_888, Side.BUY, 10_003, 120, 77)
        return book.drain_fills()
    fills = benchmark.pedantic(sweep, setup=setup, rounds=200)
    assert int(fills["qty"].sum()) == 120


@pytest.mark.benchmark(group="stream 20k ops")
@pytest.mark.parametrize("cls", BOOKS)
def test_stream_batch(benchmark, cls, stream):
    def run():
        return cls(capacity=1 << 12).apply(stream)
    fills = benchmark(run)
    assert len(fills) > 0
