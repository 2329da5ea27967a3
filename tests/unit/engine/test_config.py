"""Configuration: the documented example parses, defaults are the documented
ones, and every mistake is an error naming the key."""
import re
from pathlib import Path

import pytest

from engine.config import (
    Config, ConfigError, IntakeConfig, JournalConfig, MetricsConfig, load_config, parse_config,
)
from engine.intake import client_public_key, generate_keypair

DOCS = Path(__file__).resolve().parents[3] / "docs"
KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
KEY2 = "f<>Lq:&t8wzH=swUqnftdK.WCv=[]LL7>PIk]x#0"  # another key
PLAIN = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'


def test_full_file(tmp_path):
    # The key files are read when the file is (a missing one is named then).
    generate_keypair(tmp_path / "keys", "server")
    generate_keypair(tmp_path / "keys", "ops")
    path = tmp_path / "engine.toml"
    path.write_text(f"""
[intake]
endpoints = ["tcp://0.0.0.0:7001", "ipc:///tmp/kronos.sock"]
max_message_bytes = 4096
heartbeat_interval_ms = 500
heartbeat_timeout_ms = 1500

[security]
server_secret_key_file = "keys/server.key_secret"

[[security.clients]]
name = "algo-1"
public_key = "{KEY}"
accounts = ["ACC1", "ACC2"]

[[security.clients]]
name = "ops"
public_key_file = "keys/ops.key"
accounts = ["*"]
admin = true

[journal]
dir = "journal"
fsync = "group"
group_commit_us = 250

[metrics]
port = 0

[risk.firm]
max_order_qty = "10000"
[risk.accounts.ACC1]
cash = "1000000"

[sim]
speed = 2

[[gateways]]
type = "nats"
servers = ["nats://127.0.0.1:4222"]
""")
    config = load_config(path)
    assert config.intake.endpoints == ["tcp://0.0.0.0:7001", "ipc:///tmp/kronos.sock"]
    assert config.intake.hard_max_bytes == 4 * 4096
    assert config.security.server_secret_key_file == str(tmp_path / "keys" / "server.key_secret")
    assert config.security.clients[1].public_key_file == str(tmp_path / "keys" / "ops.key")
    assert config.security.clients[1].admin and not config.security.clients[0].admin
    assert config.journal.dir == str(tmp_path / "journal")
    assert (config.journal.fsync, config.journal.group_commit_us) == ("group", 250)
    assert config.risk == {"firm": {"max_order_qty": "10000"}, "accounts": {"ACC1": {"cash": "1000000"}}}
    assert config.sim == {"speed": 2}
    assert config.gateways[0]["type"] == "nats"


def test_documented_defaults():
    config = parse_config(PLAIN)
    assert config.intake.allow_plaintext
    assert config.intake.max_message_bytes == 262144
    assert (config.intake.heartbeat_interval_ms, config.intake.heartbeat_timeout_ms) == (1000, 3000)
    assert config.journal == JournalConfig(dir=str(Path("data/journal").resolve()))
    assert config.journal.fsync == "always"
    assert config.metrics == MetricsConfig(host="127.0.0.1", port=9464)
    assert config.security.plaintext_accounts == [] and not config.security.plaintext_admin


