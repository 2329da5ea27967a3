"""Sessions across a restart: recovery gives risk exactly the session slots the live engine had.

A real engine (in a thread) drops sessions (``intake.max_sessions``) while orders they
placed still work; then another engine starts on the same journal and the two risk
engines' session state (names, slots, free list, the cl_ord_ids each slot spent) is
compared.
"""
import time

from engine.client import Client
from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import (AdminReply, ExecType, ExecutionReport, HeartbeatAck, JournalSession,
                             KillSwitch)
from tests.integration.engine_harness import ThreadedEngine, engine_config, seen_at_resume
from tests.integration.test_order_forgetting import rest_market


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


def test_a_session_the_journal_ended_is_not_taken_up_again_by_a_later_journal_session(
        tmp_path, monkeypatch, caplog):
    # A JournalSessionEnd is final: intake dropped the session and nothing can resume it.
    # A JournalSession naming it after that (no engine writes one now; one that handed a
    # dropped session's frames to the pipeline did) gave it its journal envelope again,
    # kept for good by the restarted engine, which the live one no longer had. (Such an
    # engine wrote its ends without `final`, which tells recovery to remember them.)
    from engine import pipeline as pipeline_module
    from engine.messages import JournalSessionEnd
    monkeypatch.setattr(pipeline_module, "JournalSessionEnd",
                        lambda session_id, final: JournalSessionEnd(session_id=session_id))
    path, endpoint = one_session_engine(tmp_path)
    with ThreadedEngine(path) as engine:
        with Client(endpoint) as a:
            a.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1")
            report(a, "a1", ExecType.NEW)
            dropped = a.session_id
        time.sleep(0.2)
        with Client(endpoint) as b:  # drops A: JournalSessionEnd
            b.heartbeat()
            b.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        live = engine.call(lambda: sorted(engine.service.pipeline._event_envelopes))
    assert dropped not in live
    with JournalWriter(tmp_path / "journal") as journal:
        journal.append_msg(RecordKind.META, JournalSession(session_id=dropped, principal=""))
    after = seen_at_resume(monkeypatch, lambda pipeline, recovered: (
        sorted(pipeline._event_envelopes), [s.session_id for s in recovered.sessions]))
    with ThreadedEngine(path):
        envelopes, restored = after[0]
    assert envelopes == live and dropped not in restored
    assert any("ended" in r.getMessage() and dropped in r.getMessage() for r in caplog.records)


def test_a_request_of_a_session_intake_dropped_is_not_taken(tmp_path, monkeypatch):
    # Intake routes no frame to a session it dropped, but one whose disconnect notice it
    # missed could reach the pipeline. Pipeline.handle took it: the session went back
    # into its table and into risk (never released again), the order was accepted with
    # its acknowledgement journaled after the session's JournalSessionEnd (under a second
    # JournalSession) and sent to nobody; after a restart risk's slots differed from live.
    path, endpoint = one_session_engine(tmp_path)
    with ThreadedEngine(path) as engine:
        pipeline, intake = engine.service.pipeline, engine.service.intake
        with Client(endpoint) as a:
            a.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1",
                        time_in_force="gtc")
            report(a, "a1", ExecType.NEW)
            session = engine.call(lambda: pipeline.sessions[a.session_id])
            late = a.build_new_order("AAA", "buy", "5", "45.00", account="DEMO1",
                                     cl_ord_id="a2")
        time.sleep(0.2)
        with Client(endpoint) as b:  # drops A
            b.heartbeat()
            b.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
            assert engine.call(lambda: session.dropped)
            engine.call(lambda: intake._hand_over(session, late))  # as if its frame came
            b.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="b1")
            report(b, "b1", ExecType.NEW)
        assert engine.call(lambda: pipeline.orders.find("DEMO1", "a2")) is None
        assert session.session_id not in engine.call(lambda: list(pipeline.sessions))
        before = engine.call(lambda: risk_sessions(pipeline.risk))
    assert session.session_id not in before["sessions"]
    named = [rec for rec in JournalReader(tmp_path / "journal").records()
             if rec.kind == RecordKind.META and session.session_id.encode() in rec.payload]
    assert len(named) == 2, "its JournalSession and JournalSessionEnd, nothing after"
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: risk_sessions(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [before]


def test_risk_sessions_after_a_restart_are_live_under_a_random_load_of_dropped_sessions(
        tmp_path, monkeypatch):
    # Short-lived sessions (two held at most: each new one drops the longest idle) place,
    # replace (some beyond max_order_qty: refused by risk), cancel and fill orders of
    # each other's; a restart must give risk exactly the live engine's sessions, slots,
    # free list, working orders and spent cl_ord_ids.
    import random
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("heartbeat_timeout_ms = 60000",
                                             "heartbeat_timeout_ms = 60000\nmax_sessions = 2"))
    rng = random.Random(5)
    working, refused = [], 0
    with ThreadedEngine(path) as engine:
        with Client(endpoint) as market:
            rest_market(engine, market)
        for step in range(30):
            with Client(endpoint) as client:
                for k in range(rng.randint(1, 3)):
                    cid, r = f"o{step}-{k}", rng.random()
                    if r < 0.3 and working:
                        big = rng.random() < 0.6
                        client.replace(working[rng.randrange(len(working))], account="DEMO1",
                                       qty="200000" if big else str(rng.randint(1, 30)),
                                       cl_ord_id=cid)
                        got = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                                and m.cl_ord_id == cid, 5)[-1]
                        if got.exec_type == ExecType.REPLACED:
                            working[working.index(got.orig_cl_ord_id)] = cid
                        refused += got.reject_name == "MAX_ORDER_QTY"
                    elif r < 0.45 and working:
                        client.cancel(working.pop(rng.randrange(len(working))),
                                      account="DEMO1", cl_ord_id=cid)
                        client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                          and m.cl_ord_id == cid, 5)
                    elif r < 0.6:
                        client.new_order("AAA", "buy", str(rng.randint(1, 20)), "51.00",
                                         account="DEMO1", cl_ord_id=cid)
                        report(client, cid, ExecType.FILL)
                    else:
                        client.new_order("AAA", "buy", str(rng.randint(1, 20)),
                                         f"{rng.randint(4800, 4990) / 100:.2f}",
                                         account="DEMO1", cl_ord_id=cid, time_in_force="gtc")
                        report(client, cid, ExecType.NEW)
                        working.append(cid)
            time.sleep(0.05)  # (closed: idle, the next session drops it)
        before = engine.call(lambda: risk_sessions(engine.service.pipeline.risk))
    assert refused >= 3 and None in before["sessions"]
    after = seen_at_resume(monkeypatch, lambda pipeline, summary: risk_sessions(pipeline.risk))
    with ThreadedEngine(path):
        assert after == [before]


