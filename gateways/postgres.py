"""PostgreSQL gateway: the trade store of fills, order states and admin events.

Each batch is one transaction: the events are COPYed into a temporary
staging table, then spread into the tables with set-based statements, and
the gateway's cursor row is moved in the same transaction, so the tables and
the cursor never disagree. Every statement is idempotent, which makes a
replay after a failure harmless. Only the event types the tables hold are
staged; an event PostgreSQL cannot store (a NUL in a text, a malformed
decimal) is logged as an error, counted in ``metrics.dropped`` and left out,
so one bad event never stops the trade store:

* ``fills``: one row per fill, keyed by the journal ``seq`` (``ON CONFLICT
  DO NOTHING``);
* ``orders``: one row per ``order_id``, upserted only when the incoming
  ``seq`` is newer than the stored one; a refused cancel or replace (a
  REJECTED report with ``orig_cl_ord_id``) leaves the order as it was;
* ``admin_events``: kill switch and limit reload replies (with the kill
  switch's action, scope and target), keyed by ``seq``;
* ``gateway_cursor``: the last journal seq each gateway has stored (moved with
  each batch, and over records with no event to store every
  ``cursor_interval_ms``: see :meth:`PostgresGateway.store_cursor`).

The tables are created by numbered migrations recorded in
``schema_migrations``; ``docs/gateways.md`` shows the schema.
:func:`trade_history` answers the engine's ``TradeHistoryRequest`` from
``fills``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Iterable, Iterator

import psycopg
from psycopg import sql

from engine.journal import JournalReader
from engine.messages import Side, TradeFill
from gateways.base import ForeignCursorError, Gateway
from gateways.config import PostgresConfig
from gateways.events import GatewayEvent

log = logging.getLogger(__name__)

# (version, description, statements); {schema} is the configured schema.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "fills, orders, admin events, gateway cursors", """
CREATE TABLE {schema}.fills (
    seq            bigint PRIMARY KEY,
    ts_ns          bigint NOT NULL,
    transact_time  bigint NOT NULL,
    account        text NOT NULL,
    symbol         text NOT NULL,
    side           smallint NOT NULL,
    cl_ord_id      text NOT NULL,
    order_id       text NOT NULL,
    exec_id        text,
    exec_type      smallint NOT NULL,
    ord_status     smallint NOT NULL,
    last_qty       numeric NOT NULL,
    last_px        numeric NOT NULL,
    cum_qty        numeric,
    leaves_qty     numeric,
    avg_px         numeric,
    venue          text
);
CREATE INDEX fills_account_time ON {schema}.fills (account, transact_time);
CREATE INDEX fills_exec_id ON {schema}.fills (exec_id);
CREATE TABLE {schema}.orders (
    order_id        text PRIMARY KEY,
    seq             bigint NOT NULL,
    ts_ns           bigint NOT NULL,
    transact_time   bigint NOT NULL,
    account         text NOT NULL,
    symbol          text NOT NULL,
    side            smallint NOT NULL,
    cl_ord_id       text NOT NULL,
    orig_cl_ord_id  text,
    ord_type        smallint,
    price           numeric,
    qty             numeric NOT NULL,
    cum_qty         numeric NOT NULL,
    leaves_qty      numeric NOT NULL,
    avg_px          numeric,
    ord_status      smallint NOT NULL,
    exec_type       smallint NOT NULL,
    venue           text,
    reject_reason   integer NOT NULL DEFAULT 0,
    text            text
);
CREATE INDEX orders_account ON {schema}.orders (account, cl_ord_id);
CREATE TABLE {schema}.admin_events (
    seq            bigint PRIMARY KEY,
    ts_ns          bigint NOT NULL,
    transact_time  bigint NOT NULL,
    session_id     text NOT NULL,
    req_id         text,
    ok             boolean,
    reject_reason  integer NOT NULL DEFAULT 0,
    reject_name    text,
    text           text
);
CREATE TABLE {schema}.gateway_cursor (
    name  text PRIMARY KEY,
    seq   bigint NOT NULL
);
"""),
    (2, "admin events: the kill switch's action, scope and target", """
ALTER TABLE {schema}.admin_events
    ADD COLUMN action text,
    ADD COLUMN scope  text,
    ADD COLUMN target text;
"""),
    (3, "gateway cursors: the journal each counts in", """
