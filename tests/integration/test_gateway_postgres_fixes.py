"""PostgreSQL gateway fixes, against a real server: an event the tables cannot
hold (a NUL in a text) is left out and counted instead of stopping the trade
store, session traffic is not staged, and a refused cancel or replace leaves
the order's row as it was (with a real engine producing the reports)."""
import os
import time
import uuid

import pytest

psycopg = pytest.importorskip("psycopg")

import msgspec  # noqa: E402

from engine.journal import JournalWriter, RecordKind  # noqa: E402
from engine.messages import ExecType, JournalEvent, OrdStatus, TradeHistoryReply  # noqa: E402
from gateways import from_config  # noqa: E402
from gateways.postgres import drop_schema  # noqa: E402
from tests.unit.gateways.helpers import (  # noqa: E402
    PG_DSN, T0, admin, fill, kill_switch, pg_reachable, write_fills,
)

pytestmark = pytest.mark.skipif(pg_reachable() is not None, reason=pg_reachable() or "")


@pytest.fixture
def schema():
    name = f"gw_fix_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        drop_schema(conn, name)


@pytest.fixture
def db():
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        yield conn


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


def make_gateway(tmp_path, schema, **keys):
    table = {"type": "postgres", "dsn": PG_DSN, "schema": schema, "poll_interval_ms": 1,
             "backoff_initial_ms": 20, "backoff_max_ms": 200, "isolation": "thread", **keys}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


def fill_seqs(db, schema):
    return [row[0] for row in db.execute(f"SELECT seq FROM {schema}.fills ORDER BY seq")]


def test_an_event_with_a_nul_is_left_out_and_counted_the_rest_is_stored(tmp_path, schema, db, journal):
    # A KillSwitch whose req_id holds a NUL (the engine accepts it and echoes it
    # in the reply), and a fill whose text holds one, in one batch with good fills.
    before = write_fills(journal, 1, 5)
    journal.append_msg(RecordKind.COMMAND, kill_switch("ks\x00a", "engage", "global", None, session_id="adm"))
    bad_admin = journal.append_msg(RecordKind.EVENT, JournalEvent(
        session_id="adm", event=msgspec.structs.replace(admin(6), req_id="ks\x00a")))
    good_admin = journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=admin(7)))
    bad_fill = journal.append_msg(RecordKind.EVENT, JournalEvent(
        session_id="s1", event=msgspec.structs.replace(fill(8), text="a\x00b")))
    after = write_fills(journal, 9, 5)
    gateway = make_gateway(tmp_path, schema)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20), gateway.metrics.snapshot()
        assert fill_seqs(db, schema) == before + after
        admins = [row[0] for row in db.execute(f"SELECT seq FROM {schema}.admin_events")]
        assert admins == [good_admin] and bad_admin not in admins
        assert bad_fill not in fill_seqs(db, schema)
        metrics = gateway.metrics
        assert metrics.dropped == 2 and metrics.failures == 0 and gateway.running
        # Later events keep flowing.
        later = write_fills(journal, 20, 3)
        assert gateway.wait_for(journal.last_seq, 20)
        assert fill_seqs(db, schema) == before + after + later
    finally:
        gateway.stop()


def test_session_traffic_is_not_staged(tmp_path, schema, db, journal):
    # events = ["*"] hands the gateway types no table holds; a NUL in one of
    # them is no reason to refuse or drop anything.
    before = write_fills(journal, 1, 3)
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=TradeHistoryReply(
        req_id="h\x00x", account="ACC1", fills=[], transact_time=T0)))
    after = write_fills(journal, 4, 3)
    gateway = make_gateway(tmp_path, schema, events=["*"])
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20), gateway.metrics.snapshot()
        assert fill_seqs(db, schema) == before + after
        assert gateway.metrics.dropped == 0 and gateway.metrics.failures == 0
    finally:
        gateway.stop()


def test_a_refused_replace_or_cancel_leaves_the_order_row_as_it_was(tmp_path, schema, db):
    from engine.client import Client
    from engine.messages import ExecutionReport
    from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", extra=(
        f'[[gateways]]\ntype = "postgres"\ndsn = "{PG_DSN}"\nschema = "{schema}"\n'
        f'isolation = "thread"\npoll_interval_ms = 5\n')))

    def reports(client, cl_ord_id):
        return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id, 10)

    def order_row():
        [gateway] = eng.service.gateways
        assert gateway.wait_for(eng.call(lambda: eng.service.journal.last_seq), 20)
        return db.execute(f"SELECT cl_ord_id, orig_cl_ord_id, exec_type, ord_status, reject_reason, "
                          f"qty::text, price::text FROM {schema}.orders").fetchall()

    with ThreadedEngine(path) as eng, Client(f"tcp://127.0.0.1:{port}") as client:
        client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="r1")
        reports(client, "r1")
        client.replace("r1", account="DEMO1", qty="20", price="49.001", cl_ord_id="r1-px")  # off tick
        refused = reports(client, "r1-px")[-1]
        assert (refused.exec_type, refused.orig_cl_ord_id) == (ExecType.REJECTED, "r1")
        assert order_row() == [("r1", None, ExecType.NEW, OrdStatus.NEW, 0, "10", "49")]

        client.cancel("r1", account="DEMO1", cl_ord_id="c1")
        done = reports(client, "c1")[-1]
        assert done.exec_type == ExecType.CANCELED
        canceled = [("c1", "r1", ExecType.CANCELED, OrdStatus.CANCELED, 0, done.qty, "49")]
        assert order_row() == canceled
        client.cancel("c1", account="DEMO1", cl_ord_id="c2")        # too late: refused
        refused = reports(client, "c2")[-1]
        assert (refused.exec_type, refused.ord_status) == (ExecType.REJECTED, OrdStatus.CANCELED)
        time.sleep(0.05)
        assert order_row() == canceled
