"""An instrument has one number in the risk engine, the router and the pipeline.

A ``[risk.instruments.BBB]`` table (limits for the second symbol only) made the
risk engine number BBB first; the pipeline took risk's number for the router
and the market too, so AAA's orders traded in BBB's books (and the other way
round), and each symbol's price collar was judged against the other's market.
"""
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, RejectReason
from tests.integration.engine_harness import serving

BBB_LIMITS = """
[risk.instruments.BBB]
collar_bps = 1000
"""


def first_report(client, cl_ord_id):
    """The first report for ``cl_ord_id`` that is not its NEW."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and m.exec_type != ExecType.NEW, 5)[-1]


def test_a_risk_table_for_one_symbol_keeps_each_order_on_its_own_instrument(tmp_path):
    with serving(tmp_path, extra=BBB_LIMITS) as (_, endpoint), Client(endpoint) as client:
        # A market in AAA only: 49.00 bid, 51.00 offer; BBB has none.
        client.new_order("AAA", "sell_short", "100", "51.00", account="DEMO2", cl_ord_id="ask",
                         locate=True)
        client.new_order("AAA", "buy", "100", "49.00", account="DEMO2", cl_ord_id="bid")
        for cl_ord_id in ("ask", "bid"):
            client.recv_until(lambda m, c=cl_ord_id: isinstance(m, ExecutionReport)
                              and m.cl_ord_id == c and m.exec_type == ExecType.NEW, 5)
        client.drain(0.3)  # resting at the venues
        client.new_order("AAA", "buy", "10", "51.00", account="DEMO1", cl_ord_id="a1")
        fill = first_report(client, "a1")
        assert (fill.exec_type, fill.symbol, fill.last_px, fill.last_qty) == \
            (ExecType.FILL, "AAA", "51", "10"), fill
        # BBB's collar has no market to be judged against (not AAA's 50.00).
        client.new_order("BBB", "buy", "10", "52.00", account="DEMO1", cl_ord_id="b1")
        refused = first_report(client, "b1")
        assert (refused.exec_type, refused.reject_reason) == \
            (ExecType.REJECTED, RejectReason.NO_REFERENCE_PRICE), refused
