"""Texts the engine writes itself (a refused reload's reason, a store's failure) fit the
protocol's 512 characters, and a journal holding a longer one from an older engine restarts.

A ReloadLimits refused for limits of 80 symbols the venues do not trade had a 1,000-character
reason: the client could not decode the AdminReply, and, journaled, it made every restart on
that journal fail (the recovery decodes events with the wire's schema).
"""
import time

import msgspec

from engine.client import Client
from engine.journal import JournalWriter, RecordKind
from engine.messages import AdminReply, JournalSession, ReloadLimits, event_envelope
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port

UNKNOWN_LIMITS = "".join(f'\n[risk.instruments.SYM{i:03d}X]\nmax_order_qty = "1000"\n'
                         for i in range(80))


def test_a_refused_reload_with_a_long_reason_is_answered_and_restarts(tmp_path):
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    good = config_text(port, tmp_path / "journal")
    path.write_text(good)
    with ThreadedEngine(path), Client(endpoint) as client:
        path.write_text(good + UNKNOWN_LIMITS)  # another desk's limits, pasted
        client.send(ReloadLimits(req_id="r1"))
        reply = client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1]
        assert not reply.ok and reply.reject_name == "INVALID_FIELD"
        assert reply.text.startswith("reload refused, limits unchanged: ")
        assert len(reply.text) == 512 and reply.text.endswith("…")  # cut, and says so
    path.write_text(good)
    with ThreadedEngine(path) as engine:  # the journal holds the reply: it restarts
        assert engine.service.recovered is not None


def test_a_journal_with_an_older_engines_long_text_restarts(tmp_path):
    """An event journaled before texts were cut is read with its text cut, not refused."""
    port = free_port()
    path = tmp_path / "engine.toml"
    path.write_text(config_text(port, tmp_path / "journal"))
    long = AdminReply(req_id="r1", ok=False, text="x" * 1000, reject_reason=68,
                      reject_name="INVALID_FIELD", seq=1, transact_time=1)
    with JournalWriter(tmp_path / "journal", fsync="none") as writer:
        # As an older engine wrote it: the session's key, its envelope, then the frame sent.
        writer.append_msg(RecordKind.META, JournalSession(session_id="s1", principal=""))
        writer.append(RecordKind.EVENT, event_envelope("s1") + msgspec.msgpack.encode(long))
    with ThreadedEngine(path) as engine:
        session = next(s for s in engine.service.recovered.sessions if s.session_id == "s1")
        [kept] = session.messages
        assert kept.text == "x" * 511 + "…" and kept.seq == 1


class _FailingStore:
    """A trade store whose database answers with a long error (a driver's message can
    quote the whole query)."""

    def delivered_position(self) -> int:
        return 2**62

    def fills(self, account, start_ns, end_ns, symbol):
        raise RuntimeError("could not read the fills: " + "x" * 600)


def test_a_history_answer_after_a_long_store_failure_fits_the_protocol(tmp_path):
    """The store's failure was cut to 512 characters, then put inside the answer's own
    sentence: a ``text`` of some 700 characters, which the client could not decode."""
    from ext.types import Side
    from engine.messages import ExecutionReport, ExecType, TradeHistoryReply
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal",
                                extra="[history]\nmax_fills_per_account = 1\n"))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        market = engine.service.venues.market
        engine.call(lambda: market.submit("NEXA", "AAA", Side.SELL, 10, 5000, account=77))
        time.sleep(0.3)  # the venue's book reaches the router (else the buy may rest)
        client.new_order("AAA", "buy", "2", "50.00", account="DEMO1", cl_ord_id="h1")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.exec_type == ExecType.FILL, 5)
        client.new_order("AAA", "buy", "2", "50.00", account="DEMO1", cl_ord_id="h2")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "h2"
                          and m.exec_type == ExecType.FILL, 5)
        engine.call(lambda: setattr(engine.service.pipeline, "trade_store", _FailingStore()))
        client.history("DEMO1", 0, 2**63 - 1, req_id="q1")
        reply = client.recv_until(lambda m: isinstance(m, TradeHistoryReply), 5)[-1]
        assert not reply.complete and len(reply.fills) == 1  # what memory holds
        assert "the trade store failed: RuntimeError: could not read the fills" in reply.text
        # The failure is cut (and says so); the sentence around it is whole.
        assert len(reply.text) <= 512 and "x…; " in reply.text
        assert reply.text.endswith("the trade store (postgres gateway) and the journal have them")
    with ThreadedEngine(path) as engine:  # the journal holds the reply: it restarts
        assert engine.service.recovered is not None
