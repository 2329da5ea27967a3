"""A restart leaves risk no reference price that the market did not quote.

Recovery values each replayed order at the reference it had live, and left the
last of them in place: an engine restarted within ``max_reference_age_ms``
accepted a market order it had refused (NO_REFERENCE_PRICE) just before,
valued at a resting bid's limit, and judged collared limits against it.
"""
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, RejectReason
from tests.integration.engine_harness import ThreadedEngine, engine_config


def answer(client, cl_ord_id):
    """The first report for ``cl_ord_id``."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def test_a_restart_leaves_no_reference_price_the_market_did_not_quote(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        # One far bid and no offer: no two-sided quote, so no reference price.
        client.new_order("AAA", "buy", "10", "1.00", account="DEMO2", cl_ord_id="bid")
        assert answer(client, "bid").exec_type == ExecType.NEW
        client.new_order("AAA", "buy", "10", None, account="DEMO2", cl_ord_id="m1")
        assert answer(client, "m1").reject_reason == RejectReason.NO_REFERENCE_PRICE
    with ThreadedEngine(path), Client(endpoint) as client:  # replays the bid, well within 5 s
        client.new_order("AAA", "buy", "10", None, account="DEMO2", cl_ord_id="m2")
        refused = answer(client, "m2")
        assert (refused.exec_type, refused.reject_reason) == \
            (ExecType.REJECTED, RejectReason.NO_REFERENCE_PRICE), refused
