"""A destination that holds another journal's events and cursor (a PostgreSQL schema, a
JetStream stream) is refused by the gateway of a journal made anew, never resumed from: the
new journal's seqs start again at 1, so resuming skipped its events up to the old cursor (and
the stream's duplicate window dropped the rest as repeats of the old ids).

Real servers: the PostgreSQL on this machine, a nats-server the test starts.
"""
import uuid

import pytest

from engine.journal import journal_identity
from gateways import from_config
from tests.unit.gateways.helpers import (
    PG_DSN, NatsServer, needs_nats_server, new_journal, needs_postgres, stream_events, wait_until,
)


def run_until_refused_or_done(gateway, last: int) -> str:
    """Start ``gateway``; its ``last_error`` once refused, or "" once it delivered through ``last``."""
    gateway.start()
    try:
        assert wait_until(lambda: "ForeignCursorError" in (gateway.metrics.last_error or "")
                          or gateway.metrics.cursor >= last, 15), gateway.metrics.snapshot()
        return gateway.metrics.last_error or ""
    finally:
        gateway.stop()


def lag_records(gateway) -> float:
    """``kronos_gateway_lag_records`` of ``gateway`` as a scrape reads it."""
    from gateways.metrics import GatewayCollector
    for metric in GatewayCollector([gateway]).collect():
        if metric.name == "kronos_gateway_lag_records":
            return metric.samples[0].value
    raise AssertionError("no kronos_gateway_lag_records")


@needs_postgres()
def test_a_schema_holding_another_journals_cursor_is_refused(tmp_path):
    import psycopg

    from gateways.postgres import drop_schema
    schema = f"gw_foreign_{uuid.uuid4().hex[:8]}"
    table = {"type": "postgres", "dsn": PG_DSN, "schema": schema, "poll_interval_ms": 1,
             "backoff_initial_ms": 20, "backoff_max_ms": 50, "isolation": "thread"}

    def gateway():
        return from_config([table], tmp_path / "journal", tmp_path / "gw")[0]
    try:
        old_last = new_journal(tmp_path, 20)
        old_id = journal_identity(tmp_path / "journal")
        assert run_until_refused_or_done(gateway(), old_last) == ""
        last = new_journal(tmp_path, 3)
        refused = gateway()
        error = run_until_refused_or_done(refused, last)
        assert f"belongs to journal {old_id}" in error
        # Its lag counts the whole new journal, as gateways.md says: it was NaN.
        assert lag_records(refused) == last
        assert f"the row 'postgres' of {schema}.gateway_cursor" in error
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            # The old journal's 20 fills only: the new one's seq 2, 4, 6 were not stored over them.
            assert db.execute(f"SELECT count(*) FROM {schema}.fills").fetchone()[0] == 20
            # What the error says to do: clear the old events and the cursor row.
            db.execute(f"TRUNCATE {schema}.fills, {schema}.orders, {schema}.gateway_cursor")
        assert run_until_refused_or_done(gateway(), last) == ""
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            assert [r[0] for r in db.execute(f"SELECT seq FROM {schema}.fills ORDER BY seq")] \
                == [2, 4, 6]
            assert db.execute(f"SELECT seq, journal FROM {schema}.gateway_cursor").fetchone() \
                == (last, journal_identity(tmp_path / "journal"))
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            drop_schema(db, schema)


@needs_nats_server()
def test_a_stream_holding_another_journals_events_is_refused(tmp_path):
    server = NatsServer(tmp_path / "nats-store").start()
    table = {"type": "nats", "servers": [server.url], "stream": "FOREIGN", "poll_interval_ms": 1,
             "backoff_initial_ms": 20, "backoff_max_ms": 50, "ack_timeout_s": 2,
             "isolation": "thread"}

    def gateway(state: str):
        # A fresh state directory each time: only the stream can tell where it got.
        return from_config([table], tmp_path / "journal", tmp_path / state)[0]
    try:
        old_last = new_journal(tmp_path, 20)
        old_id = journal_identity(tmp_path / "journal")
        assert run_until_refused_or_done(gateway("gw1"), old_last) == ""
        last = new_journal(tmp_path, 3)
        error = run_until_refused_or_done(gateway("gw2"), last)
        assert f"belongs to journal {old_id}" in error and "stream 'FOREIGN'" in error
        assert len(stream_events(server.url, "FOREIGN")) == 20
    finally:
        server.stop()


