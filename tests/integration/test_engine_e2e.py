"""End to end over real sockets: a client, a running engine on simulated venues, exact reports.

The simulator runs with no background flow, so the only liquidity is what
the test's own orders put there and every report is known in advance.
"""
import time

import msgspec
import pytest

from engine.client import Client
from engine.messages import (AdminReply, BulkNewOrders, ExecType, ExecutionReport, KillSwitch,
                             OrderStatusReply, OrdStatus, Reject, TradeHistoryReply,
                             check_report)
from tests.integration.engine_harness import (ThreadedEngine, at_venues, config_text, engine_config,
                                              free_port)


@pytest.fixture()
def engine(tmp_path):
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    with ThreadedEngine(path) as eng:
        eng.endpoint = f"tcp://127.0.0.1:{port}"
        yield eng


@pytest.fixture()
def client(engine):
    with Client(engine.endpoint) as c:
        yield c


_seen: dict[int, list] = {}


def reports_until(client, cl_ord_id, exec_type, timeout=5.0):
    """Execution reports for ``cl_ord_id`` up to the first one of ``exec_type``.

    Reports for other orders that arrive meanwhile are kept for later calls
    (the buyer's and the seller's reports of one trade interleave).
    """
    box = _seen.setdefault(id(client), [])

    def wanted(m):
        return isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id

    def match():
        for k, m in enumerate(box):
            if wanted(m) and m.exec_type == exec_type:
                out = [x for x in box[:k + 1] if wanted(x)]
                box[:] = [x for x in box[:k + 1] if not wanted(x)] + box[k + 1:]
                return out
        return None
    deadline = time.monotonic() + timeout
    while (out := match()) is None:
        box.append(client.recv(max(0.0, deadline - time.monotonic())))
    for r in out:
        assert check_report(r) is None
    return out


def cross(engine, client, tag: str) -> None:
    """DEMO2 rests a short sale of 10 BBB at 120.00, DEMO1 buys it: one fill each side."""
    client.new_order("BBB", "sell_short", "10", "120.00", account="DEMO2", cl_ord_id=f"s{tag}",
                     locate=True)
    reports_until(client, f"s{tag}", ExecType.NEW)
    at_venues(engine, "BBB", ask=12000)
    client.new_order("BBB", "buy", "10", "120.00", account="DEMO1", cl_ord_id=f"b{tag}")
    reports_until(client, f"b{tag}", ExecType.FILL)


def summary(reports):
    return [(r.exec_type, r.ord_status, r.qty, r.cum_qty, r.leaves_qty, r.last_qty, r.last_px)
            for r in reports]


def test_passive_then_marketable_trade_exactly(engine, client):
    client.new_order("AAA", "sell_short", "100", "50.10", account="DEMO2", cl_ord_id="s1",
                     locate=True)
    assert summary(reports_until(client, "s1", ExecType.NEW)) == [
        (ExecType.NEW, OrdStatus.NEW, "100", "0", "100", None, None)]
    at_venues(engine, "AAA", ask=5010)
    client.new_order("AAA", "buy", "60", "50.20", account="DEMO1", cl_ord_id="b1")
    buyer = reports_until(client, "b1", ExecType.FILL)
    assert summary(buyer) == [
        (ExecType.NEW, OrdStatus.NEW, "60", "0", "60", None, None),
        (ExecType.FILL, OrdStatus.FILLED, "60", "60", "0", "60", "50.1")]
    assert buyer[-1].avg_px == "50.1" and buyer[-1].venue
    seller = reports_until(client, "s1", ExecType.PARTIAL_FILL)
    assert summary(seller) == [
        (ExecType.PARTIAL_FILL, OrdStatus.PARTIALLY_FILLED, "100", "60", "40", "60", "50.1")]
    assert seller[-1].venue == buyer[-1].venue


