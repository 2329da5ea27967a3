"""Which session intake evicts at ``max_sessions`` / ``max_sessions_per_key``.

The victim is the longest silent idle session (detached, or silent past the
heartbeat timeout), the first taken in of equals, of the new session's key
when that key is at its own limit. Intake keeps the idle sessions in a heap
instead of scanning every session for each new one (see ``_IdleSessions``);
these tests hold it to the scan it replaced, :func:`scan_victim`, through
the server's own paths: frames read, connections gone, routing ids taken
over by another key, the watchdog's timeouts and expiries, evictions.

The server is not started: no socket is bound and no loop runs. A listener
with a real (unbound) socket gives the paths their routing tables, and replies
stay in the outbox (``_draining`` keeps the flush from being scheduled).
"""
import random

import msgspec
import pytest

from engine.config import IntakeConfig, SecurityConfig
from engine.intake import Handler, IntakeServer, _Listener
from engine.messages import Heartbeat

TIMEOUT_MS = 400
HEARTBEAT = msgspec.msgpack.encode(Heartbeat())


def scan_victim(server: IntakeServer, principal: str | None = None):
    """The victim as intake chose it before the heap: a scan of every session."""
    idle = [s for s in server.sessions.values() if (not s.connected or s.timed_out)
            and (principal is None or s.principal == principal)]
    return min(idle, key=lambda s: s.last_recv_ns) if idle else None


class Server:
    """An intake server driven by hand: ``frame`` as a read would, ``gone`` as the monitor."""

    def __init__(self, **intake):
        settings = dict(plaintext_endpoints=["tcp://127.0.0.1:*"], allow_plaintext=True,
                        heartbeat_interval_ms=100, heartbeat_timeout_ms=TIMEOUT_MS,
                        session_retention_s=3600, request_rate=0)
        settings.update(intake)
        self.server = IntakeServer(IntakeConfig(**settings),
                                   SecurityConfig(plaintext_accounts=["ACC1"]), Handler())
        self.server._draining = True  # replies stay in the outbox: no loop runs
        self.listener = _Listener(self.server, self.server._make_socket(), curve=False)
        self.server._listeners.append(self.listener)

    def close(self) -> None:
        self.listener.close()
        self.server.context.term()

    def frame(self, route: bytes, now: int, principal: str = ""):
        """A Heartbeat read from ``route`` at ``now``; the session it went to (None: refused)."""
        self.server._on_frames(self.listener, [route, HEARTBEAT], principal, now, fd=7)
        return self.listener.routes.get(route)

    def gone(self, route: bytes) -> None:
        """The connection behind ``route`` closed."""
        session = self.listener.routes.get(route)
        if session is not None:
            self.listener.depart(session, route)

    def victims(self) -> tuple:
        """(the heap's victim, the scan's), engine-wide and for every key held."""
        server = self.server
        keys = sorted(server._held)
        return ([server._idle_victim()] + [server._idle_victim(k) for k in keys],
                [scan_victim(server)] + [scan_victim(server, k) for k in keys])


def servers(cls):
    """A fixture's body: yields ``make(**intake)``, which builds a ``cls`` server; each one
    made is closed at the fixture's end."""
    made = []

    def make(**intake):
        made.append(cls(**intake))
        return made[-1]
    yield make
    for s in made:
        s.close()


@pytest.fixture
def make():
    yield from servers(Server)


def test_of_equally_silent_sessions_the_first_taken_in_goes(make):
    s = make(max_sessions=3)
    a, b, c = (s.frame(r, now=1_000) for r in (b"a", b"b", b"c"))
    # Detached in the reverse order, all last heard at the same instant.
    for route in (b"c", b"b", b"a"):
        s.gone(route)
    assert s.server._idle_victim() is a is scan_victim(s.server)
    d = s.frame(b"d", now=2_000)
    assert a.session_id not in s.server.sessions
    assert list(s.server.sessions.values()) == [b, c, d]


