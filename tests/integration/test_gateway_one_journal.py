"""Two engines' journals on one empty destination: the second's events are refused.

Both gateways pass the "one journal per destination" check when they open
(the schema is empty then); before this, the second one's fills were then
dropped as repeats (rows keyed by seq, which every journal numbers from 1)
and its cursor row, under the same gateway name, taken over: a trade store
missing one engine's fills with no error anywhere. Each batch now checks, in
its own transaction and in turn with the other gateways' batches, that the
schema is its journal's. A JetStream stream interleaved both journals' events
(each under its own ``<journal>:<seq>`` id): every publish now expects the
stream's last message to be the one before it. Real PostgreSQL (the one on
this machine) and a nats-server the test starts.
"""
import uuid

import pytest

from engine.journal import JournalReader, journal_identity
from gateways import from_config
from gateways.base import ForeignCursorError
from gateways.events import Normalizer
from gateways.tail import JournalTail
from tests.unit.gateways.helpers import (
    PG_DSN, NatsServer, needs_nats_server, new_journal, needs_postgres, stream_events,
)


def opened(tmp_path, table):
    """The gateway of ``table`` (default name) following the journal under ``tmp_path``,
    opened and its cursor loaded as its run loop does first; with the journal's events."""
    gateway = from_config([{**table, "isolation": "thread"}], tmp_path / "journal",
                          tmp_path / "gw")[0]
    gateway.journal_id = journal_identity(tmp_path / "journal")
    gateway.open()
    assert gateway.load_cursor() == 0  # an empty destination: nothing to refuse yet
    source = JournalReader(tmp_path / "journal")
    records = JournalTail(source).read(1000)
    events = Normalizer(gateway.config.events, journal=source).normalize(records)
    return gateway, events, records[-1].seq


@needs_postgres()
def test_the_second_journals_batch_is_refused_and_stores_nothing(tmp_path):
    import psycopg

    from gateways.postgres import drop_schema
    schema = f"gw_one_{uuid.uuid4().hex[:8]}"
    new_journal(tmp_path / "a", 5)
    new_journal(tmp_path / "b", 7)
    table = {"type": "postgres", "dsn": PG_DSN, "schema": schema}
    first, first_events, first_last = opened(tmp_path / "a", table)
    second, second_events, second_last = opened(tmp_path / "b", table)
    try:
        first.deliver(first_events, first_last)
        with pytest.raises(ForeignCursorError, match=f"journal {first.journal_id}"):
            second.deliver(second_events, second_last)
        first.deliver(first_events, first_last)  # the schema's own journal goes on
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            assert db.execute(f"SELECT count(*) FROM {schema}.fills").fetchone()[0] == 5
            assert db.execute(f"SELECT name, seq, journal FROM {schema}.gateway_cursor")\
                .fetchall() == [("postgres", first_last, first.journal_id)]
    finally:
        first.close()
        second.close()
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            drop_schema(db, schema)


@needs_nats_server()
def test_the_second_journals_publishes_are_refused_and_the_stream_too(tmp_path):
    server = NatsServer(tmp_path / "nats-store").start()
    new_journal(tmp_path / "a", 5)
    new_journal(tmp_path / "b", 7)
    table = {"type": "nats", "servers": [server.url], "stream": "ONE", "ack_timeout_s": 2}
    first, first_events, first_last = opened(tmp_path / "a", table)
    second, second_events, second_last = opened(tmp_path / "b", table)
    try:
        first.deliver(first_events[:4], first_events[3].seq)
        with pytest.raises(RuntimeError, match="JetStream refused a publish"):
            second.deliver(second_events, second_last)
        first.deliver(first_events[4:], first_last)  # the stream's own journal goes on
        stored = stream_events(server.url, "ONE")
        assert [event.seq for event, _, _ in stored] == [e.seq for e in first_events]
        assert {headers["Nats-Msg-Id"].split(":")[0] for _, _, headers in stored} \
            == {first.journal_id}
        # Retried, the second gateway reopens and refuses the stream for good.
        second.close()
        second.open()
        with pytest.raises(ForeignCursorError, match=f"belongs to journal {first.journal_id}"):
            second._check_journal(second.load_cursor())
    finally:
        first.close()
        second.close()
        server.stop()


def delete_last_message(url: str, stream: str) -> None:
    """What an operator's ``nats stream rmm``: the stream's last message deleted."""
    import asyncio

    import nats

    async def delete():
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.delete_msg(stream, (await js.stream_info(stream)).state.last_seq)
        await nc.close()
    asyncio.run(delete())


@needs_nats_server()
def test_a_deleted_last_message_resumes_after_the_last_one_left(tmp_path):
    # The gateway's cursor file lags the stream (it is stored now and then);
    # the stream's last message is deleted and the server restarted, which
    # empties JetStream's "last message id". Resuming from the cursor file
    # republished events the stream holds (acknowledged as duplicates), and
    # the first new one, expecting a duplicate's id, was refused for ever.
    server = NatsServer(tmp_path / "nats-store").start()
    new_journal(tmp_path / "a", 10)
    table = {"type": "nats", "servers": [server.url], "stream": "DEL", "ack_timeout_s": 2}
    gateway, events, last = opened(tmp_path / "a", table)
    try:
        gateway.deliver(events[:6], events[5].seq)
        gateway.store_cursor(events[2].seq, force=True)
        gateway.close()
        delete_last_message(server.url, "DEL")
        server.stop()
        server.start()
        gateway.open()
        assert gateway.load_cursor() == events[4].seq  # the last message left
        gateway.deliver(events[5:], last)
        stored = [event.seq for event, _, _ in stream_events(server.url, "DEL")]
        # The deleted event is published again (consumers de-duplicate by seq).
        assert stored == [e.seq for e in events]
    finally:
        gateway.close()
        server.stop()
