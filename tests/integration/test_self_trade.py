"""Self-trade prevention: the order the venue's STP cancels is canceled, saying why.

Under CANCEL_OLDEST (and CANCEL_BOTH) the venue cancels the resting order's child when an
order of the same account would trade with it; the router took that for an ordinary
cancel and posted the child again at once, so the order was never canceled nor reported
and came back to meet its own account's orders.
"""
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply
from ext.types import OrdStatus, StpMode
from tests.integration.engine_harness import acked_at_venue, serving, slow_sim


def reports(client, cl_ord_id, until):
    return [m for m in client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                         and m.cl_ord_id == cl_ord_id
                                         and m.exec_type == until, 5)
            if isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id]


def test_the_resting_order_cancel_oldest_cancels_is_canceled_and_not_posted_again(tmp_path):
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        client.new_order("AAA", "sell_short", "10", "50.00", account="DEMO1", cl_ord_id="old",
                         locate=True, stp=int(StpMode.CANCEL_OLDEST))
        acked_at_venue(client, "old")  # resting at its venue when "new" reaches it
        client.new_order("AAA", "buy", "10", "50.00", account="DEMO1", cl_ord_id="new",
                         time_in_force="ioc", stp=int(StpMode.CANCEL_OLDEST))
        canceled = reports(client, "old", ExecType.CANCELED)[-1]
        assert canceled.text.startswith("canceled by self-trade prevention at ")
        assert canceled.cum_qty == "0"
        client.drain(0.3)
        client.status("old", account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.report.ord_status == OrdStatus.CANCELED
        assert status.children and all(child.done for child in status.children)


def test_under_the_default_mode_the_incoming_order_is_canceled_saying_why(tmp_path):
    """CANCEL_NEWEST (the simulator's default): the incoming order ends canceled for self-trade
    prevention, not "canceled by the router: NO_LIQUIDITY"; the resting one works on."""
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        client.new_order("AAA", "sell_short", "10", "50.00", account="DEMO1", cl_ord_id="rest",
                         locate=True)
        acked_at_venue(client, "rest")
        client.new_order("AAA", "buy", "10", "50.00", account="DEMO1", cl_ord_id="cross")
        canceled = reports(client, "cross", ExecType.CANCELED)[-1]
        assert canceled.text.startswith("canceled by self-trade prevention at ")
        client.status("rest", account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.report.ord_status == OrdStatus.NEW
        assert [c.done for c in status.children] == [False]


def sweep_past_own_bid(client) -> None:
    """DEMO2 bids 10 at 49.99 and DEMO1 10 at 50.00, both resting at their venues
    (acknowledged: the sweep's own read of the books comes after that, the one that
    shows them to the router); then DEMO1's IOC sells 10 down to 49.99 under
    CANCEL_OLDEST, past its own bid."""
    client.new_order("AAA", "buy", "10", "49.99", account="DEMO2", cl_ord_id="other")
    client.new_order("AAA", "buy", "10", "50.00", account="DEMO1", cl_ord_id="own")
    acked_at_venue(client, "other", account="DEMO2")
    acked_at_venue(client, "own")
    client.new_order("AAA", "sell_short", "10", "49.99", account="DEMO1", cl_ord_id="ioc",
                     locate=True, time_in_force="ioc", stp=int(StpMode.CANCEL_OLDEST))


def test_an_ioc_sweeping_its_own_bid_under_cancel_oldest_reaches_the_third_party_bid(tmp_path):
    """The router hides the account's own resting lots from a CANCEL_OLDEST sweep.

    It used to price the sweep's child at the own bid's level: STP removed that bid, the
    child found nothing at its price, and the IOC ended NO_LIQUIDITY with a third party's
    bid one tick lower, inside its limit, untouched."""
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        sweep_past_own_bid(client)
        seen = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                 and m.cl_ord_id == "own" and m.exec_type == ExecType.CANCELED, 5)
        seen += client.drain(0.3)
        last = {m.cl_ord_id: m for m in seen if isinstance(m, ExecutionReport)}
        assert (last["ioc"].ord_status, last["ioc"].cum_qty, last["ioc"].avg_px) == (
            OrdStatus.FILLED, "10", "49.99")
        assert last["own"].text.startswith("canceled by self-trade prevention at ")
        assert (last["other"].ord_status, last["other"].last_px) == (OrdStatus.FILLED, "49.99")


def test_the_sweep_skips_its_own_bid_when_the_engine_read_the_book_before_its_ack(tmp_path):
    """The own bid is hidden from the sweep however the engine's reads of the book fell.

    The router hides a resting child only from a depth read after its venue's ack (a read
    before might not show it). The engine reads a book again only when it changed: a read
    between the child reaching the venue and its ack reaching the engine (a tick there)
    was the last one, the ack made none, and the sweep priced at the own bid: STP took
    the bid and the IOC ended NO_LIQUIDITY, the case of the test above. Venues 120 ms
    away put a tick (every 50 ms at most) in that window every time; the router's ack
    timeout is raised to match."""
    extra = "[router]\nack_timeout_ns = 2_000_000_000\n"
    with serving(tmp_path, sim=slow_sim(tmp_path, 120_000), extra=extra) as (_, endpoint), \
            Client(endpoint) as client:
        sweep_past_own_bid(client)
        seen = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                 and m.cl_ord_id == "ioc" and m.ord_status in (
                                     OrdStatus.FILLED, OrdStatus.CANCELED), 5)
        last = {m.cl_ord_id: m for m in seen if isinstance(m, ExecutionReport)}
        assert (last["ioc"].ord_status, last["ioc"].cum_qty, last["ioc"].avg_px, last["ioc"].text
                ) == (OrdStatus.FILLED, "10", "49.99", None)
