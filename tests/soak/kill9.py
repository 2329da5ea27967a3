"""A kill -9 soak of the engine: random order flow, the engine killed at random moments and
restarted on its journal, and what a client and the platform were told checked after each.

    .venv/bin/python -m tests.soak.kill9 [--rounds 8] [--seed 1] [--clients 2] [--fsync group]
                                         [--gateways] [--outages] [--checkpoints]

Not part of the test suite (it runs for minutes, on the simulator's random flow): a check
to run before a release, or after a change to the journal, recovery, intake or the client.
The suite's own kill -9 tests (tests/integration/test_engine_recovery.py and the tests it
names) are short and deterministic; this one runs long and mixes everything at once:

* clients (``--clients``, 2 by default) kept across every restart, each resuming its own
  session: every seq of each session arrives, once, in order; the second and later ones
  cancel and replace the first one's orders too (an answer in two sessions);
* new orders (resting, IOC, market), bulks, cancels and replaces on two accounts, and a
  kill switch on one of them engaged and released now and then;
* every execution report keeps ``qty == cum_qty + leaves_qty`` while working, never lowers
  ``cum_qty`` and never follows a terminal one; no exec id twice;
* after each restart: every order the client heard of is there, its ``cum_qty`` not
  lower, a done order exactly as the client last saw it; its children's fills add up to
  its own; the trade history holds every fill the client saw, no exec id twice, and each
  order's fills add up to its ``cum_qty``; the kill switch is as the last acknowledged
  request left it;
* at the end, the client's last report of every order is the engine's state;
* with ``--gateways``: the ZeroMQ gateway (the embedded default), a PostgreSQL and a NATS
  JetStream gateway run all along (the machine's servers). Two ``Subscriber``\ s of the
  ZeroMQ gateway, kept across every restart (gaps filled by the gateway's replay service),
  follow everything and the fills' topics. At the end each destination holds every fill of
  the trade history exactly once (the stream after de-duplication by ``seq``, in ``seq``
  order); the subscribers got every fill once, in ``seq`` order (by symbol for the fills'
  topics), and the one following everything the same events as the NATS stream; the
  trade store's ``orders`` table holds every order as the engine last gave it;
* with ``--outages`` (implies ``--gateways``): the gateways reach PostgreSQL and NATS
  through TCP proxies the soak cuts and restores at random moments, independently of the
  kill -9s (a destination may be down across a restart), so that each gateway catches up
  from the journal after outages and restarts alike; the same end check;
* with ``--checkpoints``: in each round, at a random moment of the load, ``kronos-exec
  journal checkpoint`` checkpoints the journal the running engine is writing (at its last
  record then), so that later restarts start from a checkpoint and replay only the
  journal after it (engine.checkpoint); the checks above are the same, and the engine's
  log must show the restarts loading them.

Prints one line per round and the problems found; the last line is a JSON object of its
figures (``problems`` 0 is a pass). Exit status 1 if any problem was found.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from engine.client import Client
from engine.messages import (AdminReply, ExecType, ExecutionReport, KillSwitch, OrderStatusReply,
                             TradeHistoryReply)
from tests.integration.engine_harness import config_text, free_port, start_subprocess
from gateways.zmq_pub import Subscriber
from tests.unit.gateways.helpers import TcpProxy, with_port

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "sim" / "configs" / "default.toml"   # the default market, with its own flow
TERMINAL = {"FILLED", "CANCELED", "REJECTED", "EXPIRED"}
PG_DSN = os.environ.get("KRONOS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class Soak:
    """The client's view of the engine, and the checks against it."""

    def __init__(self, endpoint: str, rng: random.Random, problems: list[str], *,
                 switch: bool = True, others: tuple[Soak, ...] = ()):
        """``switch``: this client toggles the kill switch; ``others``: clients whose working
        orders this one cancels and replaces too (same accounts, other sessions)."""
        self.rng = rng
        self.switch, self.others = switch, others
        self.client = Client(endpoint)
        self.last: dict[str, ExecutionReport] = {}  # order_id -> the latest report of it
        self.fills: dict[str, str] = {}             # exec_id -> order_id
        self.own: set[str] = set()                  # ids of the orders this client sent
        self.seqs: list[int] = []
        self.problems = problems
        self.engaged = False                         # the kill switch on DEMO2, as acknowledged
        self.pending: tuple[str, str] | None = None  # (req_id, action) not yet answered
        self.toggles = self.switch_checks = 0

    def bad(self, text: str) -> None:
        """Record a problem (and show it at once)."""
        self.problems.append(text)
        print("PROBLEM:", text, flush=True)

    # ------------------------------------------------------------ receiving
    def pump(self, seconds: float) -> None:
        """Receive for ``seconds``, checking every report."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.take(self.client.recv(0.02))
            except TimeoutError:
                continue

    def until(self, predicate, timeout: float = 10):
        """Receive (checking everything) until ``predicate(msg)``; returns that message."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.recv(max(0.0, deadline - time.monotonic()))
            self.take(msg)
            if predicate(msg):
                return msg

    def take(self, msg) -> None:
        """Account for one message from the engine."""
        self.seqs.append(msg.seq)
        if isinstance(msg, ExecutionReport):
            self.on_report(msg)
        elif isinstance(msg, AdminReply) and self.pending and msg.req_id == self.pending[0]:
            if msg.ok:
                self.engaged = self.pending[1] == "engage"
            self.pending = None

    def on_report(self, r: ExecutionReport) -> None:
        """Check one execution report against the ones before it."""
        qty, cum, leaves = int(r.qty), int(r.cum_qty), int(r.leaves_qty)
        terminal = r.ord_status.name in TERMINAL
        if not terminal and qty != cum + leaves:
            self.bad(f"{r.cl_ord_id}: qty {qty} != cum {cum} + leaves {leaves}")
        if terminal and leaves:
            self.bad(f"{r.cl_ord_id}: {r.ord_status.name} with leaves {leaves}")
        prev = self.last.get(r.order_id)
        if prev is not None and r.exec_type != ExecType.REJECTED:
            if int(prev.cum_qty) > cum:
                self.bad(f"{r.cl_ord_id}: cum_qty {prev.cum_qty} -> {cum}")
            if prev.ord_status.name in TERMINAL:
                self.bad(f"{r.cl_ord_id}: {r.exec_type.name} after {prev.ord_status.name}")
        if r.exec_type == ExecType.REJECTED and (prev is not None or r.orig_cl_ord_id):
            return  # a refused cancel or replace: the order is as its last report said
        if prev is None and r.orig_cl_ord_id is None:
            self.own.add(r.order_id)  # (not a copy of an answer to this client's request)
        if r.exec_id:
            if r.exec_id in self.fills:
                self.bad(f"exec_id {r.exec_id} twice")
            self.fills[r.exec_id] = r.order_id
        self.last[r.order_id] = r

    # ------------------------------------------------------------ sending
    def load(self, prefix: str, n: int) -> None:
        """Send ``n`` random requests, receiving as they go."""
        rng, client = self.rng, self.client
        working = self.working()
        for i in range(n):
            cid, account = f"{prefix}-{i}", rng.choice(["DEMO1", "DEMO2"])
            price = f"{rng.randint(49, 50)}.{rng.randint(0, 99):02d}"
            qty = str(rng.randint(1, 300))
            r = rng.random()
            if r < 0.35:
                client.new_order("AAA", rng.choice(["buy", "sell_short"]), qty, price,
                                 account=account, cl_ord_id=cid, locate=True)
            elif r < 0.45:
                client.new_order("AAA", "buy", qty, price, account=account, cl_ord_id=cid,
                                 time_in_force="ioc")
            elif r < 0.5:
                client.new_order("AAA", "buy", qty, None, account=account, cl_ord_id=cid,
                                 ord_type="market")
            elif r < 0.6:
                client.bulk([client.build_new_order(
                    "AAA", rng.choice(["buy", "sell_short"]), str(rng.randint(1, 50)), price,
                    account=account, cl_ord_id=f"{cid}b{k}", locate=True) for k in range(5)])
            elif r < 0.8 and working:
                w = rng.choice(working)
                client.cancel(w.cl_ord_id, account=w.account, cl_ord_id=cid)
            elif working:
                w = rng.choice(working)
                if rng.random() < 0.5 and int(w.qty) > 1:
                    # Fewer lots at the same price: amended where it rests, when it can be.
                    client.replace(w.cl_ord_id, account=w.account,
                                   qty=str(rng.randint(1, int(w.qty) - 1)), cl_ord_id=cid)
                else:
                    client.replace(w.cl_ord_id, account=w.account, qty=str(rng.randint(1, 400)),
                                   price=price, cl_ord_id=cid)
            if self.switch and i % 50 == 7 and self.pending is None and rng.random() < 0.3:
                self.toggles += 1
                self.pending = (f"ks{self.toggles}", "release" if self.engaged else "engage")
                client.send(KillSwitch(req_id=self.pending[0], action=self.pending[1],
                                       scope="account", target="DEMO2"))
            if i % 10 == 0:
                self.pump(0.005)
                working = self.working()

    def working(self) -> list[ExecutionReport]:
        """Orders this client (and the ones it acts for) last saw working."""
        return [r for s in (self, *self.others) for r in s.last.values()
                if r.ord_status.name not in TERMINAL]

    def cancel_all(self) -> None:
        """Cancel every order of this client still working, and wait until none is: no
        fill comes after. (Another client's orders: their reports go to its session.)"""
        def left() -> list[ExecutionReport]:
            return [self.last[o] for o in self.own
                    if self.last[o].ord_status.name not in TERMINAL]
        for k, w in enumerate(left()):
            self.client.cancel(w.cl_ord_id, account=w.account, cl_ord_id=f"end-{id(self)}-{k}")
        deadline = time.monotonic() + 30
        while left() and time.monotonic() < deadline:
            self.pump(0.1)
        if left():
            self.bad(f"{len(left())} orders still working 30 s after their cancels")

    # ------------------------------------------------------------ after a restart
    def check_kill_switch(self, name: str) -> None:
        """A DEMO2 order is refused KILL_SWITCH exactly when the switch is engaged."""
        if not self.switch or self.pending is not None:
            return  # asked, unanswered at the kill: either state is right
        self.client.new_order("AAA", "buy", "1", "40.00", account="DEMO2", cl_ord_id=name)
        msg = self.until(lambda m: getattr(m, "cl_ord_id", None) == name)
        self.switch_checks += 1
        if (getattr(msg, "reject_name", None) == "KILL_SWITCH") != self.engaged:
            self.bad(f"kill switch engaged={self.engaged}, but {name} got {msg}")

    def status(self, r: ExecutionReport) -> OrderStatusReply:
        """The engine's answer to a status request for ``r``'s order."""
        self.client.status(r.cl_ord_id, account=r.account)
        return self.until(lambda m: isinstance(m, OrderStatusReply)
                          and m.cl_ord_id == r.cl_ord_id)

    def history(self) -> dict[str, list]:
        """Every fill the engine has, by order id."""
        by_order = collections.defaultdict(list)
        for account in ("DEMO1", "DEMO2"):
            req_id = self.client.history(account, 0, 2**62)
            last = False
            while not last:
                part = self.until(lambda m: isinstance(m, TradeHistoryReply)
                                  and m.req_id == req_id)
                if not part.complete:
                    self.bad(f"history of {account} incomplete: {part.text}")
                for fill in part.fills:
                    by_order[fill.order_id].append(fill)
                last = part.last
        return by_order

    def check_orders(self) -> dict[str, ExecutionReport]:
        """Every order the client heard of against the engine's; returns the engine's
        reports of them, by order id."""
        statuses = {}
        for order_id, seen in list(self.last.items()):
            reply = self.status(seen)
            if not reply.found:
                self.bad(f"{seen.cl_ord_id} (order {order_id}) not found")
                continue
            got = statuses[order_id] = reply.report
            if got.order_id != order_id or int(got.cum_qty) < int(seen.cum_qty):
                self.bad(f"{seen.cl_ord_id}: order {order_id} cum {seen.cum_qty} is now "
                         f"order {got.order_id} cum {got.cum_qty}")
            if seen.ord_status.name in TERMINAL and (got.ord_status, got.cum_qty, got.avg_px) \
                    != (seen.ord_status, seen.cum_qty, seen.avg_px):
                self.bad(f"{seen.cl_ord_id}: done as {seen.ord_status.name} {seen.cum_qty} "
                         f"{seen.avg_px}, now {got.ord_status.name} {got.cum_qty} {got.avg_px}")
            if sum(int(c.cum_qty) for c in reply.children) != int(got.cum_qty):
                self.bad(f"{seen.cl_ord_id}: children's fills {reply.children} are not its "
                         f"cum_qty {got.cum_qty}")
            self.last[order_id] = got
        return statuses

    def check_fills(self, statuses: dict[str, ExecutionReport], history: dict[str, list],
                    exec_ids: set[str]) -> None:
        """The trade history (taken after ``statuses``: fills only add to it meanwhile)
        against the fills this client saw and the orders' ``cum_qty``."""
        for exec_id in set(self.fills) - exec_ids:
            self.bad(f"fill {exec_id} the client saw is not in the trade history")
        for order_id, got in statuses.items():
            filled = sum(int(f.last_qty) for f in history.get(order_id, []))
            if filled < int(got.cum_qty) or (got.ord_status.name in TERMINAL
                                             and filled != int(got.cum_qty)):
                self.bad(f"{got.cl_ord_id}: history fills {filled}, cum_qty {got.cum_qty}")

    def check_seqs(self) -> None:
        """One session all along: every seq once, in order, either here or among those the
        client took for itself (its probes' acks, the session probe's at 1 among them), and
        no gap the client gave up on."""
        if self.client.gaps or self.client.lost:
            self.bad(f"client gaps {self.client.gaps}, lost {self.client.lost}")
        got = [s for s in self.seqs if s]
        own = set(self.client.own_seqs)
        expected = [s for s in range(1, max(got) + 1) if s not in own]
        if got != expected:
            self.bad(f"session seqs not 1..{max(got)} less the client's own {len(own)}: "
                     f"{len(got) - len(set(got))} repeats, {len(set(expected) - set(got))} "
                     f"missing, {len(set(got) & own)} of the client's own")


