"""``kronos-exec client``: send one request to a running engine and print the answers.

For operators and smoke tests::

    kronos-exec client --endpoint tcp://127.0.0.1:7001 \\
        --server-key-file keys/server.key --client-key-file keys/ops.key_secret \\
        new --symbol AAPL --side buy --qty 10 --price 101.25 --account ACC1

Each response is printed as one JSON line (enum fields by name). The command
listens until ``--wait`` seconds pass without a message. Exit status: 0 when
answered, 1 when the answer is a reject (an ``OrderStatusReply`` with
``found`` false included), 2 when the endpoint or a key file cannot be used,
3 when nothing came back.
"""
from __future__ import annotations

import argparse
import sys
import time

import msgspec
import orjson

from engine.client import Client, load_client_keys
from engine.cmd_journal import parse_time
from engine.messages import (
    ExecType,
    ExecutionReport,
    OrdStatus,
    OrderStatusReply,
    OrdType,
    Reject,
    Side,
    TimeInForce,
    TradeHistoryReply,
)

_ENUM_FIELDS = {"side": Side, "exec_type": ExecType, "ord_status": OrdStatus, "ord_type": OrdType,
                "time_in_force": TimeInForce}

INT64_MAX = (1 << 63) - 1


def _seconds(text: str) -> float:
    """A positive, finite number of seconds: ``--wait 0`` closed the socket before the
    request left, and looked like an engine that did not answer."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def _given_id(text: str) -> str:
    """An id given on the command line: not empty (``--cl-ord-id "$ID"`` with ``ID``
    unset made a fresh id, and a retry a second order)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty id: give one, or leave the option out")
    return text


