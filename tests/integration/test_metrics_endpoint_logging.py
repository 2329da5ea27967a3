"""The metrics endpoint's troubles go to the engine's log in its format, not to stderr raw.

``http.server`` reports an error of a connection (a peer that resets it, a probe that gives
up) by printing ``Exception occurred during processing of request`` and a traceback on stderr
itself, around the logging set up by ``[logging]``: under ``json = true`` a log pipeline got a
dozen lines that are not JSON for each reset connection to the metrics port (a load balancer's
health check that resets, a port scan).
"""
import socket
import struct
import subprocess
import sys
import textwrap
import time

import orjson

from engine.client import Client
from tests.integration.engine_harness import config_text, free_ports, http_get


def _reset(port: int, payload: bytes) -> None:
    """Connect to ``port``, send ``payload`` and reset the connection (SO_LINGER 0)."""
    sock = socket.create_connection(("127.0.0.1", port))
    if payload:
        sock.sendall(payload)
    time.sleep(0.1)  # (the server's thread is reading it)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_reset_metrics_connection_leaves_the_json_log_json(tmp_path):
    port, metrics_port = free_ports(2)
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    assert "[metrics]\nport = 0" in text and 'level = "INFO"\njson = false' in text
    path.write_text(text.replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}")
                        .replace('level = "INFO"\njson = false', 'level = "DEBUG"\njson = true'))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:  # serving once it answers
            client.heartbeat()
            assert client.recv(10) is not None
        _reset(metrics_port, b"")
        _reset(metrics_port, b"GET /metr")
        time.sleep(0.3)
        # The endpoint goes on serving.
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 200 and body.startswith("ok: serving"), (status, body)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    lines = stderr.splitlines()
    not_json = []
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            not_json.append(line)
    assert not not_json, "\n".join(not_json[:20])
    # Said in the log, once per connection, at DEBUG (a peer's reset is not the engine's fault).
    said = [entry for entry in map(orjson.loads, lines)
            if entry["logger"] == "engine.metrics" and "reset" in entry["msg"]]
    assert len(said) == 2, said
    assert {entry["level"] for entry in said} == {"DEBUG"}


def test_an_idle_metrics_connection_is_closed_after_the_request_timeout(tmp_path, monkeypatch):
    """A connection to the metrics port that sends no request (or half of one) held one of
    the endpoint's threads and a descriptor, shared with the intake's clients, for the
    engine's life: a slow client, or anyone reaching the port, could pile them up. The
    endpoint closes it after ``engine.metrics.REQUEST_TIMEOUT_S`` (10 s; 0.5 s here)."""
    import threading

    from tests.integration.engine_harness import ThreadedEngine

    monkeypatch.setattr("engine.metrics.REQUEST_TIMEOUT_S", 0.5, raising=False)
    port, metrics_port = free_ports(2)
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal")
                    .replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))
    with ThreadedEngine(path):
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(3)]
        idle[1].sendall(b"GET /metr")  # half a request line
        try:
            time.sleep(0.3)
            assert threading.active_count() == before + 3  # a thread each, meanwhile
            for sock in idle:
                sock.settimeout(5)
                assert sock.recv(1024) == b""  # closed by the engine, not by the test
            deadline = time.monotonic() + 5
            while threading.active_count() > before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert threading.active_count() == before
        finally:
            for sock in idle:
                sock.close()
        # Requests that come whole are served as before.
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 200 and body.startswith("ok: serving")


FAILING_START = textwrap.dedent("""
    import sys
    import engine.service
    real = engine.service.build_venues
    def build_venues(cfg):
        real(cfg)
        raise RuntimeError("injected: an error no handler expects")
    engine.service.build_venues = build_venues
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_an_unexpected_error_is_one_json_line_not_a_raw_traceback(tmp_path):
    """An exception nothing handles (an engine bug at start, in a thread) reached Python's
    own hook, which printed its traceback as plain text on stderr: under ``json = true`` the
    one record saying why the engine died was the one a JSON log pipeline could not parse.
    It is logged (``CRITICAL``, logger ``engine``, the traceback in ``exc``), in the log's
    format; the exit status is Python's as before (1)."""
    port = free_ports(1)[0]
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text.replace('level = "INFO"\njson = false', 'level = "INFO"\njson = true'))
    done = subprocess.run([sys.executable, "-c", FAILING_START, "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    entries, not_json = [], []
    for line in done.stderr.splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            not_json.append(line)
    assert not not_json, "\n".join(not_json[:20])
    [fatal] = [entry for entry in entries if entry["level"] == "CRITICAL"]
    assert fatal["logger"] == "engine" and "uncaught" in fatal["msg"]
    assert "RuntimeError: injected: an error no handler expects" in fatal["exc"]


FAILING_THREAD = textwrap.dedent("""
    import sys, threading
    import engine.service
    real = engine.service.bound_gc_pauses
    def bound_gc_pauses():
        real()
        def fail():
            raise RuntimeError("injected: a thread's error no handler expects")
        threading.Thread(target=fail, name="injected").start()
    engine.service.bound_gc_pauses = bound_gc_pauses
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_an_unexpected_error_in_a_thread_is_one_json_line(tmp_path):
    """The same for a thread that dies of an exception (``threading.excepthook``); the engine
    goes on serving and stops cleanly."""
    from tests.integration.engine_harness import start_subprocess, terminate

    port = free_ports(1)[0]
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text.replace('level = "INFO"\njson = false', 'level = "INFO"\njson = true'))
    log = tmp_path / "engine.log"
    proc = start_subprocess(path, log, ("-c", FAILING_THREAD))
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            client.heartbeat()
            assert client.recv(10) is not None
    finally:
        assert terminate(proc) == 0
    lines = log.read_text().splitlines()
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, "\n".join(not_json[:20])
    [fatal] = [entry for entry in map(orjson.loads, lines) if entry["level"] == "CRITICAL"]
    assert fatal["msg"].startswith("uncaught exception in thread injected: RuntimeError")
    assert "injected: a thread's error no handler expects" in fatal["exc"]
