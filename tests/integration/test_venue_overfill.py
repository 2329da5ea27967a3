"""A venue that fills a child past its leaves: every lot is booked, none is routed again.

The simulated venues cannot overfill, so the test plays a real venue
adapter: it hands the engine's pipeline, on its loop, a fill report through
the callback the pipeline gave the venue with the child (``on_report``), for
a child resting at the simulator over real sockets (or, where the test must
say when a cancel lands, for children it takes in place of the venues). The
order, the router and risk must then agree on every lot bought, and the
order says ``overfilled``. A venue that still works lots of such a child
has them canceled there, once, and what it fills before that cancel lands
is booked everywhere too, the order not ending before.
"""
import contextlib
import logging
import re
import time
from types import SimpleNamespace

from engine.client import Client
from engine.messages import ExecType, OrderStatusReply, OrdStatus
from ext.simloop import ReportKind
from ext.types import Side
from tests.integration.engine_harness import (ThreadedEngine, acked_at_venue, config_text,
                                              engine_config, free_port, http_get)
from tests.integration.test_engine_replace import report


def status(client, cl_ord_id):
    client.status(cl_ord_id, account="DEMO1")
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def venue_fill(engine, child_id, *fills, then=None):
    """Deliver a venue's fills ``(last_qty, leaves_qty, price_x2)`` of engine child
    ``child_id`` as a venue adapter would, in one turn of the engine's loop; returns what
    ``then()`` gives in that turn, after them (before the engine sends anything)."""
    return venue_report(engine, child_id, *[
        dict(kind=ReportKind.RPT_FILL, last_qty=last_qty, leaves_qty=leaves_qty,
             price_x2=price_x2) for last_qty, leaves_qty, price_x2 in fills], then=then)


def venue_canceled(engine, child_id):
    """Deliver a venue's report that child ``child_id`` is canceled there."""
    venue_report(engine, child_id, dict(kind=ReportKind.RPT_CANCELED))


def venue_report(engine, child_id, *reports, then=None):
    """Deliver reports (``ext.simloop.Report`` fields, ``kind`` at least) of engine child
    ``child_id`` in one turn of the engine's loop; returns ``then()``'s result from it."""
    pipeline = engine.service.pipeline

    def deliver():
        sim_id = pipeline._child_to_sim[child_id]
        venue = pipeline.venue_names.index(pipeline.orders.by_id[
            pipeline._child_parent[child_id]].children[child_id].venue)
        for fields in reports:
            last_qty, leaves_qty = fields.get("last_qty", 0), fields.get("leaves_qty", 0)
            # (the fields of ext.simloop.Report, which only the simulator can make)
            report = dict(child_id=sim_id, venue=venue, book=0, side=1, ts=time.time_ns(),
                          recv_ts=time.time_ns(), price_x2=0, order_qty=last_qty + leaves_qty,
                          cum_qty=last_qty, liquidity=0, fee=0, reason=0)
            report.update(fields, kind=int(fields["kind"]))
            pipeline._on_report(SimpleNamespace(**report))
        return then() if then is not None else None
    return engine.call(deliver)


def wait_for_asks(engine, venues, names):
    """Wait until every venue of ``names`` shows offers of AAA (orders reach a venue after
    its latency). (Its depth is arrays: an empty one has no truth value.)"""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(
            len(engine.call(lambda v=venue: venues.depth(v, "AAA"))[1]) for venue in names):
        time.sleep(0.01)


def count_calls(engine, venues, name):
    """Record the arguments of every call of ``venues.<name>`` from now on (a list)."""
    calls, real = [], getattr(venues, name)

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)
    engine.call(lambda: setattr(venues, name, counted))
    return calls


