"""The order state machine: legal paths, illegal transitions, reports that hold the invariants."""
import pytest

from engine.messages import ExecType, OrdStatus, check_report
from engine.orders import (IllegalTransition, OrderTable, Stage, avg_px, execution_report,
                           half_ticks_to_price)
from ext.instrument import Instrument
from ext.types import OrdType, RejectReason, Side, TimeInForce

INST = Instrument("AAPL", tick_size="0.01", lot_size="0.001")


def new_order(table, qty=10_000, price=18925):
    return table.create("c1", "s1", "ACC1", "AAPL", Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
                        price, qty, now_ns=1)


def route(order):
    for stage in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
        order.advance(stage, 2)


def test_full_path_to_filled_with_exact_average():
    table = OrderTable()
    order = new_order(table)
    route(order)
    order.fill(4_000, 2 * 18925, 3)
    assert order.stage == Stage.PARTIALLY_FILLED and order.leaves_qty == 6_000
    order.fill(6_000, 2 * 18930, 4)
    assert order.stage == Stage.FILLED and order.leaves_qty == 0 and order.done
    # (4*189.25 + 6*189.30) / 10 = 189.28 exactly
    assert avg_px(INST, order.notional_x2, order.cum_qty) == "189.28"
    assert [s for s, _ in order.transitions] == [
        Stage.RECEIVED, Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED,
        Stage.PARTIALLY_FILLED, Stage.FILLED]
    report = execution_report(order, INST, ExecType.FILL, last_qty=6_000, last_px_x2=2 * 18930)
    assert (report.qty, report.cum_qty, report.leaves_qty, report.last_px) == \
        ("10", "10", "0", "189.3")
    assert report.ord_status == OrdStatus.FILLED and check_report(report) is None


def test_average_price_keeps_sub_tick_digits():
    assert avg_px(INST, 2 * (18925 + 18926), 2) == "189.255"
    assert avg_px(INST, 2, 3) == "0.00333333"  # 6 digits past the tick, rounded
    assert avg_px(INST, 0, 0) is None


def test_midpoint_fill_prices_are_exact():
    assert half_ticks_to_price(INST, 2 * 18925) == "189.25"
    assert half_ticks_to_price(INST, 2 * 18925 + 1) == "189.255"


@pytest.mark.parametrize("path", [
    [Stage.ROUTED],
    [Stage.VALIDATED, Stage.ROUTED],
    [Stage.VALIDATED, Stage.RISK_CHECKED, Stage.FILLED],
    [Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED, Stage.RISK_CHECKED],
])
def test_illegal_transitions_raise(path):
    order = new_order(OrderTable())
    with pytest.raises(IllegalTransition):
        for stage in path:
            order.advance(stage, 5)


def test_no_transition_out_of_a_terminal_stage():
    order = new_order(OrderTable())
    order.reject(RejectReason.MAX_ORDER_QTY, "too big", 3)
    assert order.stage == Stage.REJECTED and order.leaves_qty == 0
    for stage in Stage:
        with pytest.raises(IllegalTransition):
            order.advance(stage, 4)
    report = execution_report(order, INST, ExecType.REJECTED, reason=order.reject_reason,
                              text=order.text)
    assert report.qty == "0" and report.reject_name == "MAX_ORDER_QTY"
    assert check_report(report) is None


def test_an_overfill_is_booked_and_the_order_says_so():
    # A venue's fill is a fact: refused, the engine's figures disagreed with
    # the router's and risk's about what was bought.
    order = new_order(OrderTable(), qty=5)
    route(order)
    with pytest.raises(IllegalTransition):
        order.fill(0, 200, 3)
    assert order.cum_qty == 0 and order.stage == Stage.ROUTED and not order.overfilled
    order.fill(6, 200, 3)
    assert order.cum_qty == 6 and order.stage == Stage.FILLED and order.overfilled
    order.fill(2, 202, 4)                       # a FILLED order still takes a venue's fill
    assert (order.cum_qty, order.notional_x2, order.stage) == (8, 6 * 200 + 2 * 202, Stage.FILLED)
    assert [s for s, _ in order.transitions].count(Stage.FILLED) == 1
    report = execution_report(order, INST, ExecType.FILL, last_qty=2, last_px_x2=202)
    assert (report.qty, report.cum_qty, report.leaves_qty) == ("0.008", "0.008", "0")
    assert check_report(report) is None


def test_a_fill_of_a_canceled_order_is_refused():
    order = new_order(OrderTable(), qty=5)
    route(order)
    order.advance(Stage.CANCELED, 3)
    with pytest.raises(IllegalTransition):
        order.fill(1, 200, 4)
    assert order.cum_qty == 0


def test_canceled_report_quantity_in_force_is_what_filled():
    order = new_order(OrderTable(), qty=10)
    route(order)
    order.fill(3, 200, 3)
    order.advance(Stage.CANCELED, 4)
    report = execution_report(order, INST, ExecType.CANCELED)
    assert (report.qty, report.cum_qty, report.leaves_qty) == ("0.003", "0.003", "0")
    assert check_report(report) is None


def test_table_lookup_by_current_and_previous_cl_ord_id():
    table = OrderTable(first_order_id=100)
    order = new_order(table)
    assert order.order_id == 100 and table.next_order_id == 101
    table.alias(order, "c2")
    assert table.find("ACC1", "c2") is order and table.find("ACC1", "c1") is order
    assert table.find("OTHER", "c2") is None
    route(order)
    assert table.working() == [order]


