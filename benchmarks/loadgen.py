"""Open-loop load generator for a running engine: new, cancel and replace at a fixed rate.

Where it sits: outside the engine, as one more client of intake. It drives
any engine (``kronos-exec serve``, a staging box over CURVE) with a stream of
requests sent **on schedule** whatever the replies do, and measures each
answer from the request's *scheduled* send time. A closed-loop client waits
for answers before sending more, so when the engine stalls it stops offering
load and the stall never shows in its percentiles (coordinated omission);
here a stall shows as the queueing delay it causes every later request.

The request stream is planned before the clock starts (encoded once, so the
send loop only copies bytes):

* ``new``: a passive limit order (DAY) for ``qty`` at a random tick inside
  the price band, which should rest, so that it can be cancelled or
  replaced later;
* ``cancel``: cancels the oldest resting order the run has sent;
* ``replace``: moves the oldest resting order to another price in the band
  (same qty); the order then rests under the replace's cl_ord_id.

A cancel or replace is only planned against an order sent at least
``MIN_TARGET_AGE_S`` earlier (so that it never races its own order's
routing, or an earlier replace of it); while no order is old enough, the slot
becomes a new order instead, so the offered rate holds.

Latencies are recorded in HDR histograms (microseconds, 3 significant
digits): ``new`` to the ``NEW`` execution report, ``cancel`` to the
``CANCELED`` report answering it, ``replace`` to the ``REPLACED`` report.
Rejects are counted by kind and reason and are not in the histograms.

``floor=True`` aims the same loop at a ZeroMQ echo (a ROUTER that sends every
message back): every echoed request counts as its own answer, which gives the
transport's floor at the same rate with the same client code; the harness
uses it as the baseline of the engine's figures.
"""
from __future__ import annotations

import collections
import random
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec
import orjson
import zmq
from hdrh.histogram import HdrHistogram

from engine.client import Client
from engine.messages import (Cancel, ExecType, ExecutionReport, Heartbeat, NewOrder, Reject, Replace,
                             request_decoder, response_decoder)

KINDS = ("new", "cancel", "replace")
# The letter after the run's prefix in every cl_ord_id says which kind of
# request it is, so a reply is matched without a dictionary lookup.
_LETTER = {"new": "n", "cancel": "c", "replace": "r"}
_KIND_OF = {v: k for k, v in _LETTER.items()}
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
#: Slowest latency the histograms hold (60 s, in µs); anything slower is clamped.
HIGHEST_US = 60_000_000
MIN_TARGET_AGE_S = 0.02
HEARTBEAT_EVERY_S = 1.0


@dataclass
class LoadSpec:
    """What to offer, to whom.

    Parameters
    ----------
    endpoint : str
        Intake endpoint, ``tcp://host:port``.
    rate : float
        Requests per second, all kinds together.
    duration : float
        Seconds of offered load.
    mix : tuple of int
        Weights of new, cancel and replace, e.g. ``(70, 20, 10)``.
    account, symbol : str
        Who sends, in what instrument.
    side : str
        ``"buy"`` or ``"sell_short"`` (with a locate) for the new orders.
    price_band : tuple of str
        Lowest and highest price of new and replaced orders; keep it passive
        (below the market for buys) and inside the engine's collar.
    tick : str
        Price increment used inside the band.
    qty : str
        Quantity of each order.
    server_key : str, optional
        The engine's Z85 public key (CURVE on).
    client_keypair : (bytes, bytes), optional
        This client's CURVE keys.
    drain_s : float
        After the last send, how long to wait for outstanding answers.
    seed : int
        Seed of the price and kind choices (the plan is reproducible).
    floor : bool
        The endpoint is an echo server (see the module docstring).
    """

    endpoint: str
    rate: float
    duration: float
    mix: tuple[int, int, int] = (70, 20, 10)
    account: str = "DEMO1"
    symbol: str = "AAA"
    side: str = "buy"
    price_band: tuple[str, str] = ("49.00", "49.90")
    tick: str = "0.01"
    qty: str = "1"
    server_key: str | None = None
    client_keypair: tuple[bytes, bytes] | None = None
    drain_s: float = 10.0
    seed: int = 1
    floor: bool = False
    prefix: str = field(default_factory=lambda: f"lg{secrets.token_hex(3)}")


def parse_mix(text: str) -> tuple[int, int, int]:
    """``"70:20:10"`` -> ``(70, 20, 10)``; missing parts are 0.

    Raises
    ------
    ValueError
        If a part is negative or not an integer, or new orders have weight 0.
    """
    parts = [int(p) for p in text.split(":")]
    if len(parts) > 3 or any(p < 0 for p in parts):
        raise ValueError(f"mix {text!r}: up to three non-negative weights new:cancel:replace")
    parts += [0] * (3 - len(parts))
    if parts[0] == 0:
        # Cancels and replaces need orders to act on.
        raise ValueError(f"mix {text!r}: new orders need a weight above 0")
    return parts[0], parts[1], parts[2]


