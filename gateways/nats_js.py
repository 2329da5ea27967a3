"""NATS JetStream gateway: the engine's events on the platform's event stream.

Each event is published to ``<prefix>.<plural type>.<symbol>``
(``kronos.fills.AAPL``, ``kronos.execution_reports.AAPL``, ``kronos.admin``)
with the header ``Nats-Msg-Id: <journal>:<seq>`` (the journal's identity,
:func:`engine.journal.journal_identity`, then the seq), and counts as delivered only when
JetStream has acknowledged it. A batch is published pipelined (up to
``max_pending`` in flight) and the cursor moves only when every
acknowledgement of the batch is in; after a failure the gateway reconnects
and publishes again from the cursor, and the stream's duplicate window drops
what had already been stored.

The cursor on (re)connect is the seq in the ``Nats-Msg-Id`` of the stream's
last message when that message is this journal's (the stream holds our events
up to it: every publish expects the stream's last message to be the one
before it, see ``_publish``, so no other writer's message can come between
two of ours), else the lower of that and the local one (memory, else the
cursor file): a stream that lost messages or was recreated is filled again
from the journal, and a gateway that lost its data directory resumes where
the stream ends. A
stream whose first or last message is of another journal (the journal was
made anew, its seqs start again at 1, or another engine publishes there) is
refused (``ForeignCursorError``), never resumed from: the new journal's
events would be skipped, or dropped as duplicates.

nats-py is asyncio-only; the gateway runs a private event loop on its own
thread, never the engine's.
"""
from __future__ import annotations

import asyncio
import logging

import msgspec
import nats
import orjson
import uvloop
from nats.js import api
from nats.js.errors import NotFoundError

from engine.journal import JournalReader
from gateways.base import Gateway, describe, message_id, parse_message_id
from gateways.config import NatsConfig
from gateways.events import GatewayEvent

log = logging.getLogger(__name__)

#: Seconds an idle connection check waits for its PING to be answered.
PING_TIMEOUT_S = 2.0

#: Subject token per event type; other types use their own name.
SUBJECT_NAMES = {"fill": "fills", "execution_report": "execution_reports", "admin": "admin",
                 "reject": "rejects"}
# Characters a subject token cannot hold, escaped URL-style ('%' too, so it stays reversible).
_ESCAPES = str.maketrans({"%": "%25", ".": "%2E", "*": "%2A", ">": "%3E"})


def subject_token(symbol: str) -> str:
    """A symbol as one subject token (``BRK.B`` -> ``BRK%2EB``)."""
    return symbol.translate(_ESCAPES)


def subject_of(prefix: str, event: GatewayEvent) -> str:
    """``<prefix>.<plural type>[.<symbol>]``."""
    name = SUBJECT_NAMES.get(event.type, event.type)
    if event.symbol is None:
        return f"{prefix}.{name}"
    return f"{prefix}.{name}.{subject_token(event.symbol)}"


