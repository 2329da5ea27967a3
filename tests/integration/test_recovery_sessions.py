"""Sessions across a restart: recovery gives risk exactly the session slots the live engine had.

A real engine (in a thread) drops sessions (``intake.max_sessions``) while orders they
placed still work; then another engine starts on the same journal and the two risk
engines' session state (names, slots, free list, the cl_ord_ids each slot spent) is
compared.
"""
import time

from engine.client import Client
from engine.messages import AdminReply, ExecType, ExecutionReport, HeartbeatAck, KillSwitch
from tests.integration.engine_harness import ThreadedEngine, engine_config, seen_at_resume


def report(client, cl_ord_id, exec_type):
    """The first ExecutionReport of ``exec_type`` for ``cl_ord_id``."""
    return client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id
                             and m.exec_type == exec_type, 5)[-1]


def risk_sessions(risk) -> dict:
    """Risk's session state, comparable between a live engine and a restarted one."""
    snap = risk.snapshot()
    return {key: snap[key] for key in ("sessions", "session_profiles", "session_state",
                                       "session_slots", "free_sessions", "orders", "cl_ord_ids")}


def one_session_engine(tmp_path):
    """An engine config holding one session at a time: each new session drops the last."""
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("heartbeat_timeout_ms = 60000",
                                             "heartbeat_timeout_ms = 60000\nmax_sessions = 1"))
    return path, endpoint


def test_a_replace_risk_refuses_for_a_dropped_sessions_order_leaves_the_slots_as_live(
        tmp_path, monkeypatch):
    # A's order works after intake dropped A (its slot is kept, releasing, until the
    # order is done). B replaces it beyond max_order_qty: risk refuses the replace and
    # records its cl_ord_id under the order's session slot. The replay recorded it under
    # risk.session_index(A's name), which registered A again in a new slot: after the
    # restart D sat in another slot than live, with another free list.
    path, endpoint = one_session_engine(tmp_path)
    with ThreadedEngine(path) as engine:
        with Client(endpoint) as a:
            a.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1",
                        time_in_force="gtc")
            report(a, "a1", ExecType.NEW)
        time.sleep(0.2)
        with Client(endpoint) as b:  # drops A (closed and silent)
            b.replace("a1", account="DEMO1", qty="200000", cl_ord_id="b1")
            refused = report(b, "b1", ExecType.REJECTED)
            assert refused.reject_name == "MAX_ORDER_QTY"
        time.sleep(0.2)
        with Client(endpoint) as d:  # drops B, takes its freed slot
            d.heartbeat()
            d.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            d.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="d1")
            report(d, "d1", ExecType.NEW)
        before = engine.call(lambda: risk_sessions(engine.service.pipeline.risk))
    assert before["sessions"][0] is None and before["session_slots"][0][:2] == [1, 1], \
        "A was released, its slot kept for its working order"
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: risk_sessions(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [before]


def replay_state(monkeypatch, names) -> list:
    """The replay's own bookkeeping ``names`` (``Replay`` attributes) at the end of the
    next engine's recovery, appended to the list returned."""
    from engine import recovery
    seen = []
    finish = recovery.Replay.finish

    def looking(replay):
        seen.append({name: getattr(replay, name) for name in names})
        return finish(replay)
    monkeypatch.setattr(recovery.Replay, "finish", looking)
    return seen


def test_a_refused_kill_switch_leaves_nothing_pending_in_the_replay(tmp_path, monkeypatch):
    # The replay keeps each journaled KillSwitch until its AdminReply. It let go only of
    # those that took (ok): a refused one stayed for good, one per refusal in the journal
    # (and in each checkpoint), for the engine's life.
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path), Client(endpoint) as client:
        for k, (scope, target, ok) in enumerate((("account", "NOBODY", False),
                                                 ("symbol", "ZZZ", False),
                                                 ("symbol", "AAA", True))):
            client.send(KillSwitch(req_id=f"k{k}", action="engage", scope=scope, target=target))
            reply = client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1]
            assert (reply.req_id, reply.ok) == (f"k{k}", ok)
    seen = replay_state(monkeypatch, ("kill_requests", "engaged"))
    with ThreadedEngine(path):
        pass
    assert seen[0]["kill_requests"] == {}
    assert [key for key in seen[0]["engaged"]] == [("symbol", "AAA")]
