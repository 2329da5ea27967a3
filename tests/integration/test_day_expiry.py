"""A DAY order ends with its trading day: at the roll the engine expires it.

Before, a DAY order still working at the engine's trading-day roll (resting at a
venue that does not close, parked in the router, a schedule whose window runs
past the roll) traded on into the next day; only a venue's close ended it. Now
the roll takes every working DAY order down and reports it ``EXPIRED``, GTC
orders carry over, and the expiry holds across a restart: one started before
the stop is finished EXPIRED, and an engine down across a roll expires the DAY
orders of the day that ended instead of routing them again.
"""
import datetime
import math
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply, OrdStatus
from tests.integration.engine_harness import ThreadedEngine, engine_config, slow_sim

EXPIRED_TEXT = "DAY order expired at the end of trading day "


def report(client, cl_ord_id, exec_type, timeout=5):
    """The first ExecutionReport of ``exec_type`` under ``cl_ord_id``."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and m.exec_type == exec_type, timeout)[-1]


def status(client, cl_ord_id, account="DEMO1"):
    """The engine's OrderStatusReply for ``cl_ord_id``."""
    client.status(cl_ord_id, account=account)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == cl_ord_id,
                             5)[-1]


def roll(engine):
    """Make the engine's trading day roll now, as its first event after the roll time would."""
    pipeline = engine.service.pipeline
    engine.call(lambda: pipeline.roll_day(time.time_ns()))


def day_text(engine, created_ns):
    """The EXPIRED text of a DAY order placed at ``created_ns``."""
    day = engine.service.pipeline.trading_day.day_of(created_ns)
    return EXPIRED_TEXT + day.isoformat()


def test_a_resting_day_order_expires_at_the_roll_and_a_gtc_one_carries_over(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk = pipeline.risk
        placed = time.time_ns()
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="day1")
        day_id = int(report(client, "day1", ExecType.NEW).order_id)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="gtc1",
                         time_in_force="gtc")
        gtc_id = int(report(client, "gtc1", ExecType.NEW).order_id)
        account = engine.call(lambda: risk.account_index("DEMO1"))
        assert engine.call(lambda: risk.account_state(account)["open_orders"]) == 2
        roll(engine)
        expired = report(client, "day1", ExecType.EXPIRED)
        assert expired.ord_status == OrdStatus.EXPIRED
        assert expired.text == day_text(engine, placed)
        assert (expired.leaves_qty, expired.cum_qty) == ("0", "0")
        # Risk released it, as for any end; the GTC order still holds its exposure.
        assert engine.call(lambda: risk.working_order(day_id)) is None
        assert engine.call(lambda: risk.working_order(gtc_id)) is not None
        assert engine.call(lambda: risk.account_state(account)["open_orders"]) == 1
        reply = status(client, "day1")
        assert reply.report.ord_status == OrdStatus.EXPIRED
        assert not [c for c in reply.children if not c.done]  # canceled at its venue
        gtc = status(client, "gtc1")
        assert gtc.report.ord_status == OrdStatus.NEW
        assert [c for c in gtc.children if not c.done]
        assert not [m for m in client.drain(0.3) if isinstance(m, ExecutionReport)
                    and m.cl_ord_id == "gtc1"]


def test_a_day_schedule_whose_window_runs_past_the_roll_is_accepted_and_expires_there(tmp_path):
    # The client asked for DAY: the window is cut at the roll, not refused.
    path, endpoint = engine_config(tmp_path)
    end = time.time_ns() + 30 * 3600 * 10**9  # past the next roll (midnight UTC)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        placed = time.time_ns()
        for cl_ord_id, tif in (("twap_day", "day"), ("twap_gtc", "gtc")):
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id=cl_ord_id,
                             strategy="twap", end_time=end, slices=5, time_in_force=tif)
            report(client, cl_ord_id, ExecType.NEW)
        roll(engine)
        expired = report(client, "twap_day", ExecType.EXPIRED)
        assert expired.text == day_text(engine, placed)
        assert status(client, "twap_gtc").report.ord_status == OrdStatus.NEW
        order = engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "twap_day"))
        assert engine.call(lambda: engine.service.pipeline.risk.working_order(order.order_id)) \
            is None


def test_a_replace_or_cancel_in_flight_at_the_roll_each_get_their_answer(tmp_path):
    # Venues 300 ms away: the children of both requests are still coming down at
    # the roll. The Replace is refused (its order's day is over) and the order
    # expires; the Cancel came first and completes, its CANCELED answering it.
    path, endpoint = engine_config(tmp_path, sim=slow_sim(tmp_path, 300_000),
                                   extra="[router]\nack_timeout_ns = 5000000000\n")
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        placed = time.time_ns()
        for cl_ord_id in ("r1", "c1"):
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
            report(client, cl_ord_id, ExecType.NEW)
        time.sleep(0.8)  # their children rest at their venue
        client.replace("r1", account="DEMO1", price="48.50", cl_ord_id="r1b")
        client.cancel("c1", account="DEMO1", cl_ord_id="c1x")
        time.sleep(0.1)  # taken (the children are coming down), not yet confirmed down
        roll(engine)
        refused = report(client, "r1b", ExecType.REJECTED)
        assert refused.reject_name == "TOO_LATE_TO_CANCEL"
        assert refused.text == day_text(engine, placed)
        expired = report(client, "r1", ExecType.EXPIRED)
        assert expired.ord_status == OrdStatus.EXPIRED
        assert expired.price == "48"  # the replace never took
        canceled = report(client, "c1x", ExecType.CANCELED)
        assert canceled.orig_cl_ord_id == "c1"
        assert not [m for m in client.drain(0.5) if isinstance(m, ExecutionReport)
                    and (m.exec_type in (ExecType.NEW, ExecType.REPLACED)
                         or m.cl_ord_id in ("c1", "c1x") and m.exec_type == ExecType.EXPIRED)]


