"""engine.client across a lost connection, against a real engine over real sockets.

When the engine drops a client's connection (a frame above
``[intake] hard_max_message_bytes``, which libzmq refuses by closing the
connection; a TCP reset; the engine restarting), libzmq reconnects the
client's DEALER by itself under a new routing id. The engine took the next
request for a new session numbered from 1, and the client, still counting
the old session, dropped its acknowledgements as repeats: the caller never
saw them, nor what the old session was sent while the client was away.
The client now resumes its session on a connection of its own first.
"""
import asyncio
import time

import pytest

from engine.client import AsyncClient, Client, EngineUnavailableError
from engine.messages import ExecType, ExecutionReport, HeartbeatAck
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port, serving


def acked(cl_ord_id, exec_type=ExecType.NEW):
    """A predicate: the ExecutionReport of ``exec_type`` for ``cl_ord_id``."""
    return lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id \
        and m.exec_type == exec_type


def assert_clean(client, session_id, reconnects):
    """Same session, nothing dropped as a repeat, nothing missing."""
    assert (client.session_id, client.reconnects, client.resuming) == (session_id, reconnects, False)
    assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def sell_into_the_restored_bid(endpoint, cl_ord_id):
    """Another client sells 10 AAA at 48.00 into a restarted engine's DEMO1 bid, and waits
    for its fill. Recovery sends the bid to a venue again, which takes the venue's latency
    (under 2 ms in quiet_sim.toml): a sell sent before then finds no bid and rests at a
    venue of its own (about one run in twenty), hence the pause."""
    time.sleep(0.1)
    with Client(endpoint) as other:
        other.new_order("AAA", "sell_short", "10", "48.00", account="DEMO2",
                        cl_ord_id=cl_ord_id, locate=True)
        other.recv_until(acked(cl_ord_id, ExecType.FILL), 5)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("reconnect")) as (engine, endpoint):
        yield engine, endpoint


def oversize(engine) -> bytes:
    """A frame the engine's ROUTER refuses by dropping the connection."""
    return b"\x00" * (engine.config.intake.hard_max_bytes + 1)


def test_an_order_after_a_dropped_connection_is_acknowledged(engine):
    engine, endpoint = engine
    with Client(endpoint) as client:
        client.heartbeat()
        session_id = client.recv(5).session_id
        sessions = engine.call(lambda: len(engine.service.intake.sessions))
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="drop-1")
        first = client.recv_until(acked("drop-1"), 5)[-1]
        client.send_raw(oversize(engine))
        time.sleep(0.5)  # dropped (and libzmq has reconnected by itself)
        client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="drop-2")
        got = client.recv_until(acked("drop-2"), 5)
        # The resume's closing ack (nothing was missed), then the order: numbered on.
        assert [type(m) for m in got] == [HeartbeatAck, ExecutionReport]
        assert (got[0].session_id, got[0].resend_begin_seq) == (session_id, first.seq + 1)
        assert got[-1].seq == first.seq + 2
        assert_clean(client, session_id, 1)
        # The new connection took the session over: no other session was opened for it.
        assert session_id in engine.call(lambda: list(engine.service.intake.sessions))
        assert engine.call(lambda: len(engine.service.intake.sessions)) == sessions
        client.cancel("drop-1", account="DEMO1", cl_ord_id="drop-1c")
        client.cancel("drop-2", account="DEMO1", cl_ord_id="drop-2c")
        client.recv_until(acked("drop-2c", ExecType.CANCELED), 5)


def test_the_asyncio_client_resumes_while_it_waits(engine):
    """Waiting in recv when the connection goes, the client resumes without being sent to."""
    engine, endpoint = engine

    async def main():
        async with AsyncClient(endpoint) as client:
            await client.heartbeat()
            session_id = (await client.recv(5)).session_id
            await client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="adrop-1")
            first = (await client.recv_until(acked("adrop-1"), 5))[-1]
            await client.send_raw(oversize(engine))
            closing = (await client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5))[-1]
            assert (closing.session_id, closing.resend_begin_seq) == (session_id, first.seq + 1)
            await client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="adrop-2")
            ack = (await client.recv_until(acked("adrop-2"), 5))[-1]
            assert ack.seq == first.seq + 2
            assert_clean(client, session_id, 1)
            await client.cancel("adrop-1", account="DEMO1", cl_ord_id="adrop-1c")
            await client.cancel("adrop-2", account="DEMO1", cl_ord_id="adrop-2c")
            await client.recv_until(acked("adrop-2c", ExecType.CANCELED), 5)
    asyncio.run(main())


