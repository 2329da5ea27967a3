"""A ReloadLimits that takes an account out of [risk.accounts] the engine still needs is refused.

Risk keeps an account a reload leaves out (its orders refused UNKNOWN_ACCOUNT), but the next
start replays the journal under the file: with accepted orders of that account in the
journal the engine then refused to start at all (after a crash too), and a kill switch
engaged on it was dropped with a log line. An accepted admin message must not leave the
engine unable to restart.
"""
import time

from engine.client import Client
from engine.messages import AdminReply, ExecType, ExecutionReport, KillSwitch, ReloadLimits
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

DEMO1 = '[risk.accounts.DEMO1]\ncash = "10000000"\nallow_short = true\n'
DEMO2 = '[risk.accounts.DEMO2]\ncash = "10000000"\nallow_short = true\n'


def admin(client, msg) -> AdminReply:
    client.send(msg)
    return client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1]


def test_a_reload_keeps_the_accounts_a_restart_needs(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    text = config_text(port, tmp_path / "journal")
    assert DEMO1 in text and DEMO2 in text
    path.write_text(text)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO2", cl_ord_id="d2")
        client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        path.write_text(text.replace(DEMO2, ""))
        refused = admin(client, ReloadLimits(req_id="drop-2"))
        assert not refused.ok and "'DEMO2'" in refused.text and "active = false" in refused.text
        assert admin(client, KillSwitch(req_id="ks", action="engage", scope="account",
                                        target="DEMO1")).ok
        path.write_text(text.replace(DEMO1, ""))
        refused = admin(client, ReloadLimits(req_id="drop-1"))
        assert not refused.ok and "'DEMO1'" in refused.text and "kill switch" in refused.text
        # Nothing changed: DEMO2 still trades.
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO2", cl_ord_id="d2-b")
        assert client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1].exec_type \
            == ExecType.NEW
        # Released, and with no order of its own, DEMO1 may go.
        assert admin(client, KillSwitch(req_id="ks-r", action="release", scope="account",
                                        target="DEMO1")).ok
        assert admin(client, ReloadLimits(req_id="drop-1-again")).ok
    # And the engine starts again on that file.
    with ThreadedEngine(path), Client(endpoint) as client:
        client.status("d2", account="DEMO2")
        assert client.recv(5).found



def test_a_reload_keeps_an_account_whose_orders_the_engine_forgot(tmp_path):
    # Its canceled order left the order table at the second day roll, but the
    # journal still holds it: a restart replays it under the account.
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    text = config_text(port, tmp_path / "journal")
    path.write_text(text)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO2", cl_ord_id="d2")
        client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
        client.cancel("d2", account="DEMO2", cl_ord_id="d2x")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "d2x", 5)
        for _ in range(2):
            engine.call(lambda: pipeline.roll_day(time.time_ns()))
        assert engine.call(lambda: pipeline.orders.find("DEMO2", "d2x")) is None
        path.write_text(text.replace(DEMO2, ""))
        refused = admin(client, ReloadLimits(req_id="drop-2"))
        assert not refused.ok and "'DEMO2'" in refused.text


def _logged_at_start(tmp_path, caplog, needle, edit):
    """The log lines holding ``needle`` when an engine on the test config, changed by
    ``edit`` (text -> text), starts and stops."""
    path = tmp_path / "engine.toml"
    path.write_text(edit(config_text(free_port(), tmp_path / "journal")))
    with ThreadedEngine(path):
        pass
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def test_an_entitlement_to_an_account_risk_lacks_is_logged_at_start(tmp_path, caplog):
    """The file may entitle a key to an account [risk.accounts] does not have yet (a
    ReloadLimits may add it later); its orders are refused UNKNOWN_ACCOUNT, and the start
    now says so instead of nothing."""
    lines = _logged_at_start(tmp_path, caplog, "is entitled to", lambda text: text.replace(
        'plaintext_accounts = ["DEMO1", "DEMO2"]', 'plaintext_accounts = ["DEMO1", "GHOST"]'))
    assert lines == ["security.plaintext_accounts (plaintext) is entitled to GHOST, which "
                     "[risk.accounts] does not have: their orders are refused UNKNOWN_ACCOUNT "
                     "until a ReloadLimits adds them"]


def test_a_throttle_table_naming_no_client_key_is_logged_at_start(tmp_path, caplog):
    """[risk.sessions.<name>] sizes the throttle of the key named so; a misspelt name
    throttles no one and leaves the key it meant on the firm's sizes. The start says so.
    A table for the plaintext endpoints' sessions is no such mistake."""
    lines = _logged_at_start(tmp_path, caplog, "names no client key", lambda text: text + (
        "\n[risk.sessions.plaintxt]\nthrottle_rate = 1\nthrottle_burst = 1\n"
        "\n[risk.sessions.plaintext]\nthrottle_rate = 1000\n"))
    assert lines == ["[risk.sessions.plaintxt] names no client key (keys: plaintext; "
                     "'plaintext' for the plaintext endpoints): it throttles no one, and the key "
                     "it was meant for draws on the firm's throttle"]


def test_a_reload_logs_no_startup_init_event(tmp_path, caplog):
    """Audit (stop 33): the file's check built a risk engine of its own, whose "init by
    startup" went to the risk audit log at every reload (a refused one too)."""
    import logging
    caplog.set_level(logging.INFO, logger="kronos.risk")
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal"))
    with ThreadedEngine(path), Client(endpoint) as client:
        caplog.clear()
        assert admin(client, ReloadLimits(req_id="r1")).ok
    events = [r.risk_event for r in caplog.records if hasattr(r, "risk_event")]
    assert [e["action"] for e in events] == ["reload"], events
