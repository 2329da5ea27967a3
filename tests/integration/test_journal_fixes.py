"""The engine on a failing disk: a journal that cannot make records durable stops the engine
(exit code 1, one error line, 503 on /healthz), and a write cut short by a full disk leaves
a journal that verifies and restarts.

The failing ``fdatasync`` is injected into a real ``kronos-exec serve`` process (a small
wrapper replaces ``os.fdatasync`` once a trigger file exists); the short write is the
kernel's, under a file size limit (RLIMIT_FSIZE), as on a full disk.
"""
import resource
import signal
import textwrap

import pytest

import engine.journal as journal_module
from engine.client import Client
from engine.journal import JournalFailedError, JournalReader, JournalWriter, verify
from engine.messages import ExecType, ExecutionReport, HeartbeatAck
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port, http_get,
                                              kill_if_running, order_on_failing_disk, serving,
                                              start_subprocess)

# Runs ``kronos-exec`` with every fdatasync failing (EIO) while the trigger file exists.
FAILING_DISK = textwrap.dedent("""
    import errno, os, sys
    from pathlib import Path
    trigger, real = Path(sys.argv[1]), os.fdatasync
    def fdatasync(fd):
        if trigger.exists():
            raise OSError(errno.EIO, "Input/output error (injected)")
        return real(fd)
    os.fdatasync = fdatasync
    from engine.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("fsync", ["group", "always"])
def test_a_failed_fdatasync_stops_the_engine_with_exit_code_1(tmp_path, fsync):
    port = free_port()
    journal_dir = tmp_path / "journal"
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, journal_dir, fsync=fsync))
    trigger = tmp_path / "disk-fails"
    log_path = tmp_path / "engine.log"
    proc = start_subprocess(config, log_path, ("-c", FAILING_DISK, str(trigger)))
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="A")
            acked = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
            assert (acked.cl_ord_id, acked.exec_type) == ("A", ExecType.NEW)
            order_on_failing_disk(proc, client, trigger, "B")
    finally:
        kill_if_running(proc)
    errors = [line for line in log_path.read_text().splitlines()
              if "ERROR engine.service" in line]
    assert len(errors) == 1, errors
    assert "engine: stopping: journal failed: fdatasync of records: [Errno 5]" in errors[0]
    # What was written is intact; the engine starts on it again.
    assert verify(journal_dir).ok
    with JournalWriter(journal_dir, fsync=fsync) as reopened:
        assert reopened.last_seq >= 2


def test_healthz_says_the_journal_failed_before_the_engine_stops(tmp_path, monkeypatch):
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, tmp_path / "journal", fsync="always").replace(
        "[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}"))

    def fdatasync(fd):
        raise OSError(5, "Input/output error (injected)")

    with ThreadedEngine(config) as engine:
        healthz = f"http://127.0.0.1:{metrics_port}/healthz"
        assert http_get(healthz)[0] == 200

        def fail_and_poll():
            # On the engine's loop, so the stop it schedules waits until the poll is done.
            monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
            try:
                with pytest.raises(JournalFailedError):
                    engine.service.journal.sync()
            finally:
                monkeypatch.undo()
            return http_get(healthz)

        status, body = engine.call(fail_and_poll)
        assert status == 503 and body.startswith("not serving: journal failed: fdatasync")
        assert engine.wait_stopped(10)
        assert engine.service.exit_code == 1


def test_a_short_write_on_a_full_disk_stops_the_engine_and_leaves_a_journal_that_restarts(
        tmp_path):
    """A short write was undone and its batch kept for a retry while the engine went on:
    it acted on every command (orders went to the venues and traded), answered none, and
    said "serving" (an audit on a full tmpfs). Now it fails stop, as for a failed
    fdatasync: what it acknowledged is on disk whole, and it restarts on it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with serving(tmp_path, fsync="always") as (engine, endpoint):
            with Client(endpoint) as client:
                client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="A")
                client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
                segment = engine.service.journal._segment.path
                # The disk fills up: the next batch is cut short (and undone).
                resource.setrlimit(resource.RLIMIT_FSIZE, (segment.stat().st_size + 100, hard))
                client.new_order("AAA", "buy", "10", "49.01", account="DEMO1", cl_ord_id="B")
                assert not client.drain(0.3)  # not acknowledged: not in the journal
                assert engine.wait_stopped(10)
            assert engine.service.exit_code == 1
            assert "short journal write" in engine.service.journal.failure
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, xfsz)
    journal_dir = tmp_path / "journal"
    result = verify(journal_dir)
    assert result.ok and result.torn is None
    journaled = [r.decode().get("request", {}).get("cl_ord_id") for r in JournalReader(journal_dir)]
    assert journaled.count("A") == 1 and journaled.count("B") == 0
    with ThreadedEngine(tmp_path / "engine.toml") as engine:  # restarts on it
        working = engine.call(lambda: [o.cl_ord_id for o in engine.service.pipeline.orders.working()])
        assert working == ["A"]