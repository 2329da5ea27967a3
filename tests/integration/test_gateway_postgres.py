"""PostgreSQL gateway against a real server: an outage through a TCP proxy
the test controls, 100,000 fills, idempotent replays, order-state upserts,
migrations and the trade-history query; an event the tables cannot hold (a
NUL in a text) is left out and counted instead of stopping the trade store,
session traffic is not staged, and a refused cancel or replace leaves the
order's row as it was (with a real engine producing the reports)."""
import os
import time
import uuid

import pytest

psycopg = pytest.importorskip("psycopg")

from engine.journal import JournalWriter, RecordKind  # noqa: E402
import msgspec  # noqa: E402

from engine.messages import (  # noqa: E402
    ExecType, JournalEvent, OrdStatus, Side, TradeHistoryReply,
)
from gateways import from_config  # noqa: E402
from gateways.postgres import MIGRATIONS, drop_schema, migrate, trade_history  # noqa: E402
from tests.unit.gateways.helpers import (  # noqa: E402
    PG_DSN, T0, TcpProxy, admin, fill, healthz, kill_switch, new_ack, needs_postgres, wait_until,
    with_port, write_fills, write_kill_switch, write_mixed,
)
from tests.unit.gateways.helpers import scrape as scrape_all  # noqa: E402


def scrape(port: int) -> dict[str, float]:
    """The postgres gateway's metrics, by name without the ``kronos_gateway_`` prefix."""
    return {name: value for (name, gateway), value in scrape_all(port).items() if gateway == "postgres"}

pytestmark = needs_postgres()


@pytest.fixture
def schema():
    name = f"gw_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
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
             "backoff_initial_ms": 20, "backoff_max_ms": 200, **keys}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


def fill_seqs(db, schema):
    return [row[0] for row in db.execute(f"SELECT seq FROM {schema}.fills ORDER BY seq")]


def behind_proxy(tmp_path, schema, **keys):
    """A gateway that reaches PostgreSQL through a TCP proxy the test can cut: (proxy, gateway)."""
    port = int(psycopg.conninfo.conninfo_to_dict(PG_DSN).get("port") or 5432)
    proxy = TcpProxy(("127.0.0.1", port)).start()
    return proxy, make_gateway(tmp_path, schema, dsn=with_port(PG_DSN, "127.0.0.1", proxy.port),
                               **keys)


def test_outage_then_catch_up_exactly_once_in_order(tmp_path, schema, db, journal):
    proxy, gateway = behind_proxy(tmp_path, schema, batch_size=100)
    gateway.start()
    try:
        before = write_fills(journal, 1, 500)
        assert gateway.wait_for(journal.last_seq, 20)
        proxy.stop()  # the database is unreachable: connections reset, new ones refused
        during = write_fills(journal, 501, 1500)
        assert wait_until(lambda: not gateway.metrics.connected, 10)
        time.sleep(0.3)
        assert gateway.metrics.cursor < journal.last_seq
        failures = gateway.metrics.failures
        assert failures >= 1
        proxy.start()
        after = write_fills(journal, 2001, 500)
        assert gateway.wait_for(journal.last_seq, 30), gateway.metrics.snapshot()
    finally:
        gateway.stop()
        proxy.stop()
    assert fill_seqs(db, schema) == before + during + after
    # Rows inserted in journal order: the table's physical order follows seq.
    cursor = db.execute(f"SELECT seq FROM {schema}.gateway_cursor WHERE name = 'postgres'").fetchone()
    assert cursor == (journal.last_seq,)


def test_a_database_that_acknowledges_and_never_answers_is_a_destination_down(
        tmp_path, schema, db, journal):
    """A middlebox that keeps acknowledging and forwards nothing (an audit: 40 s of
    'up' and no delivery, and no bound at all against a real black hole): libpq's TCP
    timeouts never fire. A batch past io_timeout_s now cuts the connection."""
    proxy, gateway = behind_proxy(tmp_path, schema, batch_size=100, io_timeout_s=3)
    gateway.start()
    try:
        before = write_fills(journal, 1, 300)
        assert gateway.wait_for(journal.last_seq, 20)
        proxy.hanging.set()
        during = write_fills(journal, 301, 300)
        hung = time.monotonic()
        assert wait_until(lambda: not gateway.metrics.connected, 15), gateway.metrics.snapshot()
        assert time.monotonic() - hung < 12
        assert gateway.metrics.failures >= 1
        proxy.hanging.clear()
        assert gateway.wait_for(journal.last_seq, 30), gateway.metrics.snapshot()
    finally:
        gateway.stop()
        proxy.stop()
    assert fill_seqs(db, schema) == before + during


