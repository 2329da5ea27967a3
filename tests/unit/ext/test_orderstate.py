"""The compiled order steps (ext.orderstate: engine.orders.execution_report, Order.advance)
are the Python ones (tests/reference/report_reference.py): every field of the report over
random orders and arguments, the same stage and path, or the same refusal, for every move.
The steps that fold several into one call (advance_path, fill_child, end_child,
order_report, fill_report) are the steps they fold, one by one."""
import msgspec
import pytest
from hypothesis import given, strategies as st

from engine.messages import ExecType, OrdType, RejectReason, Side, TradeFill
from engine.orders import (Child, IllegalTransition, Order, OrderTable, Stage, advance_path,
                           end_child, execution_report, fill_child, fill_report, order_report)
from ext.instrument import Instrument
from tests.reference.report_reference import advance as reference_advance
from tests.reference.report_reference import execution_report as reference_report
from tests.reference.report_reference import fill as reference_fill

INSTRUMENTS = [Instrument("A", "0.01", "1"), Instrument("B", "0.25", "100"),
               Instrument("C", "0.0001", "0.001")]

lots = st.integers(0, 2**40)
orders = st.builds(
    Order, order_id=st.integers(0, 2**62) | st.sampled_from([0, 9, 10, 99, 100]),
    cl_ord_id=st.text(min_size=1, max_size=20), session_id=st.just("S"),
    account=st.text(max_size=8), symbol=st.text(max_size=8),
    side=st.sampled_from(list(Side)), ord_type=st.sampled_from(list(OrdType)),
    tif=st.integers(0, 3), price=st.integers(0, 2**40), qty=lots, created_ns=st.just(1))
kwargs = st.fixed_dictionaries({}, optional={
    "last_qty": lots, "last_px_x2": st.integers(0, 2**41),
    "venue": st.none() | st.text(max_size=6), "exec_id": st.none() | st.text(max_size=6),
    "orig_cl_ord_id": st.none() | st.text(max_size=6),
    "reason": st.sampled_from([0, 1, 17, 999]) | st.sampled_from(list(RejectReason)),
    "text": st.none() | st.text(max_size=30), "cl_ord_id": st.none() | st.text(max_size=6),
    "price_sent": st.none() | st.just("1.5")})


@given(order=orders, inst=st.sampled_from(INSTRUMENTS), exec_type=st.sampled_from(list(ExecType)),
       stage=st.sampled_from(list(Stage)), cum=lots, notional_x2=st.integers(0, 2**90),
       kw=kwargs)
def test_the_compiled_report_is_the_python_one(order, inst, exec_type, stage, cum, notional_x2,
                                               kw):
    order.stage, order.cum_qty, order.notional_x2 = stage, cum, notional_x2
    got = execution_report(order, inst, exec_type, **kw)
    expected = reference_report(order, inst, exec_type, **kw)
    assert got.transact_time >= expected.transact_time - 10**9  # (its own clock read)
    assert msgspec.structs.replace(got, transact_time=0) == \
        msgspec.structs.replace(expected, transact_time=0)
    assert type(got.reject_reason) is int


@given(order=orders, inst=st.sampled_from(INSTRUMENTS), exec_type=st.sampled_from(list(ExecType)),
       kw=kwargs)
def test_the_report_kept_as_last_report_is_the_report(order, inst, exec_type, kw):
    # order_report is execution_report, and the order keeps what it returned.
    got = order_report(order, inst, exec_type, **kw)
    assert order.last_report is got
    assert msgspec.structs.replace(got, transact_time=0) == \
        msgspec.structs.replace(execution_report(order, inst, exec_type, **kw), transact_time=0)


@given(order=orders, inst=st.sampled_from(INSTRUMENTS),
       exec_type=st.sampled_from([ExecType.FILL, ExecType.PARTIAL_FILL]),
       stage=st.sampled_from([Stage.PARTIALLY_FILLED, Stage.FILLED]), cum=lots,
       notional_x2=st.integers(0, 2**90), last_qty=st.integers(1, 2**40),
       last_px_x2=st.integers(1, 2**41), venue=st.text(max_size=6), exec_id=st.text(max_size=12))