ALTER TABLE {schema}.gateway_cursor ADD COLUMN journal text;
"""),
]

# Staging columns, in COPY order; every event of a batch lands here first.
_STAGING_COLUMNS = ("seq", "ts_ns", "type", "session_id", "transact_time", "account", "symbol",
                    "side", "cl_ord_id", "orig_cl_ord_id", "order_id", "exec_id", "exec_type",
                    "ord_status", "ord_type", "price", "qty", "cum_qty", "leaves_qty", "avg_px",
                    "last_qty", "last_px", "venue", "reject_reason", "reject_name", "text", "req_id",
                    "ok", "action", "scope", "target")
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS gateway_staging (
    seq bigint, ts_ns bigint, type text, session_id text, transact_time bigint, account text,
    symbol text, side smallint, cl_ord_id text, orig_cl_ord_id text, order_id text, exec_id text,
    exec_type smallint, ord_status smallint, ord_type smallint, price numeric, qty numeric,
    cum_qty numeric, leaves_qty numeric, avg_px numeric, last_qty numeric, last_px numeric,
    venue text, reject_reason integer, reject_name text, text text, req_id text, ok boolean,
    action text, scope text, target text
) ON COMMIT DELETE ROWS
"""
_INSERT_FILLS = """
INSERT INTO {schema}.fills (seq, ts_ns, transact_time, account, symbol, side, cl_ord_id, order_id,
    exec_id, exec_type, ord_status, last_qty, last_px, cum_qty, leaves_qty, avg_px, venue)
SELECT seq, ts_ns, COALESCE(NULLIF(transact_time, 0), ts_ns), account, symbol, side, cl_ord_id,
    order_id, exec_id, exec_type, ord_status, last_qty, last_px, cum_qty, leaves_qty, avg_px, venue
FROM gateway_staging WHERE type = 'fill'
ON CONFLICT (seq) DO NOTHING
"""
# The newest report per order in the batch wins, and only over an older stored one.
# A refused cancel or replace (REJECTED, naming the order in orig_cl_ord_id; a
# refused new order never has one) changes nothing about the order: its
# cl_ord_id names the refused request, so it is not the order's state.
_UPSERT_ORDERS = """
INSERT INTO {schema}.orders AS o (order_id, seq, ts_ns, transact_time, account, symbol, side,
    cl_ord_id, orig_cl_ord_id, ord_type, price, qty, cum_qty, leaves_qty, avg_px, ord_status,
    exec_type, venue, reject_reason, text)
SELECT DISTINCT ON (order_id) order_id, seq, ts_ns, COALESCE(NULLIF(transact_time, 0), ts_ns),
    account, symbol, side, cl_ord_id, orig_cl_ord_id, ord_type, price, qty, cum_qty, leaves_qty,
    avg_px, ord_status, exec_type, venue, reject_reason, text
FROM gateway_staging
WHERE type IN ('fill', 'execution_report') AND order_id IS NOT NULL AND order_id <> ''
    AND (exec_type <> 8 OR orig_cl_ord_id IS NULL)      -- 8: ExecType.REJECTED
ORDER BY order_id, seq DESC
ON CONFLICT (order_id) DO UPDATE SET
    seq = EXCLUDED.seq, ts_ns = EXCLUDED.ts_ns, transact_time = EXCLUDED.transact_time,
    cl_ord_id = EXCLUDED.cl_ord_id, orig_cl_ord_id = EXCLUDED.orig_cl_ord_id,
    ord_type = COALESCE(EXCLUDED.ord_type, o.ord_type), price = COALESCE(EXCLUDED.price, o.price),
    qty = EXCLUDED.qty, cum_qty = EXCLUDED.cum_qty, leaves_qty = EXCLUDED.leaves_qty,
    avg_px = EXCLUDED.avg_px, ord_status = EXCLUDED.ord_status, exec_type = EXCLUDED.exec_type,
    venue = COALESCE(EXCLUDED.venue, o.venue), reject_reason = EXCLUDED.reject_reason,
    text = EXCLUDED.text
WHERE o.seq < EXCLUDED.seq
"""
_INSERT_ADMIN = """
INSERT INTO {schema}.admin_events (seq, ts_ns, transact_time, session_id, req_id, ok, reject_reason,
    reject_name, text, action, scope, target)
SELECT seq, ts_ns, COALESCE(NULLIF(transact_time, 0), ts_ns), session_id, req_id, ok,
    reject_reason, reject_name, text, action, scope, target
FROM gateway_staging WHERE type = 'admin'
ON CONFLICT (seq) DO NOTHING
"""
_CLEAR_STAGING = "DELETE FROM gateway_staging"
#: Errors that refuse an event's values, the same on every retry: a value a
#: column cannot take (class 22), a constraint (23), a value too large for an
#: index (54000). Connection and server errors are not among them: those are
#: retried, as a destination that is down.
_REFUSED = (psycopg.errors.DataError, psycopg.errors.IntegrityError,
            psycopg.errors.ProgramLimitExceeded)
