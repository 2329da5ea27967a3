"""Two engines' journals on one empty PostgreSQL schema: the second's batches are refused.

Both gateways pass the "one journal per destination" check when they open
(the schema is empty then); before this, the second one's fills were then
dropped as repeats (rows keyed by seq, which every journal numbers from 1)
and its cursor row, under the same gateway name, taken over: a trade store
missing one engine's fills with no error anywhere. Each batch now checks, in
its own transaction and in turn with the other gateways' batches, that the
schema is its journal's. Real PostgreSQL (the one on this machine).
"""
import uuid

import pytest

from engine.journal import JournalReader, journal_identity
from gateways import from_config
from gateways.base import ForeignCursorError
from gateways.events import Normalizer
from gateways.tail import JournalTail
from tests.unit.gateways.helpers import PG_DSN, new_journal, pg_reachable


def opened(tmp_path, schema):
    """A postgres gateway (default name) of the journal under ``tmp_path``, opened and its
    cursor loaded, as its run loop does first; with the journal's events."""
    table = {"type": "postgres", "dsn": PG_DSN, "schema": schema, "isolation": "thread"}
    gateway = from_config([table], tmp_path / "journal", tmp_path / "gw")[0]
    gateway.journal_id = journal_identity(tmp_path / "journal")
    gateway.open()
    assert gateway.load_cursor() == 0  # an empty schema: nothing to refuse yet
    source = JournalReader(tmp_path / "journal")
    records = JournalTail(source).read(1000)
    events = Normalizer(gateway.config.events, journal=source).normalize(records)
    return gateway, events, records[-1].seq


@pytest.mark.skipif(pg_reachable() is not None, reason=pg_reachable() or "")
def test_the_second_journals_batch_is_refused_and_stores_nothing(tmp_path):
    import psycopg

    from gateways.postgres import drop_schema
    schema = f"gw_one_{uuid.uuid4().hex[:8]}"
    new_journal(tmp_path / "a", 5)
    new_journal(tmp_path / "b", 7)
    first, first_events, first_last = opened(tmp_path / "a", schema)
    second, second_events, second_last = opened(tmp_path / "b", schema)
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
