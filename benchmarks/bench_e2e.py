"""End-to-end latency and throughput of the engine over ZeroMQ, against the raw ZeroMQ floor.

In one run, over TCP loopback, with the engine (``kronos-exec serve`` on the
embedded simulator) in its own process:

* the floor: a pyzmq ROUTER that only echoes, driven by the same client loop
  with the same messages, measured before the engine's run and again after it,
  each figure the better of the two (:class:`BestFloor`);
* the engine at fixed offered rates (open loop: each order is sent at its
  scheduled time whatever the replies do, and latency is measured from that
  scheduled time, so queueing shows instead of being hidden by coordinated
  omission): round trip to the acknowledgement (``NEW``) and, for the
  marketable orders, to the fill;
* the highest rate of single-order messages closed loop (2,000 in flight), and
  orders per second inside ``BulkNewOrders`` of 100;
* the maximum sustainable rate: the highest offered rate, open loop, at which the
  engine keeps up (every order acknowledged, the backlog not growing over the
  phase: :func:`keeps_up`), searched from the closed-loop rate with short
  probes and confirmed over a longer phase (:func:`sustainable_phase`), whose
  acknowledgement and fill percentiles are reported like the fixed rates', beside
  the echo floor's own phases at the same rate;
* in process, before the engine starts: what finding the session to evict
  costs intake when it is full (``intake.max_sessions``) at 10,000 sessions,
  against the scan of every session it replaced (:func:`scan_evict_one`); and
  what one round of the sessions' watchdog costs at 10,000 sessions, against
  the visit of every session it replaced (:func:`scan_check_sessions`).

Percentiles come from HDR histograms. Each figure is printed beside the floor
measured in the same run, with the engine's added latency.

Run: ``python benchmarks/bench_e2e.py`` (or ``--quick``; ``--client block`` for a
client that sleeps between sends instead of spinning, see :func:`open_loop`;
``--eviction-only`` for the in-process cases alone).
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import msgspec
import zmq
from hdrh.histogram import HdrHistogram

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.reference.intake_reference import scan_check_sessions  # noqa: E402
from benchmarks.common import best_of, emit, machine, table, without_gc  # noqa: E402
from engine.config import IntakeConfig, SecurityConfig  # noqa: E402
from engine.intake import Handler, IntakeServer, _Listener  # noqa: E402
from engine.intake import log as intake_log  # noqa: E402
from engine.messages import (BulkNewOrders, ExecType, ExecutionReport, Heartbeat, NewOrder,  # noqa: E402
                             Reject, request_decoder, response_decoder)

TARGET_RATE = 100_000
TARGET_ADDED_P50_US, TARGET_ADDED_P99_US = 25.0, 60.0
#: Slowest latency the histograms hold, in µs: an hour, beyond :func:`open_loop`'s
#: longest drain (hdrh drops a larger value without a word, which would take the
#: slowest replies of an overloaded phase out of its percentiles).
HIGHEST_US = 3_600_000_000

ECHO_SERVER = textwrap.dedent("""
    import sys, zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.SNDHWM, 0)  # as the engine's: nothing dropped under a deep window
    s.setsockopt(zmq.RCVHWM, 0)
    s.bind(sys.argv[1])
    print("ready", flush=True)
    while True:
        s.send_multipart(s.recv_multipart(copy=False), copy=False)
""")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_config(endpoint: str, workdir: Path, extra_toml: str = "") -> str:
    """The benchmark engine's configuration: one plaintext endpoint, account BENCH with
    limits out of the way, no fsync, no metrics port; ``extra_toml`` appended."""
    return textwrap.dedent(f"""
        [intake]
        plaintext_endpoints = ["{endpoint}"]
        allow_plaintext = true
        heartbeat_timeout_ms = 600000
        recv_hwm = 1000000
        send_hwm = 1000000
        [security]
        plaintext_accounts = ["BENCH"]
        [journal]
        dir = "{workdir / 'journal'}"
        fsync = "none"
        [logging]
        level = "INFO"
        json = false
        [metrics]
        port = 0
        [sim]
        duration = "6h"
        [risk.firm]
        throttle_rate = 10000000
        [risk.accounts.BENCH]
        cash = "100000000000"
        allow_short = true
    """) + extra_toml


def start_engine(port: int, workdir: Path, extra_toml: str = "") -> subprocess.Popen:
    """``kronos-exec serve`` with a benchmark configuration; returns once it serves.

    ``extra_toml`` is appended to the configuration (e.g. ``[[gateways]]`` tables).
    """
    cfg = workdir / "engine.toml"
    cfg.write_text(engine_config(f"tcp://127.0.0.1:{port}", workdir, extra_toml))
    log = workdir / "engine.log"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", str(cfg)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"engine: serving on" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def dealer(endpoint: str) -> zmq.Socket:
    """A connected client socket with unbounded queues (the load is bounded by the run)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    time.sleep(0.2)  # let the TCP connection come up before the clock starts
    return sock


def orders(n: int, prefix: str, marketable_every: int = 2) -> list[bytes]:
    """Pre-encoded NewOrders: alternately marketable IOC buys/short sells and far passive IOCs."""
    enc = msgspec.msgpack.Encoder()
    out = []
    for i in range(n):
        buy = i % 4 < 2
        marketable = i % marketable_every == 0
        price = ("50.90" if buy else "49.10") if marketable else ("47.00" if buy else "53.00")
        out.append(enc.encode(NewOrder(
            cl_ord_id=f"{prefix}.{i}", account="BENCH", symbol="AAA",
            side=1 if buy else 5, qty="1", price=price, time_in_force=3, locate=not buy)))
    return out


def index_of(cl_ord_id: str) -> int:
    # cl_ord_ids are "<run prefix>.<index>"
    return int(cl_ord_id.rpartition(".")[2])


