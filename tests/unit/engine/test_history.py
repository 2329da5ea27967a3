"""The engine's bounded trade history: time-range queries, and honesty about what was dropped."""
from hypothesis import given, settings, strategies as st

from engine.history import TradeHistory
from engine.messages import TradeFill


def fill(i: int, t: int, symbol: str = "AAA") -> TradeFill:
    return TradeFill(exec_id=f"e{i}", order_id=str(i), cl_ord_id=f"c{i}", symbol=symbol, side=1,
                     last_qty="1", last_px="10", transact_time=t)


def test_range_is_half_open_and_symbol_filtered():
    h = TradeHistory()
    for i, t in enumerate([10, 20, 20, 30, 40]):
        h.add("A", fill(i, t, "AAA" if i % 2 else "BBB"))
    assert [f.exec_id for f in h.query("A", 20, 40).fills] == ["e1", "e2", "e3"]
    assert [f.exec_id for f in h.query("A", 20, 40, "AAA").fills] == ["e1", "e3"]
    assert h.query("A", 41, 100) == ([], True, 0, 0)
    assert h.query("nobody", 0, 100) == ([], True, 0, 0)


def test_the_bound_drops_the_oldest_and_answers_say_so():
    h = TradeHistory(max_fills_per_account=4)
    for i in range(1, 21):
        h.add("A", fill(i, i * 10))
        assert h.count("A") <= 4  # never above the bound
    everything = h.query("A", 0, 10**9)
    kept = [f.transact_time for f in everything.fills]
    assert kept == sorted(kept) and kept[-1] == 200 and len(kept) >= 4
    assert not everything.complete and everything.complete_from_ns == kept[0] - 10 + 1
    # From complete_from on, the answer is complete (and the same fills).
    tail = h.query("A", everything.complete_from_ns, 10**9)
    assert tail.complete and tail.fills == everything.fills
    # Other accounts keep their own fills.
    h.add("B", fill(99, 5))
    assert h.query("B", 0, 10).complete and h.count("B") == 1


def test_a_clock_step_back_keeps_the_order():
    h = TradeHistory()
    for i, t in enumerate([10, 30, 20, 40]):
        h.add("A", fill(i, t))
    assert [f.transact_time for f in h.query("A", 0, 100).fills] == [10, 20, 30, 40]


@settings(max_examples=200)
@given(times=st.lists(st.integers(0, 1000), max_size=60), bound=st.integers(1, 80),
       start=st.integers(0, 1000), length=st.integers(0, 1000),
       symbol=st.sampled_from([None, "AAA", "BBB"]))
def test_query_equals_a_scan_of_what_is_held(times, bound, start, length, symbol):
    h = TradeHistory(max_fills_per_account=bound)
    fills = [fill(i, t, "AAA" if t % 3 else "BBB") for i, t in enumerate(sorted(times))]
    for f in fills:
        h.add("A", f)
    answer = h.query("A", start, start + length, symbol)
    assert h.count("A") <= bound
    held = fills[len(fills) - h.count("A"):]
    assert answer.fills == [f for f in held if start <= f.transact_time < start + length
                            and (symbol is None or f.symbol == symbol)]
    dropped = fills[:len(fills) - h.count("A")]
    # Complete unless a dropped fill could have been in the range.
    reaches_back = bool(dropped) and start <= dropped[-1].transact_time
    assert answer.complete == (not reaches_back)


def test_trims_note_the_journal_position_and_merge_keeps_each_fill_once():
    position = [100]
    h = TradeHistory(max_fills_per_account=2, position=lambda: position[0])
    for i in range(1, 3):
        h.add("A", fill(i, i * 10))
    assert h.query("A", 0, 100).store_position == 0  # nothing dropped yet
    position[0] = 250
    h.add("A", fill(3, 30))                           # now the oldest goes
    answer = h.query("A", 0, 100)
    assert not answer.complete and answer.store_position == 250
    assert [f.exec_id for f in answer.fills] == ["e2", "e3"]
    # A store's answer overlapping what memory holds: each fill once, in time order.
    older = [fill(1, 10), fill(2, 20)]
    merged = TradeHistory.merge(older, answer.fills)
    assert [f.exec_id for f in merged] == ["e1", "e2", "e3"]


# ---------------------------------------------------------------- review prrev: pages
def test_a_page_is_bounded_and_cut_between_two_fill_times():
    h = TradeHistory(max_fills_per_request=3)
    fills = [fill(i, t) for i, t in enumerate([10, 20, 30, 30, 40])]
    # Three would split the two fills at 30: the page stops before them.
    assert h.page(fills) == (fills[:2], 30)
    assert h.page(fills[2:]) == (fills[2:], 0)  # (three fit)
    assert h.page(fills[:3]) == (fills[:3], 0)


def test_a_page_takes_a_crowded_first_instant_whole():
    h = TradeHistory(max_fills_per_request=2)
    fills = [fill(i, t) for i, t in enumerate([10, 10, 10, 20, 30])]
    assert h.page(fills) == (fills[:3], 20)  # never stands still, never splits 10
    assert h.page(fills[:3]) == (fills[:3], 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=40), st.integers(1, 6))
def test_paging_from_next_start_gets_every_fill_once(times, bound):
    h = TradeHistory(max_fills_per_request=bound)
    for i, t in enumerate(sorted(times)):
        h.add("A", fill(i, t))
    start, seen = 0, []
    for _ in range(len(times) + 1):
        page, start = h.page(h.query("A", start, 100).fills)
        assert len(page) <= bound or len({f.transact_time for f in page}) == 1
        seen += page
        if not start:
            break
    assert [f.exec_id for f in seen] == [f"e{i}" for i in range(len(times))]
