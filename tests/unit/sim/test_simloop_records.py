"""The loop's records of child orders: kept while they can be named, then freed.

A long backtest or a long-running ``kronos-exec serve`` sends children without
end; the loop must hold memory for those still working (and those finished a
moment ago), not for every child it ever saw. A finished child stays
answerable while a message in flight names it and for ``FINISHED_KEEP_NS``
after its last one: a cancel then gets the cancel reject it always got.
"""
import tracemalloc

import pytest

from ext.book import OrderBook
from ext.simloop import FINISHED_KEEP_NS, ReportKind as K
from ext.types import RejectReason
from sim.strategies import ParentOrder, PeriodicTakerStrategy
from tests.reference.book_reference import ReferenceBook
from tests.unit.sim.helpers import (
    BUY, GTC, IOC, LIMIT, SELL, US, Recorder, add, quiet_market,
)

MS = 1_000 * US


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["cython", "reference"])
def book_class(request):
    return request.param


class Counter:
    """An ``on_report`` that keeps nothing per report (so memory measures the loop)."""

    def __init__(self) -> None:
        self.kinds = {}

    def __call__(self, report) -> None:
        self.kinds[report.kind] = self.kinds.get(report.kind, 0) + 1


def _rounds(m, owner, n: int) -> None:
    """``n`` rounds of three children each, 20 ms apart: one filled (an IOC against a
    deep background offer), one rested then canceled, one rejected (a lit book
    refuses a minimum quantity)."""
    for _ in range(n):
        m.submit("FAST", "AAA", BUY, 1, 5001, LIMIT, IOC, on_report=owner)
        rest = m.submit("FAST", "AAA", BUY, 1, 4000, LIMIT, GTC, on_report=owner)
        m.submit("FAST", "AAA", BUY, 5, 4000, LIMIT, IOC, on_report=owner, min_qty=2)
        m.run_until(m.now + 10 * MS)
        m.cancel(rest)
        m.run_until(m.now + 10 * MS)


def test_records_of_finished_children_are_freed():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10_000_000)
    owner = Counter()
    _rounds(m, owner, 500)          # sizes every buffer for the steady state
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _rounds(m, owner, 2_000)    # 6,000 more children, 40 s of simulated time
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert m.loop.n_child_orders == 7_500
    assert owner.kinds == {K.RPT_ACCEPTED: 5_000, K.RPT_FILL: 2_500, K.RPT_CANCELED: 2_500,
                           K.RPT_REJECTED: 2_500}
    # Before: 72 bytes of record and a list entry per child, 480 kB here.
    assert grown < 100_000, f"{grown} bytes for 6,000 finished children"
    # At most one second of finished children (50 rounds of 3) are still kept.
    assert m.loop.n_child_records <= 3 * 51
    assert m.loop.child_records_capacity <= 256
    m.run_until(m.now + FINISHED_KEEP_NS)
    assert m.loop.n_child_records == 0


def test_a_compiled_strategy_keeps_only_its_recent_children():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10_000_000)
    end = m.now + 60 * FINISHED_KEEP_NS
    parent = ParentOrder(1, "AAA", BUY, 1 << 40, m.now, end)
    strat = PeriodicTakerStrategy(m, parent, interval=10 * MS, child_qty=1, venues=["FAST"])
    m.set_timer(m.now + 10 * MS, strat.start)
    m.run_until(end)
    assert m.loop.n_child_orders >= 5_900
    assert strat.filled >= m.loop.n_child_orders - 1      # (the last one may be on its way)
    assert m.loop.n_child_records <= 101
    assert m.loop.child_records_capacity <= 256


