"""Run a real engine for integration tests: in a thread of this process, or as a subprocess.

The engine is the real service (uvloop, ZeroMQ intake, journal, simulator
venues); only its configuration is the test's: a free port, a temporary
journal, and a simulator with no background flow so fills are predictable.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.service import EngineService, default_config

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


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, journal_dir: Path, *, sim: Path = QUIET_SIM, fsync: str = "none",
                extra: str = "") -> str:
    """A complete engine configuration for a test."""
    return f"""
[intake]
plaintext_endpoints = ["tcp://127.0.0.1:{port}"]
allow_plaintext = true
heartbeat_timeout_ms = 60000

[security]
plaintext_accounts = ["DEMO1", "DEMO2"]
plaintext_admin = true

[journal]
dir = "{journal_dir}"
fsync = "{fsync}"

[logging]
level = "INFO"
json = false

[sim]
config = "{sim}"
duration = "6h"
{RISK}
{extra}
"""


class ThreadedEngine:
    """An ``EngineService`` on its own uvloop loop in a background thread."""

    def __init__(self, config_path: Path):
        from engine.config import load_config
        self.config = load_config(config_path)
        self.config_path = config_path
        self.service: EngineService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def _run(self) -> None:
        import uvloop
        self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self.service = EngineService(self.config, self.config_path)
            self._loop.run_until_complete(self.service.start())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.service.stop())
        self._loop.close()
        self._stopped.set()

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the engine's loop and return its result."""
        done = threading.Event()
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            except BaseException as exc:
                box["error"] = exc
            done.set()
        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def __enter__(self) -> "ThreadedEngine":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._stopped.wait(30)


def start_subprocess(config_path: Path, log_path: Path) -> subprocess.Popen:
    """``kronos-exec serve`` as a child process; returns once it accepts orders."""
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config",
                             str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"engine: serving on" in Path(log_path).read_bytes():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited: {Path(log_path).read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("engine did not start within 60 s")