def test_a_fill_report_and_its_trade_fill_are_what_the_pipeline_made_before(
        order, inst, exec_type, stage, cum, notional_x2, last_qty, last_px_x2, venue, exec_id):
    # Before fill_report the pipeline called order_report with keywords, then made the
    # trade history's fill from the order and the report it kept.
    order.stage, order.cum_qty, order.notional_x2 = stage, cum, notional_x2
    report, fill = fill_report(order, inst, exec_type, last_qty, last_px_x2, venue, exec_id)
    assert order.last_report is report
    expected = order_report(order, inst, exec_type, last_qty=last_qty, last_px_x2=last_px_x2,
                            venue=venue, exec_id=exec_id)
    assert msgspec.structs.replace(report, transact_time=0) == \
        msgspec.structs.replace(expected, transact_time=0)
    assert fill == TradeFill(
        exec_id=exec_id, order_id=str(order.order_id), cl_ord_id=order.cl_ord_id,
        symbol=order.symbol, side=order.side, last_qty=report.last_qty,
        last_px=report.last_px, transact_time=report.transact_time, venue=venue)
    # (the same clock read: the fill's time is its report's)
    assert type(fill) is TradeFill and fill.transact_time == report.transact_time


def test_a_fill_report_refuses_no_lots_and_what_is_not_an_order():
    order = Order(1, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1)
    order.stage = Stage.ROUTED
    with pytest.raises(ValueError):
        fill_report(order, INSTRUMENTS[0], ExecType.FILL, 0, 200, "V", "1-1")
    with pytest.raises(TypeError):
        fill_report(object(), INSTRUMENTS[0], ExecType.FILL, 1, 200, "V", "1-1")
    assert order.last_report is None


def test_it_refuses_what_is_not_an_order():
    with pytest.raises(TypeError):
        execution_report(object(), INSTRUMENTS[0], ExecType.NEW)
    order = Order(1, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1)
    with pytest.raises(TypeError):
        execution_report(order, None, ExecType.NEW)
    with pytest.raises(TypeError):
        order_report(object(), INSTRUMENTS[0], ExecType.NEW)
    with pytest.raises(TypeError):
        advance_path(object(), (Stage.VALIDATED,), 1)
    assert order.last_report is None


def _outcome(step, order, stage, now):
    try:
        step(order, stage, now)
    except IllegalTransition as exc:
        return str(exc)
    return None


@given(moves=st.lists(st.tuples(st.sampled_from(list(Stage)), st.integers(0, 2**64)),
                      max_size=12))
def test_every_move_is_the_python_one(moves):
    ours, theirs = (Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1) for _ in range(2))
    for stage, now in moves:
        assert _outcome(Order.advance, ours, stage, now) == \
            _outcome(reference_advance, theirs, stage, now)
        assert (ours.stage, ours.path) == (theirs.stage, theirs.path)
        assert type(ours.stage) is Stage and all(type(x) is int for x in ours.path)
    assert ours.transitions == theirs.transitions


def _path_outcome(order, stages, now):
    try:
        advance_path(order, stages, now)
    except IllegalTransition as exc:
        return str(exc)
    return None


@given(paths=st.lists(st.tuples(st.lists(st.sampled_from(list(Stage)), max_size=4),
                                st.integers(0, 2**64)), max_size=6))
def test_a_path_of_moves_is_its_moves_one_by_one(paths):
    # advance_path(order, stages, now) is Order.advance(stage, now) for each stage in
    # turn: the same stage, path and table bookkeeping, and the same refusal at the
    # first move the state machine forbids (the moves before it made).
    tables, orders = [OrderTable(), OrderTable()], []
    for table in tables:
        orders.append(table.create("c", "S", "a", "A", 1, 2, 0, 100, 5, 1))
    ours, theirs = orders
    for stages, now in paths:
        expected = None
        for stage in stages:
            expected = _outcome(Order.advance, theirs, stage, now)
            if expected is not None:
                break
        assert _path_outcome(ours, tuple(stages), now) == expected
        assert (ours.stage, ours.path, ours.done_roll, ours.calendar is None) == \
            (theirs.stage, theirs.path, theirs.done_roll, theirs.calendar is None)
    assert dict(tables[0]._calendar.working) == dict(tables[1]._calendar.working)
    assert len(tables[0]._calendar.today.done) == len(tables[1]._calendar.today.done)


