"""Configuration checks made when the file is read: ``[sim]``, ``[[gateways]]``, port ranges and
values that used to pass until start-up (or never failed at all)."""
from pathlib import Path

import pytest

from engine.config import MAX_GROUP_COMMIT_US, ConfigError, load_config, parse_config

PLAIN = '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:7002"]\nallow_plaintext = true\n'
SIM = Path(__file__).resolve().parents[2] / "integration" / "configs" / "quiet_sim.toml"


@pytest.mark.parametrize("snippet,message", [
    ('[sim]\nsped = 2\n', "unknown key 'sim.sped' (keys: config, speed, duration, start_at)"),
    ('[sim]\nspeed = 0\n', "'sim.speed': expected a positive number of simulated seconds per second, got 0"),
    ('[sim]\nspeed = -1.5\n', "'sim.speed'"),
    ('[sim]\nspeed = "fast"\n', "'sim.speed': expected a positive number"),
    ('[sim]\nspeed = true\n', "'sim.speed'"),
    ('[sim]\nspeed = inf\n', "'sim.speed'"),
    ('[sim]\nspeed = 1e6\n', "'sim.speed': at most 1,000 simulated seconds per second, got 1000000.0"),
    # A bare integer would be nanoseconds: a session of 5 ns.
    ('[sim]\nduration = 5\n', "'sim.duration': expected a duration with its unit"),
    ('[sim]\nduration = "6 hours"\n', "'sim.duration': duration '6 hours': expected a number and a unit"),
    ('[sim]\nduration = "0s"\n', "'sim.duration': '0s' is not a positive duration"),
    ('[sim]\nstart_at = "25:00:00"\n', "'sim.start_at': time '25:00:00': expected HH:MM:SS"),
    ('[sim]\nstart_at = 930\n', "'sim.start_at': expected a time of day"),
    ('[sim]\nconfig = "no/such/sim.toml"\n', "'sim.config': cannot read"),
    ('[sim]\nconfig = ""\n', "'sim.config': expected the path of a simulator TOML file"),
    # Audit (stop 33): served an empty market (the flow turned off, nothing replayed).
    (f'[sim]\nconfig = "{SIM.parents[3] / "sim" / "configs" / "replay.toml"}"\n',
     "has a [replay] table: recorded market data is replayed by the backtester"),
    ('[journal]\ndir = ""\n', "'journal.dir'"),
    (f'[journal]\ngroup_commit_us = {MAX_GROUP_COMMIT_US + 1}\n', "'journal.group_commit_us': Expected `int` <= 1000000"),
    # A window the policy ignores: the file does not do what it says.
    ('[journal]\nfsync = "none"\ngroup_commit_us = 500\n',
     "'journal.group_commit_us' is set, but it only applies to fsync = \"group\" and fsync is 'none'"),
    ('[journal]\ngroup_commit_us = 500\n',
     "'journal.group_commit_us' is set, but it only applies to fsync = \"group\" and fsync is 'always'"),
    ('[metrics]\nhost = ""\n', "'metrics.host': '' is not an IP address or a host name"),
    ('[metrics]\nhost = "not a host"\n', "'metrics.host'"),
    ('[metrics]\nhost = "10.0.0.256"\n', "'metrics.host'"),
    # Audit (stop 33): refused only at bind time, as "cannot bind".
    ('[[gateways]]\ntype = "zmq"\nmetrics_host = "not a host"\nmetrics_port = 47212\n',
     "'gateways[0].metrics_host': 'not a host' is not an IP address or a host name"),
    ('[[gateways]]\ntype = "zmq"\nendpont = "tcp://127.0.0.1:1"\n',
     "'gateways[0].endpont': unknown key for a zmq gateway"),
    # The router's own refusal named no key ("'router': unknown strategy ...").
    ('[router]\nstrategy = "bogus"\n', "'router.strategy': unknown strategy 'bogus'; expected "
                                        "'auto', 'sweep', 'dark_first' or 'passive'"),
    ('[router]\nstrategy = 9\n', "'router.strategy': unknown strategy 9; expected 'auto'"),
    ('[router]\nstrategy = true\n', "'router.strategy': unknown strategy True"),
    ('[[gateways]]\ntype = "zmq"\nendpoint = "tcp://[::1:7101"\n',
     "'gateways[0].endpoint': 'tcp://[::1:7101': expected an IPv6 address in one pair of brackets"),
    ('[[gateways]]\ntype = "zmq"\nreplay_endpoint = "tcp://::1:7102"\n',
     "'gateways[0].replay_endpoint': 'tcp://::1:7102': an IPv6 address is written in brackets: "
     "tcp://[::1]:7102"),
    # Two endpoints of one file on one address failed at bind time, half started
    # ("Address already in use", exit 1); a table's place taken by a number said
    # "'risk': argument of type 'int' is not iterable".
    ('[metrics]\nport = 7002\n',
     "'metrics.port': binds port 7002, as 'intake.plaintext_endpoints[0]' does"),
    ('[[gateways]]\ntype = "zmq"\nendpoint = "tcp://0.0.0.0:7002"\nallow_plaintext = true\n',
     "'gateways[0].endpoint': binds port 7002, as 'intake.plaintext_endpoints[0]' does"),
    ('[[gateways]]\ntype = "zmq"\nmetrics_port = 9464\nmetrics_host = "0.0.0.0"\n',
     "'gateways[0].metrics_port': binds port 9464, as 'metrics.port' does"),
    # Audit (stop 33): a host name was compared as written, so the clash showed at bind time
    # as "Address already in use", blaming another process.
    ('[metrics]\nhost = "localhost"\nport = 7002\n',
     "'metrics.port': binds port 7002, as 'intake.plaintext_endpoints[0]' does"),
    ('[risk.instruments]\nAAA = 5\n',
     "'risk.instruments.AAA': expected a table of limits ([risk.instruments.AAA]), not 5"),
])
def test_mistakes_are_named_when_the_file_is_read(snippet, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(PLAIN + snippet, source="engine.toml")
    assert str(caught.value).startswith("engine.toml: ")
    assert message in str(caught.value)


def test_a_simulator_file_with_market_data_latency_is_refused_by_the_engine(tmp_path):
    # The router reads the served venues' books as they are: the latency
    # would be ignored in silence. None (a fixed 0) is served.
    late = tmp_path / "late.toml"
    late.write_text(SIM.read_text().replace(
        '[[venues]]\n', '[[venues]]\nmarket_data_latency = { mean_us = 250 }\n'))
    with pytest.raises(ConfigError) as caught:
        parse_config(PLAIN + f'[sim]\nconfig = "{late}"\n', source="engine.toml")
    assert ("venues[0].market_data_latency: the engine reads its simulated venues as they are"
            in str(caught.value))
    zero = tmp_path / "zero.toml"
    zero.write_text(SIM.read_text().replace(
        '[[venues]]\n', '[[venues]]\nmarket_data_latency = { mean_us = 0 }\n'))
    parse_config(PLAIN + f'[sim]\nconfig = "{zero}"\n', source="engine.toml")


@pytest.mark.parametrize("key", ["endpoints", "plaintext_endpoints"])
def test_an_intake_port_above_65535_is_refused(key):
    # libzmq would bind 70001 - 65536 = 4465 and say nothing.
    text = (f'[intake]\n{key} = ["tcp://127.0.0.1:70001"]\nallow_plaintext = true\n'
            '[security]\nserver_secret_key_file = "k"\n')
    with pytest.raises(ConfigError, match=r"'intake\.%s': 'tcp://127.0.0.1:70001': port 70001 is out "
                                          r"of range" % key):
        parse_config(text, source="engine.toml")


def test_an_unknown_default_strategy_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(PLAIN + '[router]\nstrategy = "bogus"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}: 'router.strategy': unknown strategy 'bogus'; expected "
                                 f"'auto', 'sweep', 'dark_first' or 'passive'")


@pytest.mark.parametrize("endpoint,message", [
    # libzmq would fail each of these only at bind time, as "No such device".
    ("tcp://[::1:7002", "expected an IPv6 address in one pair of brackets before the port"),
    ("tcp://::1]:7002", "expected an IPv6 address in one pair of brackets before the port"),
    ("tcp://[::1]]:7002", "expected an IPv6 address in one pair of brackets before the port"),
    ("tcp://[]:7002", "expected an IPv6 address in one pair of brackets before the port"),
    ("tcp://::1:7002", "an IPv6 address is written in brackets: tcp://[::1]:7002"),
    # Brackets around anything else would pass by accident.
    ("tcp://[127.0.0.1]:7002", "'127.0.0.1' in brackets is not an IPv6 address"),
    ("tcp://[localhost]:7002", "'localhost' in brackets is not an IPv6 address"),
    ("tcp://[::1]:70001", "port 70001 is out of range"),
])
def test_a_malformed_ipv6_endpoint_is_refused(endpoint, message):
    text = f'[intake]\nplaintext_endpoints = ["{endpoint}"]\nallow_plaintext = true\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="engine.toml")
    refusal = str(caught.value)
    assert refusal.startswith(f"engine.toml: 'intake.plaintext_endpoints': {endpoint!r}: {message}")
    assert "\n" not in refusal


@pytest.mark.parametrize("snippet", [
    '[sim]\nspeed = 2.5\nduration = "90s"\nstart_at = "15:59:58"\n',
    '[sim]\nspeed = 10\nduration = "1.5h"\n',
    f'[journal]\nfsync = "group"\ngroup_commit_us = {MAX_GROUP_COMMIT_US}\n',
    '[metrics]\nhost = "0.0.0.0"\n',
    '[metrics]\nhost = "::1"\n',
    '[metrics]\nhost = "metrics-1.example.com"\n',
    '[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:65535", "tcp://127.0.0.1:*", "tcp://127.0.0.1:0"]\n'
    'allow_plaintext = true\n',
    '[intake]\nplaintext_endpoints = ["tcp://[::1]:7002", "tcp://[::]:*", "tcp://[::ffff:127.0.0.1]:0"]\n'
    'allow_plaintext = true\n',
    '[[gateways]]\ntype = "zmq"\nendpoint = "tcp://[::1]:7101"\nreplay_endpoint = "tcp://[::1]:7102"\n',
    '[router]\nstrategy = "dark_first"\n',
    # Same port, other hosts; a gateway's metrics beside the engine's.
    '[metrics]\nhost = "127.0.0.2"\nport = 7002\n',
    '[metrics]\nhost = "::1"\nport = 7002\n',
    '[intake]\nplaintext_endpoints = ["tcp://*:7002", "tcp://[::1]:7002"]\nallow_plaintext = true\n',
    '[[gateways]]\ntype = "zmq"\nmetrics_port = 9465\n',
])
def test_good_values_pass(snippet):
    text = snippet if snippet.startswith("[intake]") else PLAIN + snippet
    parse_config(text, source="engine.toml")


def test_sim_config_is_relative_to_the_file(tmp_path):
    (tmp_path / "markets").mkdir()
    (tmp_path / "markets" / "sim.toml").write_text(SIM.read_text())
    path = tmp_path / "engine.toml"
    path.write_text(PLAIN + '[sim]\nconfig = "markets/sim.toml"\nduration = "6h"\n')
    config = load_config(path)
    assert config.sim == {"config": str(tmp_path / "markets" / "sim.toml"), "duration": "6h"}


def test_a_venue_fee_past_the_routers_range_is_refused_naming_venue_and_instrument(tmp_path):
    """A per-share fee is 1e4 / tick fee units per lot: on a fine tick it passed the router's
    2^40 bound, and the engine failed at start with a traceback ("maker_fee must be within
    +-1099511627776") naming neither the venue nor the instrument."""
    fine = SIM.read_text().replace('symbol = "BBB"\ntick_size = "0.01"',
                                   'symbol = "BBB"\ntick_size = "0.000000000001"', 1)
    assert fine != SIM.read_text()
    (tmp_path / "sim.toml").write_text(fine.replace('price = "120.00"', 'price = "0.00012"'))
    path = tmp_path / "engine.toml"
    path.write_text(PLAIN + '[sim]\nconfig = "sim.toml"\n'
                    '[risk.firm]\nmoney_unit = "0.000000000001"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: 'sim.config': venues[0] (NEXA) fees.maker_per_share -0.0020 is "
        f"-20,000,000,000,000 fee units (1e-4 tick x lot) per lot of BBB (tick 0.000000000001), "
        f"beyond the router's +-1,099,511,627,776 (2^40): a coarser tick_size, or a smaller fee")


def test_a_bad_simulator_file_is_named(tmp_path):
    (tmp_path / "sim.toml").write_text(SIM.read_text() + "\n[session]\n")
    path = tmp_path / "engine.toml"
    path.write_text(PLAIN + '[sim]\nconfig = "sim.toml"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: 'sim.config': {tmp_path / 'sim.toml'}: ")


@pytest.mark.parametrize("endpoints,message", [
    ('["tcp://127.0.0.1:7003", "tcp://127.0.0.1:7003"]',
     "'intake.plaintext_endpoints[1]': binds port 7003, as 'intake.plaintext_endpoints[0]' does"),
    ('["tcp://*:7003", "tcp://127.0.0.1:7003"]', "'intake.plaintext_endpoints[1]': binds port 7003"),
    ('["tcp://[::1]:7003", "tcp://[::]:7003"]', "'intake.plaintext_endpoints[1]': binds port 7003"),
    ('["tcp://[::]:7003", "tcp://127.0.0.1:7003"]', "'intake.plaintext_endpoints[1]': binds port 7003"),
    ('["ipc:///tmp/k.sock", "ipc:///tmp/k.sock"]',
     "'intake.plaintext_endpoints[1]': binds the path /tmp/k.sock, as"),
    # Only the engine's own process could connect to it.
    ('["inproc://intake"]', "'intake.plaintext_endpoints': 'inproc://intake' is not a "
                            "tcp://host:port or ipc:// endpoint"),
])
def test_intake_endpoints_no_client_could_use_are_refused(endpoints, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[intake]\nplaintext_endpoints = {endpoints}\nallow_plaintext = true\n",
                     source="engine.toml")
    assert message in str(caught.value)


def test_a_byte_order_mark_is_read_past(tmp_path):
    """Audit (stop 33): "not valid TOML ... (at line 1, column 1)", where the simulator's
    files read past one."""
    path = tmp_path / "engine.toml"
    path.write_bytes(b"\xef\xbb\xbf" + PLAIN.encode())
    assert load_config(path).intake.allow_plaintext


def test_a_reread_compares_host_names_as_written_and_never_resolves(monkeypatch):
    """A running engine re-reads its file on the event loop (a key reload, ReloadLimits, the
    checkpoint writer's configuration): getaddrinfo there held the loop while DNS answered."""
    import socket

    snippet = '[metrics]\nhost = "localhost"\nport = 7002\n'
    looked_up = []
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: looked_up.append(a) or real(*a, **k))
    parse_config(PLAIN + snippet, source="engine.toml", resolve=False)
    assert looked_up == []
    with pytest.raises(ConfigError, match="binds port 7002"):
        parse_config(PLAIN + snippet, source="engine.toml")
    assert looked_up


def test_a_risk_grid_value_equal_to_the_venues_is_taken_however_written():
    """``[risk.instruments.X]`` may repeat the venue's grid; it was compared as text, so
    ``min_qty = 100`` (an integer, as every other quantity may be written) or
    ``tick_size = "0.010"`` was refused as disagreeing with the venue's ``"100"`` and
    ``"0.01"``, which it does not. A different value, or a float, is still refused."""
    from engine.config import Config, risk_config
    from ext.instrument import Instrument

    venue = [Instrument("AAA", "0.01", "1", "100")]
    for entry in ({"min_qty": 100}, {"min_qty": "100.0"}, {"tick_size": "0.010"},
                  {"lot_size": 1}):
        table = risk_config(Config(risk={"instruments": {"AAA": entry}}), venue)
        assert table["instruments"]["AAA"] == {"tick_size": "0.01", "lot_size": "1",
                                               "min_qty": "100"}, entry
    for entry in ({"min_qty": 200}, {"tick_size": "0.05"}, {"min_qty": 100.0},
                  {"lot_size": True}, {"tick_size": "x"}):
        with pytest.raises(ConfigError, match="disagrees with the venue definition"):
            risk_config(Config(risk={"instruments": {"AAA": entry}}), venue)
