"""The engine on a disk that refuses the journal's next segment: the order being handled is
handled whole (the refusal does not unwind its handler), nothing of it is acknowledged, and
the engine fails stop as on a failed ``fdatasync`` (exit code 1, one error line), leaving a
journal that verifies and restarts.

The refusal is injected into a real ``kronos-exec serve`` process: a small wrapper makes
``os.open`` of a new segment file raise ENOSPC once a trigger file exists.
"""
import textwrap

from engine.client import Client
from engine.journal import JournalReader, RecordKind, list_segments, verify
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import (ThreadedEngine, config_text, free_port,
                                              kill_if_running, order_on_failing_disk,
                                              start_subprocess)

ROTATE = 4096

REFUSING_DISK = textwrap.dedent("""
    import errno, os, sys
    from pathlib import Path
    trigger, real = Path(sys.argv[1]), os.open
    def open_(path, flags, *args, **kw):
        if flags & os.O_CREAT and str(path).endswith(".krj") and trigger.exists():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(path, flags, *args, **kw)
    os.open = open_
    from engine.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_segment_the_disk_refuses_stops_the_engine_after_the_order_is_handled(tmp_path):
    port = free_port()
    journal_dir = tmp_path / "journal"
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, journal_dir, fsync="always").replace(
        'fsync = "always"', f'fsync = "always"\nrotate_bytes = {ROTATE}'))
    trigger = tmp_path / "disk-refuses"
    log_path = tmp_path / "engine.log"
    proc = start_subprocess(config, log_path, ("-c", REFUSING_DISK, str(trigger)))
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            # Orders until the next one's records cannot fit in the current segment.
            for n in range(100):
                before = list_segments(journal_dir)[-1].stat().st_size
                client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id=f"A{n}")
                acked = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
                assert (acked.cl_ord_id, acked.exec_type) == (f"A{n}", ExecType.NEW)
                size = list_segments(journal_dir)[-1].stat().st_size
                if size > before and size + (size - before) > ROTATE:
                    break
            sent = n + 1
            order_on_failing_disk(proc, client, trigger, "LAST")
    finally:
        kill_if_running(proc)
    lines = log_path.read_text().splitlines()
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "ERROR engine.service" in errors[0]
    assert "engine: stopping: journal failed: cannot start the segment after" in errors[0]
    assert not [line for line in lines if "handler failed" in line or "Traceback" in line]
    # The order was handled whole: its command and its report are in the journal, once.
    result = verify(journal_dir)
    assert result.ok and result.torn is None
    records = list(JournalReader(journal_dir))
    last = [i for i, r in enumerate(records) if r.kind == RecordKind.COMMAND
            and r.decode()["request"].get("cl_ord_id") == "LAST"]
    assert len(last) == 1
    assert [r for r in records[last[0]:] if r.kind == RecordKind.EVENT]
    trigger.unlink()  # room again: the engine starts on what is on disk
    with ThreadedEngine(config) as engine:
        assert engine.call(lambda: len(engine.service.pipeline.orders.working())) == sent + 1
    assert verify(journal_dir).ok


def test_a_disk_that_refuses_the_last_sync_at_shutdown_still_stops_everything(tmp_path):
    """The journal's last write or sync at a graceful stop fails: the engine says so in one
    error line and still stops the rest (metrics endpoint, venues, sockets)."""
    import errno
    import socket

    from tests.integration.engine_harness import http_get

    port, metrics_port = free_port(), free_port()
    config = tmp_path / "engine.toml"
    config.write_text(config_text(port, tmp_path / "journal").replace(
        "[metrics]\nport = 0", f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}'))
    engine = ThreadedEngine(config)
    with engine:
        assert http_get(f"http://127.0.0.1:{metrics_port}/healthz")[0] == 200

        def refuse(*_):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        engine.call(lambda: setattr(engine.service.journal, "sync", refuse))
    assert engine.wait_stopped(0), "stop() raised out of the engine thread"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", metrics_port)) != 0  # metrics server stopped