@pytest.mark.parametrize("dark_min_qty, dark_lots", [(6, 0), (5, 5), (0, 5)])
def test_dark_ping_minimum_quantity_reaches_the_venue(tmp_path, dark_min_qty, dark_lots):
    """The router's dark ping carries [router] dark_min_qty to the venue: with 5 lots
    resting at the midpoint pool, a minimum of 6 trades nothing there (all 10 lots on
    the lit book), a minimum of 5 (or none) takes the 5 at the mid and the rest on the lit
    book."""
    from ext.types import Side
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal",
                                extra=f"[router]\ndark_min_qty = {dark_min_qty}\n"))
    with ThreadedEngine(path) as eng, Client(f"tcp://127.0.0.1:{port}") as client:
        client.new_order("AAA", "sell_short", "100", "50.02", account="DEMO2", cl_ord_id="ask",
                         locate=True)
        client.new_order("AAA", "buy", "100", "49.98", account="DEMO2", cl_ord_id="bid")
        reports_until(client, "ask", ExecType.NEW)
        reports_until(client, "bid", ExecType.NEW)
        at_venues(eng, "AAA", bid=4998, ask=5002)
        market = eng.service.venues.market
        pool = eng.call(lambda: market.submit("MIDX", "AAA", Side.SELL, 5, 0, account=77))
        time.sleep(0.05)  # past the pool's latency: the 5 lots rest at the mid
        client.new_order("AAA", "buy", "10", "50.02", account="DEMO1", cl_ord_id="take",
                         time_in_force=3, strategy="dark_first")
        fills = [r for r in reports_until(client, "take", ExecType.FILL)
                 if r.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL)]
        at_mid = sum(int(f.last_qty) for f in fills if f.last_px == "50")
        assert at_mid == dark_lots
        assert sum(int(f.last_qty) for f in fills if f.last_px == "50.02") == 10 - dark_lots
        assert fills[-1].venue != "MIDX" and fills[-1].cum_qty == "10"
        assert pool > 0


def test_cancel_and_replace(client):
    client.new_order("AAA", "buy", "100", "49.00", account="DEMO1", cl_ord_id="p1")
    reports_until(client, "p1", ExecType.NEW)
    client.replace("p1", account="DEMO1", qty="150", price="49.05", cl_ord_id="p2")
    rep = reports_until(client, "p2", ExecType.REPLACED)[-1]
    assert (rep.orig_cl_ord_id, rep.qty, rep.leaves_qty, rep.price) == ("p1", "150", "150", "49.05")
    client.cancel("p2", account="DEMO1", cl_ord_id="p3")
    done = reports_until(client, "p3", ExecType.CANCELED)[-1]
    assert (done.orig_cl_ord_id, done.ord_status, done.cum_qty, done.leaves_qty) == \
        ("p2", OrdStatus.CANCELED, "0", "0")
    # Too late: the order is done.
    client.cancel("p3", account="DEMO1", cl_ord_id="p4")
    late = reports_until(client, "p4", ExecType.REJECTED)[-1]
    # As FIX's OrderCancelReject: the refused request's id, the order's as orig.
    assert (late.reject_name, late.orig_cl_ord_id, late.ord_status, late.order_id) == \
        ("TOO_LATE_TO_CANCEL", "p3", OrdStatus.CANCELED, rep.order_id)


def test_a_canceled_order_named_by_any_of_its_ids_is_too_late_to_cancel(client):
    # A completed Cancel gives the order the cancel's id. A second cancel under the id
    # the client gave the order was refused UNKNOWN_CL_ORD_ID, "it was replaced", with
    # no state: it was never replaced, and a done order is FIX's "too late".
    client.new_order("AAA", "buy", "100", "49.00", account="DEMO1", cl_ord_id="tl1")
    reports_until(client, "tl1", ExecType.NEW)
    client.replace("tl1", account="DEMO1", qty="120", cl_ord_id="tl2")
    reports_until(client, "tl2", ExecType.REPLACED)
    client.cancel("tl2", account="DEMO1", cl_ord_id="tl3")
    reports_until(client, "tl3", ExecType.CANCELED)
    for name, request in (("tl2", client.cancel), ("tl1", client.cancel), ("tl2", client.replace)):
        extra = {"qty": "90"} if request == client.replace else {}
        request(name, account="DEMO1", cl_ord_id=f"{name}-again-{len(extra)}", **extra)
        late = reports_until(client, f"{name}-again-{len(extra)}", ExecType.REJECTED)[-1]
        assert (late.reject_name, late.orig_cl_ord_id, late.ord_status, late.cum_qty,
                late.leaves_qty, late.price) == \
            ("TOO_LATE_TO_CANCEL", "tl3", OrdStatus.CANCELED, "0", "0", "49")
        assert late.text == f"order {name!r} is done (its cl_ord_id is now 'tl3')"


