"""``kronos-exec loadgen``: offer open-loop load to a running engine and record HDR latencies.

The command-line face of :mod:`benchmarks.loadgen` (kept in ``benchmarks/``
so that ``engine/`` holds no benchmark code). Prints a table of the
percentiles per request kind, writes the histograms and a summary with
``--out``, and ends its output with one JSON line of the summary.
"""
from __future__ import annotations

import argparse
import sys

import orjson
from rich.console import Console
from rich.table import Table

from benchmarks import loadgen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``loadgen``'s options."""
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:7001",
                        help="engine intake endpoint (default: the embedded default's)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="requests per second, all kinds together (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    parser.add_argument("--mix", default="70:20:10",
                        help="weights new:cancel:replace (default 70:20:10)")
    parser.add_argument("--account", default="DEMO1")
    parser.add_argument("--symbol", default="AAA")
    parser.add_argument("--side", choices=["buy", "sell_short"], default="buy",
                        help="side of the new orders (sell_short sends a locate)")
    parser.add_argument("--price-band", default="49.00:49.90", metavar="LOW:HIGH",
                        help="prices of new and replaced orders; keep it passive and inside the "
                             "collar (default 49.00:49.90, below AAA's 50.00)")
    parser.add_argument("--tick", default="0.01", help="price step inside the band")
    parser.add_argument("--qty", default="1", help="quantity of each order")
    parser.add_argument("--server-key", help="the engine's Z85 CURVE public key (turns CURVE on)")
    parser.add_argument("--client-key", metavar="FILE",
                        help="this client's CURVE certificate (secret) file, see docs/protocol.md")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for outstanding answers after the last send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--floor", action="store_true",
                        help="the endpoint is a ZeroMQ echo: measure the transport floor")
    parser.add_argument("--out", metavar="DIR",
                        help="write <kind>.hdr (hdrh encoded) and summary.json here")


def spec_from_args(args: argparse.Namespace) -> loadgen.LoadSpec:
    """The :class:`~benchmarks.loadgen.LoadSpec` the options describe.

    Raises
    ------
    ValueError
        On a malformed mix or price band, or a rate or duration not above 0.
    """
    if args.rate <= 0 or args.duration <= 0:
        raise ValueError("--rate and --duration must be above 0")
    low, sep, high = args.price_band.partition(":")
    if not sep:
        raise ValueError(f"--price-band {args.price_band!r}: expected LOW:HIGH")
    keypair = None
    if args.client_key:
        from engine.client import load_client_keys
        keypair = load_client_keys(args.client_key)
    return loadgen.LoadSpec(
        endpoint=args.endpoint, rate=args.rate, duration=args.duration,
        mix=loadgen.parse_mix(args.mix), account=args.account, symbol=args.symbol,
        side=args.side, price_band=(low, high), tick=args.tick, qty=args.qty,
        server_key=args.server_key, client_keypair=keypair, drain_s=args.drain, seed=args.seed,
        floor=args.floor)


def print_summary(summary: dict, console: Console) -> None:
    """The percentile table of one run."""
    table = Table(title=f"{summary['endpoint']}: {summary['rate']:,.0f}/s for "
                        f"{summary['duration_s']:g} s, open loop, latency from the scheduled "
                        f"send (µs)")
    for col in ["request", "sent", "acked", "rejected", "p50", "p90", "p99", "p99.9", "max"]:
        table.add_column(col, justify="left" if col == "request" else "right")
    for kind in loadgen.KINDS:
        lat = summary["latency_us"][kind]
        table.add_row(kind, str(summary["sent"][kind]), str(summary["acks"][kind]),
                      str(sum(summary["rejects"][kind].values())),
                      *[f"{lat[p]:,.0f}" if lat[p] is not None else "-"
                        for p in ("p50", "p90", "p99", "p99.9", "max")])
    console.print(table)
    console.print(f"unanswered {summary['unanswered']}, fills {summary['fills']}, sender fell "
                  f"behind schedule by up to {summary['max_send_lag_us']:,.0f} µs")
    for kind, reasons in summary["rejects"].items():
        if reasons:
            console.print(f"rejected {kind}: " + ", ".join(f"{r} x{c}" for r, c in reasons.items()))


def run(args: argparse.Namespace) -> int:
    """Run the load; 0 when every request was answered, 1 otherwise, 2 on bad options."""
    try:
        spec = spec_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    console = Console(highlight=False, width=120)
    console.print(f"loadgen: {spec.rate:,.0f}/s for {spec.duration:g} s to {spec.endpoint}, "
                  f"mix new:cancel:replace {':'.join(map(str, spec.mix))}")
    result = loadgen.run(spec)
    summary = loadgen.save(result, args.out) if args.out else result["summary"]
    print_summary(summary, console)
    print(orjson.dumps(summary).decode(), flush=True)
    return 0 if summary["unanswered"] == 0 else 1