def test_a_venue_overfill_is_booked_everywhere_and_flagged(tmp_path, caplog):
    port, metrics_port = free_port(), free_port()
    text = config_text(port, tmp_path / "journal").replace(
        "[metrics]\nport = 0", f"[metrics]\nport = {metrics_port}")
    (tmp_path / "engine.toml").write_text(text)
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    with ThreadedEngine(tmp_path / "engine.toml") as engine, \
            Client(f"tcp://127.0.0.1:{port}") as client:
        risk = engine.service.pipeline.risk
        router = engine.service.pipeline.router

        def held():
            return risk.exposure(risk.account_index("DEMO1"),
                                 risk.instrument_index("AAA"))["position"]

        def position():
            return engine.call(held)
        before = position()
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id="over")
        order_id = int(report(client, "over", ExecType.NEW).order_id)
        (child,) = acked_at_venue(client, "over").children
        assert not child.done
        cid = int(child.child_id)
        venues = engine.service.pipeline.venues

        def resting_at_4800():
            bids, _ = engine.call(lambda: venues.depth(child.venue, "AAA"))
            return sum(int(qty) for px, qty, *_ in bids if px == 4800)
        resting = resting_at_4800()
        assert resting >= 100   # the child, really resting at the simulator

        # A fill of more lots than the router takes (2^40) is an adapter's fault, not a
        # trade: refused, nothing booked (booked, it could wrap risk's position).
        venue_fill(engine, cid, (2**62, 100, 2 * 4800))
        assert position() == before and status(client, "over").report.cum_qty == "0"
        # So is a fill priced past the 2^40 ticks they take (or at none): the order
        # would hold a fill the router and risk refused.
        for px_x2 in (2**41 + 1, 0):
            venue_fill(engine, cid, (5, 95, px_x2))
            assert position() == before and status(client, "over").report.cum_qty == "0"

        # The venue says it filled 130 of the child's 100 and still works 5, and fills 3
        # of those before the engine's cancel of them reaches it (one turn of the loop:
        # nothing the engine sends leaves before its end). The router books them as
        # the order and risk do: refused, its parent fell behind the order.
        cancels = count_calls(engine, venues, "cancel")
        submits = count_calls(engine, venues, "submit")
        order = engine.service.pipeline.orders.by_id[order_id]
        booked = venue_fill(engine, cid, (130, 5, 2 * 4800), (3, 2, 2 * 4800), then=lambda: (
            router.parent(order_id)["cum_qty"], router.parent(order_id)["draining"],
            order.cum_qty, held()))
        assert booked == (133, 1, 133, before + 133)
        fill = report(client, "over", ExecType.FILL)
        assert (fill.last_qty, fill.cum_qty, fill.leaves_qty) == ("130", "130", "0")
        assert fill.ord_status == OrdStatus.FILLED
        fill = report(client, "over", ExecType.FILL)
        assert (fill.last_qty, fill.cum_qty) == ("3", "133")
        # The cancel lands: the simulator's real child (resting 100, since the fills
        # above were the adapter's) is gone, and with it the router's parent, which
        # waited for it. One cancel was sent, not one a fill, and nothing was routed
        # for the lots the router thought the child still had.
        deadline = time.monotonic() + 5
        while (resting_at_4800() != resting - 100 or engine.call(lambda: router.n_active)) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert resting_at_4800() == resting - 100
        assert engine.call(lambda: (router.n_active, router.pending_actions)) == (0, 0)
        assert len(cancels) == 1 and submits == []
        st = status(client, "over")
        assert st.overfilled and st.report.cum_qty == "133"
        assert st.report.ord_status == OrdStatus.FILLED and position() == before + 133
        assert [c.child_id for c in st.children] == [child.child_id]
        assert st.children[0].done

        code, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        # (Every venue's series is served, the others at 0.)
        counted = dict(re.findall(r'^kronos_overfills_total\{venue="([^"]+)"\} (\S+)$', body,
                                  re.M))
        assert {venue: float(n) for venue, n in counted.items() if float(n)} \
            == {st.children[0].venue: 2}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "overfilled order" in r.getMessage()]
    assert len(warned) == 2 and "130 lots filled of 100" in warned[0]
    working = [r.getMessage() for r in caplog.records if "still works" in r.getMessage()]
    assert len(working) == 1 and "still works 5 lots of child" in working[0]
    blamed = [r.getMessage() for r in caplog.records if "past its quantity" in r.getMessage()]
    assert len(blamed) == 2 and f"child {cid} past its quantity: 130 lots of 100" in blamed[0]

    # A restart on the journal books the same: the order, and risk's position.
    with ThreadedEngine(tmp_path / "engine.toml") as engine, \
            Client(f"tcp://127.0.0.1:{port}") as client:
        st = status(client, "over")
        assert st.overfilled and st.report.cum_qty == "133"
        assert st.report.ord_status == OrdStatus.FILLED
        risk = engine.service.pipeline.risk
        assert engine.call(lambda: risk.exposure(risk.account_index("DEMO1"),
                                                 risk.instrument_index("AAA"))["position"]) == \
            before + 133


