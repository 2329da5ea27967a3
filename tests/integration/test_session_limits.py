"""``[risk.sessions.<name>]`` limits apply to the sessions of the client key of that name.

The engine registered each session at risk under its random session id, which no
configured name can match: the table configured nothing. Sessions now take their
limits from the table of their key's name (``plaintext`` for plaintext endpoints).
"""
from engine.client import Client
from engine.messages import ExecutionReport, Reject
from tests.integration.engine_harness import serving

SESSION_LIMITS = """
[risk.sessions.plaintext]
throttle_rate = 1
throttle_burst = 2
"""


def answers(client, count, prefix="t"):
    got = []
    for n in range(count):
        cl_ord_id = f"{prefix}{n}"
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id=cl_ord_id)
        got.append(client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                     and m.cl_ord_id == cl_ord_id, 5)[-1])
    return [m.reject_name for m in got]


def test_the_plaintext_table_throttles_plaintext_sessions(tmp_path):
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        # The firm allows 100,000/s; the key's table a burst of 2 at 1/s.
        assert answers(client, 3) == [None, None, "THROTTLED"]


def test_without_a_table_the_firm_throttle_applies(tmp_path):
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        assert answers(client, 3) == [None, None, None]


def test_the_sessions_of_one_key_share_its_throttle(tmp_path):
    """A second connection of the same key is a new session, not a new allowance:
    were the bucket per session, each client here would get its burst of 2."""
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), \
            Client(endpoint) as first, Client(endpoint) as second:
        assert answers(first, 2) == [None, None]
        assert answers(second, 1, prefix="u") == ["THROTTLED"]
        # (each client learned its session id from its first request's probe)
        assert None is not first.session_id != second.session_id is not None


def test_a_throttled_replace_leaves_the_order_where_it_works(tmp_path):
    """The throttle was judged after the order's children came down: a replace over the
    client's rate pulled the order from its venue and routed it again (a new child, its
    queue priority lost) before the client heard THROTTLED."""
    from engine.messages import ExecType, OrderStatusReply
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="o1")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.exec_type == ExecType.NEW, 5)

        def children():
            client.status("r1", account="DEMO1")
            reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
            return [(c.child_id, c.done) for c in reply.children]

        client.replace("o1", account="DEMO1", qty="2", cl_ord_id="r1")  # the bucket's second token
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "r1"
                          and m.exec_type == ExecType.REPLACED, 5)
        before = children()
        assert before and not before[-1][1]
        client.replace("r1", account="DEMO1", qty="3", cl_ord_id="r2")  # none left
        refused = client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                    and m.cl_ord_id == "r2", 5)[-1]
        assert refused.reject_name == "THROTTLED" and refused.exec_type == ExecType.REJECTED
        assert "throttle of plaintext" in refused.text
        assert children() == before  # the same child, still working at its venue


def _restart(proc, config, log):
    """kill -9 the engine and start it again on its journal."""
    from tests.integration.engine_harness import kill_9, start_subprocess
    kill_9(proc)
    return start_subprocess(config, log)


def _answer(client, cl_ord_id):
    return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def test_a_replace_after_a_restart_pays_its_senders_key(tmp_path):
    """A replace was charged to the bucket of the session that placed the order, and a
    session replayed from the journal had a bucket of its own, sized by the firm (here
    100,000/s): after a kill -9, the orders placed before it could be replaced at any rate."""
    from tests.integration.engine_harness import engine_config, kill_if_running, \
        start_subprocess
    config, endpoint = engine_config(tmp_path, extra=SESSION_LIMITS.replace(
        "throttle_burst = 2", "throttle_burst = 3"), fsync="always")
    log = tmp_path / "engine.log"
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="before")
            assert _answer(client, "before").reject_name is None
        proc = _restart(proc, config, log)
        with Client(endpoint) as client:
            # The key's bucket starts full after a restart (3); this takes it all.
            assert answers(client, 4, prefix="after") == [None, None, None, "THROTTLED"]
            client.replace("before", account="DEMO1", price="47.40", cl_ord_id="before-r")
            refused = _answer(client, "before-r")
            assert refused.reject_name == "THROTTLED"
            assert "throttle of plaintext (1 orders per second, burst 3)" in refused.text
    finally:
        kill_if_running(proc)


def test_replaces_in_flight_at_a_crash_are_not_throttled_again(tmp_path):
    """A replace the engine admitted, still taking its order's children down at a kill -9,
    is finished after the restart; its throttle token was paid when it arrived. The
    restart charged it again, to a bucket of the session's own sized by the firm (1/s,
    burst 1 here; the key allows 1,000/s): two of three were refused THROTTLED, the text
    naming the session id as if it were a key."""
    from engine.messages import ExecType
    from tests.integration.engine_harness import RISK, config_text, free_port, \
        kill_if_running, slow_sim, start_subprocess
    port = free_port()
    endpoint, config, log = f"tcp://127.0.0.1:{port}", tmp_path / "engine.toml", \
        tmp_path / "engine.log"
    firm = RISK.replace("throttle_rate = 100000", "throttle_rate = 1\nthrottle_burst = 1")
    assert firm != RISK
    key = "\n[risk.sessions.plaintext]\nthrottle_rate = 1000\nthrottle_burst = 1000\n"
    config.write_text(config_text(port, tmp_path / "journal", fsync="always",
                                  sim=slow_sim(tmp_path, 400_000.0), extra=key)
                      .replace(RISK, firm))
    proc = start_subprocess(config, log)
    try:
        client = Client(endpoint)
        for n in range(3):
            client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id=f"o{n}")
        for n in range(3):
            assert _answer(client, f"o{n}").exec_type == ExecType.NEW
        for n in range(3):
            client.replace(f"o{n}", account="DEMO1", price="40.05", cl_ord_id=f"r{n}")
        client.heartbeat()  # answered once the replaces are journaled; theirs wait 0.4 s
        client.recv_until(lambda m: type(m).__name__ == "HeartbeatAck", 5)
        session_id, last_seq = client.session_id, client.last_seq
        client.close()
        proc = _restart(proc, config, log)
        with Client(endpoint) as again:
            again.resume(session_id, last_seq)
            wanted, got = {"r0", "r1", "r2"}, {}
            again.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id in wanted
                             and got.setdefault(m.cl_ord_id, m) and len(got) == 3, 5)
            assert {name: (m.exec_type, m.price, m.reject_name) for name, m in got.items()} == \
                {name: (ExecType.REPLACED, "40.05", None) for name in wanted}
    finally:
        kill_if_running(proc)


