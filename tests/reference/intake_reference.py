"""The sessions' watchdog as intake had it before its round visited only the sessions due:
the reference its tests compare with, and its benchmark's baseline (bench_e2e.py)."""
from __future__ import annotations

import logging

from engine.intake import IntakeServer
from engine.intake import log as intake_log


def scan_check_sessions(server: IntakeServer, now: int) -> None:
    """Intake's watchdog round before it kept the sessions in order of silence: a visit of
    every session (then the routing-id maps' clean-up, as intake's round does)."""
    for session in list(server.sessions.values()):
        silent = now - session.last_recv_ns
        if not session.timed_out and silent > server._timeout_ns:
            session.timed_out = True
            server._note_idle(session)
            intake_log.log(logging.WARNING if session.connected else logging.INFO,
                           "intake: session %s silent for %d ms%s", session.session_id,
                           silent // 1_000_000,
                           "" if session.connected else " (its connection closed)")
            try:
                server.handler.on_session_timeout(session)
            except Exception:
                intake_log.exception("intake: on_session_timeout failed for %s",
                                     session.session_id)
        if silent > server._retention_ns:
            server._forget(session, f"session {session.session_id} expired: silent "
                                    f"for intake.session_retention_s")
    for listener in server._listeners:
        superseded = listener.superseded
        while superseded:
            route, gone = next(iter(superseded.items()))
            if now - gone.last_recv_ns <= server._retention_ns:
                break
            del superseded[route]
        departed = listener.departed
        while departed:
            route, session = next(iter(departed.items()))
            if now - session.last_recv_ns <= server._retention_ns and \
                    server.sessions.get(session.session_id) is session:
                break
            del departed[route]