def test_cancel_or_replace_cannot_take_another_orders_cl_ord_id(client):
    # Two working orders; a cancel of x naming itself "y" would re-point "y"
    # to x and strand y at its venue with no id left to reach it.
    for cid in ("x", "y"):
        client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id=cid)
        reports_until(client, cid, ExecType.NEW)
    for send in (lambda: client.cancel("x", account="DEMO1", cl_ord_id="y"),
                 lambda: client.replace("x", account="DEMO1", qty="20", cl_ord_id="y")):
        sent = send()
        # A Reject, not an ExecutionReport: a REJECTED report under "y"
        # would read as news of order y.
        refused = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
        assert (refused.reject_name, refused.ref_type, refused.cl_ord_id) == \
            ("DUPLICATE_CL_ORD_ID", type(sent).__name__, "y")
    # A symbol that is not the order's: refused, nothing changes.
    client.replace("x", account="DEMO1", qty="20", symbol="BBB", cl_ord_id="x2")
    wrong = reports_until(client, "x2", ExecType.REJECTED)[-1]
    assert (wrong.reject_name, wrong.orig_cl_ord_id, wrong.qty, wrong.text) == \
        ("INVALID_FIELD", "x", "10", "symbol 'BBB' is not the order's (AAA)")
    # Both still answer to their own ids, and y can still be canceled.
    for cid in ("x", "y"):
        client.status(cid, account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.report.cl_ord_id == cid and status.report.ord_status == OrdStatus.NEW
    client.cancel("y", account="DEMO1", cl_ord_id="y-cxl")
    assert reports_until(client, "y-cxl", ExecType.CANCELED)[-1].orig_cl_ord_id == "y"


def test_two_refused_requests_for_one_order_are_told_apart(client):
    # A client with two requests in flight for one order learns which was
    # refused and why: each refusal carries the request's own cl_ord_id.
    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="r1")
    reports_until(client, "r1", ExecType.NEW)
    client.replace("r1", account="DEMO1", qty="20", price="49.001", cl_ord_id="r1-px")
    client.replace("r1", account="DEMO1", qty="0.5", cl_ord_id="r1-qty")
    off_tick = reports_until(client, "r1-px", ExecType.REJECTED)[-1]
    off_lot = reports_until(client, "r1-qty", ExecType.REJECTED)[-1]
    assert (off_tick.reject_name, off_tick.orig_cl_ord_id) == ("OFF_TICK", "r1")
    assert off_lot.orig_cl_ord_id == "r1" and off_lot.reject_name != "OFF_TICK"
    # Neither request's id names an order: the order still answers to r1.
    for cid, found in (("r1", True), ("r1-px", False)):
        client.status(cid, account="DEMO1")
        status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
        assert status.found is found


def test_unknown_strategy_is_refused_as_such(client):
    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="st1",
                     strategy="nope")
    refused = reports_until(client, "st1", ExecType.REJECTED)[-1]
    assert refused.reject_name == "INVALID_STRATEGY" and "unknown strategy 'nope'" in refused.text