def check_state(soaks: list[Soak]) -> dict[str, list]:
    """Every client's orders, then the trade history (the same for all: asked once) against
    each; returns the history."""
    statuses = [soak.check_orders() for soak in soaks]
    history = soaks[0].history()
    exec_ids = [f.exec_id for fills in history.values() for f in fills]
    if len(exec_ids) != len(set(exec_ids)):
        soaks[0].bad("an exec_id twice in the trade history")
    for soak, seen in zip(soaks, statuses):
        soak.check_fills(seen, history, set(exec_ids))
    return history


def gateways_toml(tag: str, pub: int, replay: int, proxies: dict[str, TcpProxy] | None = None) -> str:
    """The three gateways' tables (the ZeroMQ one on ports ``pub`` and ``replay``); PostgreSQL
    and NATS through ``proxies`` ("postgres", "nats") when given."""
    dsn, nats = PG_DSN, "nats://127.0.0.1:4222"
    if proxies:
        dsn = with_port(PG_DSN, "127.0.0.1", proxies["postgres"].port)
        nats = f"nats://127.0.0.1:{proxies['nats'].port}"
    return f"""
[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:{pub}"
replay_endpoint = "tcp://127.0.0.1:{replay}"

[[gateways]]
type = "postgres"
dsn = "{dsn}"
schema = "{tag}"

[[gateways]]
type = "nats"
servers = ["{nats}"]
stream = "{tag.upper()}"
subject_prefix = "{tag}"
"""


