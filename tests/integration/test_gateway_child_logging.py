"""A gateway's child process logs as the engine's [logging] says: JSON lines at its level.

It logged plain text at INFO whatever the configuration, so a log pipeline parsing the
engine's JSON broke (or dropped) exactly the lines about a failing gateway. And after a
``kill -9`` of the engine, multiprocessing's resource tracker (a helper process of the
engine's) wrote a plain-text warning about the child's leaked semaphores to the same log.
"""
from pathlib import Path
import subprocess
import sys
import time

import orjson

from tests.integration.engine_harness import config_text, free_port, kill_if_running
from tests.unit.gateways.helpers import process_gone, wait_until


def children_of(pid: int) -> list[int]:
    """Every live process whose parent is ``pid`` (gateway children, multiprocessing helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_a_gateway_childs_lines_are_json_at_the_engines_level(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal", extra=f"""
[[gateways]]
type = "nats"
servers = ["nats://127.0.0.1:{free_port()}"]
backoff_initial_ms = 50
backoff_max_ms = 100
""").replace('level = "INFO"\njson = false', 'level = "WARNING"\njson = true'))
    log = tmp_path / "engine.log"
    with open(log, "ab") as out:  # (at WARNING, "serving on" is not logged: no start_subprocess)
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config",
                                 str(path)], stdout=out, stderr=subprocess.STDOUT)
    helpers = []
    try:
        deadline = time.monotonic() + 30
        while b"gateway nats:" not in log.read_bytes():  # nobody at that port: it retries
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        helpers = children_of(proc.pid)
        assert helpers  # the gateway's child, multiprocessing's resource tracker
    finally:
        kill_if_running(proc)
    # What the engine's helper processes write as they end is in the log too.
    assert wait_until(lambda: all(process_gone(pid) for pid in helpers), 10)
    text = log.read_text()
    whole = text[:text.rfind("\n") + 1]  # (the kill may cut the last line short)
    lines = [orjson.loads(line) for line in whole.splitlines()]
    gateway = [line for line in lines if "gateway nats:" in line["msg"]]
    assert gateway and all(line["level"] == "WARNING" for line in gateway)
    assert not [line for line in lines if line["level"] in ("INFO", "DEBUG")]
