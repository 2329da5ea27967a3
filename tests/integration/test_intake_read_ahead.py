"""``[intake] recv_hwm = 0``: a client held back by nothing cannot abort the engine's process.

libzmq 4.3.5 (the one pyzmq ships) aborts the process that holds a connection
whose reading it stopped at the receive high-water mark when that connection
closes while replies to it wait to be written ("Assertion failed: !_io_error
(stream_engine_base.cpp:310)", libzmq #4841; #3937 is its sibling). A slow
engine (here a held loop: 10 ms after each child it sends) and a client that
pipelines more than ``recv_hwm`` orders without reading, and whose ZMTP
heartbeat then times out, is enough: with ``recv_hwm = 100`` the engine
process aborted in every run. With ``recv_hwm = 0`` libzmq never stops reading
a connection, so that state is never reached (docs/engine.md, *Read-ahead*).
"""
import os
import subprocess
import sys
from pathlib import Path

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


def test_a_pipelining_client_that_stops_reading_leaves_a_slow_engine_running(tmp_path):
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", intake="recv_hwm = 0"))
    proc = start_subprocess(path, tmp_path / "engine.log", launcher=("-c", SLOW_ENGINE, "slow"))
    try:
        script = tmp_path / "pausing_caller.py"
        script.write_text(PAUSING_CALLER)
        done = subprocess.run([sys.executable, str(script), f"tcp://127.0.0.1:{port}", "1500",
                               "2.0"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["1500", "0", "[]", "[]"]
        assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-2000:]
    finally:
        kill_if_running(proc)
