"""engine.client notices an engine that went silent without closing the connection.

An engine host that loses power, or a firewall that starts dropping packets,
leaves the client's TCP connection open with nobody behind it: no FIN, no
RST, so libzmq reports no loss and the client's resume (``auto_resume``)
never starts; a caller waiting in ``recv`` waits for ever. The client's
probes (``heartbeat_s``, ``heartbeat_timeout_s``: Heartbeats on a silent
connection) make it count such a connection lost. Here a TCP proxy between the client and a real engine
stops forwarding in both directions without closing anything, which is what
the client sees in those cases.
"""
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from engine.client import AsyncClient, Client
from engine.messages import ExecType, ExecutionReport, HeartbeatAck
from tests.integration.engine_harness import free_port, serving


class SilentCut:
    """A TCP proxy to ``upstream`` whose connections can be cut silently.

    After :meth:`cut`, the bytes of the connections open until then are read
    and dropped, in both directions, and their sockets stay open; connections
    made later are forwarded as usual (the engine is still there for them).
    """

    def __init__(self, upstream_port: int):
        self.port = free_port()
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._generation = 0  # connections of an older generation are cut
        self._stalled = 0  # ...and of an older one than this, no longer read either
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        self._sockets: list[socket.socket] = []

    def cut(self) -> None:
        """Silence every connection open now."""
        self._generation += 1

    def stall(self) -> None:
        """Stop reading every connection open now, in both directions (a host that lost
        power: nothing is acknowledged, so the sender's buffers fill); later connections
        are forwarded as usual."""
        self._generation += 1
        self._stalled = self._generation

    def reset(self) -> None:
        """Close every connection open now, both ways (each end sees its peer go, as when
        a network comes back and the silent connection is refused); later connections
        are forwarded as usual."""
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # (not close: a pump may still be reading it)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for sock in self._sockets + [self._listener]:
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            up = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [down, up]
            generation = self._generation
            for src, dst in ((down, up), (up, down)):
                thread = threading.Thread(target=self._pump, args=(src, dst, generation),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, generation: int) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            if generation < self._stalled:
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if generation == self._generation:
                try:
                    dst.sendall(data)
                except OSError:
                    return


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("heartbeat")) as (engine, endpoint):
        yield engine, int(endpoint.rsplit(":", 1)[1])


@pytest.fixture
def proxy(engine):
    cut = SilentCut(engine[1])
    yield cut
    cut.close()


def acked(cl_ord_id):
    return lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id \
        and m.exec_type == ExecType.NEW


def start(client, cl_ord_id) -> str:
    """Open the session (its id, for a resume) and have one order acknowledged."""
    client.heartbeat()
    session_id = client.recv(5).session_id
    client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
    client.recv_until(acked(cl_ord_id), 5)
    return session_id


def test_a_silently_cut_connection_is_dropped_and_the_session_resumed(proxy):
    with Client(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0.2,
                heartbeat_timeout_s=0.6) as client:
        session_id = start(client, "hb-1")
        proxy.cut()
        client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="hb-2")  # lost
        started = time.monotonic()
        got = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        waited = time.monotonic() - started
        # The resume's closing ack, on a new connection, in the same session:
        # hb-2 never reached the engine (no report before the ack), so the client
        # sends it again.
        assert [type(m) for m in got] == [HeartbeatAck]
        assert (got[0].session_id, client.reconnects) == (session_id, 1)
        assert waited < 3.0, waited
        assert client.recv_until(acked("hb-2"), 5)[-1].cl_ord_id == "hb-2"
        assert client.resent_requests == 1
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def test_without_pings_a_silently_cut_connection_goes_unnoticed(proxy):
    with Client(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0) as client:
        start(client, "nohb-1")
        proxy.cut()
        client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="nohb-2")
        with pytest.raises(TimeoutError):
            client.recv(2.0)
        assert client.reconnects == 0


def test_a_waiting_client_probes_with_heartbeats_not_zeromq_pings(engine):
    """ZeroMQ's pings can abort the engine (docs/engine.md, *Read-ahead and a libzmq
    abort*): the client's socket sends none, and a caller waiting on a quiet
    connection makes the client probe it with Heartbeats, whose acks it keeps."""
    with Client(f"tcp://127.0.0.1:{engine[1]}", heartbeat_s=0.2,
                heartbeat_timeout_s=0.6) as client:
        assert client.socket.getsockopt(zmq.HEARTBEAT_IVL) == 0
        start(client, "probe-1")
        with pytest.raises(TimeoutError):
            client.recv(1.5)  # (the probes' acks are not the caller's)
        assert 4 <= client.probes <= 8, client.probes
        assert (client.reconnects, client.duplicates, client.gaps) == (0, 0, [])
        client.status("probe-1", account="DEMO1")  # numbering went on: nothing is missing
        assert client.recv(5).cl_ord_id == "probe-1"
        assert (client.gaps, client.lost) == ([], [])


