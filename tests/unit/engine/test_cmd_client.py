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