class NatsGateway(Gateway):
    """Publish events to a JetStream stream with acknowledgements and de-duplication ids."""

    type = "nats"

    def __init__(self, config: NatsConfig, source: JournalReader, data_dir):
        super().__init__(config, source, data_dir)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc = None
        self._js = None
        self._acks: _AckCollector | None = None
        self._lost: asyncio.Event | None = None  # set by nats-py when the connection ends
        self._inbox = ""
        self._encoder = msgspec.msgpack.Encoder()
        #: The stream sequence of the stream's last message as this gateway knows it
        #: (from the stream at open, then from each chunk's acknowledgements): a
        #: delivery's first publish expects it (``Nats-Expected-Last-Sequence``, see
        #: :meth:`_publish`).
        self._stream_last: int | None = None

    # ------------------------------------------------------------ connection
    def open(self) -> None:
        # uvloop as in the engine: 6.5% fewer instructions per event delivered
        # than asyncio's loop (callgrind, batches of 20; docs/gateways.md).
        self._loop = uvloop.new_event_loop()
        try:
            self._loop.run_until_complete(self._connect())
        except BaseException:
            # The base loop closes only what opened: release the event loop
            # and the half-made client of this attempt here.
            self._safe_close()
            raise

    async def _connect(self) -> None:
        """Connect, trying each server once; raise ``ConnectionError`` naming them if none answers.

        The gateway's own loop reconnects (with its back-off, from its
        cursor, counting each failed open in ``metrics``); the client's
        reconnect would buffer publishes behind our back. nats-py retries
        the servers of its pool even with ``allow_reconnect=False`` (60
        rounds 2 s apart by default) and reports each failure only to
        ``error_cb``, so the callback ends its loop once every server has
        failed once.
        """
        config: NatsConfig = self.config
        failures: list[str] = []
        connecting = True

        async def on_error(exc: Exception) -> None:
            # nats-py's default callback logs a traceback per failure.
            if connecting:
                failures.append(describe(exc))
                if len(failures) >= len(config.servers):
                    raise _AllServersFailed from None
            else:
                log.warning("gateway %s: nats: %s", self.name, describe(exc))

        self._lost = lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()

        self._nc = nc = nats.NATS()
        try:
            # max_reconnect_attempts and reconnect_time_wait bound the pool's
            # loop too (two immediate tries per server), should a nats-py
            # version stop reporting connect failures to error_cb.
            await nc.connect(config.servers, allow_reconnect=False, max_reconnect_attempts=1,
                             reconnect_time_wait=0, connect_timeout=config.connect_timeout_s,
                             error_cb=on_error, disconnected_cb=on_lost, closed_cb=on_lost,
                             name=f"kronos-gateway-{self.name}")
        except Exception as exc:  # noqa: BLE001 - every way a connect fails, as one error
            cause = "; ".join(dict.fromkeys(failures)) or describe(exc)
            raise ConnectionError(f"{', '.join(config.servers)}: {cause}") from None
        finally:
            connecting = False
        self._js = nc.jetstream(timeout=config.ack_timeout_s,
                                publish_async_max_pending=config.max_pending)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        config: NatsConfig = self.config
        subjects = [f"{config.subject_prefix}.>"]
        wanted = api.StreamConfig(
            name=config.stream, subjects=subjects,
            storage=api.StorageType.FILE if config.storage == "file" else api.StorageType.MEMORY,
            num_replicas=config.replicas, max_age=config.max_age_s or None,
            duplicate_window=config.duplicate_window_s)
        try:
            info = await self._js.stream_info(config.stream)
        except NotFoundError:
            await self._js.add_stream(wanted)
            log.info("gateway %s: created stream %s for %s", self.name, config.stream, subjects[0])
            return
        if subjects[0] not in (info.config.subjects or []):
            log.warning("gateway %s: stream %s has subjects %s, not %s; publishes may be refused",
                        self.name, config.stream, info.config.subjects, subjects[0])
        differences = _stream_differences(info.config, wanted)
        if differences:
            # Used as it is (the platform may have set it up on purpose), but a
            # shorter max_age or memory storage loses events downstream: say so.
            log.warning("gateway %s: stream %s exists with settings other than this gateway's, "
                        "kept as they are: %s", self.name, config.stream, "; ".join(differences))

    def close(self) -> None:
        loop, nc = self._loop, self._nc
        self._nc = self._js = self._loop = self._acks = None
        if loop is None:
            return
        try:
            if nc is not None and not nc.is_closed:
                loop.run_until_complete(asyncio.wait_for(nc.close(), 2))
        finally:
            loop.close()

    def check_alive(self) -> None:
        """A PING answered within :data:`PING_TIMEOUT_S` (the client's own loop runs only
        while the gateway publishes, so it cannot notice a dead connection by itself).

        Not ``ack_timeout_s`` (up to an hour): an idle check that waits that long keeps
        the gateway reported up, and blocked, long after its server went.
        """
        nc = self._nc
        if nc is None or nc.is_closed:
            raise ConnectionError("nats: connection closed")
        if not nc.is_connected:  # (the client saw the connection end: it is reconnecting)
            raise ConnectionError("nats: connection lost")
        try:
            self._loop.run_until_complete(
                nc.flush(min(self.config.ack_timeout_s, PING_TIMEOUT_S)))
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is gone
            raise ConnectionError(f"nats: no answer to a ping: {describe(exc)}") from None

    # ------------------------------------------------------------ cursor
    def load_cursor(self) -> int:
        local, local_journal = self._cursor, None
        if local is None:
            state = self.read_cursor_file()
            local = int(state["seq"]) if "seq" in state else None
            local_journal = state.get("journal")
        stream, stream_journal, first_journal = self._loop.run_until_complete(
            self._stream_cursor())
        foreign = [j for j in (local_journal, stream_journal, first_journal)
                   if j not in (None, self.journal_id)]
        self.cursor_journal = foreign[0] if foreign else None
        known = [c for c in (local, stream) if c is not None]
        if stream is not None and stream_journal == self.journal_id:
            # The stream holds our events up to its last one and no other's
            # between them (every publish expected the one before it): going
            # on from a lower local cursor would publish repeats.
            cursor = stream
        else:
            cursor = min(known) if known else 0
        first = self.first_journal_seq()
        if local is not None and local > cursor and local_journal in (None, self.journal_id) \
                and first is not None and cursor + 1 < first <= local + 1:
            # The stream's last message is the last event published; the records read
            # past after it (commands, types not selected) can have been archived since
            # (docs/engine.md allows it once /metrics shows them read past). Resuming
            # inside them stopped the gateway on JournalGapError for good; the cursor
            # file says they were read past.
            log.warning("gateway %s: journal seqs %d to %d after the stream's last message "
                        "are no longer in the journal (archived); the cursor file says they "
                        "were read past: resuming after seq %d", self.name, cursor + 1,
                        first - 1, local)
            cursor = local
        log.info("gateway %s: resuming after seq %d (local %s, stream %s)", self.name, cursor,
                 local, stream)
        return cursor

    async def _stream_cursor(self) -> tuple[int | None, str | None, str | None]:
        """The journal seq of the stream's last message, the journal it names, and the journal
        its first message names: ``(0, None, None)`` for a new stream, None where unknown.

        The first message too: a stream holding another journal's events is
        refused (one journal per destination) whichever journal wrote last.
        """
        info = await self._js.stream_info(self.config.stream)
        state = info.state
        self._stream_last = state.last_seq
        if state.last_seq == 0:
            return 0, None, None
        if not state.messages:  # every message removed: no position to read
            return None, None, None

        async def ids(seq: int, *, back: int = 0) -> tuple[int | None, str | None]:
            # The message at seq, else (back > 0) the nearest one before it.
            # The stream's last message may have been deleted (js.delete_msg:
            # its sequence stays the stream's last): the last one that still
            # exists is where our journal's events stop. Resuming from the
            # cursor file instead republishes events the stream holds; after
            # a server restart JetStream's last message id is empty, and the
            # first new event, expecting a repeat's id, was refused for ever.
            # At most ``back`` sequences are missing: the stream's deleted count.
            for candidate in range(seq, max(state.first_seq, seq - back) - 1, -1):
                try:
                    message = await self._js.get_msg(self.config.stream, seq=candidate)
                except NotFoundError:
                    continue  # deleted, or removed by retention meanwhile
                # Someone else's message is not a position in our journal: (None, None).
                return parse_message_id((message.headers or {}).get(api.Header.MSG_ID))
            return None, None
        last_seq, last_journal = await ids(state.last_seq, back=state.num_deleted or 0)
        first_journal = (await ids(state.first_seq))[1] \
            if state.first_seq != state.last_seq else last_journal
        return last_seq, last_journal, first_journal

    def cursor_where(self) -> str:
        return f"the messages of stream {self.config.stream!r} and {self.cursor_path}"

    # ------------------------------------------------------------ delivery
    def deliver(self, events: list[GatewayEvent], through_seq: int) -> None:
        self._loop.run_until_complete(self._publish(events))

    async def _publish(self, events: list[GatewayEvent]) -> None:
        # Core publishes with a reply subject of our own, rather than
        # js.publish_async: that one yields to the client's flusher after
        # every message (one socket write each); here a whole chunk goes out
        # in one write and the acks are counted as they come back.
        config: NatsConfig = self.config
        nc = self._nc
        if self._acks is None:
            self._inbox = nc.new_inbox()
            self._acks = _AckCollector(config.stream)
            await nc.subscribe(f"{self._inbox}.*", cb=self._acks.on_message)
        acks = self._acks
        # Each publish expects the stream's last message to be the one before
        # it, ours: the first by its stream sequence (known from the stream at
        # open, then from the acknowledgements), the others by their id. A
        # message of anyone else's in between (another engine's gateway on
        # this stream) makes JetStream refuse ours, and every later one of
        # the chunk (none of them follows the message it expects), so the
        # stream never holds two journals' events interleaved. The failure
        # is retried from the cursor; reopening, the gateway finds the other
        # journal's last message and refuses the stream (ForeignCursorError).
        # (JetStream looks at Nats-Msg-Id first: a repeat is acknowledged as
        # a duplicate whatever it expected.)
        previous = None
        for start in range(0, len(events), config.max_pending):
            chunk = events[start:start + config.max_pending]
            acks.expect(len(chunk))
            # (Each wait raced against the connection's end: see _unless_lost.)
            previous = await self._unless_lost(self._send(chunk, previous))
            self.yield_to_engine()
            await self._unless_lost(nc.flush(config.ack_timeout_s))
            await self._unless_lost(acks.wait(config.ack_timeout_s))
            if self._stream_last is not None:
                self._stream_last = max(self._stream_last, acks.last_seq)

    async def _send(self, chunk: list[GatewayEvent], previous: str | None) -> str | None:
        """Publish one chunk (the headers as :meth:`_publish` says); returns the last id."""
        nc, encode, journal = self._nc, self._encoder.encode, self.journal_id
        prefix, inbox = self.config.subject_prefix, self._inbox
        for event in self.paced(chunk):
            msg_id = message_id(journal, event.seq)
            if previous is not None:
                headers = {api.Header.MSG_ID: msg_id,
                           api.Header.EXPECTED_LAST_MSG_ID: previous}
            elif self._stream_last is not None:
                headers = {api.Header.MSG_ID: msg_id,
                           api.Header.EXPECTED_LAST_SEQUENCE: str(self._stream_last)}
            else:
                headers = {api.Header.MSG_ID: msg_id}
            previous = msg_id
            await nc.publish(subject_of(prefix, event), encode(event),
                             reply=f"{inbox}.{event.seq}", headers=headers)
        return previous

    async def _unless_lost(self, awaitable):
        """Await ``awaitable``, or raise ``ConnectionError`` as soon as the connection ends.

        nats-py leaves a pending flush (and our acknowledgements) waiting out
        its timeout, ``ack_timeout_s`` (up to an hour), after the server has
        gone, and a publish that waits for room in its write buffer waits
        for good once the connection's flusher is gone: the gateway was
        reported up, and delivered nothing, that long.
        """
        if self._lost.is_set():
            raise ConnectionError("nats: connection lost")
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not task.done():
            task.cancel()
            raise ConnectionError("nats: connection lost while waiting for JetStream")
        return task.result()


