"""Recovery answers what was in flight and spends what was spent, as the engine did live.

* A Cancel or Replace journaled with no answer yet (its venue had not
  confirmed the children down when the engine died) is finished after the
  restart, as the pipeline would have finished it: the requester is answered
  and a canceled order does not go back to the market.
* A request refused by risk spent its cl_ord_id at risk (docs/risk.md): the
  restarted engine's risk holds the same ids as the live one.
* A refused order's stages after the restart are those it went through live.

The venues in these tests are 1.5 s away (or quiet), so what is in flight
stays in flight; one test kills the engine with SIGKILL, the others stop it
without a grace period, which leaves the journal the same way (the venues'
answers never come).
"""
import contextlib
import time

from engine.client import Client
from engine.messages import (AdminReply, ExecType, ExecutionReport, HeartbeatAck, KillSwitch,
                             OrderStatusReply, OrdStatus, Reject)
from tests.integration.engine_harness import (QUIET_SIM, ThreadedEngine, config_text, free_port,
                                              kill_9, kill_if_running, open_session,
                                              seen_at_resume, slow_sim, start_subprocess)

ACCOUNT = "DEMO1"


def engine_config(tmp_path, *, slow: bool):
    """A configuration on a free port; ``slow``: every venue 1.5 s away, and a stop does
    not wait for the venues. Returns (path, endpoint)."""
    sim = slow_sim(tmp_path, 1_500_000) if slow else QUIET_SIM
    port = free_port()
    path = tmp_path / "engine.toml"
    text = config_text(port, tmp_path / "journal", sim=sim)
    if slow:
        text = text.replace("heartbeat_timeout_ms = 60000",
                            "heartbeat_timeout_ms = 60000\nshutdown_grace_ms = 0")
    path.write_text(text)
    return path, f"tcp://127.0.0.1:{port}"


def rest(client, cl_ord_id, qty="10", price="49.00", account=ACCOUNT, **fields):
    client.new_order("AAA", "buy", qty, price, account=account, cl_ord_id=cl_ord_id, **fields)
    return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def answer(client, cl_ord_id, timeout=5.0):
    """The answer to the cancel or replace ``cl_ord_id``: a Reject or a report under it."""
    return client.recv_until(lambda m: m.cl_ord_id == cl_ord_id and (
        isinstance(m, Reject) or isinstance(m, ExecutionReport) and m.exec_type in (
            ExecType.CANCELED, ExecType.REPLACED, ExecType.REJECTED)), timeout)[-1]


def status(client, cl_ord_id, account=ACCOUNT) -> OrderStatusReply:
    client.status(cl_ord_id, account=account)
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def live_qty(reply: OrderStatusReply) -> int:
    """What the order has working at venues, by its children's state."""
    return sum(int(c.qty) - int(c.cum_qty) for c in reply.children if not c.done)


@contextlib.contextmanager
def restarted_and_resumed(path, endpoint, session_id, last_seq):
    """The engine started again on ``path``; yields (client, what it was sent) of the
    session resumed there."""
    with ThreadedEngine(path):
        client, got = resumed(endpoint, session_id, last_seq)
        with client:
            yield client, got


def resumed(endpoint, session_id, last_seq) -> tuple[Client, list]:
    """The session resumed after a restart, and what it was sent meanwhile."""
    client = Client(endpoint)
    client.resume(session_id, last_seq)
    got = client.recv_until(lambda m: isinstance(m, HeartbeatAck) and m.seq > last_seq, 5)
    return client, got + client.drain(0.3)