class Subscribers:
    """The ZeroMQ gateway's subscribers, kept across every restart on threads of their own:
    one to every event, one to the fills' topics only."""

    def __init__(self, pub: int, replay: int):
        self.events: dict[str, list] = {"all": [], "fills": []}
        self.stats: dict[str, dict] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name, topics, pub, replay),
                                          daemon=True)
                         for name, topics in (("all", None), ("fills", [b"fill."]))]
        for thread in self._threads:
            thread.start()

    def _run(self, name: str, topics: list[bytes] | None, pub: int, replay: int) -> None:
        with Subscriber(f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}", topics=topics,
                        start_seq=0, replay_timeout_ms=2000) as sub:
            while not self._stop.is_set():
                self.events[name].extend(sub.recv(timeout_ms=200))
            self.stats[name] = {"gaps": sub.gaps, "replayed": sub.replayed,
                                "duplicates": sub.duplicates}

    def wait_for(self, fills: set[str], timeout: float = 60) -> None:
        """Until both have every fill in ``fills`` (or ``timeout``), then a little longer
        for anything after them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(fills <= {e.exec_id for e in list(events) if e.type == "fill"}
                   for events in self.events.values()):
                break
            time.sleep(0.5)
        time.sleep(2)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def check(self, soak: Soak, fills: set[str], stream_seqs: list[int]) -> dict:
        """Every fill once and in order; everything as the NATS stream has it (``stream_seqs``,
        de-duplicated)."""
        for name, events in self.events.items():
            by_symbol = collections.defaultdict(list)
            for event in events:
                by_symbol[event.symbol if name == "fills" else ""].append(event.seq)
            if any(seqs != sorted(set(seqs)) for seqs in by_symbol.values()):
                soak.bad(f"zmq subscriber {name}: seqs not increasing or repeated")
            got = [e.exec_id for e in events if e.type == "fill"]
            if sorted(got) != sorted(fills):
                soak.bad(f"zmq subscriber {name}: {len(got)} fills ({len(set(got))} distinct), "
                         f"history has {len(fills)}")
        seqs = [e.seq for e in self.events["all"]]
        if seqs != stream_seqs:
            soak.bad(f"zmq subscriber all: {len(seqs)} events, the NATS stream {len(stream_seqs)}; "
                     f"first difference at {next((a, b) for a, b in zip(seqs + [None], stream_seqs + [None]) if a != b)}")
        return {"zmq_events": len(seqs), "zmq_fills": len(self.events["fills"]),
                **{f"zmq_{name}_{key}": value for name, stats in self.stats.items()
                   for key, value in stats.items()}}


class Outages:
    """The gateways' destinations behind proxies, cut and restored at random moments."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.proxies = {"postgres": TcpProxy(("127.0.0.1", 5432)).start(),
                        "nats": TcpProxy(("127.0.0.1", 4222)).start()}
        self.down: set[str] = set()
        self.cuts = 0
        self._next = {name: 0.0 for name in self.proxies}

    def plan(self, start: float, end: float) -> None:
        """Each destination changes state (cut or restored) at a random moment of the round."""
        for name in self.proxies:
            self._next[name] = self.rng.uniform(start, end) if self.rng.random() < 0.7 else end + 1e9

    def tick(self, now: float) -> None:
        for name, proxy in self.proxies.items():
            if now < self._next[name]:
                continue
            self._next[name] = now + 1e9
            if name in self.down:
                proxy.start()
                self.down.discard(name)
            else:
                proxy.stop()
                self.down.add(name)
                self.cuts += 1

    def restore(self) -> None:
        for name in list(self.down):
            self.proxies[name].start()
        self.down.clear()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


