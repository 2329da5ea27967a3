"""Each frame a session sends is recorded through the handler's ``sent_recorder``, asked once
per session (at its first send) and again only after intake drops the session; the
pipeline's recorder writes the journal ``record_sent`` writes.

The intake server is not started (as in test_intake_eviction.py): a listener with a real,
unbound socket, and replies kept in the outbox.
"""
import msgspec

from engine.config import IntakeConfig, SecurityConfig
from engine.intake import Handler, IntakeServer, _Listener
from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import Heartbeat, HeartbeatAck, event_envelope
from engine.pipeline import Pipeline

HEARTBEAT = msgspec.msgpack.encode(Heartbeat())


class Recording(Handler):
    """Counts the recorders it hands out and the frames recorded through them."""

    def __init__(self):
        self.asked, self.frames = [], []

    def record_sent(self, session, frame):
        self.frames.append((session.session_id, frame))
        return len(self.frames)

    def sent_recorder(self, session):
        self.asked.append(session.session_id)
        return super().sent_recorder(session)


def _server(handler):
    server = IntakeServer(IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"],
                                       allow_plaintext=True, request_rate=0),
                          SecurityConfig(plaintext_accounts=["ACC1"]), handler)
    server._draining = True  # replies stay in the outbox: no loop runs
    listener = _Listener(server, server._make_socket(), curve=False)
    server._listeners.append(listener)
    return server, listener


def test_the_recorder_is_asked_once_per_session_and_again_after_a_drop():
    handler = Recording()
    server, listener = _server(handler)
    try:
        for now in (1, 2, 3):  # three heartbeats, three acks
            server._on_frames(listener, [b"r1", HEARTBEAT], "", now, fd=7)
        session = listener.routes[b"r1"]
        assert handler.asked == [session.session_id]
        assert [frame for _, frame in handler.frames] == [f for _, f in server._outbox]
        assert [msgspec.msgpack.decode(f, type=HeartbeatAck).seq for _, f in handler.frames] \
            == [1, 2, 3]
        server._forget(session, "evicted")
        session.send(msgspec.msgpack.decode(handler.frames[0][1], type=HeartbeatAck))
        assert handler.asked == [session.session_id] * 2
        assert len(handler.frames) == 4
    finally:
        listener.close()
        server.context.term()


class _Session:
    session_id, principal = "S1", "KEY"


def test_the_pipelines_recorder_journals_what_record_sent_does(tmp_path):
    """The same records, bytes and sequence, through either way (the JournalSession first)."""
    written = {}
    for way in ("record_sent", "sent_recorder"):
        directory = tmp_path / way
        with JournalWriter(directory, fsync="none", buffered=True) as journal:
            pipeline = Pipeline.__new__(Pipeline)  # (only the journaling state is used)
            pipeline.journal, pipeline._event_envelopes = journal, {}
            session = _Session()
            if way == "record_sent":
                seqs = [pipeline.record_sent(session, b"frame-%d" % i) for i in range(3)]
            else:
                record = pipeline.sent_recorder(session)
                seqs = [record(b"frame-%d" % i) for i in range(3)]
            journal.flush()
        assert seqs == [2, 3, 4]  # (1: the session's JournalSession)
        written[way] = [(r.kind, bytes(r.payload)) for r in JournalReader(directory)]
    assert written["record_sent"] == written["sent_recorder"]
    assert written["record_sent"][0][0] == RecordKind.META
    assert written["record_sent"][1] == (RecordKind.EVENT, event_envelope("S1") + b"frame-0")
