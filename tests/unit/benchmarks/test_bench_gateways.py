"""bench_gateways' accounting of the engine's processes, against a real engine.

The engine is ``kronos-exec serve`` started as the benchmark starts it, with a
ZeroMQ gateway attached (its default process isolation).
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks.bench_gateways import child_pids, free_port, start_engine_with, stop_engine


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_child_pids_finds_the_gateway_process(tmp_path):
    """The gateway runs in a child the engine forks from its spawner thread, not its main
    thread: its CPU is what the benchmark reports as the gateway's (it read 0 when only
    the main thread's children were listed, and the gateway's work went to "other
    work on the machine")."""
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
             "replay_endpoint": "tcp://127.0.0.1:0", "metrics_port": free_port()}
    engine = start_engine_with(free_port(), tmp_path, [table])
    try:
        deadline = time.monotonic() + 10
        while True:
            kids = child_pids(engine.pid)
            gateways = [pid for pid in kids if "spawn_main" in _cmdline(pid)]
            if gateways or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert gateways, f"no gateway among the engine's children {kids}: " \
                         f"{[_cmdline(p) for p in kids]}"
    finally:
        stop_engine(engine)