def test_post_only_never_takes_liquidity(engine, client):
    client.new_order("BBB", "sell_short", "10", "120.00", account="DEMO2", cl_ord_id="po-s",
                     locate=True)
    reports_until(client, "po-s", ExecType.NEW)
    at_venues(engine, "BBB", ask=12000)
    # At the offer: refused, where a plain limit would sweep it.
    client.new_order("BBB", "buy", "10", "120.00", account="DEMO1", cl_ord_id="po-1",
                     post_only=True)
    refused = reports_until(client, "po-1", ExecType.REJECTED)[-1]
    assert refused.reject_name == "POST_ONLY_WOULD_CROSS" and "would take the offer at 120" in refused.text
    # Strategies that take liquidity are not for a post-only order.
    client.new_order("BBB", "buy", "10", "119.00", account="DEMO1", cl_ord_id="po-2",
                     post_only=True, strategy="sweep")
    assert reports_until(client, "po-2", ExecType.REJECTED)[-1].reject_name == "INVALID_STRATEGY"
    # Below the offer it rests at its limit; a replace onto the offer is refused
    # and the order keeps working where it was.
    client.new_order("BBB", "buy", "10", "119.90", account="DEMO1", cl_ord_id="po-3",
                     post_only=True)
    assert reports_until(client, "po-3", ExecType.NEW)[-1].price == "119.9"
    client.replace("po-3", account="DEMO1", price="120.00", cl_ord_id="po-4")
    moved = reports_until(client, "po-4", ExecType.REJECTED)[-1]
    assert (moved.reject_name, moved.orig_cl_ord_id, moved.ord_status, moved.cum_qty) == \
        ("POST_ONLY_WOULD_CROSS", "po-3", OrdStatus.NEW, "0")
    at_venues(engine, "BBB", bid=11990, ask=12000)
    # Nothing traded: the resting sell is whole.
    client.status("po-s", account="DEMO2")
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert status.report.cum_qty == "0" and status.report.ord_status == OrdStatus.NEW


def test_post_only_survives_a_restart(tmp_path):
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        client.new_order("BBB", "sell_short", "10", "120.00", account="DEMO2", cl_ord_id="r-s",
                         locate=True)
        reports_until(client, "r-s", ExecType.NEW)
        client.new_order("BBB", "buy", "10", "119.90", account="DEMO1", cl_ord_id="r-b",
                         post_only=True)
        reports_until(client, "r-b", ExecType.NEW)
        _seen.pop(id(client), None)
    # Recovery routes both again; the bid is still post-only.
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        at_venues(engine, "BBB", bid=11990, ask=12000)
        client.replace("r-b", account="DEMO1", price="120.00", cl_ord_id="r-b2")
        assert reports_until(client, "r-b2", ExecType.REJECTED)[-1].reject_name == \
            "POST_ONLY_WOULD_CROSS"
        _seen.pop(id(client), None)


def test_symbol_kill_switch_halts_one_symbol(client):
    def admin(action, target):
        client.send(KillSwitch(req_id=f"{action}-{target}", action=action, scope="symbol",
                               target=target))
        return client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1]

    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="ks-1")
    reports_until(client, "ks-1", ExecType.NEW)
    engaged = admin("engage", "AAA")
    assert engaged.ok and "1 working orders canceled" in engaged.text
    reports_until(client, "ks-1", ExecType.CANCELED)
    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="ks-2")
    assert reports_until(client, "ks-2", ExecType.REJECTED)[-1].reject_name == "KILL_SWITCH"
    client.new_order("BBB", "buy", "10", "119.00", account="DEMO1", cl_ord_id="ks-3")
    reports_until(client, "ks-3", ExecType.NEW)
    assert admin("release", "AAA").ok
    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="ks-4")
    reports_until(client, "ks-4", ExecType.NEW)
    unknown = admin("engage", "ZZZ")
    assert not unknown.ok and unknown.reject_name == "INVALID_FIELD" and \
        unknown.text == "unknown symbol 'ZZZ'"


def test_ioc_with_no_liquidity_is_canceled(client):
    client.new_order("AAA", "buy", "10", "50.00", account="DEMO1", cl_ord_id="i1",
                     time_in_force=3)
    reports = reports_until(client, "i1", ExecType.CANCELED)
    assert summary(reports) == [(ExecType.NEW, OrdStatus.NEW, "10", "0", "10", None, None),
                                (ExecType.CANCELED, OrdStatus.CANCELED, "0", "0", "0", None, None)]