def test_a_cancel_and_a_replace_in_flight_at_kill_9_are_answered_after_the_restart(tmp_path):
    path, endpoint = engine_config(tmp_path, slow=True)
    proc = start_subprocess(path, tmp_path / "engine.log")
    try:
        client = open_session(endpoint)
        assert rest(client, "A").exec_type == ExecType.NEW
        assert rest(client, "B").exec_type == ExecType.NEW
        time.sleep(1.7)  # the children are acknowledged
        client.drain(0.1)
        client.cancel("A", account=ACCOUNT, cl_ord_id="CXL-A")
        client.replace("B", account=ACCOUNT, qty="30", cl_ord_id="RPL-B")
        time.sleep(0.5)  # journaled; the venues' answers are a second away
        assert not [m for m in client.drain(0.1) if isinstance(m, ExecutionReport)]
        session_id, last = client.session_id, client.last_seq
        client.close()
    finally:
        kill_9(proc)
    with restarted_and_resumed(path, endpoint, session_id, last) as (client, got):
        reports = {m.cl_ord_id: m for m in got if isinstance(m, ExecutionReport)}
        canceled, replaced = reports["CXL-A"], reports["RPL-B"]
        assert (canceled.exec_type, canceled.orig_cl_ord_id, canceled.leaves_qty) == \
            (ExecType.CANCELED, "A", "0")
        assert (replaced.exec_type, replaced.orig_cl_ord_id, replaced.qty) == \
            (ExecType.REPLACED, "B", "30")
        a = status(client, "A")
        assert a.report.ord_status == OrdStatus.CANCELED and live_qty(a) == 0
        b = status(client, "RPL-B")
        assert b.report.ord_status == OrdStatus.NEW and live_qty(b) == 30


def test_a_replace_in_flight_that_a_fill_overtakes_at_kill_9_cancels_the_rest(tmp_path):
    """A fill that raced the replace and reached its new qty: live the replace is refused and
    the rest canceled (protocol.md). Recovery judged the qty as if the replace had only now
    arrived, which refuses it and leaves the order working: routed again, it could buy past the
    client's new total."""
    sim = slow_sim(tmp_path, 300_000)
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal", sim=sim,
                                extra="[router]\nack_timeout_ns = 5000000000\n"))
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = start_subprocess(path, tmp_path / "engine.log")
    try:
        client = open_session(endpoint)
        assert rest(client, "B", qty="100", price="50.00").exec_type == ExecType.NEW
        time.sleep(0.8)  # its child rests at the venue and the router has seen it there
        client.new_order("AAA", "sell_short", "60", "50.00", account="DEMO2", cl_ord_id="S",
                         locate=True)
        time.sleep(0.4)  # the sell reaches the venue first, then the replace's cancel
        client.replace("B", account=ACCOUNT, qty="50", cl_ord_id="B-r")
        partial = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.cl_ord_id == "B", 5)[-1]
        kill_9(proc)  # before the venue's cancel comes back (0.4 s later)
        assert (partial.exec_type, partial.cum_qty) == (ExecType.PARTIAL_FILL, "60")
        session_id, last = client.session_id, client.last_seq
        client.close()
    finally:
        kill_if_running(proc)
    with restarted_and_resumed(path, endpoint, session_id, last) as (client, got):
        reports = [m for m in got if isinstance(m, ExecutionReport)]
        refused = next(m for m in reports if m.cl_ord_id == "B-r")
        assert (refused.exec_type, refused.reject_name) == \
            (ExecType.REJECTED, "REPLACE_QTY_NOT_ABOVE_FILLED")
        assert "filled while the replace was in flight" in refused.text
        canceled = next(m for m in reports if m.cl_ord_id == "B")
        assert (canceled.exec_type, canceled.cum_qty, canceled.leaves_qty) == \
            (ExecType.CANCELED, "60", "0")
        b = status(client, "B")
        assert b.report.ord_status == OrdStatus.CANCELED and live_qty(b) == 0


