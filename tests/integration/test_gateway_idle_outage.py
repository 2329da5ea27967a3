"""A destination that goes away while nothing is being delivered is noticed within seconds:
``connected`` (kronos_gateway_up) drops and the error is reported, before any event fails.

It stayed "up" (and /healthz 200) for as long as no event came (the gateway audit watched
6 s); nothing looked at an idle connection. Real servers behind a TCP proxy the test cuts.
"""
import uuid

import pytest

from engine.journal import JournalWriter
from gateways import from_config
from tests.unit.gateways.helpers import (PG_DSN, NatsServer, TcpProxy, needs_nats_server,
                                         needs_postgres, wait_until, with_port, write_fills)


def cut_while_idle(gateway, writer, proxy) -> str:
    """Deliver a little, cut the proxy, and return the error the idle gateway reports."""
    write_fills(writer, 1, 3)
    gateway.start()
    try:
        assert gateway.wait_for(writer.last_seq, 15) and gateway.metrics.connected
        proxy.stop()  # every connection cut; no event follows
        assert wait_until(lambda: not gateway.metrics.connected, 5), "still up"
        return gateway.metrics.last_error
    finally:
        gateway.stop()


@needs_nats_server()
@pytest.mark.parametrize("ack_timeout_s", [1, 30])
def test_an_idle_nats_connection_that_dies_is_noticed(tmp_path, ack_timeout_s):
    """Within seconds whatever ``ack_timeout_s`` is: the idle ping waited that long (up to
    an hour) with the gateway reported up and blocked."""
    server = NatsServer(tmp_path / "nats-store").start()
    proxy = TcpProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))).start()
    table = {"type": "nats", "servers": [f"nats://127.0.0.1:{proxy.port}"], "stream": "IDLE",
             "poll_interval_ms": 1, "backoff_initial_ms": 20, "backoff_max_ms": 200,
             "ack_timeout_s": ack_timeout_s, "isolation": "thread"}
    try:
        with JournalWriter(tmp_path / "journal", fsync="none") as writer:
            [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
            assert "nats" in cut_while_idle(gateway, writer, proxy)
    finally:
        proxy.stop()
        server.stop()


@needs_postgres()
def test_an_idle_postgres_connection_that_dies_is_noticed(tmp_path):
    import psycopg

    from gateways.postgres import drop_schema
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    schema = f"gw_idle_{uuid.uuid4().hex[:8]}"
    table = {"type": "postgres", "dsn": with_port(PG_DSN, "127.0.0.1", proxy.port),
             "schema": schema, "poll_interval_ms": 1, "backoff_initial_ms": 20,
             "backoff_max_ms": 200, "isolation": "thread"}
    try:
        with JournalWriter(tmp_path / "journal", fsync="none") as writer:
            [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
            assert cut_while_idle(gateway, writer, proxy)
    finally:
        proxy.stop()
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            drop_schema(db, schema)
