"""Configuration, keys and intake security fixes: every mistake found when the file is read
(one line naming the key, exit 2), CURVE keys listed twice refused, key files written
privately, key names that are plain file names, sockets closed when an option is refused,
and a resume that a refused first frame does not spend."""
import asyncio
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

import engine.intake as intake_module
from engine import cli
from engine.client import Client
from engine.config import ConfigError, IntakeConfig, SecurityConfig, load_config, parse_config
from engine.intake import Handler, IntakeServer, generate_keypair, load_keypair
from engine.messages import HeartbeatAck, Reject, RejectReason, ResendRequest
from tests.unit.engine.test_intake import make_server

PLAIN = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def keys(tmp_path):
    """Certificate pairs ``server`` and ``alice`` in ``tmp_path/keys``, and a garbage file."""
    for name in ("server", "alice"):
        generate_keypair(tmp_path / "keys", name)
    (tmp_path / "keys" / "garbage.key").write_text("not a certificate\n")
    return tmp_path / "keys"


def curve(secret="keys/server.key_secret", alice='public_key_file = "keys/alice.key"', extra=""):
    return f"""[intake]
endpoints = ["tcp://127.0.0.1:7001"]
[security]
server_secret_key_file = "{secret}"
[[security.clients]]
name = "alice"
{alice}
accounts = ["DEMO1"]
{extra}"""


def refused(text, base_dir=".") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, base_dir=base_dir, source="engine.toml")
    message = str(caught.value)
    assert message.startswith("engine.toml: ") and "\n" not in message
    return message


# ---------------------------------------------------------------- bug 1: C int bounds
@pytest.mark.parametrize("key,value", [
    ("send_hwm", 3_000_000_000), ("recv_hwm", 2**31), ("heartbeat_timeout_ms", 10_000_000_000),
    ("heartbeat_interval_ms", 2**31), ("max_message_bytes", 10**18),
])
def test_intake_numbers_beyond_a_c_int_are_refused(key, value):
    assert f"'intake.{key}': Expected `int` <= 2147483647" in refused(PLAIN + f"{key} = {value}\n")


def test_hard_max_message_bytes_beyond_int64_is_refused():
    assert "'intake.hard_max_message_bytes'" in refused(PLAIN + f"hard_max_message_bytes = {2**63}\n")


def test_a_refused_socket_option_closes_the_socket_so_stop_does_not_hang(tmp_path):
    # Built without the file's checks: intake's own start must still clean up.
    cfg = IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"], allow_plaintext=True,
                       send_hwm=3_000_000_000)
    server = IntakeServer(cfg, SecurityConfig(), Handler())
    outcome = {}

    async def start_and_stop():
        try:
            await server.start()
        except OverflowError:
            outcome["start"] = "refused"
            # Stopped while the error is handled, as EngineService.start does: its
            # traceback keeps an unclosed socket alive, and term() waits for it.
            await server.stop()
            outcome["stopped"] = True

    thread = threading.Thread(target=asyncio.run, args=(start_and_stop(),), daemon=True)
    thread.start()
    thread.join(5)
    assert outcome == {"start": "refused", "stopped": True}


def test_serve_exits_2_naming_an_overflowing_key(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(PLAIN + "send_hwm = 3000000000\n[metrics]\nport = 0\n")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path),
                          "--duration", "0.1"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2 and "'intake.send_hwm'" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- bug 2: a key listed twice
def test_a_key_from_a_file_listed_again_inline_is_refused(keys):
    alice = load_keypair(keys / "alice.key")[0].decode()
    extra = f'[[security.clients]]\nname = "root"\npublic_key = "{alice}"\naccounts = ["*"]\nadmin = true\n'
    message = refused(curve(extra=extra), base_dir=keys.parent)
    assert "'security.clients[1].public_key': same key as client 'alice'" in message


def test_a_key_listed_twice_by_file_is_refused(keys):
    extra = '[[security.clients]]\nname = "again"\npublic_key_file = "keys/alice.key"\naccounts = ["*"]\n'
    message = refused(curve(extra=extra), base_dir=keys.parent)
    assert "'security.clients[1].public_key_file': same key as client 'alice'" in message


def test_update_security_refuses_a_key_listed_twice(keys, tmp_path):
    thread = make_server(tmp_path)
    try:
        server = thread.server
        alice = load_keypair(keys / "alice.key")[0].decode()
        good = parse_config(curve(), base_dir=keys.parent).security
        twice = SecurityConfig(clients=[*good.clients, msgspec.structs.replace(
            good.clients[0], name="root", public_key=alice, public_key_file=None, admin=True)])
        with pytest.raises(ValueError, match="client 'root' has the same key as client 'alice'"):
            thread.call(server.update_security, twice)
        assert thread.call(lambda: dict(server._entitlements)) == {}  # nothing changed
        thread.call(server.update_security, good)
        assert thread.call(lambda: server._entitlements[alice].admin) is False
    finally:
        thread.stop()


