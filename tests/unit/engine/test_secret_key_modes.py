"""A secret key file that other users may read (or group or others may write) is refused
when the configuration is read, naming the key and the mode.

Before, the engine served with a server key (or a gateway's) from a file of mode 0644,
as `pyzmq`'s own ``create_certificates`` leaves it under the usual umask: every user of
the host could read the secret key and impersonate the engine to its clients or decrypt
what they recorded of its traffic. OpenSSH refuses such a private key in the same way.
"""
import os

import pytest

from engine.config import ConfigError, parse_config
from engine.intake import generate_keypair

PLAIN = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'


@pytest.fixture
def keys(tmp_path):
    for name in ("server", "gateway", "alice"):
        generate_keypair(tmp_path / "keys", name)
    return tmp_path / "keys"


def _server(keys):
    return f"""[intake]
endpoints = ["tcp://127.0.0.1:7001"]
[security]
server_secret_key_file = "{keys}/server.key_secret"
[[security.clients]]
name = "alice"
public_key_file = "{keys}/alice.key"
accounts = ["DEMO1"]
"""


def _gateway(keys):
    return PLAIN + f"""[[gateways]]
type = "zmq"
curve_secret_key_file = "{keys}/gateway.key_secret"
subscriber_key_files = ["{keys}/alice.key"]
"""


CASES = [(_server, "server.key_secret", "security.server_secret_key_file"),
         (_gateway, "gateway.key_secret", "gateways[0].curve_secret_key_file")]


@pytest.mark.parametrize("text,file,key", CASES)
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o602, 0o666])
def test_a_secret_key_others_may_read_or_write_is_refused(keys, text, file, key, mode):
    os.chmod(keys / file, mode)
    with pytest.raises(ConfigError) as caught:
        parse_config(text(keys), base_dir=keys, source="engine.toml")
    message = str(caught.value)
    assert f"'{key}'" in message and f"mode {mode:o}" in message and "chmod 600" in message


@pytest.mark.parametrize("text,file,key", CASES)
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_a_secret_key_of_its_owner_or_a_reading_group_is_taken(keys, text, file, key, mode):
    os.chmod(keys / file, mode)
    parse_config(text(keys), base_dir=keys, source="engine.toml")


def test_public_key_files_may_be_read_by_all(keys):
    os.chmod(keys / "alice.key", 0o644)
    parse_config(_server(keys), base_dir=keys, source="engine.toml")


# A public key file of the allow-list decides who gets a client's accounts: whoever may
# write it can put their own key there and have it taken at the next SIGHUP or start
# (OpenSSH's StrictModes refuses an authorized_keys file others may write, for that).
ALLOW_LIST = [(_server, "alice.key", "security.clients[0].public_key_file"),
              (_gateway, "alice.key", "gateways[0].subscriber_key_files[0]")]


@pytest.mark.parametrize("text,file,key", ALLOW_LIST)
@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_an_allow_list_key_file_others_may_write_is_refused(keys, text, file, key, mode):
    os.chmod(keys / file, mode)
    with pytest.raises(ConfigError) as caught:
        parse_config(text(keys), base_dir=keys, source="engine.toml")
    message = str(caught.value)
    assert f"'{key}'" in message and f"mode {mode:o}" in message and "chmod 644" in message


@pytest.mark.parametrize("text,file,key", ALLOW_LIST)
@pytest.mark.parametrize("mode", [0o644, 0o444, 0o600])
def test_an_allow_list_key_file_only_its_owner_may_write_is_taken(keys, text, file, key, mode):
    os.chmod(keys / file, mode)
    parse_config(text(keys), base_dir=keys, source="engine.toml")
