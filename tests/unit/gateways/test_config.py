"""``[[gateways]]`` validation: every mistake is named by table and key."""
import pytest

from engine.config import parse_config
from gateways import GatewayConfigError, from_config, parse_gateway_configs
from gateways.config import NatsConfig, PostgresConfig, ZmqConfig


def error(tables) -> str:
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_configs(tables)
    return str(info.value)


def test_defaults():
    zmq, nats, pg = parse_gateway_configs([{"type": "zmq"}, {"type": "nats"}, {"type": "postgres"}])
    assert isinstance(zmq, ZmqConfig) and zmq.endpoint == "tcp://127.0.0.1:7101"
    assert zmq.events == ["fill", "execution_report", "admin"] and zmq.batch_size == 1000
    assert isinstance(nats, NatsConfig) and nats.stream == "KRONOS_EVENTS"
    assert nats.duplicate_window_s == 600 and nats.servers == ["nats://127.0.0.1:4222"]
    assert isinstance(pg, PostgresConfig) and pg.schema == "kronos"
    assert [c.gateway_name for c in (zmq, nats, pg)] == ["zmq", "nats", "postgres"]
    assert (zmq.nice, zmq.metrics_port, zmq.metrics_host) == (10, None, "127.0.0.1")


def test_metrics_port_zero_may_repeat():
    # 0 picks a free port each: no clash to report.
    configs = parse_gateway_configs([{"type": "zmq", "metrics_port": 0},
                                     {"type": "nats", "metrics_port": 0}])
    assert [c.metrics_port for c in configs] == [0, 0]


def test_conninfo_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("KRONOS_PG_DSN", "postgresql://x@h/db")
    [pg] = parse_gateway_configs([{"type": "postgres"}])
    assert pg.conninfo == "postgresql://x@h/db"
    [explicit] = parse_gateway_configs([{"type": "postgres", "dsn": "postgresql://y@h/db"}])
    assert explicit.conninfo == "postgresql://y@h/db"


@pytest.mark.parametrize("tables,expected", [
    ([{"type": "zmq", "endpont": "tcp://*:1"}], "'gateways[0].endpont': unknown key for a zmq gateway"),
    ([{"type": "zmq"}, {"type": "nats", "stream_name": "X"}], "'gateways[1].stream_name': unknown key"),
    ([{"type": "postgres", "shema": "k"}], "'gateways[0].shema': unknown key for a postgres gateway"),
    ([{"endpoint": "tcp://*:1"}], "'gateways[0].type': missing required key"),
    ([{"type": "kafka"}], "'gateways[0].type': unknown gateway type 'kafka'"),
    ([{"type": "zmq", "batch_size": 0}], "'gateways[0].batch_size'"),
    ([{"type": "nats", "servers": "nats://x"}], "'gateways[0].servers'"),
    ([{"type": "nats", "events": ["fill", "fills"]}], "'gateways[0].events[1]': unknown event type 'fills'"),
    ([{"type": "nats", "events": []}], "'gateways[0].events': empty"),
    ([{"type": "zmq", "endpoint": "localhost:7"}], "'gateways[0].endpoint'"),
    ([{"type": "zmq", "replay_endpoint": "tcp://127.0.0.1:7101"}], "'gateways[0].replay_endpoint'"),
    ([{"type": "nats", "subject_prefix": "kronos.>"}], "'gateways[0].subject_prefix'"),
    ([{"type": "postgres", "schema": "Robert'); DROP"}], "'gateways[0].schema'"),
    ([{"type": "zmq", "backoff_initial_ms": 10, "backoff_max_ms": 5}], "'gateways[0].backoff_max_ms'"),
    ([{"type": "zmq"}, {"type": "zmq", "endpoint": "tcp://127.0.0.1:9", "replay_endpoint": "tcp://127.0.0.1:8"}],
     "'gateways[1].name': 'zmq' is also the name of gateways[0]"),
    ([{"type": "zmq"}, {"type": "zmq", "name": "b", "replay_endpoint": "tcp://127.0.0.1:9"}],
     "'gateways[1].endpoint': 'tcp://127.0.0.1:7101' is already bound by gateways[0]"),
    (["zmq"], "'gateways[0]': expected a table"),
    ([{"type": "zmq", "nice": 20}], "'gateways[0].nice'"),
    ([{"type": "zmq", "metrics_port": 70000}], "'gateways[0].metrics_port'"),
    ([{"type": "zmq", "metrics_port": 9500}, {"type": "nats", "metrics_port": 9500}],
     "'gateways[1].metrics_port': 9500 is also the metrics port of gateways[0]"),
])
def test_errors_name_the_key(tables, expected):
    assert expected in error(tables)


@pytest.mark.parametrize("key,value", [
    ("endpoint", "tcp://127.0.0.1:99999"),   # libzmq would bind 34463 without a word
    ("replay_endpoint", "tcp://*:65536"),
])
def test_zmq_port_out_of_range_is_named(key, value):
    message = error([{"type": "zmq", key: value}])
    assert f"'gateways[0].{key}': {value!r}: port" in message and "1 to 65535" in message


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1", "tcp://*:65535", "tcp://127.0.0.1:0",
                                      "tcp://127.0.0.1:*", "ipc:///tmp/kronos:99999"])