def test_hundred_thousand_fills(tmp_path, schema, db, journal):
    seqs = write_fills(journal, 1, 100_000, with_commands=False)
    gateway = make_gateway(tmp_path, schema, batch_size=5000)
    start = time.perf_counter()
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 90), gateway.metrics.snapshot()
    finally:
        gateway.stop()
    elapsed = time.perf_counter() - start
    count, low, high, distinct = db.execute(
        f"SELECT count(*), min(seq), max(seq), count(DISTINCT exec_id) FROM {schema}.fills").fetchone()
    assert (count, low, high, distinct) == (100_000, seqs[0], seqs[-1], 100_000)
    assert db.execute(f"SELECT count(*) FROM {schema}.orders").fetchone() == (100_000,)
    print(f"postgres: 100,000 fills in {elapsed:.2f} s ({100_000 / elapsed:,.0f}/s)")


def test_replay_is_idempotent_and_orders_keep_the_newest_state(tmp_path, schema, db, journal):
    written = write_mixed(journal, 1, 200)
    gateway = make_gateway(tmp_path, schema)
    gateway.start()
    assert gateway.wait_for(journal.last_seq, 20)
    gateway.stop()
    snapshot = lambda: (db.execute(f"SELECT * FROM {schema}.fills ORDER BY seq").fetchall(),  # noqa: E731
                        db.execute(f"SELECT * FROM {schema}.orders ORDER BY order_id").fetchall(),
                        db.execute(f"SELECT * FROM {schema}.admin_events ORDER BY seq").fetchall())
    first = snapshot()
    assert [r[0] for r in first[0]] == [s for s, k in written.items() if k == "fill"]
    assert len(first[1]) == 200 and {r[15] for r in first[1]} == {2}  # every order FILLED
    assert [r[0] for r in first[2]] == [s for s, k in written.items() if k == "admin"]
    # Forget the cursor: the whole journal is delivered again, nothing changes.
    db.execute(f"DELETE FROM {schema}.gateway_cursor")
    again = make_gateway(tmp_path, schema)
    again.start()
    try:
        assert again.wait_for(journal.last_seq, 20)
        assert again.metrics.delivered == len(written)
    finally:
        again.stop()
    assert snapshot() == first


def test_an_older_report_does_not_overwrite_a_newer_order_state(tmp_path, schema, db, journal):
    gateway = make_gateway(tmp_path, schema, batch_size=1)  # one report per transaction
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=new_ack(1)))
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(1)))
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
    finally:
        gateway.stop()
    row = db.execute(f"SELECT seq, ord_status, cum_qty::text FROM {schema}.orders WHERE order_id='O1'").fetchone()
    assert row == (2, 2, "10")
    # Redeliver only the NEW (seq 1): the stored FILLED state (seq 2) stays.
    db.execute(f"UPDATE {schema}.gateway_cursor SET seq = 0")
    db.execute(f"DELETE FROM {schema}.fills")
    again = make_gateway(tmp_path, schema, batch_size=1)
    again.start()
    try:
        assert again.wait_for(journal.last_seq, 20)
    finally:
        again.stop()
    assert db.execute(f"SELECT seq, ord_status FROM {schema}.orders WHERE order_id='O1'").fetchone() == (2, 2)
    assert fill_seqs(db, schema) == [2]


def test_migrations_are_recorded_and_run_once(schema, db):
    assert migrate(db, schema) == [v for v, _, _ in MIGRATIONS]
    assert migrate(db, schema) == []
    rows = db.execute(f"SELECT version, description FROM {schema}.schema_migrations").fetchall()
    assert rows == [(v, d) for v, d, _ in MIGRATIONS]


def test_trade_history(tmp_path, schema, db, journal):
    write_mixed(journal, 1, 100)
    gateway = make_gateway(tmp_path, schema)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
        fills = gateway.trade_history("ACC1", T0, T0 + 50 * 1000, symbol="BBB")
    finally:
        gateway.stop()
    # Orders i with i % 3 == 0 (ACC1), i % 4 == 1 (BBB), transact_time < T0 + 50 us: i in 9, 21, 33, 45.
    assert [(f.cl_ord_id, f.last_qty) for f in fills] == [
        (f"C{i}", qty) for i in (9, 21, 33, 45) for qty in ("4", "10")]
    assert all(f.symbol == "BBB" and f.side == Side.BUY and f.venue == "XNAS" for f in fills)
    assert fills[0].last_px == "109.25" and fills[0].exec_id == "E9p"
    everything = trade_history(db, "ACC1", 0, 2**62, schema=schema)
    assert len(everything) == 2 * 33 and all(f.transact_time >= T0 for f in everything)
    assert trade_history(db, "ACC1", T0 + 10**9, 2**62, schema=schema) == []


