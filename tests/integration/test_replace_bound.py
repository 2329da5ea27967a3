"""[orders] max_replaces_per_order: one order's replaces are bounded, across a restart too.

Each accepted replace keeps its cl_ord_id spent (it still finds the order)
and, routed again, the done child it replaced (status lists every child):
state that max_orders does not count. A real engine on the quiet test market
with room for three replaces of an order: the fourth is refused, nothing of
it is kept, and an engine restarted on the journal holds the same order and
refuses the same replace.
"""
from engine.client import Client
from engine.messages import ExecType, ExecutionReport, OrderStatusReply, OrdStatus
from tests.integration.engine_harness import ThreadedEngine, engine_config

BOUND = 3


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` under ``cl_ord_id``."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and m.exec_type == exec_type, 5)[-1]


def status(client, cl_ord_id):
    """The engine's OrderStatusReply for ``cl_ord_id`` (account DEMO1)."""
    client.status(cl_ord_id, account="DEMO1")
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def held(engine):
    """The order's state as the table holds it, its renames and every id it answers to, and
    how many ids the table holds."""
    def look():
        table = engine.service.pipeline.orders
        order = table.find("DEMO1", "b0")
        return ((order.cl_ord_id, order.qty, order.price, order.cum_qty, order.stage,
                 order.renames),
                [c for c in (f"b{k}" for k in range(8)) if table.find("DEMO1", c) is order],
                table.ids_held())
    return engine.call(look)


def refused_at_the_bound(client, cl_ord_id, orig):
    client.replace(orig, account="DEMO1", price="47.50", cl_ord_id=cl_ord_id)
    refused = report(client, cl_ord_id, ExecType.REJECTED)
    assert (refused.reject_name, refused.orig_cl_ord_id, refused.ord_status) == \
        ("ORDER_NOT_REPLACEABLE", orig, OrdStatus.NEW)
    assert f"replaced {BOUND} times" in refused.text
    assert "max_replaces_per_order" in refused.text


def test_replaces_past_the_bound_are_refused_and_keep_nothing(tmp_path):
    path, endpoint = engine_config(tmp_path, extra=f"[orders]\nmax_replaces_per_order = {BOUND}\n")
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="b0")
        report(client, "b0", ExecType.NEW)
        for k in range(1, BOUND + 1):
            # A new price each time: the child comes down and the order is routed again.
            client.replace(f"b{k - 1}", account="DEMO1", price=f"{48 - k / 100:.2f}",
                           cl_ord_id=f"b{k}")
            assert report(client, f"b{k}", ExecType.REPLACED).price == f"{48 - k / 100:.2f}"
        state, names, ids = held(engine)
        assert state[-1] == BOUND and names == ["b0", "b1", "b2", "b3"]
        for k in range(BOUND + 1, BOUND + 4):
            refused_at_the_bound(client, f"b{k}", "b3")
        # Refused before it was journaled: its id is free, nothing was kept.
        assert held(engine) == (state, names, ids)
        assert not status(client, "b4").found
        before = status(client, "b0")
        assert len(before.children) == BOUND + 1 and \
            [c.done for c in before.children] == [True] * BOUND + [False]
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        assert held(engine) == (state, names, ids)
        after = status(client, "b0")
        assert after.report == before.report
        # The children as they were, all done (the venues did not outlive the engine),
        # then the one the order got when it was routed again.
        assert [(c.child_id, c.price, c.qty, c.cum_qty) for c in after.children[:BOUND + 1]] == \
            [(c.child_id, c.price, c.qty, c.cum_qty) for c in before.children]
        assert len(after.children) == BOUND + 2 and not after.children[-1].done
        refused_at_the_bound(client, "b7", "b3")
        # The order still works: it can be canceled.
        client.cancel("b3", account="DEMO1", cl_ord_id="b-x")
        assert report(client, "b-x", ExecType.CANCELED).orig_cl_ord_id == "b3"