def test_a_cancel_of_a_finished_child_is_answered_as_before_then_refused(book_class):
    m = quiet_market(book_class)
    add(m, "FAST", 1, SELL, 5001, 100)
    rec = Recorder()
    t0 = m.now
    child = m.submit("FAST", "AAA", BUY, 10, 5001, LIMIT, IOC, on_report=rec)
    # At the venue (100 us) it filled and finished; its ack and fill are still on their
    # way back (200 us): the cancel sent now names a finished child whose reports are
    # in flight.
    m.run_until(t0 + 150 * US)
    assert m.loop.child(child)["state"] == "done" and rec.reports == []
    m.cancel(child)
    m.run_until(t0 + 1 * MS)
    # The cancel's answer came and went: the record stays for FINISHED_KEEP_NS.
    m.cancel(child)
    m.run_until(t0 + 2 * MS)
    assert [(r.kind, r.order_qty, r.cum_qty, r.leaves_qty, r.reason) for r in rec.reports] == [
        (K.RPT_ACCEPTED, 10, 0, 10, 0), (K.RPT_FILL, 10, 10, 0, 0),
        (K.RPT_CANCEL_REJECTED, 10, 10, 0, RejectReason.UNKNOWN_ORDER),
        (K.RPT_CANCEL_REJECTED, 10, 10, 0, RejectReason.UNKNOWN_ORDER)]
    last = rec.reports[-1].recv_ts
    assert m.loop.n_child_records == 1
    m.run_until(last + FINISHED_KEEP_NS - 1)
    assert m.loop.n_child_records == 1
    m.run_until(last + FINISHED_KEEP_NS)
    assert m.loop.n_child_records == 0
    # Freed: its slot goes to the next child, and the old id never reaches it.
    other = Recorder()
    new = m.submit("FAST", "AAA", BUY, 5, 4000, LIMIT, GTC, on_report=other)
    with pytest.raises(KeyError, match="finished"):
        m.cancel(child)
    with pytest.raises(KeyError, match="finished"):
        m.replace(child, 4000, 3)
    with pytest.raises(KeyError, match="unknown"):
        m.cancel(new + 1)
    m.run_until(m.now + 1 * MS)
    assert len(rec.reports) == 4
    assert [(r.child_id, r.kind, r.leaves_qty) for r in other.reports] == [
        (new, K.RPT_ACCEPTED, 5)]
    assert m.loop.child(new)["state"] == "live"


def test_a_cancel_in_flight_keeps_a_finished_record_past_its_window():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 100)
    rec = Recorder()
    child = m.submit("FAST", "AAA", BUY, 10, 5001, LIMIT, IOC, on_report=rec)
    m.run_until(m.now + 1 * MS)
    # Sent just before the window closes, its answer comes back after: the record
    # is kept for it, and for a window after that answer.
    m.run_until(rec.reports[-1].recv_ts + FINISHED_KEEP_NS - 1)
    m.cancel(child)
    m.run_until(m.now + 1 * MS)
    assert [r.kind for r in rec.reports] == [K.RPT_ACCEPTED, K.RPT_FILL, K.RPT_CANCEL_REJECTED]
    m.run_until(rec.reports[-1].recv_ts + FINISHED_KEEP_NS - 1)
    assert m.loop.n_child_records == 1
    m.run_until(m.now + 1)
    assert m.loop.n_child_records == 0


def test_a_finished_child_cancelled_again_and_again_holds_up_no_other():
    m = quiet_market()
    add(m, "FAST", 1, SELL, 5001, 10_000_000)
    rec, owner = Recorder(), Counter()
    stale = m.submit("FAST", "AAA", BUY, 1, 5001, LIMIT, IOC, on_report=rec)
    for _ in range(20):
        # Each cancel of the finished child, answered, keeps its record a window more;
        # the children finishing meanwhile are freed on time all the same.
        m.cancel(stale)
        for _ in range(45):
            m.submit("FAST", "AAA", BUY, 1, 5001, LIMIT, IOC, on_report=owner)
            m.run_until(m.now + 20 * MS)
        assert m.loop.n_child_records <= 1 + 51
    assert [r.kind for r in rec.reports] == [K.RPT_ACCEPTED, K.RPT_FILL] + [
        K.RPT_CANCEL_REJECTED] * 20
