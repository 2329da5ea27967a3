"""A ZeroMQ gateway without CURVE bound beyond loopback needs ``allow_plaintext = true``, as
the engine's plaintext intake does (issue 6: a plain-text endpoint only when the
configuration asks for it explicitly, with a warning at start-up).

Before, such a gateway started with a warning only: a ``[[gateways]]`` table with
``endpoint = "tcp://0.0.0.0:7101"`` (docs/gateways.md's own first example) served every
account's events and the whole journal's replay to anyone on the network, unasked.
"""
import logging

import pytest

from engine.config import ConfigError, parse_config
from gateways import from_config
from gateways.config import GatewayConfigError, parse_gateway_configs

OPEN = ["tcp://0.0.0.0:7101", "tcp://*:7101", "tcp://[::]:7101", "tcp://10.1.2.3:7101",
        "tcp://engine-host:7101"]
CLOSED = ["tcp://127.0.0.1:7101", "tcp://[::1]:7101", "tcp://localhost:7101",
          "ipc:///tmp/kronos-gw.sock", "inproc://gw"]


@pytest.mark.parametrize("key", ["endpoint", "replay_endpoint"])
@pytest.mark.parametrize("endpoint", OPEN)
def test_an_open_plaintext_endpoint_is_refused_unless_asked_for(key, endpoint):
    with pytest.raises(GatewayConfigError) as caught:
        parse_gateway_configs([{"type": "zmq", key: endpoint}])
    message = str(caught.value)
    assert message.startswith(f"'gateways[0].{key}': {endpoint!r}") and "allow_plaintext" in message
    [config] = parse_gateway_configs([{"type": "zmq", key: endpoint, "allow_plaintext": True}])
    assert getattr(config, key) == endpoint and config.allow_plaintext


@pytest.mark.parametrize("endpoint", CLOSED)
def test_loopback_and_ipc_need_no_opt_in(endpoint):
    [config] = parse_gateway_configs([{"type": "zmq", "endpoint": endpoint}])
    assert config.endpoint == endpoint and not config.allow_plaintext


def test_serve_refuses_the_file_naming_the_key():
    text = ('[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'
            '[[gateways]]\ntype = "zmq"\nendpoint = "tcp://0.0.0.0:7101"\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="engine.toml")
    assert "'gateways[0].endpoint'" in str(caught.value)


def test_asked_for_it_starts_with_the_warning(tmp_path, caplog):
    table = {"type": "zmq", "endpoint": "tcp://0.0.0.0:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "allow_plaintext": True, "isolation": "thread"}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    with caplog.at_level(logging.WARNING, logger="gateways.zmq_pub"):
        gateway.start()
        gateway.stop()
    assert any("take unauthenticated connections from other hosts" in r.getMessage()
               for r in caplog.records)
