"""SIGHUP makes a running ``kronos-exec serve`` take its file's client keys again.

A real engine process with a CURVE endpoint, real key files and real
clients: a key taken out of the file is refused from the signal on (its
open session too), a key added trades without a restart, and a file that
does not pass the load-time checks changes nothing. A SIGHUP that arrives
while the engine is still starting does not end it: the reload is made
once it serves.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.client import Client, load_client_keys
from engine.intake import generate_keypair, load_keypair
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject, ResendRequest
from tests.integration.engine_harness import (QUIET_SIM, config_text, feed_fifo, free_port,
                                              open_fifo_for_writing, start_subprocess,
                                              wait_for_log)


def _config(tmp_path, port, curve_port, keys, clients, *, broken=False, sim=QUIET_SIM):
    text = config_text(port, tmp_path / "journal", sim=sim).replace(
        "[intake]\n", f'[intake]\nendpoints = ["tcp://127.0.0.1:{curve_port}"]\n', 1).replace(
        "[security]\n", f'[security]\nserver_secret_key_file = "{keys["server"][1]}"\n', 1)
    for name, account in clients:
        public = "not-a-key" if broken else keys[name][0]
        text += (f'\n[[security.clients]]\nname = "{name}"\naccounts = ["{account}"]\n'
                 f'public_key_file = "{public}"\n')
    (tmp_path / "engine.toml").write_text(text)
    return tmp_path / "engine.toml"


def _client(endpoint, keys, name, server_public):
    client = Client(endpoint, server_key=server_public,
                    client_keypair=load_client_keys(keys[name][1]))
    return client


def _answer(client, cl_ord_id, timeout=5.0):
    return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                             and m.cl_ord_id == cl_ord_id, timeout)[-1]


def _served(client) -> bool:
    client.heartbeat()
    try:
        return isinstance(client.recv(1.0), HeartbeatAck)
    except TimeoutError:
        return False


def test_sighup_takes_the_files_keys_and_a_bad_file_changes_nothing(tmp_path):
    keys = {name: generate_keypair(tmp_path / "keys", name)
            for name in ("server", "alice", "carol")}
    server_public = load_keypair(keys["server"][0])[0]
    port, curve_port = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{curve_port}"
    path = _config(tmp_path, port, curve_port, keys, [("alice", "DEMO1")])
    log = tmp_path / "engine.log"
    proc = start_subprocess(path, log)
    try:
        alice = _client(endpoint, keys, "alice", server_public)
        assert _served(alice)
        alice.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="a1")
        assert _answer(alice, "a1").exec_type == ExecType.NEW
        # A second connection of alice's key, open (handshake done) and idle across the reload.
        spare = Client(endpoint, server_key=server_public, auto_resume=False,
                       client_keypair=load_client_keys(keys["alice"][1]))
        time.sleep(0.3)
        with _client(endpoint, keys, "carol", server_public) as carol:
            assert not _served(carol)  # not in the file yet

        # alice out, carol in.
        _config(tmp_path, port, curve_port, keys, [("carol", "DEMO1")])
        mark = len(log.read_text())
        proc.send_signal(signal.SIGHUP)
        line = wait_for_log(log, "security reloaded", mark)
        assert "added ['carol'], removed ['alice']" in line
        alice.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="a2")
        refused = _answer(alice, "a2")
        assert isinstance(refused, Reject) and refused.reject_name == "NOT_AUTHORIZED"
        alice.close()
        with _client(endpoint, keys, "alice", server_public) as again:
            assert not _served(again)  # a new connection with the removed key
        # Nor can the open one take over alice's session (and the messages sent it since).
        spare.send(ResendRequest(begin_seq=1, session_id=alice.session_id))
        refused = spare.recv(5)
        assert isinstance(refused, Reject) and refused.reject_name == "RESUME_REFUSED"
        assert "removed from the allow-list" in refused.text
        spare.close()
        carol = _client(endpoint, keys, "carol", server_public)
        assert _served(carol)
        carol.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="c1")
        assert _answer(carol, "c1").exec_type == ExecType.NEW

        # A file that does not load: nothing changes.
        _config(tmp_path, port, curve_port, keys, [("carol", "DEMO1")], broken=True)
        mark = len(log.read_text())
        proc.send_signal(signal.SIGHUP)
        wait_for_log(log, "security reload refused, the keys in force stay", mark)
        carol.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="c2")
        assert _answer(carol, "c2").exec_type == ExecType.NEW
        carol.close()
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_sighup_during_the_start_is_applied_once_serving(tmp_path):
    """SIGHUP's default action ends a process: one that arrives while the engine starts (a
    journal replay takes minutes on a large journal) must not stop it.

    The engine's simulator file is a FIFO, so the test holds the engine inside its start (it
    reads that file there) while the signal arrives: deterministic, without a large journal.
    """
    keys = {name: generate_keypair(tmp_path / "keys", name) for name in ("server", "alice")}
    server_public = load_keypair(keys["server"][0])[0]
    port, curve_port = free_port(), free_port()
    fifo = tmp_path / "sim.toml"
    os.mkfifo(fifo)
    sim_text = QUIET_SIM.read_text()
    path = _config(tmp_path, port, curve_port, keys, [], sim=fifo)
    log = tmp_path / "engine.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config",
                                 str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        feed_fifo(open_fifo_for_writing(fifo, proc), sim_text, fifo, proc)  # the file's check
        held = open_fifo_for_writing(fifo, proc)  # the start reads it: hold it there
        _config(tmp_path, port, curve_port, keys, [("alice", "DEMO1")], sim=fifo)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None, "SIGHUP during the start ended the engine"
        feed_fifo(held, sim_text, fifo, proc)
        feed_fifo(open_fifo_for_writing(fifo, proc), sim_text, fifo, proc)  # the reload's
        text = wait_for_log(log, "security reloaded", 0)
        assert "engine: serving on" in log.read_text()
        assert "added ['alice'], removed []" in text
        with _client(f"tcp://127.0.0.1:{curve_port}", keys, "alice", server_public) as alice:
            assert _served(alice)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_reload_line_names_a_change_of_the_plaintext_rights(tmp_path, caplog):
    """Withdrawing an account from plaintext_accounts took effect but the one audit line said
    nothing changed ("clients added [], removed [], changed []")."""
    import logging

    from tests.integration.engine_harness import ThreadedEngine
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    with ThreadedEngine(path) as engine, caplog.at_level(logging.WARNING, logger="engine.service"):
        path.write_text(path.read_text().replace('plaintext_accounts = ["DEMO1", "DEMO2"]',
                                                 'plaintext_accounts = ["DEMO1"]'))
        assert engine.call(engine.service.reload_security)
    [line] = [r.getMessage() for r in caplog.records if "security reloaded" in r.getMessage()]
    assert line == "security reloaded: clients added [], removed [], changed ['plaintext']"


def test_a_reload_on_the_loop_resolves_no_host_name(tmp_path, monkeypatch):
    """The reload re-reads the whole file on the event loop: its bind check's getaddrinfo (a
    host name in an endpoint) held every order while DNS answered."""
    import socket

    from tests.integration.engine_harness import ThreadedEngine
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    with ThreadedEngine(path) as engine:
        looked_up = []
        real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo",
                            lambda *a, **k: looked_up.append(a[0]) or real(*a, **k))
        # (Port for port with the intake's 127.0.0.1: only a shared port is compared.)
        path.write_text(path.read_text().replace("[metrics]\nport = 0",
                                                 f'[metrics]\nhost = "localhost"\nport = {port}'))
        assert engine.call(engine.service.reload_security)
        assert looked_up == []


def test_the_reload_line_tells_a_renamed_key_from_a_removed_one(tmp_path, caplog):
    """The audit line compared the clients by name: renaming an entry (same public key) was
    logged "added ['alice-algo'], removed ['alice']" while the key went on trading, and an
    operator checking a revocation by that line was told a key was out that was not."""
    import logging

    from tests.integration.engine_harness import ThreadedEngine
    keys = {name: generate_keypair(tmp_path / "keys", name) for name in ("server", "alice", "bob")}
    port, curve_port = free_port(), free_port()
    path = _config(tmp_path, port, curve_port, keys, [("alice", "DEMO1"), ("bob", "DEMO1")])
    with ThreadedEngine(path) as engine, caplog.at_level(logging.WARNING, logger="engine.service"):
        # alice's entry renamed (her key unchanged), bob's taken out.
        path.write_text(path.read_text().replace('name = "alice"', 'name = "alice-algo"')
                        .split('\n[[security.clients]]\nname = "bob"')[0])
        assert engine.call(engine.service.reload_security)
        rights = engine.call(engine.service.intake.client_rights)
    assert set(rights) == {"alice-algo", "plaintext"}
    [line] = [r.getMessage() for r in caplog.records if "security reloaded" in r.getMessage()]
    assert line == ("security reloaded: clients added [], removed ['bob'], changed [], "
                    "renamed ['alice' -> 'alice-algo']")
