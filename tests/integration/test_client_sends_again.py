"""engine.client sends again the order requests a lost connection swallowed.

The client resumes its session on a new connection when the old one is lost,
and the engine replays the answers the client missed. But a request still in
the old connection's buffers (the client's, the kernel's, the engine's libzmq
queue) when it went was never read: the engine never answered it, and a
caller waiting for its reports waited for ever: of 1,500 orders pipelined to
a slow engine over a connection cut silently half way, 750 or more were never
answered. Once the resume's replay is closed, the client now sends again, in
their order, the order requests that have no answer; the engine refuses a copy
of one it did read (``DUPLICATE_CL_ORD_ID``: nothing runs twice), and the
client keeps that refusal from its caller, who sees one answer per request.
"""
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.client import AsyncClient, Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port,
                                              kill_if_running, serving, slow_sim,
                                              start_subprocess)
from tests.integration.test_client_heartbeat import SilentCut
from tests.integration.test_intake_read_ahead import SLOW_ENGINE

ROOT = Path(__file__).resolve().parents[2]

#: The read-ahead test's lossy caller, which tells what it got of each order. Its
#: connection goes through a proxy that it cuts silently half way through its orders:
#: the second half goes nowhere, and what the engine had not read of the first when
#: the client resumed is refused there (the old connection is superseded), so both
#: are lost for sure: the client's probes go unanswered. (A connection the engine merely
#: stops reading at recv_hwm is no loss: its reports keep coming back.)
COUNTING_CALLER = """
import collections, json, sys, time
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, Reject
from tests.integration.test_client_heartbeat import SilentCut
port, n, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
news, rejects, order_ids = collections.Counter(), [], {}
proxy = SilentCut(port)
with Client(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0.2, heartbeat_timeout_s=0.6) as client:
    for i in range(n):
        if i == n // 2:
            time.sleep(0.5)  # (the first half on its way to the engine)
            proxy.cut()
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=f"p-{i}")
    time.sleep(pause)  # a busy caller: reads nothing while its reports arrive
    deadline = time.monotonic() + 150
    while len(news) < n and time.monotonic() < deadline:
        try:
            msg = client.recv(30)
        except TimeoutError:
            break
        if isinstance(msg, ExecutionReport) and msg.exec_type == ExecType.NEW:
            news[msg.cl_ord_id] += 1
            order_ids[msg.cl_ord_id] = int(msg.order_id)
        elif isinstance(msg, Reject):
            rejects.append([msg.reject_name, msg.cl_ord_id])
    for msg in client.drain(1.0):  # (anything more would be a second answer)
        if isinstance(msg, ExecutionReport) and msg.exec_type == ExecType.NEW:
            news[msg.cl_ord_id] += 1
        elif isinstance(msg, Reject):
            rejects.append([msg.reject_name, msg.cl_ord_id])
    print(json.dumps({"news": news, "rejects": rejects, "reconnects": client.reconnects,
                      # (getattr: the test is also run on the client before them)
                      "resent": getattr(client, "resent_requests", 0),
                      "refusals": getattr(client, "resent_refusals", 0),
                      "first_order_id": min(order_ids.values(), default=0)}))
proxy.close()
"""