# The event types the statements above read from the staging table.
_STORED_TYPES = frozenset(("fill", "execution_report", "admin"))
_STORE_CURSOR = """
INSERT INTO {schema}.gateway_cursor (name, seq, journal) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, journal = EXCLUDED.journal
WHERE gateway_cursor.seq < EXCLUDED.seq
"""


def _q(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def migrate(conn: psycopg.Connection, schema: str) -> list[int]:
    """Create the schema and apply the migrations it lacks; returns the versions applied.

    Concurrent gateways on one database are serialised by an advisory lock.

    Parameters
    ----------
    conn : psycopg.Connection
        Not in a transaction; committed on return.
    schema : str
        Schema of the tables.
    """
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kronos-gateway-{schema}",))
        conn.execute(_q("CREATE SCHEMA IF NOT EXISTS {schema}", schema))
        conn.execute(_q("""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
            version integer PRIMARY KEY, description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""", schema))
        done = {row[0] for row in conn.execute(_q("SELECT version FROM {schema}.schema_migrations", schema))}
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            conn.execute(_q(statements, schema))
            conn.execute(_q("INSERT INTO {schema}.schema_migrations (version, description) "
                            "VALUES (%s, %s)", schema), (version, description))
            applied.append(version)
    if applied:
        log.info("postgres gateway: schema %s migrated to version %d", schema, applied[-1])
    return applied


def _row(event: GatewayEvent) -> tuple:
    return (event.seq, event.ts_ns, event.type, event.session_id, event.transact_time, event.account,
            event.symbol, event.side, event.cl_ord_id, event.orig_cl_ord_id, event.order_id,
            event.exec_id, event.exec_type, event.ord_status, event.ord_type, event.price, event.qty,
            event.cum_qty, event.leaves_qty, event.avg_px, event.last_qty, event.last_px, event.venue,
            event.reject_reason, event.reject_name, event.text, event.req_id, event.ok,
            event.action, event.scope, event.target)


class PostgresGateway(Gateway):
    """Write fills, order states and admin events to PostgreSQL, one transaction per batch."""

    type = "postgres"

    def __init__(self, config: PostgresConfig, source: JournalReader, data_dir):
        super().__init__(config, source, data_dir)
        self._conn: psycopg.Connection | None = None
        schema = config.schema
        self._copy = sql.SQL("COPY gateway_staging ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, _STAGING_COLUMNS)))
        self._statements = [_q(s, schema) for s in (_INSERT_FILLS, _UPSERT_ORDERS, _INSERT_ADMIN)]
        self._store_cursor = _q(_STORE_CURSOR, schema)
        # At open, this gateway's own row is _check_journal's; in a batch any row counts
        # (an engine with the same gateway name on another journal would take it over).
        self._foreign_cursor = _q("SELECT name, journal FROM {schema}.gateway_cursor "
                                  "WHERE name <> %s AND journal <> %s LIMIT 1", schema)
        self._foreign_batch = _q("SELECT name, journal FROM {schema}.gateway_cursor "
                                 "WHERE journal <> %s LIMIT 1", schema)
        # Serialises the batches of every gateway storing in the schema (see _write).
        self._batch_lock = ("SELECT pg_advisory_xact_lock(hashtext(%s))",
                            (f"kronos-gateway-batch-{schema}",))

    def open(self) -> None:
        config: PostgresConfig = self.config
        self._conn = psycopg.connect(config.conninfo, **config.connect_kwargs(),
                                     application_name=f"kronos-gateway-{self.name}")
        self._conn.autocommit = True
        with self._deadline("the schema's migrations"):
            migrate(self._conn, config.schema)
            self._conn.execute(_STAGING)

    @contextlib.contextmanager
    def _deadline(self, what: str) -> Iterator[None]:
        """Cut the connection when ``what`` has waited ``io_timeout_s`` for the server.

        libpq's TCP timeouts see a server that stops answering, but not a
        middlebox (a proxy, a load balancer) that keeps acknowledging and
        forwards nothing: a statement then waited for good, with the gateway
        reported up and healthy. Shutting the socket down from a timer ends
        libpq's wait; the error is the gateway's failure, retried with its
        back-off like any other.
        """
        conn, seconds = self._conn, self.config.io_timeout_s
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(seconds, cut)
        timer.daemon = True
        timer.start()
        try:
            yield
        except psycopg.Error as exc:
            if fired.is_set():
                raise ConnectionError(f"postgres: no answer to {what} in {seconds} s "
                                      f"(io_timeout_s): the connection was cut") from exc
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def check_alive(self) -> None:
        """``SELECT 1`` on the gateway's connection: an idle one whose server went away
        raises here, not at the next event."""
        with self._deadline("a SELECT 1"):
            self._conn.execute("SELECT 1")

    def load_cursor(self) -> int:
        # The table is the truth: it moved in the same transaction as the rows.
        row = self._conn.execute(_q("SELECT seq, journal FROM {schema}.gateway_cursor "
                                    "WHERE name = %s", self.config.schema), (self.name,)).fetchone()
        self._refuse_foreign(self._conn)
        if not row:
            return 0
        self.cursor_journal = row[1]
        return row[0]

    def _refuse_foreign(self, conn, *, in_batch: bool = False) -> None:
        """Raise ``ForeignCursorError`` when another journal's gateway stores in this schema.

        Rows are keyed by seq and order id, which every journal numbers from
        1: another journal's events would be taken for repeats. Checked at
        open and again in each batch's transaction (see :meth:`_write`).
        """
        journal = self.journal_id or ""
        other = conn.execute(self._foreign_batch, (journal,)).fetchone() if in_batch else \
            conn.execute(self._foreign_cursor, (self.name, journal)).fetchone()
        if other is not None:
            raise ForeignCursorError(
                f"schema {self.config.schema} holds the events of journal {other[1]} (gateway "
                f"{other[0]!r}), not of {self.journal_id}: its rows are keyed by seq and order "
                f"id, which every journal numbers from 1. Give each engine's journal its own "
                f"schema")

    def cursor_where(self) -> str:
        return f"the row {self.name!r} of {self.config.schema}.gateway_cursor"

    def store_cursor(self, seq: int, *, force: bool = False) -> None:
        """Move the ``gateway_cursor`` row over records read past with no event to store
        (commands, types not selected), at most every ``cursor_interval_ms`` unless forced.

        A batch with events moves the row with its rows; without this, the row
        stayed at the last such batch while the gateway read on, and once the
        segments it had read past were archived (docs/engine.md: those before
        every gateway's ``/metrics`` cursor) a restarted gateway resumed inside
        them and stopped on ``JournalGapError``. Stored as a batch of no events
        (the schema's lock and journal check included). A failure is not the
        gateway's: the row only lags, and the next batch or check finds a
        destination that is down.
        """
        if self._conn is None or self._conn.closed:
            return
        now = self._cursor_due(seq, force)
        if now is None:
            return
        self._cursor_stored_at = now
        try:
            with self._deadline("the cursor row"):
                self._write([], seq)
        except (psycopg.Error, ConnectionError, ForeignCursorError) as exc:
            log.debug("gateway %s: cursor row not moved to seq %d: %s", self.name, seq, exc)
            return
        self._cursor_stored = seq

    def deliver(self, events: list[GatewayEvent], through_seq: int) -> None:
        stored = [event for event in events if event.type in _STORED_TYPES]
        with self._deadline(f"a batch of {len(stored)} events"):
            self._deliver(stored, through_seq)
        self._cursor_stored = through_seq  # (the row moved with the batch)

    def _deliver(self, stored: list[GatewayEvent], through_seq: int) -> None:
        try:
            self._write(stored, through_seq)
        except _REFUSED:
            # Reports are republished as the engine journaled them (the fast
            # decode does not re-check decimal strings, and a client's req_id
            # or cl_ord_id may hold a NUL, which text columns refuse; a
            # journal written by a buggy engine may lack a value a column
            # requires, or hold one too large for an index), so a value the
            # tables cannot take would fail this batch on every retry and
            # stop the gateway for good. Store the events one by one
            # instead, leave out those PostgreSQL refuses (each logged as an
            # error, with its journal seq) and store the rest.
            refused = self._write(stored, through_seq, one_by_one=True)
            for event, exc in refused:
                log.error("gateway %s: journal seq %d cannot be stored (%s); left out: %s",
                          self.name, event.seq, exc, event)
            self._metrics.dropped += len(refused)

    def _write(self, events: list[GatewayEvent], through_seq: int, *,
               one_by_one: bool = False) -> list[tuple[GatewayEvent, psycopg.Error]]:
        """Store ``events`` and the cursor in one transaction.

        With ``one_by_one``, each event is staged and stored in a savepoint of
        its own, and those PostgreSQL refuses (``_REFUSED``: a value a column
        cannot take, a constraint, a value too large for an index) are left
        out and returned (with the error); otherwise the whole batch is one
        COPY and one statement per table.
        """
        conn = self._conn
        refused = []
        with conn.transaction():
            # Two engines' gateways opened on an empty schema both passed the
            # check at open: the first batch stored decides whose the schema
            # is. The lock orders the batches, and the check (a statement after
            # the lock, so it sees the batch committed before it) refuses the
            # other journal's before any of its rows is written.
            conn.execute(*self._batch_lock)
            self._refuse_foreign(conn, in_batch=True)
            with conn.cursor() as cur:
                if one_by_one:
                    for event in self.paced(events):
                        try:
                            with conn.transaction():
                                with cur.copy(self._copy) as copy:
                                    copy.write_row(_row(event))
                                for statement in self._statements:
                                    cur.execute(statement)
                                cur.execute(_CLEAR_STAGING)  # the next event's alone there
                        except _REFUSED as exc:
                            refused.append((event, exc))
                elif events:  # (none: the cursor alone, see store_cursor)
                    with cur.copy(self._copy) as copy:
                        for event in self.paced(events):
                            copy.write_row(_row(event))
                    self.yield_to_engine()
                    for statement in self._statements:
                        cur.execute(statement)
                cur.execute(self._store_cursor, (self.name, through_seq, self.journal_id))
        return refused

    def trade_history(self, account: str, start_ns: int, end_ns: int,
                      symbol: str | None = None) -> list[TradeFill]:
        """Fills of ``account`` with ``start_ns <= transact_time < end_ns`` (see :func:`trade_history`).

        Opens a connection of its own: the gateway's connection belongs to
        its thread. Blocking: call it from an executor, not the engine's loop.
        """
        config: PostgresConfig = self.config
        with psycopg.connect(config.conninfo, **config.connect_kwargs()) as conn:
            return trade_history(conn, account, start_ns, end_ns, symbol, schema=config.schema)


def trade_history(conn: psycopg.Connection, account: str, start_ns: int, end_ns: int,
                  symbol: str | None = None, *, schema: str = "kronos",
                  limit: int | None = None) -> list[TradeFill]:
    """The fills of an account in a time range, oldest first, as the protocol's ``TradeFill``.

    Parameters
    ----------
    conn : psycopg.Connection
    account : str
    start_ns, end_ns : int
        ``start_ns <= transact_time < end_ns`` (ns since the epoch), as in
        ``TradeHistoryRequest``.
    symbol : str, optional
        Only this symbol.
    schema : str
        Schema of the gateway's tables.
    limit : int, optional
        At most this many fills.

    Returns
    -------
    list of TradeFill
    """
    query = ("SELECT exec_id, order_id, cl_ord_id, symbol, side, last_qty::text, last_px::text, "
             "transact_time, venue, seq FROM {schema}.fills "
             "WHERE account = %s AND transact_time >= %s AND transact_time < %s")
    params: list = [account, start_ns, end_ns]
    if symbol is not None:
        query += " AND symbol = %s"
        params.append(symbol)
    query += " ORDER BY transact_time, seq"
    if limit is not None:
        query += " LIMIT %s"
        params.append(limit)
    rows = conn.execute(_q(query, schema), params).fetchall()
    return [TradeFill(exec_id=exec_id or f"seq-{seq}", order_id=order_id, cl_ord_id=cl_ord_id,
                      symbol=sym, side=Side(side), last_qty=last_qty, last_px=last_px,
                      transact_time=transact_time, venue=venue)
            for exec_id, order_id, cl_ord_id, sym, side, last_qty, last_px, transact_time, venue, seq
            in rows]


def drop_schema(conn: psycopg.Connection, schema: str) -> None:
    """Drop the gateway's schema and everything in it (tests, decommissioning)."""
    conn.execute(_q("DROP SCHEMA IF EXISTS {schema} CASCADE", schema))


__all__: Iterable[str] = ("PostgresGateway", "migrate", "trade_history", "drop_schema", "MIGRATIONS")
