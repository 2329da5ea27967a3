"""What intake does with messages that wait in its socket while its loop is busy.

The engine's loop is held (a callback that blocks) while clients send, so the
order of events is fixed, not timing luck: real engine, real sockets.

* A request still unread when its connection dies belongs to the session it
  was sent in. The engine learns that a connection is gone when a send to it
  fails (ROUTER_MANDATORY: EHOSTUNREACH) and forgets the route; a request the
  client sent just before it went, read after, opened a new session that
  nobody would ever resume, so its acknowledgement never reached the client,
  which resumes its own session after reconnecting.
* Bulks waiting in a burst are answered bulk by bulk.
"""
import threading
import time

from engine.client import Client
from engine.messages import ExecType, ExecutionReport, Reject
from ext.types import RejectReason
from tests.integration.engine_harness import serving


def hold_loop(engine, held: threading.Event, release: threading.Event, then) -> None:
    """Block the engine's loop until ``release``; ``then()`` runs on it just before it goes on."""
    def block():
        held.set()
        release.wait(10)
        then()
    engine._loop.call_soon_threadsafe(block)
    assert held.wait(5)


def test_an_order_unread_when_its_connection_died_is_acknowledged_in_its_session(tmp_path):
    with serving(tmp_path) as (engine, endpoint):
        client = Client(endpoint)
        client.heartbeat()  # (its ack names the session)
        client.new_order("AAA", "buy", "1", "48.00", account="DEMO1", cl_ord_id="first")
        first = client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)[-1]
        assert first.exec_type == ExecType.NEW and client.session_id
        session_id, last_seq = client.session_id, first.seq
        session = engine.call(lambda: engine.service.intake.sessions[session_id])

        held, release = threading.Event(), threading.Event()
        intake = engine.service.intake

        def probe():
            # The send that finds the connection gone: any message to the
            # session (in service, a venue's fill for "first") sent and flushed
            # before "second" is read.
            session.reject(RejectReason.MALFORMED_MESSAGE, "probe")
            intake._flush()
            assert session._route is None  # the engine knows the connection is gone
        hold_loop(engine, held, release, probe)
        client.new_order("AAA", "buy", "1", "48.01", account="DEMO1", cl_ord_id="second")
        time.sleep(0.2)  # on its way: in the engine's socket, which the held loop cannot read
        client.close()
        time.sleep(0.3)  # the connection is closed
        release.set()

        with Client(endpoint) as again:
            again.resume(session_id, last_seq)
            got = again.recv_until(lambda m: isinstance(m, ExecutionReport)
                                   and m.cl_ord_id == "second", 5)
        assert any(isinstance(m, Reject) and m.text == "probe" for m in got)
        assert got[-1].exec_type == ExecType.NEW and got[-1].seq > last_seq
        # One session, resumed: not a second one that nobody resumes.
        assert engine.call(lambda: list(engine.service.intake.sessions)) == [session_id]


def test_a_burst_of_bulks_is_answered_bulk_by_bulk(tmp_path):
    """A wake-up handles up to drain_batch messages before its replies leave; a bulk of
    100 orders counted as one, so ten bulks waiting in the socket were all handled (1,000
    orders) before the first acknowledgement left. Now a bulk counts its replies."""
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        intake = engine.service.intake
        flushed = []
        flush = intake._flush

        def recording_flush():
            flushed.append(len(intake._outbox))
            flush()
        held, release = threading.Event(), threading.Event()
        hold_loop(engine, held, release, lambda: setattr(intake, "_flush", recording_flush))
        for b in range(10):
            client.bulk([client.build_new_order("AAA", "buy", "1", "48.00", account="DEMO1",
                                                cl_ord_id=f"b{b}-{i}") for i in range(100)])
        time.sleep(0.3)  # all ten in the engine's socket, which the held loop cannot read
        release.set()
        acks = [m for m in client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                              and m.cl_ord_id == "b9-99", 10)
                if isinstance(m, ExecutionReport)]
        assert len(acks) == 1000
        assert max(flushed) <= 100 + 1, flushed  # one bulk's acks (and a stray), not ten