# ---------------------------------------------------------------- bug 3: key files read with the file
@pytest.mark.parametrize("secret,alice,message", [
    ("keys/nope.key_secret", None, "'security.server_secret_key_file': cannot read "),
    ("keys/server.key", None, "'security.server_secret_key_file': {keys}/server.key holds no secret key"),
    (None, "keys/nobody.key", "'security.clients[0].public_key_file': cannot read "),
    (None, "keys/garbage.key", "'security.clients[0].public_key_file': {keys}/garbage.key is not a "
                               "ZeroMQ certificate file"),
])
def test_key_file_problems_name_the_key(keys, secret, alice, message):
    text = curve(secret=secret or "keys/server.key_secret",
                 alice=f'public_key_file = "{alice or "keys/alice.key"}"')
    assert message.format(keys=keys) in refused(text, base_dir=keys.parent)


def test_key_files_that_are_right_pass(keys):
    config = parse_config(curve(), base_dir=keys.parent)
    assert config.security.clients[0].public_key_file == str(keys / "alice.key")


# ---------------------------------------------------------------- bug 4: [risk] and [router]
@pytest.mark.parametrize("snippet,message", [
    ('[risk.firm]\nmax_order_qtyy = "5"\n', "'risk': firm: unknown key(s) max_order_qtyy"),
    ("[risk]\nfoo = 1\n", "'risk': unknown top-level key(s) foo"),
    ('[risk.instruments.NOPE]\nmax_order_qty = "5"\n', "risk.instruments names symbols no venue trades"),
    ("[risk]\ninstruments = 5\n", "'risk.instruments': expected a table"),
    ("[router]\nfoo = 1\n", "'router': unknown router config keys: ['foo']"),
    ("[router]\npost_residual = 1\n", "'router': router config 'post_residual' must be a bool"),
])
def test_risk_and_router_mistakes_are_named_when_the_file_is_read(snippet, message):
    assert message in refused(PLAIN + snippet)


def test_good_risk_and_router_pass():
    parse_config(PLAIN + '[risk.firm]\nmax_order_qty = "5"\n[router]\nmax_reroutes = 3\n')


# ---------------------------------------------------------------- bug 5: not UTF-8
def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_bytes(PLAIN.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"engine\.toml: not UTF-8 text"):
        load_config(path)


# ---------------------------------------------------------------- bug 9: [history] store
@pytest.mark.parametrize("snippet,message", [
    ('[history]\nstore = "nope"\n', "'history.store': no postgres gateway named 'nope'"),
    ('[history]\nstore = "pg"\n[[gateways]]\ntype = "postgres"\nname = "pg"\nenabled = false\n',
     "'history.store': no postgres gateway named 'pg'"),
    ('[history]\nstore = "z"\n[[gateways]]\ntype = "zmq"\nname = "z"\n',
     "'history.store': no postgres gateway named 'z'"),
    ('[history]\nstore = "pg"\n[[gateways]]\ntype = "postgres"\nname = "pg"\n'
     'events = ["execution_report"]\n', "'history.store': gateway 'pg' does not store fills"),
])
def test_history_store_must_be_a_postgres_gateway_storing_fills(snippet, message):
    assert message in refused(PLAIN + snippet)


@pytest.mark.parametrize("events", ['["fill"]', '["*"]'])
def test_a_history_store_with_fills_passes(events):
    parse_config(PLAIN + f'[history]\nstore = "pg"\n[[gateways]]\ntype = "postgres"\nname = "pg"\n'
                         f'events = {events}\n')


