"""NATS JetStream gateway against real nats-server processes: an outage of a
server the test owns, 100,000 fills, de-duplication ids, subjects."""
import logging
import socket
import threading
import time
import uuid

import pytest

from engine.journal import JournalWriter, journal_identity
from gateways import from_config
from gateways.base import parse_message_id
from tests.unit.gateways.helpers import (
    NatsServer, free_port, healthz, needs_nats_server, scrape, stream_events, wait_until, write_fills,
    write_mixed,
)

pytestmark = needs_nats_server()


def shared_nats_url() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return "nats://127.0.0.1:4222"
    except OSError:
        return None


@pytest.fixture
def server(tmp_path):
    server = NatsServer(tmp_path / "nats-store").start()
    yield server
    server.stop()


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


def make_gateway(tmp_path, url, stream, **keys):
    table = {"type": "nats", "servers": [url], "stream": stream, "poll_interval_ms": 1,
             "backoff_initial_ms": 20, "backoff_max_ms": 200, "ack_timeout_s": 2, **keys}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


def deduplicated(messages):
    seen, out = set(), []
    for event, _, _ in messages:
        if event.seq not in seen:
            seen.add(event.seq)
            out.append(event.seq)
    return out


def test_server_down_then_catch_up_exactly_once_in_order(tmp_path, server, journal):
    gateway = make_gateway(tmp_path, server.url, "OUTAGE", batch_size=100)
    gateway.start()
    try:
        before = write_fills(journal, 1, 500)
        assert gateway.wait_for(journal.last_seq, 20)
        server.stop()
        during = write_fills(journal, 501, 1500)
        assert wait_until(lambda: gateway.metrics.failures >= 1, 10)
        assert not gateway.metrics.connected and gateway.metrics.cursor < journal.last_seq
        server.start()  # same port, same store directory
        after = write_fills(journal, 2001, 500)
        assert gateway.wait_for(journal.last_seq, 30), gateway.metrics.snapshot()
    finally:
        gateway.stop()
    messages = stream_events(server.url, "OUTAGE")
    assert deduplicated(messages) == before + during + after
    # Nats-Msg-Id let the server drop what an interrupted batch had already stored.
    assert len(messages) == len(before + during + after)


def test_a_server_gone_mid_publish_is_seen_at_once_not_after_ack_timeout(tmp_path, server,
                                                                         journal):
    """nats-py left the flush of a delivery in flight waiting out ack_timeout_s after the
    server went (an audit: 30 s of 'up' and no delivery after a restart 2 s later). The
    connection's end now fails the delivery at once: down, then caught up soon after."""
    gateway = make_gateway(tmp_path, server.url, "GONE", batch_size=2000, ack_timeout_s=120)
    writing, written = threading.Event(), []
    writing.set()

    def keep_writing():
        first = 1
        while writing.is_set():
            written.extend(write_fills(journal, first, 200))
            first += 200
            time.sleep(0.002)

    writer = threading.Thread(target=keep_writing)
    gateway.start()
    writer.start()
    try:
        assert wait_until(lambda: gateway.metrics.cursor > 2000, 20)
        server.stop()
        stopped = time.monotonic()
        assert wait_until(lambda: not gateway.metrics.connected, 10), gateway.metrics.snapshot()
        assert time.monotonic() - stopped < 10
        server.start()
        writing.clear()
        writer.join()
        assert gateway.wait_for(journal.last_seq, 30), gateway.metrics.snapshot()
    finally:
        writing.clear()
        writer.join()
        gateway.stop()
    assert deduplicated(stream_events(server.url, "GONE")) == written


def test_hundred_thousand_fills(tmp_path, journal):
    url = shared_nats_url()
    own = None
    if url is None:
        own = NatsServer(tmp_path / "nats-store").start()
        url = own.url
    stream = f"GWTEST_{uuid.uuid4().hex[:10].upper()}"
    seqs = write_fills(journal, 1, 100_000, with_commands=False)
    gateway = make_gateway(tmp_path, url, stream, subject_prefix=f"gwtest.{stream.lower()}",
                           batch_size=5000, storage="memory")
    start = time.perf_counter()
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 90), gateway.metrics.snapshot()
        elapsed = time.perf_counter() - start
        count, ids = _stream_ids(url, stream, samples=200)
        # The stream de-duplicates by Nats-Msg-Id, every id is a journal seq:
        # 100,000 messages are the 100,000 fills, and sampled positions show
        # each sits where its seq says.
        assert count == 100_000
        assert all(msg_id == seqs[position - 1] for position, msg_id in ids.items())
        print(f"nats: 100,000 fills in {elapsed:.2f} s ({100_000 / elapsed:,.0f}/s)")
    finally:
        gateway.stop()
        _delete_stream(url, stream)
        if own is not None:
            own.stop()


