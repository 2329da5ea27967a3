"""A ZeroMQ gateway with ``curve_secret_key_file``: its PUB socket and replay service speak
CURVE, and only the listed subscriber keys may connect.

Before, neither socket authenticated (security audit, stop 31): whoever could connect read
every account's events, session ids included, and could replay the whole journal.
"""
import pytest

from engine.config import ConfigError, parse_config
from engine.intake import generate_keypair, load_keypair
from engine.journal import JournalWriter
from gateways import from_config
from gateways.zmq_pub import Subscriber
from tests.integration.test_gateway_zmq import collect
from tests.unit.gateways.helpers import write_fills


@pytest.fixture
def keys(tmp_path):
    """(gateway's public cert, gateway's secret cert, alice's keys, bob's keys)."""
    server_public, server_secret = generate_keypair(tmp_path / "keys", "gateway")
    alice = generate_keypair(tmp_path / "keys", "alice")
    bob = generate_keypair(tmp_path / "keys", "bob")
    return server_public, server_secret, alice, bob


@pytest.fixture
def curve_gateway(tmp_path, keys):
    server_public, server_secret, (alice_public, _), _ = keys
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "heartbeat_ms": 50, "poll_interval_ms": 1,
             "curve_secret_key_file": str(server_secret),
             "subscriber_key_files": [str(alice_public)]}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    gateway.start()
    yield gateway, writer, load_keypair(server_public)[0]
    gateway.stop()
    writer.close()


def _subscriber(gateway, server_key, keypair_files):
    public, _ = load_keypair(keypair_files[0])
    _, secret = load_keypair(keypair_files[1])
    return Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0,
                      replay_timeout_ms=500, server_key=server_key,
                      client_keypair=(public, secret))


def test_a_listed_key_receives_live_events_and_replays(curve_gateway, keys):
    gateway, writer, server_key = curve_gateway
    before = write_fills(writer, 1, 50, with_commands=False)  # published before it connects
    with _subscriber(gateway, server_key, keys[2]) as sub:
        after = write_fills(writer, before[-1] + 1, 50, with_commands=False)
        got = collect(sub, 100, 20)
    assert [e.seq for e in got] == before + after
    assert sub.replayed >= 50  # the first 50 came from the replay service, over CURVE


def test_an_unlisted_key_gets_nothing(curve_gateway, keys):
    gateway, writer, server_key = curve_gateway
    write_fills(writer, 1, 20, with_commands=False)
    with _subscriber(gateway, server_key, keys[3]) as sub:
        got = collect(sub, 1, 1.5)
        assert got == []
        assert "did not answer" in sub.last_error  # the replay service refused its handshake
    # (The gateway's child process logs the refusal, sparsely: engine.metrics.SparseLog.)


def test_a_plaintext_subscriber_gets_nothing(curve_gateway):
    gateway, writer, _ = curve_gateway
    write_fills(writer, 1, 20, with_commands=False)
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0,
                    replay_timeout_ms=500) as sub:
        assert collect(sub, 1, 1.5) == []
        assert "did not answer" in sub.last_error


BASE = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'


@pytest.mark.parametrize("table,message", [
    ('curve_secret_key_file = "keys/gateway.key_secret"\n',
     "'gateways[0].curve_secret_key_file': is set, but 'subscriber_keys' and "
     "'subscriber_key_files' are empty"),
    ('subscriber_key_files = ["keys/alice.key"]\n',
     "'gateways[0].subscriber_key_files': lists keys, but 'curve_secret_key_file' is not set"),
    ('curve_secret_key_file = "keys/gateway.key_secret"\nsubscriber_keys = ["short"]\n',
     "'gateways[0].subscriber_keys[0]': not a 40-character Z85 CURVE public key"),
    ('curve_secret_key_file = "keys/gateway.key"\nsubscriber_key_files = ["keys/alice.key"]\n',
     "holds no secret key"),
    ('curve_secret_key_file = "keys/gateway.key_secret"\nsubscriber_key_files = ["keys/eve.key"]\n',
     "'gateways[0].subscriber_key_files[0]': cannot read"),
])
def test_key_mistakes_are_named_when_the_file_is_read(tmp_path, keys, table, message):
    text = BASE + '[[gateways]]\ntype = "zmq"\n' + table
    with pytest.raises(ConfigError) as caught:
        parse_config(text, base_dir=tmp_path, source="engine.toml")
    assert message in str(caught.value)


def test_relative_key_paths_are_taken_from_the_files_directory(tmp_path, keys):
    text = BASE + ('[[gateways]]\ntype = "zmq"\ncurve_secret_key_file = "keys/gateway.key_secret"\n'
                   'subscriber_key_files = ["keys/alice.key"]\n')
    config = parse_config(text, base_dir=tmp_path, source="engine.toml")
    assert config.gateways[0]["curve_secret_key_file"] == str(tmp_path / "keys" / "gateway.key_secret")
    assert config.gateways[0]["subscriber_key_files"] == [str(tmp_path / "keys" / "alice.key")]
