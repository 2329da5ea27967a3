"""A gateway's child process that dies (the OOM killer, a crash) is started again by the
engine, which says so, and delivery resumes from the cursor with nothing lost.

It was never watched: deliveries stopped until the engine restarted, and nothing was
logged (the gateway audit killed the PostgreSQL gateway's child with kill -9).
"""
import logging
import os
import signal

import orjson

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port
from tests.unit.gateways.helpers import wait_until


def engine_with_zmq_gateway(tmp_path, gateway_port):
    """An engine configuration with a ZeroMQ gateway (in its own process) publishing on
    ``gateway_port``; returns (path, the engine's endpoint)."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", extra=f"""
[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:{gateway_port}"
replay_endpoint = "tcp://127.0.0.1:{free_port()}"
poll_interval_ms = 1
"""))
    return path, f"tcp://127.0.0.1:{port}"


def test_a_killed_gateway_child_is_started_again_and_catches_up(tmp_path, caplog):
    path, endpoint = engine_with_zmq_gateway(tmp_path, free_port())
    with ThreadedEngine(path) as engine, Client(endpoint) as client, \
            caplog.at_level(logging.ERROR, logger="gateways.base"):
        [gateway] = engine.service.gateways

        def order(cl_ord_id):
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
            client.recv_until(lambda m: isinstance(m, ExecutionReport)
                              and m.exec_type == ExecType.NEW, 5)
            return engine.call(lambda: engine.service.journal.last_seq)
        assert gateway.wait_for(order("before"), 10)
        first = gateway._process.pid
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        last = order("while-dead")
        assert wait_until(lambda: gateway._process is not None and gateway._process.pid != first
                          and gateway.running, 15)
        assert gateway.wait_for(last, 10)  # the order sent while it was dead, delivered
        assert any("its process died (exit code -9)" in r.getMessage() for r in caplog.records)


def test_a_child_whose_start_again_fails_is_tried_again_until_it_starts(tmp_path, caplog):
    """The first start again failed (its port taken meanwhile) and left no process to see
    dead: the gateway was never looked at again and stayed down while the engine served."""
    import socket

    gateway_port = free_port()
    path, endpoint = engine_with_zmq_gateway(tmp_path, gateway_port)
    with ThreadedEngine(path) as engine, Client(endpoint) as client, \
            caplog.at_level(logging.ERROR, logger="engine.service"):
        [gateway] = engine.service.gateways
        first = gateway._process.pid
        squatter = socket.socket()
        try:
            os.kill(first, signal.SIGKILL)
            assert wait_until(lambda: not gateway._process.is_alive(), 5)
            squatter.bind(("127.0.0.1", gateway_port))
            squatter.listen()
            assert wait_until(lambda: any("cannot start its process again" in r.getMessage()
                                          for r in caplog.records), 15)
        finally:
            squatter.close()
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="after")
        client.recv_until(lambda m: isinstance(m, ExecutionReport)
                          and m.exec_type == ExecType.NEW, 5)
        last = engine.call(lambda: engine.service.journal.last_seq)
        assert wait_until(lambda: gateway._process is not None and gateway.running, 20)
        assert gateway.wait_for(last, 10)


def test_a_child_started_again_after_old_segments_were_archived_keeps_delivering(tmp_path):
    """journal.md allows archiving delivered segments from the front while the engine runs.
    A child started again then read the journal's identity afresh, from the oldest segment
    left, and refused its own cursor as another journal's (ForeignCursorError) at every
    retry, for good: nothing was delivered until the engine restarted."""
    path, endpoint = engine_with_zmq_gateway(tmp_path, free_port())
    path.write_text(path.read_text().replace('fsync = "none"',
                                              'fsync = "none"\nrotate_bytes = 4096'))
    archive = tmp_path / "archive"
    archive.mkdir()
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        [gateway] = engine.service.gateways
        journal = engine.service.journal

        def order(cl_ord_id):
            client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
            client.recv_until(lambda m: isinstance(m, ExecutionReport)
                              and m.cl_ord_id == cl_ord_id and m.exec_type == ExecType.NEW, 5)
            return engine.call(lambda: journal.last_seq)
        for i in range(40):
            last = order(f"early-{i}")
        assert gateway.wait_for(last, 10)
        # (its cursor stored past them: what a restarted child starts from)
        assert wait_until(lambda: gateway.cursor_path.exists() and
                          orjson.loads(gateway.cursor_path.read_bytes())["seq"] >= last, 15)
        segments = sorted((tmp_path / "journal").glob("*.krj"))
        assert len(segments) >= 3
        for segment in segments[:2]:  # delivered long ago: archived
            segment.rename(archive / segment.name)
        first = gateway._process.pid
        os.kill(first, signal.SIGKILL)
        last = order("after-archive")
        assert wait_until(lambda: gateway._process is not None and gateway._process.pid != first
                          and gateway.running, 15)
        assert gateway.wait_for(last, 10)
        assert "ForeignCursorError" not in gateway.metrics.last_error
