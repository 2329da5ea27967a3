"""A market buy under a collar is held to the band's upper edge, where risk valued it.

Risk values a market order at reference + band, "the highest price it may fill
at" while the venue honours the band (docs/risk.md). Nothing held the engine's
own router to it: a market buy swept up the book past the band, spent more
than risk had reserved and took the account's buying power below zero (audit:
valued at 47.25 x 100, filled 10 at 50 and 90 at 60, buying power -900).
"""
import time

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


def resting(client, cl_ord_id, side, qty, price):
    client.new_order("AAA", side, qty, price, account="DEMO2", cl_ord_id=cl_ord_id,
                     locate=side == "sell_short")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id, 5)


def test_a_market_buy_takes_nothing_above_the_collar_and_its_remainder_is_canceled(tmp_path):
    port = free_port()
    path = tmp_path / "engine.toml"
    # (the harness's accounts, DEMO1's cash and collar changed)
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0] + RISK)
    with ThreadedEngine(path) as engine, Client(f"tcp://127.0.0.1:{port}") as client:
        resting(client, "bid", "buy", "10", "49.00")
        resting(client, "ask-1", "sell_short", "10", "50.00")
        resting(client, "ask-2", "sell_short", "1000", "60.00")
        time.sleep(0.3)  # the venues' books reach the router
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
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal").split("[risk.firm]")[0] + RISK)
    endpoint = f"tcp://127.0.0.1:{port}"
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        resting(client, "bid", "buy", "10", "49.00")
        resting(client, "ask-1", "sell_short", "10", "50.00")
        resting(client, "ask-2", "sell_short", "1000", "60.00")
        time.sleep(0.3)  # the venues' books reach the router
        client.new_order("AAA", "buy", "100", None, account="DEMO1", cl_ord_id="twap",
                         ord_type="market", strategy="twap",
                         end_time=time.time_ns() + 4 * 10**9, slices=8)
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "twap"
                          and m.cum_qty == "10", 5)
        pipeline = engine.service.pipeline
        live = engine.call(lambda: pipeline.orders.find("DEMO1", "twap").protect)
    assert live == 5197
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