def _stream_ids(url, stream, samples):
    """(message count, {stream position: Nats-Msg-Id}) for the ends and ``samples`` positions between."""
    import asyncio
    import random

    import nats

    async def read():
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            last = info.state.last_seq
            positions = {1, last, *random.Random(7).sample(range(1, last + 1), min(samples, last))}
            ids = {}
            for position in sorted(positions):
                message = await js.get_msg(stream, seq=position)
                ids[position] = parse_message_id(message.headers["Nats-Msg-Id"])[0]
            return info.state.messages, ids
        finally:
            await nc.close()

    return asyncio.run(read())


def _delete_stream(url, stream):
    import asyncio

    import nats

    async def delete():
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(delete())


def test_subjects_headers_and_resume_from_the_stream(tmp_path, server, journal):
    written = write_mixed(journal, 1, 20)
    gateway = make_gateway(tmp_path, server.url, "SUBJECTS", events=["*"])
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
    finally:
        gateway.stop()
    messages = stream_events(server.url, "SUBJECTS")
    assert [e.seq for e, _, _ in messages] == list(written)
    for event, subject, headers in messages:
        # The journal's identity, then the seq: a new journal's seq 1 is no repeat.
        assert headers["Nats-Msg-Id"] == f"{journal_identity(journal.data_dir)}:{event.seq}"
        expected = {"fill": f"kronos.fills.{event.symbol}",
                    "execution_report": f"kronos.execution_reports.{event.symbol}",
                    "admin": "kronos.admin"}[event.type]
        assert subject == expected.replace("BRK.B", "BRK%2EB")
    assert any("BRK%2EB" in subject for _, subject, _ in messages)
    # Without its cursor file the gateway resumes where the stream ends.
    (gateway.data_dir / "cursor.json").unlink()
    more = write_mixed(journal, 21, 5)
    again = make_gateway(tmp_path, server.url, "SUBJECTS", events=["*"])
    again.start()
    try:
        assert again.wait_for(journal.last_seq, 20)
        assert again.metrics.delivered == len(more)
    finally:
        again.stop()
    assert [e.seq for e, _, _ in stream_events(server.url, "SUBJECTS")] == list(written) + list(more)


def test_a_delivery_offers_the_cpu_between_publishes(tmp_path, server, journal, monkeypatch):
    """With cpu_slice_us of 1 ns the gateway yields at every step, inside a delivery too:
    every 4 publishes and before waiting for the acknowledgements."""
    from gateways import base
    calls = []
    monkeypatch.setattr(base, "_sched_yield", lambda: calls.append(1))
    written = write_fills(journal, 1, 40)
    gateway = make_gateway(tmp_path, server.url, "SLICES", isolation="thread", cpu_slice_us=0.001,
                           batch_size=100)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 20)
    finally:
        gateway.stop()
    assert deduplicated(stream_events(server.url, "SLICES")) == written
    # 40 fills in one batch: 10 steps inside the delivery (9 between publishes, one before
    # the acknowledgements) beyond the loop's own 3 before reading, normalising and delivering.
    assert len(calls) >= 12


