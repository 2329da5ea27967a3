"""The monitor's disconnect notices name a connection by its file descriptor only: intake
maps each descriptor to the routing id last heard on it (``_Listener.fd_routes``).

A request read after its connection's notice (sent just before the client went) put
the dead descriptor's entry back, where nothing took it out. A client that reconnected
under its own routing id, on another descriptor, was then detached from its session
by the notice of whatever connection the OS gave the old descriptor next: its
replies were held back until it spoke again. A routing id is one connection's at a
time, so the descriptor it was last heard on is the only one that names it.

As in ``test_intake_stale_route``, the server is not started; the monitor's notices
are handed to ``read_disconnects`` as the socket would hand them over.
"""
import pytest
import zmq

from engine import intake
from tests.unit.engine.test_intake_eviction import servers
from tests.unit.engine.test_intake_stale_route import ALICE, CurveServer


class NoticedServer(CurveServer):
    """A CurveServer whose monitor reports the descriptors given to ``gone``."""

    def gone(self, monkeypatch, fd: int) -> None:
        """The monitor reports the connection on ``fd`` disconnected."""
        notices = [{"event": zmq.EVENT_DISCONNECTED, "value": fd, "endpoint": b""}]
        monkeypatch.setattr(intake.zmqcall, "recv_message",
                            lambda handle, block: [b"notice"] if notices else None)
        monkeypatch.setattr(intake, "parse_monitor_message", lambda message: notices.pop())
        self.listener.read_disconnects()

    def heard(self, route: bytes, fd: int, now: int):
        """A request read from ``route`` on the connection at ``fd``; its session after it."""
        self.server._on_frames(self.listener, [route, intake.msgspec.msgpack.encode(
            intake.Heartbeat())], ALICE, now, fd)
        return self.listener.routes.get(route)


@pytest.fixture
def make():
    yield from servers(NoticedServer)


def test_a_descriptor_reused_by_another_connection_does_not_detach_a_reconnected_session(
        make, monkeypatch):
    s = make()
    session = s.heard(b"fixed-id", 7, 1_000)
    s.gone(monkeypatch, 7)
    assert not session.connected
    # Its last request, read after the notice: the session takes the routing id again.
    assert s.heard(b"fixed-id", 7, 2_000) is session
    # The client reconnects under its routing id, on another descriptor.
    assert s.heard(b"fixed-id", 9, 3_000) is session and session.connected
    # Another connection got descriptor 7 and went before it sent anything.
    s.gone(monkeypatch, 7)
    assert session.connected and s.listener.routes[b"fixed-id"] is session
    s.gone(monkeypatch, 9)
    assert not session.connected


def test_the_descriptor_map_holds_one_entry_per_connection_heard(make, monkeypatch):
    s = make(max_sessions_per_key=64)
    for n in range(50):  # each connection on a descriptor another had before
        s.heard(b"conn-%d" % n, 7 + n % 3, 1_000 + n)
    assert len(s.listener.fd_routes) == 3
    for fd in (7, 8, 9):
        s.gone(monkeypatch, fd)
    assert s.listener.fd_routes == {}