def test_a_move_the_state_machine_forbids_is_refused_and_changes_nothing():
    order = Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1)
    order.advance(Stage.VALIDATED, 10)
    with pytest.raises(IllegalTransition, match=r"order 7 \(c\): VALIDATED -> FILLED"):
        order.advance(Stage.FILLED, 11)
    assert order.stage is Stage.VALIDATED and order.path == (0, 1, 1, 10)


@given(moves=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(list(Stage))), max_size=30))
def test_the_table_bookkeeping_of_every_move_is_the_python_ones(moves):
    # An order of a table holds its calendar until done: routed, it is among the working
    # ones; done, it leaves them and is booked in the table's day (which the day roll
    # forgets without walking the table).
    from engine.orders import OrderTable
    tables = []
    for step in (Order.advance, reference_advance):
        table = OrderTable()
        orders = [table.create(f"c{i}", "S", "a", "A", 1, 2, 0, 100, 5, 1) for i in range(3)]
        for k, stage in moves:
            _outcome(step, orders[k], stage, 7)
        tables.append((table, orders))
    (ours, our_orders), (theirs, their_orders) = tables
    assert dict(ours._calendar.working) == dict(theirs._calendar.working)
    assert [o.order_id for o in ours._calendar.today.done] == \
        [o.order_id for o in theirs._calendar.today.done]
    for mine, other in zip(our_orders, their_orders):
        assert (mine.stage, mine.done_roll, mine.calendar is None) == \
            (other.stage, other.done_roll, other.calendar is None)
        assert (mine.calendar is None) == mine.done
    assert set(ours._calendar.working) == {o.order_id for o in our_orders
                                           if o.stage in (Stage.ROUTED, Stage.PARTIALLY_FILLED)}


def _fill_outcome(step, order, qty, px_x2, now):
    try:
        step(order, qty, px_x2, now)
    except IllegalTransition as exc:
        return str(exc)
    return None


@given(qty=st.integers(0, 2**40), steps=st.lists(st.one_of(
    st.tuples(st.just("move"), st.sampled_from(list(Stage)), st.integers(0, 2**64)),
    st.tuples(st.just("fill"), st.integers(-2, 2**41), st.integers(0, 2**64), st.integers(0, 2**64))),
    max_size=16))
def test_every_fill_is_the_python_one(qty, steps):
    # Fills among moves: of orders working, FILLED (overfilled further), not yet routed
    # or done (refused), of nothing or less (refused); sums past 64 bits stay exact.
    ours, theirs = (Order(7, "c", "S", "a", "A", 1, 2, 0, 100, qty, 1) for _ in range(2))
    for step in steps:
        if step[0] == "move":
            assert _outcome(Order.advance, ours, *step[1:]) == \
                _outcome(reference_advance, theirs, *step[1:])
        else:
            assert _fill_outcome(Order.fill, ours, *step[1:]) == \
                _fill_outcome(reference_fill, theirs, *step[1:])
        assert (ours.stage, ours.path, ours.cum_qty, ours.notional_x2) == \
            (theirs.stage, theirs.path, theirs.cum_qty, theirs.notional_x2)
        assert type(ours.stage) is Stage


def _python_fill_child(order, child_id, qty, px_x2, now):
    # What the pipeline did before fill_child: the order's fill, then its child's.
    order.fill(qty, px_x2, now)
    child = order.children.get(child_id)
    if child is not None:
        child.cum_qty += qty
        child.acked = True
    return child


@given(steps=st.lists(st.one_of(
    st.tuples(st.just("move"), st.sampled_from(list(Stage)), st.integers(0, 2**64)),
    st.tuples(st.just("fill"), st.integers(0, 3), st.integers(-1, 2**41),
              st.integers(0, 2**64), st.integers(0, 2**64)),
    st.tuples(st.just("end"), st.integers(0, 3))), max_size=16))