def test_bulk_orders_answered_one_by_one(engine, client):
    counted = engine.service.metrics.orders_in.value
    orders = [client.build_new_order("AAA", "buy", "10", px, account="DEMO1", cl_ord_id=cid)
              for cid, px in (("k1", "48.00"), ("k2", "48.005"), ("k3", "48.01"))]
    client.bulk(orders)
    got = client.drain(0.5)
    by_id = {m.cl_ord_id: m for m in got if isinstance(m, ExecutionReport)}
    assert by_id["k1"].exec_type == ExecType.NEW and by_id["k3"].exec_type == ExecType.NEW
    assert by_id["k2"].exec_type == ExecType.REJECTED and by_id["k2"].reject_name == "OFF_TICK"
    # Each order of the bulk counted once in kronos_orders_in (not once per stage).
    assert engine.service.metrics.orders_in.value - counted == 3


def test_a_bulks_refusals_name_each_order_by_its_place_as_sent(engine, client):
    """Refusals name ``orders[i]`` by the bulk as sent, also after intake took orders out of
    it (the engine numbered what was left: a duplicate at [3] was called [2]); and a
    ``cl_ord_id`` two orders of the bulk share gets one answer: the later one is refused even
    when the earlier one failed intake's checks (it was accepted: a Reject, then a NEW, for
    one id)."""
    from engine.messages import NewOrder
    client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="bx-used")
    reports_until(client, "bx-used", ExecType.NEW)
    good = lambda cid: client.build_new_order("AAA", "buy", "1", "40.00", account="DEMO1",  # noqa: E731
                                              cl_ord_id=cid)
    bad_version = NewOrder(**{**msgspec.structs.asdict(good("bx-q")), "v": 2})
    client.bulk([good("bx-1"), bad_version, good("bx-2"), good("bx-used"), good("bx-q")])
    got = client.drain(0.5)
    # Each order's answer in its place in the bulk.
    assert [m.cl_ord_id for m in got[:5]] == ["bx-1", "bx-q", "bx-2", "bx-used", "bx-q"]
    rejects = {m.text.split(":")[0]: m for m in got if isinstance(m, Reject)}
    assert set(rejects) == {"BulkNewOrders orders[1]", "BulkNewOrders orders[3]",
                            "BulkNewOrders orders[4]"}
    assert rejects["BulkNewOrders orders[1]"].reject_name == "UNSUPPORTED_VERSION"
    assert (rejects["BulkNewOrders orders[3]"].reject_name,
            rejects["BulkNewOrders orders[3]"].cl_ord_id) == ("DUPLICATE_CL_ORD_ID", "bx-used")
    assert (rejects["BulkNewOrders orders[4]"].reject_name,
            rejects["BulkNewOrders orders[4]"].cl_ord_id) == ("DUPLICATE_CL_ORD_ID", "bx-q")
    assert "is also orders[1]'s" in rejects["BulkNewOrders orders[4]"].text
    news = {m.cl_ord_id for m in got if isinstance(m, ExecutionReport)
            and m.exec_type == ExecType.NEW}
    assert news == {"bx-1", "bx-2"}
    for cid in ("bx-used", "bx-1", "bx-2"):
        client.cancel(cid, account="DEMO1", cl_ord_id=f"{cid}-x")
        reports_until(client, f"{cid}-x", ExecType.CANCELED)


