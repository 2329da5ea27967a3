"""Run a real engine for integration tests: in a thread of this process, or as a subprocess.

The engine is the real service (uvloop, ZeroMQ intake, journal, simulator
venues); only its configuration is the test's: a free port, a temporary
journal, and a simulator with no background flow so fills are predictable.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from pathlib import Path

from engine.client import Client
from engine.messages import HeartbeatAck, OrderStatusReply
from engine.service import EngineThread as ThreadedEngine  # noqa: F401  (the tests' name)

QUIET_SIM = Path(__file__).parent / "configs" / "quiet_sim.toml"

RISK = """
[risk.firm]
max_order_qty = "100000"
throttle_rate = 100000

[risk.accounts.DEMO1]
cash = "10000000"
allow_short = true

[risk.accounts.DEMO2]
cash = "10000000"
allow_short = true
"""


def slow_sim(directory: Path, mean_us: float) -> Path:
    """The quiet test market with every venue ``mean_us`` µs away (fixed latency), written
    to ``directory``: what a test sends stays in flight that long."""
    path = directory / "slow_sim.toml"
    path.write_text(re.sub(r"latency = \{[^}]*\}",
                           f'latency = {{ model = "fixed", mean_us = {float(mean_us)} }}',
                           QUIET_SIM.read_text()))
    return path


def open_session(endpoint: str) -> Client:
    """A client whose session has begun: its id is known, so it can be resumed."""
    client = Client(endpoint)
    client.heartbeat()
    client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
    return client


def at_venues(engine, symbol: str, *, bid: int | None = None, ask: int | None = None,
              timeout: float = 5.0) -> None:
    """Wait until the simulator's open lit venues show ``bid`` and ``ask`` (ticks) as the
    best prices of ``symbol`` (its NBBO); ``TimeoutError`` if they do not within
    ``timeout`` seconds.

    An order's NEW goes out once it is routed, while its child is still on its way to the
    venue (the venue's latency): a marketable order sent the moment that NEW arrives can
    reach the engine before the child reaches its venue, find nothing to take and rest at
    another venue, locked against it. A test that means to trade against what it rested
    waits for the venues to show it (a fixed sleep only made that unlikely)."""
    market = engine.service.venues.market
    deadline = time.monotonic() + timeout
    while True:
        shown = engine.call(lambda: market.nbbo(symbol))  # (0 where a side is empty)
        if (bid is None or shown[0] == bid) and (ask is None or shown[1] == ask):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the venues show {shown} for {symbol}, not ({bid}, {ask})")
        time.sleep(0.001)


def stop_pacing(engine) -> None:
    """Stop the simulator's pacer (``RealtimeVenues.stop``) on the engine's loop: from then
    on the venues advance, and their answers come in, only when the engine catches them up
    itself (its tick, a child it sends), so what is in flight stays in flight meanwhile."""
    venues = engine.service.venues
    engine.call(lambda: asyncio.ensure_future(venues.stop()))
    deadline = time.monotonic() + 5
    while engine.call(lambda: venues.running):
        if time.monotonic() > deadline:
            raise TimeoutError("the simulator's pacer did not stop")
        time.sleep(0.001)


def acked_at_venue(client: Client, cl_ord_id: str, *, account: str = "DEMO1",
                   timeout: float = 5.0) -> OrderStatusReply:
    """Wait until every working child of ``cl_ord_id`` is acknowledged by its venue (and
    the order has at least one); returns the status reply that shows it, ``TimeoutError``
    if none does within ``timeout`` seconds.

    The NEW goes out when the order is routed; the venue's acknowledgement comes a round
    trip later. A busy machine stretches the engine's steps, so no fixed sleep is sure to
    cover that trip: a test that needs the child resting at its venue asks the engine."""
    deadline = time.monotonic() + timeout
    while True:
        client.status(cl_ord_id, account=account)
        *before, reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                                           and m.cl_ord_id == cl_ord_id, 5)
        # What came before the reply (a fill, another order's report) is the test's:
        # back in front of its next recv.
        client._ready.extendleft(reversed(before))
        working = [c for c in reply.children if not c.done]
        if working and all(c.acked for c in working):
            return reply
        if time.monotonic() > deadline:
            raise TimeoutError(f"{cl_ord_id}'s children are not acknowledged at their venues: "
                               f"{reply.children}")
        time.sleep(0.005)


def http_get(url: str) -> tuple[int, str]:
    """(status, body stripped) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports (each held until all are picked: calls of
    :func:`free_port` one after another may return the same port twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def config_text(port: int, journal_dir: Path, *, sim: Path = QUIET_SIM, fsync: str = "none",
                extra: str = "", intake: str = "") -> str:
    """A complete engine configuration for a test (``intake``: more ``[intake]`` keys)."""
    return f"""
[intake]
plaintext_endpoints = ["tcp://127.0.0.1:{port}"]
allow_plaintext = true
heartbeat_timeout_ms = 60000
{intake}
[security]
plaintext_accounts = ["DEMO1", "DEMO2"]
plaintext_admin = true

[journal]
dir = "{journal_dir}"
fsync = "{fsync}"

[logging]
level = "INFO"
json = false

# No metrics endpoint: the default port (9464) may be held by another engine
# on the machine, and a test engine needs none.
[metrics]
port = 0

[sim]
config = "{sim}"
duration = "6h"
{RISK}
{extra}
"""


def engine_config(tmp: Path, **config) -> tuple[Path, str]:
    """``tmp/engine.toml`` for an engine on a free port, its journal in ``tmp/journal``;
    returns ``(path, endpoint)``. ``config`` goes to :func:`config_text`."""
    port = free_port()
    path = tmp / "engine.toml"
    path.write_text(config_text(port, tmp / "journal", **config))
    return path, f"tcp://127.0.0.1:{port}"


@contextlib.contextmanager
def serving(tmp: Path, **config):
    """An engine (in a thread) on a free port, its journal in ``tmp``; yields ``(engine, endpoint)``.

    ``config`` goes to :func:`config_text` (``sim``, ``fsync``, ``extra``, ``intake``).
    """
    port = free_port()
    path = tmp / "engine.toml"
    path.write_text(config_text(port, tmp / "journal", **config))
    with ThreadedEngine(path) as engine:
        yield engine, f"tcp://127.0.0.1:{port}"


def start_subprocess(config_path: Path, log_path: Path,
                     launcher: tuple[str, ...] = ("-m", "engine.cli")) -> subprocess.Popen:
    """``kronos-exec serve`` as a child process; returns once it accepts orders.

    ``launcher``: the Python arguments before ``serve``; a test that injects
    a fault runs ``("-c", SCRIPT, arg)``, a script that patches the process
    and then calls ``engine.cli.main(sys.argv[2:])``.
    """
    log = open(log_path, "ab")
    # Only this run's lines: a restart appends to the log of the one before.
    start = log.tell()
    proc = subprocess.Popen([sys.executable, *launcher, "serve", "--config",
                             str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"engine: serving on" in Path(log_path).read_bytes()[start:]:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited: {Path(log_path).read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("engine did not start within 60 s")


def order_on_failing_disk(proc: subprocess.Popen, client, trigger: Path, cl_ord_id: str) -> None:
    """Make an injected disk fault happen (``trigger`` is the file the patched engine of
    :func:`start_subprocess` looks for), send one more order, and check that the engine
    stops by itself with exit code 1, acknowledging nothing more."""
    from engine.messages import ExecutionReport
    trigger.touch()
    client.new_order("AAA", "buy", "10", "49.01", account="DEMO1", cl_ord_id=cl_ord_id)
    assert proc.wait(10) == 1  # stopped by itself
    assert not [m for m in client.drain(0.2) if isinstance(m, ExecutionReport)]


def seen_at_resume(monkeypatch, look) -> list:
    """What ``look(pipeline, recovered)`` returns in the next engine started, once recovery
    has rebuilt its state and before anything goes back to the market (``resume_working``
    takes the working orders up again after it). Returns the list it is appended to."""
    from engine import service
    seen = []
    resume = service.resume_working

    def look_then_resume(pipeline, recovered):
        seen.append(look(pipeline, recovered))
        return resume(pipeline, recovered)

    monkeypatch.setattr(service, "resume_working", look_then_resume)
    return seen


def kill_9(proc: subprocess.Popen) -> None:
    """SIGKILL the engine and reap it: no shutdown, no flush, as a crash."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def terminate(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM the engine (a graceful stop) and wait for it; returns its exit status."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def kill_if_running(proc: subprocess.Popen) -> None:
    """Kill ``proc`` unless it has ended, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_for_log(log: Path, text: str, after: int = 0) -> str:
    """The log from ``after`` on, once it holds ``text`` (within 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tail = log.read_text()[after:]
        if text in tail:
            return tail
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {log.read_text()[after:][-2000:]}")


def open_fifo_for_writing(fifo: Path, proc: subprocess.Popen) -> int:
    """Wait for the engine to open ``fifo`` for reading; the writing end's fd."""
    deadline = time.monotonic() + 20
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
            assert proc.poll() is None, f"engine exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the engine never read the file"
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def feed_fifo(fd: int, text: str, fifo: Path, proc: subprocess.Popen) -> None:
    """Write ``text``, close, and wait until the engine has read it and closed the file (the
    next open for writing then meets its next read, not the end of this one)."""
    os.write(fd, text.encode())
    deadline = time.monotonic() + 20
    # Once the engine has taken the bytes its end is open (not merely being opened): from
    # then on /proc lists it until the engine closes it.
    while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]:
        assert time.monotonic() < deadline, "the engine did not read the file"
        time.sleep(0.01)
    os.close(fd)
    fds = Path(f"/proc/{proc.pid}/fd")
    while any(os.path.realpath(f) == str(fifo) for f in fds.iterdir()):
        assert time.monotonic() < deadline, "the engine did not finish reading the file"
        time.sleep(0.01)
