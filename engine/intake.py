"""ZeroMQ intake: where orders enter the engine.

The first stage of the pipeline. A ROUTER socket per security mode (CURVE,
and plaintext only when the configuration asks for it) takes frames from
client DEALER sockets, and for each frame:

1. finds the sender's :class:`Session` (ZeroMQ routing id -> session),
2. refuses oversize frames undecoded (MESSAGE_TOO_LARGE),
3. decodes with the socket's one reused msgspec decoder; any failure becomes
   a ``Reject`` with a reason code and a sentence naming the problem,
4. checks cross-field rules, the session's entitlement to the request's
   account, and admin rights,
5. answers session requests itself (``Heartbeat``, ``ResendRequest``) and
   hands every other request to the :class:`Handler` -- the pipeline.

A bad frame never changes state and never closes the session: the sender
gets a ``Reject`` and the next good message is served as usual.

Event-loop integration: the sockets are plain (non-asyncio) pyzmq sockets
whose file descriptor is registered with ``loop.add_reader``. ZeroMQ's FD is
edge-like (it signals that *something* changed), so a wake-up drains every
ready message with ``recv_multipart(NOBLOCK)`` until EAGAIN, and a send made
outside a drain schedules a re-check of the socket. There is no per-message
round trip through the loop.

Security: CURVE with a ZAP authenticator (pyzmq's ``AsyncioAuthenticator`` on
the same loop) allowing only the client public keys of the configuration.
ZAP reports the client key as the message's ``User-Id``, which selects the
accounts the session may use. A session is bound to the key that opened it:
a frame from another key on the same routing id detaches the old session
instead of letting the new key speak for it.

Resume: a ``ResendRequest`` naming another session is honoured only while
the connection's own session is fresh: nothing it sent was accepted yet,
it was only answered with intake's ``Reject`` (a malformed or refused first
frame does not spend the connection's resume); RESUME_REFUSED otherwise.
A reconnecting client can resume while its old routing id still looks live
(a connection that vanished without closing is known gone only when ZMTP
heartbeats time it out); the resume goes ahead, and that old routing id is
told at once and refused from then on (RESUME_REFUSED, ``seq`` 0) instead of
being given a fresh session behind its back.

Connections gone: each socket's monitor reports a connection closed
(``EVENT_DISCONNECTED``, by file descriptor); intake matches the descriptor
to the routing id last heard on it and detaches that session, which is sent
nothing more until its client speaks again. The notices are read before
every batch of sends and before the ZAP handler answers a handshake, so a
connection that takes the routing id of one gone (another key, silent) is
not sent that session's messages: ROUTER sockets route by id alone.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import functools
import heapq
import itertools
import logging
import operator
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgspec
import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from engine.aio import cancel_and_wait, log_if_it_dies
from engine.busy import BusyFlag
from engine.config import ClientKey, Config, IntakeConfig, SecurityConfig
from engine.journal import JournalError
from engine.messages import (
    AccountRequest,
    AdminRequest,
    BulkNewOrders,
    Heartbeat,
    HeartbeatAck,
    NewOrder,
    OrderStatusRequest,
    Problem,
    Reject,
    Replace,
    Request,
    ResendRequest,
    RejectReason,
    Response,
    TradeHistoryRequest,
    check_new_order,
    check_request,
    check_version,
    classify_decode_error,
    encoder,
    make_reject,
    reject_name,
    reject_refs,
    request_decoder,
    response_decoder,
    seq_of,
)
from engine.metrics import Metrics, SparseLog, warn_whatever_the_level
from ext import zmqcall
from ext.msgframe import FrameEncoder
from ext.msgpackkeys import duplicate_key
from gateways.config import zmq_ipv6

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"kronos"
#: accounts value meaning "every account"
ALL_ACCOUNTS = "*"
#: How soon a backlog (a peer whose queue was full) is tried again, seconds.
BACKLOG_RETRY_S = 0.002
#: Every this many messages a session notes which journal record holds it, so a
#: resend of messages its ring no longer keeps reads the journal from there.
RESEND_MARK_EVERY = 1000
#: reads a ring's frames back as messages (Session.sent)
_RESPONSES = response_decoder()
#: Most messages one ``ResendRequest`` is answered with from the journal (the
#: newest of its range; older ones are refused ``RESEND_UNAVAILABLE``).
JOURNAL_RESEND_MAX = 100_000
#: ResendRequests of one connection that may wait for its journal read; more are refused THROTTLED.
MAX_WAITING_RESENDS = 16
#: Requests charged to the key's ``intake.request_rate`` when served (see
#: ``IntakeServer._may_answer``; refusals are charged wherever they are made).
_CHARGED = frozenset({Heartbeat, ResendRequest, OrderStatusRequest, TradeHistoryRequest})


class _RequestKind:
    """What intake's dispatch needs to know of one request type, worked out at its first
    message: an ``isinstance`` or a class pattern against a msgspec struct type that the
    request is not goes through the metaclass's ``__instancecheck__`` (about 250
    instructions each, five of them per new order), a lookup here is one dict probe.

    Attributes
    ----------
    name : str
        The type's name (``ref_type`` of its rejects, the ``type`` label of its count).
    counter : LoopCounter
        Its ``kronos_messages_in_total`` series.
    charged : bool
        Served requests of the type are charged to the key's ``request_rate`` (``_CHARGED``).
    admin : bool
        Only an admin key may send it (``AdminRequest``).
    account : bool
        It names an account the session must be entitled to (``AccountRequest``).
    """

    __slots__ = ("name", "counter", "charged", "admin", "account")

    def __init__(self, cls: type, metrics: Metrics) -> None:
        self.name = cls.__name__
        self.counter = metrics.messages_in.labels(self.name)
        self.charged = cls in _CHARGED
        self.admin = issubclass(cls, AdminRequest)
        self.account = issubclass(cls, AccountRequest)


# Per-message socket calls (receive, send, "is there more?") are made from C
# by ext.zmqcall on pyzmq's own libzmq: pyzmq's per-call Python work (a Frame
# per received part, a SocketOption enum per getsockopt, an exception per
# empty recv) cost more than intake's framing. Same libzmq calls, same
# semantics; options, binding, CURVE and closing stay with pyzmq.


# ---------------------------------------------------------------- handler interface
class EndpointError(OSError):
    """An endpoint of the configuration could not be bound (the message names it and why)."""


class HeldReject:
    """A ``Reject`` intake holds back for one order of a bulk it refused.

    A bulk's answers leave in the bulk's order: the handler sends each held
    reject (calls it) just before it answers the first order placed after it
    in the bulk as sent. Calling it a second time does nothing, so intake can
    send whatever a failed handler left unsent.
    """

    __slots__ = ("place", "_send", "sent")

    def __init__(self, place: int, send: Callable[[], object]) -> None:
        self.place = place      # the refused order's place in the bulk as sent
        self._send = send
        self.sent = False

    def __call__(self) -> None:
        if not self.sent:
            self.sent = True
            self._send()


def in_bulk_order(request: BulkNewOrders, positions: tuple[int, ...] | None,
                  held: list[HeldReject], answer: Callable[..., object]) -> None:
    """Answer a bulk's kept orders and send its held rejects, all in the bulk's order.

    Calls ``answer(order, index=place)`` for each order of ``request``
    (``positions``: their places in the bulk as sent, None for 0, 1, ...),
    sending each of ``held`` just before the first order placed after it.
    ``held`` is sorted by place; those placed after the last order are left
    for the caller to send (``HeldReject`` sends once, so sending all of
    ``held`` afterwards, in a ``finally``, is right and safe).
    """
    held.sort(key=_place)
    k = 0
    for i, order in enumerate(request.orders):
        place = i if positions is None else positions[i]
        while k < len(held) and held[k].place < place:
            held[k]()
            k += 1
        answer(order, index=place)


def send_held(held: Iterable[HeldReject]) -> None:
    """Send, in the bulk's order, those of ``held`` not sent yet: what follows the
    bulk's last order, or what a handler that failed left (each sends once)."""
    for reject in sorted(held, key=_place):
        reject()


_place = operator.attrgetter("place")


class Handler:
    """What intake hands decoded requests to: the pipeline implements this.

    Subclass it: intake calls every method below (the defaults: ``handle``
    raises, ``flush`` releases at once, the others do nothing). All but
    ``sent_frames`` run on the intake's event loop thread and must not block it.
    """

    def handle(self, session: "Session", request: Request,
               positions: tuple[int, ...] | None = None,
               held: tuple[HeldReject, ...] = (), encoded: bytes | None = None) -> None:
        """Process one request that passed intake's checks.

        Receives ``NewOrder``, ``Cancel``, ``Replace``, ``BulkNewOrders``
        (only the orders that passed intake's per-order checks; when some did
        not, ``positions`` gives each kept order's place in the bulk as sent,
        else it is None, and ``held`` the refused orders' rejects, by place,
        for the handler to send in the bulk's order),
        ``OrderStatusRequest``, ``TradeHistoryRequest``, ``KillSwitch`` and
        ``ReloadLimits``; answers go out through ``session.send(msg)``, now or
        later. ``encoded``, when not None, is ``request``'s msgpack exactly as
        the engine's encoder writes it (the frame the client sent was that):
        the pipeline journals it as it is instead of encoding the request
        again. An exception raised here is logged and answered with an
        INTERNAL_ERROR ``Reject``.
        """
        raise NotImplementedError

    def flush(self, release: Callable[[], None]) -> None:
        """Make what the handled requests produced durable, then call ``release()``.

        Intake holds every outbound message of a loop wake-up and calls this
        once at its end; ``release()`` sends them. The pipeline writes the
        wake-up's journal records here (one write) so that an acknowledgement
        never leaves before its record; it may call ``release`` later (group
        commit) but must call it exactly once, and releases must run in the
        order of the ``flush`` calls. The default releases at once.
        """
        release()

    def attach(self, flush_soon: Callable[[], None]) -> None:
        """Intake hands over ``flush_soon``: it has ``flush`` called once the current loop
        callback is done (batched with whatever else that callback sends).

        For what the handler journals outside a request with nothing to send:
        a fill for a session intake has let go is journaled only, and without
        a flush it would wait, not durable, for the next client message.
        Default: ignored.
        """

    def record_sent(self, session: "Session", frame: bytes) -> int | None:
        """Every frame a session sends passes here once, before ``flush``.

        The pipeline journals it (seq included), so that recovery restores
        each session's sequence number and resend ring exactly, and returns
        the journal record's seq (see :meth:`sent_frames`). Default: no-op.
        """
        return None

    def sent_recorder(self, session: "Session") -> Callable[[bytes], int | None]:
        """What :meth:`record_sent` does for ``session``, as a callable of the frame alone.

        Intake asks at the session's first send and calls the answer for each
        frame after it, until intake drops the session (a frame it sends
        after that, if any, asks again). The pipeline answers with its
        journal's compiled append bound to the session's record envelope:
        no Python call per message. Default: :meth:`record_sent` bound to
        ``session``.
        """
        return functools.partial(self.record_sent, session)

    def sent_frames(self, session_id: str, from_record: int, begin_seq: int,
                    end_seq: int) -> list[bytes]:
        """The frames ``session_id`` was sent with seq ``begin_seq`` to ``end_seq``, as
        :meth:`record_sent` kept them, looked for from record ``from_record`` on; fewer
        (the first ones, in order) when some are not kept. Called on a worker thread,
        for a resend of messages older than the session's ring. Default: none.
        """
        return []

    def on_session_timeout(self, session: "Session") -> None:
        """The session's peer has been silent for ``heartbeat_timeout_ms``.

        Called once per silence. ``session.cancel_on_disconnect`` says
        whether the client asked for its orders to be canceled now. The
        session stays resumable; any later message clears ``timed_out``.
        """

    def on_session_forgotten(self, session: "Session") -> None:
        """Intake let the session go (evicted, or silent past ``session_retention_s``).

        It can no longer be resumed; messages for it have nowhere to go. The
        handler drops what it keeps per session. Default: no-op.
        """