def test_rejects_name_the_problem_and_change_nothing(client):
    cases = [
        (dict(symbol="ZZZ", side="buy", qty="1", price="1.00", account="DEMO1"), "UNKNOWN_INSTRUMENT"),
        (dict(symbol="AAA", side="buy", qty="1000000", price="1.00", account="DEMO1"), "MAX_ORDER_QTY"),
        (dict(symbol="AAA", side="sell", qty="5", price="50.00", account="DEMO2"), "INSUFFICIENT_POSITION"),
    ]
    for i, (fields, name) in enumerate(cases):
        cid = f"r{i}"
        client.new_order(fields.pop("symbol"), fields.pop("side"), fields.pop("qty"),
                         fields.pop("price"), cl_ord_id=cid, **fields)
        rep = reports_until(client, cid, ExecType.REJECTED)[-1]
        assert rep.reject_name == name and rep.text
    # A cl_ord_id is single use, also after its order is done.
    client.new_order("AAA", "buy", "1", "1.00", account="DEMO1", cl_ord_id="r0")
    dup = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
    assert dup.reject_name == "DUPLICATE_CL_ORD_ID"
    # Malformed bytes: a Reject, and the session keeps serving.
    client.send_raw(b"\xc1not msgpack")
    bad = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
    assert bad.reject_name == "MALFORMED_MESSAGE"
    client.status("r1", account="DEMO1")
    status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert status.found and status.report.ord_status == OrdStatus.REJECTED
    # A field written twice: which value the sender meant is unknown, so neither is taken.
    order = msgspec.msgpack.encode(client.build_new_order("AAA", "buy", "1", "48.00",
                                                          account="DEMO1", cl_ord_id="twice"))
    assert order[0] == 0xde  # a map16: the count of its pairs follows, then the pairs
    count = int.from_bytes(order[1:3], "big") + 1
    client.send_raw(b"\xde" + count.to_bytes(2, "big") + order[3:] + b"\xa3qty\xa41000")
    bad = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
    assert (bad.reject_name, bad.ref_type, bad.cl_ord_id, bad.text) == (
        "INVALID_FIELD", "NewOrder", "twice", "NewOrder: key 'qty' appears twice at $")
    client.status("twice", account="DEMO1")
    assert not client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1].found


def test_status_and_trade_history(engine, client):
    t0 = time.time_ns()
    client.new_order("BBB", "sell_short", "30", "120.00", account="DEMO2", cl_ord_id="h1",
                     locate=True)
    reports_until(client, "h1", ExecType.NEW)
    at_venues(engine, "BBB", ask=12000)
    client.new_order("BBB", "buy", "30", "120.00", account="DEMO1", cl_ord_id="h2")
    reports_until(client, "h2", ExecType.FILL)
    client.status("h1", account="DEMO2")
    st = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert st.found and st.report.ord_status == OrdStatus.FILLED and st.report.cum_qty == "30"
    # Its way through the pipeline, and its child at the venue, are part of the state.
    assert [s.stage for s in st.stages] == ["RECEIVED", "VALIDATED", "RISK_CHECKED", "ROUTED",
                                            "FILLED"]
    assert all(a.time <= b.time for a, b in zip(st.stages, st.stages[1:]))
    assert [(c.price, c.qty, c.cum_qty, c.done) for c in st.children] == \
        [("120", "30", "30", True)] and st.children[0].venue
    client.history("DEMO1", t0, time.time_ns() + 10**9)
    hist = client.recv_until(lambda m: isinstance(m, TradeHistoryReply), 5)[-1]
    assert [(f.cl_ord_id, f.last_qty, f.last_px, f.symbol) for f in hist.fills] == \
        [("h2", "30", "120", "BBB")]
    assert hist.complete and hist.complete_from == 0 and hist.text is None


def test_trade_history_beyond_the_memory_bound_says_so(tmp_path):
    """With [history] max_fills_per_account = 1 the older fills leave memory; an answer
    reaching back to them is marked incomplete, and says from when it is complete."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal",
                                extra="[history]\nmax_fills_per_account = 1\n"))
    with ThreadedEngine(path) as eng, Client(f"tcp://127.0.0.1:{port}") as client:
        t0 = time.time_ns()
        for i in range(3):
            cross(eng, client, str(i))
        client.history("DEMO1", t0, time.time_ns() + 10**9)
        hist = client.recv_until(lambda m: isinstance(m, TradeHistoryReply), 5)[-1]
        assert not hist.complete and "max_fills_per_account = 1" in hist.text
        # What is held is the newest, and everything from complete_from on is there.
        assert [f.cl_ord_id for f in hist.fills][-1] == "b2" and len(hist.fills) <= 2
        assert all(f.transact_time >= hist.complete_from for f in hist.fills)
        client.history("DEMO1", hist.complete_from, time.time_ns() + 10**9)
        later = client.recv_until(lambda m: isinstance(m, TradeHistoryReply), 5)[-1]
        assert later.complete and [f.exec_id for f in later.fills] == \
            [f.exec_id for f in hist.fills]


def test_fills_reach_the_zmq_gateway(tmp_path):
    """The service starts the configured gateways; a subscriber sees the engine's fills."""
    from gateways.zmq_pub import Subscriber
    port, pub, rep = free_port(), free_port(), free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", extra=f"""
