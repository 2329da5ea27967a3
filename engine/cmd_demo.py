"""``kronos-exec demo``: the main job on the embedded default, needing no outside service.

Starts the engine on its simulated venues (three lit venues and a dark
pool, with background flow), connects a client over ZeroMQ, sends a short
session of orders (passive, marketable, a replace, a cancel, and orders the
engine must refuse) and prints every execution report, then the account
positions risk holds. The journal goes to a fresh temporary directory
unless ``--data-dir`` is given.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.client import Client
from engine.messages import ExecutionReport, Reject
from engine.config import parse_config
from engine.service import DEFAULT_CONFIG, EngineThread

#: (label, request kind, fields)
SCRIPT = [
    ("passive bid below the market", "new",
     dict(symbol="AAA", side="buy", qty="300", price="49.50", cl_ord_id="demo-1")),
    ("marketable buy: sweeps the venues", "new",
     dict(symbol="AAA", side="buy", qty="800", price="50.40", cl_ord_id="demo-2",
          time_in_force=3)),
    ("replace the passive bid: more, higher", "replace",
     dict(orig_cl_ord_id="demo-1", qty="500", price="49.60", cl_ord_id="demo-3")),
    ("cancel it", "cancel", dict(orig_cl_ord_id="demo-3", cl_ord_id="demo-4")),
    ("sell part of what was bought", "new",
     dict(symbol="AAA", side="sell", qty="200", price="49.80", cl_ord_id="demo-5",
          time_in_force=3)),
    ("off-tick price: refused at the boundary", "new",
     dict(symbol="AAA", side="buy", qty="10", price="50.001", cl_ord_id="demo-6")),
    ("fat finger: over the firm's max order quantity", "new",
     dict(symbol="BBB", side="buy", qty="500000", price="120.00", cl_ord_id="demo-7")),
    ("naked short: refused by risk", "new",
     dict(symbol="BBB", side="sell", qty="100", price="119.00", cl_ord_id="demo-8",
          account="DEMO2")),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` for the journal, ``--pause`` between orders."""
    parser.add_argument("--data-dir",
                        help="data directory: the journal goes to its journal/ subdirectory, "
                             "which journal verify/export take as --data-dir "
                             "(default: a new temporary one)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds between orders, so fills arrive in between (default 0.3)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> int:
    """Run the engine, play SCRIPT against it, print the reports."""
    console = Console(width=max(Console().width, 140))
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="kronos-demo-"))
    port = _free_port()
    config = _config(port, data_dir)
    table = Table(title="Execution reports")
    table.add_column("order", max_width=40)
    for col in ("cl_ord_id", "exec_type", "status", "qty", "cum", "leaves", "last",
                "venue", "avg_px", "reason"):
        table.add_column(col, no_wrap=True)
    console.print(f"[bold]Kronos Exec demo[/bold]: engine on the simulated venues, "
                  f"client on tcp://127.0.0.1:{port}, journal in {data_dir / 'journal'}\n")
    with EngineThread(config) as engine, Client(f"tcp://127.0.0.1:{port}") as client:
        for label, kind, fields in SCRIPT:
            fields = dict(fields)
            account = fields.pop("account", "DEMO1")
            if kind == "new":
                client.new_order(fields.pop("symbol"), fields.pop("side"), fields.pop("qty"),
                                 fields.pop("price"), account=account, **fields)
            elif kind == "replace":
                client.replace(fields.pop("orig_cl_ord_id"), account=account, **fields)
            else:
                client.cancel(fields.pop("orig_cl_ord_id"), account=account, **fields)
            table.add_section()
            table.add_row(f"[bold]{label}[/bold]")
            for msg in client.drain(args.pause):
                _row(table, msg)
        for msg in client.drain(0.5):
            _row(table, msg)
        positions = engine.call(_positions, engine.service.pipeline)
    console.print(table)
    pos = Table(title="Positions held by risk")
    for col in ("account", "symbol", "position", "working buys", "working sells"):
        pos.add_column(col, justify="right")
    for row in positions:
        pos.add_row(*map(str, row))
    console.print(pos)
    return 0


def _config(port: int, data_dir: Path):
    # The embedded default, pointed at a free port and this run's journal.
    text_overrides = {"tcp://127.0.0.1:7001": f"tcp://127.0.0.1:{port}",
                      "tcp://127.0.0.1:7101": f"tcp://127.0.0.1:{_free_port()}",
                      "tcp://127.0.0.1:7102": f"tcp://127.0.0.1:{_free_port()}",
                      'dir = "data/journal"': f'dir = "{data_dir / "journal"}"',
                      'level = "INFO"': 'level = "WARNING"'}
    text = DEFAULT_CONFIG.read_text()
    for old, new in text_overrides.items():
        text = text.replace(old, new)
    return parse_config(text, base_dir=data_dir, source="demo")


def _row(table: Table, msg) -> None:
    if isinstance(msg, ExecutionReport):
        last = f"{msg.last_qty} @ {msg.last_px}" if msg.last_qty else ""
        table.add_row(f"#{msg.order_id}", msg.cl_ord_id, msg.exec_type.name, msg.ord_status.name,
                      msg.qty, msg.cum_qty, msg.leaves_qty, last, msg.venue or "",
                      msg.avg_px or "", msg.reject_name or "")
    elif isinstance(msg, Reject):
        table.add_row("", msg.cl_ord_id or "", "Reject", "", "", "", "", "", "", "",
                      msg.reject_name)


def _positions(pipeline) -> list[tuple]:
    risk = pipeline.risk
    rows = []
    for account in risk.accounts:
        a = risk.account_index(account)
        for symbol in pipeline.symbols:
            e = risk.exposure(a, risk.instrument_index(symbol))
            inst = pipeline.instruments[symbol]
            if any(e.get(k) for k in ("position", "open_buy", "open_sell")):
                rows.append((account, symbol, inst.lots_to_qty(e["position"]),
                             inst.lots_to_qty(e["open_buy"]),
                             inst.lots_to_qty(e["open_sell"])))
    return rows