@pytest.fixture
def slow_engine(tmp_path):
    """The read-ahead test's slow engine with ``recv_hwm`` 100; yields its port."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", intake="recv_hwm = 100"))
    proc = start_subprocess(path, tmp_path / "engine.log", launcher=("-c", SLOW_ENGINE, "slow"))
    try:
        yield port
        assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-2000:]
    finally:
        kill_if_running(proc)


def test_a_pipelining_client_that_loses_its_connection_gets_one_new_per_order(
        tmp_path, slow_engine):
    orders = 1500
    script = tmp_path / "caller.py"
    script.write_text(COUNTING_CALLER)
    done = subprocess.run([sys.executable, str(script), str(slow_engine),
                           str(orders), "2.0"], capture_output=True, text=True, timeout=240,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    # It lost its connection while the engine held orders it had not read.
    summary = {k: v for k, v in got.items() if k != "news"} | {"acknowledged": len(got["news"])}
    assert got["reconnects"] >= 1, summary
    # Every order acknowledged, once; no duplicate refusal reached the caller.
    assert sorted(got["news"]) == sorted(f"p-{i}" for i in range(orders)), summary
    assert got["resent"] > 0
    assert set(got["news"].values()) == {1}
    assert got["rejects"] == []
    # The engine holds each of them, and made no order besides: the next order's
    # engine id is the 1,501st from the first one's.
    with Client(f"tcp://127.0.0.1:{slow_engine}") as client:
        for i in range(orders):
            client.status(f"p-{i}", account="DEMO1")
        replies = [m for m in client.recv_until(
            lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == f"p-{orders - 1}", 60)
            if isinstance(m, OrderStatusReply)]
        assert len(replies) == orders and all(r.found for r in replies)
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="after")
        after = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                  and m.cl_ord_id == "after", 30)[-1]
        assert int(after.order_id) - got["first_order_id"] == orders


def acked(cl_ord_id, exec_type=ExecType.NEW):
    """A predicate: the ExecutionReport of ``exec_type`` for ``cl_ord_id``."""
    return lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id \
        and m.exec_type == exec_type


def seen(messages):
    """What the caller got, named: (type, cl_ord_id, exec_type or reject name)."""
    return [(type(m).__name__, getattr(m, "cl_ord_id", None),
             m.exec_type if isinstance(m, ExecutionReport) else getattr(m, "reject_name", None))
            for m in messages]


@pytest.fixture(scope="module")
def far_venues(tmp_path_factory):
    """An engine whose venues are 2.5 s away: a Cancel's CANCELED waits for its venue's
    confirmation that long, past a resume. Yields its port."""
    tmp = tmp_path_factory.mktemp("sends-again")
    with serving(tmp, sim=slow_sim(tmp, 2_500_000)) as (_, endpoint):
        yield int(endpoint.rsplit(":", 1)[1])


@pytest.fixture
def proxy(far_venues):
    cut = SilentCut(far_venues)
    yield cut
    cut.close()


def test_the_unanswered_requests_are_sent_again_and_a_copys_refusal_dropped_once(proxy):
    """``a`` was answered before the loss: not sent again. The Cancel ``c`` was taken by
    the engine (a status request after it was answered), but its CANCELED waits for the
    venue past the resume: sent again, its copy refused ``DUPLICATE_CL_ORD_ID``, which
    the caller does not see, then its CANCELED. ``b`` went into the cut: sent again after
    ``c``, in the order first sent, and acknowledged."""
    with Client(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0.2,
                heartbeat_timeout_s=0.6) as client:
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="sa-a")
        client.recv_until(acked("sa-a"), 5)
        client.cancel("sa-a", account="DEMO1", cl_ord_id="sa-c")
        client.status("sa-a", account="DEMO1")  # (answered once the Cancel is taken)
        client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)
        proxy.cut()
        client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="sa-b")  # lost
        got = client.recv_until(acked("sa-c", ExecType.CANCELED), 15)
        assert seen(got) == [("HeartbeatAck", None, None),
                             ("ExecutionReport", "sa-b", ExecType.NEW),
                             ("ExecutionReport", "sa-c", ExecType.CANCELED)]
        assert (client.reconnects, client.resent_requests, client.resent_refusals) == (1, 2, 1)
        # Once: a third copy, the caller's own, is refused in its sight.
        client.cancel("sa-a", account="DEMO1", cl_ord_id="sa-c")
        assert seen([client.recv(5)]) == [("Reject", "sa-c", "DUPLICATE_CL_ORD_ID")]
        assert client.resent_refusals == 1
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def swallow_then_reset(client: Client, proxy: SilentCut, cl_ord_id: str,
                       away_s: float = 0.2) -> None:
    """Send order ``cl_ord_id`` into a silent cut, wait ``away_s``, then reset the cut
    connection and wait until the client's monitor reports it: the client's next send
    finds the connection gone, resumes and sends at once."""
    proxy.cut()
    client.new_order("AAA", "buy", "1", "47.90", account="DEMO1", cl_ord_id=cl_ord_id)
    time.sleep(away_s)
    proxy.reset()
    deadline = time.monotonic() + 5
    while not client._connection_lost():  # (what the next send would find)
        assert time.monotonic() < deadline, "the reset connection was not noticed"
        time.sleep(0.02)


def test_a_cancel_sent_while_the_resume_is_under_way_goes_after_the_order_it_cancels(proxy):
    """``ro`` went into the cut. The caller's next call, a Cancel of ``ro``, finds the
    connection gone and sends the resume, then the Cancel, at once: the engine read the
    Cancel before the replay closed, when ``ro`` was still to be sent again, and refused it
    UNKNOWN_CL_ORD_ID; ``ro`` then came in and was live. Now what waits to be sent again
    goes first, and the Cancel cancels it."""
    with Client(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0) as client:
        client.heartbeat()
        client.recv(5)  # (the session's id: the reconnect resumes it)
        swallow_then_reset(client, proxy, "ro")
        client.cancel("ro", account="DEMO1", cl_ord_id="ro-c")
        got = client.recv_until(acked("ro-c", ExecType.CANCELED), 15)
        assert seen(got) == [("HeartbeatAck", None, None),  # (the replay's close)
                             ("ExecutionReport", "ro", ExecType.NEW),
                             ("ExecutionReport", "ro-c", ExecType.CANCELED)]
        assert (client.reconnects, client.resent_requests, client.resent_refusals) == (1, 1, 0)
        assert client.drain(0.3) == []
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def test_the_asyncio_clients_cancel_sent_while_the_resume_is_under_way_follows_its_order(
        proxy):
    """The asyncio client's send, as the blocking one's above: ``ao`` went into the cut,
    and the Cancel of it finds the connection gone, sends the resume, then itself."""
    async def main():
        client = AsyncClient(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0)
        try:
            await client.heartbeat()
            await client.recv(5)  # (the session's id: the reconnect resumes it)
            proxy.cut()
            await client.new_order("AAA", "buy", "1", "47.90", account="DEMO1",
                                   cl_ord_id="ao")  # lost
            await asyncio.sleep(0.2)
            proxy.reset()
            deadline = time.monotonic() + 5
            while not client._connection_lost():  # (what the next send would find)
                assert time.monotonic() < deadline, "the reset connection was not noticed"
                await asyncio.sleep(0.02)
            await client.cancel("ao", account="DEMO1", cl_ord_id="ao-c")
            got = await client.recv_until(acked("ao-c", ExecType.CANCELED), 15)
            assert seen(got) == [("HeartbeatAck", None, None),  # (the replay's close)
                                 ("ExecutionReport", "ao", ExecType.NEW),
                                 ("ExecutionReport", "ao-c", ExecType.CANCELED)]
            assert (client.reconnects, client.resent_requests, client.resent_refusals) == \
                (1, 1, 0)
            assert await client.drain(0.3) == []
            assert (client.duplicates, client.gaps, client.lost) == (0, [], [])
        finally:
            client.close()

    asyncio.run(main())


def test_the_asyncio_client_sends_a_bulk_again_without_its_answered_orders(proxy):
    """A bulk's orders are sent again as a bulk, those answered before the loss left out:
    here the first bulk was answered whole, the second went into the cut."""
    async def main():
        client = AsyncClient(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0.2,
                             heartbeat_timeout_s=0.6)
        try:
            first = [client.build_new_order("AAA", "buy", "1", "47.50", account="DEMO1",
                                            cl_ord_id=f"sb-{i}") for i in range(2)]
            await client.bulk(first, batch_id="one")
            await client.recv_until(acked("sb-1"), 5)
            proxy.cut()
            second = [client.build_new_order("AAA", "buy", "1", "47.50", account="DEMO1",
                                             cl_ord_id=f"sb-{i}") for i in range(2, 5)]
            await client.bulk(second, batch_id="two")
            got = await client.recv_until(acked("sb-4"), 10)
            assert seen(got) == [("HeartbeatAck", None, None)] + [
                ("ExecutionReport", f"sb-{i}", ExecType.NEW) for i in range(2, 5)]
            assert (client.reconnects, client.resent_requests, client.resent_refusals) == \
                (1, 3, 0)
            assert await client.drain(0.5) == []
        finally:
            client.close()

    asyncio.run(main())


@contextlib.contextmanager
def forgetful(tmp_path):
    """An engine that forgets a session silent for 2 s, and a SilentCut proxy to it."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        "heartbeat_timeout_ms = 60000",
        "heartbeat_timeout_ms = 1000\nheartbeat_interval_ms = 200\nsession_retention_s = 2"))
    with ThreadedEngine(path):
        cut = SilentCut(port)
        try:
            yield cut
        finally:
            cut.close()


