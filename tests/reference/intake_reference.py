"""The sessions' watchdog as intake had it before its round visited only the sessions due:
the reference its tests compare with, and its benchmark's baseline (bench_e2e.py)."""
from __future__ import annotations

from engine.intake import IntakeServer


def scan_check_sessions(server: IntakeServer, now: int) -> None:
    """Intake's watchdog round before it kept the sessions in order of silence: a visit of
    every session, each checked inline (as it was: the baseline's cost), what is done to
    one found due being intake's own (``_time_out``, ``_expire``), then the routing-id
    maps' clean-up."""
    for session in list(server.sessions.values()):
        silent = now - session.last_recv_ns
        if not session.timed_out and silent > server._timeout_ns:
            server._time_out(session, silent)
        if silent > server._retention_ns:
            server._expire(session)
    server._forget_routes(now)
