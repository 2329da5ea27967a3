"""Operations: ``[sim] duration`` ends the venues' session, ``/healthz`` says whether they are open,
journal sync times reach the metrics, and start-up mistakes are one line before anything opens."""
import re
import socket
import subprocess
import sys
import time
import tomllib

import orjson
import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from ext.simloop import ReportKind
from ext.types import OrdType, Side, TimeInForce
from sim.config import config_from_dict
from sim.realtime import RealtimeVenues
from tests.integration.engine_harness import QUIET_SIM, ThreadedEngine, config_text, free_port, http_get


def _quiet_sim(start: str):
    """The test market (no background flow), venues trading 09:30-16:00, session from ``start``."""
    data = tomllib.loads(QUIET_SIM.read_text())
    data["session"]["start"] = start
    for venue in data["venues"]:
        venue["hours"] = ["09:30:00", "16:00:00"]
    return config_from_dict(data, base_dir=QUIET_SIM.parent)


def _at(venues: RealtimeVenues, time_of_day: str) -> int:
    return venues.config.session.at(time_of_day)


def test_duration_closes_the_venues_and_expires_resting_orders():
    # Venues trade 09:30-16:00; the session runs 09:29 to 09:31.
    venues = RealtimeVenues(_quiet_sim("09:00:00"), duration="2m", start_at="09:29:00")
    market = venues.market
    assert venues.open_count() == 0 and not venues.session_over
    market.run_until(_at(venues, "09:30:30"))
    assert venues.open_count() == len(venues.venues)
    reports = []
    market.submit("NEXA", "AAA", Side.BUY, 10, 4000, OrdType.LIMIT, TimeInForce.DAY,
                  on_report=reports.append)
    market.run_until(_at(venues, "09:31:00") + 10_000_000)
    assert venues.open_count() == 0 and venues.session_over
    assert [ReportKind(r.kind) for r in reports] == [ReportKind.RPT_ACCEPTED, ReportKind.RPT_EXPIRED]
    assert reports[-1].ts == _at(venues, "09:31:00")
    market.run_until(_at(venues, "15:00:00"))
    assert venues.open_count() == 0


def test_a_session_ending_before_the_open_keeps_the_venues_closed():
    venues = RealtimeVenues(_quiet_sim("09:00:00"), duration="10m", start_at="09:00:00")
    venues.market.run_until(_at(venues, "09:45:00"))
    assert venues.open_count() == 0 and venues.session_over
    # Without a duration the venues keep their own hours.
    control = RealtimeVenues(_quiet_sim("09:00:00"), start_at="09:00:00")
    control.market.run_until(_at(control, "09:45:00"))
    assert control.open_count() == len(control.venues) and not control.session_over


def _engine_config(tmp_path, sim: str, metrics_port: int = 0, fsync: str = "none"):
    port = free_port()
    text = config_text(port, tmp_path / "journal", fsync=fsync).replace(
        'duration = "6h"', sim).replace("[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}")
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path, port


def test_after_the_session_orders_get_no_route_and_healthz_says_venues_closed(tmp_path):
    mport = free_port()
    path, port = _engine_config(tmp_path, 'duration = "1s"', mport)
    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}") as client:
        assert http_get(f"http://127.0.0.1:{mport}/healthz") == (200, "ok: serving, 4 of 4 venues open")
        time.sleep(1.3)
        client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="late")
        reports = [m for m in client.drain(1.0) if isinstance(m, ExecutionReport)]
        status, body = http_get(f"http://127.0.0.1:{mport}/healthz")
        scrape = http_get(f"http://127.0.0.1:{mport}/metrics")[1]
    assert [(r.exec_type, r.reject_name) for r in reports] == [(ExecType.REJECTED, "NO_ROUTE")]
    # A closed market is not a failed engine: 200, and the body says why orders are refused.
    assert (status, body) == (200, "ok: serving, venues closed (the session is over): "
                                   "new orders are refused NO_ROUTE")
    assert re.search(r"^kronos_venues_open 0\.0$", scrape, re.M)