# ---------------------------------------------------------------- sessions
class Session:
    """One client connection's state, as seen by the handler.

    Attributes
    ----------
    session_id : str
        Engine-assigned id (told in ``HeartbeatAck``; used to resume).
    principal : str
        The client's Z85 CURVE public key, or ``""`` on a plaintext endpoint.
    client_name : str
        The key's ``name`` from the configuration (``"plaintext"`` otherwise).
    accounts : frozenset of str
        Accounts this session may use (``"*"``: all).
    admin : bool
        May send admin requests.
    cancel_on_disconnect : bool
        The client opted in (``Heartbeat.cancel_on_disconnect``).
    timed_out : bool
        Silent for longer than the heartbeat timeout.
    fresh : bool
        No request of it was accepted yet (only intake's ``Reject`` were
        sent): its connection may still resume another session instead.
    dropped : bool
        Intake let it go for good (evicted or expired, after which the
        handler's ``on_session_forgotten`` ran): nothing resumes it, and the
        handler takes no request of it.
    last_recv_ns : int
        ``time.monotonic_ns()`` of the wake-up that read its last message.
    """

    __slots__ = ("session_id", "principal", "client_name", "accounts", "admin",
                 "cancel_on_disconnect", "timed_out", "fresh", "dropped", "last_recv_ns",
                 "created_ns", "_opened", "_seq", "_ring", "_route", "_listener", "_backlog",
                 "_departed", "_marks", "_reading", "_dropped_from", "_record_sent")

    def __init__(self, listener: "_Listener", route: bytes | None, principal: str,
                 client_name: str, accounts: frozenset[str], admin: bool, ring_size: int,
                 now_ns: int):
        self.session_id = secrets.token_hex(8)
        self.principal = principal
        self.client_name = client_name
        self.accounts = accounts
        self.admin = admin
        self.cancel_on_disconnect = False
        self.timed_out = False
        self.fresh = True
        self.dropped = False
        self.last_recv_ns = now_ns
        self.created_ns = now_ns
        # Its place among the server's sessions in the order they were taken in
        # (set by IntakeServer._hold_session): the eviction's tie-break.
        self._opened = 0
        self._seq = 0
        # The frames sent, as sent (seq included), oldest first: a resend sends
        # them again as they are.
        self._ring: collections.deque[bytes] = collections.deque(maxlen=ring_size)
        self._route = route
        self._listener = listener
        # (route, frames) that ZeroMQ would not take yet for that route (the
        # peer reads slower than we send): sent in order before anything newer.
        self._backlog: tuple[bytes, collections.deque] | None = None
        # (listener, route) of its connections that went, in that listener's
        # ``departed``: taken out when the session is dropped, so that a
        # dropped session (and its ring) is not held there after it.
        self._departed: list[tuple[_Listener, bytes]] = []
        # (seq, journal record) of every RESEND_MARK_EVERY-th message: where a
        # resend older than the ring starts reading the journal.
        self._marks: list[tuple[int, int]] = []
        self._reading: _JournalRead | None = None  # a resend reading the journal
        # The lowest seq its full backlog dropped (0: none): from there on the
        # backlog takes nothing new, and once it has drained the engine sends
        # the messages from there again, from the ring or the journal.
        self._dropped_from = 0
        # The handler's sent_recorder for it, asked at its first send (None: not yet).
        self._record_sent: Callable[[bytes], int | None] | None = None

    def __repr__(self) -> str:
        return (f"Session({self.session_id}, client={self.client_name!r}, seq={self._seq}, "
                f"connected={self.connected})")

    @property
    def seq(self) -> int:
        """Sequence number of the last message sent (0: none yet)."""
        return self._seq

    @property
    def connected(self) -> bool:
        """Whether a live connection is attached (messages are queued in the ring otherwise)."""
        return self._route is not None

    def is_entitled(self, account: str) -> bool:
        """Whether this session may trade and query ``account``."""
        return account in self.accounts or ALL_ACCOUNTS in self.accounts

    def send(self, msg: Response) -> int:
        """Stamp the next sequence number on ``msg``, keep it for resends and queue it.

        Parameters
        ----------
        msg : Response
            Any engine-to-client message (encoded carrying the ``seq``; ``msg``
            itself keeps its own).

        Returns
        -------
        int
            The sequence number given. The message goes out when intake next
            flushes (at the end of the current loop wake-up, after the
            handler's ``flush``), and is kept for ``ResendRequest`` whether
            or not it could be delivered (no connection, or ZeroMQ's queue
            to the peer full).
        """
        seq = self._seq = self._seq + 1
        listener = self._listener
        frame = listener.stamp(msg, seq)
        self._ring.append(frame)
        server = listener.server
        record_sent = self._record_sent
        if record_sent is None:
            record_sent = self._record_sent = server.handler.sent_recorder(self)
        record = record_sent(frame)  # journaled as sent, seq included (Handler.record_sent)
        if record and seq % RESEND_MARK_EVERY == 1:
            self._marks.append((seq, record))
        # (IntakeServer._queue's body, inline: every message sent passes here.)
        server._outbox.append((self, frame))
        if not server._draining:
            server._flush_soon()
        return seq

    def reject(self, reason: int, text: str, *, ref_type: str | None = None,
               cl_ord_id: str | None = None, req_id: str | None = None) -> int:
        """Send a ``Reject``; returns its sequence number."""
        self._listener.server._count_reject(reason)
        return self.send(make_reject(reason, text, ref_type=ref_type, cl_ord_id=cl_ord_id,
                                     req_id=req_id))

    def sent(self, begin_seq: int, end_seq: int = 0) -> Iterator[Response]:
        """Messages still kept with ``begin_seq <= seq <= end_seq`` (``end_seq`` 0: to the last)."""
        decode = _RESPONSES.decode
        return (decode(frame) for frame in self.sent_frames(begin_seq, end_seq))

    def sent_frames(self, begin_seq: int, end_seq: int = 0) -> Iterator[bytes]:
        """The frames of :meth:`sent`, as they were sent."""
        end_seq = end_seq or self._seq
        ring = self._ring
        # The ring's seqs only grow: bisected, a resend decodes a few seqs, not every frame's.
        start = bisect.bisect_left(ring, begin_seq, key=seq_of)
        for frame in itertools.islice(ring, start, None):
            if seq_of(frame) > end_seq:
                return
            yield frame

    @property
    def oldest_kept_seq(self) -> int:
        """Lowest sequence number still available for resend (``seq + 1`` if none)."""
        return seq_of(self._ring[0]) if self._ring else self._seq + 1

    def journal_mark(self, seq: int) -> int | None:
        """A journal record at or before the one holding message ``seq`` (None: unknown)."""
        at = bisect.bisect_right(self._marks, (seq, sys.maxsize)) - 1
        return self._marks[at][1] if at >= 0 else None


class _JournalRead:
    """A resend reading a session's older messages from the journal: for which connection,
    its future, and the ResendRequests of that connection waiting for it.

    ``holds``: newer messages wait in the session's backlog until the read's
    replay goes ahead of them (a slow reader's dropped messages, which the
    client did not ask for: it must see them in order).
    """

    __slots__ = ("route", "future", "waiting", "superseded", "holds")

    def __init__(self, route: bytes, holds: bool = False):
        self.route = route
        self.future: asyncio.Future | None = None
        self.waiting: list[tuple[_Listener, ResendRequest]] = []
        self.superseded = False
        self.holds = holds


class _Superseded:
    """A routing id whose session it no longer has: resumed by another connection, or
    dropped by intake (evicted at ``max_sessions``, expired) while the connection lived.

    Frames from it (same key) are refused with ``text``, not given a new
    session: its client still counts that session's ``seq`` and would drop
    the new session's numbering as duplicates.
    """

    __slots__ = ("principal", "session_id", "last_recv_ns", "text")

    def __init__(self, principal: str, session_id: str, now_ns: int, text: str):
        self.principal, self.session_id, self.last_recv_ns = principal, session_id, now_ns
        self.text = text


def _remember(bounded: dict, key, value, bound: int) -> None:
    """``bounded[key] = value`` as its newest entry, the oldest dropped past ``bound``
    (the routing-id maps: one entry per connection that went, never more than sessions)."""
    while len(bounded) >= bound:
        del bounded[next(iter(bounded))]
    bounded[key] = value


def _superseded_text(session_id: str) -> str:
    """What a connection whose session was resumed elsewhere is told."""
    return (f"session {session_id} was resumed on another connection; this connection has no "
            f"session any more and its requests are refused: reconnect to resume it or to "
            f"start a new one")


def _idle(session: Session) -> bool:
    """Whether ``session`` may be evicted: no connection attached, or silent past the
    heartbeat timeout."""
    return session._route is None or session.timed_out


class _IdleSessions:
    """The sessions intake may evict (detached or timed out), longest silent first.

    Finding the victim at ``max_sessions`` (or a key's ``max_sessions_per_key``)
    by a scan of every session cost about 200 µs at 10,000 sessions, on the
    event loop, for every new session while intake is full; the watchdog also
    takes from the engine-wide one the sessions silent past
    ``session_retention_s`` (:meth:`take_silent_before`). This is a heap of
    ``(last_recv_ns, opened, pushed, session)``, cleaned lazily: the server
    pushes a session each time it becomes idle (its connection goes, the
    watchdog times it out, it is restored detached), and an entry whose
    session was since dropped, attached again or heard from (its
    ``last_recv_ns`` moved) is stale and skipped when it comes to the top. A
    stale entry never becomes valid again (``last_recv_ns`` only grows, a
    dropped session is never taken back, and a session idle again is pushed
    again), so dropping it is safe. ``opened`` breaks ties as the scan did (the
    first of equal ``last_recv_ns`` in the sessions' order); ``pushed`` only
    keeps two entries of one session from comparing the sessions themselves.

    Parameters
    ----------
    sessions : dict
        The server's sessions by id: an entry is live only while its session
        is still there.
    """

    __slots__ = ("heap", "_sessions", "_pushed")

    def __init__(self, sessions: dict[str, Session]):
        self.heap: list[tuple[int, int, int, Session]] = []
        self._sessions = sessions
        self._pushed = 0

    def __len__(self) -> int:
        return len(self.heap)

    def _live(self, entry: tuple[int, int, int, Session]) -> bool:
        session = entry[3]
        return self._sessions.get(session.session_id) is session and _idle(session) \
            and session.last_recv_ns == entry[0]

    def push(self, session: Session, held: int) -> None:
        """Add ``session``, idle now; ``held``: how many sessions this heap may hold live
        (rebuilt once stale entries outnumber them, so it stays O(sessions))."""
        self._pushed += 1
        heapq.heappush(self.heap, (session.last_recv_ns, session._opened, self._pushed, session))
        if len(self.heap) > 2 * held + 32:
            # One entry per live session (a session idle twice at one
            # last_recv_ns has two, both live): the cost, O(heap), is paid
            # for by the pushes since the last rebuild.
            live = {}
            for entry in self.heap:
                if self._live(entry):
                    live[entry[3].session_id] = entry
            self.heap = list(live.values())
            heapq.heapify(self.heap)

    def first(self) -> Session | None:
        """The longest silent idle session (None: none), stale entries dropped on the way."""
        heap = self.heap
        while heap:
            if self._live(heap[0]):
                return heap[0][3]
            heapq.heappop(heap)
        return None

    def take_silent_before(self, before: int) -> list[Session]:
        """Take out the idle sessions last heard from before ``before``, longest silent
        first (one may come twice: idle twice at one ``last_recv_ns``). The caller drops
        them, or notes them idle again (``IntakeServer._note_idle``)."""
        taken = []
        heap = self.heap
        while heap and heap[0][0] < before:
            entry = heapq.heappop(heap)
            if self._live(entry):
                taken.append(entry[3])
        return taken


class _Entitlement:
    __slots__ = ("name", "accounts", "admin")

    def __init__(self, name: str, accounts: Iterable[str], admin: bool):
        self.name, self.accounts, self.admin = name, frozenset(accounts), admin