# ---------------------------------------------------------------- bugs 6, 7, 8: keys generate
def test_keys_generate_keeps_a_lone_secret_file(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert cli.main(["keys", "generate", "server", "--dir", str(keys)]) == 0
    secret = (keys / "server.key_secret").read_bytes()
    (keys / "server.key").unlink()  # only the public half lost
    assert cli.main(["keys", "generate", "server", "--dir", str(keys)]) == 1
    assert "server.key_secret exists; --force" in capsys.readouterr().err
    assert (keys / "server.key_secret").read_bytes() == secret
    assert cli.main(["keys", "generate", "server", "--dir", str(keys), "--force"]) == 0
    assert (keys / "server.key_secret").read_bytes() != secret


def test_keys_generate_keeps_a_dangling_symlink_and_writes_the_public_file_0644(tmp_path, capsys):
    """A dangling symlink where the secret goes is someone's (exists() followed it and said no);
    under umask 000 the public file was world-writable (only the secret one was chmodded)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "server.key_secret").symlink_to(tmp_path / "elsewhere" / "server.key_secret")
    assert cli.main(["keys", "generate", "server", "--dir", str(keys)]) == 1
    assert "server.key_secret exists; --force" in capsys.readouterr().err
    assert (keys / "server.key_secret").is_symlink()
    old = os.umask(0)
    try:
        assert cli.main(["keys", "generate", "algo", "--dir", str(keys)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((keys / "algo.key").stat().st_mode) == 0o644
    assert stat.S_IMODE((keys / "algo.key_secret").stat().st_mode) == 0o600


def test_keys_generate_makes_its_directory_private_whatever_the_umask(tmp_path):
    """Under umask 000 the key directory it made was drwxrwxrwx: anyone could replace or
    remove the key files in it (audit)."""
    keys = tmp_path / "keys"
    old = os.umask(0)
    try:
        assert cli.main(["keys", "generate", "server", "--dir", str(keys)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["../outside", "sub/x", "", ".hidden", "a b"])
def test_keys_generate_takes_only_plain_file_names(tmp_path, capsys, name):
    keys = tmp_path / "keys"
    assert cli.main(["keys", "generate", name, "--dir", str(keys)]) == 1
    err = capsys.readouterr().err
    assert "is not a key name" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.key*"))
    with pytest.raises(ValueError, match="is not a key name"):
        generate_keypair(keys, name)


def test_the_secret_file_is_never_readable_by_others(tmp_path, monkeypatch):
    seen = []
    real_replace = Path.replace

    def spy(self, target):
        # Before and after the move into place: only the owner can reach it.
        mode = stat.S_IMODE(self.stat().st_mode)
        parent = stat.S_IMODE(self.parent.stat().st_mode)
        seen.append((self.name, mode, parent))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    old = os.umask(0o022)
    try:
        public, secret = generate_keypair(tmp_path / "keys", "server")
    finally:
        os.umask(old)
    staged = dict((name, (mode, parent)) for name, mode, parent in seen)
    assert staged["server.key_secret"] == (0o600, 0o700)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and public.exists()
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["server.key", "server.key_secret"]


def test_keypair_is_written_into_place_with_its_keys(tmp_path):
    public, secret = generate_keypair(tmp_path, "algo-1.v2")
    assert (public, secret) == (tmp_path / "algo-1.v2.key", tmp_path / "algo-1.v2.key_secret")
    assert load_keypair(public)[0] == load_keypair(secret)[0]
    assert intake_module.KEY_NAME.fullmatch("algo-1.v2")


# ---------------------------------------------------------------- bug 11: resume after a refused frame
def test_a_refused_first_frame_does_not_spend_the_resume(tmp_path):
    thread = make_server(tmp_path, heartbeat_timeout_ms=5000, heartbeat_interval_ms=1000)
    try:
        endpoint = thread.server.plaintext_endpoints[0]
        with Client(endpoint) as first:
            first.heartbeat()
            session_id = first.recv(5).session_id
        with Client(endpoint) as second:
            second.send(ResendRequest(v=2, begin_seq=1, session_id=session_id))
            bad = second.recv(5)
            assert isinstance(bad, Reject) and bad.reject_reason == RejectReason.UNSUPPORTED_VERSION
            second.resume(session_id, 0)
            replay = second.recv_until(lambda m: isinstance(m, HeartbeatAck) and m.resend_end_seq)
            assert [type(m) for m in replay] == [HeartbeatAck, HeartbeatAck]
            assert replay[-1].session_id == session_id and replay[-1].seq == 2
        # The throwaway session of the refused frame is not kept.
        assert thread.call(lambda: list(thread.server.sessions)) == [session_id]
    finally:
        thread.stop()


def test_a_resume_after_an_accepted_request_is_still_refused(tmp_path):
    thread = make_server(tmp_path, heartbeat_timeout_ms=5000, heartbeat_interval_ms=1000)
    try:
        endpoint = thread.server.plaintext_endpoints[0]
        with Client(endpoint) as owner, Client(endpoint) as other:
            owner.heartbeat()
            owner_session = owner.recv(5).session_id
            other.send(ResendRequest(v=2, begin_seq=1))  # refused: still fresh
            other.recv(5)
            other.heartbeat()  # accepted: this connection now has its session
            other.recv(5)
            other.resume(owner_session, 0)
            refused_resume = other.recv(5)
            assert refused_resume.reject_reason == RejectReason.RESUME_REFUSED
    finally:
        thread.stop()
