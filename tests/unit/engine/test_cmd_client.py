"""``kronos-exec client`` exit statuses: a status request for an unknown order is a refusal, and an
unusable endpoint or key file is one line on stderr, not a traceback."""
import subprocess
import sys
from pathlib import Path

import orjson

from tests.unit.engine.test_client import running  # noqa: F401  (the echo-intake fixture)

ROOT = Path(__file__).resolve().parents[3]


def kronos(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_status_of_an_unknown_order_exits_1(running):  # noqa: F811
    endpoint = running.server.plaintext_endpoints[0]
    known = kronos("client", "--endpoint", endpoint, "--wait", "0.5", "new", "--symbol", "AAPL",
                   "--side", "buy", "--qty", "10", "--price", "101.25", "--account", "ACC1",
                   "--cl-ord-id", "k1")
    assert known.returncode == 0, known.stderr
    found = kronos("client", "--endpoint", endpoint, "--wait", "0.5", "status",
                   "--cl-ord-id", "k1", "--account", "ACC1")
    assert found.returncode == 0 and orjson.loads(found.stdout)["found"] is True
    # The nested report reads like a top-level one: enums by name.
    assert orjson.loads(found.stdout)["report"]["side"] == "BUY"
    unknown = kronos("client", "--endpoint", endpoint, "--wait", "0.5", "status",
                     "--cl-ord-id", "nope", "--account", "ACC1")
    assert orjson.loads(unknown.stdout)["found"] is False
    assert unknown.returncode == 1


def test_an_unusable_endpoint_or_key_is_one_line(tmp_path):
    bogus = kronos("client", "--endpoint", "bogus", "heartbeat")
    assert bogus.returncode == 2
    assert bogus.stderr.startswith("kronos-exec client: cannot connect to 'bogus'")
    assert len(bogus.stderr.splitlines()) == 1
    (tmp_path / "server.key").write_text("not a certificate\n")
    bad_key = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "--server-key-file",
                     str(tmp_path / "server.key"), "heartbeat")
    assert bad_key.returncode == 2 and "Traceback" not in bad_key.stderr
    assert bad_key.stderr.startswith("kronos-exec client: cannot load a key:")


def test_a_malformed_server_key_is_named_not_the_endpoint():
    out = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "--server-key", "not-a-z85-key",
                 "heartbeat")
    assert out.returncode == 2 and "is not a 40-character Z85 CURVE public key" in out.stderr
    assert "cannot connect" not in out.stderr


def test_a_wait_that_is_not_positive_is_refused():
    """``--wait 0`` (or less) closed the socket before the request left and then said "no
    answer": refused up front instead, naming the option."""
    for wait in ("0", "-1", "nan", "soon"):
        out = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "--wait", wait, "heartbeat")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "argument --wait" in out.stderr and repr(wait) in out.stderr


def test_an_empty_cl_ord_id_is_refused_not_made_up():
    # `--cl-ord-id "$ID"` with ID unset placed the order under a fresh id: every
    # retry of the script became another order.
    out = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "new", "--symbol", "AAA",
                 "--side", "buy", "--qty", "1", "--price", "1", "--account", "A",
                 "--cl-ord-id", "")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --cl-ord-id: an empty id" in out.stderr


def test_an_empty_id_given_to_the_client_library_is_sent_as_given():
    from engine.client import Client
    with Client("tcp://127.0.0.1:1") as client:
        assert client.build_new_order("AAA", "buy", "1", "1", account="A", cl_ord_id="") \
            .cl_ord_id == ""
        assert client.build_new_order("AAA", "buy", "1", "1", account="A").cl_ord_id


def test_history_times_outside_the_engines_range_are_usage_errors():
    for start in ("99999999999999999999999", "1600-01-01T00:00:00Z", "2300-01-01T00:00:00Z"):
        out = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "history", "--account", "A",
                     "--start", start)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "is outside 1970 to 2262" in out.stderr


def test_history_times_are_read_to_the_nanosecond():
    from engine.cmd_client import _time_ns
    assert _time_ns("1970-01-01T00:00:01.000000007Z") == 1_000_000_007
    assert _time_ns("1000000007") == 1_000_000_007


def test_a_client_secret_key_others_may_read_is_refused(tmp_path):
    """The engine refuses its own secret key at such a mode; the client used its key (its
    accounts) whoever could read the file. Now one line, exit 2, naming the chmod."""
    from engine.intake import generate_keypair
    public, secret = generate_keypair(tmp_path, "alice")
    Path(secret).chmod(0o644)
    out = kronos("client", "--endpoint", "tcp://127.0.0.1:1", "--server-key-file", str(public),
                 "--client-key-file", str(secret), "heartbeat")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "may be read by users other than its owner (mode 644)" in out.stderr
    assert f"chmod 600 {secret}" in out.stderr
    Path(secret).chmod(0o600)
    from engine.client import load_client_keys
    assert load_client_keys(secret)[0] == Path(public).read_bytes().split(b'public-key = "')[1][:40]