class _Listener:
    """One ROUTER socket with its own codec objects and routing table."""

    def __init__(self, server: "IntakeServer", socket: zmq.Socket, curve: bool):
        self.server = server
        self.socket = socket
        self.curve = curve
        self.decoder = request_decoder()
        self.encoder = encoder()
        frames = FrameEncoder(self.encoder.encode)
        #: ``stamp(msg, seq)``: the frame of ``msg`` sent with ``seq`` (Session.send)
        self.stamp = frames.stamped
        #: ``writes_as(request, payload)``: whether the frame is the engine's own msgpack
        #: of the request it decoded to (IntakeServer._on_frames)
        self.writes_as = frames.writes_as
        self.buf = bytearray(1024)
        self.routes: dict[bytes, Session] = {}
        #: routing ids whose session another connection resumed, oldest first
        self.superseded: dict[bytes, _Superseded] = {}
        #: routing ids whose connection a send found gone, with their session, oldest first:
        #: requests still unread from them belong to that session (see _unreachable)
        self.departed: dict[bytes, Session] = {}
        self.endpoints: list[str] = []
        self.recheck_scheduled = False
        #: libzmq's socket, for ext.zmqcall; 0 once the socket is closed
        self.handle = socket.underlying
        #: the routing id last heard on each connection (by its file descriptor), so
        #: that the monitor's EVENT_DISCONNECTED, which names only the descriptor,
        #: tells which routing id lost its connection; and the other way round: a
        #: routing id is one connection's at a time (see heard_on)
        self.fd_routes: dict[int, bytes] = {}
        self.route_fds: dict[bytes, int] = {}
        self.monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.monitor_handle = self.monitor.underlying

    def close(self) -> None:
        """Close the socket; later sends and reads fail (ENOTSOCK) instead of touching it."""
        self.handle = self.monitor_handle = 0
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close()

    def read_disconnects(self) -> None:
        """Detach every session whose connection the monitor reports gone.

        Sending nothing more to a routing id whose connection went is what
        keeps another connection that takes that id from receiving the
        session's messages: see *Routing ids* in docs/protocol.md.
        """
        handle = self.monitor_handle
        while handle:
            message = zmqcall.recv_message(handle, False)
            if message is None:
                return
            event = parse_monitor_message(message[0])
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            fd = event["value"]
            route = self.fd_routes.pop(fd, None)
            if route is None:
                continue
            del self.route_fds[route]
            session = self.routes.get(route)
            if session is not None:
                self.depart(session, route)

    def heard_on(self, fd: int, route: bytes) -> None:
        """``route`` was heard on the connection at ``fd``, which last had another one (or
        none): map each to the other alone.

        The descriptor a routing id had before names it no more: a request read
        after its connection's disconnect notice maps that dead descriptor
        again, and a client that reconnects under its own routing id comes on
        another one; the notice of the next connection the OS gives the old
        descriptor must not detach the session from the new connection.
        """
        fd_routes, route_fds = self.fd_routes, self.route_fds
        before = route_fds.get(route)
        if before is not None:
            del fd_routes[before]
        replaced = fd_routes.get(fd)
        if replaced is not None:
            del route_fds[replaced]
        fd_routes[fd] = route
        route_fds[route] = fd

    def send(self, session: Session, route: bytes, frame: bytes) -> bool:
        """Hand one frame to ZeroMQ for ``route``; False if the peer's queue is full."""
        try:
            if zmqcall.send_pair(self.handle, route, frame) == zmqcall.AGAIN:
                return False
            self.server.frames_sent += 1
        except zmq.ZMQError as exc:
            self._unreachable(session, route, exc)
        return True

    def _unreachable(self, session: Session, route: bytes, exc: zmq.ZMQError) -> None:
        """A send found the connection behind ``route`` gone (ROUTER_MANDATORY tells us)."""
        if exc.errno != zmq.EHOSTUNREACH:
            raise exc
        self.server.metrics.send_dropped.inc()
        self.depart(session, route)

    def depart(self, session: Session, route: bytes) -> None:
        """The connection behind ``route`` is gone: keep the session for a resume, and
        send nothing more to that routing id."""
        if self.routes.get(route) is session:
            del self.routes[route]
            # A request the client sent just before it went can still be
            # unread in the socket: read later, it is its session's (the one
            # the client resumes), not a new one's that nobody would resume.
            _remember(self.departed, route, session, self.server.config.max_sessions)
            session._departed = [(listener, r) for listener, r in session._departed
                                 if listener.departed.get(r) is session]
            session._departed.append((self, route))
        if session._route == route:
            session._route = None
            self.server._note_idle(session)


class _Authenticator(AsyncioAuthenticator):
    """pyzmq's ZAP authenticator, reading the listeners' disconnect notices first.

    A connection can only take a routing id once the connection that had it
    is gone, and only after its own handshake, which waits for this answer.
    libzmq reports the old connection gone before it frees the id, so reading
    the notices here detaches its session before the new connection can
    take the id and be sent the session's messages.
    """

    def __init__(self, server: "IntakeServer"):
        super().__init__(server.context)
        self._server = server

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """Detach the sessions of connections gone, then answer the handshake."""
        self._server.read_disconnects()
        await super().handle_zap_message(msg)

    async def aclose(self) -> None:
        """Stop answering. Unlike ``stop``, the ZAP task has finished before its
        socket is closed: a poll cancelled after that leaves uvloop a reader on a
        closed descriptor, and uvloop aborts the process."""
        # AsyncioAuthenticator's own task (name-mangled); without it, as plain stop().
        await cancel_and_wait(getattr(self, "_AsyncioAuthenticator__task", None))
        self.stop()


class _CredentialsProvider:
    """ZAP callback: a client key is allowed if the configuration lists it.

    A refusal is logged, the key named, up to 10 in 10 s; past that they are
    counted and said in one line (``engine.metrics.SparseLog``):
    a client retrying an unknown key (or anyone, with keys of their own
    choosing) must not flood the log.
    """

    def __init__(self, server: "IntakeServer"):
        self.server = server
        self._refusals = SparseLog(log, "intake: refused CURVE handshakes (keys not in the "
                                        "allow-list)")

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key.decode("ascii") in self.server._entitlements
        if not allowed:
            self._refusals.log(logging.WARNING, "intake: refused CURVE key %s (not in the "
                               "allow-list)", key.decode("ascii"))
        return allowed


