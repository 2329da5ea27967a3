"""A gateway's child process logs as the engine's [logging] says: JSON lines at its level.

It logged plain text at INFO whatever the configuration, so a log pipeline parsing the
engine's JSON broke (or dropped) exactly the lines about a failing gateway.
"""
import subprocess
import sys
import time

import orjson

from tests.integration.engine_harness import config_text, free_port, kill_if_running


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
    try:
        deadline = time.monotonic() + 30
        while b"gateway nats:" not in log.read_bytes():  # nobody at that port: it retries
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        kill_if_running(proc)
    text = log.read_text()
    whole = text[:text.rfind("\n") + 1]  # (the kill may cut the last line short)
    lines = [orjson.loads(line) for line in whole.splitlines()]
    gateway = [line for line in lines if "gateway nats:" in line["msg"]]
    assert gateway and all(line["level"] == "WARNING" for line in gateway)
    assert not [line for line in lines if line["level"] in ("INFO", "DEBUG")]