def test_admin_events_carry_the_kill_switch_scope_and_target(tmp_path, schema, db, journal):
    write_fills(journal, 1, 20)
    account = write_kill_switch(journal, "K1", "account", "ACC2", cancels=3)
    symbol = write_kill_switch(journal, "K2", "symbol", "BRK.B", action="release")
    everything = write_kill_switch(journal, "K3", "global", None)
    gateway = make_gateway(tmp_path, schema, batch_size=4)  # the K1 request and reply in different batches
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
    finally:
        gateway.stop()
    rows = db.execute(f"SELECT seq, req_id, ok, action, scope, target FROM {schema}.admin_events "
                      f"ORDER BY seq").fetchall()
    assert rows == [(account, "K1", True, "engage", "account", "ACC2"),
                    (symbol, "K2", True, "release", "symbol", "BRK.B"),
                    (everything, "K3", True, "engage", "global", None)]


def test_metrics_show_an_outage_and_the_catch_up(tmp_path, schema, journal):
    # Scraped over HTTP from the gateway's own process while the database is
    # unreachable (a real reset and refused connection), then back.
    proxy, gateway = behind_proxy(tmp_path, schema, metrics_port=0)
    gateway.start()
    try:
        first = write_fills(journal, 1, 100)
        assert gateway.wait_for(journal.last_seq, 20)
        up = scrape(gateway.metrics_port)
        assert (up["up"], up["lag_records"], up["retries_total"]) == (1, 0, 0)
        assert up["delivered_total"] == len(first) and up["cursor_seq"] == journal.last_seq
        assert healthz(gateway.metrics_port) == (200, "ok\n")
        proxy.stop()
        # Fills alone this time: a command record read on its own would be passed
        # (nothing to deliver) while the database is down, and move the cursor by
        # one, depending on how the gateway's read falls against these writes.
        write_fills(journal, 101, 100, with_commands=False)
        assert wait_until(lambda: scrape(gateway.metrics_port)["up"] == 0, 10)
        assert wait_until(lambda: scrape(gateway.metrics_port)["retries_total"] >= 2, 10)
        down = scrape(gateway.metrics_port)
        assert down["journal_seq"] == journal.last_seq and down["lag_records"] == 100
        assert down["cursor_seq"] == 200 and down["lag_seconds"] >= 0
        status, detail = healthz(gateway.metrics_port)
        assert status == 503 and detail.startswith("postgres: ")  # with the connection error
        proxy.start()
        assert gateway.wait_for(journal.last_seq, 30), gateway.metrics.snapshot()
        back = scrape(gateway.metrics_port)
        assert (back["up"], back["lag_records"], back["lag_seconds"]) == (1, 0, 0)
        assert back["delivered_total"] == 200
    finally:
        gateway.stop()
        proxy.stop()


def test_a_malformed_decimal_is_left_out_not_retried_forever(tmp_path, schema, db, journal):
    """Only an engine bug journals a decimal the tables refuse; the batch around it is
    stored without it, and the gateway goes on (a retry of the batch would never pass)."""
    import msgspec

    from engine.journal import RecordKind
    before = write_fills(journal, 1, 5)
    bad = journal.append_msg(RecordKind.EVENT, JournalEvent(
        session_id="s1", event=msgspec.structs.replace(fill(6), last_px="1.2.3")))
    after = write_fills(journal, 7, 5)
    gateway = make_gateway(tmp_path, schema, isolation="thread")
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
        assert fill_seqs(db, schema) == before + after
        assert bad not in fill_seqs(db, schema) and gateway.running
    finally:
        gateway.stop()