@contextlib.contextmanager
def buy_across_two_venues(tmp_path, cl_ord_id):
    """A buy of 100 at 48.00 sent as two children, 40 to NEXA and 60 to BRIX (another firm
    offers those there, and bids 10 at 47.00 at NEXA), the test playing the venue for the
    engine's children: they go nowhere else, so the test says when each report lands.

    Yields ``(engine, client, order_id, kids, sent, cancels, held)``: ``kids`` the child
    ids by venue, ``sent`` and ``cancels`` what the engine submitted to and canceled at
    venues since (``cancels``: their venue ids), ``held()`` the account's position less
    the one before (on the engine's loop: ``engine.call(held)`` from the test's thread).
    """
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        risk, venues = pipeline.risk, pipeline.venues
        market = venues.market

        def position():
            return risk.exposure(risk.account_index("DEMO1"),
                                 risk.instrument_index("AAA"))["position"]
        before = engine.call(position)
        kids_at = ("NEXA", "BRIX")
        engine.call(lambda: [market.submit(venue, "AAA", side, qty, px, account=77)
                             for venue, side, qty, px in (("NEXA", Side.SELL, 40, 4800),
                                                          ("BRIX", Side.SELL, 60, 4800),
                                                          ("NEXA", Side.BUY, 10, 4700))])
        wait_for_asks(engine, venues, kids_at)
        sent, cancels = [], []

        def submit(*args, **kw):
            sent.append(args)
            return 10**12 + len(sent)
        engine.call(lambda: (setattr(venues, "submit", submit),
                             setattr(venues, "cancel", cancels.append)))
        client.new_order("AAA", "buy", "100", "48.00", account="DEMO1", cl_ord_id=cl_ord_id)
        order_id = int(report(client, cl_ord_id, ExecType.NEW).order_id)
        kids = {c.venue: int(c.child_id) for c in status(client, cl_ord_id).children}
        assert sorted(kids) == sorted(kids_at) and len(sent) == 2
        yield engine, client, order_id, kids, sent, cancels, lambda: position() - before