#: A marketable order's outcome ends it (a fill of the 1-lot order, or no fill).
_FINAL = frozenset({ExecType.FILL, ExecType.CANCELED, ExecType.REJECTED, ExecType.EXPIRED})
#: After the answer to the closing heartbeat (every acknowledgement in), how long
#: :func:`open_loop` waits at most for the fills still on their way from the venues.
FILL_GRACE_NS = 10_000_000_000


def latency_histogram() -> HdrHistogram:
    """An empty latency histogram: 1 µs to :data:`HIGHEST_US`, 3 significant digits."""
    return HdrHistogram(1, HIGHEST_US, 3)


def record_latency(hist: HdrHistogram, sched_ns: int, now_ns: int) -> None:
    """Record ``now_ns - sched_ns`` in µs (at least 1; past the top, at the top, never
    dropped)."""
    hist.record_value(min(HIGHEST_US, max(1, (now_ns - sched_ns) // 1000)))


def wait_readable(sock: zmq.Socket, timeout_s: float) -> None:
    """Sleep until ``sock`` has a message or ``timeout_s`` passes, to the microsecond.

    pyzmq's ``poll`` takes whole milliseconds; this waits on the socket's
    ``ZMQ_FD`` with ``select`` (microseconds). That descriptor only signals
    that ZeroMQ has work: ``ZMQ_EVENTS`` is checked first (which also re-arms
    it), so a message already queued never waits.
    """
    if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        return
    select.select([sock.getsockopt(zmq.FD)], [], [], timeout_s)


def open_loop(endpoint: str, msgs: list[bytes], rate: float, *, echo: bool,
              marketable_every: int = 2, drain_s: float = 300.0, spin: bool = True) -> dict:
    """Send ``msgs`` at ``rate``/s on schedule; histogram the replies' latency (µs).

    With ``spin`` (the default) the loop polls the socket between sends with
    whole-millisecond timeouts (pyzmq's unit), so a wait under 1 ms spins:
    sends go out on time and replies are stamped as they land, at the price
    of a core (which the engine then does not have on a 2-core machine;
    docs/benchmarks.md). Without it the loop sleeps on the socket until the
    next send is due (:func:`wait_readable`, to the microsecond): about a
    fifth of a core at 1,000/s, but every reply then waits for the client's
    wake-up too (the floor's p50 about doubles on this machine).

    After the last order a heartbeat goes out on the same connection; the
    engine answers a connection's requests in order, so its answer marks
    the end of the backlog, and every acknowledgement before it is counted.
    A fill comes later, from the venue: the loop then waits for every
    marketable order's outcome (filled, canceled or rejected), up to
    :data:`FILL_GRACE_NS` more.

    Returns the acknowledgement's and the fill's histograms, the counts, and
    ``ack_us``: each order's acknowledgement latency in µs, in scheduled
    order (None for an order never acknowledged), for :func:`keeps_up`.
    """
    from engine.messages import Heartbeat, HeartbeatAck

    sock = dealer(endpoint)
    decode = request_decoder().decode if echo else response_decoder().decode
    ack = latency_histogram()
    fill = latency_histogram()
    n = len(msgs)
    period = 1e9 / rate
    start = time.perf_counter_ns() + 1_000_000
    sched = [start + int(i * period) for i in range(n)]
    # Each order's acknowledgement latency in µs, in scheduled order (None: unanswered),
    # for :func:`keeps_up`'s look at how the phase's latency moved.
    ack_us: list[int | None] = [None] * n
    sent = got_ack = got_fill = rejects = 0
    # The marketable orders whose outcome (filled, canceled, rejected) is still to come:
    # a fill comes from the venue after the acknowledgement, so the last orders' fills
    # land after the answer to the closing heartbeat, and are waited for.
    outcome = bytearray(n)
    pending = 0 if echo else len(range(0, n, marketable_every))
    ended_at = None
    deadline = None
    poll = zmq.Poller()
    poll.register(sock, zmq.POLLIN)
    while True:
        now = time.perf_counter_ns()
        while sent < n and sched[sent] <= now:
            sock.send(msgs[sent], copy=False)
            sent += 1
        if sent == n and deadline is None:
            deadline = time.perf_counter_ns() + int(drain_s * 1e9)
            if not echo:
                sock.send(msgspec.msgpack.encode(Heartbeat(test_req_id="end")))
        while True:
            try:
                data = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            t = time.perf_counter_ns()
            msg = decode(data.buffer)
            if echo:
                i = index_of(msg.cl_ord_id)
                record_latency(ack, sched[i], t)
                ack_us[i] = (t - sched[i]) // 1000
                got_ack += 1
                continue
            if isinstance(msg, ExecutionReport):
                i = index_of(msg.cl_ord_id)
                if i % marketable_every == 0 and not outcome[i] and msg.exec_type in _FINAL:
                    outcome[i] = 1
                    pending -= 1
                if msg.exec_type == ExecType.NEW and ack_us[i] is None:
                    ack_us[i] = (t - sched[i]) // 1000
                    record_latency(ack, sched[i], t)
                    got_ack += 1
                elif msg.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL) and \
                        i % marketable_every == 0 and msg.cum_qty == msg.last_qty:
                    record_latency(fill, sched[i], t)
                    got_fill += 1
                elif msg.exec_type == ExecType.REJECTED:
                    rejects += 1
            elif isinstance(msg, Reject):
                rejects += 1
                try:  # (a reject of a request that could not be read names no order)
                    i = index_of(msg.cl_ord_id or "")
                except ValueError:
                    i = -1
                if 0 <= i < n and i % marketable_every == 0 and not outcome[i]:
                    outcome[i] = 1
                    pending -= 1
            elif isinstance(msg, HeartbeatAck) and msg.test_req_id == "end":
                ended_at = t
        if deadline is not None:
            now = time.perf_counter_ns()
            if (echo and got_ack >= n) or now > deadline:
                break
            # Every acknowledgement is in; the fills still on their way get a grace.
            if ended_at is not None and (pending <= 0 or now > ended_at + FILL_GRACE_NS):
                break
        if sent < n:
            wait_us = (sched[sent] - time.perf_counter_ns()) / 1000
            if spin:
                if wait_us > 50:
                    poll.poll(min(wait_us / 1000, 1))
            elif wait_us > 0:
                wait_readable(sock, wait_us / 1e6)
        else:
            poll.poll(1)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    sock.close(linger=0)
    return {"ack": ack, "fill": fill, "acks": got_ack, "fills": got_fill, "rejects": rejects,
            "sent": n, "elapsed_s": elapsed, "ack_us": ack_us}


def max_rate(endpoint: str, msgs: list[bytes], window: int, bulk: int = 0,
             echo: bool = False) -> tuple[float, int]:
    """Closed loop with ``window`` orders outstanding: orders acknowledged per second.

    With ``echo`` the server is the raw echo floor: each reply is the request
    itself, decoded as the client decodes the engine's replies, and counts
    as the acknowledgement of every order it holds (one, or a bulk's).
    """
    sock = dealer(endpoint)
    decode = request_decoder().decode if echo else response_decoder().decode
    if bulk:
        dec = request_decoder()
        enc = msgspec.msgpack.Encoder()
        batches = [enc.encode(BulkNewOrders(orders=[dec.decode(m) for m in msgs[k:k + bulk]]))
                   for k in range(0, len(msgs), bulk)]
    else:
        batches = msgs
    per = bulk or 1
    n_orders = len(batches) * per
    sent = acks = 0
    start = time.perf_counter()
    deadline = start + 60
    while acks < n_orders and time.perf_counter() < deadline:
        while sent < len(batches) and sent * per - acks < window:
            sock.send(batches[sent], copy=False)
            sent += 1
        if sock.poll(100):
            while True:
                try:
                    msg = decode(sock.recv(zmq.NOBLOCK, copy=False).buffer)
                except zmq.Again:
                    break
                if echo:
                    acks += per
                elif isinstance(msg, (ExecutionReport, Reject)) and (
                        not isinstance(msg, ExecutionReport) or
                        msg.exec_type in (ExecType.NEW, ExecType.REJECTED)):
                    acks += 1
    elapsed = time.perf_counter() - start
    sock.close(linger=0)
    return acks / elapsed, acks


# -- the maximum sustainable rate
#
# A rate is *sustained* when, offered open loop for a whole phase, the engine keeps up
# with it: every order is acknowledged, none is rejected, and no backlog builds up.
# Past the engine's capacity the queue grows for as long as the phase lasts, so an
# order's latency grows with its place in the phase (an order sent t seconds in waits
# about t * (rate / capacity - 1)); at capacity exactly the queue neither grows nor
# drains, and a burst early in the phase (a hiccup of the shared machine) leaves every
# later order waiting behind it. So :func:`keeps_up` asks two things of the median
# acknowledgement latency of the phase's last quarter (its end state): that it is not
# more than twice the first quarter's (the backlog did not grow over the phase), and
# that it is not more than four times the same engine's median at light load (the
# lowest fixed rate, 1,000/s: no standing backlog, whatever the trend), each plus a
# millisecond. Medians, because one scheduler hiccup moves a tail percentile of a
# quarter-phase, not its median, while a backlog moves every order behind it; the
# tail is what is then reported at the rate found. The maximum sustainable rate is the
# highest rate a short search finds sustained (:func:`search_sustainable`) that is
# then sustained again over a phase twice as long as the search's probes
# (:func:`confirm_sustainable`): a backlog that grows slowly shows over the longer one.

#: The backlog grew if the last quarter's median acknowledgement latency exceeds the
#: first quarter's this many times, plus :data:`SUSTAIN_SLACK_US`.
SUSTAIN_GROWTH_FACTOR = 2.0
#: A backlog stands if the last quarter's median acknowledgement latency exceeds the
#: engine's median at light load this many times, plus :data:`SUSTAIN_SLACK_US`.
SUSTAIN_LEVEL_FACTOR = 4.0
#: Absolute allowance (µs) over both factors: a sub-millisecond median that doubles is
#: noise on a shared machine (a backlog adds milliseconds within a phase).
SUSTAIN_SLACK_US = 1_000
#: Until a rate is found sustained, the search offers this fraction of the lowest rate
#: that failed (and, until one fails, the highest sustained over this fraction); then
#: it halves the bracket.
SUSTAIN_STEP = 0.5
#: A rate the search found sustained but its longer measured phase did not: the next
#: measured phase offers this fraction of it.
SUSTAIN_RETRY_STEP = 0.8
#: The search stops refining once the highest rate sustained and the lowest failed are
#: within this fraction of each other.
SUSTAIN_RESOLUTION = 0.05


def keeps_up(ack_us: list[int | None], rejects: int = 0, *, light_us: float | None = None,
             factor: float = SUSTAIN_GROWTH_FACTOR, level: float = SUSTAIN_LEVEL_FACTOR,
             slack_us: float = SUSTAIN_SLACK_US) -> tuple[bool, str]:
    """Whether an open-loop phase was sustained, and why: ``(kept_up, reason)``.

    ``ack_us`` is each order's acknowledgement latency in scheduled order
    (:func:`open_loop`'s, None for an order never acknowledged); ``light_us``
    the same server's median at light load (None: not judged). Sustained: every
    order acknowledged, no reject, and the median latency of the phase's last
    quarter at most ``factor`` times the first quarter's plus ``slack_us`` (the
    backlog did not grow) and at most ``level`` times ``light_us`` plus
    ``slack_us`` (no backlog stands); see the section's comment.
    """
    n = len(ack_us)
    if not n:
        return False, "no orders"
    if rejects:
        return False, f"{rejects} rejected"
    missing = sum(1 for v in ack_us if v is None)
    if missing:
        return False, f"{missing} of {n} unanswered"
    q = max(1, n // 4)
    first, last = statistics.median(ack_us[:q]), statistics.median(ack_us[-q:])
    ends = f"median ack {first:,.0f} µs in the first quarter, {last:,.0f} µs in the last"
    if last > factor * first + slack_us:
        return False, f"backlog grew: {ends}"
    if light_us is not None and last > level * light_us + slack_us:
        return False, f"backlog stands: {ends}, {light_us:,.0f} µs at light load"
    return True, f"kept up: {ends}"


def search_sustainable(probe, start: float, *, lowest: float, max_probes: int,
                       known: list[tuple[int, bool, str]] = (), step: float = SUSTAIN_STEP,
                       resolution: float = SUSTAIN_RESOLUTION
                       ) -> tuple[int | None, int | None, list[tuple[int, bool, str]]]:
    """The highest offered rate found sustained, searched from ``start``.

    ``probe(rate)`` runs a short open-loop phase and returns :func:`keeps_up`'s
    ``(kept_up, reason)``; ``known`` holds verdicts already in hand, ``(rate,
    kept_up, reason)`` (the fixed rates' phases). The bracket is the highest
    rate sustained under the lowest one that failed. ``start`` (the closed-loop
    rate: with 2,000 orders waiting the engine never idles, so an open loop
    rarely does better) is probed first if inside it; then, with no rate
    sustained yet, ``step`` times the lowest failed (never under ``lowest``), with
    none failed yet, the highest sustained over ``step``, and with both, their
    geometric mean, until they are within ``resolution`` of each other or
    ``max_probes`` probes have run.

    Returns ``(highest sustained or None, lowest failed or None, trail)``, the
    trail each probe's ``(rate, kept_up, reason)`` in order (``known`` not in it).
    """
    trail: list[tuple[int, bool, str]] = []
    bad = min((r for r, ok, _ in known if not ok), default=None)
    good = max((r for r, ok, _ in known if ok and (bad is None or r < bad)), default=None)
    rate = round(start)
    while len(trail) < max_probes:
        if good is not None and bad is not None:
            if bad <= good * (1 + resolution):
                break
            if not good < rate < bad:
                rate = round((good * bad) ** 0.5)
        elif bad is not None and rate >= bad:
            if bad <= lowest:
                break
            rate = max(round(bad * step), round(lowest))
        elif good is not None and rate <= good:
            rate = round(good / step)
        if rate < lowest:
            break
        ok, why = probe(rate)
        trail.append((rate, ok, why))
        if ok:
            good = rate
        else:
            bad = rate
    return good, bad, trail


def confirm_sustainable(measure, candidate: int | None, *, lowest: float, tries: int,
                        step: float = SUSTAIN_RETRY_STEP):
    """The measured phase at the searched rate, stepping down until one is sustained.

    ``measure(rate)`` runs the reported (longer) phase and returns
    ``(kept_up, reason, result)``. A rate sustained by the short search's probe
    but not over the longer phase is not sustainable (its backlog grows slowly):
    the next rate down by ``step`` is measured, at most ``tries`` phases, no rate
    under ``lowest``. Returns ``(rate or None, that phase's result or None, trail)``.
    """
    trail: list[tuple[int, bool, str]] = []
    rate = candidate
    while rate is not None and rate >= lowest and len(trail) < tries:
        ok, why, result = measure(rate)
        trail.append((rate, ok, why))
        if ok:
            return rate, result, trail
        rate = round(rate * step)
    return None, None, trail


def sustainable_phase(endpoint: str, start: float, *, probe_s: float, phase_s: float,
                      max_probes: int, tries: int, lowest: float, light_us: float | None,
                      known: list[tuple[int, bool, str]] = (), spin: bool = True) -> dict:
    """The maximum sustainable rate against the engine at ``endpoint``, and its phase.

    :func:`search_sustainable` from ``start`` with open-loop probes of
    ``probe_s`` seconds (and the fixed rates' verdicts, ``known``), then
    :func:`confirm_sustainable` with phases of ``phase_s``, each judged by
    :func:`keeps_up` against ``light_us`` (the engine's median at the lowest
    fixed rate). Before each measured phase the
    echo floor gets its own phase at the same rate (a fresh echo server, the
    engine idle in its process: at most a few per cent of a core, which can
    only slow that floor, and :class:`BestFloor` then keeps the one measured
    after the engine stops).

    Returns ``rate`` (None if none was sustained), ``run`` and ``floor_run`` (the
    engine's and the floor's :func:`open_loop` results at it), ``candidate`` (the
    search's), ``failed`` (the lowest rate a probe found not sustained) and the
    ``search`` and ``confirm`` trails (``known`` and ``light_us`` as given).
    """
    probes = iter(range(max_probes))

    def probe(rate: int) -> tuple[bool, str]:
        r = open_loop(endpoint, orders(max(1, int(rate * probe_s)), f"s{next(probes)}x"), rate,
                      echo=False, spin=spin)
        return keeps_up(r["ack_us"], r["rejects"], light_us=light_us)

    def measure(rate: int):
        n = max(1, int(rate * phase_s))
        echo, echo_endpoint = start_echo()
        try:
            floor_run = open_loop(echo_endpoint, orders(n, f"fs{rate}x"), rate, echo=True,
                                  spin=spin)
        finally:
            echo.kill()
            echo.wait(10)
        run = open_loop(endpoint, orders(n, f"S{rate}x"), rate, echo=False, spin=spin)
        ok, why = keeps_up(run["ack_us"], run["rejects"], light_us=light_us)
        return ok, why, (run, floor_run)

    candidate, failed, search = search_sustainable(probe, start, lowest=lowest,
                                                   max_probes=max_probes, known=known)
    rate, result, confirm = confirm_sustainable(measure, candidate, lowest=lowest, tries=tries)
    run, floor_run = result or (None, None)
    return {"rate": rate, "run": run, "floor_run": floor_run, "candidate": candidate,
            "failed": failed, "search": search, "confirm": confirm, "light_us": light_us,
            "known": list(known)}


#: The percentiles reported, each with the floor's and the engine's addition over it.
PERCENTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


def phase_figures(rate: int, run: dict, floor: "HdrHistogram | BestFloor",
                  key: str | None = None, label: str | None = None,
                  light_us: float | None = None) -> tuple[dict, list[list]]:
    """Figures and table rows of one offered rate: the acknowledgement's and the fill's
    percentiles, each beside the echo floor's at the same rate and the latency the
    engine adds over it (``run`` is :func:`open_loop`'s result against the engine),
    and whether the engine kept up (:func:`keeps_up`, ``light_us`` its median at
    light load).

    The figures are named ``..._at_<key>`` (``key``: the rate by default;
    ``sustainable`` for the maximum sustainable rate's phase) and the rows
    ``<label> ack`` / ``<label> fill`` (``label``: ``1,000/s`` by default).
    """
    key = str(rate) if key is None else key
    label = f"{rate:,}/s" if label is None else label
    kept_up, _ = keeps_up(run["ack_us"], run["rejects"], light_us=light_us)
    figures: dict = {f"rejects_at_{key}": run["rejects"], f"kept_up_at_{key}": kept_up}
    rows = []
    for kind, what, answered, verdict in (
            ("ack", "ack", f"{run['acks']}/{run['sent']}",
             "yes" if kept_up else "no"),
            ("fill", "fill (marketable)", f"{run['fills']}", "")):
        hist = run[kind]
        row = [f"{label} {what}"]
        row += [pct(hist, p) for p in PERCENTILES.values()]
        row += [pct(floor, p) for p in PERCENTILES.values()]
        row += [pct(hist, p) - pct(floor, p) for p in PERCENTILES.values()]
        rows.append(row + [answered, verdict])
        # (the acknowledgement's added figures keep their first names: added_p50_us_at_...)
        added = "added" if kind == "ack" else "fill_added"
        for name, p in PERCENTILES.items():
            figures[f"{kind}_{name}_us_at_{key}"] = pct(hist, p)
            figures[f"{added}_{name}_us_at_{key}"] = pct(hist, p) - pct(floor, p)
    for name, p in PERCENTILES.items():
        figures[f"floor_{name}_us_at_{key}"] = pct(floor, p)
    figures[f"acked_ratio_at_{key}"] = run["acks"] / run["sent"]
    return figures, rows


class BestFloor:
    """The echo floor measured twice, before the engine's run and after it: at each
    percentile the lower of the two.

    Minutes apart on a shared machine, one floor run can land in a noisy spell
    the engine's run missed (seen: a floor p99 of 19 ms against the engine's 8 ms
    at 1,000/s), and a slow floor flatters the latency the engine adds over it.
    Taking the floor at its best never does: it can only make the engine's
    added latency larger. (A duck-typed histogram for :func:`pct`.)
    """

    def __init__(self, *runs: HdrHistogram):
        self.runs = [h for h in runs if h.get_total_count()]

    def get_total_count(self) -> int:
        return sum(h.get_total_count() for h in self.runs)

    def get_value_at_percentile(self, p: float) -> int:
        return min(h.get_value_at_percentile(p) for h in self.runs)


def start_echo() -> tuple[subprocess.Popen, str]:
    """The floor's server (:data:`ECHO_SERVER`) in its own process; (process, endpoint)
    once it serves."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, endpoint], stdout=subprocess.PIPE)
    echo.stdout.readline()
    return echo, endpoint


def measure_floor(rates: list[int], durations: dict, n_max: int, spin: bool,
                  tag: str, extra: dict | None = None) -> tuple[dict, float, float]:
    """One run of the raw pyzmq DEALER/ROUTER echo, the same client loop and messages as
    the engine's: the open-loop histograms by rate, the closed-loop single-message rate
    and the rate of orders inside bulks of 100. ``tag`` keeps its cl_ord_ids apart.

    ``extra`` maps more keys of the histograms to ``(rate, seconds)`` phases (the
    maximum sustainable rate's, ``"sustainable"``), run after the fixed rates'."""
    echo, endpoint = start_echo()
    floor = {}
    phases = [(rate, rate, durations[rate]) for rate in rates]
    phases += [(key, rate, secs) for key, (rate, secs) in (extra or {}).items()]
    try:
        for key, rate, secs in phases:
            r = open_loop(endpoint, orders(int(rate * secs), f"f{tag}{key}x"), rate,
                          echo=True, spin=spin)
            floor[key] = r["ack"]
        # The throughput floor: the same closed loop against the echo. The
        # client (one Python process, decoding every reply) and the kernel's
        # loopback are shared by both runs, so this is the most any server
        # could show on this machine with this load generator.
        floor_max, _ = max_rate(endpoint, orders(n_max, f"fm{tag}"), window=2000, echo=True)
        # The bulk figure's floor: the same bulks of 100 echoed, the same loop.
        floor_bulk, _ = max_rate(endpoint, orders(n_max, f"fk{tag}"), window=5000, bulk=100,
                                 echo=True)
    finally:
        echo.kill()
        echo.wait(10)
    return floor, floor_max, floor_bulk


def bulk_figures(bulk: float, floor_bulk: float) -> dict:
    """The bulk rate's figures: orders/s inside bulks of 100, beside the echo floor's
    with the same bulks and client loop, and their ratio."""
    return {"bulk100_orders_per_s": round(bulk),
            "floor_bulk100_orders_per_s": round(floor_bulk),
            "bulk100_ratio_vs_floor": round(bulk / floor_bulk, 3) if floor_bulk else None}


def sustainable_figures(sustain: dict, closed_loop: float, floor_after: HdrHistogram | None,
                        floor_light_us: float | None = None
                        ) -> tuple[dict, list[list], list[list]]:
    """The maximum sustainable rate's figures, latency table rows and search rows.

    ``sustain`` is :func:`sustainable_phase`'s result, ``closed_loop`` the
    closed-loop single-order rate it started from, ``floor_after`` the echo's
    phase at the same rate after the engine stopped (None if none was run),
    ``floor_light_us`` the floor's median at light load (whether the echo kept up
    too: if not, the client, not the engine, set the rate). The
    percentiles are :func:`phase_figures`' under the key ``sustainable``, beside
    the floor at its best of the phase before the engine's and the one after;
    with no rate sustained the rate is None and there are no percentiles.
    """
    rate = sustain["rate"]
    figures: dict = {"sustainable_rate_orders_per_s": rate,
                     "sustainable_ratio_vs_closed_loop":
                         round(rate / closed_loop, 3) if rate and closed_loop else None,
                     "sustainable_search": [[r, ok] for r, ok, _ in sustain["search"]],
                     "sustainable_confirm": [[r, ok] for r, ok, _ in sustain["confirm"]]}
    trail = [["fixed-rate phase", r, "yes" if ok else "no", why]
             for r, ok, why in sustain.get("known", ())]
    trail += [[f"probe {k + 1}", r, "yes" if ok else "no", why]
              for k, (r, ok, why) in enumerate(sustain["search"])]
    trail += [[f"measured phase {k + 1}", r, "yes" if ok else "no", why]
              for k, (r, ok, why) in enumerate(sustain["confirm"])]
    if not rate:
        trail.append(["result", "none", "-", "no rate from the search was sustained over the "
                      "measured phase" if sustain["confirm"] else "no probe was sustained"])
        return figures, [], trail
    floor_run = sustain["floor_run"]
    floor = BestFloor(*[h for h in (floor_run["ack"], floor_after) if h is not None])
    phase, rows = phase_figures(rate, sustain["run"], floor, key="sustainable",
                                label=f"{rate:,}/s (max sustainable)",
                                light_us=sustain.get("light_us"))
    figures.update(phase)
    figures["floor_kept_up_at_sustainable"] = keeps_up(floor_run["ack_us"],
                                                       light_us=floor_light_us)[0]
    return figures, rows, trail


def verdict(added_us: float, target_us: float) -> str:
    """Whether an added latency meets its target; a negative one proves nothing.

    The engine's run and the floor's are minutes apart on a shared machine:
    when the floor came out slower than the engine, the machine's load, not
    the engine, decided both figures, and the run is no evidence either way.
    """
    if added_us < 0:
        return "no verdict (floor slower than the engine: machine overloaded)"
    return "yes" if added_us <= target_us else "no"


def scan_evict_one(server: IntakeServer, principal: str | None = None) -> bool:
    """The baseline: intake's eviction before its idle-session heap, a scan of every session."""
    detached = [s for s in server.sessions.values() if (not s.connected or s.timed_out)
                and (principal is None or s.principal == principal)]
    if not detached:
        return False
    server._forget(min(detached, key=lambda s: s.last_recv_ns), "evicted")
    return True


def eviction_server(n_sessions: int) -> tuple[IntakeServer, _Listener]:
    """An intake server (not started) holding ``n_sessions``: every other one detached,
    as a long run's reconnecting clients leave them, at ``max_sessions``."""
    server = IntakeServer(IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"],
                                       allow_plaintext=True, max_sessions=n_sessions,
                                       max_sessions_per_key=n_sessions, request_rate=0),
                          SecurityConfig(plaintext_accounts=["*"]), Handler())
    listener = _Listener(server, server._make_socket(), curve=False)
    server._listeners.append(listener)
    for i in range(n_sessions):
        route = i.to_bytes(4, "big")
        server._open_session(listener, route, "", now=1_000 + i)
        if i % 2:
            listener.depart(listener.routes[route], route)
    return server, listener


def session_eviction(n_sessions: int = 10_000, opened: int = 2_000) -> dict:
    """Per new session at ``max_sessions``: what evicting the longest silent idle one costs,
    intake's (``IntakeServer._evict_one``) against :func:`scan_evict_one`, each on a
    server of its own built alike, ``opened`` new sessions each (µs per new session)."""
    def run(evict) -> float:
        server, listener = eviction_server(n_sessions)
        try:
            def new_sessions() -> None:
                for i in range(opened):
                    assert evict(server)
                    server._open_session(listener, (n_sessions + i).to_bytes(4, "big"), "",
                                         now=10**9 + i, evict=False)
            seconds, _ = best_of(new_sessions, 1)
            return seconds / opened * 1e6
        finally:
            listener.close()
            server.context.term()

    scan = min(run(scan_evict_one) for _ in range(3))
    heap = min(run(IntakeServer._evict_one) for _ in range(3))
    return {"sessions": n_sessions, "evict_us": heap, "scan_evict_us": scan,
            "speedup": scan / heap}


def watchdog_rounds(n_sessions: int = 10_000, rounds: int = 48) -> dict:
    """One watchdog round at ``n_sessions`` (the default timings: heartbeats every second,
    timeout 3 s, retention 1 h, a round every 250 ms), intake's
    (``IntakeServer._check_sessions``) against :func:`scan_check_sessions`, each on a
    server of its own with the same history, µs per round over ``rounds`` rounds.

    Half the sessions are detached and timed out, last heard from over the
    retention hour (so one expires every few rounds); the other half are
    connected and send a heartbeat every second, each at its own phase, read by
    intake's own path between the rounds (not timed), one in a hundred of them
    going silent during the run (so timing out).
    """
    second = 1_000_000_000
    period = second // 4
    t0 = 10 * 3600 * second
    heartbeat = msgspec.msgpack.encode(Heartbeat())

    n_idle = n_sessions // 2
    n_connected = n_sessions - n_idle

    def run(check) -> tuple[float, list]:
        server = IntakeServer(IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"],
                                           allow_plaintext=True, max_sessions=n_sessions,
                                           max_sessions_per_key=n_sessions, request_rate=0),
                              SecurityConfig(plaintext_accounts=["*"]), Handler())
        server._draining = True  # replies stay in the outbox (no loop runs): dropped below
        listener = _Listener(server, server._make_socket(), curve=False)
        server._listeners.append(listener)
        retention = server._retention_ns
        try:
            for k in range(n_idle):  # heard from between 1 h and 4 s before t0
                route = k.to_bytes(4, "big")
                heard = t0 - retention + 5 * second + k * (retention - 9 * second) // n_idle
                server._open_session(listener, route, "", now=heard)
                listener.depart(listener.routes[route], route)
            by_quarter: list[list[bytes]] = [[], [], [], []]
            for k in range(n_connected):  # heard from within the second before t0
                route = (n_idle + k).to_bytes(4, "big")
                phase = k * second // n_connected
                server._open_session(listener, route, "", now=t0 - second + phase)
                if k % 100 != 1:  # (one in a hundred goes silent)
                    by_quarter[phase * 4 // second].append(route)
            check(server, t0)  # (the detached ones time out: not timed)
            elapsed = 0.0
            for r in range(1, rounds + 1):
                now = t0 + r * period
                for route in by_quarter[(r - 1) % 4]:  # a heartbeat read in this quarter second
                    server._on_frames(listener, [route, heartbeat], "", now - period // 2, 7)
                server._outbox.clear()
                start = time.perf_counter()
                check(server, now)
                elapsed += time.perf_counter() - start
            return elapsed / rounds * 1e6, sorted((s._opened, s.timed_out)
                                                  for s in server.sessions.values())
        finally:
            listener.close()
            server.context.term()

    level = intake_log.level
    intake_log.setLevel(logging.ERROR)  # (the silent sessions' warnings, on both sides)
    try:
        scan = min((without_gc(lambda: run(scan_check_sessions)) for _ in range(3)),
                   key=lambda r: r[0])
        heap = min((without_gc(lambda: run(IntakeServer._check_sessions)) for _ in range(3)),
                   key=lambda r: r[0])
    finally:
        intake_log.setLevel(level)
    assert heap[1] == scan[1], "intake's round and the scan chose differently"
    expired = n_sessions - len(heap[1])
    assert expired and sum(timed_out for _, timed_out in heap[1]) == n_idle - expired + 50, \
        "the history did not time out and expire what it should"
    return {"sessions": n_sessions, "round_us": heap[0], "scan_round_us": scan[0],
            "speedup": scan[0] / heap[0]}


def pct(h: HdrHistogram, p: float) -> float:
    return float(h.get_value_at_percentile(p)) if h.get_total_count() else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--client", choices=("spin", "block"), default="spin",
                        help="between sends the client busy-waits (default: sends on time, "
                             "replies read as they land, a core taken) or sleeps on its socket")
    parser.add_argument("--eviction-only", action="store_true",
                        help="only the in-process cases: evicting a session at max_sessions, "
                             "and the sessions' watchdog round")
    args = parser.parse_args(argv)
    eviction = session_eviction()
    eviction_row = [f"{eviction['sessions']:,} sessions", round(eviction["evict_us"], 2),
                    round(eviction["scan_evict_us"], 2), f"{eviction['speedup']:.0f}x"]
    eviction_figures = {"eviction_sessions": eviction["sessions"],
                        "eviction_us_per_new_session": round(eviction["evict_us"], 3),
                        "eviction_scan_us_per_new_session": round(eviction["scan_evict_us"], 3),
                        "eviction_ratio_scan_over_heap": round(eviction["speedup"], 1)}
    eviction_title = ("A new session at intake.max_sessions: evicting the longest silent idle "
                      "one (µs per new session), against the old scan of every session")
    eviction_columns = ["held", "intake (heap)", "scan (baseline)", "ratio"]
    watchdog = watchdog_rounds()
    watchdog_row = [f"{watchdog['sessions']:,} sessions", round(watchdog["round_us"], 2),
                    round(watchdog["scan_round_us"], 2), f"{watchdog['speedup']:.0f}x"]
    eviction_figures.update({
        "watchdog_sessions": watchdog["sessions"],
        "watchdog_round_us": round(watchdog["round_us"], 3),
        "watchdog_scan_round_us": round(watchdog["scan_round_us"], 3),
        "watchdog_ratio_scan_over_intake": round(watchdog["speedup"], 1)})
    watchdog_title = ("The sessions' watchdog round (timeouts, retention), half the sessions "
                      "heartbeating and half detached (µs per round), against the old visit of "
                      "every session")
    watchdog_columns = ["held", "intake (sessions due)", "scan (baseline)", "ratio"]
    if args.eviction_only:
        table(eviction_title, eviction_columns, [eviction_row])
        table(watchdog_title, watchdog_columns, [watchdog_row])
        emit({"benchmark": "e2e", "machine": machine(), **eviction_figures})
        return 0
    spin = args.client == "spin"
    secs = 1.0 if args.quick else 3.0
    rates = [1_000, 10_000, 50_000]
    # An overloaded phase leaves a backlog of orders in the engine; running
    # every order of a 50,000/s phase costs minutes, so the quick run offers
    # the high rates for a fraction of a second.
    durations = {1_000: secs, 10_000: secs / 2, 50_000: secs / 10}
    work = Path(tempfile.mkdtemp(prefix="kronos-bench-e2e-"))
    figures: dict = {"benchmark": "e2e", "transport": "tcp loopback", "machine": machine(),
                     "client": args.client}
    rows = []

    # -- the floor (raw pyzmq DEALER/ROUTER echo, same client loop, same messages), before
    # the engine and again after it: each figure is the floor at its best (BestFloor)
    n_max = 10_000 if args.quick else 60_000
    before = measure_floor(rates, durations, n_max, spin, "a")

    # -- the engine
    port = free_port()
    engine = start_engine(port, work)
    endpoint = f"tcp://127.0.0.1:{port}"
    runs = {}
    try:
        for rate in rates:
            runs[rate] = open_loop(endpoint, orders(int(rate * durations[rate]), f"r{rate}x"),
                                   rate, echo=False, spin=spin)
        single, _ = max_rate(endpoint, orders(n_max, "m"), window=2000)
        bulk, _ = max_rate(endpoint, orders(n_max, "k"), window=5000, bulk=100)
        # -- the maximum sustainable rate (open loop), searched from the closed-loop
        # rate, then measured over a phase twice a probe's, its floor just before it
        # (the fixed rates' phases are verdicts already: they bracket the search)
        light_us = pct(runs[rates[0]]["ack"], 50)
        known = [(rate, *keeps_up(runs[rate]["ack_us"], runs[rate]["rejects"],
                                  light_us=light_us)) for rate in rates]
        sustain = sustainable_phase(endpoint, single, probe_s=secs / 2, phase_s=secs,
                                    max_probes=5 if args.quick else 8,
                                    tries=3 if args.quick else 4, lowest=rates[0],
                                    light_us=light_us, known=known, spin=spin)
    finally:
        engine.kill()
        engine.wait(10)

    s_rate = sustain["rate"]
    after = measure_floor(rates, durations, n_max, spin, "b",
                          extra={"sustainable": (s_rate, secs)} if s_rate else None)
    floor = {rate: BestFloor(before[0][rate], after[0][rate]) for rate in rates}
    floor_max, floor_bulk = max(before[1], after[1]), max(before[2], after[2])
    figures["floor_runs"] = 2
    figures["floor_max_msgs_per_s"] = round(floor_max)
    for rate in rates:
        phase, phase_rows = phase_figures(rate, runs[rate], floor[rate], light_us=light_us)
        figures.update(phase)
        rows += phase_rows
    figures["max_single_orders_per_s"] = round(single)
    figures["max_single_ratio_vs_floor"] = round(single / floor_max, 3)
    s_figures, s_rows, s_trail = sustainable_figures(sustain, single, after[0].get("sustainable"),
                                                     pct(floor[rates[0]], 50))
    figures.update(s_figures)
    rows += s_rows
    figures.update(bulk_figures(bulk, floor_bulk))
    figures.update(eviction_figures)

    table("Engine round trip over TCP loopback (µs), open loop, against the raw pyzmq echo floor",
          ["offered load", "p50", "p99", "p99.9", "floor p50", "floor p99", "floor p99.9",
           "added p50", "added p99", "added p99.9", "answered", "kept up"], rows)
    table("Maximum sustainable rate: the highest offered rate (open loop) at which every order "
          "is acknowledged and no backlog builds up (the last quarter's median ack at most "
          f"{SUSTAIN_GROWTH_FACTOR:g}x the first quarter's and {SUSTAIN_LEVEL_FACTOR:g}x the "
          f"median at {rates[0]:,}/s, each + {SUSTAIN_SLACK_US:,} µs); searched from the "
          f"closed-loop rate with {secs / 2:g} s probes, then measured over {secs:g} s",
          ["step", "offered rate", "kept up", "why"], s_trail)
    t10 = figures.get("added_p50_us_at_10000"), figures.get("added_p99_us_at_10000")
    table("Throughput and targets (the echo floor: same client loop, same requests)",
          ["figure", "measured", "echo floor", "x floor", "target", "met"], [
        ["single-order messages/s (closed loop, 2,000 in flight)", single, floor_max,
         f"{single / floor_max:.2f}x", TARGET_RATE, single >= TARGET_RATE],
        ["max sustainable orders/s (open loop, kept up: see above)", s_rate or "none", "-",
         "-", TARGET_RATE, bool(s_rate and s_rate >= TARGET_RATE)],
        ["orders/s inside BulkNewOrders of 100", bulk, floor_bulk,
         f"{bulk / floor_bulk:.2f}x", "-", "-"],
        ["added p50 at 10,000/s (µs)", t10[0], "-", "-", TARGET_ADDED_P50_US,
         verdict(t10[0], TARGET_ADDED_P50_US)],
        ["added p99 at 10,000/s (µs)", t10[1], "-", "-", TARGET_ADDED_P99_US,
         verdict(t10[1], TARGET_ADDED_P99_US)],
    ])
    table(eviction_title, eviction_columns, [eviction_row])
    table(watchdog_title, watchdog_columns, [watchdog_row])
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
