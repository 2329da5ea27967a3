"""Risk's counters after a restart are the ones the engine had before it.

Recovery replays the journal's accepted orders through risk with the limits taken out
(``recovery._permissive``): the decision was taken when the order arrived. It kept each
account's ``cash`` and ``credit_limit`` though, so the buying-power check still judged
every replayed order under the file read at the restart. An account whose cash a
``ReloadLimits`` had cut while its orders worked (what a risk officer does to stop new
buying) had those orders refused at the replay: logged, and left out of risk. The engine
still worked them at the venues while risk held no reservation, no working count, and,
once they filled, no position (``on_fill`` of an order risk does not hold is refused).
"""
from engine.client import Client
from engine.messages import AdminReply, ExecType, ExecutionReport, ReloadLimits
from engine.orders import Stage
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

DEMO1 = '[risk.accounts.DEMO1]\ncash = "10000000"\nallow_short = true\n'
CUT = '[risk.accounts.DEMO1]\ncash = "1000"\nallow_short = true\n'


def _report(client, cl_ord_id: str) -> ExecutionReport:
    return client.recv_until(lambda m: isinstance(m, ExecutionReport)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def _risk_state(engine, cl_ord_id: str):
    """DEMO1's money counters, its AAA cell and the order's working record at risk."""
    pipeline = engine.service.pipeline

    def read():
        risk = pipeline.risk
        order = pipeline.orders.find("DEMO1", cl_ord_id)
        a, i = risk.account_index("DEMO1"), risk.instrument_index("AAA")
        state = risk.account_state(a)
        working = risk.working_order(order.order_id)
        return ({k: state[k] for k in ("cash_flow", "reserved", "short_basis", "open_notional",
                                       "open_orders")},
                risk.exposure(a, i),
                None if working is None else {k: working[k] for k in (
                    "qty", "leaves", "price", "value_price", "side")},
                order.stage)
    return engine.call(read)


def test_orders_accepted_before_a_cash_cut_keep_their_exposure_after_a_restart(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    text = config_text(port, tmp_path / "journal")
    assert DEMO1 in text
    path.write_text(text)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        # 1,000 AAA at 48.00 (the market is at 50.00): it rests, 48,000 reserved.
        client.new_order("AAA", "buy", "1000", "48.00", account="DEMO1", cl_ord_id="b1")
        assert _report(client, "b1").exec_type == ExecType.NEW
        # Risk cuts the account's cash: no new buying, the working order stays.
        path.write_text(text.replace(DEMO1, CUT))
        client.send(ReloadLimits(req_id="cut"))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="b2")
        assert _report(client, "b2").exec_type == ExecType.REJECTED
        before = _risk_state(engine, "b1")
    money, cell, working, stage = before
    assert working is not None and working["leaves"] == 1000 and stage == Stage.ROUTED
    assert money["reserved"] == 1000 * 4800 * 100 and money["open_orders"] == 1
    assert cell["open_buy"] == 1000 and cell["open_orders"] == 1

    with ThreadedEngine(path) as engine:
        after = _risk_state(engine, "b1")
    # The order works again after the restart, and risk holds it exactly as before.
    assert after == before
