"""A routing id another key tried to take over, refused at that key's session limit.

Intake detaches the session it finds on a routing id when another key speaks
there (the other key must never act for it, nor be sent its messages). When
that key was then refused a session of its own (at ``max_sessions_per_key``
or ``max_sessions``, none idle), the routing id used to go on leading to the
detached session: after intake dropped it (silent past
``session_retention_s``: ``JournalSessionEnd`` journaled, its risk slot
released), the first key's frames on that id were still handled by it, under
the entitlements it had when it was dropped, its answers sent to nobody. Now
the id leads nowhere once its session is detached: the next frame there opens
the sender's key a session of its own, or is refused as any new session is.

The server is not started, as in ``test_intake_eviction``: a listener with a
real (unbound) CURVE socket gives the paths their routing tables, principals
are passed as a read passes them, and replies stay in the outbox.
"""
import msgspec
import pytest
import zmq

from engine.config import ClientKey, IntakeConfig, SecurityConfig
from engine.intake import Handler, IntakeServer, _Listener
from engine.messages import Heartbeat, NewOrder, Reject, RejectReason, Side
from tests.unit.engine.test_intake_eviction import servers

S = 1_000_000_000
ALICE, BOB = (zmq.curve_keypair()[0].decode() for _ in range(2))
HEARTBEAT = msgspec.msgpack.encode(Heartbeat())


def order(cl_ord_id: str, account: str = "ACC1") -> bytes:
    return msgspec.msgpack.encode(NewOrder(cl_ord_id=cl_ord_id, account=account, symbol="AAA",
                                           side=Side.BUY, qty="1", price="50"))


def security(alice_accounts=("ACC1",)) -> SecurityConfig:
    return SecurityConfig(clients=[
        ClientKey(name="alice", public_key=ALICE, accounts=list(alice_accounts)),
        ClientKey(name="bob", public_key=BOB, accounts=["ACC2"])])


class Recorder(Handler):
    """Which session each request reached, and the sessions intake let go."""

    def __init__(self):
        self.handled: list[tuple[object, str]] = []
        self.forgotten: list[str] = []

    def handle(self, session, request, positions=None, held=(), encoded=None):
        self.handled.append((session, getattr(request, "cl_ord_id", None)))

    def on_session_forgotten(self, session):
        self.forgotten.append(session.session_id)


class CurveServer:
    def __init__(self, **intake):
        settings = dict(heartbeat_interval_ms=100, heartbeat_timeout_ms=400,
                        session_retention_s=1, request_rate=0, max_sessions_per_key=1)
        settings.update(intake)
        self.handler = Recorder()
        self.server = IntakeServer(IntakeConfig(**settings), security(), self.handler)
        self.server._draining = True  # replies stay in the outbox: no loop runs
        self.listener = _Listener(self.server, self.server._make_socket(), curve=True)
        self.server._listeners.append(self.listener)
        self.sessionless: list[tuple[bytes, Reject]] = []
        self.server._send_sessionless = lambda listener, route, reject: \
            self.sessionless.append((route, reject)) or True

    def close(self) -> None:
        self.listener.close()
        self.server.context.term()

    def frame(self, route: bytes, now: int, principal: str, payload: bytes = HEARTBEAT):
        """A message read from ``route``; the session the routing id leads to after it."""
        self.server._on_frames(self.listener, [route, payload], principal, now, fd=7)
        return self.listener.routes.get(route)

    def refused_take_over(self):
        """Alice's session on b"R"; Bob, at his limit with his sessions busy, speaks on
        b"R" and is refused. Returns Alice's session."""
        alice = self.frame(b"R", 1_000, ALICE)
        for n in range(self.server.config.max_sessions_per_key):
            self.frame(b"bob-%d" % n, 1_000, BOB)
        self.frame(b"R", 2_000, BOB)
        route, refused = self.sessionless[-1]
        assert route == b"R" and refused.reject_reason == RejectReason.NOT_AUTHORIZED
        assert "too many sessions for key bob" in refused.text
        assert not alice.connected
        return alice


@pytest.fixture
def make():
    yield from servers(CurveServer)


def test_a_refused_take_over_leaves_no_route_to_the_detached_session(make):
    """(Only the key's limit refuses it: at the engine's, the session just detached is idle
    and evicted to make room.)"""
    s = make()
    alice = s.refused_take_over()
    assert b"R" not in s.listener.routes
    assert s.server.sessions[alice.session_id] is alice  # kept for a resume by Alice's key


def test_a_dropped_session_handles_nothing_more_from_its_old_routing_id(make):
    s = make()
    alice = s.refused_take_over()
    s.server._check_sessions(1_000 + S + 1)  # both silent past the retention: dropped
    assert alice.session_id in s.handler.forgotten
    again = s.frame(b"R", 1_000 + S + 2, ALICE, order("a-2"))
    # Alice's order reaches a session intake holds, attached to her connection: not the
    # dropped one (journaled after its end, answered to nobody).
    [(session, cl_ord_id)] = s.handler.handled
    assert cl_ord_id == "a-2" and session is again is not alice
    assert again.connected and s.server.sessions[again.session_id] is again
    assert alice.seq == 1 and not alice.connected


def test_a_dropped_session_does_not_keep_entitlements_its_key_lost(make):
    s = make()
    s.refused_take_over()
    s.server._check_sessions(1_000 + S + 1)
    s.server.update_security(security(alice_accounts=()))  # Alice's key loses ACC1
    session = s.frame(b"R", 1_000 + S + 2, ALICE, order("a-2"))
    assert s.handler.handled == []
    reject = msgspec.msgpack.decode(s.server._outbox[-1][1], type=Reject)
    assert s.server._outbox[-1][0] is session
    assert reject.reject_reason == RejectReason.NOT_AUTHORIZED and reject.cl_ord_id == "a-2"


def test_before_the_drop_the_first_keys_frame_opens_a_session_as_after_a_take_over(make):
    """While intake still holds the detached session, its key's frame on the id opens a new
    session, as it does after a take-over that succeeded (the detached one waits for a
    resume by session_id): at the key's limit it evicts its own idle sessions, the detached
    one here, as any new session does."""
    s = make()
    alice = s.refused_take_over()
    again = s.frame(b"R", 3_000, ALICE, order("a-2"))
    assert again is not alice and again.connected
    assert s.handler.handled == [(again, "a-2")]
    assert alice.session_id in s.handler.forgotten  # evicted: Alice holds one session


def test_at_its_limit_with_none_idle_the_first_key_is_refused_as_usual(make):
    s = make(max_sessions_per_key=2)
    alice = s.refused_take_over()
    s.frame(b"alice-2", 2_500, ALICE)
    s.frame(b"alice-3", 2_500, ALICE)  # evicts the detached one: Alice holds 2, both busy
    assert alice.session_id in s.handler.forgotten
    assert s.frame(b"R", 3_000, ALICE, order("a-2")) is None
    route, refused = s.sessionless[-1]
    assert route == b"R" and refused.reject_reason == RejectReason.NOT_AUTHORIZED
    assert "too many sessions for key alice" in refused.text
    assert s.handler.handled == []
