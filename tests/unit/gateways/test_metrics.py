"""Gateway metrics: each gateway's /metrics endpoint, scraped over HTTP, and
the lag it reports against a real journal."""
import math

import pytest

from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import JournalEvent
from gateways import from_config
from gateways.base import Gateway
from gateways.metrics import GatewayMetricsRegistry
from gateways.tail import JournalTail
from tests.unit.gateways.helpers import T0, fill, healthz, parse, scrape, write_mixed

NAMES = ("delivered_total", "batches_total", "records_read_total", "retries_total",
         "undecodable_total", "dropped_total", "up", "cursor_seq", "journal_seq", "lag_records", "lag_seconds",
         "last_delivery_timestamp_seconds")


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


def zmq_gateway(tmp_path, **keys):
    table = {"type": "zmq", "name": "pub", "endpoint": "tcp://127.0.0.1:0",
             "replay_endpoint": "tcp://127.0.0.1:0", "poll_interval_ms": 1, "metrics_port": 0, **keys}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_scrape_a_running_gateway(tmp_path, journal, isolation):
    written = write_mixed(journal, 1, 50)  # commands, reports, fills, admin replies
    gateway = zmq_gateway(tmp_path, isolation=isolation)
    gateway.start()
    try:
        assert gateway.metrics_port  # the port picked for metrics_port = 0, from the child too
        assert gateway.wait_for(journal.last_seq, 20)
        metrics = scrape(gateway.metrics_port)
        assert {name for name, _ in metrics} == set(NAMES)
        got = {name: value for (name, who), value in metrics.items() if who == "pub"}
        assert got["delivered_total"] == len(written)
        assert got["records_read_total"] == journal.last_seq
        assert got["cursor_seq"] == got["journal_seq"] == journal.last_seq
        assert (got["lag_records"], got["lag_seconds"]) == (0, 0)
        assert (got["up"], got["retries_total"], got["undecodable_total"]) == (1, 0, 0)
        assert got["batches_total"] >= 1 and got["last_delivery_timestamp_seconds"] > T0 / 1e9
        assert healthz(gateway.metrics_port) == (200, "ok\n")
        # The counters follow the gateway.
        more = write_mixed(journal, 51, 10)
        assert gateway.wait_for(journal.last_seq, 20)
        assert scrape(gateway.metrics_port)[("delivered_total", "pub")] == len(written) + len(more)
    finally:
        gateway.stop()


def test_lag_behind_the_journal_in_records_and_time(tmp_path, journal):
    # Gateway and scraper see the same journal; the timestamps are chosen,
    # so the lag in time is exact.
    for i in range(1, 101):
        journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(i)), ts_ns=T0 + i * 10**9)
    gateway = zmq_gateway(tmp_path, isolation="thread", metrics_port=None)
    registry = GatewayMetricsRegistry([gateway])
    before = parse(registry.scrape().decode())
    assert before[("journal_seq", "pub")] == 100 and before[("up", "pub")] == 0
    # Its destination never opened, so its cursor is not known: neither it nor the
    # lag is (they read 0 and the whole journal, and the lag in time as the head's
    # age since 1970).
    for name in ("cursor_seq", "lag_records", "lag_seconds"):
        assert math.isnan(before[(name, "pub")]), name
    gateway.start()
    try:
        assert gateway.wait_for(100, 20)
    finally:
        gateway.stop()
    for i in range(101, 131):
        journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(i)), ts_ns=T0 + i * 10**9)
    behind = parse(registry.scrape().decode())
    assert behind[("cursor_seq", "pub")] == 100 and behind[("journal_seq", "pub")] == 130
    assert behind[("lag_records", "pub")] == 30 and behind[("lag_seconds", "pub")] == 30.0
    registry.collector.close()


def test_a_resuming_gateway_knows_the_time_of_its_cursor(tmp_path, journal):
    # Read on the way to the cursor, so the lag in time is right before the
    # first delivery after a restart.
    for i in range(1, 11):
        journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(i)), ts_ns=T0 + i)
    tail = JournalTail(JournalReader(tmp_path / "journal"))
    assert Gateway._seek(tail, 7) == T0 + 7
    assert [r.seq for r in tail.read(10)] == [8, 9, 10]
    assert Gateway._seek(tail, 0) == 0 and tail.read(1)[0].seq == 1
    assert Gateway._seek(tail, 10) == T0 + 10 and tail.read(10) == []
    assert Gateway._seek(tail, 12) == 0  # a cursor ahead of the journal: waits for it
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(11)))
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(12)))
    journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="s", event=fill(13)))
    assert [r.seq for r in tail.read(10)] == [13]
    tail.close()


def test_metrics_port_taken_is_an_error_at_start(tmp_path, journal):
    first = zmq_gateway(tmp_path, isolation="thread")
    first.start()
    try:
        second = zmq_gateway(tmp_path / "b", isolation="thread", metrics_port=first.metrics_port)
        with pytest.raises(OSError):
            second.start()
    finally:
        first.stop()
