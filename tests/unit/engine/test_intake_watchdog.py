"""The sessions' watchdog round (``IntakeServer._check_sessions``) against the full scan.

The round times out the sessions silent past ``heartbeat_timeout_ms`` and drops
those silent past ``session_retention_s``. It used to visit every session; it
now takes only the sessions due: from the front of ``_awake`` (the sessions not
timed out, in the order they were last heard from) and from the top of the
heap of idle sessions (``_IdleSessions``). These
tests run two servers through the same random history, one with intake's
round and one with :func:`scan_check_sessions`, the round as it was, and hold
them to the same choices: which sessions time out and are dropped, at which
round, in which order (the handler's calls, which the pipeline journals), and
the same sessions held, timed out, connected, and evicted at ``max_sessions``.

The servers are not started, as in ``test_intake_eviction``; time is the
``now`` each step passes, only ever moving forward as the monotonic clock does.
"""
import collections
import random

import msgspec
import pytest

import engine.intake
from engine.intake import Handler, IntakeServer
from engine.messages import ResendRequest
from tests.reference.intake_reference import scan_check_sessions
from tests.unit.engine.test_intake_eviction import TIMEOUT_MS, Server

MS = 1_000_000


class Recorder(Handler):
    """What the pipeline would journal: each timeout and each drop, in order, by the
    session's place among those taken in (its id is random, one server's to the other)."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def on_session_timeout(self, session) -> None:
        self.calls.append(("timeout", session._opened))

    def on_session_forgotten(self, session) -> None:
        self.calls.append(("forgotten", session._opened))


class Twin(Server):
    """``Server`` with a recording handler; ``scan`` rounds by the old visit of every session."""

    def __init__(self, scan: bool, **intake):
        super().__init__(**intake)
        self.server.handler = self.handler = Recorder()
        self.scan = scan

    def round(self, now: int) -> None:
        if self.scan:
            scan_check_sessions(self.server, now)
        else:
            self.server._check_sessions(now)

    def resume(self, route: bytes, opened: int, now: int, principal: str) -> None:
        """A new connection ``route`` resuming the session taken in ``opened``-th (if held)."""
        target = self.by_opened().get(opened)
        session_id = target.session_id if target is not None else "gone"
        begin = target.seq + 1 if target is not None else 1
        frame = msgspec.msgpack.encode(ResendRequest(begin_seq=begin, session_id=session_id))
        self.server._on_frames(self.listener, [route, frame], principal, now, fd=7)

    def by_opened(self) -> dict:
        return {s._opened: s for s in self.server.sessions.values()}

    def state(self) -> tuple:
        """Everything the two servers must agree on, in terms free of the random ids."""
        server = self.server
        victim = server._idle_victim()
        return (self.handler.calls,
                [(s._opened, s.last_recv_ns, s.timed_out, s.connected, s.principal)
                 for s in server.sessions.values()],
                victim._opened if victim is not None else None,
                sorted(self.listener.routes), list(self.listener.departed),
                list(self.listener.superseded))


@pytest.fixture
def twins():
    made = []

    def make(**intake):
        pair = Twin(scan=False, **intake), Twin(scan=True, **intake)
        made.extend(pair)
        return pair
    yield make
    for twin in made:
        twin.close()


def assert_awake_in_order(server: IntakeServer) -> None:
    """``_awake`` holds the sessions not timed out, longest silent first."""
    awake = list(server._awake)
    assert set(awake) == {s for s in server.sessions.values() if not s.timed_out}
    assert len(awake) == len(set(awake))
    assert [s.last_recv_ns for s in awake] == sorted(s.last_recv_ns for s in awake)


def run_history(twins, seed: int, steps: int = 500, **intake) -> tuple[int, int]:
    """A random history on both servers, compared after every step; the timeouts and
    drops seen (so a test can tell the history was not a quiet one)."""
    rng = random.Random(seed)
    settings = dict(max_sessions=rng.choice([4, 12, 40]),
                    max_sessions_per_key=rng.choice([3, 8, 100]), session_retention_s=1)
    settings.update(intake)
    mine, scan = twins(**settings)
    timeout_ns, retention_ns = mine.server._timeout_ns, mine.server._retention_ns
    keys = ["", "K1", "K2"]
    routes = [bytes([i]) for i in range(60)]
    now = 1_000

    def both(fn) -> None:
        fn(mine)
        fn(scan)

    with pytest.MonkeyPatch.context() as patch:
        # (restored sessions are stamped with the monotonic clock: here, the history's)
        patch.setattr(engine.intake.time, "monotonic_ns", lambda: now)
        for i in range(rng.choice([0, 0, 3])):
            both(lambda t: t.server.restore_session(f"restored-{i}", "", 5, []))
    assert mine.state() == scan.state()

    for _ in range(steps):
        op = rng.random()
        route, key = rng.choice(routes), rng.choice(keys)
        if op < 0.3:  # a message: a new session, or one heard from again
            both(lambda t: t.frame(route, now, principal=key))
        elif op < 0.4:  # a session whose connection went, or that timed out, heard from again
            back = [(r, s.principal) for r, s in mine.listener.departed.items()] + \
                [(r, s.principal) for r, s in mine.listener.routes.items() if s.timed_out]
            if back:
                route, key = rng.choice(back)
                both(lambda t: t.frame(route, now, principal=key))
        elif op < 0.5:  # a connection closes
            both(lambda t: t.gone(route))
        elif op < 0.57:  # a new connection resumes a session (idle or not)
            opened = rng.choice(sorted(mine.by_opened()) or [0])
            principal = mine.by_opened()[opened].principal if opened else key
            both(lambda t: t.resume(route, opened, now, principal))
        elif op < 0.8:  # time passes, often past a timeout or a retention
            now += rng.choice([0, 1, timeout_ns // 3, timeout_ns + 1, retention_ns // 2,
                               retention_ns + 1])
        elif op < 0.9:  # a round exactly when a session's timeout or retention falls
            sessions = list(mine.server.sessions.values())
            if sessions:
                last = rng.choice(sessions).last_recv_ns
                now = max(now, last + rng.choice([timeout_ns, retention_ns]) + rng.choice([0, 1]))
            both(lambda t: t.round(now))
        else:
            both(lambda t: t.round(now))
        assert mine.state() == scan.state()
        assert_awake_in_order(mine.server)
    calls = mine.handler.calls
    return (sum(1 for kind, _ in calls if kind == "timeout"),
            sum(1 for kind, _ in calls if kind == "forgotten"))


@pytest.mark.parametrize("seed", range(60))
def test_a_round_times_out_and_drops_what_the_full_scan_did(twins, seed):
    timeouts, dropped = run_history(twins, seed)
    assert timeouts and dropped  # the history reached both


@pytest.mark.parametrize("seed", range(10))
def test_with_a_retention_shorter_than_the_timeout_too(twins, seed):
    """engine.config refuses it, the server alone does not: sessions are dropped without
    timing out, as the scan did."""
    timeouts, dropped = run_history(twins, seed, heartbeat_timeout_ms=1_500,
                                    session_retention_s=1)
    assert dropped


class CountingOrderedDict(collections.OrderedDict):
    """An ``_awake`` that counts the sessions a round looks at."""

    looked_at = 0

    def __iter__(self):
        for session in super().__iter__():
            self.looked_at += 1
            yield session


def test_a_round_visits_the_sessions_due_not_every_session(make_server):
    """10,000 sessions heard from within the timeout: a round looks at one of them."""
    s = make_server(max_sessions=10_000, max_sessions_per_key=10_000)
    for i in range(10_000):
        s.frame(i.to_bytes(4, "big"), now=1_000 + i)
    for i in range(0, 10_000, 2):  # half heard again, half detached
        s.frame(i.to_bytes(4, "big"), now=20_000 + i)
        s.gone((i + 1).to_bytes(4, "big"))
    awake = s.server._awake = CountingOrderedDict(s.server._awake)
    s.server._check_sessions(1_001 + TIMEOUT_MS * MS)  # the first one is due at + 1
    assert awake.looked_at == 1 and not s.handler.calls
    s.server._check_sessions(1_007 + TIMEOUT_MS * MS)  # the 2nd, 4th and 6th are due
    assert [session._opened for session in s.server.sessions.values()
            if session.timed_out] == [2, 4, 6]
    assert s.handler.calls == [("timeout", 2), ("timeout", 4), ("timeout", 6)]
    assert awake.looked_at == 1 + 4


def test_a_session_heard_from_is_followed_not_timed_out(make_server):
    """Its entry, come due, moves to its last message; it times out from there."""
    s = make_server()
    a = s.frame(b"a", now=1_000)
    s.frame(b"a", now=1_000 + TIMEOUT_MS * MS)  # just in time
    s.server._check_sessions(1_000 + TIMEOUT_MS * MS + 1)
    assert not a.timed_out
    s.server._check_sessions(1_000 + 2 * TIMEOUT_MS * MS)
    assert not a.timed_out
    s.server._check_sessions(1_000 + 2 * TIMEOUT_MS * MS + 1)
    assert a.timed_out
    # Back, and timed out again a timeout after its return.
    s.frame(b"a", now=1_000 + 3 * TIMEOUT_MS * MS)
    assert not a.timed_out
    s.server._check_sessions(1_000 + 4 * TIMEOUT_MS * MS + 1)
    assert a.timed_out


@pytest.fixture
def make_server():
    made = []

    def make(**intake):
        made.append(Twin(scan=False, **intake))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_a_routing_id_whose_take_over_was_refused_leads_to_no_dropped_session(twins):
    """Another key's take-over of a routing id, refused at that key's limit, detaches the
    session it found there and leaves the id leading nowhere: once intake drops that
    session (silent past the retention), its key's next frames on the id open a session of
    their own, held and timed out by the watchdog as any. (The id used to lead on to the
    dropped session, which handled them.)"""
    mine, scan = twins(max_sessions=10, max_sessions_per_key=1, session_retention_s=1)
    for t in (mine, scan):
        a = t.frame(b"a", now=1_000, principal="K1")
        t.frame(b"b", now=1_000, principal="K2")
        assert t.frame(b"a", now=2_000, principal="K2") is None  # refused: K2 holds one, busy
        assert not a.connected and b"a" not in t.listener.routes
        t.round(1_000 + 1_000_000_000 + 1)  # both silent past the retention
        assert a.session_id not in t.server.sessions
        again = t.frame(b"a", now=1_000 + 1_000_000_000 + 2, principal="K1")
        assert again is not None and again is not a and again.connected
        assert t.server.sessions[again.session_id] is again
        assert t.frame(b"a", now=1_000 + 1_000_000_000 + 3, principal="K1") is again
    assert mine.state() == scan.state()
    assert_awake_in_order(mine.server)
