"""A market buy under a collar is held to the band's upper edge, where risk valued it.

Risk values a market order at reference + band, "the highest price it may fill
at" while the venue honours the band (docs/risk.md). Nothing held the engine's
own router to it: a market buy swept up the book past the band, spent more
than risk had reserved and took the account's buying power below zero (audit:
valued at 47.25 x 100, filled 10 at 50 and 90 at 60, buying power -900).

The hold must also survive what comes after the arrival: a restart (a market order on
a schedule works on, and recovery rebuilt it unheld), a replace that re-values the
order, a restart from a checkpoint after such a replace, and a collar narrower than
one tick (valued at the reference itself).
"""
import time

import pytest

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

RISK = """
[risk.firm]
throttle_rate = 100000
[risk.accounts.DEMO1]
cash = "5500"
collar_bps = 500
[risk.accounts.DEMO2]
cash = "10000000"
allow_short = true
"""


def endpoint_of(path) -> str:
    """The plaintext endpoint the engine configuration at ``path`` serves on."""
    return path.read_text().split('plaintext_endpoints = ["')[1].split('"')[0]


def write_config(tmp_path, risk: str = RISK) -> tuple:
    """The harness's engine configuration with ``risk`` for its risk tables (its accounts,
    DEMO1's cash and collar changed); returns ``(path, endpoint)``."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0] + risk)
    return path, f"tcp://127.0.0.1:{port}"


def answer(client, cl_ord_id, exec_type=None):
    """The next report of ``cl_ord_id`` (of ``exec_type``, if given)."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and (exec_type is None or m.exec_type == exec_type), 8)[-1]


def resting(client, cl_ord_id, side, qty, price):
    """A DEMO2 order that rests (acknowledged NEW)."""
    client.new_order("AAA", side, qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                     locate=side == "sell_short")
    assert answer(client, cl_ord_id).exec_type == ExecType.NEW


def book_around_fifty(client):
    """A bid of 10 at 49.00, offers of 10 at 50.00 and 1,000 at 60.00 (reference 49.50: a
    5% band values a market buy at 51.97), in the router's view."""
    resting(client, "bid", "buy", "10", "49.00")
    resting(client, "ask-1", "sell_short", "10", "50.00")
    resting(client, "ask-2", "sell_short", "1000", "60.00")
    time.sleep(0.3)  # the venues' books reach the router


def test_a_market_buy_takes_nothing_above_the_collar_and_its_remainder_is_canceled(tmp_path):
    path, endpoint = write_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        book_around_fifty(client)
        # Reference 49.50, band 5%: valued at 51.97 (ticks round down), 100 x 51.97 = 5197.
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market")
        done = client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "mkt"
                                 and m.exec_type == ExecType.CANCELED, 5)[-1]
        assert (done.cum_qty, done.avg_px) == ("10", "50")
        assert done.text == ("unfilled remainder of a market order: nothing more at or below "
                             "51.97, the collar's upper edge")
        risk = engine.service.pipeline.risk
        state = engine.call(lambda: risk.account_state(risk.account_index("DEMO1")))
        assert state["buying_power"] >= 0, state


def test_a_scheduled_market_buy_is_held_to_the_collar_after_a_restart_too(tmp_path, monkeypatch):
    # The hold (Order.protect) was set on arrival and nowhere in the journal: a restarted
    # engine routed the remainder of a TWAP market buy with no limit, its next slices swept
    # 90 at 60.00 (valued at 51.97) and took the account's buying power below zero.
    from tests.integration.engine_harness import seen_at_resume
    path, (live, _) = twap_left_working(tmp_path, window_s=4, slices=8)
    assert live == 5197
    endpoint = endpoint_of(path)
    seen = seen_at_resume(monkeypatch, lambda pipeline, recovered: (
        pipeline.orders.find("DEMO1", "twap").protect,
        pipeline.orders.find("DEMO1", "twap") in pipeline.orders.working()))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline, risk = engine.service.pipeline, engine.service.pipeline.risk
        deadline = time.monotonic() + 10
        while engine.call(lambda: not pipeline.orders.find("DEMO1", "twap").done):
            assert time.monotonic() < deadline, "the TWAP did not end"
            time.sleep(0.1)
        order = engine.call(lambda: pipeline.orders.find("DEMO1", "twap"))
        assert order.cum_qty == 10, "filled above the collar's upper edge after the restart"
        state = engine.call(lambda: risk.account_state(risk.account_index("DEMO1")))
        assert state["buying_power"] >= 0, state
    assert seen == [(live, True)]  # (and it went back to the market: its window was open)


RISK_REPLACE = RISK.replace('cash = "5500"', 'cash = "5050"')


def twap_market_buy(client, in_s: float, **keys) -> int:
    """DEMO1's TWAP market buy "mkt" of 90, its one slice due in ``in_s`` seconds;
    returns when (ns)."""
    start = time.time_ns() + int(in_s * 1e9)
    client.new_order("AAA", "buy", "90", None, account="DEMO1", cl_ord_id="mkt",
                     ord_type="market", strategy="twap", start_time=start,
                     end_time=start + 60_000_000_000, slices=1, **keys)
    assert answer(client, "mkt").exec_type == ExecType.NEW
    return start