def test_after_a_refused_resume_the_unanswered_requests_go_to_the_new_session(tmp_path):
    """The session was let go while the client was away (silent past
    ``session_retention_s``): the resume is refused and the connection has a new session.
    The order sent into the cut is sent there, after the probe that asks its id."""
    with forgetful(tmp_path) as cut:
        with Client(f"tcp://127.0.0.1:{cut.port}", heartbeat_s=0.2,
                    heartbeat_timeout_s=0.6) as client:
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="sr-1")
            client.recv_until(acked("sr-1"), 5)
            old = client.session_id
            cut.cut()
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="sr-2")
            time.sleep(4)  # (the client is not used: the engine forgets the session)
            got = client.recv_until(acked("sr-2"), 10)
            assert seen(got) == [("Reject", None, "RESUME_REFUSED"),
                                 ("ExecutionReport", "sr-2", ExecType.NEW)]
            assert client.resent_requests == 1 and client.session_id not in (None, old)


def test_a_cancel_sent_while_a_resume_that_is_refused_is_under_way_follows_its_order(
        tmp_path):
    """The Cancel of the order the cut swallowed opens the new connection, as above, but
    the session was let go meanwhile: the order, sent before the Cancel while the resume
    was under way, and the Cancel both go to the connection's new session, in that order
    (the Cancel went first, and was refused UNKNOWN_CL_ORD_ID, before the early resend)."""
    with forgetful(tmp_path) as cut:
        with Client(f"tcp://127.0.0.1:{cut.port}", heartbeat_s=0) as client:
            client.heartbeat()
            client.recv(5)  # (the session's id: the reconnect resumes it)
            # (The client is not used for 4 s: the engine forgets the session.)
            swallow_then_reset(client, cut, "rr", away_s=4)
            client.cancel("rr", account="DEMO1", cl_ord_id="rr-c")
            got = client.recv_until(acked("rr-c", ExecType.CANCELED), 10)
            assert seen(got) == [("Reject", None, "RESUME_REFUSED"),
                                 ("ExecutionReport", "rr", ExecType.NEW),
                                 ("ExecutionReport", "rr-c", ExecType.CANCELED)]
            assert (client.reconnects, client.resent_requests, client.resent_refusals) == \
                (1, 1, 0)
            assert client.drain(0.3) == []
            assert client.session_id is not None
