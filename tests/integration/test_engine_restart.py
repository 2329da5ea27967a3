"""Restarts rebuild exactly what clients were told, or refuse to start and say why.

Each test runs a real engine (in a thread), stops it, and starts another on
the same journal: recovery replays the journal's reports, the same path a
restart after kill -9 takes (tests/integration/test_engine_recovery.py kills).
"""
import datetime
import math
import multiprocessing
import socket
import subprocess
import sys
import time

import msgspec
import pytest

from engine.client import Client
from engine.intake import EndpointError, generate_keypair
from engine.journal import JournalWriter, RecordKind
from engine.messages import (AdminReply, ExecType, ExecutionReport, HeartbeatAck, JournalCommand,
                             JournalEvent, KillSwitch, OrderStatusReply, OrdStatus, Reject)
from tests.integration.engine_harness import (QUIET_SIM, RISK, ThreadedEngine, acked_at_venue,
                                              config_text, engine_config, free_port,
                                              seen_at_resume, slow_sim)


def status(client, cl_ord_id, account="DEMO1"):
    """The engine's OrderStatusReply for ``cl_ord_id``."""
    client.status(cl_ord_id, account=account)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == cl_ord_id,
                             5)[-1]


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` for ``cl_ord_id``."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and m.exec_type == exec_type, 5)[-1]


def roll_ahead(seconds):
    """A ``[trading_day]`` table rolling at a whole second ``seconds`` to ``seconds`` + 1
    ahead, and that instant (s since the epoch).

    ``roll_time`` has no fraction of a second: one cut from now + ``seconds`` came up to
    a second sooner, so the steps a test takes before it had anywhere from ``seconds``
    - 1 to ``seconds``, by where in its second the test began."""
    at = math.ceil(time.time()) + seconds
    when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return f'[trading_day]\nroll_time = "{when:%H:%M:%S}"\n', at


def wait_for_rolls(engine, rolls, at):
    """Wait until ``engine`` has taken ``rolls`` day rolls, the last due at ``at`` (s
    since the epoch): its tick takes the roll at its first look past that instant."""
    pipeline = engine.service.pipeline
    while engine.call(lambda: pipeline.orders.rolls) < rolls:
        assert time.time() < at + 5, f"no roll within 5 s of its instant {at}"
        time.sleep(0.01)


def test_a_refused_duplicate_in_a_bulk_never_becomes_the_order(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.bulk([client.build_new_order("AAA", "buy", "10", "48.00", account="DEMO1",
                                            cl_ord_id="X"),
                     client.build_new_order("AAA", "sell_short", "900", "49.00",
                                            account="DEMO1", cl_ord_id="X", locate=True)])
        # (the answers leave in the bulk's order: the first's NEW, then the refusal)
        *before, dup = client.recv_until(lambda m: isinstance(m, Reject), 5)
        assert [(m.cl_ord_id, m.exec_type, m.side) for m in before
                if isinstance(m, ExecutionReport)] == [("X", ExecType.NEW, 1)]
        assert (dup.reject_name, dup.ref_type, dup.cl_ord_id) == \
            ("DUPLICATE_CL_ORD_ID", "BulkNewOrders", "X")
        # Which of the two orders named X was refused: the second.
        assert dup.text.startswith("BulkNewOrders orders[1]: cl_ord_id 'X' is also orders[0]'s")
    with ThreadedEngine(path), Client(endpoint) as client:
        got = status(client, "X")
        assert (got.report.side, got.report.qty, got.report.ord_status) == \
            (1, "10", OrdStatus.NEW)
        # The child before the restart (done: its venue did not outlive the
        # engine), then what recovery sent again: the accepted buy's terms.
        assert [(c.price, c.qty, c.cum_qty, c.done) for c in got.children] == \
            [("48", "10", "0", True), ("48", "10", "0", False)]
        assert len({c.child_id for c in got.children}) == 2


def test_an_order_refused_for_an_unknown_symbol_keeps_its_id(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("ZZZ", "buy", "1", "1.00", account="DEMO1", cl_ord_id="u1")
        assert report(client, "u1", ExecType.REJECTED).reject_name == "UNKNOWN_INSTRUMENT"
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="u2")
        first_id = int(report(client, "u2", ExecType.NEW).order_id)
    with ThreadedEngine(path), Client(endpoint) as client:
        assert status(client, "u1").report.reject_name == "UNKNOWN_INSTRUMENT"
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="u1")
        assert client.recv_until(lambda m: isinstance(m, Reject), 5)[-1].reject_name == \
            "DUPLICATE_CL_ORD_ID"
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="u3")
        assert int(report(client, "u3", ExecType.NEW).order_id) == first_id + 1


def test_a_refused_cancel_or_replace_is_not_the_orders_state(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="w1")
        report(client, "w1", ExecType.NEW)
        client.replace("w1", account="DEMO1", price="48.005", cl_ord_id="w2")
        assert report(client, "w2", ExecType.REJECTED).reject_name == "OFF_TICK"
        before = status(client, "w1").report
    with ThreadedEngine(path), Client(endpoint) as client:
        after = status(client, "w1").report
        assert (after.exec_type, after.ord_status, after.reject_name) == \
            (ExecType.NEW, OrdStatus.NEW, None)
        # (The running engine keeps its reports unnumbered; the journal has them as sent.)
        assert after == before


def test_kill_switches_stay_as_they_were(tmp_path):
    path, endpoint = engine_config(tmp_path)

    def admin(client, action, scope, target=None):
        client.send(KillSwitch(req_id=f"{action}-{target}", action=action, scope=scope,
                               target=target))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok

    with ThreadedEngine(path), Client(endpoint) as client:
        admin(client, "engage", "account", "DEMO2")
        admin(client, "engage", "symbol", "BBB")
        admin(client, "engage", "symbol", "AAA")
        admin(client, "release", "symbol", "AAA")
    with ThreadedEngine(path), Client(endpoint) as client:
        for cid, symbol, account, outcome in (("k1", "AAA", "DEMO2", ExecType.REJECTED),
                                              ("k2", "BBB", "DEMO1", ExecType.REJECTED),
                                              ("k3", "AAA", "DEMO1", ExecType.NEW)):
            client.new_order(symbol, "buy", "1", "48.00" if symbol == "AAA" else "118.00",
                             account=account, cl_ord_id=cid)
            got = client.recv_until(lambda m: isinstance(m, ExecutionReport) and
                                    m.cl_ord_id == cid, 5)[-1]
            assert got.exec_type == outcome and got.reject_name in (None, "KILL_SWITCH"), got


def test_a_cancel_or_replace_from_another_session_is_answered_to_it(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as owner, Client(endpoint) as other:
        owner.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="o1")
        report(owner, "o1", ExecType.NEW)
        other.replace("o1", account="DEMO1", qty="20", cl_ord_id="o2")
        for client in (other, owner):
            assert report(client, "o2", ExecType.REPLACED).qty == "20"
        other.cancel("o2", account="DEMO1", cl_ord_id="o3")
        for client in (other, owner):
            assert report(client, "o3", ExecType.CANCELED).orig_cl_ord_id == "o2"
        before = status(owner, "o1").report
    # Each session's copy is in the journal; recovery applies the replace once.
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        order = engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "o1"))
        assert order.renames == 2  # (the replace and the cancel, each once)
        after = status(client, "o1").report
        assert (after.cl_ord_id, after.qty, after.ord_status) == ("o3", "0", OrdStatus.CANCELED)
        assert after == before
        client.status("o2", account="DEMO1")
        assert client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1].found


def test_cancel_on_disconnect_holds_across_a_restart(tmp_path):
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("heartbeat_timeout_ms = 60000",
                                             "heartbeat_interval_ms = 200\n"
                                             "heartbeat_timeout_ms = 600"))
    with ThreadedEngine(path), Client(endpoint) as client:
        client.heartbeat(cancel_on_disconnect=True)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="c1")
        report(client, "c1", ExecType.NEW)
        session_id = client.session_id
    # The client does not come back: its order is canceled within the timeout.
    with ThreadedEngine(path) as engine, Client(endpoint) as watcher:
        deadline = time.monotonic() + 5
        while status(watcher, "c1").report.ord_status != OrdStatus.CANCELED:
            assert time.monotonic() < deadline, "order c1 still working"
            time.sleep(0.1)
        restored = engine.call(lambda: engine.service.intake.sessions[session_id])
        assert restored.cancel_on_disconnect


def serve_once(path) -> subprocess.CompletedProcess:
    """``kronos-exec serve`` for a moment: it either refuses at once or runs 3 s."""
    return subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path),
                           "--duration", "3"], capture_output=True, text=True, timeout=60)


def test_a_configuration_missing_an_instrument_or_account_with_orders_refuses_to_start(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("BBB", "buy", "1", "119.00", account="DEMO1", cl_ord_id="b1")
        client.new_order("AAA", "sell_short", "2", "51.00", account="DEMO2", cl_ord_id="a1",
                         locate=True)
        report(client, "b1", ExecType.NEW)
        report(client, "a1", ExecType.NEW)
    # The same journal with BBB gone from the venues and DEMO2 from the accounts.
    text = QUIET_SIM.read_text()
    start = text.index('[[instruments]]\nsymbol = "BBB"')
    sim = tmp_path / "sim.toml"
    sim.write_text(text[:start] + text[text.index("\n\n", start) + 2:]
                   .replace('symbol = "BBB"', 'symbol = "AAA"'))
    journal_dir = tmp_path / "journal"
    # The segments only: journal.lock holds the pid of whoever opened it last, and
    # the refusing engine's pid may have more digits (it did once in CI).
    size = sum(f.stat().st_size for f in journal_dir.glob("*.krj"))
    port = free_port()
    path.write_text(config_text(port, journal_dir, sim=sim)
                    .replace(RISK.split("[risk.accounts.DEMO2]")[1], "\n")
                    .replace("[risk.accounts.DEMO2]", "")
                    .replace('"DEMO1", "DEMO2"', '"DEMO1"'))
    done = serve_once(path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "instrument 'BBB' (1 orders)" in done.stderr and "account 'DEMO2' (1 orders)" in \
        done.stderr and "Traceback" not in done.stderr
    # Nothing was written to the journal it refused.
    assert sum(f.stat().st_size for f in journal_dir.glob("*.krj")) == size


def test_an_order_recovery_cancels_is_reported_in_its_session(tmp_path):
    # The journal ends as a crash can leave it: a kill switch on DEMO1 took
    # effect (its AdminReply went out) while o1's venue cancel had not come
    # back. Recovery cancels o1; its CANCELED must be numbered in o1's
    # session and kept for resends, so the client that resumes is told.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.heartbeat(test_req_id="hi")
        client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="o1")
        report(client, "o1", ExecType.NEW)
        session_id, last_seq = client.session_id, client.last_seq
    with JournalWriter(tmp_path / "journal") as journal:
        journal.append_msg(RecordKind.COMMAND, JournalCommand(
            session_id=session_id, principal="", received_ns=time.time_ns(),
            request=KillSwitch(req_id="ks", action="engage", scope="account", target="DEMO1")))
        journal.append_msg(RecordKind.EVENT, JournalEvent(
            session_id=session_id, event=AdminReply(req_id="ks", ok=True, seq=last_seq + 1)))
    with ThreadedEngine(path), Client(endpoint) as client:
        client.resume(session_id, last_seq)
        canceled = report(client, "o1", ExecType.CANCELED)
        assert canceled.seq == last_seq + 2 and "kill switch" in canceled.text
        assert client.gaps == [] and client.last_seq == last_seq + 2
    # And again after another restart: the report is in the journal as sent.
    with ThreadedEngine(path), Client(endpoint) as client:
        client.resume(session_id, last_seq + 1)
        assert report(client, "o1", ExecType.CANCELED).seq == last_seq + 2
        assert status(client, "o1").report.ord_status == OrdStatus.CANCELED


def test_serve_says_why_it_cannot_start(tmp_path):
    path, endpoint = engine_config(tmp_path)
    good = path.read_text()
    path.write_text(good.replace("[journal]", "[journal]\nfsinc = \"always\""))
    done = serve_once(path)
    assert done.returncode == 2 and "unknown key 'journal.fsinc'" in done.stderr
    assert "Traceback" not in done.stderr
    path.write_text(good)
    # Plaintext, then CURVE (its ZAP authenticator was started before the bind
    # failed, and stopping it under uvloop aborted the process: exit -6).
    _, secret = generate_keypair(tmp_path / "keys", "server")
    curve = good.replace("plaintext_endpoints", "endpoints").replace(
        "[security]", f'[security]\nserver_secret_key_file = "{secret}"')
    for text in (good, curve):
        path.write_text(text)
        with socket.create_server(("127.0.0.1", int(endpoint.rpartition(":")[2]))):
            done = serve_once(path)
        assert done.returncode == 1 and f"cannot bind {endpoint}: Address already in use" in \
            done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_failed_start_stops_what_it_started(tmp_path):
    # The gateway's process is up (it bound its endpoints) before intake
    # finds its port taken; the failed start must not leave it running.
    pub, rep = free_port(), free_port()
    path, endpoint = engine_config(tmp_path, extra=f"""
[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:{pub}"
replay_endpoint = "tcp://127.0.0.1:{rep}"
""")
    with socket.create_server(("127.0.0.1", int(endpoint.rpartition(":")[2]))):
        with pytest.raises(EndpointError, match="cannot bind"):
            with ThreadedEngine(path):
                pass
    assert multiprocessing.active_children() == []
    for port in (pub, rep):  # free again: nothing holds them
        socket.create_server(("127.0.0.1", port)).close()
    # And the journal was closed: an engine starts on it at once.
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="after")
        report(client, "after", ExecType.NEW)


def test_a_schedule_that_ended_while_the_engine_was_down_expires_saying_so(tmp_path, caplog):
    """Restarted after its window, a TWAP was canceled "could not be routed again after a
    restart: INVALID_SCHEDULE" with an ERROR logged: an expected end, told as a failure.
    It ends EXPIRED, as it would have live at its window's end (multi-day audit: it was
    CANCELED after a restart)."""
    import logging
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="w1",
                         strategy="twap", end_time=time.time_ns() + 500_000_000, slices=2)
        report(client, "w1", ExecType.NEW)
    time.sleep(0.6)        # (stopped before its window's end; restarted after it)
    caplog.set_level(logging.INFO, logger="engine.recovery")
    with ThreadedEngine(path), Client(endpoint) as client:
        client.status("w1", account="DEMO1")
        reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert reply.report.exec_type == ExecType.EXPIRED
    assert reply.report.text == "its schedule's window ended while the engine was down"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_orders_strategy_stp_and_schedule_survive_a_restart(tmp_path):
    # What recovery routes the remainder with: the order's own strategy,
    # schedule and self-trade prevention, not the defaults.
    from ext.router import STRAT_PASSIVE, STRAT_TWAP
    path, endpoint = engine_config(tmp_path)
    end = time.time_ns() + 3600 * 10**9
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="p1",
                         strategy="passive", stp=2)
        report(client, "p1", ExecType.NEW)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="t1",
                         strategy="twap", end_time=end, slices=7)
        report(client, "t1", ExecType.NEW)
    with ThreadedEngine(path) as engine:
        order = engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "p1"))
        assert (order.strategy, order.stp, order.done) == (STRAT_PASSIVE, 2, False)
        twap = engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "t1"))
        assert (twap.strategy, twap.schedule, twap.done) == (STRAT_TWAP, (-1, end, 7, None, -1),
                                                             False)


def test_working_orders_keep_their_value_at_risk_across_a_restart(tmp_path, monkeypatch):
    # Risk values a market order, and a sell under a collar, from the market
    # (the collar's upper edge above the mid), not from a price of its own. The
    # market order's child is still on its way to the venue (300 ms) when
    # the engine stops. (The venues restart empty, so once routed again it
    # is canceled: values are read as recovery left them, before that.)
    sim = slow_sim(tmp_path, 300_000)
    path, endpoint = engine_config(tmp_path, sim=sim, extra="[router]\nack_timeout_ns = 5000000000\n")
    path.write_text(path.read_text().replace("[risk.accounts.DEMO1]\n",
                                             "[risk.accounts.DEMO1]\ncollar_ticks = 100\n"))

    def valued(engine, order_id):
        risk = engine.service.pipeline.risk
        return engine.call(lambda: risk.working_order(order_id)["value_price"])

    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.new_order("AAA", "buy", "1000", "49.00", account="DEMO2", cl_ord_id="bid")
        client.new_order("AAA", "sell_short", "1000", "51.00", account="DEMO2", cl_ord_id="ask",
                         locate=True)
        report(client, "ask", ExecType.NEW)
        time.sleep(0.7)  # both rest at their venue: the mid is 50.00
        client.new_order("AAA", "sell_short", "10", "50.50", account="DEMO1", cl_ord_id="sell",
                         locate=True)
        sell_id = int(report(client, "sell", ExecType.NEW).order_id)
        # At the collar's upper edge, the mid + 100 ticks (above the sell's own limit).
        assert valued(engine, sell_id) == 5100
        # The bid moves up, then the sell is replaced: valued again, from the new mid.
        client.new_order("AAA", "buy", "10", "49.50", account="DEMO2", cl_ord_id="bid2")
        report(client, "bid2", ExecType.NEW)
        time.sleep(0.7)
        client.replace("sell", account="DEMO1", qty="20", cl_ord_id="sell2")
        report(client, "sell2", ExecType.REPLACED)
        assert valued(engine, sell_id) == 5125
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market")
        order_id = int(report(client, "mkt", ExecType.NEW).order_id)
        assert valued(engine, order_id) == 5125
    recovered = seen_at_resume(monkeypatch, lambda pipeline, summary: {
        key: pipeline.risk.working_order(key)["value_price"] for key in (order_id, sell_id)})
    with ThreadedEngine(path):
        assert recovered == [{order_id: 5125, sell_id: 5125}]


def test_daily_limits_start_afresh_when_the_trading_day_rolls(tmp_path):
    # The day rolls a few seconds after the engine starts: the fill before the
    # roll no longer counts toward DEMO1's daily notional, here and after a
    # restart (recovery resets where the journal says the day rolled). The
    # steps before the roll (a start, a fill, a refusal) have 3 s at least: cut
    # from now + 2 s, the roll left them as little as 1 s when the test began
    # late in a second, and a start held that long on a busy machine saw b2
    # taken in the new day.
    trading_day, roll = roll_ahead(3)
    path, endpoint = engine_config(tmp_path, extra=trading_day)
    path.write_text(path.read_text().replace(
        "[risk.accounts.DEMO1]\n", '[risk.accounts.DEMO1]\nmax_daily_notional = "6000"\n'))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.new_order("AAA", "sell_short", "100", "50.00", account="DEMO2", cl_ord_id="s",
                         locate=True)
        report(client, "s", ExecType.NEW)
        acked_at_venue(client, "s", account="DEMO2")  # at its venue, where b finds it
        client.new_order("AAA", "buy", "100", "50.00", account="DEMO1", cl_ord_id="b")
        report(client, "b", ExecType.FILL)
        client.new_order("AAA", "buy", "40", "50.00", account="DEMO1", cl_ord_id="b2")
        assert report(client, "b2", ExecType.REJECTED).reject_name == "DAILY_NOTIONAL_LIMIT"
        assert time.time() < roll, "the steps before the roll overran it: the test tells nothing"
        wait_for_rolls(engine, 1, roll)
        client.new_order("AAA", "buy", "40", "48.00", account="DEMO1", cl_ord_id="b3")
        report(client, "b3", ExecType.NEW)  # 1,920 working: the new day's only notional
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "40", "48.00", account="DEMO1", cl_ord_id="b4")
        report(client, "b4", ExecType.NEW)
        client.new_order("AAA", "buy", "50", "48.00", account="DEMO1", cl_ord_id="b5")
        assert report(client, "b5", ExecType.REJECTED).reject_name == "DAILY_NOTIONAL_LIMIT"


def rolling_in_half_a_day(tmp_path):
    """A configuration whose trading day rolls about 12 h from now: a step back to now from
    past the roll is hours before it (a step back of less than an hour past a roll is a
    fast clock corrected, and does not bring the roll round again: ROLL_RETAKE_NS)."""
    roll = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)
    return engine_config(tmp_path, extra=f'[trading_day]\nroll_time = "{roll:%H:%M}"\n')


def test_a_clock_stepped_forward_then_back_does_not_skip_the_next_roll(tmp_path):
    """A step of the wall clock a day forward rolled the day; stepped back, the next roll
    stayed a day too far and the real one was skipped: the daily limits ran on for two days
    (failure audit). The clock going back past the day's start takes the next roll from it."""
    path, endpoint = rolling_in_half_a_day(tmp_path)
    with ThreadedEngine(path) as engine:
        pipeline = engine.service.pipeline
        now = time.time_ns()
        day = 86_400 * 10**9
        real_next = pipeline.trading_day.next_roll(now)
        engine.call(lambda: pipeline.tick(now + day + 3_600 * 10**9))    # a day and an hour on
        assert engine.call(lambda: pipeline._next_roll) > real_next + day - 1
        engine.call(lambda: pipeline.tick(now + 10**9))                  # back to the real time
        assert engine.call(lambda: pipeline._next_roll) == real_next



def test_a_step_back_just_after_a_roll_does_not_roll_again(tmp_path, monkeypatch):
    """(Multi-day audit.) The clock set back 2.5 s just after the roll took the next roll
    from the clock again: the same roll came round, and the engine rolled twice in one
    day (forgetting the done orders it keeps for the new day, expiring the DAY orders
    placed in it). The roll just taken is not taken again, after a restart either."""
    trading_day, roll = roll_ahead(2)  # (started by then, wherever in its second)
    path, endpoint = engine_config(tmp_path, extra=trading_day)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        assert time.time() < roll, "the engine started after the roll: the test tells nothing"
        wait_for_rolls(engine, 1, roll)
        time.sleep(max(0.0, roll + 1.2 - time.time()))  # (set back, it comes 1.2 s past again)
        real = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: real() - 2_500_000_000)
        time.sleep(2.5)  # the clock is back before the roll instant, then past it again
        assert engine.call(lambda: pipeline.orders.rolls) == 1
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="o1")
        report(client, "o1", ExecType.NEW)
        live = engine.call(lambda: pipeline._next_roll)
    monkeypatch.undo()
    assert live > time.time_ns() + 3_600 * 10**9  # tomorrow's
    seen = seen_at_resume(monkeypatch, lambda pipeline, summary: (pipeline._next_roll,
                                                                   pipeline.orders.rolls))
    with ThreadedEngine(path):
        assert seen == [(live, 1)]


def test_a_restart_keeps_the_roll_a_clock_set_back_brought_round(tmp_path, monkeypatch):
    """(Multi-day audit.) Rolled early by a step forward, then set back, the live engine
    takes the real roll again (the test two above); recovery took the
    next roll from the early roll's record, a day on, so an engine restarted after the
    real roll skipped it, and the DAY orders of a finished day went back to the market.
    Recovery now follows the journal's clock as the live engine followed its own."""
    path, endpoint = rolling_in_half_a_day(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        now = time.time_ns()
        real_next = pipeline.trading_day.next_roll(now)
        engine.call(lambda: pipeline.tick(now + 86_400 * 10**9 + 3_600 * 10**9))
        engine.call(lambda: pipeline.tick(now + 10**9))
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="d1")
        report(client, "d1", ExecType.NEW)
        assert engine.call(lambda: pipeline._next_roll) == real_next
    seen = seen_at_resume(monkeypatch, lambda pipeline, summary: pipeline._next_roll)
    with ThreadedEngine(path):
        assert seen == [real_next]


def test_risk_books_after_a_restart_are_those_before_it(tmp_path, monkeypatch):
    # A mixed load under a collar (resting and crossing orders, sells, short
    # sales, market orders, replaces up and down, cancels), then a stop.
    # Recovery must rebuild risk's books exactly: positions, working orders
    # and what they are valued at, reservations, daily counters.
    import random
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("[risk.accounts.DEMO1]\n",
                                             "[risk.accounts.DEMO1]\ncollar_ticks = 200\n"))
    rng = random.Random(11)

    def books(risk):
        snap = risk.snapshot()
        return {key: snap[key] for key in ("firm", "account_state", "cells", "orders")}

    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        for cid, side, price in (("b0", "buy", "49.00"), ("a0", "sell_short", "51.00")):
            client.new_order("AAA", side, "500", price, account="DEMO2", cl_ord_id=cid,
                             locate=True)
            report(client, cid, ExecType.NEW)
        time.sleep(0.1)
        working = []
        for i in range(60):
            cid, r = f"o{i}", rng.random()
            if r < 0.3 and working:
                orig = rng.choice(working)
                client.replace(orig, account="DEMO1", qty=str(rng.randint(5, 40)),
                               cl_ord_id=cid)
                working[working.index(orig)] = cid
            elif r < 0.4 and working:
                client.cancel(working.pop(rng.randrange(len(working))), account="DEMO1",
                              cl_ord_id=cid)
            elif r < 0.55:
                client.new_order("AAA", rng.choice(["buy", "sell_short"]), "10", None,
                                 account="DEMO1", cl_ord_id=cid, locate=True)
            else:
                side = rng.choice(["buy", "sell_short"])
                price = f"{rng.randint(4950, 5050) / 100:.2f}"
                client.new_order("AAA", side, str(rng.randint(5, 30)), price, account="DEMO1",
                                 cl_ord_id=cid, locate=True)
                working.append(cid)
            time.sleep(0.005)
        client.drain(0.5)
        risk = engine.service.pipeline.risk
        before = engine.call(lambda: books(risk))
    assert before["orders"] and before["cells"], "the load left working orders and positions"
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: books(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [before]


def test_a_journal_made_anew_is_published_from_its_first_record(tmp_path):
    # Gateway cursors lived beside the journal directory, not in it: a new
    # journal there inherited the old cursor and published nothing (lag 0)
    # until its seqs passed the old ones.
    import shutil
    path, endpoint = engine_config(tmp_path, extra=f"""
[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:{free_port()}"
replay_endpoint = "tcp://127.0.0.1:{free_port()}"
isolation = "thread"
poll_interval_ms = 1
""")

    def run(cl_ord_ids):
        with ThreadedEngine(path) as engine, Client(endpoint) as client:
            for cl_ord_id in cl_ord_ids:
                client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
                report(client, cl_ord_id, ExecType.NEW)
            [gateway] = engine.service.gateways
            last = engine.call(lambda: engine.service.journal.last_seq)
            assert gateway.wait_for(last, 10)
            return last, gateway.metrics.delivered
    old_last, _ = run([f"old{n}" for n in range(20)])
    shutil.rmtree(tmp_path / "journal")
    last, delivered = run(["new"])
    assert last < old_last
    assert delivered >= 1  # the new order's acknowledgement, published


def test_an_orders_children_are_the_same_after_a_restart(tmp_path):
    # The journal holds the child orders (JournalChildren, one record per
    # flush): a status request after a restart lists the children a done
    # order had, their venue, terms and fills, as before it.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="kb")
        report(client, "kb", ExecType.NEW)
        acked_at_venue(client, "kb")  # the child rests at its venue, where the sell finds it
        client.new_order("AAA", "sell_short", "4", "48.00", account="DEMO2", cl_ord_id="ks",
                         locate=True)
        seen = set()
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and seen.add(
            (m.cl_ord_id, m.exec_type)) is None and {("ks", ExecType.FILL),
                                                     ("kb", ExecType.PARTIAL_FILL)} <= seen, 5)
        client.cancel("kb", account="DEMO1", cl_ord_id="kb-c")
        report(client, "kb-c", ExecType.CANCELED)
        before = {cid: status(client, cid, account)
                  for cid, account in (("kb", "DEMO1"), ("ks", "DEMO2"))}
    assert [(c.qty, c.cum_qty, c.done, c.acked) for c in before["kb"].children] == \
        [("10", "4", True, True)]
    assert [(c.qty, c.cum_qty, c.done, c.acked) for c in before["ks"].children] == \
        [("4", "4", True, True)]
    with ThreadedEngine(path), Client(endpoint) as client:
        after = {cid: status(client, cid, account)
                 for cid, account in (("kb", "DEMO1"), ("ks", "DEMO2"))}
        assert {cid: s.children for cid, s in after.items()} == \
            {cid: s.children for cid, s in before.items()}
        # New children get ids the journal's did not have.
        client.new_order("AAA", "buy", "1", "47.00", account="DEMO1", cl_ord_id="kn")
        report(client, "kn", ExecType.NEW)
        [fresh] = status(client, "kn").children
        assert int(fresh.child_id) > max(int(c.child_id) for s in before.values()
                                         for c in s.children)


def test_a_child_on_its_way_to_its_venue_is_told_from_one_there_and_after_a_restart(tmp_path):
    # Every venue is 300 ms away: the order's NEW report leaves when it is
    # routed, its child reaches the venue later. A status request tells the
    # two apart (acked), and the journal keeps the venue's acknowledgement.
    path, endpoint = engine_config(tmp_path, sim=slow_sim(tmp_path, 300_000),
                                   extra="[router]\nack_timeout_ns = 5000000000\n")
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="way")
        report(client, "way", ExecType.NEW)
        [child] = status(client, "way").children
        assert (child.acked, child.done) == (False, False)
        deadline = time.monotonic() + 5
        while not child.acked and time.monotonic() < deadline:
            time.sleep(0.05)
            [child] = status(client, "way").children
        assert (child.acked, child.done) == (True, False)
    with ThreadedEngine(path), Client(endpoint) as client:
        [child] = status(client, "way").children[:1]  # (then its order's new child)
        assert (child.acked, child.done) == (True, True)


def test_a_childs_reprice_no_client_heard_of_survives_a_restart(tmp_path):
    # The router moves a passive child up with the national bid: the venue's
    # confirmation leads to no report to the client, and is journaled with
    # the next write all the same (intake's next wake-up, or the engine's
    # last write when it stops).
    from ext.types import Side

    def at_venue(engine, *args):  # another firm's order (venue account 77)
        market = engine.service.venues.market
        return engine.call(lambda: market.submit(*args, account=77))

    def child_prices(engine):
        order = engine.service.pipeline.orders.find("DEMO1", "rp")
        return engine.call(lambda: [c.price for c in order.children.values()])

    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        at_venue(engine, "NEXA", "AAA", Side.SELL, 50, 5005)
        at_venue(engine, "NEXA", "AAA", Side.BUY, 50, 4998)
        time.sleep(0.1)
        client.new_order("AAA", "buy", "100", "50.03", account="DEMO1", cl_ord_id="rp",
                         strategy="passive")
        report(client, "rp", ExecType.NEW)
        deadline = time.monotonic() + 3
        while child_prices(engine) != [4998] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child_prices(engine) == [4998]  # joins the bid
        at_venue(engine, "BRIX", "AAA", Side.BUY, 10, 5000)
        while child_prices(engine) != [5000] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child_prices(engine) == [5000]  # moved up; the client is told nothing
    with ThreadedEngine(path), Client(endpoint) as client:
        first = status(client, "rp").children[0]
        assert (first.price, first.qty, first.done) == ("50", "100", True)


def test_risk_sessions_after_a_restart_are_those_before_it(tmp_path, monkeypatch):
    # Intake drops sessions (evicted at max_sessions here); risk lets their slots go
    # (one now, one with working orders once they are done) and a later session
    # takes a freed one. Recovery replays the drops (JournalSessionEnd) as they
    # happened: the same sessions, slots, free list and orders under the same
    # indexes, instead of every session the journal ever named.
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("heartbeat_timeout_ms = 60000",
                                             "heartbeat_timeout_ms = 60000\nmax_sessions = 2"))

    def sessions(risk):
        snap = risk.snapshot()
        return {key: snap[key] for key in ("sessions", "session_state", "session_slots",
                                           "free_sessions", "orders", "cl_ord_ids")}

    with ThreadedEngine(path) as engine:
        with Client(endpoint) as a:  # a resting order: its slot is kept while it works
            a.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1")
            report(a, "a1", ExecType.NEW)
        time.sleep(0.2)
        with Client(endpoint) as b:  # an order canceled: nothing left working
            b.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="b1")
            report(b, "b1", ExecType.NEW)
            b.cancel("b1", account="DEMO1", cl_ord_id="b2")
            report(b, "b2", ExecType.CANCELED)
        time.sleep(0.2)
        for _ in range(2):  # each evicts the longest silent closed session: a, then b
            with Client(endpoint) as later:
                later.heartbeat()
                later.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            time.sleep(0.2)
        with Client(endpoint) as e:  # takes b's slot
            e.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="e1")
            report(e, "e1", ExecType.NEW)
        before = engine.call(lambda: sessions(engine.service.pipeline.risk))
    assert before["sessions"][0] is None and before["session_slots"][0][:2] == [1, 1], \
        "a's session was released and its slot kept for its working order"
    assert len(before["sessions"]) == 2 and before["session_slots"][1][2] == 1, \
        "e took b's slot, freed"
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: sessions(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [before]


def test_sessions_intake_let_go_leave_nothing_after_a_restart(tmp_path, monkeypatch):
    # (Multi-day audit.) Recovery kept the journal envelope of every session the journal
    # ever named, those intake had let go included: it grew with every connection.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine:
        pipeline = engine.service.pipeline
        for k in range(3):
            with Client(endpoint) as client:
                client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id=f"s{k}")
                report(client, f"s{k}", ExecType.NEW)
                if k:
                    session = engine.call(lambda: pipeline.sessions[client.session_id])
                    engine.call(lambda: pipeline.on_session_forgotten(session))  # as intake does
        live = engine.call(lambda: sorted(pipeline._event_envelopes))
    assert len(live) == 1
    seen = seen_at_resume(monkeypatch, lambda pipeline, summary: sorted(pipeline._event_envelopes))
    with ThreadedEngine(path):
        assert seen == [live]


def test_a_session_whose_first_order_was_throttled_keeps_its_risk_slot(tmp_path, monkeypatch):
    # (Final review, 2026-12-06.) Live, the throttle check registered a session with
    # risk though its throttled order was never journaled; recovery registered it only
    # at its first journaled command, so two sessions' slots came back swapped.
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("throttle_rate = 100000", "throttle_rate = 1"))

    def sessions(risk):
        snap = risk.snapshot()
        return {key: snap[key] for key in ("sessions", "session_state", "session_slots",
                                           "free_sessions", "orders")}
    with ThreadedEngine(path) as engine, Client(endpoint) as a, Client(endpoint) as b, \
            Client(endpoint) as c:
        a.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1")
        report(a, "a1", ExecType.NEW)
        b.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="b1")
        assert b.recv_until(lambda m: isinstance(m, Reject), 5)[-1].reject_name == "THROTTLED"
        time.sleep(1.2)
        c.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="c1")
        report(c, "c1", ExecType.NEW)
        time.sleep(1.2)
        b.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="b2")
        report(b, "b2", ExecType.NEW)
        live = engine.call(lambda: sessions(engine.service.pipeline.risk))
    assert live["sessions"][:3] == [a.session_id, b.session_id, c.session_id]
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: sessions(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [live]


def test_a_tick_size_the_journals_prices_do_not_fit_stops_serve_with_one_line(tmp_path):
    # Units cannot change on a journal. Restarted under a coarser tick, the replay met a
    # price off the new grid and serve died with a ConversionError's traceback; it now
    # refuses to start with one line naming the record and what to do (exit 1).
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.12", account="DEMO1", cl_ord_id="c1")
        report(client, "c1", ExecType.NEW)
    sim = tmp_path / "coarse.toml"
    sim.write_text(QUIET_SIM.read_text().replace('tick_size = "0.01"', 'tick_size = "0.05"'))
    path.write_text(path.read_text().replace(str(QUIET_SIM), str(sim)))
    # (A process of its own: serve sets up the process's logging.)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    err = out.stderr
    assert out.returncode == 1 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("kronos-exec serve:")]
    assert "cannot start on journal" in line and "price '48.12' is not a multiple of 0.05" in line
    assert "units cannot change on a journal" in line