def test_an_order_canceled_while_a_child_drains_ends_after_it_with_every_lot(tmp_path, caplog):
    # The order must not end while a child of it can still fill: canceled at
    # once, the fill that came after was logged as an ERROR and dropped,
    # though it traded.
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    with buy_across_two_venues(tmp_path, "drain") as (engine, client, order_id, kids, sent,
                                                       cancels, held):
        pipeline = engine.service.pipeline
        router = pipeline.router
        sim_of = engine.call(lambda: dict(pipeline._child_to_sim))

        # NEXA fills 45 of its 40 and still works 5: their cancel goes out at once.
        venue_fill(engine, kids["NEXA"], (45, 5, 2 * 4800))
        fill = report(client, "drain", ExecType.PARTIAL_FILL)
        assert (fill.last_qty, fill.cum_qty) == ("45", "45")
        client.cancel("drain", account="DEMO1", cl_ord_id="drain-x")
        deadline = time.monotonic() + 5
        while len(cancels) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cancels == [sim_of[kids["NEXA"]], sim_of[kids["BRIX"]]]
        venue_canceled(engine, kids["BRIX"])
        # Every live child is down, but NEXA's may still fill: the order works on,
        # and the 3 it fills before its cancel lands are booked everywhere.
        booked = venue_fill(engine, kids["NEXA"], (3, 2, 2 * 4800), then=lambda: (
            router.parent(order_id)["cum_qty"], pipeline.orders.by_id[order_id].cum_qty,
            held()))
        assert booked == (48, 48, 48)
        fill = report(client, "drain", ExecType.PARTIAL_FILL)
        assert (fill.last_qty, fill.cum_qty, fill.ord_status) == \
            ("3", "48", OrdStatus.PARTIALLY_FILLED)
        venue_canceled(engine, kids["NEXA"])
        done = report(client, "drain-x", ExecType.CANCELED)
        assert (done.cum_qty, done.leaves_qty) == ("48", "0")
        st = status(client, "drain")
        assert st.report.ord_status == OrdStatus.CANCELED and st.report.cum_qty == "48"
        assert all(c.done for c in st.children)
        assert engine.call(held) == 48
        assert engine.call(lambda: (router.n_active, router.pending_actions)) == (0, 0)
        assert len(sent) == 2 and len(cancels) == 2     # nothing routed again, one cancel each
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_child_its_venue_ends_short_by_a_fill_with_leaves_0_is_routed_again(tmp_path, caplog):
    # A venue that cuts a child, or drops an IOC's rest without a report of its
    # own, says so by a fill report's leaves_qty 0. The engine forgot the child
    # then; the router kept it live, waiting for lots no venue worked: the
    # order hung, never routing them again nor ending.
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    with buy_across_two_venues(tmp_path, "cut") as (engine, client, order_id, kids, sent,
                                                     _, held):
        pipeline = engine.service.pipeline
        router = pipeline.router
        venue_fill(engine, kids["BRIX"], (60, 0, 2 * 4800))
        # NEXA fills 30 of its 40 and works nothing more of it; the cancel of
        # the rest it sends after (in the same turn) changes nothing.
        state = venue_report(engine, kids["NEXA"],
                             dict(kind=ReportKind.RPT_FILL, last_qty=30, leaves_qty=0,
                                  price_x2=2 * 4800),
                             dict(kind=ReportKind.RPT_CANCELED), then=lambda: (
            router.parent(order_id)["cum_qty"], router.parent(order_id)["working_qty"],
            [c["child_id"] for c in router.live_children(order_id)],
            pipeline.orders.by_id[order_id].cum_qty))
        # Its 10 lots are routed again at once, by a new child (the engine sends
        # it right after the reports), once.
        assert state[:2] == (90, 10) and state[3] == 90 and engine.call(held) == 90
        assert len(state[2]) == 1 and state[2][0] not in kids.values()
        deadline = time.monotonic() + 5
        while len(sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sent) == 3 and sent[2][3] == 10
        st = status(client, "cut")
        assert (st.report.cum_qty, st.report.ord_status) == ("90", OrdStatus.PARTIALLY_FILLED)
        done = {int(c.child_id): c.done for c in st.children}
        assert done[kids["NEXA"]] and done[kids["BRIX"]]
        (again,) = [cid for cid, is_done in done.items() if not is_done]
        assert engine.call(lambda: router.parent(order_id)["working_qty"]) == 10
        venue_fill(engine, again, (10, 0, 2 * 4800))
        fill = report(client, "cut", ExecType.FILL)
        assert (fill.cum_qty, fill.leaves_qty, fill.ord_status) == ("100", "0", OrdStatus.FILLED)
        assert all(c.done for c in status(client, "cut").children)
        assert engine.call(held) == 100
        assert engine.call(lambda: (router.n_active, router.pending_actions)) == (0, 0)
        assert len(sent) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_refused_fill_with_leaves_0_still_ends_its_child(tmp_path, caplog):
    # A fill report no one can book (no lots) that says the venue works nothing more of
    # the child: the engine forgot the child, and the router, refusing the fill, kept it
    # live and waited for it: canceled, the order never ended.
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    with buy_across_two_venues(tmp_path, "nil") as (engine, client, order_id, kids, _, _,
                                                     held):
        router = engine.service.pipeline.router
        live = venue_fill(engine, kids["BRIX"], (0, 0, 2 * 4800), then=lambda: (
            [c["child_id"] for c in router.live_children(order_id)],
            router.parent(order_id)["working_qty"]))
        assert live == ([kids["NEXA"]], 40)  # (BRIX's 60 lots are the parent's again)
        client.cancel("nil", account="DEMO1", cl_ord_id="nil-x")
        deadline = time.monotonic() + 5
        while kids["NEXA"] in engine.call(lambda: [c["child_id"] for c in
                                                   router.live_children(order_id)
                                                   if not c["cancel_sent"]]) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        venue_canceled(engine, kids["NEXA"])
        done = report(client, "nil-x", ExecType.CANCELED)
        assert (done.cum_qty, done.leaves_qty) == ("0", "0")
        assert engine.call(held) == 0 and engine.call(lambda: router.n_active) == 0
    assert "reported a fill of 0 lots" in caplog.text