class _AllServersFailed(Exception):
    """Raised from the error callback to end nats-py's connect loop (never escapes ``_connect``)."""


class _AckCollector:
    """Counts JetStream acknowledgements of one chunk; the first error fails it."""

    def __init__(self, stream: str):
        self.stream = stream
        self._missing = 0
        self.last_seq = 0
        self._error: str | None = None
        self._done = asyncio.Event()

    def expect(self, count: int) -> None:
        self._missing, self._error = count, None
        #: the highest stream sequence acknowledged in this chunk (0: none)
        self.last_seq = 0
        self._done.clear()

    async def on_message(self, msg) -> None:
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            ack = {"error": {"description": f"not an acknowledgement: {msg.data[:80]!r}"}}
        if not msg.data and (msg.headers or {}).get("Status") == "503":
            # NATS's "no responders" (an empty reply to the inbox): no stream listens
            # on the subject published to.
            self._error = self._error or (
                f"no stream takes the events' subjects (NATS: no responders): stream "
                f"{self.stream!r} must exist with subjects covering the gateway's subject_prefix")
        elif "error" in ack:
            self._error = self._error or f"{msg.subject}: {ack['error'].get('description', ack['error'])}"
        elif ack.get("stream") != self.stream:
            self._error = self._error or f"stored in stream {ack.get('stream')!r}, not {self.stream!r}"
        else:
            self.last_seq = max(self.last_seq, ack.get("seq", 0))
        self._missing -= 1
        if self._missing <= 0 or self._error:
            self._done.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self._missing} JetStream acknowledgements missing after {timeout} s") from None
        if self._error:
            raise RuntimeError(f"JetStream refused a publish: {self._error}")


#: The settings a gateway creates its stream with: (nats-py's field, the config key).
_STREAM_SETTINGS = (("storage", "storage"), ("num_replicas", "replicas"),
                    ("max_age", "max_age_s"), ("duplicate_window", "duplicate_window_s"))


def _stream_differences(existing, wanted) -> list[str]:
    """How an existing stream's settings differ from ``wanted``, the ``StreamConfig`` the
    gateway would create it with, one text each, named by the gateway's config keys."""
    def value(stream, field):
        v = getattr(stream, field)
        # Unset reads as the server's default: one replica, no age limit.
        return getattr(v, "value", v) if v is not None else (1 if field == "num_replicas" else 0)

    out = []
    for field, key in _STREAM_SETTINGS:
        have, want = value(existing, field), value(wanted, field)
        same = abs(have - want) <= 1e-6 if isinstance(want, (int, float)) else have == want
        if not same:
            out.append(f"{key} {have!r} (configured {want!r})")
    return out