def test_a_child_fill_and_end_are_the_python_ones(steps):
    # Children 1 and 2 are listed, 0 and 3 not: fill_child is the order's fill and its
    # child's (or the order's alone, or the same refusal, child untouched); end_child
    # marks a listed child done and says whether it was listed.
    ours, theirs = (Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1) for _ in range(2))
    for order in (ours, theirs):
        order.children.update({k: Child(k, "V", 100, 3) for k in (1, 2)})
    for step in steps:
        if step[0] == "move":
            assert _outcome(Order.advance, ours, *step[1:]) == \
                _outcome(reference_advance, theirs, *step[1:])
        elif step[0] == "fill":
            child_id, qty, px_x2, now = step[1:]
            got = expected = None
            try:
                got = ("child", fill_child(ours, child_id, qty, px_x2, now))
            except IllegalTransition as exc:
                got = str(exc)
            try:
                expected = ("child", _python_fill_child(theirs, child_id, qty, px_x2, now))
            except IllegalTransition as exc:
                expected = str(exc)
            if isinstance(got, tuple):
                assert isinstance(expected, tuple)
                assert (got[1] is None) == (expected[1] is None)
                assert got[1] is None or got[1] is ours.children[child_id]
            else:
                assert got == expected
        else:
            child_id = step[1]
            listed = child_id in theirs.children
            if listed:
                theirs.children[child_id].done = True
            assert end_child(ours, child_id) is listed
        assert (ours.stage, ours.path, ours.cum_qty, ours.notional_x2) == \
            (theirs.stage, theirs.path, theirs.cum_qty, theirs.notional_x2)
        for k in (1, 2):  # (Child compares by identity: its fields, then)
            assert msgspec.structs.astuple(ours.children[k]) == \
                msgspec.structs.astuple(theirs.children[k])


def test_a_child_fill_refuses_what_is_not_an_order_or_a_child():
    order = Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1)
    with pytest.raises(TypeError):
        fill_child("not an order", 1, 1, 200, 2)
    with pytest.raises(TypeError):
        end_child("not an order", 1)
    order.children[1] = "not a child"
    with pytest.raises(TypeError):
        end_child(order, 1)
    assert not end_child(order, 2)


def test_a_fill_moves_to_partially_filled_then_filled_and_books_an_overfill():
    order = Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 1)
    with pytest.raises(IllegalTransition, match=r"order 7 \(c\): fill of 2 when RECEIVED"):
        order.fill(2, 201, 9)
    for stage in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
        order.advance(stage, 10)
    order.fill(2, 201, 11)
    assert (order.stage, order.cum_qty, order.notional_x2) == (Stage.PARTIALLY_FILLED, 2, 402)
    order.fill(3, 2**70, 12)
    assert (order.stage, order.cum_qty, order.notional_x2) == (Stage.FILLED, 5, 402 + 3 * 2**70)
    order.fill(1, 200, 13)   # an overfill of a FILLED order is booked; it stays FILLED
    assert order.stage is Stage.FILLED and order.overfilled and order.path[-2:] == (5, 12)
    with pytest.raises(IllegalTransition, match=r"order 7: fill of 0"):
        order.fill(0, 200, 14)
    with pytest.raises(TypeError):
        Order.fill("not an order", 1, 200, 14)


@given(created=st.integers(0, 2**64))
def test_a_new_order_starts_received_at_its_creation_with_no_children(created):
    # Order.__post_init__ (ext.orderstate.init_order): the path the Python one made.
    orders = [Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, created) for _ in range(2)]
    for order in orders:
        assert order.path == (int(Stage.RECEIVED), created) and order.stage is Stage.RECEIVED
        assert type(order.path[0]) is int and order.children == {}
        assert order.transitions == [(Stage.RECEIVED, created)]
    assert orders[0].children is not orders[1].children   # each its own
    with pytest.raises(TypeError):
        Order.__post_init__("not an order")


def test_a_pickled_order_keeps_its_path_and_children():
    import pickle
    order = Order(7, "c", "S", "a", "A", 1, 2, 0, 100, 5, 3)
    order.advance(Stage.VALIDATED, 10)
    order.children[4] = "child"
    copy = pickle.loads(pickle.dumps(order))
    assert (copy.path, copy.children) == ((0, 3, 1, 10), {4: "child"})


@given(order=orders, inst=st.sampled_from(INSTRUMENTS), exec_type=st.sampled_from(list(ExecType)),
       text=st.none() | st.text(max_size=30))
def test_a_report_s_text_given_positionally_is_the_keyword_s(order, inst, exec_type, text):
    # (The pipeline's NEW and CANCELED reports pass it so: Pipeline._report.)
    by_position = order_report(order, inst, exec_type, text)
    by_keyword = execution_report(order, inst, exec_type, text=text)
    assert order.last_report is by_position
    assert msgspec.structs.replace(by_position, transact_time=0) == \
        msgspec.structs.replace(by_keyword, transact_time=0)