def test_unreachable_server_is_a_failure_retried_with_the_gateways_backoff(tmp_path, journal, caplog):
    """Nothing listens: each open is one attempt, counted and reported (metrics, /healthz),
    one line in the log, retried after the gateway's own back-off; stop() returns at once."""
    url = f"nats://127.0.0.1:{free_port()}"
    gateway = make_gateway(tmp_path, url, "DOWN", isolation="thread", metrics_port=0,
                           backoff_initial_ms=50, backoff_max_ms=100)
    caplog.set_level(logging.WARNING)
    gateway.start()
    try:
        assert wait_until(lambda: gateway.metrics.failures >= 3, 5), gateway.metrics.snapshot()
        assert url in gateway.metrics.last_error and "ConnectionRefusedError" in gateway.metrics.last_error
        status, body = healthz(gateway.metrics_port)
        assert status == 503 and url in body
        assert scrape(gateway.metrics_port)[("retries_total", "nats")] >= 3
        thread = gateway._thread
        started = time.monotonic()
    finally:
        gateway.stop()
    assert time.monotonic() - started < 1 and not thread.is_alive()
    # One concise warning per failed open, from the gateway; none from nats-py, no tracebacks.
    assert not [r for r in caplog.records if r.name.startswith("nats")]
    assert not [r for r in caplog.records if r.exc_info]
    warnings = [r for r in caplog.records if r.name == "gateways.base"]
    assert len(warnings) == gateway.metrics.failures


def test_each_open_tries_each_server_once(tmp_path, journal):
    """A server that accepts and hangs up (not NATS): every open tries it once, then the
    gateway backs off; nats-py's own loop (60 tries 2 s apart by default) never runs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    gateway = make_gateway(tmp_path, f"nats://127.0.0.1:{listener.getsockname()[1]}", "HANGUP",
                           isolation="thread", backoff_initial_ms=200, backoff_max_ms=200,
                           connect_timeout_s=1)
    gateway.start()
    try:
        assert wait_until(lambda: gateway.metrics.failures >= 3, 5), gateway.metrics.snapshot()
    finally:
        gateway.stop()
        listener.close()
    failures = gateway.metrics.failures
    assert failures <= len(accepted) <= failures + 1  # one more may be under way at stop
    # Attempts are the gateway's back-off apart, not back to back.
    assert all(b - a >= 0.15 for a, b in zip(accepted, accepted[1:]))


def test_a_dead_server_in_the_list_fails_over_to_a_live_one(tmp_path, server, journal):
    dead = f"nats://127.0.0.1:{free_port()}"
    gateway = make_gateway(tmp_path, dead, "FAILOVER", isolation="thread", servers=[dead, server.url])
    gateway.start()
    try:
        written = write_fills(journal, 1, 20)
        assert gateway.wait_for(journal.last_seq, 20), gateway.metrics.snapshot()
        assert gateway.metrics.failures == 0 and gateway.metrics.connected
    finally:
        gateway.stop()
    assert deduplicated(stream_events(server.url, "FAILOVER")) == written


def test_an_existing_stream_with_other_settings_is_named_and_a_subject_it_misses_too(
        tmp_path, server, journal, caplog):
    """A stream made beforehand with memory storage and a 30 s max_age (events lost on a
    server restart, or after 30 s) was used without a word; one whose subjects miss the
    gateway's prefix failed every publish with "not an acknowledgement: b''" (NATS's no
    responders)."""
    import asyncio
    import logging

    import nats
    from nats.js import api

    async def make(subjects):
        nc = await nats.connect(server.url)
        try:
            await nc.jetstream().add_stream(api.StreamConfig(
                name="OTHER", subjects=subjects, storage=api.StorageType.MEMORY, max_age=30))
        finally:
            await nc.close()

    asyncio.run(make(["kronos.>"]))
    write_fills(journal, 1, 3)
    gateway = make_gateway(tmp_path, server.url, "OTHER", isolation="thread")
    with caplog.at_level(logging.WARNING, logger="gateways.nats_js"):
        gateway.start()
        try:
            assert gateway.wait_for(journal.last_seq, 20)
        finally:
            gateway.stop()
    [line] = [r.getMessage() for r in caplog.records if "settings other than" in r.getMessage()]
    assert "storage 'memory' (configured 'file')" in line and "max_age_s 30" in line
    assert "duplicate_window_s 30.0 (configured 600.0)" in line  # (NATS caps it at max_age)

    _delete_stream(server.url, "OTHER")
    asyncio.run(make(["elsewhere.>"]))
    caplog.clear()
    gateway = make_gateway(tmp_path, server.url, "OTHER", isolation="thread")
    gateway.start()
    try:
        assert wait_until(lambda: gateway.metrics.failures > 0, 10)
        assert "no stream takes the events' subjects" in (gateway.metrics.last_error or "")
    finally:
        gateway.stop()
