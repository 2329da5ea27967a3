"""SIGHUP makes a running ``kronos-exec serve`` take its file's client keys again.

A real engine process with a CURVE endpoint, real key files and real
clients: a key taken out of the file is refused from the signal on (its
open session too), a key added trades without a restart, and a file that
does not pass the load-time checks changes nothing.
"""
import signal
import time
from pathlib import Path


from engine.client import Client, load_client_keys
from engine.intake import generate_keypair, load_keypair
from engine.messages import ExecType, ExecutionReport, HeartbeatAck, Reject
from tests.integration.engine_harness import config_text, free_port, start_subprocess


def _config(tmp_path, port, curve_port, keys, clients, *, broken=False):
    text = config_text(port, tmp_path / "journal").replace(
        "[intake]\n", f'[intake]\nendpoints = ["tcp://127.0.0.1:{curve_port}"]\n', 1).replace(
        "[security]\n", f'[security]\nserver_secret_key_file = "{keys["server"][1]}"\n', 1)
    for name, account in clients:
        public = "not-a-key" if broken else keys[name][0]
        text += (f'\n[[security.clients]]\nname = "{name}"\naccounts = ["{account}"]\n'
                 f'public_key_file = "{public}"\n')
    (tmp_path / "engine.toml").write_text(text)
    return tmp_path / "engine.toml"


def _wait_for_log(log: Path, text: str, after: int) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tail = log.read_text()[after:]
        if text in tail:
            return tail
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {log.read_text()[after:][-2000:]}")


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
        with _client(endpoint, keys, "carol", server_public) as carol:
            assert not _served(carol)  # not in the file yet

        # alice out, carol in.
        _config(tmp_path, port, curve_port, keys, [("carol", "DEMO1")])
        mark = len(log.read_text())
        proc.send_signal(signal.SIGHUP)
        line = _wait_for_log(log, "security reloaded", mark)
        assert "added ['carol'], removed ['alice']" in line
        alice.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="a2")
        refused = _answer(alice, "a2")
        assert isinstance(refused, Reject) and refused.reject_name == "NOT_AUTHORIZED"
        alice.close()
        with _client(endpoint, keys, "alice", server_public) as again:
            assert not _served(again)  # a new connection with the removed key
        carol = _client(endpoint, keys, "carol", server_public)
        assert _served(carol)
        carol.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="c1")
        assert _answer(carol, "c1").exec_type == ExecType.NEW

        # A file that does not load: nothing changes.
        _config(tmp_path, port, curve_port, keys, [("carol", "DEMO1")], broken=True)
        mark = len(log.read_text())
        proc.send_signal(signal.SIGHUP)
        _wait_for_log(log, "security reload refused, the keys in force stay", mark)
        carol.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="c2")
        assert _answer(carol, "c2").exec_type == ExecType.NEW
        carol.close()
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(30)