def test_an_expiry_the_venues_had_not_confirmed_at_the_stop_ends_expired_after_it(tmp_path):
    # The roll took the order down, but its venue cancel never came back (as when
    # the engine is killed with it on its way): restarted, the engine must not send
    # the order back to the market, and reports it EXPIRED, not CANCELED.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        placed = time.time_ns()
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="m1")
        report(client, "m1", ExecType.NEW)
        time.sleep(0.3)  # its child rests at its venue
        venues = engine.service.pipeline.venues
        engine.call(lambda: setattr(venues, "cancel", lambda sim_id: None))  # lost on its way
        roll(engine)
        time.sleep(0.3)
        assert not [m for m in client.drain(0.2) if isinstance(m, ExecutionReport)
                    and m.cl_ord_id == "m1"]
        text = day_text(engine, placed)
    with ThreadedEngine(path), Client(endpoint) as client:
        time.sleep(0.5)  # past the venues' round trip: a child routed again would show
        reply = status(client, "m1")
        assert reply.report.exec_type == ExecType.EXPIRED
        assert reply.report.ord_status == OrdStatus.EXPIRED
        assert reply.report.text == text
        assert not [c for c in reply.children if not c.done]


def test_an_engine_down_across_the_roll_expires_the_days_orders_instead_of_routing_them(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="d1")
        report(client, "d1", ExecType.NEW)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="g1",
                         time_in_force="gtc")
        report(client, "g1", ExecType.NEW)
        time.sleep(0.3)  # both rest at their venue
        children = [c.child_id for c in status(client, "d1").children]
        assert children
    # The trading day ends a moment after the stop (the restarted engine's
    # roll_time): the engine is down across the roll.
    roll_at = datetime.datetime.fromtimestamp(math.ceil(time.time()) + 1, datetime.timezone.utc)
    path.write_text(path.read_text() + f'\n[trading_day]\nroll_time = "{roll_at:%H:%M:%S}"\n')
    time.sleep(max(0.0, roll_at.timestamp() - time.time()) + 0.2)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        time.sleep(0.5)  # past the venues' round trip: a child routed again would show
        reply = status(client, "d1")
        assert reply.report.exec_type == ExecType.EXPIRED
        assert reply.report.text.startswith(EXPIRED_TEXT)
        # Not routed again, even for a moment: no child since the one before the stop.
        assert [c.child_id for c in reply.children] == children
        assert not [c for c in reply.children if not c.done]
        order = engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "d1"))
        assert engine.call(lambda: engine.service.pipeline.risk.working_order(order.order_id)) \
            is None
        gtc = status(client, "g1")
        assert gtc.report.ord_status == OrdStatus.NEW
        assert [c for c in gtc.children if not c.done]  # routed again
    # A second restart finds the expiry in the journal: nothing more happens.
    with ThreadedEngine(path), Client(endpoint) as client:
        assert status(client, "d1").report.ord_status == OrdStatus.EXPIRED


def test_an_expiry_cut_short_by_kill_9_ends_expired_after_the_restart(tmp_path):
    # The same as a real crash: the roll is the engine's own (roll_time a few
    # seconds after the start), the venues 0.5 s away, so the cancels are still
    # on their way when the engine is killed.
    import msgspec
    from engine.journal import JournalReader, RecordKind
    from engine.messages import JournalMeta, JournalPulled
    from tests.integration.engine_harness import config_text, free_port, kill_9, \
        kill_if_running, start_subprocess
    port = free_port()
    endpoint, config, log = f"tcp://127.0.0.1:{port}", tmp_path / "engine.toml", \
        tmp_path / "engine.log"
    roll_at = datetime.datetime.fromtimestamp(math.ceil(time.time()) + 8, datetime.timezone.utc)
    config.write_text(config_text(port, tmp_path / "journal", fsync="always",
                                  sim=slow_sim(tmp_path, 500_000.0),
                                  extra=f'[router]\nack_timeout_ns = 5000000000\n'
                                        f'[trading_day]\nroll_time = "{roll_at:%H:%M:%S}"\n'))
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="k1")
            report(client, "k1", ExecType.NEW)
            assert time.time() < roll_at.timestamp() - 1.5  # (else the test cannot tell)
            time.sleep(max(0.0, roll_at.timestamp() - time.time()) + 0.25)
            assert not [m for m in client.drain(0.05) if isinstance(m, ExecutionReport)
                        and m.exec_type == ExecType.EXPIRED]
        kill_9(proc)
        # Killed mid-way: the pull is journaled, the EXPIRED is not.
        meta = msgspec.msgpack.Decoder(JournalMeta)
        pulled = [rec.decode(meta) for rec in JournalReader(tmp_path / "journal").records(1)
                  if rec.kind == RecordKind.META and b"JournalPulled" in rec.payload]
        assert [p.expire for p in pulled if isinstance(p, JournalPulled)] == [True]
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            time.sleep(1.5)  # past the venue's round trip: a child routed again would show
            reply = status(client, "k1")
            assert reply.report.exec_type == ExecType.EXPIRED
            assert reply.report.text.startswith(EXPIRED_TEXT)
            assert not [c for c in reply.children if not c.done]
        assert "0 of 1 working orders routed again" in log.read_text()
    finally:
        kill_if_running(proc)