def test_a_session_that_came_back_is_not_evicted_and_goes_later_at_its_new_silence(make):
    s = make(max_sessions=2)
    a = s.frame(b"a", now=1_000)
    b = s.frame(b"b", now=2_000)
    s.gone(b"a")
    s.gone(b"b")
    # a reconnects under its routing id (its next frame finds it among the departed)...
    assert s.frame(b"a", now=3_000) is a and a.connected
    assert s.server._idle_victim() is b
    # ... and goes again: now it was heard from after b, so b is evicted first.
    s.gone(b"a")
    c = s.frame(b"c", now=4_000)
    assert b.session_id not in s.server.sessions and a.session_id in s.server.sessions
    s.frame(b"d", now=5_000)
    assert a.session_id not in s.server.sessions
    assert set(s.server.sessions) == {c.session_id, s.listener.routes[b"d"].session_id}


def test_a_connected_session_is_evicted_only_once_timed_out(make):
    s = make(max_sessions=2)
    a = s.frame(b"a", now=1_000)
    b = s.frame(b"b", now=2_000)
    assert s.frame(b"c", now=3_000) is None  # both connected and heard from: refused
    s.server._check_sessions(2_000 + TIMEOUT_MS * 1_000_000 + 1)  # both silent too long
    assert a.timed_out and b.timed_out
    assert s.server._idle_victim() is a
    s.frame(b"a", now=2_000 + TIMEOUT_MS * 1_000_000 + 2)  # a is back
    assert not a.timed_out and s.server._idle_victim() is b
    s.frame(b"c", now=2_000 + TIMEOUT_MS * 1_000_000 + 3)
    assert b.session_id not in s.server.sessions and a.session_id in s.server.sessions


def test_at_its_keys_limit_a_session_evicts_its_keys_longest_silent_not_the_engines(make):
    s = make(max_sessions=10, max_sessions_per_key=2)
    other = s.frame(b"o", now=1_000, principal="K2")  # the engine's longest silent
    k1 = s.frame(b"x", now=2_000, principal="K1")
    k2 = s.frame(b"y", now=2_000, principal="K1")
    for route in (b"o", b"y", b"x"):
        s.gone(route)
    assert s.server._idle_victim() is other
    assert s.server._idle_victim("K1") is k1  # tie at 2_000: the first taken in
    s.frame(b"z", now=3_000, principal="K1")
    assert k1.session_id not in s.server.sessions
    assert {other.session_id, k2.session_id} <= set(s.server.sessions)


def test_a_routing_id_taken_over_by_another_key_leaves_its_session_idle(make):
    s = make(max_sessions=3)
    a = s.frame(b"a", now=1_000, principal="K1")
    b = s.frame(b"b", now=2_000, principal="K1")
    # Another key on a's routing id: a is detached, and idle from then on.
    k2 = s.frame(b"a", now=3_000, principal="K2")
    assert k2 is not a and not a.connected
    assert s.server._idle_victim() is a and s.server._idle_victim("K1") is a
    s.frame(b"c", now=4_000, principal="K2")
    assert a.session_id not in s.server.sessions
    assert {b.session_id, k2.session_id} <= set(s.server.sessions)


def test_a_restored_session_is_idle_until_resumed(make):
    s = make(max_sessions=2)
    restored = s.server.restore_session("s1", "", 5, [])
    s.frame(b"a", now=restored.last_recv_ns + 1)
    assert s.server._idle_victim() is restored
    s.frame(b"b", now=restored.last_recv_ns + 2)
    assert "s1" not in s.server.sessions


@pytest.mark.parametrize("seed", range(40))
def test_the_victim_is_the_scans_through_random_histories(make, seed):
    """Random reads, closes, take-overs, timeouts and expiries, many at one instant: after
    every step the heap names the scan's victim, engine-wide and per key."""
    rng = random.Random(seed)
    s = make(max_sessions=rng.choice([3, 8, 20]), max_sessions_per_key=rng.choice([2, 5, 50]),
             session_retention_s=1)
    keys = ["", "K1", "K2"]
    routes = [bytes([i]) for i in range(30)]
    now = 1_000
    for _ in range(400):
        op = rng.random()
        if op < 0.5:
            s.frame(rng.choice(routes), now, principal=rng.choice(keys))
        elif op < 0.8:
            s.gone(rng.choice(routes))
        elif op < 0.9:
            now += rng.choice([0, 1, TIMEOUT_MS * 1_000_000 // 2])
        else:
            now += rng.choice([0, TIMEOUT_MS * 1_000_000 + 1, 700_000_000])
            s.server._check_sessions(now)
        mine, scanned = s.victims()
        assert mine == scanned
        assert len(s.server._idle) <= 2 * len(s.server.sessions) + 33
