"""A gateway's child process dies with the engine that started it, at once, and
only with it: real processes, real ZeroMQ ports, real signals."""
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from engine.journal import JournalReader, JournalWriter
from gateways import base, from_config, parse_gateway_configs
from tests.unit.gateways.helpers import free_port, process_gone, wait_until, write_fills

ROOT = Path(__file__).resolve().parents[3]

# An engine reduced to what matters here: a process that starts a ZeroMQ
# gateway in a child the way the service does, says the child's pid, and waits.
ENGINE = """
import sys, time
from gateways import from_config
table = {"type": "zmq", "endpoint": sys.argv[2], "replay_endpoint": sys.argv[3], "nice": 0}
[gateway] = from_config([table], sys.argv[1] + "/journal", sys.argv[1] + "/gw")
gateway.start()
print(gateway._process.pid, flush=True)
time.sleep(120)
"""


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


def bindable(context: zmq.Context, endpoint: str) -> bool:
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.bind(endpoint)
        return True
    except zmq.ZMQError:
        return False
    finally:
        socket.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_engine_takes_its_gateway_child_and_ports_along_at_once(tmp_path, journal):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    replay = f"tcp://127.0.0.1:{free_port()}"
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, str(tmp_path), endpoint, replay],
                              cwd=ROOT, stdout=subprocess.PIPE)
    child = None
    context = zmq.Context()
    try:
        child = int(engine.stdout.readline())
        assert not bindable(context, endpoint) and not bindable(context, replay)
        # Stopped, the child cannot run its own once-a-second check that the
        # engine is there (as when it is busy, stuck in a flush or starved of
        # CPU at its nice): only the kernel can end it.
        os.kill(child, signal.SIGSTOP)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
        # What a restarted engine does first: bind the gateway's ports.
        assert wait_until(lambda: bindable(context, endpoint) and bindable(context, replay), 0.5)
        assert wait_until(lambda: process_gone(child), 0.5)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(10)
        engine.stdout.close()
        if child is not None and not process_gone(child):
            os.kill(child, signal.SIGKILL)
        context.term()


def test_a_gateway_child_outlives_the_thread_that_started_it(tmp_path, journal):
    # The kernel's parent-death signal follows the thread that forked the
    # child: the gateway must not die when a short-lived starter thread ends.
    [gateway] = from_config([{"type": "zmq", "endpoint": "tcp://127.0.0.1:0",
                              "replay_endpoint": "tcp://127.0.0.1:0", "poll_interval_ms": 1}],
                            journal.data_dir, tmp_path / "gw")
    starter = threading.Thread(target=gateway.start)
    starter.start()
    starter.join(60)
    try:
        assert not starter.is_alive()
        time.sleep(0.3)  # a signal tied to the thread would have come at once
        assert gateway.running
        seqs = write_fills(journal, 1, 20)
        assert gateway.wait_for(seqs[-1], 10)
    finally:
        gateway.stop()
    assert not gateway.running


def test_a_child_whose_engine_is_already_gone_exits_without_starting(tmp_path, journal):
    # The engine died between forking the child and the child arming its
    # parent-death signal: nothing will send it, so the child must see it.
    dead = subprocess.Popen(["true"])
    dead.wait()
    [config] = parse_gateway_configs([{"type": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}",
                                       "replay_endpoint": "tcp://127.0.0.1:0"}])
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    # Kept referenced until the child has unpickled them (a semaphore freed first is gone).
    shared, stop = context.RawArray("q", len(base._SHARED_FIELDS)), context.Event()
    child = context.Process(target=base._child_main, args=(
        config, str(journal.data_dir), JournalReader(journal.data_dir).check_chain, str(tmp_path / "gw"),
        shared, stop, send, dead.pid))
    child.start()
    send.close()
    try:
        child.join(30)
        assert child.exitcode == 0
        with pytest.raises(EOFError):  # it never reported a start
            receive.recv()
        assert not (tmp_path / "gw").exists()
    finally:
        if child.is_alive():
            child.kill()
        receive.close()


def test_a_cursor_file_that_cannot_be_stored_does_not_stop_delivery(tmp_path, journal, caplog):
    """A full disk under the cursor's directory raised out of store_cursor into the loop,
    which took it for the destination failing and backed off after every batch (delivery
    at up to 5 s, an audit); its warning named no file. The cursor only lags now."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the gateways' directory should be")
    [gateway] = from_config([{"type": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}",
                              "replay_endpoint": "tcp://127.0.0.1:0", "isolation": "thread"}],
                            journal.data_dir, blocked / "gateways")
    with caplog.at_level(logging.WARNING, logger="gateways.base"):
        gateway.store_cursor(5, force=True)
        gateway.store_cursor(6, force=True)
    lines = [r.getMessage() for r in caplog.records if "cursor file" in r.getMessage()]
    assert len(lines) == 1 and str(gateway.cursor_path) in lines[0]
    assert "delivery goes on" in lines[0]