def test_requests_in_flight_at_a_stop_finish_as_they_would_have_live(tmp_path):
    path, endpoint = engine_config(tmp_path, slow=True)
    with ThreadedEngine(path):
        client = open_session(endpoint)
        for cl_ord_id in ("R", "Q", "K"):
            rest(client, cl_ord_id)
        rest(client, "K2", account="DEMO2")
        time.sleep(1.7)
        client.drain(0.1)
        # risk refuses the new terms once the children are down
        client.replace("R", account=ACCOUNT, qty="200000", cl_ord_id="R-big")
        # a Cancel queued behind a Replace: the cancel wins
        client.replace("Q", account=ACCOUNT, qty="20", cl_ord_id="Q-rpl")
        client.cancel("Q", account=ACCOUNT, cl_ord_id="Q-cxl")
        # an account's kill switch pulls an order whose replace is in flight
        client.replace("K2", account="DEMO2", qty="20", cl_ord_id="K2-rpl")
        client.send(KillSwitch(req_id="ks", action="engage", scope="account", target="DEMO2"))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        assert not [m for m in client.drain(0.2) if isinstance(m, ExecutionReport)
                    and m.orig_cl_ord_id is not None]
        session_id, last = client.session_id, client.last_seq
        client.close()
    with ThreadedEngine(path):
        client, got = resumed(endpoint, session_id, last)
        with client:
            answers = {m.cl_ord_id: m for m in got if isinstance(m, ExecutionReport)
                       and m.orig_cl_ord_id is not None}
            big = answers["R-big"]
            assert (big.exec_type, big.reject_name, big.qty) == \
                (ExecType.REJECTED, "MAX_ORDER_QTY", "10")
            r = status(client, "R")
            assert r.report.ord_status == OrdStatus.NEW and live_qty(r) == 10
            # the refused replace spent its id, as live
            client.replace("R", account=ACCOUNT, qty="20", cl_ord_id="R-big")
            assert answer(client, "R-big").reject_name == "DUPLICATE_CL_ORD_ID"

            assert (answers["Q-rpl"].exec_type, answers["Q-rpl"].reject_name) == \
                (ExecType.REJECTED, "ORDER_NOT_REPLACEABLE")
            assert (answers["Q-cxl"].exec_type, answers["Q-cxl"].orig_cl_ord_id) == \
                (ExecType.CANCELED, "Q")
            assert live_qty(status(client, "Q")) == 0

            assert (answers["K2-rpl"].exec_type, answers["K2-rpl"].reject_name) == \
                (ExecType.REJECTED, "KILL_SWITCH")
            k2 = status(client, "K2", account="DEMO2")
            assert k2.report.ord_status == OrdStatus.CANCELED and live_qty(k2) == 0
            # orders with nothing in flight go back to the market as before
            assert live_qty(status(client, "K")) == 10


def refusals(client):
    """Orders refused at validation, by risk and when routed; replaces refused by risk and
    before it."""
    assert rest(client, "val", price="49.005").reject_name == "OFF_TICK"
    assert rest(client, "risk", qty="200000").reject_name == "MAX_ORDER_QTY"
    # a resting offer for a post-only bid to cross
    client.new_order("AAA", "sell_short", "5", "50.00", account="DEMO2", cl_ord_id="ask",
                     locate=True)
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "ask", 5)
    time.sleep(0.2)
    assert rest(client, "route", price="50.00", post_only=True).reject_name == \
        "POST_ONLY_WOULD_CROSS"
    rest(client, "w")
    client.replace("w", account=ACCOUNT, qty="200000", cl_ord_id="w-big")
    assert answer(client, "w-big").reject_name == "MAX_ORDER_QTY"
    client.replace("w", account=ACCOUNT, price="49.005", cl_ord_id="w-tick")
    assert answer(client, "w-tick").reject_name == "OFF_TICK"


def cl_ord_ids(engine):
    return engine.call(lambda: engine.service.pipeline.risk.snapshot()["cl_ord_ids"])


def test_ids_risk_refused_stay_spent_at_risk_after_a_restart(tmp_path):
    path, endpoint = engine_config(tmp_path, slow=False)
    with ThreadedEngine(path) as engine:
        client = open_session(endpoint)
        refusals(client)
        live = cl_ord_ids(engine)
        session_id, last = client.session_id, client.last_seq
        client.close()
    with ThreadedEngine(path) as engine:
        assert cl_ord_ids(engine) == live
        client, _ = resumed(endpoint, session_id, last)
        with client:
            # as live, "risk" is spent in its account (ids are per account: the
            # order table and risk's ids, tests/integration/test_clordid_per_account.py)
            got = rest(client, "risk", account=ACCOUNT)
            assert got.reject_name == "DUPLICATE_CL_ORD_ID"


