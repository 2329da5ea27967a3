"""``kronos-exec book-demo``: a small deterministic order stream through the book.

Shows, on one screen, what the core does: orders as a client writes them
(decimal strings), converted at the boundary to ticks and lots, matched with
price-time priority, and the resulting fills, order events and final depth.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ext.book import OrderBook
from ext.instrument import Instrument
from ext.types import CancelReason, EventKind, OrdType, RejectReason, Side, StpMode, TimeInForce

#: (order id, account, side, type, tif, price, qty, note)
STREAM = [
    (1, 101, Side.SELL, OrdType.LIMIT, TimeInForce.GTC, "100.05", "300", "ask rests"),
    (2, 102, Side.SELL, OrdType.LIMIT, TimeInForce.GTC, "100.03", "150", "better ask rests"),
    (3, 103, Side.SELL, OrdType.LIMIT, TimeInForce.DAY, "100.03", "100", "joins the queue behind #2"),
    (4, 201, Side.BUY, OrdType.LIMIT, TimeInForce.GTC, "99.98", "500", "bid rests"),
    (5, 202, Side.BUY, OrdType.LIMIT, TimeInForce.GTC, "99.99", "0.5", "off-lot: rejected at the boundary"),
    (6, 202, Side.BUY, OrdType.LIMIT, TimeInForce.IOC, "100.04", "200", "IOC sweeps #2 then part of #3"),
    (7, 203, Side.BUY, OrdType.LIMIT, TimeInForce.FOK, "100.05", "1000", "FOK too large: killed whole"),
    (8, 101, Side.BUY, OrdType.LIMIT, TimeInForce.GTC, "100.05", "100", "takes #3, then self-trade vs #1 cancels it"),
    (9, 204, Side.BUY, OrdType.MARKET, TimeInForce.IOC, None, "120", "market order takes the offer"),
    (10, 205, Side.SELL, OrdType.LIMIT, TimeInForce.GTC, "99.97", "50", "post-only would cross: rejected"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the stream is fixed so the output is reproducible."""


def run(args: argparse.Namespace) -> int:
    """Replay STREAM through an OrderBook and print fills, events and depth."""
    console = Console()
    inst = Instrument("DEMO", tick_size="0.01", lot_size="1", min_qty="1")
    book = OrderBook(inst.symbol, stp=StpMode.CANCEL_NEWEST)
    console.print(f"[bold]{inst}[/bold]  prices in ticks of {inst.tick_size}, quantities in lots of {inst.lot_size}\n")

    orders = Table(title="Orders in")
    for col in ("id", "account", "side", "type", "tif", "price", "qty", "result", "note"):
        orders.add_column(col)
    for ts, (oid, account, side, ord_type, tif, price, qty, note) in enumerate(STREAM, start=1):
        post_only = oid == 10
        try:
            px = inst.price_to_ticks(price) if price is not None else 0
            lots = inst.qty_to_lots(qty)
        except ValueError as exc:
            result = f"[red]{exc.reason.name}[/red]"
        else:
            code = book.add(oid, side, px, lots, account, ord_type, tif, post_only, -1, ts)
            result = "accepted" if code == 0 else f"[red]{RejectReason(code).name}[/red]"
        orders.add_row(str(oid), str(account), side.name, ord_type.name, tif.name, price or "-",
                       qty, result, note)
    console.print(orders)

    fills = Table(title="Fills")
    for col in ("seq", "maker", "taker", "aggressor", "price", "qty", "maker leaves", "taker leaves"):
        fills.add_column(col, justify="right")
    for f in book.drain_fills():
        fills.add_row(str(f["seq"]), f"#{f['maker_id']} (acct {f['maker_account']})",
                      f"#{f['taker_id']} (acct {f['taker_account']})",
                      Side(int(f["aggressor_side"])).name, inst.ticks_to_price(int(f["price"])),
                      inst.lots_to_qty(int(f["qty"])), str(f["maker_leaves"]), str(f["taker_leaves"]))
    console.print(fills)

    events = Table(title="Order events")
    for col in ("seq", "order", "event", "qty", "leaves", "cum", "reason"):
        events.add_column(col, justify="right")
    for e in book.drain_events():
        kind = EventKind(int(e["kind"]))
        reason = int(e["reason"])
        why = (RejectReason(reason).name if kind == EventKind.EV_REJECTED
               else CancelReason(reason).name if reason else "")
        events.add_row(str(e["seq"]), f"#{e['order_id']}", kind.name.removeprefix("EV_"),
                       str(e["qty"]), str(e["leaves_qty"]), str(e["cum_qty"]), why)
    console.print(events)

    bids, asks = book.depth(5)
    depth = Table(title="Final depth (L2)")
    for col in ("bid orders", "bid qty", "bid", "ask", "ask qty", "ask orders"):
        depth.add_column(col, justify="right")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        depth.add_row(str(b["count"]) if b else "", str(b["qty"]) if b else "",
                      inst.ticks_to_price(int(b["price"])) if b else "",
                      inst.ticks_to_price(int(a["price"])) if a else "",
                      str(a["qty"]) if a else "", str(a["count"]) if a else "")
    console.print(depth)
    return 0