def check_gateways(soaks: list[Soak], tag: str, fills: set[str]) -> dict:
    """Each gateway's destination holds every fill exactly once, and the trade store every
    order in its final state (waiting up to a minute for them to catch up with the
    journal); drops what the run made there."""
    import msgspec
    import nats
    import psycopg

    soak = soaks[0]
    final = {oid: (int(r.ord_status), Decimal(r.cum_qty)) for s in soaks for oid, r in s.last.items()}
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while True:
            rows = [r[0] for r in conn.execute(f"SELECT exec_id FROM {tag}.fills")]
            orders = {oid: (status, cum) for oid, status, cum in
                      conn.execute(f"SELECT order_id, ord_status, cum_qty FROM {tag}.orders")}
            differ = [oid for oid, state in final.items() if orders.get(oid) != state]
            if (len(rows) >= len(fills) and not differ) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        conn.execute(f"DROP SCHEMA {tag} CASCADE")
    if sorted(rows) != sorted(fills):
        soak.bad(f"postgres: {len(rows)} fill rows ({len(set(rows))} distinct), "
                 f"history has {len(fills)}")
    for oid in differ[:10]:
        soak.bad(f"postgres: order {oid} is {orders.get(oid)}, the engine's last word "
                 f"{final[oid]} (ord_status, cum_qty)")

    async def stream() -> list[dict]:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            last, deadline = -1, time.monotonic() + 60
            while time.monotonic() < deadline:  # until the stream stops growing
                state = (await js.stream_info(tag.upper())).state
                if state.last_seq == last:
                    break
                last = state.last_seq
                await asyncio.sleep(2)
            events = [msgspec.msgpack.decode((await js.get_msg(tag.upper(), n)).data)
                      for n in range(state.first_seq, state.last_seq + 1)]
            await js.delete_stream(tag.upper())
            return events
        finally:
            await nc.close()

    events = asyncio.run(stream())
    seqs = [e["seq"] for e in events]
    unique = {e["seq"]: e for e in events}
    nats_fills = [e["exec_id"] for e in unique.values() if e["type"] == "fill"]
    if seqs != sorted(seqs) or sorted(nats_fills) != sorted(fills):
        soak.bad(f"nats: {len(nats_fills)} fills ({len(set(nats_fills))} distinct), history "
                 f"has {len(fills)}; in seq order: {seqs == sorted(seqs)}")
    return {"postgres_fills": len(rows), "postgres_orders": len(orders), "nats_events": len(events),
            "nats_repeats": len(events) - len(unique), "nats_seqs": sorted(unique)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="kill -9s (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=2,
                        help="clients, each its own session; the second and later cancel and "
                             "replace the first one's orders too (default 2)")
    parser.add_argument("--fsync", default="group", choices=("always", "group", "none"))
    parser.add_argument("--gateways", action="store_true",
                        help="run the ZeroMQ, a PostgreSQL and a NATS gateway and check what "
                             "each delivered")
    parser.add_argument("--outages", action="store_true",
                        help="--gateways, their destinations cut at random moments")
    parser.add_argument("--checkpoints", action="store_true",
                        help="checkpoint the running engine's journal at a random moment of "
                             "each round (kronos-exec journal checkpoint)")
    args = parser.parse_args(argv)
    args.gateways = args.gateways or args.outages
    rng = random.Random(args.seed)
    outages = Outages(random.Random(args.seed * 7)) if args.outages else None
    work = Path(tempfile.mkdtemp(prefix="kronos-soak-"))
    tag = f"soak_{os.getpid()}"
    port, pub, replay = free_port(), free_port(), free_port()
    config = work / "engine.toml"
    config.write_text(config_text(port, work / "journal", sim=SIM, fsync=args.fsync,
                                  extra=gateways_toml(tag, pub, replay, outages and outages.proxies)
                                  if args.gateways else ""))
    subscribers = Subscribers(pub, replay) if args.gateways else None
    problems: list[str] = []
    first = Soak(f"tcp://127.0.0.1:{port}", random.Random(args.seed * 1000), problems)
    soaks = [first] + [Soak(f"tcp://127.0.0.1:{port}", random.Random(args.seed * 1000 + k),
                            problems, switch=False, others=(first,))
                       for k in range(1, args.clients)]
    started = time.monotonic()
    figures = {}
    checkpointing, checkpoints = None, 0
    try:
        for rnd in range(args.rounds + 1):
            engine = start_subprocess(config, work / "engine.log")
            try:
                for soak in soaks:
                    soak.pump(1.0)  # the resume's replay of what the client missed
                first.check_kill_switch(f"switch-{rnd}")
                history = check_state(soaks)
                if rnd == args.rounds:
                    for soak in soaks:
                        soak.cancel_all()
                    history = check_state(soaks)  # final: nothing works any more
                    break
                kill_at, k = time.monotonic() + rng.uniform(1, 5), 0
                checkpoint_at = time.monotonic() + rng.uniform(0, 3) if args.checkpoints \
                    else float("inf")
                if outages:
                    outages.plan(time.monotonic(), kill_at)
                while time.monotonic() < kill_at:
                    for n, soak in enumerate(soaks):
                        soak.load(f"s{args.seed}c{n}r{rnd}x{k}", 50 // len(soaks))
                    k += 1
                    if outages:
                        outages.tick(time.monotonic())
                    if time.monotonic() >= checkpoint_at:
                        checkpoint_at = float("inf")
                        checkpointing = subprocess.Popen(
                            [sys.executable, "-m", "engine.cli", "journal", "checkpoint",
                             "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
                os.kill(engine.pid, signal.SIGKILL)
                engine.wait(10)
                if checkpointing is not None:
                    # (It outlives the engine it read: done before the restart, which loads it.)
                    out = checkpointing.communicate(timeout=120)[0].decode()
                    if checkpointing.returncode:
                        first.bad(f"journal checkpoint exited {checkpointing.returncode}: "
                                  f"{out.strip()[-500:]}")
                    checkpoints += out.startswith("wrote ")
                    checkpointing = None
            finally:
                if engine.poll() is None:
                    engine.send_signal(signal.SIGTERM)
                    engine.wait(30)
            print(f"round {rnd}: {sum(len(s.last) for s in soaks)} orders seen, "
                  f"{sum(len(s.seqs) for s in soaks)} messages, {len(problems)} problems",
                  flush=True)
        for soak in soaks:
            soak.check_seqs()
        if args.gateways:
            # Started once more, all destinations up: the gateways catch up with the journal
            # and the subscribers' replays are answered.
            if outages:
                outages.restore()
            engine = start_subprocess(config, work / "engine.log")
            try:
                fills = {f.exec_id for fs in history.values() for f in fs}
                figures = check_gateways(soaks, tag, fills)
                subscribers.wait_for(fills)
                subscribers.close()
                figures.update(subscribers.check(first, fills, figures.pop("nats_seqs")))
            finally:
                engine.send_signal(signal.SIGTERM)
                engine.wait(30)
        log = (work / "engine.log").read_text().splitlines()
        if outages:
            # (evidence that the cuts were felt: the gateways' complaints)
            figures["outages"] = outages.cuts
            figures["gateway_warnings"] = sum(1 for line in log
                                              if "WARNING" in line and "gateway" in line)
        if args.checkpoints:
            figures["checkpoints"] = checkpoints
            figures["checkpoint_loads"] = sum("loaded checkpoint" in line for line in log)
            if checkpoints and not figures["checkpoint_loads"]:
                first.bad("no restart loaded a checkpoint")
        errors = [line for line in log if re.search(r"\bERROR\b|Traceback", line)]
        for line in errors[:10]:
            first.bad(f"engine log: {line}")
    finally:
        if checkpointing is not None:
            checkpointing.kill()
            checkpointing.wait()
        for soak in soaks:
            soak.client.close()
        if outages:
            outages.close()
        if subscribers:
            subscribers.close()
    figures.update(rounds=args.rounds, seed=args.seed, clients=args.clients, fsync=args.fsync,
                   orders=len({oid for s in soaks for oid in s.last}),
                   fills_seen=len({e for s in soaks for e in s.fills}),
                   messages=sum(len(s.seqs) for s in soaks),
                   kill_switch_toggles=first.toggles, kill_switch_checks=first.switch_checks,
                   seconds=round(time.monotonic() - started, 1), problems=len(problems))
    if not problems:
        shutil.rmtree(work)
    else:
        print(f"engine log and journal kept in {work}")
    print(json.dumps(figures))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