@pytest.mark.parametrize("text,message", [
    (PLAIN + "max_mesage_bytes = 5\n", "unknown key 'intake.max_mesage_bytes'"),
    (PLAIN + "[journal]\nfsynk = 'always'\n", "unknown key 'journal.fsynk'"),
    (PLAIN + "[metrix]\nport = 1\n", "unknown key 'metrix'"),
    (PLAIN + f'[[security.clients]]\nname="a"\npublic_key="{KEY}"\naccounts=["A"]\nadmn=true\n',
     "unknown key 'security.clients[0].admn'"),
    (PLAIN + '[[security.clients]]\nname="a"\npublic_key="x"\n', "missing required key 'security.clients[0].accounts'"),
    (PLAIN + "[journal]\nfsync = 'sometimes'\n", "'journal.fsync'"),
    (PLAIN + "[metrics]\nport = 70000\n", "'metrics.port'"),
    (PLAIN + "heartbeat_interval_ms = '1s'\n", "'intake.heartbeat_interval_ms': Expected `int`, got `str`"),
    (PLAIN + "max_message_bytes = 0\n", "'intake.max_message_bytes'"),
    ('[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\n', "allow_plaintext"),
    ('[intake]\nendpoints = ["tcp://127.0.0.1:7001"]\n', "server_secret_key_file"),
    # read though only plaintext endpoints are open: a typo must not wait for CURVE's day
    (PLAIN + '[security]\nserver_secret_key_file = "nowhere/server.key_secret"\n',
     "'security.server_secret_key_file'"),
    ("[intake]\n", "accept no connections"),
    (PLAIN.replace("tcp://127.0.0.1:7002", "http://x"), "not a tcp://host:port"),
    (PLAIN + "heartbeat_timeout_ms = 500\n", "heartbeat_timeout_ms"),
    # Audit (stop 33): forgotten before it timed out, a session's cancel-on-disconnect was never
    # done, and a client heartbeating on time lost its session (seconds against milliseconds).
    (PLAIN + "session_retention_s = 1\n", "'intake.session_retention_s' (1 s) must be longer "
                                          "than 'intake.heartbeat_timeout_ms' (3000 ms)"),
    (PLAIN + "heartbeat_timeout_ms = 4000000\n", "must be longer than 'intake.heartbeat_timeout_ms'"),
    (PLAIN + "request_burst = 0\n", "'intake.request_burst'"),
    (PLAIN + "request_rate = -1\n", "'intake.request_rate'"),
    (PLAIN + "hard_max_message_bytes = 10\n", "hard_max_message_bytes"),
    (PLAIN + '[[security.clients]]\nname="a"\npublic_key="short"\naccounts=["A"]\n', "Z85"),
    (PLAIN + '[[security.clients]]\nname="a"\naccounts=["A"]\n', "exactly one of"),
    (PLAIN + f'[[security.clients]]\nname="a"\npublic_key="{KEY}"\naccounts=[]\n', "accounts"),
    (PLAIN + f'[[security.clients]]\nname="a"\npublic_key="{KEY}"\naccounts=["A"]\n'
             f'[[security.clients]]\nname="b"\npublic_key="{KEY}"\naccounts=["B"]\n', "same key as client 'a'"),
    ("[intake\n", "not valid TOML"),
    # Two keys under one name would share its throttle bucket and limits.
    (PLAIN + f'[[security.clients]]\nname="a"\npublic_key="{KEY}"\naccounts=["A"]\n'
             f'[[security.clients]]\nname="a"\npublic_key="{KEY2}"\naccounts=["B"]\n',
     "'security.clients[1].name': 'a' is also security.clients[0]'s"),
    (PLAIN + f'[[security.clients]]\nname="plaintext"\npublic_key="{KEY}"\naccounts=["A"]\n',
     "'plaintext' names the plaintext endpoints' clients"),
    # An empty or blank name labelled the key's throttle, limits and audit lines with nothing.
    (PLAIN + f'[[security.clients]]\nname=""\npublic_key="{KEY}"\naccounts=["A"]\n',
     "'security.clients[0].name': '': a name is the key's throttle bucket"),
    (PLAIN + f'[[security.clients]]\nname=" a"\npublic_key="{KEY}"\naccounts=["A"]\n',
     "'security.clients[0].name': ' a': a name"),
])
def test_mistakes_are_named(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="engine.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("engine.toml: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_key_files_and_inline_keys(tmp_path):
    public, secret = generate_keypair(tmp_path, "client")
    assert public.exists() and secret.exists()
    assert secret.stat().st_mode & 0o077 == 0  # secret readable by its owner only
    config = parse_config(PLAIN + f'[[security.clients]]\nname="c"\npublic_key_file="client.key"\n'
                                  f'accounts=["A"]\n', base_dir=tmp_path)
    key = client_public_key(config.security.clients[0])
    assert len(key) == 40
    inline = parse_config(PLAIN + f'[[security.clients]]\nname="c"\npublic_key="{key}"\naccounts=["A"]\n')
    assert client_public_key(inline.security.clients[0]) == key


def test_docs_config_examples_parse(tmp_path):
    # Every ```toml block in the docs is a complete, valid configuration.
    blocks = []
    for doc in (DOCS / "protocol.md", DOCS / "journal.md"):
        blocks += re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    # The key files the examples name must exist: they are read with the file.
    for name in ("server", "algo-1"):
        generate_keypair(tmp_path / "keys", name)
    for block in blocks:
        assert isinstance(parse_config(block, base_dir=tmp_path), Config)


def test_sections_are_frozen():
    config = parse_config(PLAIN)
    with pytest.raises(AttributeError):
        config.intake.max_message_bytes = 1
    assert isinstance(config.intake, IntakeConfig)


def test_instruments_are_not_an_engine_section(tmp_path):
    # Instruments are defined by the venues; a stray engine-level table is an
    # error rather than a silently ignored second definition.
    path = tmp_path / "engine.toml"
    path.write_text('[[instruments]]\nsymbol = "AAPL"\n')
    with pytest.raises(ConfigError, match="instruments"):
        load_config(path)


def _documented_engine_keys() -> dict[str, str]:
    """protocol.md's *Configuration keys of the engine's sections*: key -> default as written.

    A row may name several keys (`` `metrics.host`, `metrics.port` ``) with as many defaults,
    comma-separated, in the same order.
    """
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    table = text.split("## Configuration keys of the engine's sections", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for keys_cell, default_cell in re.findall(r"^\| (`[^|]*`) \| ([^|]*) \|", table, flags=re.M):
        keys = re.findall(r"`([^`]+)`", keys_cell)
        defaults = [d.strip() for d in default_cell.split(",")] if len(keys) > 1 else [default_cell.strip()]
        assert len(defaults) == len(keys), f"row {keys}: {len(keys)} keys, defaults {defaults}"
        documented.update(zip(keys, defaults))
    return documented


def _doc_value(text: str):
    """A documented default as the value it stands for: TOML where it parses, ``none`` is None."""
    import tomllib
    text = text.strip("`")
    if text == "none":
        return None
    if m := re.fullmatch(r"(\d+) MiB", text):
        return int(m.group(1)) << 20
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text            # a bare word: data/journal, INFO


#: Keys whose default is computed from another key's (the struct holds None).
_DERIVED_DEFAULTS = {"intake.hard_max_message_bytes": "4 x max", "intake.request_burst": "`request_rate`"}


def test_docs_list_every_engine_key_with_its_real_default():
    # docs (stop 40): [journal] checkpoint and checkpoints_kept were missing from the table,
    # which says it lists the keys of the engine's own sections.
    import msgspec
    real = {}
    for section in msgspec.structs.fields(Config):
        if isinstance(section.default, msgspec.Struct):
            for field in msgspec.structs.fields(type(section.default)):
                default = (field.default if field.default is not msgspec.NODEFAULT
                           else field.default_factory())
                real[f"{section.name}.{field.name}"] = default
    documented = _documented_engine_keys()
    assert sorted(set(real) - set(documented)) == [], "keys the table lacks"
    assert sorted(set(documented) - set(real)) == [], "keys the table names that do not exist"
    for key, text in documented.items():
        if key in _DERIVED_DEFAULTS:
            assert (real[key], text) == (None, _DERIVED_DEFAULTS[key]), key
        else:
            assert _doc_value(text) == real[key], f"{key}: documented {text}, real {real[key]!r}"


def test_docs_name_every_key_of_the_engines_sim_section():
    from engine.config import SIM_KEYS
    text = (DOCS / "engine.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `[sim]` |"))
    assert [key for key in SIM_KEYS if f"`{key}` (" not in row] == []
    assert f"Only these {['one', 'two', 'three', 'four', 'five'][len(SIM_KEYS) - 1]} keys" in row