[[gateways]]
type = "zmq"
endpoint = "tcp://127.0.0.1:{pub}"
replay_endpoint = "tcp://127.0.0.1:{rep}"
"""))
    with ThreadedEngine(path) as engine, Client(f"tcp://127.0.0.1:{port}") as client, \
            Subscriber(f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{rep}", start_seq=0,
                       topics=[b"fill."]) as sub:
        client.new_order("AAA", "sell_short", "40", "50.10", account="DEMO2", cl_ord_id="g1",
                         locate=True)
        reports_until(client, "g1", ExecType.NEW)
        at_venues(engine, "AAA", ask=5010)
        client.new_order("AAA", "buy", "40", "50.10", account="DEMO1", cl_ord_id="g2")
        reports_until(client, "g2", ExecType.FILL)
        got, deadline = [], time.monotonic() + 15
        while len(got) < 2 and time.monotonic() < deadline:
            got += sub.recv(timeout_ms=500)
        fills = sorted((e.cl_ord_id, e.last_qty, e.last_px, e.account) for e in got)
        assert fills == [("g1", "40", "50.1", "DEMO2"), ("g2", "40", "50.1", "DEMO1")]
        assert [e.seq for e in got] == sorted(e.seq for e in got)


@pytest.mark.parametrize("policy", ["group", "always"])
def test_acks_leave_only_once_durable(tmp_path, policy):
    """With fsync "group" or "always", the engine sends an acknowledgement only after
    the journal says its record is durable (group commit: replies wait for the sync)."""
    from engine.journal import JournalReader, RecordKind, verify
    from engine.messages import JournalEvent, JournalPayload
    port = free_port()
    path = tmp_path / "engine.toml"
    # A long group window (200 ms): an ack sent before its sync could not hide.
    path.write_text(config_text(port, tmp_path / "journal", fsync=policy).replace(
        'fsync = "group"', 'fsync = "group"\ngroup_commit_us = 200000'))
    with ThreadedEngine(path) as eng, Client(f"tcp://127.0.0.1:{port}") as client:
        journal = eng.service.journal
        durable_at_receipt = {}
        for i in range(5):
            client.new_order("AAA", "buy", "1", f"49.{10 + i}", account="DEMO1", cl_ord_id=f"d{i}")
        while len(durable_at_receipt) < 5:
            msg = client.recv(5)
            if isinstance(msg, ExecutionReport) and msg.exec_type == ExecType.NEW:
                durable_at_receipt[msg.cl_ord_id] = eng.call(lambda: journal.durable_seq)
    decoder = msgspec.msgpack.Decoder(JournalPayload)
    record_of = {}
    for rec in JournalReader(tmp_path / "journal"):
        payload = rec.decode(decoder) if rec.kind == RecordKind.EVENT else None
        if isinstance(payload, JournalEvent) and isinstance(payload.event, ExecutionReport) \
                and payload.event.exec_type == ExecType.NEW:
            record_of[payload.event.cl_ord_id] = rec.seq
    # Each acknowledgement's own record was durable when the client held it.
    assert sorted(durable_at_receipt) == [f"d{i}" for i in range(5)]
    for cl_ord_id, durable in durable_at_receipt.items():
        assert durable >= record_of[cl_ord_id], (cl_ord_id, durable, record_of[cl_ord_id])
    assert verify(tmp_path / "journal").ok


def test_history_store_must_name_a_postgres_gateway(tmp_path):
    from engine.config import ConfigError
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal",
                                extra='[history]\nstore = "nowhere"\n'))
    with pytest.raises(ConfigError, match="no postgres gateway named 'nowhere'"):
        with ThreadedEngine(path):
            pass


def test_resume_is_refused_unless_first_on_its_connection(engine):
    """A connection that has its own session cannot take over another one later: the
    owner keeps its session and numbering, and its next acknowledgement reaches it."""
    from engine.messages import HeartbeatAck
    with Client(engine.endpoint) as owner, Client(engine.endpoint) as other:
        for _ in range(4):
            owner.heartbeat()
            owner.recv(5)
        other.heartbeat()
        other_session = other.recv(5).session_id
        other.resend(1, session_id=owner.session_id)
        refused = other.recv(5)
        assert isinstance(refused, Reject) and refused.reject_name == "RESUME_REFUSED", refused
        assert "first message" in refused.text
        owner.new_order("AAA", "buy", "1", "49.00", account="DEMO1", cl_ord_id="rs-1")
        ack = owner.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "rs-1", 5)[-1]
        assert (ack.exec_type, ack.seq) == (ExecType.NEW, 5)
        assert owner.duplicates == 0 and owner.gaps == []
        other.heartbeat()
        ack = other.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
        assert ack.session_id == other_session


def test_resume_of_a_session_still_connected_refuses_the_old_connection(engine):
    """A reconnect resumes even while the old connection still looks open; if that old
    connection speaks again it is refused, and nothing it sends is executed."""
    from engine.messages import HeartbeatAck
    with Client(engine.endpoint) as old:
        old.heartbeat()
        session_id = old.recv(5).session_id
        old.new_order("AAA", "buy", "1", "49.00", account="DEMO1", cl_ord_id="tk-1")
        old.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "tk-1", 5)
        with Client(engine.endpoint) as new:
            new.resume(session_id, old.last_seq)
            ack = new.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)[-1]
            assert ack.session_id == session_id and ack.seq == old.last_seq + 1
            notice = old.recv(5)
            assert isinstance(notice, Reject) and notice.reject_name == "RESUME_REFUSED"
            assert notice.seq == 0 and session_id in notice.text
            old.new_order("AAA", "buy", "1", "49.01", account="DEMO1", cl_ord_id="tk-2")
            refused = old.recv(5)
            assert isinstance(refused, Reject) and refused.reject_name == "RESUME_REFUSED"
            assert (refused.seq, refused.cl_ord_id) == (0, "tk-2")
            # Never executed; the session and its order now answer on the new connection.
            new.status("tk-2", account="DEMO1")
            assert new.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1].found is False
            new.cancel("tk-1", account="DEMO1", cl_ord_id="tk-1c")
            done = new.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "tk-1c", 5)[-1]
            assert done.exec_type == ExecType.CANCELED and new.gaps == [] and new.duplicates == 0
            assert old.drain(0.2) == []  # the session's messages went to the new connection only


def test_bulk_order_of_an_unsupported_version_is_refused_alone(engine, client):
    """Each order of a bulk is held to the protocol version, whatever the envelope's."""
    ok = client.build_new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="bv1")
    future = msgspec.structs.replace(
        client.build_new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id="bv2"), v=2)
    client.bulk([future, ok])
    got = client.drain(0.5)
    refused = [m for m in got if isinstance(m, Reject)]
    assert [(r.cl_ord_id, r.reject_name) for r in refused] == [("bv2", "UNSUPPORTED_VERSION")]
    assert "orders[0]" in refused[0].text
    reports = [m for m in got if isinstance(m, ExecutionReport)]
    assert [(r.cl_ord_id, r.exec_type) for r in reports] == [("bv1", ExecType.NEW)]
    client.status("bv2", account="DEMO1")
    assert client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1].found is False


def test_a_bulk_of_the_default_maximum_fits_the_default_message_size(tmp_path):
    """intake.max_bulk_orders (1000) orders, as the client library writes them, are one
    message that intake.max_message_bytes lets through: with the old 64 KiB, 280 did."""
    from tests.integration.engine_harness import serving
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        assert engine.config.intake.max_bulk_orders == 1000
        orders = [client.build_new_order("AAA", "buy", "1", "48.00", account="DEMO1",
                                         cl_ord_id=f"bulk-{i:06d}-padded-as-clients-do")
                  for i in range(1000)]
        assert len(msgspec.msgpack.encode(BulkNewOrders(orders=orders))) > 200_000
        client.bulk(orders)
        acked = set()
        while len(acked) < 1000:
            message = client.recv(5)
            assert isinstance(message, ExecutionReport), message
            assert message.exec_type == ExecType.NEW
            acked.add(message.cl_ord_id)