def dead_peer_detection(socket: zmq.Socket, interval_ms: int, timeout_ms: int) -> None:
    """Have the kernel drop a listener's connections whose peer is gone: TCP keepalive
    probes a connection idle for ``interval_ms`` (whole seconds, at least one) and
    ``ZMQ_TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux) drops one whose sent bytes, or
    window probes, go unacknowledged for ``timeout_ms``.

    Not ZeroMQ's own pings (``ZMQ_HEARTBEAT_IVL``): libzmq 4.3.5, the one pyzmq
    ships, aborts the whole process when its ping timer fires on a connection it
    stopped reading at the receive high-water mark and that has since closed
    (``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``: the timer
    calls ``out_event``, which asserts the connection had no I/O error; libzmq
    #4841). Any client pipelining past ``recv_hwm`` to a busy engine and then
    closing could take the engine down. A kernel timeout only closes the socket,
    which libzmq handles on that path (docs/engine.md, *Read-ahead*).
    """
    # Within Linux's bounds (TCP_KEEPIDLE and TCP_KEEPINTVL 32,767 s, TCP_KEEPCNT 127):
    # libzmq closes every connection it accepts when the kernel refuses one, silently.
    # The user timeout, which ends a connection whose probes go unanswered anyway,
    # has the last word past them.
    interval_s = min(_KEEPALIVE_MAX_S, max(1, interval_ms // 1000))
    socket.tcp_keepalive = 1
    socket.tcp_keepalive_idle = interval_s
    socket.tcp_keepalive_intvl = interval_s
    socket.tcp_keepalive_cnt = min(_KEEPALIVE_MAX_PROBES,
                                   max(1, -(-timeout_ms // (interval_s * 1000))))
    socket.tcp_maxrt = timeout_ms


#: Linux's largest TCP_KEEPIDLE/TCP_KEEPINTVL (seconds) and TCP_KEEPCNT
_KEEPALIVE_MAX_S, _KEEPALIVE_MAX_PROBES = 32767, 127


# ---------------------------------------------------------------- keys
#: What ``generate_keypair`` takes as a name: a plain file name, never a path
#: (``../x`` would leave the directory) nor hidden (``.x``, or ``""``: ``.key``).
KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def generate_keypair(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Create a CURVE key pair as ZeroMQ certificate files.

    The files are written in a private (mode 0700) directory beside the
    destination and then renamed into place, so the secret one is never
    readable by anyone but its owner, whatever the umask. Existing files of
    that name are replaced.

    Parameters
    ----------
    directory : str or PathLike
        Where to write (created if missing, mode 0700).
    name : str
        Base file name (``KEY_NAME``: letters, digits, ``.``, ``_``, ``-``,
        not starting with a dot): ``<name>.key`` (public) and
        ``<name>.key_secret``.

    Returns
    -------
    (Path, Path)
        The public and the secret certificate files; the secret one is
        readable by its owner only.

    Raises
    ------
    ValueError
        If ``name`` is not a ``KEY_NAME``.
    """
    if not KEY_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a key name: use letters, digits, '.', '_' and '-', "
                         f"not starting with a dot")
    directory = Path(directory)
    # Made private (whatever the umask): others must not replace or remove key files.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=directory))
    try:
        public, secret = (Path(p) for p in zmq.auth.create_certificates(staging, name))
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)  # readable by all, writable by its owner only, whatever the umask
        public = public.replace(directory / public.name)
        secret = secret.replace(directory / secret.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public, secret


def load_keypair(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` Z85 keys of a certificate file (secret ``None`` in a public file)."""
    return zmq.auth.load_certificate(str(path))


def client_public_key(client: ClientKey) -> str:
    """The Z85 public key of a configured client (inline or from its file)."""
    if client.public_key is not None:
        return client.public_key
    public, _ = load_keypair(client.public_key_file)
    return public.decode("ascii")


#: The client name of the plaintext endpoints' sessions, and of a key no longer allowed.
PLAINTEXT_CLIENT, REVOKED_CLIENT = "plaintext", "revoked"


def client_names(security: SecurityConfig) -> Callable[[str], str]:
    """The client name a session of a principal (its Z85 key; ``""``: plaintext) gets, as
    intake names it: for recovery, which registers the journal's sessions with risk under
    their keys' throttle buckets before intake exists."""
    names = {client_public_key(client): client.name for client in security.clients}
    return lambda principal: names.get(principal, REVOKED_CLIENT) if principal \
        else PLAINTEXT_CLIENT


# ---------------------------------------------------------------- server
class IntakeServer:
    """The ROUTER server: sessions, decoding, checks and dispatch to a handler.

    Parameters
    ----------
    intake : IntakeConfig
        Endpoints and session rules.
    security : SecurityConfig
        Server key, client allow-list and entitlements.
    handler : Handler
        Receives requests that pass intake's checks.
    metrics : Metrics, optional
        Where to count; a private one by default.
    context : zmq.Context, optional
        Defaults to a new context owned (and terminated) by the server. The
        ZAP authenticator binds the context's one ZAP endpoint, so a shared
        context must not run another authenticator.
    busy : BusyFlag, optional
        Raised for each wake-up that handles client messages, lowered once
        the replies are handed over (see ``engine.busy``).
    """

    def __init__(self, intake: IntakeConfig, security: SecurityConfig, handler: Handler, *,
                 metrics: Metrics | None = None, context: zmq.Context | None = None,
                 busy: BusyFlag | None = None):
        self.config = intake
        #: raised while a wake-up handles client messages (gateways yield to it)
        self.busy = busy
        self.security = security
        self.handler = handler
        self.metrics = metrics or Metrics()
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._listeners: list[_Listener] = []
        self.sessions: dict[str, Session] = {}
        #: sessions held per principal (max_sessions_per_key)
        self._held: collections.Counter[str] = collections.Counter()
        # The sessions eviction may drop, engine-wide and per principal (see
        # _IdleSessions), and the count that orders sessions as self.sessions does.
        self._idle = _IdleSessions(self.sessions)
        self._idle_by_key: dict[str, _IdleSessions] = {}
        self._sessions_taken = 0
        # The sessions the watchdog may time out (held, not timed out), in the
        # order they were last heard from, longest silent first: each message
        # moves its session to the end, so a round takes the sessions due from
        # the front instead of visiting every session (see _check_sessions).
        self._awake: collections.OrderedDict[Session, None] = collections.OrderedDict()
        self._entitlements: dict[str, _Entitlement] = {}
        self._plaintext = _Entitlement(PLAINTEXT_CLIENT, security.plaintext_accounts,
                                       security.plaintext_admin)
        self._auth: _Authenticator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task | None = None
        self._timeout_ns = intake.heartbeat_timeout_ms * 1_000_000
        self._retention_ns = intake.session_retention_s * 1_000_000_000
        self.shutting_down = False
        self._request_kinds: dict[type, _RequestKind] = {}
        # (The series itself: LoopFamily.inc is two Python calls, its series' one.)
        self._orders_in = self.metrics.orders_in.labels()
        self._reject_counters = {}
        #: per principal: [tokens in units of 1e-9 request, when last refilled] (request_rate)
        self._request_buckets: dict[str, list[int]] = {}
        self._throttled_log = SparseLog(log, "requests answered THROTTLED (intake.request_rate)",
                                        most=1)
        self._bad_resume_log = SparseLog(log, "resumes refused from past their session's end")
        self._refused_session_log = SparseLog(log, "intake: new sessions refused at "
                                                   "max_sessions or max_sessions_per_key")
        self._stage_latency = self.metrics.stage_latency.labels("intake")
        # Outbound messages held until the handler's flush (see Handler.flush).
        self._outbox: list[tuple[Session, bytes]] = []
        # Batches handed to the handler's flush and not released yet (under fsync group,
        # until the committer has synced them), oldest first: nothing in them may reach
        # a client before its release (see _send_dropped).
        self._unreleased: collections.deque[list[tuple[Session, bytes]]] = collections.deque()
        self._flush_scheduled = False
        self._draining = False
        #: messages taken off the sockets, and frames handed to ZeroMQ (plain
        #: counters for tests and profiling; Prometheus has the labelled ones)
        self.messages_read = 0
        self.frames_sent = 0
        # Sessions whose peer's queue was full, and the timer that retries them.
        self._backlogged: set[Session] = set()
        # Resends older than a session's ring read the journal here, one at a
        # time and off the loop (see _resend_from_journal).
        self._journal_reads = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="kronos-resend")
        self._stopped = False
        self._backlog_timer: asyncio.TimerHandle | None = None
        self.update_security(security)

    @classmethod
    def from_config(cls, config: Config, handler: Handler, *, metrics: Metrics | None = None,
                    context: zmq.Context | None = None,
                    busy: BusyFlag | None = None) -> "IntakeServer":
        """Build from the whole configuration."""
        return cls(config.intake, config.security, handler, metrics=metrics, context=context,
                   busy=busy)

    # ------------------------------------------------------------ configuration
    def update_security(self, security: SecurityConfig) -> None:
        """Replace the allow-list and entitlements (also for live sessions).

        A key removed here can no longer connect; its open sessions lose
        every account (requests are refused with NOT_AUTHORIZED).

        Raises
        ------
        ValueError
            When two clients have the same key (read from a file or
            inline); nothing is changed then.
        """
        entitlements = {}
        for client in security.clients:
            key = client_public_key(client)
            if key in entitlements:
                # Whichever entry came last would decide the key's rights.
                raise ValueError(f"security.clients: client {client.name!r} has the same key as "
                                 f"client {entitlements[key].name!r}")
            entitlements[key] = _Entitlement(client.name, client.accounts, client.admin)
        self.security = security
        self._entitlements = entitlements
        self._plaintext = _Entitlement(PLAINTEXT_CLIENT, security.plaintext_accounts,
                                       security.plaintext_admin)
        for session in self.sessions.values():
            ent = self._entitlement_of(session.principal, session._listener.curve)
            session.accounts, session.admin = ent.accounts, ent.admin

    def client_rights(self) -> dict[str, tuple[str, tuple[str, ...], bool]]:
        """Each allowed client's ``(public key, accounts, admin)``, by its name; the plaintext
        endpoints' rights (``plaintext_accounts``, ``plaintext_admin``) as ``"plaintext"``
        with no key, when there are plaintext endpoints."""
        rights = {ent.name: (key, tuple(sorted(ent.accounts)), ent.admin)
                  for key, ent in self._entitlements.items()}
        if any(not listener.curve for listener in self._listeners):
            plain = self._plaintext
            rights[plain.name] = ("", tuple(sorted(plain.accounts)), plain.admin)
        return rights

    def _entitlement_of(self, principal: str, curve: bool) -> _Entitlement:
        if not curve:
            return self._plaintext
        return self._entitlements.get(principal) or _Entitlement(REVOKED_CLIENT, (), False)

    @property
    def endpoints(self) -> list[str]:
        """Bound CURVE endpoints (with the actual port when 0 or ``*`` was asked)."""
        return [e for lst in self._listeners if lst.curve for e in lst.endpoints]

    @property
    def plaintext_endpoints(self) -> list[str]:
        """Bound plaintext endpoints."""
        return [e for lst in self._listeners if not lst.curve for e in lst.endpoints]

    @property
    def server_public_key(self) -> bytes | None:
        """The server's Z85 public key (what CURVE clients need), if CURVE is on."""
        return self._server_public

    # ------------------------------------------------------------ start / stop
    async def start(self) -> None:
        """Bind the endpoints and start serving on the running loop."""
        self._loop = asyncio.get_running_loop()
        self.handler.attach(self._flush_soon)
        cfg = self.config
        self._server_public = None
        if cfg.plaintext_endpoints and not cfg.allow_plaintext:
            raise ValueError("plaintext endpoints need intake.allow_plaintext = true")
        if cfg.endpoints:
            public, secret = load_keypair(self.security.server_secret_key_file)
            if secret is None:
                raise ValueError(f"{self.security.server_secret_key_file} holds no secret key")
            self._server_public = public
        if cfg.endpoints or cfg.plaintext_endpoints:
            # The authenticator must be answering before the first handshake.
            # Plaintext endpoints use it too: it admits any NULL peer, and reads
            # the disconnect notices before it does (see _Authenticator).
            self._auth = _Authenticator(self)
            self._auth.start()
        if cfg.endpoints:
            self._auth.configure_curve_callback(domain=ZAP_DOMAIN.decode(),
                                                credentials_provider=_CredentialsProvider(self))
            socket = self._make_socket(curve_keys=(public, secret))
            self._bind(_Listener(self, socket, curve=True), cfg.endpoints)
        if cfg.plaintext_endpoints:
            # What anyone reaching them may do, said with it: the rights are in another
            # section ([security]), and "*" with the admin right is the whole engine.
            accounts = self.security.plaintext_accounts
            rights = ("every account" if ALL_ACCOUNTS in accounts else
                      f"accounts {', '.join(accounts)}" if accounts else "no account")
            admin = ("and admin requests (kill switches, ReloadLimits)"
                     if self.security.plaintext_admin else "and no admin request")
            warning = (f"intake: PLAINTEXT endpoints {', '.join(cfg.plaintext_endpoints)} accept "
                       f"unauthenticated, unencrypted connections (allow_plaintext = true): "
                       f"anyone reaching them may use {rights} {admin} (security."
                       f"plaintext_accounts, plaintext_admin)")
            # (Whatever the level: the only sign that anyone on the network may trade.)
            warn_whatever_the_level(log, warning)
            self._bind(_Listener(self, self._make_socket(), curve=False), cfg.plaintext_endpoints)
        for listener in self._listeners:
            self._loop.add_reader(listener.monitor.getsockopt(zmq.FD), listener.read_disconnects)
            self._loop.add_reader(listener.socket.getsockopt(zmq.FD), self._drain, listener)
            # Messages may have arrived before the reader was registered.
            self._loop.call_soon(self._drain, listener)
        self._watchdog = log_if_it_dies(self._loop.create_task(self._watch_sessions()),
                                        "intake: the sessions' watchdog (timeouts, retention)")
        log.info("intake: serving on %s", ", ".join(self.endpoints + self.plaintext_endpoints))

    def _make_socket(self, curve_keys: tuple[bytes, bytes] | None = None) -> zmq.Socket:
        """A ROUTER socket with the configured options (a CURVE server given ``curve_keys``).

        A socket left open makes ``context.term()`` wait for ever, and this
        one is not yet a listener that ``stop`` closes: if an option is
        refused (a value out of range), it is closed before the error goes on.
        """
        cfg = self.config
        socket = self.context.socket(zmq.ROUTER)
        try:
            # Know when a peer is gone instead of silently dropping its messages.
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            socket.sndhwm = cfg.send_hwm
            socket.rcvhwm = cfg.recv_hwm
            # Frames above the hard limit are refused by libzmq (the connection
            # drops) so they are never buffered; between the soft and the hard
            # limit intake answers MESSAGE_TOO_LARGE.
            socket.maxmsgsize = cfg.hard_max_bytes
            socket.linger = 200
            dead_peer_detection(socket, cfg.heartbeat_interval_ms, cfg.heartbeat_timeout_ms)
            socket.zap_domain = ZAP_DOMAIN  # every handshake waits for _Authenticator
            if curve_keys is not None:
                socket.curve_server = True
                socket.curve_publickey, socket.curve_secretkey = curve_keys
                # Without a ZAP handler libzmq would let any key in; refuse instead.
                socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except BaseException:
            socket.close(linger=0)
            raise
        return socket

    def _bind(self, listener: _Listener, endpoints: list[str]) -> None:
        self._listeners.append(listener)  # stop() closes it even when a bind fails
        for endpoint in endpoints:
            # Per endpoint: libzmq takes the option at each bind, and an
            # IPv4 endpoint bound with it on would change (gateways.config.zmq_ipv6).
            listener.socket.ipv6 = zmq_ipv6(endpoint)
            try:
                listener.socket.bind(endpoint)
            except zmq.ZMQError as exc:
                raise EndpointError(f"intake: cannot bind {endpoint}: {zmq.strerror(exc.errno)}") from None
            listener.endpoints.append(listener.socket.getsockopt_string(zmq.LAST_ENDPOINT))

    def begin_shutdown(self) -> None:
        """Refuse new orders and replaces (ENGINE_SHUTTING_DOWN); cancels and queries still pass."""
        self.shutting_down = True

    async def stop(self) -> None:
        """Stop reading, close the sockets and the authenticator.

        What backlogs still hold is not sent (it is in the journal and the
        sessions' rings: a client that resumes after a restart asks for it);
        it is logged and counted in ``kronos_send_dropped_total``.
        """
        self._stopped = True
        # A resend still reading the journal answers nobody now: the client
        # resumes after the restart and asks again.
        self._journal_reads.shutdown(wait=False, cancel_futures=True)
        if self._backlog_timer is not None:
            self._backlog_timer.cancel()
            self._backlog_timer = None
        held = [len(s._backlog[1]) for s in self._backlogged if s._backlog is not None]
        unsent = sum(held)
        if unsent:
            self.metrics.send_dropped.inc(unsent)
            log.warning("intake: %d replies to %d slow readers not sent at shutdown: they are in "
                        "the journal, and a client gets them by resuming its session after the "
                        "restart", unsent, len(held))
        self._backlogged.clear()
        await cancel_and_wait(self._watchdog)
        self._watchdog = None
        for listener in self._listeners:
            for socket in (listener.monitor, listener.socket):
                try:
                    self._loop.remove_reader(socket.getsockopt(zmq.FD))
                except zmq.ZMQError:
                    pass
            listener.close()
        self._listeners.clear()
        if self._auth is not None:
            await self._auth.aclose()
            self._auth = None
        if self._own_context:
            self.context.term()

    # ------------------------------------------------------------ reading
    def _recheck(self, listener: _Listener) -> None:
        listener.recheck_scheduled = False
        if listener.socket.closed:
            return
        if zmqcall.has_input(listener.handle):
            self._drain(listener)

    def _drain(self, listener: _Listener) -> None:
        """Handle every ready message (up to ``drain_batch``), then flush once.

        The batch also ends once it has queued ``drain_batch`` replies: a
        bulk of 200 orders ends it, so its acknowledgements leave with the
        next flush instead of waiting behind 63 more bulks (a second and more
        at the engine's rate).
        """
        socket = listener.socket
        if socket.closed:
            return
        now = time.monotonic_ns()  # one clock read per wake-up, not per message
        budget = self.config.drain_batch
        replies_limit = len(self._outbox) + budget
        busy = self.busy
        if busy is not None:
            busy.raise_()
        self._draining = True
        handle, curve = listener.handle, listener.curve
        try:
            # Connections gone are detached first: a resume below must not tell a
            # routing id that another connection has taken which session it was.
            listener.read_disconnects()
            while budget:
                message = zmqcall.recv_message(handle, curve)
                if message is None:
                    return
                budget -= 1
                self.messages_read += 1
                try:
                    self._on_frames(listener, message[0], message[1], now, message[2])
                except Exception:  # one bad message must not stop the intake
                    log.exception("intake: failed on a message")
                if len(self._outbox) >= replies_limit:
                    break
            # Budget spent with messages still waiting: let other callbacks
            # (timers, venue reports) run, then continue where we stopped.
            self._loop.call_soon(self._drain, listener)
        finally:
            self._draining = False
            self._flush()
            if busy is not None:
                busy.lower()  # the replies are with ZeroMQ (or the group commit)

    # ------------------------------------------------------------ writing
    def _queue(self, session: Session, frame: bytes) -> None:
        """Hold an outbound frame until the next flush (end of this wake-up).

        ``Session.send`` does the same inline."""
        self._outbox.append((session, frame))
        if not self._draining:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Outside a drain (venue reports, timers), flush once the current callback is
        done, batching whatever else it sends; a drain flushes at its end anyway."""
        if not self._draining and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Let the handler make this batch durable; it then releases the frames.

        Called at the end of every drain even with nothing to send: a request
        answered later (a cancel waits for the venue) still has its journal
        record written now, not with the next reply.
        """
        self._flush_scheduled = False
        batch, self._outbox = self._outbox, []
        self._unreleased.append(batch)

        def release() -> None:
            # (Released in the order flushed; a batch never released, its journal
            # write having failed, stays: none of it is ever sent.)
            if self._unreleased and self._unreleased[0] is batch:
                self._unreleased.popleft()
            else:
                with contextlib.suppress(ValueError):
                    self._unreleased.remove(batch)
            self._transmit(batch)
        try:
            self.handler.flush(release)
        except JournalError as exc:
            # The journal said what went wrong (and a failed one stops the
            # engine): one line, not a traceback per wake-up.
            log.warning("intake: %d messages held back: %s", len(batch), exc)
        except Exception:
            # Nothing is sent that the journal may not hold; the clients see
            # the gap in seq and ask for a resend once the engine recovers.
            log.exception("intake: handler flush failed; %d messages held back", len(batch))

    def _hold(self, session: Session, frames: collections.deque, frame: bytes) -> None:
        """Keep ``frame`` in ``session``'s backlog until its peer's queue has room.

        A full backlog (``resend_ring_size`` frames, a replay's included)
        takes nothing new until it has drained: the frames it cannot take are
        counted in ``kronos_send_dropped_total``, and once it is empty the
        engine sends again, in order, from the ring or the journal, everything
        from the lowest seq it dropped on (``_send_dropped``; what the client
        already has among them it drops as repeats). What it holds stays whole
        and in order, so a client that reads slowly misses nothing.
        """
        if session._dropped_from or len(frames) >= self.config.resend_ring_size:
            # (the lowest: a ring replay's frames are older than what it holds)
            seq = seq_of(frame)
            if not session._dropped_from or seq < session._dropped_from:
                session._dropped_from = seq
            self.metrics.send_dropped.inc()
            return
        frames.append(frame)
        self._backlogged.add(session)
        if self._backlog_timer is None and self._loop is not None:
            self._backlog_timer = self._loop.call_later(BACKLOG_RETRY_S, self._send_backlogs)

    def _send_backlogs(self) -> None:
        """Send what the backlogs hold, in order, until each is empty or its peer full again."""
        self._backlog_timer = None
        self.read_disconnects()
        for session in list(self._backlogged):
            entry, listener = session._backlog, session._listener
            if entry is None or entry[0] != session._route or listener.handle == 0:
                session._backlog = None  # gone with its connection: the ring has them
                self._backlogged.discard(session)
                continue
            route, frames = entry
            if session._reading is not None and session._reading.holds:
                continue  # (its replay goes first: _resend_from_journal)
            while frames and listener.send(session, route, frames[0]):
                frames.popleft()
            if not frames:
                session._backlog = None
                self._backlogged.discard(session)
                if session._dropped_from:
                    self._send_dropped(session)  # (a backlog again, for those)
            if not listener.recheck_scheduled:
                # As after any send (see _transmit): it can swallow the FD's
                # wake-up for requests that arrived meanwhile, which would then
                # wait unread until some other event.
                listener.recheck_scheduled = True
                self._loop.call_soon(self._recheck, listener)
        if self._backlogged:
            self._backlog_timer = self._loop.call_later(BACKLOG_RETRY_S, self._send_backlogs)

    def _transmit(self, batch: list[tuple[Session, bytes]]) -> None:
        """Send each encoded message to its session's current route (if it has one).

        When the peer's queue is full (it reads slower than the engine
        sends, a resend's replay say), the frame waits in the session's
        backlog, in order, and the server retries it shortly; a frame never
        overtakes one waiting.
        """
        if not batch:
            return
        self.read_disconnects()  # nothing goes to a routing id whose connection went
        listeners = set()
        send_pair, again = zmqcall.send_pair, zmqcall.AGAIN
        # (One loop, no call per message: every message sent passes here.)
        for session, frame in batch:
            listener = session._listener
            listeners.add(listener)
            route = session._route
            if route is None:
                continue  # kept in the session's ring for a resend after it resumes
            backlog = session._backlog
            if backlog is not None:
                if backlog[0] == route:
                    self._hold(session, backlog[1], frame)
                    continue
                session._backlog = None  # for a connection that is gone: the ring has them
            try:
                if send_pair(listener.handle, route, frame) != again:
                    self.frames_sent += 1
                    continue
            except zmq.ZMQError as exc:
                listener._unreachable(session, route, exc)
                continue
            session._backlog = (route, collections.deque())
            self._hold(session, session._backlog[1], frame)
        for listener in listeners:
            if not listener.recheck_scheduled and not listener.socket.closed:
                # A send can swallow the FD's wake-up for messages that
                # arrived meanwhile; look at the socket again after this.
                listener.recheck_scheduled = True
                self._loop.call_soon(self._recheck, listener)

    def read_disconnects(self) -> None:
        """Detach the sessions of every connection the sockets' monitors report gone."""
        for listener in self._listeners:
            listener.read_disconnects()

    def _on_frames(self, listener: _Listener, frames: list[bytes], principal: str, now: int,
                   fd: int) -> None:
        route = frames[0]
        if listener.fd_routes.get(fd) != route:  # (a new connection, or a descriptor reused)
            listener.heard_on(fd, route)
        session = listener.routes.get(route)
        if session is None or session.principal != principal:
            session = self._session_for(listener, route, frames, principal, now)
            if session is None:
                return
        # Heard from: last in the watchdog's order (_awake). (Every session found
        # here is held: a routing id leads only to a session attached to it, and
        # _forget takes it out with the session; the checks below are defensive.)
        if session.timed_out:
            session.timed_out = False
            session.last_recv_ns = now
            if self.sessions.get(session.session_id) is session:
                self._awake[session] = None  # the watchdog's to time out again
            log.info("intake: session %s is back", session.session_id)
        elif session.last_recv_ns != now:  # (not already heard from in this wake-up)
            session.last_recv_ns = now
            try:
                self._awake.move_to_end(session)
            except KeyError:
                pass  # (not held)
        if session._route is None:
            # (Defensive, as above.) Heard from but detached: idle at its new
            # last_recv_ns, which made its entry stale.
            self._note_idle(session)
        if len(frames) != 2:
            if self._may_answer(listener, route, session, now, None):
                session.reject(RejectReason.MALFORMED_MESSAGE,
                               f"a message is one frame, got {len(frames) - 1}")
            return
        payload = frames[1]
        size = len(payload)
        if size > self.config.max_message_bytes:
            if self._may_answer(listener, route, session, now, None):
                session.reject(RejectReason.MESSAGE_TOO_LARGE, f"message of {size} bytes "
                               f"exceeds the limit of {self.config.max_message_bytes}")
            return
        started = time.perf_counter_ns()
        try:
            request = listener.decoder.decode(payload)
        except Exception as exc:  # noqa: BLE001 - msgspec errors, and UnicodeDecodeError for non-UTF-8 str
            problem, ref_type, cl_ord_id = classify_decode_error(payload, exc)
            if self._may_answer(listener, route, session, now, ref_type, cl_ord_id):
                session.reject(problem.reason, problem.text, ref_type=ref_type,
                               cl_ord_id=cl_ord_id)
            return
        # A frame that is exactly the engine's own msgpack of the request it decoded to
        # (what a msgspec client sends) holds no key twice, and is the request's journal
        # record as it stands (Handler.handle's ``encoded``): only other frames are walked.
        encoded = payload if listener.writes_as(request, payload) else None
        if encoded is None:
            repeated = duplicate_key(payload)
            if repeated is not None:
                # The decoder kept the last of the two values; the sender meant one.
                name, refs = type(request).__name__, reject_refs(request)
                if self._may_answer(listener, route, session, now, name, **refs):
                    session.reject(RejectReason.INVALID_FIELD,
                                   f"{name}: key {repeated[1]!r} appears twice at {repeated[0]}",
                                   ref_type=name, **refs)
                return
        self._dispatch(listener, route, session, request, now, started, encoded)

    def _session_for(self, listener: _Listener, route: bytes, frames: list[bytes],
                     principal: str, now: int) -> Session | None:
        """The session of a message from a routing id with none live: the one whose connection
        died with the message still unread, else a new one; None when the message was refused
        (its session resumed on another connection) or no session can be opened."""
        gone = listener.departed.get(route)
        if gone is not None and gone.principal == principal \
                and self.sessions.get(gone.session_id) is gone:
            # Sent before its connection died (see _Listener._unreachable), or by a
            # client that reconnected under a routing id of its own: either way
            # the route is the session's again, so its replies go there (a dead
            # one is found dead at the next send, and the ring keeps them).
            if gone._route is None:
                del listener.departed[route]
                gone._route = route
                listener.routes[route] = gone
            return gone
        if listener.superseded:
            superseded = listener.superseded.get(route)
            if superseded is not None:
                if superseded.principal == principal:
                    self._refuse_superseded(listener, route, frames, superseded, now)
                    return None
                del listener.superseded[route]  # another key: as for a new connection
        # At max_sessions (or the key's max_sessions_per_key) a new session
        # evicts an idle one, or is refused; not the one carrying a resume: it
        # lives for one frame (the resumed session takes its connection), and
        # evicting for it could drop the very session being resumed (the
        # oldest idle one).
        resuming = self._full(principal) and self._resumes_held(listener, frames, principal)
        return self._open_session(listener, route, principal, now, evict=not resuming)

    def _full(self, principal: str) -> bool:
        """Whether a new session of ``principal`` would pass either limit."""
        return len(self.sessions) >= self.config.max_sessions or \
            self._held[principal] >= self.config.max_sessions_per_key

    def _resumes_held(self, listener: _Listener, frames: list[bytes], principal: str) -> bool:
        """Whether the message resumes a session this key holds (read only at the limit)."""
        if len(frames) != 2 or len(frames[1]) > self.config.max_message_bytes:
            return False
        try:
            request = listener.decoder.decode(frames[1])
        except Exception:  # noqa: BLE001 - refused once it is read as a session's message
            return False
        if not isinstance(request, ResendRequest) or request.session_id is None:
            return False
        target = self.sessions.get(request.session_id)
        return target is not None and target.principal == principal

    def _open_session(self, listener: _Listener, route: bytes, principal: str,
                      now: int, evict: bool = True) -> Session | None:
        previous = listener.routes.get(route)
        if previous is not None:
            # Another key now speaks on this routing id: never let it act
            # for the session it found there. The routing id leaves the session
            # with its connection, whether or not a session opens for that key
            # below: refused (at a limit), it led on to the detached session,
            # which went on handling the first key's frames from there after
            # intake dropped it (journaled under a session the journal says
            # ended, its replies sent to nobody, its entitlements never updated).
            log.warning("intake: routing id of session %s taken over by another key; detached",
                        previous.session_id)
            del listener.routes[route]
            previous._route = None
            self._note_idle(previous)
        ent = self._entitlement_of(principal, listener.curve)
        # The key's own limit first: evicting one of its idle sessions also
        # makes room under the engine's.
        # A refused connection's every frame comes here again (it has no session): each
        # refusal is charged to the key's request_rate, as intake's other refusals are,
        # and logged sparsely; both were once per frame, at whatever rate it sent.
        if evict and self._held[principal] >= self.config.max_sessions_per_key \
                and not self._evict_one(principal):
            if self._charge(listener, route, principal, ent.name, now, None):
                self._refused_session_log.log(
                    logging.ERROR, "intake: key %s holds %d sessions, none idle; refusing a new "
                    "one", ent.name, self._held[principal])
                self._send_sessionless(listener, route, make_reject(
                    RejectReason.NOT_AUTHORIZED,
                    f"too many sessions for key {ent.name}: it holds intake.max_sessions_per_key "
                    f"({self.config.max_sessions_per_key}), all connected; close one first"))
            return None
        if evict and len(self.sessions) >= self.config.max_sessions and not self._evict_one():
            if self._charge(listener, route, principal, ent.name, now, None):
                self._refused_session_log.log(
                    logging.ERROR, "intake: %d sessions, none idle; refusing a new one",
                    len(self.sessions))
                self._send_sessionless(listener, route, make_reject(
                    RejectReason.NOT_AUTHORIZED, "too many sessions"))
            return None
        session = Session(listener, route, principal, ent.name, ent.accounts, ent.admin,
                          self.config.resend_ring_size, now)
        listener.routes[route] = session
        self._hold_session(session)
        log.info("intake: session %s opened by %s", session.session_id, ent.name)
        return session

    def restore_session(self, session_id: str, principal: str, seq: int,
                        messages: Iterable[Response],
                        marks: Iterable[tuple[int, int]] = ()) -> Session | None:
        """Re-create a session recovered from the journal, detached until its client resumes.

        The client resumes it as after any reconnect (``ResendRequest`` with
        ``session_id``, from the same key) and gets what it missed; new
        messages continue after ``seq``. Returns None when no endpoint of the
        session's kind (CURVE or plaintext) is configured any more.
        """
        curve = bool(principal)
        listener = next((lst for lst in self._listeners if lst.curve == curve), None)
        if listener is None:
            log.warning("intake: session %s not restored: no %s endpoint", session_id,
                        "CURVE" if curve else "plaintext")
            return None
        ent = self._entitlement_of(principal, curve)
        session = Session(listener, None, principal, ent.name, ent.accounts, ent.admin,
                          self.config.resend_ring_size, time.monotonic_ns())
        session.session_id = session_id
        session._seq = seq
        session._ring.extend(map(listener.encoder.encode, messages))
        session._marks = list(marks)
        self._hold_session(session)
        self._note_idle(session)  # detached until its client resumes it
        return session

    def _hold_session(self, session: Session) -> None:
        """Take ``session`` into the server's sessions, counted for its key."""
        self._sessions_taken += 1
        session._opened = self._sessions_taken
        self.sessions[session.session_id] = session
        self._held[session.principal] += 1
        self._awake[session] = None  # (heard from last: now)
        self.metrics.sessions.set(len(self.sessions))

    def _note_idle(self, session: Session) -> None:
        """``session`` became idle (detached or timed out), or was heard from while idle:
        make it a candidate for eviction at its current ``last_recv_ns``.

        Every change that makes a session idle, or moves an idle session's
        ``last_recv_ns``, must come here, or eviction would not see it (see
        _IdleSessions); a session made busy again needs nothing (its entry goes stale).
        """
        if self.sessions.get(session.session_id) is not session or not _idle(session):
            return
        principal = session.principal
        self._idle.push(session, len(self.sessions))
        by_key = self._idle_by_key.get(principal)
        if by_key is None:
            by_key = self._idle_by_key[principal] = _IdleSessions(self.sessions)
        by_key.push(session, self._held[principal])

    def _send_sessionless(self, listener: _Listener, route: bytes, reject: Reject) -> bool:
        """Send ``reject`` to ``route`` at once, outside any session (``seq`` 0, no resend).

        Returns False when the peer is gone (nothing to tell any more); a
        peer whose queue is full loses this one, as it would a session's.
        """
        self._count_reject(reject.reject_reason)
        listener.encoder.encode_into(reject, listener.buf)
        try:
            if zmqcall.send_pair(listener.handle, route, listener.buf) == zmqcall.AGAIN:
                self.metrics.send_dropped.inc()
                return True
        except zmq.ZMQError as exc:
            return exc.errno != zmq.EHOSTUNREACH
        self.frames_sent += 1
        return True

    def _supersede(self, listener: _Listener, route: bytes, session: Session, now: int) -> None:
        """``session`` was resumed elsewhere while ``route`` still looked live: tell ``route``."""
        notice = make_reject(RejectReason.RESUME_REFUSED, _superseded_text(session.session_id))
        if not self._send_sessionless(listener, route, notice):
            return  # already closed: the usual reconnect, nobody left to refuse
        log.warning("intake: session %s resumed on a new connection while its old one was still "
                    "open; the old one is refused from now on", session.session_id)
        self._refuse_route(listener, route, session, now, _superseded_text(session.session_id))

    def _refuse_route(self, listener: _Listener, route: bytes, session: Session, now: int,
                      text: str) -> None:
        """From now on refuse frames from ``route`` (same key) with ``text``: its session is
        no longer its. Bounded like the sessions; a stalled peer that never speaks again is
        also dropped by the watchdog after session_retention_s."""
        _remember(listener.superseded, route,
                  _Superseded(session.principal, session.session_id, now, text),
                  self.config.max_sessions)

    def _refuse_superseded(self, listener: _Listener, route: bytes, frames: list[bytes],
                           gone: _Superseded, now: int) -> None:
        """Refuse a frame from a routing id whose session moved to another connection."""
        ref_type, refs = None, {}
        if len(frames) == 2 and len(frames[1]) <= self.config.max_message_bytes:
            try:
                request = listener.decoder.decode(frames[1])
            except Exception:  # noqa: BLE001 - refused all the same, only nothing to name
                pass
            else:
                ref_type, refs = type(request).__name__, reject_refs(request)
        reject = make_reject(RejectReason.RESUME_REFUSED, gone.text, ref_type=ref_type, **refs)
        # Most recently heard from last, so that the bound drops the stalest.
        del listener.superseded[route]
        if self._send_sessionless(listener, route, reject):
            gone.last_recv_ns = now
            listener.superseded[route] = gone

    def _evict_one(self, principal: str | None = None) -> bool:
        """Drop the longest silent idle session (of ``principal`` only, if given).

        Returns False when there is none (every session, or every session of
        ``principal``, is connected and heard from within the heartbeat timeout).
        """
        victim = self._idle_victim(principal)
        if victim is None:
            return False
        holder = "the engine holds intake.max_sessions" if principal is None else \
            f"key {victim.client_name} holds intake.max_sessions_per_key"
        self._forget(victim, f"session {victim.session_id} was dropped to make room ({holder} "
                             f"sessions and this one was silent)")
        return True

    def _idle_victim(self, principal: str | None = None) -> Session | None:
        """The session ``_evict_one`` drops: the idle one with the oldest ``last_recv_ns``,
        the first taken in of equals (of ``principal`` only, if given); None: no idle one."""
        if principal is None:
            return self._idle.first()
        by_key = self._idle_by_key.get(principal)
        return None if by_key is None else by_key.first()

    def _forget(self, session: Session, why: str | None = None) -> None:
        """Drop ``session`` for good. ``why``: intake drops it (evicted, expired), and a
        connection it may still have is refused from now on with that reason."""
        session.dropped = True
        # A frame sent after this (none is expected) asks the handler again, which then
        # journals the session anew, as record_sent would.
        session._record_sent = None
        self._awake.pop(session, None)
        if self.sessions.pop(session.session_id, None) is session:
            self._held[session.principal] -= 1
            if not self._held[session.principal]:
                del self._held[session.principal]
                # (Its entries are all stale now; a key that comes back starts afresh.)
                self._idle_by_key.pop(session.principal, None)
        route = session._route
        listener = session._listener
        if route is not None and listener.routes.get(route) is session:
            del listener.routes[route]
            if why is not None:
                # Its next frame would open a new session numbered from 1,
                # which its client drops as repeats of what it has seen.
                self._refuse_route(listener, route, session, time.monotonic_ns(),
                                   f"{why}; this connection has no session any more and its "
                                   f"requests are refused: reconnect to start a new one")
        session._route = None
        for departed_from, gone in session._departed:
            if departed_from.departed.get(gone) is session:
                del departed_from.departed[gone]
        session._departed = []
        self.metrics.sessions.set(len(self.sessions))
        try:
            self.handler.on_session_forgotten(session)
        except Exception:
            log.exception("intake: on_session_forgotten failed for %s", session.session_id)

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, listener: _Listener, route: bytes, session: Session, request: Request,
                  now: int, started: int, encoded: bytes | None = None) -> None:
        cls = type(request)
        kind = self._request_kinds.get(cls)
        if kind is None:
            kind = self._request_kinds[cls] = _RequestKind(cls, self.metrics)
        name = kind.name
        kind.counter.value += 1  # (LoopCounter.inc's addition, without its call: every message)
        problem = check_request(request, max_bulk_orders=self.config.max_bulk_orders)
        if problem is not None:
            refs = reject_refs(request, problem.field)
            if self._may_answer(listener, route, session, now, name, **refs):
                session.reject(problem.reason, f"{name}: {problem.text}", ref_type=name, **refs)
            return
        # A session's first message, when it is a Heartbeat (the one that learns the
        # session's id, engine.client's probe) or a resume, is never charged: a client
        # refused it could not resume its session later, or would be left out of step
        # with it; and the connection each needs bounds how often anyone sends one.
        charged = kind.charged and not (session.fresh and (
            cls is Heartbeat or cls is ResendRequest and request.session_id is not None))
        if charged and not self._may_answer(listener, route, session, now, name,
                                            **reject_refs(request)):
            return
        positions, held = None, ()  # a bulk's kept orders' places and refused ones' rejects
        # (By type, not by class patterns: see _RequestKind. The decoder makes exact types.)
        if cls is NewOrder:
            pass
        elif cls is Heartbeat:
            if request.cancel_on_disconnect is not None:
                session.cancel_on_disconnect = request.cancel_on_disconnect
            session.fresh = False
            self._ack(session, request.test_req_id)
            return
        elif cls is ResendRequest:
            self._resend(listener, route, session, request, now)
            return
        elif cls is BulkNewOrders:
            request, positions, held = self._screen_bulk(session, request, listener, route, now)
            if request is None:
                return
            if positions is not None:
                encoded = None  # (the bulk handed over is not the one sent)
        if kind.admin and not session.admin:
            refs = reject_refs(request)
            if self._may_answer(listener, route, session, now, name, **refs):
                session.reject(RejectReason.NOT_AUTHORIZED, f"{name} needs an admin key",
                               ref_type=name, **refs)
            return
        if kind.account and not session.is_entitled(request.account):
            # (A query charged above is not charged twice.)
            refs = reject_refs(request)
            if charged or self._may_answer(listener, route, session, now, name, **refs):
                session.reject(RejectReason.NOT_AUTHORIZED,
                               f"account {request.account!r} is not entitled to this key",
                               ref_type=name, **refs)
            return
        if self.shutting_down and (cls is NewOrder or cls is Replace):
            # (After the checks above, as protocol.md orders them: a key not
            # entitled to the account hears that, not of the shutdown.)
            session.reject(RejectReason.ENGINE_SHUTTING_DOWN, "the engine is shutting down",
                           ref_type=name, cl_ord_id=request.cl_ord_id)
            return
        if cls is NewOrder:
            self._orders_in.value += 1  # (as kind.counter above)
        # Intake's stage: decode and checks, up to the hand-over to the pipeline.
        self._stage_latency.observe((time.perf_counter_ns() - started) / 1e9)
        self._hand_over(session, request, positions, held, encoded)

    def _may_answer(self, listener: _Listener, route: bytes, session: Session, now: int,
                    ref_type: str | None, cl_ord_id: str | None = None,
                    req_id: str | None = None) -> bool:
        """Charge a request other than an order to its key's ``request_rate``.

        True: serve it. False: the key is past its rate, and the request was
        answered ``THROTTLED`` outside the session's numbering (not journaled,
        not kept), so that a flood of queries or of bad messages costs the
        journal nothing. Called for the requests of ``_CHARGED`` and for every
        refusal intake makes; valid orders have risk's throttle instead, and
        valid cancels and admin requests are never charged (they take risk
        off).
        """
        return self._charge(listener, route, session.principal, session.client_name, now,
                            ref_type, cl_ord_id, req_id)

    def _charge(self, listener: _Listener, route: bytes, principal: str, client_name: str,
                now: int, ref_type: str | None, cl_ord_id: str | None = None,
                req_id: str | None = None) -> bool:
        """:meth:`_may_answer` for the key ``principal`` (named ``client_name``), with or
        without a session: a frame refused a session is charged too."""
        rate = self.config.request_rate
        if not rate:
            return True
        unit = 1_000_000_000  # one request, in units of the refill (rate per ns)
        full = self.config.request_bucket * unit
        bucket = self._request_buckets.get(principal)
        if bucket is None:
            bucket = self._request_buckets[principal] = [full, now]
        else:
            bucket[0] = min(full, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= unit:
            bucket[0] -= unit
            return True
        self._send_sessionless(listener, route, make_reject(
            RejectReason.THROTTLED,
            f"requests above the limit of key {client_name}: "
            f"{rate} per second (intake.request_rate), all its sessions together; "
            "not served, and this answer is outside the session's numbering",
            ref_type=ref_type, cl_ord_id=cl_ord_id, req_id=req_id))
        self._throttled_log.log(logging.WARNING, "intake: key %s is past intake.request_rate "
                                "(%d per second); its requests are answered THROTTLED",
                                client_name, rate)
        return False

    def _hand_over(self, session: Session, request: Request,
                   positions: tuple[int, ...] | None = None,
                   held: tuple[HeldReject, ...] = (), encoded: bytes | None = None) -> None:
        session.fresh = False
        try:
            self.handler.handle(session, request, positions, held, encoded)
        except Exception:
            send_held(held)  # (what the failed handler left unsent)
            log.exception("intake: handler failed on %s from session %s",
                          type(request).__name__, session.session_id)
            session.reject(RejectReason.INTERNAL_ERROR,
                           "the engine failed on this request; its outcome is unknown, "
                           "ask with OrderStatusRequest",
                           ref_type=type(request).__name__, **reject_refs(request))

    def _screen_bulk(self, session: Session, bulk: BulkNewOrders, listener: _Listener,
                     route: bytes, now: int
                     ) -> tuple[BulkNewOrders | None, tuple[int, ...] | None,
                                tuple[HeldReject, ...]]:
        """Reject the orders of a bulk that fail intake's checks; keep the rest.

        Returns the bulk to hand over (None: nothing left, and the rejects
        are sent) and, when some orders were refused, the place in the bulk
        as sent of each one kept (the pipeline names a bulk's orders by it, as
        intake does) and the refused ones' rejects, held back for the handler
        to send in the bulk's order (see ``HeldReject``). An order
        whose ``cl_ord_id`` an earlier one of the bulk has, on its account, is
        refused ``DUPLICATE_CL_ORD_ID`` here, whether the earlier one passed
        or not: one id, one answer. Each such refusal is charged to the key's
        ``request_rate``, as a refused single ``NewOrder`` is: past the rate it is
        answered ``THROTTLED`` outside the numbering (``_may_answer``), so that a key
        resending bulks of bad orders cannot grow the journal by a numbered reject
        per order. (Not a refusal for the engine's shutdown, as for a single order.)
        """
        good, positions, held, first = [], [], [], {}
        for index, order in enumerate(bulk.orders):
            # Each order carries its own "v"; the envelope's says nothing of it.
            problem = check_version(order)
            if problem is None:
                problem = check_new_order(order)
            if problem is None and not session.is_entitled(order.account):
                problem = Problem(RejectReason.NOT_AUTHORIZED, "account",
                                  f"account {order.account!r} is not entitled to this key")
            if problem is None:
                earlier = first.setdefault((order.account, order.cl_ord_id), index)
                if earlier != index:
                    problem = Problem(RejectReason.DUPLICATE_CL_ORD_ID, "",
                                      f"cl_ord_id {order.cl_ord_id!r} is also orders[{earlier}]'s "
                                      f"(account {order.account}); the later one is refused")
            elif isinstance(order.cl_ord_id, str):
                first.setdefault((order.account, order.cl_ord_id), index)
            if problem is not None:
                if not self._may_answer(listener, route, session, now, "BulkNewOrders",
                                        order.cl_ord_id):
                    continue  # (answered THROTTLED, outside the numbering)
            elif self.shutting_down:
                problem = Problem(RejectReason.ENGINE_SHUTTING_DOWN, "",
                                  "the engine is shutting down")
            if problem is not None:
                held.append(HeldReject(index, functools.partial(
                    session.reject, problem.reason,
                    f"BulkNewOrders orders[{index}]: {problem.text}",
                    ref_type="BulkNewOrders", cl_ord_id=order.cl_ord_id)))
            else:
                good.append(order)
                positions.append(index)
        self.metrics.orders_in.inc(len(good))
        if not good:
            send_held(held)
            return None, None, ()
        if len(good) == len(bulk.orders):
            return bulk, None, ()
        return msgspec.structs.replace(bulk, orders=good), tuple(positions), tuple(held)

    def _ack(self, session: Session, test_req_id: str | None, *,
             resend: tuple[int, int] | None = None) -> None:
        cfg = self.config
        session.send(HeartbeatAck(session_id=session.session_id,
                                  heartbeat_interval_ms=cfg.heartbeat_interval_ms,
                                  heartbeat_timeout_ms=cfg.heartbeat_timeout_ms,
                                  cancel_on_disconnect=session.cancel_on_disconnect,
                                  test_req_id=test_req_id, transact_time=time.time_ns(),
                                  resend_begin_seq=resend[0] if resend else None,
                                  resend_end_seq=resend[1] if resend else None))

    def _refuse_resume(self, listener: _Listener, route: bytes, session: Session,
                       why: str, goes_on: str = "") -> None:
        """Refuse the resume that opened ``session`` saying ``why``; the connection goes on
        in it (``goes_on`` tells the client so), unless the session was opened past
        ``max_sessions`` for the resume alone (see ``_session_for``): then it is dropped,
        or every refused resume would add one. Likewise past the key's
        ``max_sessions_per_key``."""
        cfg = self.config
        if len(self.sessions) <= cfg.max_sessions and self._held[session.principal] <= cfg.max_sessions_per_key:
            session.reject(RejectReason.RESUME_REFUSED, why + goes_on, ref_type="ResendRequest")
            return
        if len(self.sessions) > cfg.max_sessions:
            full = f"the engine holds its [intake] max_sessions ({cfg.max_sessions})"
        else:
            full = (f"key {session.client_name} holds its [intake] max_sessions_per_key "
                    f"({cfg.max_sessions_per_key})")
        self._send_sessionless(listener, route, make_reject(
            RejectReason.RESUME_REFUSED, f"{why}; no session for this connection either: {full}",
            ref_type="ResendRequest"))
        self._forget(session, full)

    def _resend(self, listener: _Listener, route: bytes, session: Session,
                request: ResendRequest, now: int) -> None:
        if request.session_id is not None and request.session_id != session.session_id:
            if not session.fresh:
                # This connection already speaks for a session; moving it
                # would leave that session's requests and numbering behind.
                session.reject(RejectReason.RESUME_REFUSED,
                               f"a resume must be the first message of a new connection; this "
                               f"one already has session {session.session_id}",
                               ref_type="ResendRequest")
                return
            target = self.sessions.get(request.session_id)
            if target is None or target.principal != session.principal or target._listener is not listener:
                return self._refuse_resume(listener, route, session,
                                           f"no session {request.session_id!r} to resume for "
                                           f"this key (unknown, expired or another key's)")
            if listener.curve and session.principal not in self._entitlements:
                # Removed by a reload: a connection it still has open must not take over
                # its other sessions (and their messages since) any more than a new one can.
                return self._refuse_resume(listener, route, session,
                                           "this key was removed from the allow-list: its "
                                           "sessions cannot be resumed")
            if request.begin_seq > target.seq + 1:
                # The client says it saw messages this session never sent:
                # the engine lost them (a journal under fsync none that lost
                # its tail; recovery says so in its own lines), or the client
                # is wrong, which any client can be at will: a warning, and
                # sparse. Numbering over them would reuse seqs the client
                # has, which it would drop.
                self._bad_resume_log.log(
                    logging.WARNING, "intake: resume of session %s from seq %d refused: it "
                    "has sent %d messages (a client's error, or messages lost with an unsynced "
                    "journal tail)", target.session_id, request.begin_seq, target.seq)
                return self._refuse_resume(
                    listener, route, session,
                    f"session {target.session_id} has sent {target.seq} messages and you have "
                    f"seen {request.begin_seq - 1}: this engine lost messages it had sent (its "
                    f"journal lost its tail), or your count is wrong",
                    "; not resumed: this connection has a new session, ask for your orders' "
                    "status")
            session = self._resume(listener, route, session, target, now)
        session.fresh = False  # this connection now speaks for this session
        begin = request.begin_seq
        if begin > session.seq + 1:
            # Outside the numbering (seq 0): at the session's next seq, below
            # what the client has seen, the client would drop it as a repeat.
            self._send_sessionless(listener, route, make_reject(
                RejectReason.INVALID_FIELD,
                f"begin_seq {begin} is past this session's last message, seq {session.seq}",
                ref_type="ResendRequest"))
            return
        end = min(request.end_seq or session.seq, session.seq)
        oldest = session.oldest_kept_seq
        older = (begin, min(oldest - 1, end)) if begin < oldest and begin <= end else None
        reading = session._reading
        if older is not None and reading is not None:
            if reading.route == session._route:
                # One journal read per session at a time: this one waits for it
                # (asked again and again, the engine would read and send the
                # same range each time), up to MAX_WAITING_RESENDS.
                if len(reading.waiting) >= MAX_WAITING_RESENDS:
                    session.reject(RejectReason.THROTTLED,
                                   f"{MAX_WAITING_RESENDS} resends already wait for this "
                                   f"session's resend from the journal; ask again once its "
                                   f"closing HeartbeatAck has arrived", ref_type="ResendRequest")
                else:
                    reading.waiting.append((listener, request))
                return
            # A resume on another connection: the old read's answer would go
            # nowhere. Stopped (or dropped before it starts), it costs nothing more.
            reading.superseded = True
            if reading.future is not None:
                reading.future.cancel()
            session._reading = None
        # Taken before the rejects below, which enter the ring and may push
        # the oldest kept message out.
        replay = list(session.sent_frames(max(begin, oldest), end))
        journal_part = None
        if older is not None:
            journal_part, unavailable = self._from_journal(session, *older)
            if unavailable >= begin:
                self._resend_unavailable(session, begin, unavailable)
                if journal_part is not None:
                    # Closed at once: the client need not hold what follows it
                    # until the read is done.
                    self._ack(session, None, resend=(begin, unavailable))
        if journal_part is not None and session._route is not None:
            # Sent straight after the journal read, not through the outbox: not the
            # messages still to be released, which follow when they are.
            released = self._released_through(session)
            return self._resend_from_journal(
                session, journal_part, [f for f in replay if seq_of(f) <= released], begin, end)
        if session._route is not None:
            for frame in replay:
                self._queue(session, frame)
        # The ack marks the end of the replay and confirms which session this is.
        self._ack(session, None, resend=(begin, end))

    def _replay(self, session: Session, frames: list[bytes],
                then: Callable[[], None] | None = None, ahead: bool = False) -> None:
        """Send already journaled frames (a replay) to the session's connection through its
        backlog, never dropped (the client is told they were sent), then call ``then`` (the
        closing ack). Once this wake-up's messages are out, which go first (a
        RESEND_UNAVAILABLE before the replay); nothing newer overtakes them.
        ``ahead``: they go before what the backlog holds (newer messages held for them)."""
        route = session._route

        def send() -> None:
            if session._route != route or route is None:
                return  # gone meanwhile: the client's resume asks again
            if frames:
                backlog = session._backlog
                if backlog is None or backlog[0] != route:
                    backlog = session._backlog = (route, collections.deque())
                if ahead:
                    backlog[1].extendleft(reversed(frames))
                else:
                    backlog[1].extend(frames)
                self._backlogged.add(session)
                self._send_backlogs()
            if then is not None:
                then()
        if ahead:
            send()  # (at once: a backlog retry in between would let the held ones go first)
        else:
            self._loop.call_soon(send)

    def _send_dropped(self, session: Session) -> None:
        """The session's backlog has drained after dropping messages: send them again, from
        the ring, and from the journal for those it no longer keeps, up to the last one
        released (``_released_through``): the ones after it go out when their batch is
        released, behind these."""
        first, last, oldest = session._dropped_from, self._released_through(session), \
            session.oldest_kept_seq
        if first < oldest and session._reading is not None:
            return  # after the journal read in progress, whose replay drains the backlog again
        session._dropped_from = 0
        kept = list(session.sent_frames(max(first, oldest), last))
        if first < oldest:
            journal_part, unavailable = self._from_journal(session, first, oldest - 1)
            if unavailable >= first:
                self._resend_unavailable(session, first, unavailable)
            if journal_part is not None:
                # Messages sent while the journal is read wait behind its replay.
                session._backlog = (session._route, collections.deque())
                return self._resend_from_journal(session, journal_part, kept, first, last,
                                                 ack=False)
        if last < session.seq and kept:
            # Messages still to be released: these wait in the backlog now, so that
            # those, released, queue behind them rather than going out first. (Sent by
            # the retry _send_backlogs, the caller, schedules for what is backlogged.)
            session._backlog = (session._route, collections.deque(kept))
            self._backlogged.add(session)
            return
        self._replay(session, kept)

    def _released_through(self, session: Session) -> int:
        """The session's last seq whose frame was released (its journal record durable
        under the policy): below the messages it was sent that still wait for the
        handler's flush or, under fsync group, for the committer's sync.

        Those wait in the outbox and in the batches not yet released, and go out
        when released; sent again from the ring before that (a slow reader's
        dropped messages, ``_send_dropped``), a client had acknowledgements the
        journal did not yet hold durably. The messages still waiting are the
        session's last ones, every seq up to ``session.seq`` (a resend's copy
        among them is on its way too): the run of seqs ending there that those
        batches hold is what is not released.
        """
        waiting = {seq_of(frame) for batch in (*self._unreleased, self._outbox)
                   for held, frame in batch if held is session}
        last = session.seq
        while last in waiting:
            last -= 1
        return last

    @staticmethod
    def _from_journal(session: Session, begin: int, last: int
                      ) -> tuple[tuple[int, int, int] | None, int]:
        """How messages ``begin..last``, older than the session's ring, are sent again:
        the part the journal sends (first seq, last seq, the record to read from: the
        newest JOURNAL_RESEND_MAX of them, from the mark before the first), or None when no
        mark leads there; and the last seq of what can no longer be sent (``begin - 1``:
        nothing)."""
        first = max(begin, last - JOURNAL_RESEND_MAX + 1)
        mark = session.journal_mark(first)
        if mark is None:
            return None, last
        return (first, last, mark), first - 1

    def _resend_unavailable(self, session: Session, begin: int, end: int) -> None:
        session.reject(RejectReason.RESEND_UNAVAILABLE,
                       f"messages {begin}..{end} are no longer kept; "
                       f"recover order state with OrderStatusRequest",
                       ref_type="ResendRequest")

    def _resend_from_journal(self, session: Session, part: tuple[int, int, int],
                             kept: list[bytes], begin: int, end: int,
                             ack: bool = True) -> None:
        """Send ``part`` (first seq, last seq, the journal record to read from) of a resend
        from the journal, then ``kept`` (the rest, from the ring), then the closing ack of
        ``begin..end``; then take the session's ResendRequests that waited for it.

        The journal is read on a worker thread, one read at a time for the
        whole engine: the loop goes on meanwhile, and messages sent then arrive
        before the replayed ones (the client puts them in order by seq). Its
        connection gone meanwhile, nothing is sent: the client's next resume
        asks again.
        """
        first, last, mark = part
        holds = not ack     # (a slow reader's dropped messages: see _JournalRead)
        read = session._reading = _JournalRead(session._route, holds)

        def start() -> None:
            # Once this wake-up's records are written (its flush): the range
            # may end with messages sent in it.
            if read.superseded or self._stopped:
                return
            read.future = self._loop.run_in_executor(self._journal_reads, self.handler.sent_frames,
                                                     session.session_id, mark, first, last)
            read.future.add_done_callback(done)

        def done(future: asyncio.Future) -> None:
            if session._reading is read:
                session._reading = None
            if future.cancelled() or read.superseded or self._stopped:
                return
            try:
                frames = future.result()
            except Exception:  # noqa: BLE001 - a journal that cannot be read: say what is missing
                log.exception("intake: resend of session %s from the journal failed",
                              session.session_id)
                frames = []
            if session._route != read.route or self.sessions.get(session.session_id) is not session:
                return
            if len(frames) < last - first + 1:
                self._resend_unavailable(session, first + len(frames), last)
            self._replay(session, frames + kept,
                         (lambda: self._ack(session, None, resend=(begin, end))) if ack else None,
                         ahead=holds)
            now = time.monotonic_ns()
            for listener, request in read.waiting:
                if session._route == read.route:
                    self._resend(listener, read.route, session, request, now)
        self._loop.call_soon(start)

    def _resume(self, listener: _Listener, route: bytes, current: Session, target: Session,
                now: int) -> Session:
        """Move ``route`` from ``current`` to the resumed session ``target``."""
        old_route = target._route
        if old_route is not None and listener.routes.get(old_route) is target:
            del listener.routes[old_route]
            self._supersede(listener, old_route, target, now)
        target._route = route
        target.last_recv_ns = now
        if target.timed_out:
            target.timed_out = False
            self._awake[target] = None
        else:
            self._awake.move_to_end(target)
        # What a full backlog dropped is the resume's to ask for now (from the
        # client's last seq), not to send again unasked on the new connection.
        target._dropped_from = 0
        listener.routes[route] = target
        current._route = None
        # Fresh (see _resend): made for this connection and never used but to
        # refuse its first frames; nobody was told its id, nothing to keep.
        self._forget(current)
        log.info("intake: session %s resumed on a new connection", target.session_id)
        return target

    # ------------------------------------------------------------ timeouts
    async def _watch_sessions(self) -> None:
        period = min(self.config.heartbeat_interval_ms, self.config.heartbeat_timeout_ms) / 4000
        while True:
            await asyncio.sleep(period)
            self._check_sessions(time.monotonic_ns())

    def _check_sessions(self, now: int) -> None:
        """The watchdog's round at ``now``: time out the silent sessions, drop those silent
        past ``session_retention_s``, and forget routing ids kept for them.

        It visits the sessions due, not every session: those not timed out yet
        silent past the timeout (or past the retention, were it the shorter),
        from the front of ``_awake``, and the idle ones silent past the
        retention, from the top of ``_idle``; any session silent past the
        retention is one of them, as a session that is not idle has not timed
        out. Each is visited as a visit of every session did, in the order of
        ``self.sessions`` (the handler's calls, which the pipeline journals,
        come in the same order), and leaves where it came from: timed out (idle
        from then on) or dropped. ``_awake`` is in the order of ``last_recv_ns``
        as long as that follows the monotonic clock, each message's ``now``.
        """
        before = now - min(self._timeout_ns, self._retention_ns)
        awake, due = self._awake, []
        for session in awake:
            if session.last_recv_ns >= before:
                break
            due.append(session)
        for _ in due:
            awake.popitem(last=False)
        due += self._idle.take_silent_before(now - self._retention_ns)
        for _, session in sorted({session._opened: session for session in due}.items()):
            silent = now - session.last_recv_ns
            if not session.timed_out and silent > self._timeout_ns:
                self._time_out(session, silent)
            if silent > self._retention_ns:
                self._expire(session)
        self._forget_routes(now)

    def _time_out(self, session: Session, silent: int) -> None:
        """``session`` has been silent ``silent`` ns, past the heartbeat timeout: idle from
        now on, logged, and the handler told (cancel-on-disconnect)."""
        session.timed_out = True
        self._note_idle(session)
        # A client that closed its connection is expected to go quiet:
        # only a silent open connection is worth a warning.
        log.log(logging.WARNING if session.connected else logging.INFO,
                "intake: session %s silent for %d ms%s", session.session_id,
                silent // 1_000_000, "" if session.connected else " (its connection closed)")
        try:
            self.handler.on_session_timeout(session)
        except Exception:
            log.exception("intake: on_session_timeout failed for %s", session.session_id)

    def _expire(self, session: Session) -> None:
        """Drop ``session``, silent past ``session_retention_s``."""
        self._forget(session, f"session {session.session_id} expired: silent "
                              f"for intake.session_retention_s")

    def _forget_routes(self, now: int) -> None:
        """Forget the routing ids kept for superseded and departed sessions once they have
        been silent past ``session_retention_s`` (the end of a watchdog round)."""
        for listener in self._listeners:
            superseded = listener.superseded
            while superseded:
                route, gone = next(iter(superseded.items()))
                if now - gone.last_recv_ns <= self._retention_ns:
                    break
                del superseded[route]
            departed = listener.departed
            while departed:
                route, session = next(iter(departed.items()))
                if now - session.last_recv_ns <= self._retention_ns and \
                        self.sessions.get(session.session_id) is session:
                    break
                del departed[route]

    def _count_reject(self, reason: int) -> None:
        counter = self._reject_counters.get(reason)
        if counter is None:
            counter = self._reject_counters[reason] = self.metrics.rejects.labels(reject_name(reason), "intake")
        counter.inc()


# ---------------------------------------------------------------- running in a thread
class IntakeThread:
    """Run an :class:`IntakeServer` on its own uvloop loop in a thread.

    For tests, benchmarks and tools that drive the engine from blocking
    code. The handler then runs on that thread; use :meth:`call` to touch
    server state from outside.

    Parameters
    ----------
    server : IntakeServer
        Not yet started.

    Examples
    --------
    >>> with IntakeThread(IntakeServer(intake_cfg, security_cfg, MyHandler())) as running:  # doctest: +SKIP
    ...     client = Client(running.server.plaintext_endpoints[0])
    """

    def __init__(self, server: IntakeServer):
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # report start-up failures to the starting thread
            self._error = exc
            # What the start opened (the authenticator, sockets bound before
            # the failure) is closed here: left to the garbage collector, the
            # context's term() could wait for ever.
            self.loop.run_until_complete(self.server.stop())
            self.loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.server.stop())
            self.loop.close()

    def start(self, timeout: float = 10.0) -> "IntakeThread":
        """Start the thread and wait until the endpoints are bound."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("intake did not start")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable, *args, timeout: float = 5.0):
        """Run ``fn(*args)`` on the server's loop and return its result."""
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError("server loop did not run the call")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, close the server and join the thread."""
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> "IntakeThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
