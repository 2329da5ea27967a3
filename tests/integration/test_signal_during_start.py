"""SIGTERM or SIGINT while the engine starts (a journal replay can take minutes) stops it
cleanly once the start is over: exit 0, "engine: stopping", the journal closed.

SIGTERM killed the process (its default action) and SIGINT let it open intake and then die
with a CancelledError/KeyboardInterrupt traceback, skipping the stop. The engine's simulator
file is a FIFO, so the test holds the engine inside its start while the signal arrives.
"""
import os
import signal
import subprocess
import sys

import pytest

from engine.journal import JournalWriter
from tests.integration.engine_harness import (QUIET_SIM, config_text, feed_fifo, free_port,
                                              open_fifo_for_writing)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_the_start_stops_the_engine_cleanly_after_it(tmp_path, sig):
    fifo = tmp_path / "sim.toml"
    os.mkfifo(fifo)
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal", sim=fifo))
    log = tmp_path / "engine.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config",
                                 str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        sim_text = QUIET_SIM.read_text()
        feed_fifo(open_fifo_for_writing(fifo, proc), sim_text, fifo, proc)  # the file's check
        held = open_fifo_for_writing(fifo, proc)  # the start reads it: held there
        proc.send_signal(sig)
        feed_fifo(held, sim_text, fifo, proc)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "engine: serving on" in text and "engine: stopping" in text
    assert "engine: stopped" in text and "Traceback" not in text
    with JournalWriter(tmp_path / "journal", fsync="none"):
        pass  # closed: its lock is free
