"""Restart time: from the newest checkpoint plus the journal after it, against a whole replay.

    .venv/bin/python benchmarks/bench_recovery.py [--orders-per-day 50000] [--days 4]
        [--repeat 2] [--quick] [--gc] [--profile]

The engine's state is the replay of its journal (engine.recovery); after each
trading-day roll a child process writes a checkpoint of that replay
(engine.checkpoint), and a restart loads the newest one and replays only the
journal after it. This measures what that buys and what it costs, on one
multi-day journal built in the same run:

1. The journal: ``profile_pipeline.py``'s in-process engine (the real service,
   its venues' clock moved by hand) takes a seeded mix of requests for
   ``--days`` trading days, with ``Pipeline.roll_day`` between two days: new
   orders (resting GTC and DAY, far from the market; marketable IOC), cancels
   and replaces of resting ones. The service's stop seals the journal. The
   last day is the tail a restart replays after the newest checkpoint: a
   restart late in a trading day, the worst case between two rolls.
2. Each phase in a fresh process, as a restart is (imports and the building
   of the pipeline not counted; the collector off around the timed call, as
   for every benchmark here, ``--gc`` to leave it on as the engine does):
   the baseline, ``recover(checkpoints=False)``, the whole journal replayed;
   after a checkpoint is written at each roll but the last, in order as the
   engine writes them, ``checkpoint.make`` at the last roll (incremental: the
   previous day's checkpoint and one day of journal; timed whole, building
   its pipeline included, as the engine's child runs it) and again with no
   checkpoint before it (from nothing); ``recover(checkpoints=True)``, the
   newest checkpoint and the tail. The four run in ``--repeat`` interleaved
   rounds, the best of each kept. Each phase's peak resident memory is its
   process's (VmHWM).
3. The two restarts must reach the same state (everything recovery builds:
   the order table, children and fills, trade history, risk's whole
   snapshot, the trading day, sessions; ``tests/integration/test_checkpoint``'s
   comparison): the run fails otherwise.

Each figure is printed beside the whole replay as a ratio; the last line is a
JSON object of the figures.
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import datetime as dt
import io
import json
import pickle
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import console, emit, machine, table, without_gc  # noqa: E402

SEED = 20261206
#: The request mix, as cumulative shares of a day's requests: new GTC and DAY orders
#: resting far from the market, marketable IOC orders, cancels and replaces of resting ones.
MIX = (("gtc", 0.30), ("day", 0.50), ("ioc", 0.80), ("cancel", 0.90), ("replace", 1.00))
#: Limit prices, in ticks from the instrument's reference: resting orders 150-300 ticks
#: away on their side (never reached in the simulated seconds the run lasts), marketable
#: ones 90 ticks through it (as bench_e2e's 50.90 against 50.00).
REST_TICKS, THROUGH_TICKS = (150, 300), 90


# ---------------------------------------------------------------- the journal
def bench_config(work: Path, roll_time: str):
    """``profile_pipeline.py``'s engine over ``work``: its trading day ends at ``roll_time``
    UTC (an hour before the run began: no roll but the benchmark's own comes during it),
    and it starts no checkpoint writer of its own (the benchmark writes them)."""
    from benchmarks.profile_pipeline import _config
    cfg = _config(work, f'\n[trading_day]\nroll_time = "{roll_time}"\n')
    return msgspec.structs.replace(cfg, journal=msgspec.structs.replace(cfg.journal,
                                                                        checkpoint=False))


def day_requests(rng: random.Random, day: int, n: int, resting: list, instruments: dict,
                 refs: dict) -> list:
    """One trading day's ``n`` requests (NewOrder, Cancel, Replace), encoded as a client
    sends them. ``refs``: each symbol's reference price in ticks. ``resting``: the orders
    sent to rest, as [cl_ord_id, symbol, side, tif, price ticks]: cancels and replaces
    pick from it, and keep it current."""
    from engine.messages import Cancel, NewOrder, Replace
    encode = msgspec.msgpack.Encoder().encode
    symbols = sorted(refs)
    out = []

    def price(symbol: str, ticks: int) -> str:
        return instruments[symbol].ticks_to_price(ticks)

    for i in range(n):
        cid = f"d{day}.{i}"
        r = rng.random()
        kind = next(k for k, share in MIX if r < share)
        if kind in ("cancel", "replace") and not resting:
            kind = "gtc"
        if kind == "cancel":
            k = rng.randrange(len(resting))
            target = resting[k]
            resting[k] = resting[-1]
            resting.pop()
            out.append(encode(Cancel(cl_ord_id=cid, orig_cl_ord_id=target[0], account="BENCH",
                                     symbol=target[1])))
        elif kind == "replace":
            target = resting[rng.randrange(len(resting))]
            new_price = target[4] + rng.randint(-20, 20)  # (still far from the market)
            out.append(encode(Replace(cl_ord_id=cid, orig_cl_ord_id=target[0], account="BENCH",
                                      symbol=target[1], qty=str(rng.randint(1, 50)),
                                      price=price(target[1], new_price))))
            target[0], target[4] = cid, new_price
        else:
            symbol = rng.choice(symbols)
            buy = rng.random() < 0.5
            ref = refs[symbol]
            if kind == "ioc":
                ticks = ref + THROUGH_TICKS if buy else ref - THROUGH_TICKS
                tif = 3
            else:
                away = rng.randint(*REST_TICKS)
                ticks = ref - away if buy else ref + away
                tif = 1 if kind == "gtc" else 0
                resting.append([cid, symbol, 1 if buy else 5, tif, ticks])
            out.append(encode(NewOrder(
                cl_ord_id=cid, account="BENCH", symbol=symbol, side=1 if buy else 5,
                qty=str(rng.randint(1, 50)), price=price(symbol, ticks), time_in_force=tif,
                locate=not buy)))
    return out


async def build_journal(cfg, days: int, per_day: int, seed: int) -> dict:
    """Drive the real pipeline through ``days`` trading days of ``per_day`` requests each,
    rolling the day between two; stop the service (the journal sealed). Returns the rolls'
    seqs and what the engine sent."""
    from benchmarks.profile_pipeline import SIM_NS_PER_ORDER, run, settle, start_by_hand
    from engine.messages import ExecutionReport, TimeInForce, request_decoder
    service, session = await start_by_hand(cfg)
    pipe, venues = service.pipeline, service.venues
    decode = request_decoder().decode
    sent: collections.Counter = collections.Counter()
    send = session.send

    def counting_send(msg) -> int:
        sent[msg.exec_type.name if isinstance(msg, ExecutionReport) else type(msg).__name__] += 1
        return send(msg)

    session.send = counting_send
    rng = random.Random(seed)
    instruments = {inst.symbol: inst for inst in venues.market.instruments}
    refs = {inst.symbol: inst.price_to_ticks(price) for inst, price in _reference_prices(venues)}
    resting: list = []
    rolls, cpu = [], time.process_time()
    for day in range(days):
        if day:
            now = time.time_ns()
            pipe.roll_day(now)
            pipe._pump(now)
            settle(pipe, venues, SIM_NS_PER_ORDER)
            rolls.append(pipe.last_roll_seq)
            # Its DAY orders expired with the day.
            resting[:] = [o for o in resting if o[3] != int(TimeInForce.DAY)]
        requests = day_requests(rng, day, per_day, resting, instruments, refs)
        run(pipe, venues, session, [decode(m) for m in requests])
    cpu = time.process_time() - cpu
    orders, working = len(pipe.orders), len(pipe.orders.working())
    await service.stop(grace_s=0)
    return {"rolls": rolls, "build_cpu_s": cpu, "sent": dict(sent), "orders_held": orders,
            "working": working}


def _reference_prices(venues):
    """(instrument, its configured reference price) for each instrument of the venues."""
    prices = {ic.symbol: ic.price for ic in venues.market.config.instruments}
    return [(inst, prices[inst.symbol]) for inst in venues.market.instruments]


# ---------------------------------------------------------------- the phases (child processes)
def _timing(owner, name: str, into: dict) -> None:
    """Wrap ``owner.name`` so that its calls' seconds (and count) add up in ``into[name]``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent, calls = into.get(name, (0.0, 0))
            into[name] = (spent + time.perf_counter() - started, calls + 1)

    setattr(owner, name, wrapper)


def _status_mb(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (VmRSS, VmHWM), in MB.
    (Not ``getrusage``'s ``ru_maxrss``: it carries the forking parent's peak across the
    exec.)"""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def phase(name: str, work: Path, roll_time: str, until: int | None, gc_on: bool,
          profile: bool) -> dict:
    """One measured phase, in this (fresh) process: ``whole`` (recover, no checkpoints),
    ``restart`` (recover from the newest checkpoint), ``write`` (checkpoint.make at
    ``until``). The restarts leave their state in ``work/state-<name>.pickle``."""
    from engine import checkpoint, recovery, service
    from engine.intake import client_names
    cfg = bench_config(work, roll_time)
    parts: dict = {}
    for owner, attr in ((service, "build_venues"), (service, "build_pipeline"),
                        (checkpoint, "load_newest"), (checkpoint, "read"),
                        (checkpoint, "_record_hash"), (checkpoint, "write"),
                        (recovery.Replay, "run"), (recovery.Replay, "load"),
                        (recovery.Replay, "save"), (recovery.Replay, "finish"),
                        (pickle, "loads"), (recovery, "_dumps")):
        _timing(owner, attr, parts)
    pipeline = None
    if name != "write":  # (checkpoint.make builds its own: timed with it)
        pipeline = service.build_pipeline(cfg, service.build_venues(cfg), None)
    rss_before = _status_mb("VmRSS")
    replay_records = collections.Counter()
    if name == "restart":
        load_newest = checkpoint.load_newest

        def noting(replay, journal_dir):
            loaded = load_newest(replay, journal_dir)
            replay_records["from_checkpoint"] = replay.records
            replay_records["checkpoint_seq"] = replay.seq
            return loaded

        checkpoint.load_newest = noting

    def measured():
        if name == "write":
            return checkpoint.make(cfg, until)
        return recovery.recover(pipeline, cfg.journal.dir, cfg.intake.resend_ring_size,
                                client_names(cfg.security), checkpoints=name == "restart")

    profiler = cProfile.Profile() if profile else None

    def timed():
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        try:
            result = measured()
            return time.perf_counter() - started, result
        finally:
            if profiler:
                profiler.disable()

    seconds, result = timed() if gc_on else without_gc(timed)
    out = {"phase": name, "rss_before_mb": round(rss_before, 1),
           "maxrss_mb": round(_status_mb("VmHWM"), 1),
           "parts": {k: [round(s, 4), n] for k, (s, n) in parts.items()}}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        print(f"---- cProfile of {name} ----\n{text.getvalue()}", file=sys.stderr)
    if name == "write":
        out.update(path=str(result) if result else None,
                   bytes=result.stat().st_size if result else 0)
    else:
        from tests.integration.test_checkpoint import whole_state
        out.update(records=result.records, orders=result.orders, working=result.working,
                   fills=result.fills, **replay_records)
        state = whole_state(pipeline, result)
        with open(work / f"state-{name}.pickle", "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    out["seconds"] = seconds
    return out


def run_phase(name: str, work: Path, roll_time: str, *, until: int | None = None,
              gc_on: bool = False, profile: bool = False) -> dict:
    """:func:`phase` in a fresh process; its closing JSON line."""
    argv = [sys.executable, __file__, "--phase", name, "--work", str(work),
            "--roll-time", roll_time]
    if until is not None:
        argv += ["--until", str(until)]
    if gc_on:
        argv.append("--gc")
    if profile:
        argv.append("--profile")
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"bench_recovery: phase {name} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the run
def count_records(journal_dir: Path) -> tuple[int, int]:
    """(records, bytes) of the journal's segments."""
    from engine.journal import JournalReader, list_segments
    records = sum(1 for _ in JournalReader(journal_dir).records())
    return records, sum(p.stat().st_size for p in list_segments(journal_dir))


def fmt_ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "-"


def _mem(phase_result: dict) -> str:
    return f"{phase_result['maxrss_mb']:.0f} ({phase_result['rss_before_mb']:.0f})"


def main(args) -> dict:
    import uvloop

    from engine import checkpoint
    work = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        # An hour before now, UTC: the engine's own trading day never ends during the run.
        roll_time = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%H:%M")
        cfg = bench_config(work, roll_time)
        journal_dir = Path(cfg.journal.dir)
        started = time.perf_counter()
        built = uvloop.run(build_journal(cfg, args.days, args.orders_per_day, args.seed))
        build_s = time.perf_counter() - started
        records, journal_bytes = count_records(journal_dir)
        rolls = built["rolls"]
        console.print(f"journal: {args.days} days x {args.orders_per_day:,} requests, "
                      f"{records:,} records, {journal_bytes / 2**20:.1f} MiB, built in "
                      f"{build_s:.1f} s; rolls at {rolls}; the engine held "
                      f"{built['orders_held']:,} orders at the end, {built['working']:,} "
                      f"working; sent "
                      f"{', '.join(f'{k} {v:,}' for k, v in sorted(built['sent'].items()))}")

        # The engine's way: a checkpoint at each roll, in order. The last roll's is then
        # written (and timed) in each round, from the previous roll's checkpoint, and
        # again from nothing (no checkpoint in the directory), interleaved with the
        # restarts: the machine's load moves all four alike.
        writes = [run_phase("write", work, roll_time, until=seq, gc_on=args.gc)
                  for seq in rolls[:-1]]
        ckpt_dir = checkpoint.checkpoint_dir(journal_dir)
        newest = checkpoint.checkpoint_path(journal_dir, rolls[-1])
        aside = work / "checkpoints-aside"
        runs = collections.defaultdict(list)
        same_bytes = True
        for k in range(args.repeat):
            profile = args.profile and k == 0
            newest.unlink(missing_ok=True)
            runs["write"].append(run_phase("write", work, roll_time, until=rolls[-1],
                                           gc_on=args.gc, profile=profile))
            runs["restart"].append(run_phase("restart", work, roll_time, gc_on=args.gc,
                                             profile=profile))
            runs["whole"].append(run_phase("whole", work, roll_time, gc_on=args.gc))
            ckpt_dir.rename(aside)
            try:
                runs["scratch"].append(run_phase("write", work, roll_time, until=rolls[-1],
                                                 gc_on=args.gc))
                same_bytes &= checkpoint.read(newest)[2] == checkpoint.read(
                    aside / newest.name)[2]
            finally:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                aside.rename(ckpt_dir)
        whole, restart, last, scratch = (min(runs[name], key=lambda r: r["seconds"])
                                         for name in ("whole", "restart", "write", "scratch"))
        writes.append(runs["write"][0])

        # The two restarts must agree, or the timings measure nothing.
        from tests.integration.test_checkpoint import assert_same
        with open(work / "state-whole.pickle", "rb") as f:
            expected = pickle.load(f)
        with open(work / "state-restart.pickle", "rb") as f:
            got = pickle.load(f)
        try:
            assert_same(got, expected)
        except AssertionError as exc:
            raise SystemExit(f"bench_recovery: the restart from the checkpoint and the whole "
                             f"replay reach different states, first at {exc}") from None
        if restart["records"] != records or restart["from_checkpoint"] != rolls[-1]:
            raise SystemExit(f"bench_recovery: the restart read {restart['from_checkpoint']} "
                             f"records from the checkpoint (expected {rolls[-1]}) and "
                             f"{restart['records']} in all (the journal has {records})")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = whole["seconds"]
    tail = records - rolls[-1]
    loaded = restart["parts"].get("load_newest", [0.0])[0]
    tail_s = restart["parts"].get("run", [0.0])[0]
    rows = [
        ["whole replay (baseline)", base, f"{records:,}", "1.000", _mem(whole)],
        ["restart: newest checkpoint + tail", restart["seconds"], f"{tail:,} replayed",
         fmt_ratio(restart["seconds"], base), _mem(restart)],
        ["  of which loading the checkpoint", loaded, "-", fmt_ratio(loaded, base), "-"],
        ["  of which replaying the tail", tail_s, f"{tail:,}", fmt_ratio(tail_s, base), "-"],
        ["checkpoint write at the last roll, from nothing", scratch["seconds"],
         f"{rolls[-1]:,}", fmt_ratio(scratch["seconds"], base), _mem(scratch)],
        ["checkpoint write at the last roll, incremental", last["seconds"],
         f"{rolls[-1] - rolls[-2]:,}", fmt_ratio(last["seconds"], base), _mem(last)],
    ]
    table(f"Recovery, {args.days} days x {args.orders_per_day:,} requests "
          f"(gc {'on' if args.gc else 'off'}, best of {args.repeat})",
          ["phase", "s", "records", "ratio vs whole replay",
           "peak RSS MB (before)"], rows)
    for name, r in (("restart", restart), ("incremental write", last),
                    ("write from nothing", scratch)):
        console.print(f"{name} parts (s, calls): "
                      + ", ".join(f"{k} {s:.3f}/{n}" for k, (s, n) in r["parts"].items()))
    console.print(f"restart from checkpoint: {restart['seconds']:.2f} s (whole replay "
                  f"{base:.2f} s, ratio {restart['seconds'] / base:.3f})")
    console.print(f"checkpoint write, incremental: {last['seconds']:.2f} s; from nothing: "
                  f"{scratch['seconds']:.2f} s (whole replay {base:.2f} s, ratios "
                  f"{last['seconds'] / base:.3f} and {scratch['seconds'] / base:.3f}); "
                  f"each roll's, in order (the engine's): "
                  f"{', '.join(str(round(w['seconds'], 2)) for w in writes)} s")
    console.print(f"checkpoint size: {last['bytes'] / 2**20:.1f} MiB "
                  f"({last['bytes'] / journal_bytes:.3f} of the journal's "
                  f"{journal_bytes / 2**20:.1f} MiB); from nothing and incremental "
                  f"{'byte-identical' if same_bytes else 'not byte-identical'}")
    console.print(f"replay rate: whole {records / base:,.0f} records/s; the tail "
                  f"{tail / tail_s:,.0f} records/s" if tail_s else "")
    console.print("runs (s): " + "; ".join(
        f"{name} {', '.join(str(round(r['seconds'], 2)) for r in runs[key])}"
        for name, key in (("whole replay", "whole"), ("restart", "restart"),
                          ("incremental write", "write"), ("write from nothing", "scratch")))
                  + "; states compared: "
                  f"identical ({restart['orders']:,} orders, {restart['working']:,} working, "
                  f"{restart['fills']:,} fills)")
    return {
        "days": args.days, "orders_per_day": args.orders_per_day, "gc": args.gc,
        "repeat": args.repeat,
        "journal_records": records, "journal_bytes": journal_bytes,
        "tail_records": tail, "orders_recovered": restart["orders"],
        "working_recovered": restart["working"], "fills_recovered": restart["fills"],
        "whole_replay_s": round(base, 4),
        "checkpoint_restart_s": round(restart["seconds"], 4),
        "ratio_vs_whole_replay": round(restart["seconds"] / base, 4),
        "checkpoint_load_s": round(loaded, 4),
        "tail_replay_s": round(tail_s, 4),
        "checkpoint_write_s": round(last["seconds"], 4),
        "checkpoint_write_ratio_vs_whole_replay": round(last["seconds"] / base, 4),
        "checkpoint_write_from_nothing_s": round(scratch["seconds"], 4),
        "checkpoint_write_from_nothing_ratio_vs_whole_replay": round(scratch["seconds"] / base, 4),
        "checkpoint_write_per_roll_s": [round(w["seconds"], 4) for w in writes],
        "checkpoint_bytes": last["bytes"],
        "replay_records_per_s": round(records / base),
        "tail_replay_records_per_s": round(tail / tail_s) if tail_s else None,
        "whole_replay_maxrss_mb": whole["maxrss_mb"],
        "checkpoint_restart_maxrss_mb": restart["maxrss_mb"],
        "checkpoint_write_maxrss_mb": last["maxrss_mb"],
        "journal_build_s": round(build_s, 2),
        "journal_build_cpu_s": round(built["build_cpu_s"], 2),
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders-per-day", type=int, default=50_000,
                        help="requests per trading day (default 50,000)")
    parser.add_argument("--days", type=int, default=4, help="trading days (default 4)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of the whole replay and of the restart, best kept (default 2)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--quick", action="store_true",
                        help="3 days x 4,000 requests, one run each")
    parser.add_argument("--gc", action="store_true",
                        help="leave the garbage collector on in the timed calls, as the engine "
                             "runs its recovery (default off, as every benchmark times)")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of the last checkpoint write and of the restart "
                             "to stderr (their times then include the profiler's cost)")
    # One phase in this process (run_phase), not for use by hand.
    parser.add_argument("--phase", choices=("whole", "restart", "write"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--roll-time", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.work, args.roll_time, args.until, args.gc,
                               args.profile)))
        sys.exit(0)
    if args.quick:
        args.orders_per_day, args.days, args.repeat = 4_000, 3, 1
    if args.days < 2:
        parser.error("--days must be at least 2 (a checkpoint is written at a roll between two)")
    emit(main(args))
