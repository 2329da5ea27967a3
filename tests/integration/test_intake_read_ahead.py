"""``[intake] recv_hwm = 0``: a client pipelining without reading keeps its connection and
cannot abort the engine's process.

libzmq 4.3.5 (the one pyzmq ships) aborts the process that holds a connection
whose reading it stopped at the receive high-water mark once that connection
closes and libzmq writes on it: its ping timer's ping, or the pong of a client's
ping it had read before it stopped ("Assertion failed: !_io_error
(stream_engine_base.cpp:310)", libzmq #4841). The engine sends no ZeroMQ pings
(``engine.intake.dead_peer_detection``, tested in tests/unit/engine/test_intake.py;
with them, a slow engine and this client aborted every run at ``recv_hwm = 100``).
A client's own ZeroMQ ping can still do it, rarely; ``engine.client`` sends none
(it probes with Heartbeats), but another client may (docs/engine.md, *Read-ahead*).
With ``recv_hwm = 0`` libzmq never stops reading: the client keeps its connection
and gets every report.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import (config_text, free_port, kill_if_running,
                                              start_subprocess)
from tests.integration.test_client_heartbeat import PAUSING_CALLER

ROOT = Path(__file__).resolve().parents[2]

#: The engine with its event loop held 10 ms after each child order it sends.
SLOW_ENGINE = """
import asyncio, sys, time
from sim import realtime
submit = realtime.RealtimeVenues.submit
def held(self, *args, **kw):
    child = submit(self, *args, **kw)
    asyncio.get_running_loop().call_soon(time.sleep, 0.01)
    return child
realtime.RealtimeVenues.submit = held
from engine.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_caller(tmp_path, port: int, script_text: str, orders: int, *args: str):
    script = tmp_path / "caller.py"
    script.write_text(script_text)
    return subprocess.run([sys.executable, str(script), f"tcp://127.0.0.1:{port}", str(orders),
                           "2.0", *args], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def slow_engine(tmp_path, request):
    """A slow engine with ``[intake] recv_hwm`` = the test's parameter; yields its port."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", intake=f"recv_hwm = {request.param}"))
    proc = start_subprocess(path, tmp_path / "engine.log", launcher=("-c", SLOW_ENGINE, "slow"))
    try:
        yield port
        log = (tmp_path / "engine.log").read_text()
        assert proc.poll() is None and "Assertion failed" not in log, log[-2000:]
        with Client(f"tcp://127.0.0.1:{port}") as client:  # and it still takes orders
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="after")
            assert client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                     m.cl_ord_id == "after", 30)[-1].exec_type == ExecType.NEW
    finally:
        kill_if_running(proc)


@pytest.mark.parametrize("slow_engine", [0], indirect=True)
def test_without_a_read_ahead_mark_a_pipelining_client_that_stops_reading_keeps_its_connection(
        tmp_path, slow_engine):
    # (The client's default probe settings: its probes are answered by the engine's loop,
    # which holds its replies until the end of a batch, 64 orders of 10 ms here, and more
    # on a loaded machine; 0.2 s then 0.6 s took it for lost now and then.)
    done = run_caller(tmp_path, slow_engine, PAUSING_CALLER, 1500, "1.0", "3.0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1500", "0", "[]", "[]"]
