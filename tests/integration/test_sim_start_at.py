"""``[sim] start_at`` against the simulator's session: a start the market cannot serve (before
``session.start``, or at or after ``session.end`` with no ``duration``) is refused when the
file is read, and a valid one gives a live market (books with quotes, a marketable order fills)."""
import subprocess
import sys
import time

import pytest

from engine.client import Client
from engine.config import ConfigError, load_config
from engine.messages import ExecutionReport, OrdStatus
from sim.config import DEFAULT_CONFIG, ConfigError as SimConfigError, load_config as load_sim_config
from sim.realtime import RealtimeVenues
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

# The embedded market: session 10:00:00-10:30:00 (30 s warmup), venues 09:30-16:00, with
# background flow, so its books are quoted from the warmup on.
TOO_EARLY = ("'sim.start_at': '09:00:00' is before the simulator's session.start 10:00:00: its "
             "market is built from then (less the 30s warmup) and cannot start earlier; use "
             "10:00:00 or later, or an earlier session.start")
TOO_LATE = "'sim.start_at': '10:45:00' is at or after the simulator's session.end 10:30:00"


def _config(tmp_path, sim_lines: str):
    """An engine config on the embedded market with ``sim_lines`` in place of the duration."""
    port = free_port()
    text = config_text(port, tmp_path / "journal", sim=DEFAULT_CONFIG).replace(
        'duration = "6h"', sim_lines)
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path, port


@pytest.mark.parametrize("sim_lines,message", [
    ('start_at = "09:00:00"', TOO_EARLY),
    # Inside the warmup but before session.start: still before the session.
    ('start_at = "09:59:45"\nduration = "1h"', "'sim.start_at': '09:59:45' is before the "
                                                "simulator's session.start 10:00:00"),
    ('start_at = "10:45:00"', TOO_LATE),
    ('start_at = "10:30:00"', "is at or after the simulator's session.end 10:30:00"),
])
def test_a_start_the_market_cannot_serve_is_refused_when_the_file_is_read(tmp_path, sim_lines, message):
    path, _ = _config(tmp_path, sim_lines)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}: 'sim.start_at': ")
    assert "\n" not in str(caught.value)


def test_serve_exits_2_with_one_line_naming_the_session_start(tmp_path):
    path, _ = _config(tmp_path, 'start_at = "09:00:00"')
    done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"kronos-exec serve: {path}: {TOO_EARLY}\n"
    assert not (tmp_path / "journal").exists()


def test_realtime_venues_refuse_it_too():
    cfg = load_sim_config()
    with pytest.raises(SimConfigError, match=r"^start_at '09:00:00' is before the simulator's "
                                             r"session\.start 10:00:00"):
        RealtimeVenues(cfg, start_at="09:00:00")
    with pytest.raises(SimConfigError, match=r"^start_at '10:45:00' is at or after the "
                                             r"simulator's session\.end 10:30:00"):
        RealtimeVenues(cfg, start_at="10:45:00")


@pytest.mark.parametrize("sim_lines", [
    'start_at = "10:00:00"',
    'start_at = "10:10:00"',
    # After session.end with a duration: the flow runs to start_at + duration.
    'start_at = "10:40:00"\nduration = "1h"',
])
def test_a_valid_start_gives_a_live_market(tmp_path, sim_lines):
    path, port = _config(tmp_path, sim_lines)
    with ThreadedEngine(path) as engine, Client(f"tcp://127.0.0.1:{port}") as client:
        venues = engine.service.venues
        start = venues.config.session.at(sim_lines.split('"')[1])
        # The clock starts where the market is, and moves with the wall clock.
        assert 0 <= engine.call(venues.now) - start < 5_000_000_000
        assert engine.call(venues.open_count) == len(venues.venues)
        bid, ask = engine.call(venues.nbbo, "AAA")
        assert 0 < bid < ask
        first = engine.call(lambda: venues.market.now)
        time.sleep(0.2)
        assert engine.call(lambda: venues.market.now) > first  # not frozen
        client.new_order("AAA", "buy", "100", account="DEMO1", cl_ord_id="mkt",
                         time_in_force="ioc")
        deadline = time.monotonic() + 5
        reports = []
        while time.monotonic() < deadline and not any(
                r.ord_status in (OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED)
                for r in reports):
            reports += [m for m in client.drain(0.2) if isinstance(m, ExecutionReport)]
        assert reports and reports[-1].ord_status == OrdStatus.FILLED, reports
        assert reports[-1].cum_qty == "100"