def test_after_an_engine_restart_the_client_resumes_and_gets_what_it_missed(tmp_path):
    """The engine restarts on the same journal and port; while the client is away its resting
    order fills (the venues restart empty and recovery sends it there again). The fill reaches
    the client in the resume's replay, before the acknowledgement of its next order."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    endpoint = f"tcp://127.0.0.1:{port}"
    client = Client(endpoint)
    try:
        with ThreadedEngine(path):
            client.heartbeat()
            session_id = client.recv(5).session_id
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="rs-1")
            client.recv_until(acked("rs-1"), 5)
        with ThreadedEngine(path):
            sell_into_the_restored_bid(endpoint, "rs-x")
            client.new_order("AAA", "buy", "1", "47.00", account="DEMO1", cl_ord_id="rs-2")
            got = client.recv_until(acked("rs-2"), 5)
        fills = [m for m in got if isinstance(m, ExecutionReport) and m.cl_ord_id == "rs-1"]
        assert [(m.exec_type, m.cum_qty) for m in fills] == [(ExecType.FILL, "10")]
        closing = next(m for m in got if isinstance(m, HeartbeatAck))
        assert got.index(fills[0]) < got.index(closing) < len(got) - 1
        assert [m.seq for m in got] == sorted(m.seq for m in got)
        assert_clean(client, session_id, 1)
    finally:
        client.close()


def test_after_a_refused_resume_the_next_reconnect_resumes_the_new_session(tmp_path):
    """A resume the engine refuses (here: an engine on another journal) leaves the client
    on a new session. The client never asked that session's id, so the next reconnect
    started yet another session, and what the second one was sent while the client was
    away (a fill) was lost, neither delivered nor counted in ``gaps`` or ``lost``."""
    from engine.messages import Reject
    port = free_port()
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text(config_text(port, tmp_path / "journal-1"))
    second.write_text(config_text(port, tmp_path / "journal-2"))
    endpoint = f"tcp://127.0.0.1:{port}"
    client = Client(endpoint)
    try:
        with ThreadedEngine(first):
            client.heartbeat()
            client.recv(5)
        with ThreadedEngine(second):
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="rr-1")
            got = client.recv_until(acked("rr-1"), 5)
            assert got[0].reject_name == "RESUME_REFUSED" and isinstance(got[0], Reject)
            client.drain(0.3)  # (the probe's ack is the client's own, not delivered)
            session_id = client.session_id
            assert session_id is not None  # asked at once
        with ThreadedEngine(second):
            sell_into_the_restored_bid(endpoint, "rr-x")
            client.new_order("AAA", "buy", "1", "47.00", account="DEMO1", cl_ord_id="rr-2")
            got = client.recv_until(acked("rr-2"), 5)
        assert [(m.cl_ord_id, m.exec_type) for m in got if isinstance(m, ExecutionReport)] == \
            [("rr-1", ExecType.FILL), ("rr-2", ExecType.NEW)]
        assert_clean(client, session_id, 2)
    finally:
        client.close()


def test_an_asyncio_reader_task_survives_a_send_that_reconnects(tmp_path):
    """One task waits in ``recv``, another sends: the send found the connection lost and
    replaced the socket, which cancelled the reader's wait on the old one. The reader
    task died with CancelledError and the session's messages went unread."""
    from tests.integration.engine_harness import kill_9, kill_if_running, start_subprocess
    port = free_port()
    path, log = tmp_path / "engine.toml", tmp_path / "engine.log"
    path.write_text(config_text(port, tmp_path / "journal", fsync="always"))
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = start_subprocess(path, log)

    async def main():
        nonlocal proc
        client = AsyncClient(endpoint)
        try:
            await client.heartbeat()
            await client.recv(5)
            got = []

            async def reader():
                while True:
                    got.append(await client.recv(None))

            task = asyncio.create_task(reader())
            await asyncio.sleep(0.2)
            kill_9(proc)
            proc = start_subprocess(path, log)  # (blocking: the reader has not run since)
            await client.new_order("AAA", "buy", "1", "48.00", account="DEMO1",
                                   cl_ord_id="rd-1")
            for _ in range(50):
                if task.done() or any(acked("rd-1")(m) for m in got):
                    break
                await asyncio.sleep(0.1)
            assert not task.done(), task
            assert [m.cl_ord_id for m in got if isinstance(m, ExecutionReport)] == ["rd-1"]
            task.cancel()
        finally:
            client.close()

    try:
        asyncio.run(main())
    finally:
        kill_if_running(proc)


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["blocking", "asyncio"])
def test_a_send_while_the_engine_is_gone_fails_after_send_timeout_s(tmp_path, use_asyncio):
    """The engine stopped: requests queue on the client's new connection until its queue
    (ZeroMQ's high-water mark) is full; the next send then waits ``send_timeout_s`` and raises
    EngineUnavailableError naming the engine, where it used to block for ever. The engine
    back on its port, the same client resumes and its next order is acknowledged."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    endpoint = f"tcp://127.0.0.1:{port}"

    async def flood(client):
        sent = 0
        while True:
            started = time.monotonic()
            try:
                result = client.new_order("AAA", "buy", "1", "40.00", account="DEMO1",
                                          time_in_force="ioc", cl_ord_id=f"gone-{sent}")
                if use_asyncio:
                    await result
            except EngineUnavailableError as exc:
                return sent, time.monotonic() - started, exc
            sent += 1
            assert sent < 5_000, "the queue never filled"

    async def once(client, cl_ord_id):
        result = client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id=cl_ord_id)
        if use_asyncio:
            await result
            return await client.recv_until(acked(cl_ord_id), 10)
        return client.recv_until(acked(cl_ord_id), 10)

    async def run():
        client = (AsyncClient if use_asyncio else Client)(endpoint, send_timeout_s=0.3)
        try:
            with ThreadedEngine(path):
                await once(client, "before")
            sent, waited, exc = await flood(client)
            # The queue holds 1,000; the first ones may have left, into the stopping
            # engine's socket and the kernel's buffers (more on a busy machine).
            assert 500 <= sent <= 2_500
            assert 0.25 <= waited < 5
            assert endpoint in str(exc) and "not sent" in str(exc)
            with ThreadedEngine(path):
                await once(client, "after")
            assert client.reconnects >= 1 and client.lost == []
        finally:
            client.close()

    asyncio.run(run())