def bid_drops_to_45(client):
    """The bid of 10 at 49.00 ("bid") canceled, one at 45.00 in its place."""
    client.cancel("bid", account="DEMO2", cl_ord_id="bid-x")
    assert answer(client, "bid-x").exec_type == ExecType.CANCELED
    resting(client, "bid-2", "buy", "10", "45.00")
    time.sleep(0.3)


def test_a_replaced_market_buy_is_held_where_risk_values_its_new_terms(tmp_path):
    """A replace of a scheduled market buy is valued afresh by risk (reference + band at
    the replace); the hold stayed at the edge of the arrival's band. With the market
    lower since, the order filled above its new valuation, past its buying power."""
    path, endpoint = write_config(tmp_path, RISK_REPLACE)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk = pipeline.risk
        resting(client, "bid", "buy", "10", "49.00")
        resting(client, "ask", "sell_short", "1000", "51.00")
        time.sleep(0.3)
        # Reference 50.00, band 5%: 90 valued at 52.50 (4,725 of 5,050).
        start = twap_market_buy(client, 3)
        assert engine.call(lambda: pipeline.orders.find("DEMO1", "mkt").protect) == 5250
        # The bid drops to 45.00: reference 48.00, band 2.40.
        bid_drops_to_45(client)
        # 100 valued at 50.40: 5,040 of 5,050.
        client.replace("mkt", account="DEMO1", qty="100", cl_ord_id="mkt-2")
        assert answer(client, "mkt-2").exec_type == ExecType.REPLACED
        order = engine.call(lambda: pipeline.orders.find("DEMO1", "mkt-2"))
        assert engine.call(lambda: risk.value_price(order.order_id)) == 5040
        assert order.protect == 5040
        # Its slice finds only the offer at 51.00, above 50.40: it takes none of it
        # (held at 52.50 it bought 100 at 51.00: 5,100 of the 5,050).
        while time.time_ns() < start + 1_500_000_000:
            time.sleep(0.1)
        state = engine.call(lambda: risk.account_state(risk.account_index("DEMO1")))
        assert state["buying_power"] >= 0, state
        assert engine.call(lambda: order.cum_qty) == 0


RISK_NARROW = RISK.replace('cash = "5500"', 'cash = "450"').replace('collar_bps = 500',
                                                                   'collar_bps = 20')


def test_a_market_buy_under_a_collar_narrower_than_a_tick_is_held_at_the_reference(tmp_path):
    """A collar of 20 bps on a 4.01 reference is 0.8 of a tick, which risk rounds down to
    none: it values a market buy at the reference itself. The engine held a market buy
    only when its valuation was above the reference, so this one, collared, swept the
    book: past the collar and past the account's buying power."""
    path, endpoint = write_config(tmp_path, RISK_NARROW)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk = pipeline.risk
        resting(client, "bid", "buy", "10", "4.00")
        resting(client, "ask", "sell_short", "10", "4.02")
        resting(client, "ask-far", "sell_short", "1000", "6.00")
        time.sleep(0.3)
        # Reference 4.01, band 0: 100 valued at 4.01 (401 of 450).
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market")
        done = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                 and m.cl_ord_id == "mkt"
                                 and m.exec_type in (ExecType.CANCELED, ExecType.FILL), 8)[-1]
        # Nothing at or below 4.01 is offered: it takes nothing (unheld it bought 10 at
        # 4.02 and 90 at 6.00, 580.20 of the 450).
        assert done.cum_qty == "0", done
        assert done.text == ("unfilled remainder of a market order: nothing more at or below "
                             "4.01, the collar's upper edge")
        state = engine.call(lambda: risk.account_state(risk.account_index("DEMO1")))
        assert state["buying_power"] >= 0, state


def test_a_replace_after_a_checkpoint_moves_the_hold_the_restart_gives_back(tmp_path,
                                                                            monkeypatch):
    """A restart from a checkpoint (taken at a day roll) and the journal after it, where a
    replace re-valued the order: the hold comes back at the replace's valuation, as live."""
    from engine import checkpoint
    from tests.integration.test_checkpoint import wait_for_checkpointer

    path, endpoint = write_config(tmp_path, RISK_REPLACE)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        for cl_ord_id, side, qty, price in (("bid", "buy", "10", "49.00"),
                                            ("ask", "sell_short", "1000", "51.00")):
            client.new_order("AAA", side, qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                             locate=side == "sell_short", time_in_force="gtc")
            assert answer(client, cl_ord_id).exec_type == ExecType.NEW
        time.sleep(0.3)
        twap_market_buy(client, 8, time_in_force="gtc")
        engine.call(lambda: pipeline.roll_day(time.time_ns()))
        wait_for_checkpointer(engine)
        bid_drops_to_45(client)
        client.replace("mkt", account="DEMO1", qty="100", cl_ord_id="mkt-2")
        assert answer(client, "mkt-2").exec_type == ExecType.REPLACED
        assert engine.call(lambda: pipeline.orders.find("DEMO1", "mkt-2").protect) == 5040
    loaded = []
    load_newest = checkpoint.load_newest

    def recording(replay, journal_dir):
        found = load_newest(replay, journal_dir)
        loaded.append(found)
        return found
    monkeypatch.setattr(checkpoint, "load_newest", recording)
    with ThreadedEngine(path) as engine:
        assert loaded and loaded[0] is not None  # (from the checkpoint, then the journal)
        pipeline = engine.service.pipeline
        order = engine.call(lambda: pipeline.orders.find("DEMO1", "mkt-2"))
        assert engine.call(lambda: pipeline.risk.value_price(order.order_id)) == 5040
        assert order.protect == 5040