def test_engine_history_beyond_memory_comes_from_the_trade_store(tmp_path, schema):
    """[history] store = a postgres gateway: fills memory dropped are answered from the
    gateway's tables once it has delivered them (complete), and while it has not, the
    answer says the store is behind (incomplete, never silently short)."""
    from engine.client import Client
    from engine.messages import TradeHistoryReply
    from tests.integration.engine_harness import ThreadedEngine, config_text
    from tests.integration.engine_harness import free_port as engine_port
    from tests.integration.test_engine_e2e import cross

    port = engine_port()
    extra = (f'[history]\nmax_fills_per_account = 1\nstore = "pg"\n\n'
             f'[[gateways]]\ntype = "postgres"\nname = "pg"\ndsn = "{PG_DSN}"\n'
             f'schema = "{schema}"\npoll_interval_ms = 5\n')
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", extra=extra))
    with ThreadedEngine(path) as eng, Client(f"tcp://127.0.0.1:{port}") as client:
        gateway = eng.service.gateways[0]

        def history(start: int) -> TradeHistoryReply:
            client.history("DEMO1", start, time.time_ns() + 10**9)
            return client.recv_until(lambda m: isinstance(m, TradeHistoryReply), 10)[-1]

        t0 = time.time_ns()
        for i in range(3):
            cross(eng, client, str(i))
        assert gateway.wait_for(eng.call(lambda: eng.service.journal.last_seq), 20)
        whole = history(t0)
        assert whole.complete and whole.text is None
        assert [f.cl_ord_id for f in whole.fills] == ["b0", "b1", "b2"]
        assert len({f.exec_id for f in whole.fills}) == 3
        # The store stops following the journal: what memory drops next is not in it.
        gateway.stop()
        for i in range(3, 6):
            cross(eng, client, str(i))
        behind = history(t0)
        assert not behind.complete and "not caught up" in behind.text
        assert [f.cl_ord_id for f in behind.fills][-1] == "b5"


def test_a_delivery_offers_the_cpu_between_rows(tmp_path, schema, db, journal, monkeypatch):
    """With cpu_slice_us of 1 ns the gateway yields at every step, inside the COPY of a
    batch too (every 4 rows, then before the batch's statements)."""
    from gateways import base
    calls = []
    monkeypatch.setattr(base, "_sched_yield", lambda: calls.append(1))
    written = write_fills(journal, 1, 40)
    gateway = make_gateway(tmp_path, schema, isolation="thread", cpu_slice_us=0.001, batch_size=100)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
    finally:
        gateway.stop()
    assert fill_seqs(db, schema) == written
    assert len(calls) >= 12


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
    gateway = make_gateway(tmp_path, schema, isolation="thread")
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


def test_events_a_table_refuses_are_left_out_not_retried_for_ever(tmp_path, schema, db, journal):
    """A fill with no last_qty (a NOT NULL column) and one whose cl_ord_id is too long for the
    table's index: PostgreSQL refuses them when the staged rows are inserted, not in the COPY.
    Only the COPY's DataError was handled: the batch failed on every retry, for good."""
    before = write_fills(journal, 1, 3)
    no_price = journal.append_msg(RecordKind.EVENT, JournalEvent(
        session_id="s1", event=msgspec.structs.replace(fill(4), last_qty=None)))
    long_id = journal.append_msg(RecordKind.EVENT, JournalEvent(
        session_id="s1", event=msgspec.structs.replace(fill(5), cl_ord_id=os.urandom(4000).hex())))
    after = write_fills(journal, 6, 3)
    gateway = make_gateway(tmp_path, schema, isolation="thread")
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20), gateway.metrics.snapshot()
        stored = fill_seqs(db, schema)
        assert stored == before + after and no_price not in stored and long_id not in stored
        assert gateway.metrics.dropped == 2 and gateway.metrics.failures == 0
    finally:
        gateway.stop()


def test_session_traffic_is_not_staged(tmp_path, schema, db, journal):
    # events = ["*"] hands the gateway types no table holds; a NUL in one of
    # them is no reason to refuse or drop anything.
    before = write_fills(journal, 1, 3)
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=TradeHistoryReply(
        req_id="h\x00x", account="ACC1", fills=[], transact_time=T0)))
    after = write_fills(journal, 4, 3)
    gateway = make_gateway(tmp_path, schema, isolation="thread", events=["*"])
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


def test_the_connection_gives_up_on_a_silent_server_within_io_timeout_s(tmp_path, schema, journal):
    """A server that stops answering (a partition) kept a statement waiting for the kernel's
    retransmissions, about 15 minutes, with the gateway reporting itself up: the connection
    now carries libpq's tcp_user_timeout and TCP keepalives from io_timeout_s."""
    write_fills(journal, 1, 2)
    gateway = make_gateway(tmp_path, schema, isolation="thread", io_timeout_s=9)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
        params = gateway._conn.info.get_parameters()
        assert (params["tcp_user_timeout"], params["keepalives"], params["keepalives_idle"],
                params["keepalives_interval"], params["keepalives_count"]) == \
            ("9000", "1", "3", "1", "3")
    finally:
        gateway.stop()