def test_zmq_ports_in_range_or_ephemeral_pass(endpoint):
    # (allow_plaintext: "*" listens beyond loopback, refused without CURVE or it)
    [config] = parse_gateway_configs([{"type": "zmq", "endpoint": endpoint, "allow_plaintext": True}])
    assert config.endpoint == endpoint


@pytest.mark.parametrize("server,why", [
    ("nats//127.0.0.1:4222", "has a path, query or fragment"),
    ("http://127.0.0.1:4222", "scheme 'http'"),
    ("ws://127.0.0.1:80", "scheme 'ws'"),
    ("nats://127.0.0.1:99999", "bad port"),
    ("nats://127.0.0.1:0", "port 0"),
    ("nats://127.0.0.1:x", "bad port"),
    ("nats://:4222", "no host"),
    ("nats://127.0.0.1:4222/x", "has a path, query or fragment"),
    ("nats://127.0.0.1 :4222", "whitespace"),
    ("", "empty"),
])
def test_nats_server_url_is_checked_and_named(server, why):
    message = error([{"type": "nats", "servers": ["nats://127.0.0.1:4222", server]}])
    assert message.startswith(f"'gateways[0].servers[1]': {server!r} ") and why in message


def test_nats_server_forms_nats_py_takes_pass():
    servers = ["nats://127.0.0.1:4222", "tls://nats-1.example:4443", "nats-2:4222", "nats-3",
               "nats://user:secret@nats-4:4222", "[::1]:4222", "nats://nats-5"]
    [config] = parse_gateway_configs([{"type": "nats", "servers": servers}])
    assert config.servers == servers


def test_unknown_key_message_lists_the_valid_keys():
    message = error([{"type": "nats", "stream_name": "X"}])
    assert "duplicate_window_s" in message and "subject_prefix" in message


def test_from_engine_config_file(tmp_path):
    text = """
[intake]
plaintext_endpoints = ["tcp://127.0.0.1:7001"]
allow_plaintext = true

[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:0"
replay_endpoint = "tcp://127.0.0.1:0"

[[gateways]]
type = "postgres"
enabled = false
schema = "trades"

[[gateways]]
type = "nats"
name = "platform"
events = ["fill", "admin"]
"""
    config = parse_config(text)
    gateways = from_config(config.gateways, tmp_path / "journal", tmp_path / "gw")
    assert [(g.type, g.name) for g in gateways] == [("zmq", "zmq"), ("nats", "platform")]
    assert gateways[1].config.events == ["fill", "admin"]
    assert gateways[0].source.data_dir == tmp_path / "journal"
    assert gateways[1].data_dir == tmp_path / "gw" / "platform"
    assert not any(g.running for g in gateways)


def test_poll_interval_defaults_and_sched_policy():
    zmq, nats, pg = parse_gateway_configs([{"type": "zmq"}, {"type": "nats"}, {"type": "postgres"}])
    assert (zmq.poll_interval_ms, nats.poll_interval_ms, pg.poll_interval_ms) == (10, 20, 100)
    assert zmq.sched_policy == "normal"
    [idle] = parse_gateway_configs([{"type": "zmq", "sched_policy": "idle"}])
    assert idle.sched_policy == "idle"
    assert "'gateways[0].sched_policy'" in error([{"type": "zmq", "sched_policy": "batch"}])


# ---------------------------------------------------------------- the documentation
def _doc_tables():
    """docs/gateways.md's key tables: the shared one and each type's, key -> default as written."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[3] / "docs" / "gateways.md").read_text(encoding="utf-8")

    def table(heading):
        section = text.split(heading + "\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        return {key: default.strip()
                for key, default in re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section, flags=re.M)}
    return table("### Keys of every gateway"), {
        kind: table(f'### `type = "{kind}"`') for kind in ("zmq", "nats", "postgres")}


def _doc_default(text: str, kind: str):
    """A documented default as a value: TOML where it parses, ``none`` is None, per-type lists."""
    import re
    import tomllib
    if m := re.fullmatch(r"(`\S+` \w+(?:, )?)+", text):
        per_type = dict((t, v) for v, t in re.findall(r"`(\S+)` (\w+)", m.group(0)))
        text = per_type[kind]
    text = text.strip("`")
    if text == "none":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def test_docs_list_every_gateway_key_with_its_real_default():
    import msgspec
    shared, per_type = _doc_tables()
    # Computed defaults: the name is the type's; the DSN is read from the environment first.
    computed = {"name": "the type", "dsn": "`$KRONOS_PG_DSN`, else `postgresql://postgres@127.0.0.1:5432/test`"}
    assert shared.pop("type") == "(required)"
    for kind, cls in (("zmq", ZmqConfig), ("nats", NatsConfig), ("postgres", PostgresConfig)):
        documented = {**shared, **per_type[kind]}
        real = {f.name: f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
                for f in msgspec.structs.fields(cls)}
        assert sorted(set(real) ^ set(documented)) == [], kind
        for key, text in documented.items():
            if key in computed:
                assert (real[key], text) == (None, computed[key]), (kind, key)
            else:
                assert _doc_default(text, kind) == real[key], (kind, key, text, real[key])
    from gateways.config import DEFAULT_PG_DSN
    assert DEFAULT_PG_DSN == "postgresql://postgres@127.0.0.1:5432/test"