def under_grid(path, tmp_path, tick: str, lot: str = "1"):
    """Rewrite the engine configuration at ``path`` onto a copy of its simulator file
    whose instruments have ``tick`` and ``lot`` for their tick and lot sizes."""
    from tests.integration.engine_harness import QUIET_SIM
    sim = tmp_path / f"sim-{tick}-{lot}.toml"
    sim.write_text(QUIET_SIM.read_text().replace('tick_size = "0.01"', f'tick_size = "{tick}"')
                   .replace('lot_size = "1"', f'lot_size = "{lot}"'))
    path.write_text(path.read_text().replace(str(QUIET_SIM), str(sim)))


def twap_left_working(tmp_path, window_s: int = 60, slices: int = 60) -> tuple:
    """An engine (stopped on return) whose journal holds DEMO1's TWAP market buy "twap" of
    100 under the collar (``slices`` over ``window_s`` seconds), working after its first
    fill, with the book of :func:`book_around_fifty`; returns the configuration's path
    and, as the engine had them, the order's hold and the ticks of the resting bid's
    children; its endpoint is the configuration's too (:func:`endpoint_of`)."""
    path, endpoint = write_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        book_around_fifty(client)
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="twap",
                         ord_type="market", strategy="twap",
                         end_time=time.time_ns() + window_s * 10**9, slices=slices)
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "twap"
                          and m.cum_qty != "0", 5)
        orders = engine.service.pipeline.orders
        live = engine.call(lambda: (orders.find("DEMO1", "twap").protect,
                                    [c.price for c in orders.find("DEMO2", "bid").children.values()]))
    return path, live


@pytest.mark.parametrize("tick, lot, expected", [
    ("0.005", "1", (10394, {(9800, 10)}, 9800)),   # 51.97 and 49.00 in ticks of 0.005
    ("0.01", "0.5", (5197, {(4900, 20)}, 4900)),   # 10 in lots of 0.5
])
def test_a_restart_under_another_grid_reads_the_journals_ticks_in_the_grid_they_were_written_in(
        tmp_path, monkeypatch, tick, lot, expected):
    # The journal keeps an order's valuation and hold (JournalValuation) and its children
    # (JournalChildren) in ticks and lots, where its messages hold decimals. Restarted under
    # a tick of 0.005, the replay read the hold of 51.97 (5,197 ticks of 0.01) as 5,197
    # ticks of 0.005, 25.985, and the resting bid's child at 49.00 as 24.50 (under lots of
    # 0.5, its 10 lots as 5). The engine now records the grids its records count in
    # (JournalUnits) and converts them.
    from tests.integration.engine_harness import seen_at_resume
    path, live = twap_left_working(tmp_path)
    assert live == (5197, [4900])
    under_grid(path, tmp_path, tick, lot)
    seen = seen_at_resume(monkeypatch, lambda pipeline, recovered: (
        pipeline.orders.find("DEMO1", "twap").protect,
        {(c.price, c.qty) for c in pipeline.orders.find("DEMO2", "bid").children.values()},
        pipeline.orders.find("DEMO2", "bid").price))
    with ThreadedEngine(path):
        pass
    assert seen == [expected]
    # A third start under the same grid reads the records of both runs, each in its own
    # (the bid's child of the second run too: it went back to the market there).
    seen.clear()
    with ThreadedEngine(path):
        pass
    assert seen == [expected]


def test_a_restart_under_a_tick_the_journals_ticks_do_not_fit_is_refused_naming_the_record(
        tmp_path):
    # Under a tick of 0.05 the hold of 51.97 has no price: the engine does not start
    # (it would hold the order somewhere else than risk valued it), and says why.
    from engine.recovery import RecoveryError
    path, _ = twap_left_working(tmp_path)
    under_grid(path, tmp_path, "0.05")
    with pytest.raises(RecoveryError, match=r"journal record \d+ \(AAA\): a price of 5197 of "
                       r"the journal's tick_size is not a whole number of the configuration's"):
        with ThreadedEngine(path):
            pass
