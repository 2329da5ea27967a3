"""Each gateway goes on after the journal's first segments were archived as docs/engine.md
says (*Archiving segments*: those wholly before every gateway's ``/metrics`` cursor).

A gateway's cursor on its destination can lag its read position: a PostgreSQL
gateway moved its ``gateway_cursor`` row only with a batch that held events,
and a NATS gateway resumes after the stream's last message, the last event it
published; records after those (commands, events of types not selected) are
read past and show in ``/metrics``, which is what an operator checks before
archiving. A gateway restarted after that resumed from its destination's
cursor, inside an archived segment, and stopped for good on ``JournalGapError``
(``segments removed from the front?``), delivering nothing more. And any
gateway whose cursor was the last record of an archived segment failed the
same way, reading that record again for its time.
"""
import contextlib
import os
import shutil
import uuid

import pytest

from engine.journal import JournalWriter, RecordKind, list_segments
from gateways import from_config
from tests.unit.gateways.helpers import (
    PG_DSN, command, needs_nats_server, needs_postgres, stream_events, wait_until, write_fills,
)


def archive_read_past(tmp_path, cursor: int) -> int:
    """Move away the segments wholly at or before ``cursor`` (a gateway's /metrics cursor),
    as an operator archives them; returns how many moved."""
    segments = list_segments(tmp_path / "journal")
    gone = [path for path, following in zip(segments, segments[1:]) if int(following.stem) <= cursor + 1]
    (tmp_path / "archive").mkdir(exist_ok=True)
    for path in gone:
        shutil.move(path, tmp_path / "archive" / path.name)
    return len(gone)


def commands(writer: JournalWriter, first: int, count: int) -> None:
    for i in range(first, first + count):
        writer.append_msg(RecordKind.COMMAND, command(i))


def run_then_archive_then_restart(tmp_path, table, writer, *, end_on_boundary=False):
    """Fills, then records without events across several segments; the gateway reads
    past them; stopped; what it read past archived; more fills; a new gateway (a restart).
    With ``end_on_boundary`` the gateway stops with its cursor on the last record of a
    segment. Returns (the restarted gateway, every fill seq written)."""
    seqs = []
    while True:
        [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
        gateway.start()
        try:
            if not seqs:
                seqs = write_fills(writer, 1, 5, with_commands=False)
                assert gateway.wait_for(writer.last_seq, 20), gateway.metrics.snapshot()
                commands(writer, 100, 400)                     # no event: nothing delivered
            assert gateway.wait_for(writer.last_seq, 20), gateway.metrics.snapshot()
            cursor = gateway.metrics.cursor
        finally:
            gateway.stop()
        if not end_on_boundary:
            break
        # The next record opens a segment: the cursor was its predecessor's last record.
        seqs += write_fills(writer, 1000 + writer.last_seq, 1, with_commands=False)
        if int(list_segments(tmp_path / "journal")[-1].stem) == seqs[-1]:
            break
    assert archive_read_past(tmp_path, cursor) >= 2
    seqs += write_fills(writer, 2000, 5, with_commands=False)
    [restarted] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return restarted, seqs


@contextlib.contextmanager
def pg_schema(prefix: str):
    """A fresh PostgreSQL schema name for a gateway, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from gateways.postgres import drop_schema
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            drop_schema(conn, schema)


def stored_fill_seqs(schema: str) -> list[int]:
    """The seqs of the fills a PostgreSQL gateway stored in ``schema``, in order."""
    import psycopg
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return [r[0] for r in conn.execute(f"SELECT seq FROM {schema}.fills ORDER BY seq")]


def catch_up(gateway, writer) -> None:
    """Run ``gateway`` until it has delivered all ``writer`` wrote, then stop it."""
    gateway.start()
    try:
        assert gateway.wait_for(writer.last_seq, 10), gateway.metrics.last_error
    finally:
        gateway.stop()


@pytest.fixture
def writer(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none", rotate_bytes=4096)
    yield writer
    writer.close()


def base(**keys):
    return {"poll_interval_ms": 1, "backoff_initial_ms": 20, "backoff_max_ms": 100,
            "isolation": "thread", "cursor_interval_ms": 0, **keys}


@needs_postgres()
def test_postgres_goes_on_after_what_it_read_past_was_archived(tmp_path, writer):
    with pg_schema("gw_arch") as schema:
        gateway, seqs = run_then_archive_then_restart(
            tmp_path, base(type="postgres", dsn=PG_DSN, schema=schema), writer)
        catch_up(gateway, writer)
        assert stored_fill_seqs(schema) == seqs


@needs_nats_server()
def test_nats_goes_on_after_what_it_read_past_was_archived(tmp_path, writer):
    try:
        import socket
        socket.create_connection(("127.0.0.1", 4222), timeout=0.5).close()
    except OSError:
        pytest.skip("no NATS server on 127.0.0.1:4222")
    stream = "ARCH" + uuid.uuid4().hex[:8].upper()
    table = base(type="nats", stream=stream, subject_prefix=stream.lower(), ack_timeout_s=2)
    gateway, seqs = run_then_archive_then_restart(tmp_path, table, writer)
    catch_up(gateway, writer)
    assert [event.seq for event, _, _ in stream_events("nats://127.0.0.1:4222", stream)] == seqs


def test_zmq_goes_on_when_its_cursor_was_the_last_record_of_an_archived_segment(tmp_path, writer):
    from gateways.zmq_pub import Subscriber
    table = base(type="zmq", endpoint="tcp://127.0.0.1:0", replay_endpoint="tcp://127.0.0.1:0")
    gateway, seqs = run_then_archive_then_restart(tmp_path, table, writer, end_on_boundary=True)
    gateway.start()
    try:
        assert gateway.wait_for(writer.last_seq, 10), gateway.metrics.last_error
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=seqs[-6]) as sub:
            got = []
            assert wait_until(lambda: got.extend(sub.recv(timeout_ms=20)) or len(got) >= 5, 10)
        assert [e.seq for e in got] == seqs[-5:]
    finally:
        gateway.stop()


@needs_postgres()
def test_a_new_gateway_on_an_archived_journal_waits_or_starts_at_what_is_left(tmp_path, writer):
    """A gateway with no stored cursor on a journal whose first segments were archived
    stalled on ``JournalGapError`` (``segments removed from the front?``) with no way on
    but putting the segments back. It still waits by default, the error naming
    ``start_after_archived``; with that key it starts at the first record still there."""
    seqs = write_fills(writer, 1, 60, with_commands=False)
    first = int(list_segments(tmp_path / "journal")[-2].stem)
    assert archive_read_past(tmp_path, first - 1) >= 2
    left = [s for s in seqs if s >= first]
    assert left and left != seqs
    with pg_schema("gw_new") as schema:
        [waiting] = from_config([base(type="postgres", dsn=PG_DSN, schema=schema)],
                                tmp_path / "journal", tmp_path / "gw")
        waiting.start()
        try:
            assert wait_until(lambda: "start_after_archived" in (waiting.metrics.last_error or ""), 10), \
                waiting.metrics.last_error
            assert waiting.metrics.delivered == 0
        finally:
            waiting.stop()
        [starting] = from_config([base(type="postgres", dsn=PG_DSN, schema=schema,
                                       start_after_archived=True)],
                                 tmp_path / "journal", tmp_path / "gw")
        catch_up(starting, writer)
        assert stored_fill_seqs(schema) == left
