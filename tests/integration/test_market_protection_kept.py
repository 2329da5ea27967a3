"""A collared market buy on a schedule stays held to the collar's edge after a restart.

A market buy under a collar is valued by risk at reference + band and the router takes
nothing above that price (``Order.protect``, tests/integration/test_market_order_protection.py).
A market order on a schedule (TWAP) works across a restart, and recovery rebuilt it
without that hold: its slices after the restart swept the book up to any price, past
what risk had reserved, and took the account's buying power below zero.
"""
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport
from engine.orders import Stage
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


def _answer(client, cl_ord_id, exec_type=None):
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and (exec_type is None or m.exec_type == exec_type), 8)[-1]


def _resting(client, cl_ord_id, side, qty, price):
    client.new_order("AAA", side, qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                     locate=side == "sell_short")
    assert _answer(client, cl_ord_id).exec_type == ExecType.NEW


def test_a_scheduled_market_buy_keeps_its_collar_hold_across_a_restart(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0] + RISK)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        _resting(client, "bid", "buy", "10", "49.00")
        _resting(client, "ask", "sell_short", "1000", "60.00")
        _resting(client, "ask-near", "sell_short", "10", "50.00")
        time.sleep(0.3)  # the venues' books reach the router
        # Reference 49.50, band 5%: valued at 51.97; 100 x 51.97 = 5,197 of 5,500.
        # Its one slice is due well after the restart.
        start = time.time_ns() + 3_000_000_000
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market", strategy="twap", start_time=start,
                         end_time=start + 60_000_000_000, slices=1)
        assert _answer(client, "mkt").exec_type == ExecType.NEW
        pipeline = engine.service.pipeline
        held = engine.call(lambda: pipeline.orders.find("DEMO1", "mkt").protect)
        assert held == 5197
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        order = engine.call(lambda: pipeline.orders.find("DEMO1", "mkt"))
        assert order.stage not in (Stage.CANCELED, Stage.EXPIRED, Stage.REJECTED)
        # Held to the same edge as before the restart.
        assert order.protect == held
        # Its slice takes the 10 at 50.00 and nothing at 60.00 (swept to 60.00, the
        # account paid 5,900 of its 5,500).
        while time.time_ns() < start + 1_500_000_000:
            time.sleep(0.1)
        risk = pipeline.risk
        state = engine.call(lambda: risk.account_state(risk.account_index("DEMO1")))
        assert state["buying_power"] >= 0, state
        assert engine.call(lambda: order.cum_qty) == 10


RISK_REPLACE = RISK.replace('cash = "5500"', 'cash = "5050"')


def test_a_replaced_market_buy_is_held_where_risk_values_its_new_terms(tmp_path):
    """A replace of a scheduled market buy is valued afresh by risk (reference + band at
    the replace); the hold stayed at the edge of the arrival's band. With the market
    lower since, the order filled above its new valuation, past its buying power."""
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0]
                    + RISK_REPLACE)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk = pipeline.risk
        _resting(client, "bid", "buy", "10", "49.00")
        _resting(client, "ask", "sell_short", "1000", "51.00")
        time.sleep(0.3)
        # Reference 50.00, band 5%: 90 valued at 52.50 (4,725 of 5,050).
        start = time.time_ns() + 3_000_000_000
        client.new_order("AAA", "buy", "90", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market", strategy="twap", start_time=start,
                         end_time=start + 60_000_000_000, slices=1)
        assert _answer(client, "mkt").exec_type == ExecType.NEW
        assert engine.call(lambda: pipeline.orders.find("DEMO1", "mkt").protect) == 5250
        # The bid drops to 45.00: reference 48.00, band 2.40.
        client.cancel("bid", account="DEMO2", cl_ord_id="bid-x")
        assert _answer(client, "bid-x").exec_type == ExecType.CANCELED
        _resting(client, "bid-2", "buy", "10", "45.00")
        time.sleep(0.3)
        # 100 valued at 50.40: 5,040 of 5,050.
        client.replace("mkt", account="DEMO1", qty="100", cl_ord_id="mkt-2")
        assert _answer(client, "mkt-2").exec_type == ExecType.REPLACED
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


RISK_NARROW = """
[risk.firm]
throttle_rate = 100000
[risk.accounts.DEMO1]
cash = "450"
collar_bps = 20
[risk.accounts.DEMO2]
cash = "10000000"
allow_short = true
"""


def test_a_market_buy_under_a_collar_narrower_than_a_tick_is_held_at_the_reference(tmp_path):
    """A collar of 20 bps on a 4.01 reference is 0.8 of a tick, which risk rounds down to
    none: it values a market buy at the reference itself. The engine held a market buy
    only when its valuation was above the reference, so this one, collared, swept the
    book: past the collar and past the account's buying power."""
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0]
                    + RISK_NARROW)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk = pipeline.risk
        _resting(client, "bid", "buy", "10", "4.00")
        _resting(client, "ask", "sell_short", "10", "4.02")
        _resting(client, "ask-far", "sell_short", "1000", "6.00")
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

    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0]
                    + RISK_REPLACE)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        for cl_ord_id, side, qty, price in (("bid", "buy", "10", "49.00"),
                                            ("ask", "sell_short", "1000", "51.00")):
            client.new_order("AAA", side, qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                             locate=side == "sell_short", time_in_force="gtc")
            assert _answer(client, cl_ord_id).exec_type == ExecType.NEW
        time.sleep(0.3)
        start = time.time_ns() + 8_000_000_000
        client.new_order("AAA", "buy", "90", None, account="DEMO1", cl_ord_id="mkt",
                         ord_type="market", strategy="twap", start_time=start,
                         end_time=start + 60_000_000_000, slices=1, time_in_force="gtc")
        assert _answer(client, "mkt").exec_type == ExecType.NEW
        engine.call(lambda: pipeline.roll_day(time.time_ns()))
        wait_for_checkpointer(engine)
        client.cancel("bid", account="DEMO2", cl_ord_id="bid-x")
        assert _answer(client, "bid-x").exec_type == ExecType.CANCELED
        _resting(client, "bid-2", "buy", "10", "45.00")
        time.sleep(0.3)
        client.replace("mkt", account="DEMO1", qty="100", cl_ord_id="mkt-2")
        assert _answer(client, "mkt-2").exec_type == ExecType.REPLACED
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