@needs_postgres()
def test_a_second_journals_gateway_refuses_a_schema_another_journal_writes(tmp_path):
    """Two engines' gateways (names differ, so two cursor rows) on one schema: the second
    journal's fills collided with the first's by seq and vanished, its cursor moving on."""
    import psycopg

    from engine.journal import JournalWriter
    from gateways.postgres import drop_schema
    from tests.unit.gateways.helpers import write_fills
    schema = f"gw_shared_{uuid.uuid4().hex[:8]}"

    def gateway(name: str):
        table = {"type": "postgres", "name": f"desk-{name}", "dsn": PG_DSN, "schema": schema,
                 "poll_interval_ms": 1, "backoff_initial_ms": 20, "backoff_max_ms": 50,
                 "isolation": "thread"}
        return from_config([table], tmp_path / name, tmp_path / f"{name}-gw")[0]
    writers = {name: JournalWriter(tmp_path / name, fsync="none") for name in ("a", "b")}
    try:
        write_fills(writers["a"], 1, 4)
        write_fills(writers["b"], 1, 6)
        assert run_until_refused_or_done(gateway("a"), writers["a"].last_seq) == ""
        error = run_until_refused_or_done(gateway("b"), writers["b"].last_seq)
        assert f"schema {schema} holds the events of journal" in error
        assert "(gateway 'desk-a')" in error and "its own schema" in error
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            assert db.execute(f"SELECT count(*) FROM {schema}.fills").fetchone()[0] == 4
            assert db.execute(f"SELECT name FROM {schema}.gateway_cursor").fetchall() == \
                [("desk-a",)]
    finally:
        for writer in writers.values():
            writer.close()
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            drop_schema(db, schema)


@needs_nats_server()
def test_a_stream_another_journal_wrote_first_is_refused_whoever_wrote_last(tmp_path):
    """One journal per stream: consumers de-duplicate by seq, which every journal numbers
    from 1. Two engines started on an empty stream both publish; the check looked at the
    stream's last message only, so each was refused or not depending on who wrote last."""
    import asyncio

    import nats

    from engine.journal import JournalWriter
    from tests.unit.gateways.helpers import write_fills
    server = NatsServer(tmp_path / "nats-store").start()
    table = {"type": "nats", "servers": [server.url], "stream": "SHARED", "poll_interval_ms": 1,
             "backoff_initial_ms": 20, "backoff_max_ms": 50, "ack_timeout_s": 2,
             "isolation": "thread"}
    writer = JournalWriter(tmp_path / "a", fsync="none")
    try:
        write_fills(writer, 1, 3)
        ours = journal_identity(tmp_path / "a")
        # As both engines' gateways wrote it: another journal's event first, then ours.
        gateway = from_config([table], tmp_path / "a", tmp_path / "a-gw")[0]
        assert run_until_refused_or_done(gateway, writer.last_seq) == ""  # makes the stream

        async def interleave():
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.purge_stream("SHARED")
            await js.publish("kronos.fills.AAA", b"x", headers={"Nats-Msg-Id": "0beef:1"})
            for seq in (8, 10):  # (ids not used yet: the duplicate window outlives a purge)
                await js.publish("kronos.fills.AAA", b"x",
                                 headers={"Nats-Msg-Id": f"{ours}:{seq}"})
            await nc.close()
        asyncio.run(interleave())
        again = from_config([table], tmp_path / "a", tmp_path / "a-gw")[0]
        error = run_until_refused_or_done(again, writer.last_seq + 1)
        assert "belongs to journal 0beef" in error
    finally:
        writer.close()
        server.stop()
