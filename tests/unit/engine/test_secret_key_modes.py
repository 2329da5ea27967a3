"""A key file others may read (a secret one) or write (any one) is refused when the
configuration is read, naming the key and the mode.

Before, the engine served with a server key (or a gateway's) from a file of mode 0644, as
pyzmq's own ``create_certificates`` leaves it under the usual umask: every user of the
host could read the secret key and pass for the engine to its clients. And a public key
file of the allow-list decides who gets a client's accounts: whoever may write it can
put their own key there, taken at the next SIGHUP or start (OpenSSH refuses such a
private key, and under ``StrictModes`` such an ``authorized_keys``).
"""
import os

import pytest

from engine.config import ConfigError, parse_config
from tests.unit.engine.test_config_security_fixes import PLAIN, curve, keys  # noqa: F401 - fixture

GATEWAY = PLAIN + ('[[gateways]]\ntype = "zmq"\ncurve_secret_key_file = "keys/server.key_secret"\n'
                   'subscriber_key_files = ["keys/alice.key"]\n')
SECRET = [(curve(), "server.key_secret", "security.server_secret_key_file"),
          (GATEWAY, "server.key_secret", "gateways[0].curve_secret_key_file")]
PUBLIC = [(curve(), "alice.key", "security.clients[0].public_key_file"),
          (GATEWAY, "alice.key", "gateways[0].subscriber_key_files[0]")]


def _parse(keys, text):
    return parse_config(text, base_dir=keys.parent, source="engine.toml")


@pytest.mark.parametrize("text,file,key,mode,fix",
                         [(*case, mode, "chmod 600") for case in SECRET
                          for mode in (0o644, 0o604, 0o620, 0o602, 0o666)] +
                         [(*case, mode, "chmod 644") for case in PUBLIC
                          for mode in (0o664, 0o646, 0o666)])
def test_a_key_file_others_may_read_or_write_is_refused(keys, text, file, key, mode, fix):
    os.chmod(keys / file, mode)
    with pytest.raises(ConfigError) as caught:
        _parse(keys, text)
    message = str(caught.value)
    assert f"'{key}'" in message and f"mode {mode:o}" in message and fix in message


@pytest.mark.parametrize("text,file,key,mode",
                         [(*case, mode) for case in SECRET for mode in (0o600, 0o400, 0o640, 0o440)] +
                         [(*case, mode) for case in PUBLIC for mode in (0o644, 0o444, 0o600)])
def test_a_key_file_only_its_owner_may_write_is_taken(keys, text, file, key, mode):
    """A group may read a secret key (a service's key mounted for its group); anyone may
    read a public one."""
    os.chmod(keys / file, mode)
    _parse(keys, text)