def test_a_throttled_order_leaves_no_trace(tmp_path):
    """Each THROTTLED order was created, journaled and kept: one key over its rate filled
    [orders] max_orders (every client then refused ORDER_CAPACITY, across restarts too),
    and spent the cl_ord_id the client was told to resend. The throttle is now judged
    before the order is taken: a Reject and nothing else, also after a kill -9."""
    from engine.messages import OrderStatusReply
    from tests.integration.engine_harness import engine_config, kill_if_running, \
        start_subprocess
    config, endpoint = engine_config(tmp_path, fsync="always", extra=SESSION_LIMITS.replace(
        "throttle_rate = 1", "throttle_rate = 4") + "\n[orders]\nmax_orders = 10\n")
    log = tmp_path / "engine.log"
    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            sent = [f"t{n}" for n in range(30)]
            for cl_ord_id in sent:
                client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id=cl_ord_id)
            got = {m.cl_ord_id: m for m in client.recv_until(
                lambda m: isinstance(m, (ExecutionReport, Reject)) and m.cl_ord_id == sent[-1], 5)
                if isinstance(m, (ExecutionReport, Reject))}
            throttled = [c for c in sent if got[c].reject_name == "THROTTLED"]
            assert len(throttled) >= 25 and all(type(got[c]) is Reject for c in throttled)
            assert "throttle of plaintext (4 orders per second, burst 2)" in got[throttled[0]].text
            # A resend of an order the engine has is told so, over the throttle too.
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="t0")
            assert _answer(client, "t0").reject_name == "DUPLICATE_CL_ORD_ID"
        proc = _restart(proc, config, log)
        with Client(endpoint) as client:
            client.status(throttled[0], account="DEMO1")
            status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
            assert not status.found
            # Neither the table nor the id was taken: the resend and another account's
            # order are orders (once the bucket allows them).
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id=throttled[0])
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO2", cl_ord_id="other")
            for cl_ord_id in (throttled[0], "other"):
                answer = _answer(client, cl_ord_id)
                assert (type(answer), answer.reject_name) == (ExecutionReport, None)
    finally:
        kill_if_running(proc)


def test_a_bulks_answers_leave_in_the_bulks_order(tmp_path):
    """Intake's refusals and the throttled orders' rejects used to leave first, before
    the answers to the orders taken; now each order's answer leaves in its place."""
    from engine.messages import NewOrder, Side
    order = lambda cid, price="47.50": NewOrder(  # noqa: E731
        cl_ord_id=cid, account="DEMO1", symbol="AAA", side=Side.BUY, qty="1", price=price)
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        client.bulk([order("b0"), order("b1", price=None), order("b2"), order("b3"),
                     order("b0"), order("b5")])
        got = [m for m in client.drain(1.0) if isinstance(m, (ExecutionReport, Reject))]
    first = [(m.cl_ord_id, m.reject_name) for m in got[:6]]
    assert first == [("b0", None), ("b1", "PRICE_REQUIRED"), ("b2", None), ("b3", "THROTTLED"),
                     ("b0", "DUPLICATE_CL_ORD_ID"), ("b5", "THROTTLED")]
    assert [type(m) for m in got[:6]] == [ExecutionReport, Reject, ExecutionReport, Reject,
                                          Reject, Reject]


def test_a_throttled_order_of_a_bulk_is_told_of_the_throttle_not_another_orders_reject(
        tmp_path):
    """The held THROTTLED rejects of a bulk read risk's last reject text when they were
    sent, after the bulk's kept orders were checked: a risk refusal of one of those
    (here MAX_ORDER_QTY) was given to every throttled order."""
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        orders = [client.build_new_order("AAA", "buy", qty, "47.50", account="DEMO1",
                                         cl_ord_id=f"b{n}")
                  for n, qty in enumerate(["1", "200000", "1", "1"])]
        client.bulk(orders)
        got = {}
        while len(got) < 4:
            for m in client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                       and m.cl_ord_id.startswith("b"), 5):
                if isinstance(m, (ExecutionReport, Reject)) and m.cl_ord_id.startswith("b"):
                    got.setdefault(m.cl_ord_id, m)
        assert got["b0"].reject_name is None
        assert got["b1"].reject_name == "MAX_ORDER_QTY"
        for cl_ord_id, place in (("b2", 2), ("b3", 3)):
            refused = got[cl_ord_id]
            assert refused.reject_name == "THROTTLED"
            assert refused.text.startswith(f"BulkNewOrders orders[{place}]: THROTTLED: ")
            assert "throttle of plaintext" in refused.text and "MAX_ORDER_QTY" not in refused.text