def test_a_refused_orders_stages_are_those_it_went_through(tmp_path):
    path, endpoint = engine_config(tmp_path, slow=False)
    names = ("val", "risk", "route")

    def stages(client):
        return {n: [s.stage for s in status(client, n).stages] for n in names}

    with ThreadedEngine(path):
        with open_session(endpoint) as client:
            refusals(client)
            live = stages(client)
    assert live == {"val": ["RECEIVED", "REJECTED"],
                    "risk": ["RECEIVED", "VALIDATED", "REJECTED"],
                    "route": ["RECEIVED", "VALIDATED", "RISK_CHECKED", "REJECTED"]}
    with ThreadedEngine(path), Client(endpoint) as client:
        assert stages(client) == live


def test_status_after_a_restart_is_the_report_the_orders_session_got(tmp_path):
    path, endpoint = engine_config(tmp_path, slow=False)
    with ThreadedEngine(path), open_session(endpoint) as owner, open_session(endpoint) as other:
        rest(owner, "o1")
        other.cancel("o1", account=ACCOUNT, cl_ord_id="o2")
        theirs = answer(other, "o2")
        assert answer(owner, "o2").seq != theirs.seq  # (each session numbers its copy)
        before = status(owner, "o1").report
    with ThreadedEngine(path), Client(endpoint) as client:
        assert status(client, "o1").report == before



def test_requests_naming_no_order_they_could_act_on_leave_nothing_across_a_kill_9(tmp_path):
    """A Cancel or Replace naming no order (or a done one) is refused before it is journaled
    and spends no id: after a kill -9 the journal has nothing to replay for it, the ids
    are free, and what was journaled comes back as it was."""
    from engine.messages import OrderStatusReply, OrdStatus, Reject
    from tests.integration.engine_harness import kill_9, kill_if_running, start_subprocess
    port = free_port()
    endpoint, config, log = f"tcp://127.0.0.1:{port}", tmp_path / "engine.toml", \
        tmp_path / "engine.log"
    config.write_text(config_text(port, tmp_path / "journal", fsync="always"))

    def answer(client, cl_ord_id):
        return client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                 and m.cl_ord_id == cl_ord_id, 5)[-1]

    proc = start_subprocess(config, log)
    try:
        with Client(endpoint) as client:
            client.cancel("nobody", account="DEMO1", cl_ord_id="u-1")
            client.replace("nobody", account="DEMO1", qty="5", cl_ord_id="u-2")
            assert [answer(client, c).reject_name for c in ("u-1", "u-2")] == \
                ["UNKNOWN_CL_ORD_ID", "UNKNOWN_CL_ORD_ID"]
            client.new_order("AAA", "buy", "10", "40.00", account="DEMO1", cl_ord_id="o-1")
            assert answer(client, "o-1").exec_type == ExecType.NEW
            client.cancel("o-1", account="DEMO1", cl_ord_id="o-1-x")
            assert answer(client, "o-1-x").exec_type == ExecType.CANCELED
            client.cancel("o-1-x", account="DEMO1", cl_ord_id="late")
            assert answer(client, "late").reject_name == "TOO_LATE_TO_CANCEL"
        kill_9(proc)
        proc = start_subprocess(config, log)
        with Client(endpoint) as client:
            for cl_ord_id in ("u-1", "u-2", "late"):
                client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id=cl_ord_id)
                assert answer(client, cl_ord_id).exec_type == ExecType.NEW
            client.new_order("AAA", "buy", "1", "40.00", account="DEMO1", cl_ord_id="o-1-x")
            assert answer(client, "o-1-x").reject_name == "DUPLICATE_CL_ORD_ID"
            client.status("o-1", account="DEMO1")
            status = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
            assert status.report.ord_status == OrdStatus.CANCELED
    finally:
        kill_if_running(proc)