def test_an_engine_whose_loop_is_stuck_is_a_loss_and_the_session_resumed(engine):
    """The engine's libzmq thread would answer ZeroMQ pings with its loop stuck; a
    Heartbeat is answered by the loop itself."""
    with Client(f"tcp://127.0.0.1:{engine[1]}", heartbeat_s=0.2,
                heartbeat_timeout_s=0.6) as client:
        session_id = start(client, "stuck-1")
        engine[0]._loop.call_soon_threadsafe(time.sleep, 2.0)
        got = client.recv_until(lambda m: isinstance(m, HeartbeatAck), 10)
        assert [type(m) for m in got] == [HeartbeatAck]  # the resume's closing ack
        assert (got[0].session_id, client.reconnects) == (session_id, 1)
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def test_the_asyncio_client_takes_an_engine_whose_loop_is_stuck_for_a_loss(engine):
    """As the blocking client above: its probe goes unanswered while the loop is held,
    and the session is resumed on a new connection once it is free again."""
    async def main():
        client = AsyncClient(f"tcp://127.0.0.1:{engine[1]}", heartbeat_s=0.2,
                             heartbeat_timeout_s=0.6)
        try:
            await client.heartbeat()
            session_id = (await client.recv(5)).session_id
            await client.new_order("AAA", "buy", "1", "48.00", account="DEMO1",
                                   cl_ord_id="astuck-1")
            await client.recv_until(acked("astuck-1"), 5)
            engine[0]._loop.call_soon_threadsafe(time.sleep, 2.0)
            got = await client.recv_until(lambda m: isinstance(m, HeartbeatAck), 10)
            assert [type(m) for m in got] == [HeartbeatAck]  # the resume's closing ack
            # (One reconnect: the new connection's handshake waits for the loop too. More
            # would still be right, a resume answered late on a loaded machine.)
            assert got[0].session_id == session_id and client.reconnects >= 1
            assert client.probes >= 1
            assert (client.duplicates, client.gaps, client.lost) == (0, [], [])
        finally:
            client.close()

    asyncio.run(main())


def test_an_asyncio_reader_probes_past_a_send_waiting_for_room_which_then_goes_on(proxy):
    """The engine's host vanished: nothing is acknowledged, and a sender task's send
    waits for room in the connection's queue. The reader task's probe, sent without
    waiting, queued behind that send (pyzmq's sends go in turn) and so did the reader, for
    ``send_timeout_s``: the loss went unnoticed. And once noticed, the reader's reconnect
    closed the old socket, which cancelled the waiting send: the sender got a
    CancelledError nobody had asked for. Now the loss is noticed, and the send goes out
    on the new connection after the resume."""
    async def main():
        client = AsyncClient(f"tcp://127.0.0.1:{proxy.port}", heartbeat_s=0.2,
                             heartbeat_timeout_s=0.6, send_timeout_s=30)
        try:
            await client.heartbeat()
            session_id = (await client.recv(5)).session_id
            proxy.stall()

            async def flood() -> int:  # (queries: nothing to send again)
                sent = 0
                while client.reconnects == 0:
                    await client.heartbeat(test_req_id=f"fl-{sent}")
                    sent += 1
                return sent

            sender = asyncio.create_task(flood())
            got = await asyncio.wait_for(client.recv_until(
                lambda m: isinstance(m, HeartbeatAck) and m.resend_begin_seq is not None, 20),
                10)
            assert [type(m) for m in got] == [HeartbeatAck]  # the resume's closing ack
            assert (got[0].session_id, client.reconnects) == (session_id, 1)
            sent = await asyncio.wait_for(sender, 5)
            last = await client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            assert [m.test_req_id for m in last] == [f"fl-{sent - 1}"]
            assert (client.duplicates, client.gaps, client.lost) == (0, [], [])
        finally:
            client.close()

    asyncio.run(main())


def test_a_probes_answer_that_came_while_the_caller_was_away_from_recv_is_heard(engine):
    """``recv(0)`` on a quiet connection sends a probe and returns; its ack then waits in
    the socket while the caller works, past ``heartbeat_timeout_s``. The next ``recv``
    took the connection for lost without reading what waited, and resumed it for
    nothing (every time, for a caller that polls between spells of work)."""
    with Client(f"tcp://127.0.0.1:{engine[1]}", heartbeat_s=0.2,
                heartbeat_timeout_s=0.6) as client:
        start(client, "away-1")
        # (The loop held a moment: the ack cannot come back while recv(0) still looks.)
        engine[0]._loop.call_soon_threadsafe(time.sleep, 1.0)
        time.sleep(0.3)  # (quiet past heartbeat_s)
        with pytest.raises(TimeoutError):
            client.recv(0)
        assert client.probes == 1
        assert client.socket.poll(10_000)  # the ack has come, unread
        time.sleep(0.7)  # (the caller at work, past heartbeat_timeout_s after the probe)
        with pytest.raises(TimeoutError):
            client.recv(0)
        assert client.reconnects == 0
        assert (client.duplicates, client.gaps, client.lost) == (0, [], [])


def test_negative_heartbeat_settings_are_refused():
    with pytest.raises(ValueError, match="are 0 .* or at least 0.001 s"):
        Client("tcp://127.0.0.1:1", heartbeat_s=-1)


PAUSING_CALLER = """
import sys, time
from engine.client import Client
from engine.messages import ExecutionReport
endpoint, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
heartbeat_s, heartbeat_timeout_s = map(float, sys.argv[4:6] or (0.2, 0.6))
with Client(endpoint, heartbeat_s=heartbeat_s, heartbeat_timeout_s=heartbeat_timeout_s) as client:
    for i in range(n):
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=f"p-{i}")
    time.sleep(pause)  # a busy caller: reads nothing while its reports arrive
    got = 0
    while got < n:
        if isinstance(client.recv(10), ExecutionReport):
            got += 1
    print(got, client.reconnects, client.gaps, client.lost)
"""


def test_a_caller_that_pauses_reading_keeps_its_connection_and_its_process(engine, tmp_path):
    """More reports than a receive high-water mark would hold, unread past the pings'
    timeout: the connection stalled, libzmq reconnected it and aborted the process
    (libzmq #3937: "Assertion failed: _input_stopped"), and the engine had dropped the
    stalled connection. The client reads on whatever its caller does."""
    script = tmp_path / "pausing_caller.py"
    script.write_text(PAUSING_CALLER)
    done = subprocess.run([sys.executable, str(script), f"tcp://127.0.0.1:{engine[1]}",
                           "3000", "2.0"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3000", "0", "[]", "[]"]