def _time_ns(text: str) -> int:
    """A time as nanoseconds since 1970, read as ``journal export`` reads it (integer
    ns, or ISO 8601 exact to the nanosecond, UTC when it names no zone), within what
    the protocol's times hold (0 to 2^63 - 1)."""
    value = parse_time(text)
    if not 0 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 1970 to 2262 (0 to 2^63 - 1 "
                                         f"ns), the range of the engine's times")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the connection options and one sub-command per request."""
    parser.add_argument("--endpoint", required=True, help="intake endpoint, tcp://host:port or ipc:///path")
    parser.add_argument("--server-key", help="engine's Z85 public key (turns CURVE on)")
    parser.add_argument("--server-key-file", help="engine's public certificate file (turns CURVE on)")
    parser.add_argument("--client-key-file", help="this client's secret certificate file")
    parser.add_argument("--wait", type=_seconds, default=1.0,
                        help="stop after this many seconds without a message (default 1.0)")
    sub = parser.add_subparsers(dest="request", metavar="REQUEST", required=True)

    new = sub.add_parser("new", help="send a NewOrder")
    new.add_argument("--symbol", required=True, help="instrument, e.g. AAPL")
    new.add_argument("--side", required=True, choices=["buy", "sell", "sell_short"])
    new.add_argument("--qty", required=True, help="decimal quantity, e.g. 10")
    new.add_argument("--price", help="decimal limit price, e.g. 101.25 (omit for a market order)")
    new.add_argument("--account", required=True, help="account the order trades for")
    new.add_argument("--ord-type", choices=["limit", "market"],
                     help="default: limit with --price, market without")
    # No "fok": the engine refuses every FOK order (INVALID_TIF), as a fill-or-kill
    # cannot be held across venues; offering it would only invite the reject.
    new.add_argument("--tif", default="day", choices=["day", "gtc", "ioc"],
                     help="time in force (default day; the engine refuses FOK)")
    new.add_argument("--cl-ord-id", type=_given_id,
                     help="client order id (default: a fresh <hex>-1)")
    new.add_argument("--post-only", action="store_true",
                     help="only rest on the book, never take liquidity (limit, day or gtc)")
    new.add_argument("--locate", action="store_true",
                     help="a locate was obtained (every sell_short needs one: docs/risk.md)")

    cancel = sub.add_parser("cancel", help="send a Cancel")
    cancel.add_argument("--orig-cl-ord-id", required=True, help="cl_ord_id of the order to cancel")
    cancel.add_argument("--account", required=True, help="the order's account")

    replace = sub.add_parser("replace", help="send a Replace")
    replace.add_argument("--orig-cl-ord-id", required=True, help="cl_ord_id of the order to change")
    replace.add_argument("--account", required=True, help="the order's account")
    replace.add_argument("--qty", help="new decimal quantity (default: unchanged)")
    replace.add_argument("--price", help="new decimal limit price (default: unchanged)")

    status = sub.add_parser("status", help="send an OrderStatusRequest")
    status.add_argument("--cl-ord-id", required=True, help="the order's cl_ord_id")
    status.add_argument("--account", required=True, help="the order's account")

    history = sub.add_parser("history", help="send a TradeHistoryRequest (the account's fills; "
                                             "every page: one reply line each)")
    history.add_argument("--account", required=True, help="whose fills")
    history.add_argument("--start", type=_time_ns, default=0,
                         help="from this time on (ISO 8601, e.g. 2026-12-05T09:30:00Z, or "
                              "nanoseconds since 1970; default: the beginning)")
    history.add_argument("--end", type=_time_ns, default=None,
                         help="up to, not including, this time (same forms; default: now)")
    history.add_argument("--symbol", help="only this instrument's fills (default: all)")

    heartbeat = sub.add_parser("heartbeat", help="send a Heartbeat")
    heartbeat.add_argument("--cancel-on-disconnect", action=argparse.BooleanOptionalAction,
                           default=None, help="opt the session in to (or, with --no-, out of) "
                                              "cancel-on-disconnect (default: leave it as it is)")


def _readable(msg) -> dict:
    """A message as a dict with its enums by name, at every depth.

    Nested structs too: an ``OrderStatusReply``'s ``report`` and each of a
    ``TradeHistoryReply``'s ``fills`` carry a ``side``, which would otherwise
    print as an integer in one line and a name in the next.
    """
    data = {"type": type(msg).__name__, **msgspec.to_builtins(msg)}
    _name_enums(data)
    return data


def _name_enums(value) -> None:
    """Replace, in place, the enum fields' integers by names in ``value``'s dicts, however deep."""
    if isinstance(value, dict):
        for field, item in value.items():
            enum_type = _ENUM_FIELDS.get(field)
            if enum_type is not None and isinstance(item, int):
                value[field] = enum_type(item).name
            else:
                _name_enums(item)
    elif isinstance(value, list):
        for item in value:
            _name_enums(item)


def _refused(msg) -> bool:
    """Whether an answer says no: a reject, or a status request for an order not known."""
    return isinstance(msg, Reject) or \
        (isinstance(msg, ExecutionReport) and msg.exec_type == ExecType.REJECTED) or \
        (isinstance(msg, OrderStatusReply) and not msg.found)


def _is_z85_key(key: str | bytes) -> bool:
    """Whether ``key`` is a Z85-encoded 32-byte CURVE key."""
    from zmq.utils import z85

    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, UnicodeError):
        return False


def _later_pages(client: Client, args: argparse.Namespace, end: int, answers: list) -> list:
    """The answers to the requests for a history's further pages: an answer holds at most
    ``[history] max_fills_per_request`` fills, and its ``next_start_time`` (0: nothing
    left out) is where the next request for the rest starts."""
    later = []
    while answers:
        pages = [m for m in answers if isinstance(m, TradeHistoryReply) and m.last]
        if not pages or not pages[-1].next_start_time:
            break
        client.history(args.account, pages[-1].next_start_time, end, symbol=args.symbol)
        answers = client.drain(args.wait)
        later += answers
    return later


def run(args: argparse.Namespace) -> int:
    """Connect, send, print the answers; returns the exit status."""
    import zmq
    import zmq.auth

    def fail(message: str) -> int:
        print(f"kronos-exec client: {message}", file=sys.stderr)
        return 2

    server_key = args.server_key
    try:
        if args.server_key_file:
            server_key, _ = zmq.auth.load_certificate(args.server_key_file)
        keypair = load_client_keys(args.client_key_file) if args.client_key_file else None
    except (OSError, ValueError) as exc:  # missing file, or not a ZeroMQ certificate
        return fail(f"cannot load a key: {exc}")
    if server_key is None and keypair is not None:
        return fail("--client-key-file needs --server-key or --server-key-file")
    if server_key is not None and not _is_z85_key(server_key):
        return fail(f"--server-key {server_key!r} is not a 40-character Z85 CURVE public key "
                    f"(see kronos-exec keys show)")
    try:
        client = Client(args.endpoint, server_key=server_key, client_keypair=keypair)
    except zmq.ZMQError as exc:
        return fail(f"cannot connect to {args.endpoint!r}: {exc.strerror} "
                    f"(expected tcp://host:port or ipc:///path)")
    sent = None
    with client:
        match args.request:
            case "new":
                sent = client.new_order(args.symbol, args.side, args.qty, args.price,
                                        account=args.account, ord_type=args.ord_type,
                                        time_in_force=args.tif, cl_ord_id=args.cl_ord_id,
                                        post_only=args.post_only, locate=args.locate)
            case "cancel":
                sent = client.cancel(args.orig_cl_ord_id, account=args.account)
            case "replace":
                sent = client.replace(args.orig_cl_ord_id, account=args.account, qty=args.qty,
                                      price=args.price)
            case "status":
                client.status(args.cl_ord_id, account=args.account)
            case "history":
                end = time.time_ns() if args.end is None else args.end
                client.history(args.account, args.start, end, symbol=args.symbol)
            case "heartbeat":
                client.heartbeat(cancel_on_disconnect=args.cancel_on_disconnect, test_req_id="cli")
        answers = client.drain(args.wait)
        if args.request == "history":
            answers += _later_pages(client, args, end, answers)
    for msg in answers:
        sys.stdout.write(orjson.dumps(_readable(msg)).decode() + "\n")
    if not answers:
        # The request may have arrived all the same: its id is what to ask
        # about (status), or to send again with (never executed twice).
        sent_as = f"; it was sent as cl_ord_id {sent.cl_ord_id!r}" if sent is not None else ""
        print(f"kronos-exec client: no answer from {args.endpoint} within {args.wait} s{sent_as}",
              file=sys.stderr)
        return 3
    return 1 if any(_refused(m) for m in answers) else 0
