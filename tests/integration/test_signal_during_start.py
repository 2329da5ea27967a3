"""SIGTERM or SIGINT while the engine starts (a journal replay can take minutes) stops it
cleanly once the start is over: exit 0, "engine: stopping", the journal closed.

SIGTERM killed the process (its default action) and SIGINT let it open intake and then die
with a CancelledError/KeyboardInterrupt traceback, skipping the stop. The engine's simulator
file is a FIFO, so the test holds the engine inside its start while the signal arrives.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.journal import JournalWriter
from tests.integration.engine_harness import (QUIET_SIM, config_text, feed_fifo, free_port,
                                              kill_if_running, open_fifo_for_writing,
                                              wait_for_log)


@contextlib.contextmanager
def serve(path, log):
    """``kronos-exec serve --config path``, its output in ``log``; it must exit 0 once the
    block is done (within 30 s), and is killed if it has not."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config",
                                 str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        kill_if_running(proc)


def assert_stopped_cleanly(log):
    """The engine served, then stopped through its own stop, without a traceback."""
    text = log.read_text()
    assert "engine: serving on" in text and "engine: stopping" in text
    assert "engine: stopped" in text and "Traceback" not in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_the_start_stops_the_engine_cleanly_after_it(tmp_path, sig):
    fifo = tmp_path / "sim.toml"
    os.mkfifo(fifo)
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal", sim=fifo))
    log = tmp_path / "engine.log"
    with serve(path, log) as proc:
        sim_text = QUIET_SIM.read_text()
        feed_fifo(open_fifo_for_writing(fifo, proc), sim_text, fifo, proc)  # the file's check
        held = open_fifo_for_writing(fifo, proc)  # the start reads it: held there
        proc.send_signal(sig)
        feed_fifo(held, sim_text, fifo, proc)
    assert_stopped_cleanly(log)
    with JournalWriter(tmp_path / "journal", fsync="none"):
        pass  # closed: its lock is free


def blocked_signals(pid: int) -> int:
    """The process's blocked-signal mask (``SigBlk`` in /proc), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16)
    except FileNotFoundError:
        pass
    return 0


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_while_the_engine_loads_waits_for_its_handlers(tmp_path, sig):
    # SIGHUP (reload the keys) or SIGTERM sent while `serve` still imports its
    # modules took their default action: the process died at once.
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal"))
    log = tmp_path / "engine.log"
    with serve(path, log) as proc:
        deadline = time.monotonic() + 20
        while not blocked_signals(proc.pid) & (1 << (sig - 1)):
            assert proc.poll() is None and time.monotonic() < deadline, \
                "serve never held the signal while it loaded"
            time.sleep(0.001)
        proc.send_signal(sig)
        if sig == signal.SIGHUP:
            wait_for_log(log, "engine: serving on")
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(log)