def test_journal_sync_times_are_scraped(tmp_path):
    mport = free_port()
    path, port = _engine_config(tmp_path, 'duration = "6h"', mport, fsync="always")
    with ThreadedEngine(path), Client(f"tcp://127.0.0.1:{port}") as client:
        for i in range(3):  # one at a time: each is its own batch, with its own fdatasync
            client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id=f"o{i}")
            client.drain(0.3)
        scrape = http_get(f"http://127.0.0.1:{mport}/metrics")[1]
    count = float(re.search(r"^kronos_journal_sync_seconds_count (\S+)$", scrape, re.M).group(1))
    assert count >= 3
    assert re.search(r"^kronos_venues_open 4\.0$", scrape, re.M)


def _serve(path):
    return subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path),
                           "--duration", "0.5"], capture_output=True, text=True, timeout=60)


def test_a_taken_metrics_port_stops_the_start_before_intake_opens(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mport = taken.getsockname()[1]
        path, _ = _engine_config(tmp_path, 'duration = "6h"', mport)
        done = _serve(path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "intake: serving" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        f"kronos-exec serve: cannot start: metrics: cannot bind 127.0.0.1:{mport}: Address already in use"


def test_a_bad_sim_value_is_one_line_naming_the_key(tmp_path):
    path, _ = _engine_config(tmp_path, 'duration = "6h"\nspeed = 0')
    done = _serve(path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"kronos-exec serve: {path}: 'sim.speed': expected a positive number of simulated "
        f"seconds per second, got 0"]


def test_an_empty_config_path_is_refused_not_taken_for_the_default(tmp_path):
    """``--config "$KRONOS_CONFIG"`` with the variable unset: the default engine (its port, a
    journal in the working directory, no fsync) must not start in place of the one meant."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", "",
                           "--duration", "0.5"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "kronos-exec serve: --config names no file (an empty path); leave --config out "
        "for the embedded default"]
    assert list(tmp_path.iterdir()) == []  # no journal made


def test_shutdown_grace_is_the_configured_one(tmp_path):
    """``[intake] shutdown_grace_ms``: how long a stopping engine keeps serving."""
    from engine.config import ConfigError, parse_config
    with pytest.raises(ConfigError, match="shutdown_grace_ms"):
        parse_config('[intake]\nplaintext_endpoints = ["tcp://127.0.0.1:1"]\n'
                     'allow_plaintext = true\nshutdown_grace_ms = -1\n')
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal")
                    .replace("[intake]\n", "[intake]\nshutdown_grace_ms = 700\n"))
    engine = ThreadedEngine(path).__enter__()
    started = time.monotonic()
    engine.__exit__(None, None, None)
    assert time.monotonic() - started >= 0.7


@pytest.mark.parametrize("json", [False, True])
def test_the_plaintext_warning_shows_whatever_the_log_level(tmp_path, json):
    """[logging] level = "ERROR" hides warnings, but not the one that says anyone may trade;
    in the log's own format (under json = true a plain line would break a JSON log)."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").replace(
        'level = "INFO"\njson = false', f'level = "ERROR"\njson = {str(json).lower()}'))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:  # serving once it answers
            client.heartbeat()
            client.recv(10)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    # (With what anyone reaching it may do: before 2026-12-07 the line did not say.)
    warning = (f"intake: PLAINTEXT endpoints tcp://127.0.0.1:{port} accept "
               f"unauthenticated, unencrypted connections (allow_plaintext = true): anyone "
               f"reaching them may use accounts DEMO1, DEMO2 and admin requests (kill switches, "
               f"ReloadLimits) (security.plaintext_accounts, plaintext_admin)")
    lines = [line for line in stderr.splitlines() if "PLAINTEXT" in line]
    assert len(lines) == 1
    if json:
        line = orjson.loads(lines[0])
        assert (line["level"], line["logger"], line["msg"]) == ("WARNING", "engine.intake", warning)
    else:
        assert lines[0].endswith(f" WARNING engine.intake: {warning}")
    # Nothing else at a level the configuration hides.
    assert not [line for line in stderr.splitlines() if " INFO " in line or '"INFO"' in line]