def test_an_accounts_orders_are_read_from_its_ids_alone():
    """ReloadLimits reads the orders of an account it would drop: from the account's ids
    (an order once per id it had), not by walking every order held."""
    table = OrderTable()
    order = new_order(table)
    table.alias(order, "c2")
    assert table.reserve("ACC1", "spent")
    assert list(table.orders_of("ACC1")) == [order, order]
    assert list(table.orders_of("OTHER")) == []


def test_a_rename_keeps_its_id_and_nothing_else():
    """Each rename (an accepted replace) leaves the new id in the table, where it and
    every earlier id find the order, and nothing per replace beyond the id's slot: no
    (account, id) key, no list of earlier ids on the order (a tuple grown per replace
    also made each replace copy all the earlier ids)."""
    import tracemalloc

    import engine.orders

    table = OrderTable()
    order = new_order(table)
    ids = [f"c1.{k}" for k in range(1, 1001)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for cl_ord_id in ids:
            assert table.reserve("ACC1", cl_ord_id)  # (as the pipeline spends a Replace's id)
            table.alias(order, cl_ord_id)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What the table's own code allocated and kept (a dict's slots, grown a few times).
    mine = [tracemalloc.Filter(True, engine.orders.__file__)]
    kept = after.filter_traces(mine).compare_to(before.filter_traces(mine), "filename")
    assert sum(s.count_diff for s in kept) < 10
    assert sum(s.size_diff for s in kept) / len(ids) < 40
    assert order.renames == len(ids) and order.cl_ord_id == ids[-1]
    assert all(table.find("ACC1", c) is order for c in ["c1", *ids])
    assert table.ids_held() == len(ids) + 1


def test_orders_cost_the_garbage_collector_one_object_at_most():
    """Young collections traverse every tracked object: an order of the day adds at most
    its children's dict to them (the order, its path and its children are untracked)."""
    import gc

    from engine.orders import Child

    table = OrderTable()
    order = new_order(table)
    route(order)
    order.children[7] = Child(7, "XNAS", 18925, 10_000)
    order.fill(4_000, 2 * 18925, 3)
    gc.collect(0)  # a tuple of untracked values is untracked at its first collection
    assert not gc.is_tracked(order) and not gc.is_tracked(order.path)
    assert not gc.is_tracked(order.children[7])
    assert [s for s, _ in order.transitions] == [Stage.RECEIVED, Stage.VALIDATED,
                                                 Stage.RISK_CHECKED, Stage.ROUTED,
                                                 Stage.PARTIALLY_FILLED]
    # Identity, not field equality: a second order with equal fields is another order.
    twin = new_order(OrderTable())
    assert twin != new_order(OrderTable()) and len({twin, order}) == 2


def test_report_carries_every_field_by_name():
    """execution_report builds the struct positionally: each value must land in its field."""
    table = OrderTable()
    order = new_order(table, qty=10_000, price=18925)
    route(order)
    order.fill(4_000, 2 * 18925 + 1, 3)
    report = execution_report(order, INST, ExecType.PARTIAL_FILL, last_qty=4_000,
                              last_px_x2=2 * 18925 + 1, venue="XNAS", exec_id="E9",
                              orig_cl_ord_id="c0", reason=RejectReason.OFF_TICK, text="why")
    got = {f: getattr(report, f) for f in report.__struct_fields__ if f != "transact_time"}
    assert got == {
        "order_id": str(order.order_id), "cl_ord_id": "c1", "account": "ACC1", "symbol": "AAPL",
        "side": Side.BUY, "exec_type": ExecType.PARTIAL_FILL,
        "ord_status": OrdStatus.PARTIALLY_FILLED, "qty": "10", "cum_qty": "4", "leaves_qty": "6",
        "orig_cl_ord_id": "c0", "exec_id": "E9", "ord_type": OrdType.LIMIT, "price": "189.25",
        "avg_px": "189.255", "last_qty": "4", "last_px": "189.255", "venue": "XNAS",
        "reject_reason": int(RejectReason.OFF_TICK), "reject_name": "OFF_TICK", "text": "why",
        "v": report.v, "seq": 0}
    assert report.transact_time > 0


def test_risk_books_a_fill_at_whole_ticks_against_the_account_and_never_at_0():
    # A midpoint fill between two ticks: up for a buy, down for a sell, but a sell at half
    # a tick at 1 (at 0 risk refused it, and the fill was the order's and the router's alone).
    from engine.pipeline import fill_ticks
    from ext.risk import RiskEngine
    from tests.unit.ext.test_risk import BASE, Harness, merged
    from tests.unit.ext.test_risk_bounds import RICH
    assert [fill_ticks(Side.BUY, x) for x in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert [fill_ticks(side, x) for side in (Side.SELL, Side.SELL_SHORT)
            for x in (1, 2, 3, 4)] == [1, 1, 1, 2] * 2
    risk = Harness(RiskEngine, merged(BASE, RICH))
    risk.trade(Side.BUY, 5, 10)
    risk.new(side=Side.SELL, qty=5, price=1)
    assert risk.fill_last(5, fill_ticks(Side.SELL, 1)) == 0
    assert risk.engine.exposure(0, 0)["position"] == 0
