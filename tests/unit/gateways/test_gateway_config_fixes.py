"""Gateway durations are finite and bounded: ``inf`` (valid TOML) used to pass the checks and
make the gateway fail for ever at run time (a timer that cannot be set)."""
import pytest

from gateways.config import GatewayConfigError, parse_gateway_configs

ZMQ = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0"}


@pytest.mark.parametrize("table,key", [
    ({**ZMQ, "poll_interval_ms": float("inf")}, "poll_interval_ms"),
    ({**ZMQ, "poll_interval_ms": 60_001.0}, "poll_interval_ms"),
    ({"type": "postgres", "poll_interval_ms": float("inf")}, "poll_interval_ms"),
    ({"type": "nats", "ack_timeout_s": float("inf")}, "ack_timeout_s"),
    ({"type": "nats", "connect_timeout_s": float("inf")}, "connect_timeout_s"),
    ({"type": "nats", "duplicate_window_s": float("inf")}, "duplicate_window_s"),
    ({"type": "nats", "max_age_s": float("inf")}, "max_age_s"),
    ({"type": "nats", "max_age_s": float("nan")}, "max_age_s"),
    ({**ZMQ, "heartbeat_ms": 10**17}, "heartbeat_ms"),
    ({**ZMQ, "cursor_interval_ms": 10**19}, "cursor_interval_ms"),
    ({**ZMQ, "backoff_max_ms": 10**12}, "backoff_max_ms"),
    ({"type": "postgres", "connect_timeout_s": 10**14}, "connect_timeout_s"),
])
def test_infinite_or_absurd_durations_are_refused_naming_the_key(table, key):
    with pytest.raises(GatewayConfigError, match=rf"^'gateways\[0\]\.{key}': Expected `(float|int)` "):
        parse_gateway_configs([table])


def test_durations_at_their_bounds_pass():
    [zmq, nats] = parse_gateway_configs([
        {**ZMQ, "poll_interval_ms": 60_000.0, "heartbeat_ms": 3_600_000},
        {"type": "nats", "ack_timeout_s": 3600.0, "max_age_s": 86_400.0 * 365,
         "duplicate_window_s": 86_400.0},
    ])
    assert zmq.poll_interval_ms == 60_000.0 and nats.max_age_s == 86_400.0 * 365