def test_the_command_line_client_sells_short_with_a_locate_and_asks_the_history(tmp_path):
    """`client new --side sell_short` was always refused LOCATE_REQUIRED: the command had no
    `--locate`; nor could it ask for the trade history."""
    from tests.integration.engine_harness import serving

    def kronos(endpoint, *args):
        done = subprocess.run([sys.executable, "-m", "engine.cli", "client", "--endpoint",
                               endpoint, "--wait", "0.5", *args], capture_output=True, text=True,
                              timeout=60)
        return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()]

    with serving(tmp_path) as (_, endpoint):
        short = ("new", "--symbol", "AAA", "--side", "sell_short", "--qty", "10", "--price",
                 "48.00", "--account", "DEMO2", "--cl-ord-id", "s1")
        code, answers = kronos(endpoint, *short, "--locate")
        assert (code, answers[0]["exec_type"]) == (0, "NEW")
        code, answers = kronos(endpoint, *short[:-2], "--cl-ord-id", "s2")
        assert (code, answers[0]["reject_name"]) == (1, "LOCATE_REQUIRED")
        code, answers = kronos(endpoint, "new", "--symbol", "AAA", "--side", "buy", "--qty", "10",
                               "--price", "48.00", "--account", "DEMO1", "--cl-ord-id", "b1")
        assert code == 0 and any(a.get("exec_type") == "FILL" for a in answers)
        code, answers = kronos(endpoint, "history", "--account", "DEMO1",
                               "--start", "2020-01-01T00:00:00Z")
        assert code == 0 and answers[-1]["type"] == "TradeHistoryReply"
        # Enums by name in a fill as in a report (a fill's side printed as an integer).
        assert [(f["cl_ord_id"], f["last_qty"], f["side"]) for f in answers[-1]["fills"]] == \
            [("b1", "10", "BUY")]
        code, status = kronos(endpoint, "status", "--cl-ord-id", "b1", "--account", "DEMO1")
        assert code == 0 and (status[-1]["report"]["side"],
                              status[-1]["report"]["ord_status"]) == ("BUY", "FILLED")
        code, _ = kronos(endpoint, "history", "--account", "DEMO1", "--start", "yesterday")
        assert code == 2


def test_the_command_line_client_offers_no_fok():
    """The engine refuses every FOK (INVALID_TIF): `--tif fok` is a usage error, sent nowhere."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "client", "--endpoint",
                           "tcp://127.0.0.1:1", "new", "--symbol", "AAA", "--side", "buy",
                           "--qty", "10", "--price", "48.00", "--account", "DEMO1", "--tif", "fok"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'fok'" in done.stderr


def test_healthz_says_when_the_event_loop_is_held_up(tmp_path):
    """/healthz answered 200 while the loop was blocked and no client was answered (an
    audit): it runs on the HTTP thread and only looked at flags. It now looks at when the
    loop last ran the router's tick."""
    mport = free_port()
    path, _ = _engine_config(tmp_path, 'duration = "6h"', mport)
    url = f"http://127.0.0.1:{mport}/healthz"
    with ThreadedEngine(path) as engine:
        assert http_get(url)[0] == 200
        engine._loop.call_soon_threadsafe(time.sleep, 3.0)    # the loop held up for 3 s
        time.sleep(2.5)
        status, body = http_get(url)
        assert status == 503 and re.fullmatch(r"not serving: the event loop has not run for "
                                              r"2\d\d\d ms", body), body
        time.sleep(1.0)
        assert http_get(url) == (200, "ok: serving, 4 of 4 venues open")
