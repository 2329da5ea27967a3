"""A gateway that cannot bind its endpoint stops the start like intake's port does.

``kronos-exec serve`` exits 1 with one line naming the gateway and the
endpoint (no traceback), and the failed start leaves nothing behind: the
gateway started before it is stopped, no child process is left, the ports
are free and the journal is closed.
"""
import multiprocessing
import socket
import subprocess
import sys
import threading

import pytest

from engine.client import Client
from engine.intake import EndpointError
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import (ThreadedEngine, config_text,
                                              free_ports)


def two_gateways(isolation: str, picked: list[int]) -> tuple[str, dict[str, int]]:
    """``[[gateways]]`` tables: ``first`` (binds fine) then ``second``; and the ports they bind
    (``picked``: five distinct free ports)."""
    keys = ("first_pub", "first_replay", "endpoint", "replay_endpoint", "metrics_port")
    ports = dict(zip(keys, picked))
    return f"""
[[gateways]]
type = "zmq"
name = "first"
isolation = "{isolation}"
endpoint = "tcp://127.0.0.1:{ports['first_pub']}"
replay_endpoint = "tcp://127.0.0.1:{ports['first_replay']}"

[[gateways]]
type = "zmq"
name = "second"
isolation = "{isolation}"
endpoint = "tcp://127.0.0.1:{ports['endpoint']}"
replay_endpoint = "tcp://127.0.0.1:{ports['replay_endpoint']}"
metrics_port = {ports['metrics_port']}
""", ports


def write_config(tmp_path, isolation: str):
    """The engine's configuration with :func:`two_gateways`; returns ``(path, intake endpoint, ports)``."""
    # (Picked together: a port picked apart from the gateways' could be one of theirs,
    # and the configuration is then refused for the clash, exit 2.)
    port, *picked = free_ports(6)
    extra, ports = two_gateways(isolation, picked)
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", extra=extra))
    return path, f"tcp://127.0.0.1:{port}", ports


def shown(key: str, port: int) -> str:
    """How the error names the endpoint ``key`` of gateway ``second``."""
    return f"127.0.0.1:{port}" if key == "metrics_port" else f"tcp://127.0.0.1:{port}"


def assert_free(ports) -> None:
    """Nothing holds any of ``ports`` (binding one fails if something does)."""
    for port in ports:
        socket.create_server(("127.0.0.1", port)).close()


@pytest.mark.parametrize("isolation, taken", [("process", "endpoint"), ("thread", "endpoint"),
                                              ("process", "replay_endpoint"),
                                              ("thread", "metrics_port")])
def test_serve_says_which_gateway_endpoint_it_cannot_bind(tmp_path, isolation, taken):
    path, _, ports = write_config(tmp_path, isolation)
    with socket.create_server(("127.0.0.1", ports[taken])):
        done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path),
                               "--duration", "3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == (
        f"kronos-exec serve: cannot start: gateway second: cannot bind "
        f"{shown(taken, ports[taken])}: Address already in use"), done.stderr[-2000:]
    assert_free(ports.values())


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_gateway_that_cannot_bind_stops_what_the_start_started(tmp_path, isolation):
    # Gateway "first" is running (its sockets bound) when "second" finds its
    # endpoint taken: the failed start must stop it and close the journal.
    path, endpoint, ports = write_config(tmp_path, isolation)
    with socket.create_server(("127.0.0.1", ports["endpoint"])):
        with pytest.raises(EndpointError, match=f"^gateway second: cannot bind "
                                                f"tcp://127.0.0.1:{ports['endpoint']}: "
                                                f"Address already in use$"):
            with ThreadedEngine(path):
                pass
    assert multiprocessing.active_children() == []
    assert [t.name for t in threading.enumerate()
            if t.name.startswith("gateway-")] == []
    assert_free(ports.values())
    # The journal was closed: an engine (and both gateways) start on it at once.
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="after")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "after"
                          and m.exec_type == ExecType.NEW, 5)
