"""Pure-Python reference of ``ext/orderstate.pyx``: ``engine.orders.execution_report`` and
``Order.advance`` and ``Order.fill`` as they were written in Python, which the tests hold the compiled ones to
(the same report, every field; the same stage, path and refusals)."""
from __future__ import annotations

import time

from engine.messages import ExecType, ExecutionReport, reject_name
from engine.orders import _ALLOWED, _STATUS, TERMINAL, IllegalTransition, Order, Stage
from ext.instrument import Instrument


def execution_report(order: Order, inst: Instrument, exec_type: ExecType, *,
                     last_qty: int = 0, last_px_x2: int = 0, venue: str | None = None,
                     exec_id: str | None = None, orig_cl_ord_id: str | None = None,
                     reason: int = 0, text: str | None = None,
                     cl_ord_id: str | None = None,
                     price_sent: str | None = None) -> ExecutionReport:
    """``ext.orderstate.execution_report`` in Python (its docstring says what the report
    holds)."""
    cum = order.cum_qty
    stage = order.stage
    leaves = 0 if stage in TERMINAL else order.qty - cum
    lots = inst.lots_to_qty
    price = order.price
    # Positional, in ExecutionReport's field order: two reports or more per
    # order, and a keyword call costs a microsecond more each
    # (tests/unit/engine/test_orders.py checks every field).
    return ExecutionReport(
        str(order.order_id), cl_ord_id or order.cl_ord_id, order.account, order.symbol, order.side,
        exec_type, _STATUS[stage], lots(cum + leaves), lots(cum), lots(leaves),
        orig_cl_ord_id, exec_id, order.ord_type,
        inst.ticks_to_price(price) if price else price_sent,
        inst.avg_px(order.notional_x2, cum),
        lots(last_qty) if last_qty else None,
        inst.half_ticks_to_price(last_px_x2) if last_qty else None,
        venue, int(reason), reject_name(reason) if reason else None, text,
        transact_time=time.time_ns())


def advance(order: Order, stage: Stage, now_ns: int) -> None:
    """Move to ``stage`` (``Order.advance``), or raise IllegalTransition."""
    if stage not in _ALLOWED.get(order.stage, ()):
        raise IllegalTransition(f"order {order.order_id} ({order.cl_ord_id}): "
                                f"{order.stage.name} -> {stage.name}")
    order.stage = stage
    order.path += (int(stage), now_ns)
    calendar = order.calendar
    if calendar is None:
        return
    if stage in TERMINAL:  # booked in its table's day, and no longer working
        order.calendar = None
        day = calendar.today
        order.done_roll = day.roll
        day.done.append(order)
        calendar.working.pop(order.order_id, None)
    elif stage == Stage.ROUTED:
        calendar.working[order.order_id] = None


def fill(order: Order, last_qty: int, last_px_x2: int, now_ns: int) -> None:
    """Book a fill and move to PARTIALLY_FILLED or FILLED (``Order.fill``), or raise
    IllegalTransition."""
    if last_qty <= 0:
        raise IllegalTransition(f"order {order.order_id}: fill of {last_qty}")
    stage = order.stage
    if stage not in (Stage.ROUTED, Stage.PARTIALLY_FILLED, Stage.FILLED):
        raise IllegalTransition(f"order {order.order_id} ({order.cl_ord_id}): fill of "
                                f"{last_qty} when {stage.name}")
    order.cum_qty += last_qty
    order.notional_x2 += last_qty * last_px_x2
    if stage != Stage.FILLED:  # a FILLED order a venue overfills further stays FILLED
        advance(order, Stage.FILLED if order.cum_qty >= order.qty else Stage.PARTIALLY_FILLED,
                now_ns)
