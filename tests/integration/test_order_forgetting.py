"""Done orders leave the engine at the day rolls, and a restart forgets exactly the same.

A real engine (in a thread) trades across two day rolls (``Pipeline.roll_day``, as its
clock calls it), then stops; another starts on the same journal. With the default
``[orders] keep_done_days = 1``, what was done on the first day is forgotten at the second
roll: status requests and cancels no longer know it, its ``cl_ord_id`` can be used again,
engine order ids are not reused, and the recovered order table is the live one.
"""
import time

from engine.client import Client
from engine.messages import ExecType, OrderStatusReply, Reject
from engine.orders import Order, Stage
from tests.integration.engine_harness import (ThreadedEngine, at_venues, engine_config,
                                              seen_at_resume)


def status(client, cl_ord_id, account="DEMO1"):
    """The engine's OrderStatusReply for ``cl_ord_id``."""
    client.status(cl_ord_id, account=account)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply) and m.cl_ord_id == cl_ord_id,
                             5)[-1]


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` for ``cl_ord_id``."""
    return client.recv_until(lambda m: getattr(m, "exec_type", None) == exec_type
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def table_state(table) -> dict:
    """What the order table holds, comparable between a live engine and a recovered one
    (a refused order is recreated without the price and quantity it was refused for):
    what its lookups see, so forgotten entries that have not left yet
    (``OrderTable.forget_some``) count as gone."""
    held = [o for o in table.by_id.values() if not table._gone(o)]
    return {
        "orders": sorted((o.order_id, o.cl_ord_id, o.account, int(o.stage), o.cum_qty,
                          o.done_roll, o.renames) for o in held),
        # (A spent id by the roll that ends the day it was spent in.)
        "ids": {account: sorted((cl_ord_id, o.order_id if isinstance(o, Order) else -o.roll)
                                for cl_ord_id, o in ids.items() if not table._gone(o))
                for account, ids in table._by_account.items()
                if any(not table._gone(o) for o in ids.values())},
        "rolls": table.rolls, "next_order_id": table.next_order_id, "held": len(table),
        "accounts_forgotten": sorted(table.accounts_forgotten | {
            o.account for o in table.by_id.values()
            if table._gone(o) and o.stage != Stage.REJECTED}),
    }


def rest_market(engine, client) -> None:
    """DEMO2 rests a GTC bid at 47.00 and offer at 51.00, 5,000 each (``b0``, ``a0``): the
    market the random load's marketable orders (at 51.00) fill against. Returns once both
    rest at their venues (see ``at_venues``)."""
    for cid, side, price in (("b0", "buy", "47.00"), ("a0", "sell_short", "51.00")):
        client.new_order("AAA", side, "5000", price, account="DEMO2", cl_ord_id=cid,
                         locate=True, time_in_force="gtc")
        report(client, cid, ExecType.NEW)
    at_venues(engine, "AAA", bid=4700, ask=5100)


def random_load(engine, client, rng, steps, working, used, prefix) -> int:
    """``steps`` of a random load on DEMO1: new orders (marketable ones fill), cancels and
    replaces of ``working`` orders, ids of ``used`` sent again (refused while held, a new
    order once forgotten), resting DAY and GTC orders, and day rolls between them; returns
    how many rolls."""
    pipeline = engine.service.pipeline
    rolls = 0
    for i in range(steps):
        r = rng.random()
        if r < 0.08:
            engine.call(lambda: pipeline.roll_day(time.time_ns()))
            rolls += 1
            continue
        cid = f"{prefix}{i}"
        if r < 0.25 and working:
            client.cancel(working.pop(rng.randrange(len(working))), account="DEMO1",
                          cl_ord_id=cid)
        elif r < 0.4 and working:
            k = rng.randrange(len(working))
            client.replace(working[k], account="DEMO1", qty=str(rng.randint(1, 30)),
                           cl_ord_id=cid)
            working[k] = cid
        elif r < 0.5 and used:
            cid = rng.choice(used)
            client.new_order("AAA", "buy", "3", "48.00", account="DEMO1", cl_ord_id=cid)
        elif r < 0.7:
            client.new_order("AAA", "buy", str(rng.randint(1, 20)), "51.00",
                             account="DEMO1", cl_ord_id=cid)
        else:
            client.new_order("AAA", "buy", str(rng.randint(1, 20)),
                             f"{rng.randint(4800, 4990) / 100:.2f}", account="DEMO1",
                             cl_ord_id=cid, time_in_force=rng.choice(["day", "gtc"]))
            working.append(cid)
        used.append(cid)
        client.drain(0.01)
    return rolls


def test_done_orders_are_forgotten_at_the_second_roll_live_and_after_a_restart(tmp_path,
                                                                             monkeypatch):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline

        def roll():
            engine.call(lambda: pipeline.roll_day(time.time_ns()))

        for cid, side, price in (("b0", "buy", "49.00"), ("a0", "sell_short", "51.00")):
            client.new_order("AAA", side, "500", price, account="DEMO2", cl_ord_id=cid,
                             locate=True, time_in_force="gtc")
            report(client, cid, ExecType.NEW)
        at_venues(engine, "AAA", bid=4900, ask=5100)  # where f1 finds a0
        # Day 0: a fill, a cancel, a replace, a refusal.
        client.new_order("AAA", "buy", "10", "51.00", account="DEMO1", cl_ord_id="f1")
        first_ids = [int(report(client, "f1", ExecType.FILL).order_id)]
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="c1")
        report(client, "c1", ExecType.NEW)
        client.cancel("c1", account="DEMO1", cl_ord_id="c1x")
        report(client, "c1x", ExecType.CANCELED)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="r1",
                         time_in_force="gtc")
        report(client, "r1", ExecType.NEW)
        client.replace("r1", account="DEMO1", qty="20", cl_ord_id="r1b")
        report(client, "r1b", ExecType.REPLACED)
        client.new_order("ZZZ", "buy", "1", "1.00", account="DEMO1", cl_ord_id="z1")
        first_ids.append(int(report(client, "z1", ExecType.REJECTED).order_id))
        held_day0 = engine.call(lambda: len(pipeline.orders))
        roll()
        # Day 1: all of day 0 is still known.
        assert status(client, "f1").found and status(client, "c1x").found
        client.new_order("AAA", "buy", "10", "51.00", account="DEMO1", cl_ord_id="f2")
        report(client, "f2", ExecType.FILL)
        roll()
        # Day 2: day 0's done orders are gone, with every id that named them.
        for cl_ord_id in ("f1", "c1", "c1x", "z1"):
            reply = status(client, cl_ord_id)
            assert not reply.found and reply.reject_name == "UNKNOWN_CL_ORD_ID", cl_ord_id
        client.cancel("c1", account="DEMO1", cl_ord_id="c1y")
        assert client.recv_until(lambda m: isinstance(m, Reject), 5)[-1].reject_name == \
            "UNKNOWN_CL_ORD_ID"
        assert status(client, "f2").found                       # done on day 1: kept
        assert status(client, "r1").found and status(client, "r1b").found   # working
        assert status(client, "b0", account="DEMO2").found
        # A forgotten cl_ord_id names a new order; the engine order id is a new one.
        client.new_order("AAA", "buy", "5", "48.00", account="DEMO1", cl_ord_id="f1")
        reused = int(report(client, "f1", ExecType.NEW).order_id)
        assert reused > max(first_ids)
        assert engine.call(lambda: len(pipeline.orders)) == held_day0 - 3 + 2  # -f1 c1 z1, +f2 f1
        client.drain(0.3)
        live = engine.call(lambda: table_state(pipeline.orders))
    assert live["rolls"] == 2 and live["accounts_forgotten"] == ["DEMO1"]
    recovered = seen_at_resume(monkeypatch,
                               lambda pipeline, summary: table_state(pipeline.orders))
    with ThreadedEngine(path), Client(endpoint) as client:
        assert recovered == [live]
        assert not status(client, "c1").found and status(client, "f1").found
        client.new_order("AAA", "buy", "5", "48.00", account="DEMO1", cl_ord_id="n1")
        assert int(report(client, "n1", ExecType.NEW).order_id) > reused



def test_after_a_restart_ids_stay_above_those_of_forgotten_orders(tmp_path):
    # The highest engine order id and child id here belong to an order the table
    # forgot: recovery took both from the orders it held, and handed them out again.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        client.new_order("AAA", "sell_short", "500", "51.00", account="DEMO2", cl_ord_id="a0",
                         locate=True, time_in_force="gtc")
        report(client, "a0", ExecType.NEW)
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="w",
                         time_in_force="gtc")
        report(client, "w", ExecType.NEW)
        at_venues(engine, "AAA", bid=4800, ask=5100)  # where f finds a0
        client.new_order("AAA", "buy", "10", "51.00", account="DEMO1", cl_ord_id="f")
        last_order = int(report(client, "f", ExecType.FILL).order_id)
        client.drain(0.3)
        last_child = max(int(c.child_id) for c in status(client, "f").children)
        for _ in range(2):
            engine.call(lambda: pipeline.roll_day(time.time_ns()))
        assert not status(client, "f").found
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "5", "48.00", account="DEMO1", cl_ord_id="n")
        assert int(report(client, "n", ExecType.NEW).order_id) > last_order
        client.drain(0.3)
        for cl_ord_id in ("n", "w"):          # new, and routed again by recovery
            assert min(int(c.child_id) for c in status(client, cl_ord_id).children
                       if not c.done) > last_child, cl_ord_id


def test_a_refused_duplicate_of_a_forgotten_order_is_not_its_ids_next_order(tmp_path):
    # Recovery keeps each new order until its first report; a refused duplicate
    # has none, and stayed: once the id was forgotten and used again, a restart
    # recreated the new order with the duplicate's terms.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="f")
        report(client, "f", ExecType.NEW)
        client.new_order("AAA", "buy", "99", "47.00", account="DEMO1", cl_ord_id="f")
        assert client.recv_until(lambda m: isinstance(m, Reject), 5)[-1].reject_name == \
            "DUPLICATE_CL_ORD_ID"
        client.cancel("f", account="DEMO1", cl_ord_id="fx")
        report(client, "fx", ExecType.CANCELED)
        for _ in range(2):
            engine.call(lambda: pipeline.roll_day(time.time_ns()))
        client.new_order("AAA", "buy", "7", "46.00", account="DEMO1", cl_ord_id="f")
        report(client, "f", ExecType.NEW)
        client.drain(0.3)
        terms = engine.call(lambda: (lambda o: (o.qty, o.price))(
            pipeline.orders.find("DEMO1", "f")))
    with ThreadedEngine(path) as engine:
        order = engine.service.pipeline.orders.find("DEMO1", "f")
        assert engine.call(lambda: (order.qty, order.price)) == terms      # not 99 at 47.00


def test_a_restart_forgets_what_the_live_engine_forgot_under_a_random_load(tmp_path,
                                                                           monkeypatch):
    # New orders, fills, cancels, replaces, duplicates, ids used again once forgotten,
    # and day rolls between them; then a restart: the same table, id for id.
    import random
    path, endpoint = engine_config(tmp_path)
    rng = random.Random(7)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        rest_market(engine, client)
        working, used = [], []
        rolls = random_load(engine, client, rng, 90, working, used, "o")
        client.drain(0.3)
        live = engine.call(lambda: table_state(pipeline.orders))
    assert rolls >= 4 and live["rolls"] == rolls and live["accounts_forgotten"]
    recovered = seen_at_resume(monkeypatch,
                               lambda pipeline, summary: table_state(pipeline.orders))
    with ThreadedEngine(path):
        assert recovered == [live]


def _replace_in_flight_across_a_roll(tmp_path):
    """An engine whose venues are 1.5 s away: an order rests, a Replace of it (too big
    for risk) is on its way when the day rolls, and the engine stops. Returns (path,
    endpoint); the next engine takes the Replace up again (and risk refuses it: its
    cl_ord_id stays spent, naming no order). Left different, the two engines' days for
    that id let a refused duplicate's terms be recreated for the id's next order once
    it was forgotten (review, 2026-12-06)."""
    from tests.integration.test_recovery_fixes import engine_config as slow_config, rest
    path, endpoint = slow_config(tmp_path, slow=True)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        rest(client, "R")
        time.sleep(1.7)
        client.drain(0.1)
        client.replace("R", account="DEMO1", qty="200000", cl_ord_id="R-big")
        time.sleep(0.2)
        engine.call(lambda: pipeline.roll_day(time.time_ns()))
    return path, endpoint


def test_a_request_taken_up_again_spends_its_id_in_the_day_it_arrived(tmp_path,
                                                                      monkeypatch):
    # (Review, 2026-12-06.) The engine that took it up spent its id today; a replay
    # of that engine's journal spends it in the day the request arrived: the two then
    # forgot it at different rolls.
    path, endpoint = _replace_in_flight_across_a_roll(tmp_path)
    with ThreadedEngine(path) as engine:
        pipeline = engine.service.pipeline
        time.sleep(0.5)
        assert engine.call(lambda: pipeline.orders.used("DEMO1", "R-big"))
        engine.call(lambda: pipeline.roll_day(time.time_ns()))
        live = engine.call(lambda: table_state(pipeline.orders))
    assert ("R-big", None) not in live["ids"]["DEMO1"]      # forgotten with its day
    recovered = seen_at_resume(monkeypatch,
                               lambda pipeline, summary: table_state(pipeline.orders))
    with ThreadedEngine(path):
        assert recovered == [live]



def test_an_id_sent_again_after_its_unanswered_command_takes_the_new_terms(tmp_path,
                                                                            monkeypatch):
    # (Final review, 2026-12-06.) A journal may end after a new order's command and
    # before its report (a torn write): the client, never acknowledged, sends the id
    # again, here with other terms. Recovery kept the first command under the id, and
    # a later restart recreated the order with the terms the client had given up.
    import msgspec

    from engine.journal import JournalReader
    from engine.messages import JournalCommand, JournalPayload

    def terms_of(order):
        return order.qty, order.price
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("AAA", "buy", "3", "45.00", account="DEMO1", cl_ord_id="x")
        report(client, "x", ExecType.NEW)
        client.new_order("AAA", "buy", "1", "44.00", account="DEMO1", cl_ord_id="pad")
        report(client, "pad", ExecType.NEW)
    journal = tmp_path / "journal"
    decoder = msgspec.msgpack.Decoder(JournalPayload)
    records = list(JournalReader(journal).records(1))
    cut = next(i for i, rec in enumerate(records) if rec.kind == 1
               and isinstance(p := rec.decode(decoder), JournalCommand)
               and getattr(p.request, "cl_ord_id", None) == "x") + 1
    with open(records[cut].path, "r+b") as segment:   # the report of x and all after it
        segment.truncate(records[cut].offset)
    (journal / "durable.seq").unlink()   # (as a torn write leaves it: never made durable)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        assert engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "x")) is None
        client.new_order("AAA", "buy", "7", "46.00", account="DEMO1", cl_ord_id="x")
        report(client, "x", ExecType.NEW)
        client.drain(0.3)
        pipeline = engine.service.pipeline
        terms = engine.call(lambda: terms_of(pipeline.orders.find("DEMO1", "x")))
    seen = seen_at_resume(monkeypatch, lambda pipeline, summary: terms_of(
        pipeline.orders.find("DEMO1", "x")))
    with ThreadedEngine(path):
        assert seen == [terms]                      # not 3 at 45.00


def test_the_service_takes_forgotten_orders_out_in_steps_off_the_roll(tmp_path, monkeypatch):
    """The roll forgets at once; the service's tick starts the steps that take the entries
    out (``EngineService._forget_step``, FORGET_STEP a call, the loop free between)."""
    from engine import service as service_module

    monkeypatch.setattr(service_module, "FORGET_STEP", 1)
    steps = []
    real = service_module.EngineService._forget_step
    monkeypatch.setattr(service_module.EngineService, "_forget_step",
                        lambda self: steps.append(1) or real(self))
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        for i in range(5):
            client.new_order("ZZZ", "buy", "1", "1.00", account="DEMO1", cl_ord_id=f"z{i}")
            report(client, f"z{i}", ExecType.REJECTED)
        engine.call(lambda: pipeline.roll_day(time.time_ns()))

        def second_roll():
            pipeline.roll_day(time.time_ns())
            return len(pipeline.orders), len(pipeline.orders.by_id)
        assert engine.call(second_roll) == (0, 5)           # forgotten, not taken out yet
        assert not status(client, "z0").found               # gone before it left the dicts
        deadline = time.monotonic() + 5
        while engine.call(lambda: pipeline.orders.leaving) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.call(lambda: (len(pipeline.orders.by_id), pipeline.orders.ids_held())) \
            == (0, 0)
        assert len(steps) >= 5