@dataclass
class Plan:
    """The run's requests, encoded, with their kinds and scheduled offsets."""

    payloads: list[bytes]
    kinds: list[str]
    offsets_ns: list[int]
    # For a cancel or replace: the cl_ord_id it acts on (reject reports name
    # that order, not the request), else None.
    targets: list[str | None]


def make_plan(spec: LoadSpec) -> Plan:
    """Plan ``rate * duration`` requests (see the module docstring)."""
    rng = random.Random(spec.seed)
    enc = msgspec.msgpack.Encoder()
    n = max(1, int(round(spec.rate * spec.duration)))
    period_ns = 1e9 / spec.rate
    tick = Decimal(spec.tick)
    low, high = (int(Decimal(p) / tick) for p in spec.price_band)
    if low <= 0 or high < low:
        raise ValueError(f"price band {spec.price_band}: need 0 < low <= high")
    side = {"buy": 1, "sell_short": 5}[spec.side]
    locate = spec.side == "sell_short"

    def price() -> str:
        return str(rng.randint(low, high) * tick)

    # Orders that rest and may be acted on: (eligible from, cl_ord_id), oldest first.
    resting: collections.deque[tuple[int, str]] = collections.deque()
    min_age_ns = int(MIN_TARGET_AGE_S * 1e9)
    plan = Plan([], [], [], [])
    for i in range(n):
        at = int(i * period_ns)
        kind = rng.choices(KINDS, weights=spec.mix)[0]
        if kind != "new" and not (resting and resting[0][0] <= at):
            kind = "new"
        cl_ord_id = f"{spec.prefix}{_LETTER[kind]}{i}"
        target = None
        if kind == "new":
            msg = NewOrder(cl_ord_id=cl_ord_id, account=spec.account, symbol=spec.symbol,
                           side=side, qty=spec.qty, price=price(), locate=locate)
            resting.append((at + min_age_ns, cl_ord_id))
        else:
            target = resting.popleft()[1]
            if kind == "cancel":
                msg = Cancel(cl_ord_id=cl_ord_id, orig_cl_ord_id=target, account=spec.account,
                             symbol=spec.symbol)
            else:
                msg = Replace(cl_ord_id=cl_ord_id, orig_cl_ord_id=target, account=spec.account,
                              symbol=spec.symbol, price=price())
                resting.append((at + min_age_ns, cl_ord_id))
        plan.payloads.append(enc.encode(msg))
        plan.kinds.append(kind)
        plan.offsets_ns.append(at)
        plan.targets.append(target)
    return plan


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: 1 µs to 60 s, 3 significant digits."""
    return HdrHistogram(1, HIGHEST_US, 3)


def summarize(hist: HdrHistogram) -> dict:
    """Count, mean, p50/p90/p99/p99.9 and max of a histogram, in µs (None when empty)."""
    count = hist.get_total_count()
    out = {"count": count}
    for name, p in PERCENTILES.items():
        out[name] = float(hist.get_value_at_percentile(p)) if count else None
    out["max"] = float(hist.get_max_value()) if count else None
    out["mean"] = round(hist.get_mean_value(), 1) if count else None
    return out


def run(spec: LoadSpec, progress=None) -> dict:
    """Offer the planned load, collect the answers, return the results.

    Parameters
    ----------
    spec : LoadSpec
        The load.
    progress : callable, optional
        Called about once a second with ``(sent, total)``.

    Returns
    -------
    dict
        ``summary`` (JSON-ready figures, see :func:`save`) and
        ``histograms`` (kind -> ``HdrHistogram``).
    """
    plan = make_plan(spec)
    n = len(plan.payloads)
    hists = {kind: new_histogram() for kind in KINDS}
    rejects: dict[str, collections.Counter] = {kind: collections.Counter() for kind in KINDS}
    answered = bytearray(n)
    # Reject reports of a cancel or replace name the order acted on: map it back.
    by_target = {t: i for i, t in enumerate(plan.targets) if t is not None}
    plen = len(spec.prefix)
    fills = 0
    max_lag_ns = 0

    # The raw socket is driven here, so the client's reconnect handling (a socket
    # monitor it reads on its own calls) would only cost a thread's events.
    client = Client(spec.endpoint, server_key=spec.server_key, client_keypair=spec.client_keypair,
                    auto_resume=False)
    sock = client.socket
    # Open loop means nothing may block the sender: no high-water mark.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    decode = (request_decoder() if spec.floor else response_decoder()).decode
    heartbeat = msgspec.msgpack.encode(Heartbeat())
    if not spec.floor:
        # Opens the session before the clock starts (CURVE handshake, logon).
        sock.send(heartbeat)
        if sock.poll(5000):
            sock.recv()
    time.sleep(0.1)

    def index_of(cl_ord_id: str | None) -> int:
        if cl_ord_id is None or not cl_ord_id.startswith(spec.prefix):
            return -1
        return int(cl_ord_id[plen + 1:])

    def answer(i: int, now: int, ok: bool, reason: str | None = None) -> int:
        if i < 0 or answered[i]:
            return 0
        answered[i] = 1
        if ok:
            hists[plan.kinds[i]].record_value(min(HIGHEST_US, max(1, (now - sched[i]) // 1000)))
        else:
            rejects[plan.kinds[i]][reason or "unknown"] += 1
        return 1

    start = time.perf_counter_ns() + 1_000_000
    sched = [start + off for off in plan.offsets_ns]
    sent = got = 0
    next_beat = start + int(HEARTBEAT_EVERY_S * 1e9)
    next_progress = start
    deadline = None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    try:
        while True:
            now = time.perf_counter_ns()
            while sent < n and sched[sent] <= now:
                max_lag_ns = max(max_lag_ns, now - sched[sent])
                sock.send(plan.payloads[sent], copy=False)
                sent += 1
            if now >= next_beat:
                # The engine drops a silent session; the drain can be long.
                if not spec.floor:
                    sock.send(heartbeat)
                next_beat = now + int(HEARTBEAT_EVERY_S * 1e9)
            if progress is not None and now >= next_progress:
                progress(sent, n)
                next_progress = now + 1_000_000_000
            if sent == n and deadline is None:
                deadline = now + int(spec.drain_s * 1e9)
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                t = time.perf_counter_ns()
                msg = decode(data.buffer)
                if spec.floor:
                    got += answer(index_of(msg.cl_ord_id), t, True)
                elif isinstance(msg, ExecutionReport):
                    et = msg.exec_type
                    if et in (ExecType.FILL, ExecType.PARTIAL_FILL):
                        fills += 1
                    elif et == ExecType.REJECTED:
                        # A cancel/replace reject carries the order it named as orig.
                        i = by_target.get(msg.orig_cl_ord_id, -1) if msg.orig_cl_ord_id \
                            else index_of(msg.cl_ord_id)
                        got += answer(i, t, False, msg.reject_name)
                    elif msg.cl_ord_id.startswith(spec.prefix):
                        i = index_of(msg.cl_ord_id)
                        kind = plan.kinds[i]
                        if et == ExecType.NEW and kind == "new":
                            got += answer(i, t, True)
                        elif et == ExecType.CANCELED and kind == "cancel" and msg.orig_cl_ord_id:
                            got += answer(i, t, True)
                        elif et == ExecType.REPLACED and kind == "replace":
                            got += answer(i, t, True)
                        elif et == ExecType.CANCELED and kind == "replace":
                            # The replaced order could not be routed again.
                            got += answer(i, t, False, "REPLACE_CANCELED")
                elif isinstance(msg, Reject):
                    got += answer(index_of(msg.cl_ord_id), t, False, msg.reject_name)
            if deadline is not None and (got >= n or time.perf_counter_ns() > deadline):
                break
            if sent < n:
                wait_ms = (sched[sent] - time.perf_counter_ns()) / 1e6
                if wait_ms > 0.05:
                    poller.poll(min(wait_ms, 1.0))
            else:
                poller.poll(1)
        elapsed_s = (time.perf_counter_ns() - start) / 1e9
        send_s = (sched[-1] - start) / 1e9 if n > 1 else 0.0
    finally:
        client.close()

    sent_by = collections.Counter(plan.kinds)
    summary = {
        "endpoint": spec.endpoint, "floor": spec.floor, "rate": spec.rate,
        "duration_s": spec.duration, "mix": list(spec.mix), "account": spec.account,
        "symbol": spec.symbol,
        "sent": {kind: sent_by.get(kind, 0) for kind in KINDS},
        "acks": {kind: hists[kind].get_total_count() for kind in KINDS},
        "rejects": {kind: dict(rejects[kind]) for kind in KINDS},
        "unanswered": n - got,
        "fills": fills,
        # How far behind schedule the sender itself fell: if large, this
        # machine could not offer the rate and the latencies include that.
        "max_send_lag_us": round(max_lag_ns / 1000, 1),
        # n sends span n - 1 periods of the schedule.
        "offered_rate": round((n - 1) / send_s, 1) if send_s else None,
        "elapsed_s": round(elapsed_s, 3),
        "latency_us": {kind: summarize(hists[kind]) for kind in KINDS},
    }
    return {"summary": summary, "histograms": hists}


def save(result: dict, out_dir: str | Path) -> dict:
    """Write ``<kind>.hdr`` (hdrh ``encode()`` text) per kind and ``summary.json``.

    Returns
    -------
    dict
        The summary, with ``files`` naming what was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, hist in result["histograms"].items():
        path = out / f"{kind}.hdr"
        path.write_bytes(hist.encode() + b"\n")
        files[kind] = str(path)
    summary = dict(result["summary"], files=files)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def load_histogram(path: str | Path) -> HdrHistogram:
    """A histogram written by :func:`save`."""
    return HdrHistogram.decode(Path(path).read_bytes().strip())