def connect_and_go(endpoint, n: int) -> None:
    """``n`` short sessions, one after the other: each says hello and goes (each new one
    drops the last, under one_session_engine)."""
    for _ in range(n):
        with Client(endpoint) as client:
            client.heartbeat(cancel_on_disconnect=True)
            client.recv_until(lambda m: isinstance(m, HeartbeatAck), 5)
        time.sleep(0.05)  # (closed: idle, the next session drops it)


def test_the_replay_keeps_nothing_of_the_sessions_intake_dropped(tmp_path, monkeypatch):
    # The replay remembered every session the journal ended (its id in `ended`, its key in
    # `principals`, its cancel-on-disconnect setting) for good, and carried them in every
    # checkpoint: an engine serving many short connections grew both with each one.
    from engine import recovery
    path, endpoint = one_session_engine(tmp_path)
    kept = ("ended", "principals", "cancel_on_disconnect", "sent", "marks", "in_risk")
    saved = []
    finish = recovery.Replay.finish
    monkeypatch.setattr(recovery.Replay, "finish",
                        lambda replay: (saved.append((len(replay.save()), {
                            name: set(getattr(replay, name)) for name in kept})),
                            finish(replay))[1])
    for sessions in (3, 20):
        with ThreadedEngine(path) as engine:
            connect_and_go(endpoint, sessions)
            pipeline = engine.service.pipeline
            live = engine.call(lambda: (risk_sessions(pipeline.risk),
                                        sorted(pipeline._event_envelopes)))
        after = seen_at_resume(monkeypatch, lambda pipeline, recovered: (
            risk_sessions(pipeline.risk), sorted(pipeline._event_envelopes)))
        with ThreadedEngine(path):
            assert after == [live]
    # (saved: each engine's start, twice per round; the restarts after 3 and 23 sessions)
    (small, _), (big, at_23) = saved[1], saved[3]
    assert at_23["ended"] == set()
    for name in kept:
        assert len(at_23[name]) <= 1, (name, at_23[name])  # the one session intake holds
    assert big - small < 100, "the checkpoint does not grow with the sessions that went"


def test_a_kill_switch_whose_handling_failed_stands_after_a_restart_as_live(
        tmp_path, monkeypatch):
    # Risk flips a kill switch first; a failure after it (here: taking the orders down)
    # reaches the client as intake's INTERNAL_ERROR Reject, with the switch engaged. The
    # replay waited for an AdminReply that never comes: the request stayed pending for
    # good (in every checkpoint), and the switch came back released after a restart.
    from engine.messages import Reject
    from engine.pipeline import Pipeline
    pull = Pipeline._pull

    def failing(self, keys, now, reason, text):
        if "kill switch" in text:
            raise RuntimeError("a defect taking the orders down")
        return pull(self, keys, now, reason, text)

    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        client.new_order("AAA", "buy", "5", "45.00", account="DEMO1", cl_ord_id="a1",
                         time_in_force="gtc")
        report(client, "a1", ExecType.NEW)
        monkeypatch.setattr(Pipeline, "_pull", failing)
        client.send(KillSwitch(req_id="k1", action="engage", scope="symbol", target="AAA"))
        refused = client.recv_until(lambda m: isinstance(m, Reject), 5)[-1]
        assert (refused.reject_name, refused.ref_type) == ("INTERNAL_ERROR", "KillSwitch")
        monkeypatch.setattr(Pipeline, "_pull", pull)
        live = engine.call(lambda: engine.service.pipeline.risk.kill_switches())
    assert live["instruments"] == ["AAA"]
    seen = replay_state(monkeypatch, ("kill_requests", "engaged"))
    with ThreadedEngine(path) as engine:
        assert engine.call(lambda: engine.service.pipeline.risk.kill_switches()) == live
        assert engine.call(lambda: engine.service.pipeline.orders.find("DEMO1", "a1").done)
    assert seen[0]["kill_requests"] == {}
    assert list(seen[0]["engaged"]) == [("symbol", "AAA")]