def test_a_replace_refused_after_its_session_was_let_go_is_answered_in_the_journal(
        tmp_path, monkeypatch):
    # (Review, 2026-12-06.) A replace refused once the children were down, after intake
    # had let its session go, was answered nowhere, not even in the journal: every
    # restart found it unanswered and took it up again.
    path, endpoint = engine_config(tmp_path, slow=True)
    with ThreadedEngine(path) as engine:
        pipeline = engine.service.pipeline
        client = open_session(endpoint)
        assert rest(client, "R").exec_type == ExecType.NEW
        time.sleep(1.7)  # the child is acknowledged
        client.replace("R", account=ACCOUNT, qty="200000", cl_ord_id="R-big")  # risk refuses
        time.sleep(0.3)
        session = engine.call(lambda: pipeline.sessions[client.session_id])
        engine.call(lambda: pipeline.on_session_forgotten(session))  # as intake does
        client.close()
        deadline = time.time() + 10
        while engine.call(lambda: pipeline._pending) and time.time() < deadline:
            time.sleep(0.1)
        assert not engine.call(lambda: pipeline._pending)        # refused, routed again
    in_flight = seen_at_resume(monkeypatch, lambda pipeline, summary: summary.in_flight)
    with ThreadedEngine(path):
        assert in_flight == [[]]


def test_a_new_order_refused_before_its_price_is_ticks_reports_the_price_sent(tmp_path):
    """An order refused because its price (or quantity) did not convert reported
    ``price`` null: the client could not see in the report what it had sent (review). The
    price text is echoed whole, live, in status replies and after a restart (recovery
    recreates the refused orders with price 0, as before)."""
    path, endpoint = engine_config(tmp_path, slow=False)
    sent = {"tick": ("10", "49.005", "OFF_TICK"),
            "huge": ("10", "99999999999999999999.5", "VALUE_OUT_OF_RANGE"),
            "lot": ("10.5", "49.00", "OFF_LOT")}
    with ThreadedEngine(path):
        with open_session(endpoint) as client:
            for cl_ord_id, (qty, price, reason) in sent.items():
                got = rest(client, cl_ord_id, qty=qty, price=price)
                assert (got.exec_type, got.reject_name, got.price, got.qty) == \
                    (ExecType.REJECTED, reason, price, "0")
                assert status(client, cl_ord_id).report.price == price
            # an order whose price converted still reports it in ticks' form
            assert rest(client, "risk", qty="200000", price="49.10").price == "49.1"
            session_id, last = client.session_id, client.last_seq
    with ThreadedEngine(path):
        client, _ = resumed(endpoint, session_id, last)
        with client:
            for cl_ord_id, (qty, price, reason) in sent.items():
                reply = status(client, cl_ord_id)
                assert (reply.report.reject_name, reply.report.price) == (reason, price)
            assert rest(client, "after", price="49.00").exec_type == ExecType.NEW


def test_a_trade_history_reply_is_the_same_bytes_before_and_after_a_restart(tmp_path):
    # The live engine books a fill's side as the order's plain int, the replay as a Side
    # (a checkpoint decodes it so): both encode as the same integer, so the replies'
    # frames (as sent, and as the journal, and so a gateway, holds them) carry the same
    # fills, byte for byte, before and after a restart.
    import msgspec

    from engine.journal import JournalReader, RecordKind
    from engine.messages import TradeHistoryReply
    from tests.integration.engine_harness import engine_config as market_config
    from tests.integration.test_order_forgetting import rest_market

    def ask(client) -> None:
        client.history("DEMO1", 0, 2**62)
        reply = client.recv_until(lambda m: isinstance(m, TradeHistoryReply) and m.last, 5)[-1]
        assert len(reply.fills) == 2

    path, endpoint = market_config(tmp_path)  # (the simulator's market: DEMO2 rests)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        rest_market(engine, client)
        for cid, qty in (("f1", "7"), ("f2", "3")):
            client.new_order("AAA", "buy", qty, "51.00", account="DEMO1", cl_ord_id=cid)
            client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cid
                              and m.exec_type == ExecType.FILL, 5)
        ask(client)
    with ThreadedEngine(path), Client(endpoint) as client:
        ask(client)
    fields = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
    sent = [fields.decode(fields.decode(rec.payload)["event"])
            for rec in JournalReader(tmp_path / "journal").records()
            if rec.kind == RecordKind.EVENT and b"TradeHistoryReply" in rec.payload]
    assert len(sent) == 2 and bytes(sent[0]["fills"]) == bytes(sent[1]["fills"])
