"""Client library for the engine's wire protocol, blocking and asyncio.

What strategies, tests, benchmarks and ``kronos-exec client`` use to talk to
intake: a DEALER socket (CURVE optional) that sends requests and receives
responses. The client checks the engine's per-session ``seq`` on everything
it receives: a jump forward is a gap (recorded in ``gaps`` and, with
``auto_resend``, asked for again with a ``ResendRequest``), a number seen
before is a duplicate and is dropped, and a gap the engine can no longer
fill ends up in ``lost``. A message with ``seq`` 0 was sent outside any
session (see docs/protocol.md, *Resume*) and is delivered untracked.

Reconnects: when the engine drops the connection (a frame above
``hard_max_message_bytes``, a TCP reset, an engine restart), libzmq would
reconnect the DEALER by itself under a new routing id, and the engine would
take its next message for a new session numbered from 1: the client, still
counting the old session, would drop those replies as repeats, and the old
session's replies that never arrived would stay lost. So the client watches
its socket's connection events (a ZeroMQ socket monitor) and, once a
connection that completed its handshake is gone, replaces the socket and
sends, as the new connection's first message, the resume of its session
(``ResendRequest`` with ``session_id``, from the oldest seq it misses):
the engine replays what was sent meanwhile and numbering goes on. This
needs the session's id, which only a ``HeartbeatAck`` tells, so a client
asks for it itself: before its first request (unless that is a
``Heartbeat`` or a resume) it sends a ``Heartbeat`` with ``test_req_id``
``SESSION_PROBE``, whose ack it keeps to itself. That ack is the session's
seq 1: the caller's first reply has seq 2. A connection lost before that
ack arrived cannot be resumed: the new connection gets a new session, its
numbering is taken afresh, and it starts with a ``Heartbeat`` (its ack
handed to the caller) so that the next reconnect can resume; after a
refused resume the client asks the new session's id at once, likewise. With
``auto_resume=False`` there is no probe and no resume, and a new connection
goes unnoticed: the new session's messages, numbered from 1, are dropped as
repeats (``duplicates``) until the caller resumes or starts over. An engine
host that vanishes without closing the connection (power cut, a firewall
dropping packets), or an engine whose loop is stuck, is a loss too: while the
caller waits in ``recv`` on a connection silent for ``heartbeat_s``, an
``auto_resume`` client sends a ``Heartbeat`` (``test_req_id``
``LIVENESS_PROBE``, its ack kept to itself); nothing at all heard for
``heartbeat_timeout_s`` after it, and the connection is replaced and the
session resumed. These are the session's requests, not ZeroMQ's pings (ZMTP
``PING``), which can abort the engine's libzmq (docs/engine.md,
*Read-ahead and a libzmq abort*): a client of the engine must not turn
ZeroMQ heartbeats on.

Requests a lost connection swallowed: what the client had sent that was still
in the old connection's buffers (its own, the kernel's, the engine's libzmq
queue) when the connection went was never read, and the engine never answers
it. So an ``auto_resume`` client keeps each order request it sends
(``NewOrder``, ``Cancel``, ``Replace``, each order of a ``BulkNewOrders``) until
the first ``ExecutionReport`` or ``Reject`` naming its ``cl_ord_id`` (a
cancel's or replace's own, which its answer carries). Once the resume's
replay is closed (its closing ``HeartbeatAck``: every answer the engine had
given is in), it sends again, in the order first sent, those sent on an older
connection that still have none (a bulk as a bulk of its orders without
one), before any order request of the caller's; ``resent_requests`` counts
them. The engine never runs one twice: a ``cl_ord_id`` names one request for
the engine's life, so a copy of a request it did take (its answer still to
come, a Cancel waiting for its venue; or read late from the old connection)
is refused ``DUPLICATE_CL_ORD_ID``, and such a refusal of a request sent
again is kept from the caller (``resent_refusals``), as many times as copies
were sent: the caller sees one answer per request. A request whose first
copy was refused without taking its id (``ORDER_CAPACITY``, the order
table full for it and no longer for the next; intake's ``THROTTLED`` is for
requests other than valid orders) can be taken on its second: the caller then
sees that refusal and the order's ``NEW``. A resume the engine refuses (or none, the session's id unknown) leaves
a new session: the requests are sent there all the same, but a
``DUPLICATE_CL_ORD_ID`` there is delivered, the only answer the caller will
get of a request the old session took (ask for its status). Queries
(``OrderStatusRequest``, ``TradeHistoryRequest``, ``Heartbeat``) are not sent
again: they change nothing, the caller may ask again, and their answers name
no request one to one, so a copy's second answer could not be kept from the
caller. An order request the caller sends while a resume is under way goes
after the ones to send again, which then go at once, before it, without
waiting for the replay to close: a cancel of an order the loss swallowed
must not reach the engine before the order (copies of requests the replay
then answers are refused, and dropped, as above). Memory: a request leaves at its first answer, so what is
kept is what is in flight, at most ``MAX_UNANSWERED`` (the oldest is
forgotten past it: one whose answer fell in ``lost``, or that intake refused
without naming it, stays until then). With ``auto_resume=False`` nothing is
kept or sent again.

Example
-------
>>> with Client("tcp://127.0.0.1:7001", server_key=SERVER_PUB,           # doctest: +SKIP
...             client_keypair=(PUB, SECRET)) as client:
...     client.new_order("AAPL", "buy", "10", "101.25", account="ACC1")
...     print(client.recv(timeout=1.0))
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import math
import os
import secrets
import time
from typing import Iterable

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from engine.messages import (
    BulkNewOrders,
    Cancel,
    ExecType,
    ExecutionReport,
    Heartbeat,
    HeartbeatAck,
    NewOrder,
    OrderStatusRequest,
    OrdType,
    Reject,
    RejectReason,
    Replace,
    Request,
    ResendRequest,
    Response,
    Side,
    TimeInForce,
    TradeHistoryRequest,
    check_report,
    encoder,
    response_decoder,
)
from gateways.config import zmq_ipv6

_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "sell_short": Side.SELL_SHORT, "short": Side.SELL_SHORT}
_ORD_TYPES = {"limit": OrdType.LIMIT, "market": OrdType.MARKET}
_TIFS = {"day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}


#: Default silence after which a client probes its connection (a ``Heartbeat``), and how
#: long the probe may then go with nothing heard before the connection counts as lost, seconds.
HEARTBEAT_S, HEARTBEAT_TIMEOUT_S = 1.0, 3.0
#: Default longest wait of a send for room in the socket's queue, seconds.
SEND_TIMEOUT_S = 10.0


def _enum(value, table: dict, enum_type):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise ValueError(f"{value!r} is not one of {', '.join(table)}") from None
    if isinstance(value, bool):  # (True is 1: side=True placed a BUY)
        raise ValueError(f"{value!r} is not one of {', '.join(table)}")
    return enum_type(value)


class ClientProtocolError(Exception):
    """The engine sent something this client cannot read."""


class ClientClosedError(RuntimeError):
    """The client was closed: it sends and receives nothing more (open another)."""


class EngineUnavailableError(ConnectionError):
    """A request could not be handed to the connection within ``send_timeout_s``.

    The socket's queue (ZeroMQ's send high-water mark, 1,000 messages) stayed
    full: the engine is down or not reading. The request was not sent; the
    ones queued before it go out if the engine comes back on this connection.
    """


#: How long messages after a gap wait for the gap to be filled before they
#: are delivered anyway (out of order, the gap still listed in ``gaps``).
REORDER_WAIT_S = 1.0
#: ``test_req_id`` of the Heartbeat an ``auto_resume`` client sends before its first request
#: to learn its session's id; its HeartbeatAck is accounted for, not handed to the caller
SESSION_PROBE = "kronos-client-session"
#: ``test_req_id`` of the Heartbeat an ``auto_resume`` client sends on a connection silent for
#: ``heartbeat_s`` while its caller waits (module docstring, *Reconnects*); its ack is the
#: client's own, like the session probe's
LIVENESS_PROBE = "kronos-client-liveness"
#: Most order requests an ``auto_resume`` client keeps for sending again (unanswered ones),
#: and most ids it keeps of requests sent again (for their copies' duplicate rejects):
#: past it the oldest is forgotten, so a request whose answer never comes (it fell in a
#: range the engine no longer keeps, ``lost``) cannot grow the client for good
MAX_UNANSWERED = 100_000
#: How many of the seqs of messages a client took for itself it keeps (``own_seqs``)
OWN_SEQS_KEPT = 10_000
#: How long ``recv`` waits at most, while requests wait to be sent again and the
#: connection's queue has no room for them, before it tries again (seconds)
_RESEND_RETRY_S = 0.01


class _Base:
    """What both clients share: request building, encoding, seq tracking.

    Messages reach the caller in ``seq`` order: with ``auto_resend``, those
    after a gap wait (at most ``REORDER_WAIT_S``) for the resend that fills
    it, so a strategy never sees an order's CANCELED before its NEW. A gap the
    engine says it no longer keeps (``lost``) releases them at once.
    """

    #: what ``recv`` waits on, the socket and its monitor (zmq.Poller or zmq.asyncio.Poller)
    _POLLER: type = zmq.Poller

    def __init__(self, *, auto_resend: bool, cl_ord_id_prefix: str | None,
                 auto_resume: bool = False, heartbeat_s: float = HEARTBEAT_S,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
                 send_timeout_s: float | None = SEND_TIMEOUT_S):
        if not (heartbeat_s == 0 or heartbeat_s >= 0.001) or \
                not (heartbeat_timeout_s == 0 or heartbeat_timeout_s >= 0.001):
            # (waits are polled in whole milliseconds: 0.0004 s would probe without pause)
            raise ValueError("heartbeat_s and heartbeat_timeout_s are 0 (probes off; for the "
                             "timeout: heartbeat_s) or at least 0.001 s")
        if send_timeout_s is not None and not send_timeout_s > 0:
            raise ValueError("send_timeout_s must be positive (None: wait for ever)")
        #: longest wait of a send for room in the socket's queue (None: for ever)
        self.send_timeout_s = send_timeout_s
        self.auto_resend = auto_resend
        #: silence after which a waiting ``auto_resume`` client probes its connection, and
        #: how long the probe may go with nothing heard before the connection counts as
        #: lost (0: no probes; see the module's *Reconnects*)
        self.heartbeat_s, self.heartbeat_timeout_s = heartbeat_s, heartbeat_timeout_s
        #: liveness probes sent (``Heartbeat`` with ``LIVENESS_PROBE``)
        self.probes = 0
        #: seqs of the session's messages the client took for itself (the acks of its
        #: probes, refusals of copies of requests sent again), the latest ``OWN_SEQS_KEPT``:
        #: with what the caller got, every seq of the session once
        self.own_seqs: collections.deque[int] = collections.deque(maxlen=OWN_SEQS_KEPT)
        self._probing = auto_resume and heartbeat_s > 0
        self._heard = 0.0  # when the connection last delivered a frame (or opened: monotonic s)
        self._probed: float | None = None  # when the probe now unanswered was sent
        self._probes_out = 0  # probes sent on this connection whose answer has not come
        #: resume the session on a new connection when the engine drops this one
        self.auto_resume = auto_resume
        #: connections lost and replaced by a new one (see the module's *Reconnects*)
        self.reconnects = 0
        self.endpoint = ""
        self._context: zmq.Context | None = None
        self._server_key = self._keypair = None
        self.socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None  # this connection's events (auto_resume)
        self._poller = None  # the socket and its monitor (None: the socket alone)
        self._handshaken = False  # the socket's connection completed its handshake
        self._lost = False  # ...and is gone since: replace the socket before using it
        self._decoder = response_decoder()
        self._encoder = encoder()
        self._buf = bytearray(512)
        self._ids = itertools.count(1)
        # 64 random bits: an id names one order of its account for the engine's
        # life, and every client counts from 1, so two clients of one account
        # must not draw the same prefix (24 bits met by chance within a few
        # thousand clients: their orders were refused DUPLICATE_CL_ORD_ID).
        self._prefix = cl_ord_id_prefix or secrets.token_hex(8)
        #: id of the engine session (from the last HeartbeatAck)
        self.session_id: str | None = None
        #: highest seq received
        self.last_seq = 0
        #: missing seq ranges ``[first, last]`` not (yet) received
        self.gaps: list[list[int]] = []
        #: ranges the engine said it no longer keeps
        self.lost: list[list[int]] = []
        #: messages dropped because their seq was already received
        self.duplicates = 0
        self._ready: collections.deque[Response] = collections.deque()  # for the caller, in order
        self._held: dict[int, Response] = {}  # seq -> message waiting for a gap below it
        self._held_seqs: list[int] = []  # their seqs, a heap: a long replay is not sorted per message
        self._held_since = 0.0
        self._requested: list[list[int]] = []  # resend ranges asked for and not yet closed
        #: a resume was sent and neither its closing HeartbeatAck nor a refusal came back
        self.resuming = False
        # A session can be resumed only by its id, which only a HeartbeatAck
        # tells: an auto_resume client asks for it before its first request
        # (see _opening), unless that request is a Heartbeat or a resume.
        self._session_asked = not auto_resume
        # Order requests sent again after a loss (module docstring, *Requests a lost
        # connection swallowed*); auto_resume only. _unanswered: by cl_ord_id, in the
        # order sent, (request, the BulkNewOrders it went in or None, the connection
        # it went out on: _connection), removed at its first answer. _copies: ids sent
        # again in this session -> how many refusals of a copy of theirs are still to
        # be dropped. _due: what waits to be sent again, before any other order request.
        self._unanswered: dict[str, tuple[NewOrder | Cancel | Replace, BulkNewOrders | None,
                                          int]] = {}
        self._copies: dict[str, int] = {}
        # (_due's items: (the bulk they went in or None, its requests still unanswered))
        self._due: collections.deque[tuple[BulkNewOrders | None,
                                           list[NewOrder | Cancel | Replace]]] = \
            collections.deque()
        self._connection = 0  # connections opened after a loss (numbers _unanswered's)
        self._due_in_session = False  # _due goes to the session it was sent in first
        self._sent_early = False  # _due was sent before this connection's replay closed
        #: order requests sent again after a loss (each order of a bulk counts one)
        self.resent_requests = 0
        #: refusals of a request's copy dropped (its duplicate-id reject: see ``resent_requests``)
        self.resent_refusals = 0

    # ------------------------------------------------------------ building
    @staticmethod
    def _left(deadline: float | None) -> float | None:
        """Seconds left until ``deadline`` (None: none)."""
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _no_match(self, timeout: float | None) -> TimeoutError:
        return TimeoutError(f"no message matching from {self.endpoint} within {timeout:g} s")

    @contextlib.contextmanager
    def _given_back(self, received: list[Response]):
        """Put ``received`` back in front of what the next ``recv`` returns when the block
        ends with an exception: ``recv_until`` timing out dropped the messages it had
        taken (an order's NEW, waiting for its FILL), and they were gone for good."""
        try:
            yield
        except BaseException:
            self._ready.extendleft(reversed(received))
            raise

    def next_cl_ord_id(self) -> str:
        """A fresh client order id (``<prefix>-<n>``)."""
        return f"{self._prefix}-{next(self._ids)}"

    def _cl_ord_id(self, given: str | None) -> str:
        # Only None means "make one up": an empty id given (an unset
        # variable in a script) goes to the engine, which refuses it, rather
        # than becoming a fresh id that no retry could be matched with.
        return self.next_cl_ord_id() if given is None else given

    def build_new_order(self, symbol: str, side, qty: str, price: str | None = None, *,
                        account: str, ord_type=None, time_in_force="day",
                        cl_ord_id: str | None = None, **fields) -> NewOrder:
        """A ``NewOrder``; ``side``/``ord_type``/``time_in_force`` accept names
        (``"buy"``, ``"market"``, ``"ioc"``) or enum values. ``ord_type``
        defaults to LIMIT with a price and MARKET without."""
        if ord_type is None:
            ord_type = OrdType.LIMIT if price is not None else OrdType.MARKET
        # Decimal strings, as the wire has them: a float is not exact, and it
        # went out to be refused a round trip later.
        for name, value in (("qty", qty), ("price", price)):
            if not isinstance(value, str) and not (name == "price" and value is None):
                raise TypeError(f"{name} must be a decimal string, e.g. \"100\", not "
                                f"{type(value).__name__} {value!r}")
        return NewOrder(cl_ord_id=self._cl_ord_id(cl_ord_id), account=account,
                        symbol=symbol, side=_enum(side, _SIDES, Side), qty=qty, price=price,
                        ord_type=_enum(ord_type, _ORD_TYPES, OrdType),
                        time_in_force=_enum(time_in_force, _TIFS, TimeInForce), **fields)

    # ------------------------------------------------------------ receiving
    def _decode(self, data) -> Response:
        try:
            msg = self._decoder.decode(data)
        except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
            raise ClientProtocolError(f"undecodable message from the engine: {exc}") from exc
        if type(msg) is ExecutionReport:
            problem = check_report(msg)
            if problem is not None:
                raise ClientProtocolError(f"inconsistent execution report from the engine: {problem}")
        return msg

    def _accept(self, msg: Response) -> ResendRequest | Heartbeat | None:
        """Account for ``msg.seq`` and queue what may now reach the caller; returns a
        request to send: a resend, if a gap opened that no earlier request covers, or
        the probe that asks a new session's id after a refused resume."""
        seq = msg.seq
        if seq == 0:
            # Sent outside any session (a connection whose session was resumed
            # elsewhere, or no session could be opened), or a request past the
            # key's intake.request_rate: no place in the numbering.
            if isinstance(msg, Reject):
                if msg.reject_reason == RejectReason.THROTTLED:
                    self._not_served(msg.ref_type)
                    if msg.ref_type == "Heartbeat" and self._probes_out:
                        self._probes_out -= 1  # (a probe past request_rate: the client's own)
                        return None
                if not self._answers(msg):
                    return None
            self._ready.append(msg)
            return None
        resend = None
        if self.resuming and isinstance(msg, Reject) and msg.ref_type == "ResendRequest" \
                and msg.reject_reason == RejectReason.RESUME_REFUSED:
            # Not resumed: the connection has a session of its own, whose
            # numbering this reject began; the old one's seqs no longer apply.
            # Its id is asked for at once (and, should that probe be lost, before
            # the next request): without it the next reconnect could not resume
            # this session either, and what it was sent meanwhile would be lost.
            self.resuming = False
            self.session_id, self.last_seq = None, seq
            self.gaps, self.lost, self._requested = [], [], []
            self._ready.append(msg)
            self._session_asked = False
            self._send_again(in_session=False)  # (after the probe: see send)
            return Heartbeat(test_req_id=SESSION_PROBE)
        if isinstance(msg, HeartbeatAck):
            self.session_id = msg.session_id
            if msg.resend_begin_seq is not None and self.resuming:
                # The resume's replay is closed: what the engine had answered
                # before it is in, and what it had not is sent again.
                self.resuming = False
                self._send_again(in_session=True)
        if seq == self.last_seq + 1:
            self.last_seq = seq
        elif seq > self.last_seq:
            gap = [self.last_seq + 1, seq - 1]
            self.gaps.append(gap)
            if self.auto_resend and not self._covered(gap):
                resend = ResendRequest(begin_seq=gap[0], end_seq=gap[1])
                self._requested.append(gap[:])
            self.last_seq = seq
        elif self._fill_gap(seq):
            # A gap filling (a replay arriving): what waits behind it waits
            # REORDER_WAIT_S from the latest progress, not from the first
            # message held, or a long replay would be overtaken mid-way.
            self._held_since = time.monotonic()
        elif not self._recover_lost(seq):
            self.duplicates += 1
            return None
        if (type(msg) is ExecutionReport or type(msg) is Reject) and not self._answers(msg):
            self.own_seqs.append(seq)
            return resend  # (a copy's refusal: numbered, not the caller's)
        if isinstance(msg, HeartbeatAck):
            if msg.resend_begin_seq is not None:
                end = msg.resend_end_seq if msg.resend_end_seq is not None else seq - 1
                self._close_replay(msg.resend_begin_seq, end)
            elif msg.test_req_id == SESSION_PROBE or msg.test_req_id == LIVENESS_PROBE:
                if msg.test_req_id == LIVENESS_PROBE and self._probes_out:
                    self._probes_out -= 1
                self.own_seqs.append(seq)
                return resend  # (the client's own question: numbered, not the caller's)
        if not self.auto_resend:
            self._ready.append(msg)  # (no resend will fill a gap: nothing to wait for)
            return resend
        if not self._held:
            self._held_since = time.monotonic()
        self._held[seq] = msg
        heapq.heappush(self._held_seqs, seq)
        self._release()
        return resend

    def _release(self, *, expired: bool = False) -> None:
        """Move held messages that no open gap precedes (all, once ``expired``) to the caller."""
        floor = None if expired else min((first for first, _ in self.gaps), default=None)
        seqs = self._held_seqs
        while seqs and (floor is None or seqs[0] <= floor):
            self._ready.append(self._held.pop(heapq.heappop(seqs)))

    def _hold_deadline(self) -> float | None:
        """When held messages are delivered anyway (monotonic seconds), or None."""
        return self._held_since + REORDER_WAIT_S if self._held else None

    def _next(self, deadline: float | None) -> tuple[Response | None, float | None]:
        """The next message for the caller, or ``(None, ms)``: how long to poll the
        socket for more (None: forever), bounded by ``deadline`` and by held messages."""
        self._check_open()
        while True:
            if self._ready:
                return self._ready.popleft(), 0
            now = time.monotonic()
            held = self._hold_deadline()
            if held is not None and now >= held:
                self._release(expired=True)
                continue
            until = [t for t in (deadline, held) if t is not None]
            return None, int(max(0.0, min(until) - now) * 1000) if until else None

    def _timed_out(self, deadline: float | None, timeout: float | None) -> None:
        """Raise ``TimeoutError`` once ``deadline`` has passed."""
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no message from {self.endpoint} within {timeout} s")

    def _not_served(self, ref_type: str | None) -> None:
        """A request went unanswered (``THROTTLED``): ask again what this client asked itself.

        A Heartbeat while the session's id is unknown may have been the probe
        that asks for it: the next request asks again. A ResendRequest for a
        gap was not served: the gaps are no longer taken as asked for, so the
        next gap asks for them (and the caller may ``resend``); until then
        what waits behind them is released after ``REORDER_WAIT_S``. (A
        resume is never throttled.)
        """
        if ref_type == "Heartbeat" and self.session_id is None and not self.resuming:
            self._session_asked = False
        elif ref_type == "ResendRequest":
            self._requested = [r for r in self._requested if r[1] == 0 and self.resuming]

    def _covered(self, gap: list[int]) -> bool:
        """Whether a resend already asked for covers ``gap`` (a resume's, an earlier one)."""
        return any(b <= gap[0] and (e == 0 or gap[1] <= e) for b, e in self._requested)

    def _recover_lost(self, seq: int) -> bool:
        """A seq given up as lost arrived after all (the caller asked again): take it."""
        return _take(self.lost, seq)

    def _fill_gap(self, seq: int) -> bool:
        return _take(self.gaps, seq)

    def _close_replay(self, begin: int, end: int) -> None:
        """After a replay, whatever it should have covered and did not is lost."""
        self._requested = [r for r in self._requested if not (r[0] == begin and
                                                              (r[1] == 0 or r[1] == end))]
        remaining = []
        for first, last in self.gaps:
            lo, hi = max(first, begin), min(last, end)
            if lo > hi:
                remaining.append([first, last])
                continue
            self.lost.append([lo, hi])
            if first < lo:
                remaining.append([first, lo - 1])
            if hi < last:
                remaining.append([hi + 1, last])
        self.gaps = remaining

    # ------------------------------------------------------------ sending again
    def _track(self, request: Request) -> None:
        """Keep an order request (``auto_resume``) until its first answer: a lost connection
        may have swallowed it (module docstring, *Requests a lost connection swallowed*)."""
        if not self.auto_resume:
            return
        bulk = request if type(request) is BulkNewOrders else None
        for order in _order_requests(request):
            self._keep(order, bulk)

    def _keep(self, request: NewOrder | Cancel | Replace, bulk: BulkNewOrders | None) -> None:
        unanswered = self._unanswered
        unanswered[request.cl_ord_id] = (request, bulk, self._connection)
        if len(unanswered) > MAX_UNANSWERED:
            del unanswered[next(iter(unanswered))]

    def _untrack(self, request: Request) -> None:
        """Forget ``request`` again: it was not sent after all (the queue stayed full)."""
        for order in _order_requests(request):
            entry = self._unanswered.get(order.cl_ord_id)
            if entry is not None and entry[0] is order:
                del self._unanswered[order.cl_ord_id]

    def _answers(self, msg: ExecutionReport | Reject) -> bool:
        """Take ``msg`` as the answer of the request it names (it is no longer kept for
        sending again). False: it is the refusal of a copy of a request sent again, which
        the caller is not to see: the engine refuses whichever copy it reads second,
        ``DUPLICATE_CL_ORD_ID`` (the first took the id), or, when the first was refused
        without taking the id (``TOO_LATE_TO_CANCEL`` of a done order, ``THROTTLED``), with
        that refusal again after the first answer."""
        cl_ord_id = msg.cl_ord_id
        if cl_ord_id is None:
            return True
        copies = self._copies.get(cl_ord_id) if self._copies else None
        if copies:
            if type(msg) is Reject:
                copy = msg.reject_reason == RejectReason.DUPLICATE_CL_ORD_ID \
                    or cl_ord_id not in self._unanswered
            else:
                copy = msg.exec_type == ExecType.REJECTED and cl_ord_id not in self._unanswered
            if copy:
                if copies == 1:
                    del self._copies[cl_ord_id]
                else:
                    self._copies[cl_ord_id] = copies - 1
                self.resent_refusals += 1
                return False
        if self._unanswered:
            self._unanswered.pop(cl_ord_id, None)
        return True

    def _send_again(self, *, in_session: bool) -> None:
        """Queue, in the order first sent, the order requests sent on an earlier connection
        that have no answer: the engine never read them, or has not answered them yet.

        ``in_session``: this connection resumed their session, whose replay is closed,
        and the refusal of a copy the engine reads second is dropped. Otherwise this
        connection has a new session: a request the engine took in the old one is refused
        ``DUPLICATE_CL_ORD_ID`` here, and that is the only answer the caller will see of
        it (the old session's went to nobody), so it is delivered.
        """
        self._due.clear()
        self._due_in_session = in_session
        if not in_session:
            self._copies.clear()
        connection = self._connection
        due, bulk = self._due, None
        for request, came_in, sent_on in self._unanswered.values():
            if sent_on == connection:
                # Sent on this connection, behind its resume: the engine reads
                # it in turn. Only what went out before the loss is sent again.
                continue
            if came_in is None:
                due.append((None, [request]))
            elif came_in is bulk:
                due[-1][1].append(request)
            else:
                due.append((came_in, [request]))
            bulk = came_in

    def _before_callers(self, request: Request) -> None:
        """Before the caller's ``request`` goes out while the resume is under way: when it
        carries an order request, queue at once what waits to be sent again, so that it
        follows them (a cancel must not overtake the order it cancels). Once per
        connection: what is sent from then on follows them anyway."""
        if self.resuming and not self._sent_early and _order_requests(request):
            self._sent_early = True
            self._send_again(in_session=True)  # (refused resume: dropped refusals delivered)

    def _take_due(self) -> tuple[tuple | None, Request | None]:
        """The next item waiting to be sent again and its request (a bulk of the orders of
        a bulk still unanswered), those answered meanwhile left out; ``(None, None)``:
        none left."""
        unanswered = self._unanswered
        while self._due:
            bulk, requests = self._due.popleft()
            left = [r for r in requests
                    if (entry := unanswered.get(r.cl_ord_id)) is not None and entry[0] is r]
            if not left:
                continue
            item = (bulk, left)
            if bulk is None:
                return item, left[0]
            return item, msgspec.structs.replace(bulk, orders=left)
        return None, None

    def _sent_again(self, item: tuple, connection: int | None = None) -> None:
        """Account for an item of ``_due`` handed to the connection (``connection``: the one
        it went out on, when another task may have replaced it since; None: this one)."""
        bulk, requests = item
        copies = self._copies
        if connection is None:
            connection = self._connection
        for request in requests:
            self._unanswered[request.cl_ord_id] = (request, bulk, connection)
            if self._due_in_session:
                copies[request.cl_ord_id] = copies.get(request.cl_ord_id, 0) + 1
        self.resent_requests += len(requests)
        while len(copies) > MAX_UNANSWERED:
            del copies[next(iter(copies))]

    def _not_sent_again(self, item: tuple, exc: BaseException, block: bool) -> None:
        """The connection did not take ``item`` of ``_due``: it waits for the next call.
        Re-raises ``exc`` unless it is only a full queue met without ``block``."""
        self._due.appendleft(item)
        if block or not isinstance(exc, zmq.Again):
            raise exc

    def _due_wait(self, wait_ms: int | None) -> int | None:
        """``wait_ms`` bounded by ``_RESEND_RETRY_S`` while requests wait to be sent again."""
        if not self._due:
            return wait_ms
        retry = round(_RESEND_RETRY_S * 1000)
        return retry if wait_ms is None else min(wait_ms, retry)

    def _liveness(self, wait_ms: int | None) -> tuple[Heartbeat | None, int | None]:
        """Watch the connection while the caller waits in ``recv`` (``auto_resume`` with
        ``heartbeat_s``): the probe to send now, if the connection has been silent for
        ``heartbeat_s``, and ``wait_ms`` bounded by when the next step is due. Once the
        probe has gone ``heartbeat_timeout_s`` with nothing at all heard, the connection
        counts as lost (``_lost``), a loss like any other.

        A probe is the session's own ``Heartbeat``, not ZeroMQ's pings (ZMTP ``PING``):
        the engine's libzmq 4.3.5 aborts the whole engine when it answers a ping that it
        had read, but not yet decoded, when it stopped reading the connection at its
        ``recv_hwm``, if the connection has closed by then (docs/engine.md,
        *Read-ahead and a libzmq abort*). A client pipelining past that mark and then
        giving up on the connection did just that. A Heartbeat is a request like any
        other, read and answered by the engine itself, so it also finds an engine whose
        loop is stuck, which libzmq's own thread would have gone on answering.
        """
        if not self._probing or not self._handshaken or self._lost:
            return None, wait_ms
        now = time.monotonic()
        timeout = self.heartbeat_timeout_s or self.heartbeat_s
        probe = None
        due = self._heard + self.heartbeat_s if self._probed is None else self._probed + timeout
        if now >= due:
            if self._frame_waiting():
                # Heard while the caller was away from recv (the probe's ack, say): not
                # silence. The poll reads it at once, and that answers any probe.
                return None, wait_ms
            if self._probed is not None:
                self._lost = True
                return None, 0
            probe, self._probed, due = Heartbeat(test_req_id=LIVENESS_PROBE), now, now + timeout
        left = max(1, math.ceil((due - now) * 1000))
        return probe, left if wait_ms is None else min(wait_ms, left)

    def _probe_sent(self, probe: Heartbeat) -> None:
        """``probe`` (from ``_liveness``) went out. (Not sent, a full queue: the silence
        goes on, and decides.)"""
        self._opening(probe)  # (its ack names the session: no session probe needed)
        self.probes += 1
        self._probes_out += 1

    def _frame_waiting(self) -> bool:
        """Whether a frame has arrived that ``recv`` has not read yet: the connection was
        heard, though ``_heard`` cannot tell until it is read."""
        return self.socket is not None and bool(self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def _heard_from(self) -> None:
        """A frame arrived: the connection is alive, and the probe (if any) answered."""
        self._heard, self._probed = time.monotonic(), None

    def _opening(self, request: Request) -> Heartbeat | None:
        """The Heartbeat to send before ``request`` when it is the session's first: its
        ack names the session, which a reconnect needs to resume it (module docstring,
        *Reconnects*). None once asked, and before a Heartbeat or a resume of the caller's."""
        if self._session_asked:
            return None
        self._session_asked = True
        if isinstance(request, (Heartbeat, ResendRequest)):
            return None
        return Heartbeat(test_req_id=SESSION_PROBE)

    def _encode(self, request: Request) -> bytearray:
        self._encoder.encode_into(request, self._buf)
        return self._buf

    # ------------------------------------------------------------ connections
    def _connect(self, endpoint: str, context: zmq.Context, server_key, client_keypair,
                 routing_id: bytes | None) -> None:
        """Take the connection's terms (kept for every later connection) and open the first."""
        self.endpoint, self._context = endpoint, context
        self._server_key, self._keypair = server_key, _keypair(server_key, client_keypair)
        self._open(routing_id)

    def _open(self, routing_id: bytes | None) -> None:
        """Make ``self.socket`` a new DEALER connected to the endpoint (its monitor first)."""
        context = self._context
        socket = context.socket(zmq.DEALER)
        monitor = None
        try:
            if self.auto_resume:
                # A routing id of its own: a request that libzmq's reconnect of this socket
                # delivers before the client notices the loss (and closes the socket) is
                # taken by the engine for this connection's session (docs/protocol.md,
                # *Resume*), not for a new session that nobody resumes.
                routing_id = routing_id if routing_id is not None else _new_routing_id()
                address = f"inproc://kronos-client-monitor-{secrets.token_hex(8)}"
                socket.monitor(address, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
                # A plain socket, also under asyncio: it is only read without waiting.
                monitor = zmq.Socket(context, zmq.PAIR)
                monitor.linger = 0
                monitor.connect(address)
            _configure(socket, self._server_key, self._keypair, routing_id)
            if self.send_timeout_s is not None:
                # Without it a send blocks for good once the queue is full (the engine
                # gone, or not reading): the caller gets EngineUnavailableError instead.
                socket.sndtimeo = max(1, round(self.send_timeout_s * 1000))
            socket.ipv6 = zmq_ipv6(self.endpoint)  # tcp://[::1]:p needs ZMQ_IPV6
            socket.connect(self.endpoint)
        except BaseException:
            if monitor is not None:
                monitor.close(0)
            socket.close(0)
            raise
        self.socket, self._monitor = socket, monitor
        self._handshaken = self._lost = False
        self._heard, self._probed, self._probes_out = time.monotonic(), None, 0
        self._poller = None
        if monitor is not None:  # recv is woken by a connection event too
            self._poller = self._POLLER()
            self._poller.register(socket, zmq.POLLIN)
            self._poller.register(monitor, zmq.POLLIN)

    def _replace_socket(self) -> Request:
        """Close the lost connection's socket, open a new one; returns the request it must
        send first (see ``_first_on_new_connection``)."""
        self._close_socket()
        self._open(None)
        return self._first_on_new_connection()

    def close(self) -> None:
        """Close the socket; a send or receive after it (or waiting in another task) raises
        :class:`ClientClosedError`."""
        self._closed = True
        self._close_socket()

    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            # (The closed socket said "Socket operation on non-socket", or a
            # receive timed out, or waited for ever.)
            raise ClientClosedError(f"the client of {self.endpoint} is closed")

    def _close_socket(self) -> None:
        """Close the socket and its monitor."""
        if self._monitor is not None:
            try:
                self.socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        self.socket.close(0)

    @contextlib.contextmanager
    def _unsent(self):
        """Around a send: the queue still full after ``send_timeout_s`` (``zmq.Again``)
        is an :class:`EngineUnavailableError` naming the engine."""
        self._check_open()
        try:
            yield
        except zmq.Again:
            raise EngineUnavailableError(
                f"the engine at {self.endpoint} took no message for {self.send_timeout_s:g} s "
                "(this connection's queue is full: the engine is down or not reading); "
                "the request was not sent") from None

    def _connection_lost(self) -> bool:
        """Take the connection events waiting; True once the socket's connection (its
        handshake done) is gone: the socket must then be replaced before it is used.

        The events say nothing about a connection that never completed a handshake
        (the engine not up yet, a CURVE refusal): libzmq retries it, and what was sent
        waits for it in the socket as before.
        """
        monitor = self._monitor
        if monitor is None or self._lost:
            return self._lost
        while monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = parse_monitor_message(monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshaken = True
                self._heard = time.monotonic()  # (silence counts from here)
            elif event == zmq.EVENT_DISCONNECTED and self._handshaken:
                self._lost = True
                break
        return self._lost

    def _first_on_new_connection(self) -> Request:
        """What a new connection sends before anything else, with the seq bookkeeping
        for it: the resume of the session, or a Heartbeat when no session can be resumed."""
        self.reconnects += 1
        # What waited to be sent again waits for this connection's replay (or goes
        # at once, below): the old connection's answers may still be in it.
        self._connection += 1
        self._due.clear()
        self._sent_early = False
        if self.session_id is None:
            # No HeartbeatAck named the session: it cannot be resumed. The new
            # connection has a session of its own, numbered from 1, where the old
            # one's numbers mean nothing; its id (in the ack of this Heartbeat) lets
            # the next reconnect resume it.
            self._release(expired=True)
            self.last_seq = 0
            self.gaps, self.lost, self._requested = [], [], []
            self.resuming = False
            self._session_asked = True  # (this Heartbeat asks: no probe before the next request)
            self._send_again(in_session=False)  # (no replay to wait for: after this Heartbeat)
            return Heartbeat()
        # From the oldest seq not received: replies the old connection never
        # delivered, and the fills of a resend it asked for and never got.
        begin = self.last_seq + 1
        if self.auto_resend and self.gaps:
            begin = min(begin, min(first for first, _ in self.gaps))
        self.resuming = True
        self._requested = [[begin, 0]]
        return ResendRequest(begin_seq=begin, end_seq=0, session_id=self.session_id)


def _order_requests(request: Request) -> tuple | list:
    """The order requests ``request`` carries, which a lost connection may swallow: itself
    (a ``NewOrder``, ``Cancel`` or ``Replace``), a bulk's orders, or none (a query)."""
    kind = type(request)
    if kind is NewOrder or kind is Cancel or kind is Replace:
        return (request,)
    return request.orders if kind is BulkNewOrders else ()


def _take(ranges: list[list[int]], seq: int) -> bool:
    """Remove ``seq`` from the ``[first, last]`` range holding it; False if none does."""
    for index, (first, last) in enumerate(ranges):
        if first <= seq <= last:
            pieces = [[first, seq - 1], [seq + 1, last]]
            ranges[index:index + 1] = [p for p in pieces if p[0] <= p[1]]
            return True
    return False


def _new_routing_id() -> bytes:
    """A random routing id for one connection (libzmq reserves ids starting with a zero byte)."""
    return b"k" + secrets.token_bytes(15)


def _keypair(server_key, client_keypair):
    """The CURVE key pair every connection of a client uses: a resume must come from the
    session's key, so a throw-away pair is made once, not per connection."""
    if server_key is None or client_keypair is not None:
        return client_keypair
    return zmq.curve_keypair()


def _configure(socket: zmq.Socket, server_key, client_keypair, routing_id) -> None:
    socket.linger = 0
    # No receive high-water mark: libzmq keeps reading the connection whatever
    # the caller does. With a bound, a caller that paused past it stalled the
    # connection: the engine held what it could not send (its resend ring bounds
    # that backlog), and a reconnect of a stalled socket aborts the process
    # (libzmq issue #3937: "Assertion failed: _input_stopped"); ZeroMQ pings,
    # which the engine and this client sent then, timed out on a stalled
    # connection and made that reconnect. What the caller has not read is held
    # in this process's memory instead.
    socket.rcvhwm = 0
    if routing_id is not None:
        socket.routing_id = routing_id
    if server_key is not None:
        public, secret = client_keypair
        socket.curve_serverkey = server_key if isinstance(server_key, bytes) else server_key.encode()
        socket.curve_publickey = public if isinstance(public, bytes) else public.encode()
        socket.curve_secretkey = secret if isinstance(secret, bytes) else secret.encode()


class Client(_Base):
    """Blocking client.

    Parameters
    ----------
    endpoint : str
        ``tcp://host:port`` or ``ipc:///path`` of an intake endpoint.
    server_key : str or bytes, optional
        The engine's Z85 public key; turns CURVE on.
    client_keypair : (public, secret), optional
        This client's Z85 keys (must be in the engine's allow-list); a
        throw-away pair if omitted (refused by a real engine).
    auto_resend : bool
        Ask for missing seqs as soon as a gap is seen. Default true.
    context : zmq.Context, optional
        Defaults to the process-wide instance.
    cl_ord_id_prefix : str, optional
        Prefix of generated client order ids (default: 16 random hex digits,
        fresh per client). Ids must be unique per account for the engine's
        whole life: a prefix given here must not be reused by another client.
    routing_id : bytes, optional
        The first connection's ZeroMQ routing id. By default, and for every
        connection after a loss, a random one of its own (with ``auto_resume``;
        without it the engine's ROUTER makes one up). One given here should
        be unguessable (16 random bytes or more): another key connecting
        under it while this client is away is sent nothing of the session,
        but holds the id, so this client's reconnect under it is refused
        (docs/protocol.md, *Routing ids*).
    auto_resume : bool
        When the engine drops the connection, open a new one and resume the
        session there before sending anything else (module docstring,
        *Reconnects*), then send again the order requests the loss swallowed
        (*Requests a lost connection swallowed*). Default true. ``socket`` is
        then a new socket: options set on the old one are not carried over.
        False: nothing is resumed, kept or sent again.
    heartbeat_s, heartbeat_timeout_s : float
        While the caller waits in ``recv`` on a connection that has been
        silent for ``heartbeat_s`` seconds, send a ``Heartbeat`` probe (its ack
        is the client's own; ``probes`` counts them); nothing heard for
        ``heartbeat_timeout_s`` after it, and the connection is lost, handled
        like any other loss. That is how an engine host that vanished without
        closing its connections, or a stuck engine, is noticed (module
        docstring, *Reconnects*). ``auto_resume`` clients only. Defaults 1 and
        3; ``heartbeat_s=0`` sends none, ``heartbeat_timeout_s=0`` means
        ``heartbeat_s``; else at least 0.001. No ZeroMQ (ZMTP) pings.
    send_timeout_s : float or None
        How long a send waits for room in the connection's queue (1,000
        messages while the engine is away) before it raises
        :class:`EngineUnavailableError`. Default 10; ``None`` waits for ever.

    Notes
    -----
    Connection events are read when the client is used (``send``, ``recv``
    and what calls them): a loss is noticed, and the session resumed, on the
    next call. A request sent on a connection that is already gone but not
    yet noticed may never reach the engine; after the resume's replay (its
    closing ``HeartbeatAck``) the client sends again the order requests that
    have no answer (module docstring, *Requests a lost connection swallowed*;
    ``resent_requests``, ``resent_refusals``). With ``auto_resume=False`` that is
    the caller's to do, with the same ``cl_ord_id`` (one the engine has is
    refused ``DUPLICATE_CL_ORD_ID``, never executed twice).
    """

    def __init__(self, endpoint: str, *, server_key=None, client_keypair=None,
                 auto_resend: bool = True, context: zmq.Context | None = None,
                 cl_ord_id_prefix: str | None = None, routing_id: bytes | None = None,
                 auto_resume: bool = True, heartbeat_s: float = HEARTBEAT_S,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
                 send_timeout_s: float | None = SEND_TIMEOUT_S):
        super().__init__(auto_resend=auto_resend, cl_ord_id_prefix=cl_ord_id_prefix,
                         auto_resume=auto_resume, heartbeat_s=heartbeat_s,
                         heartbeat_timeout_s=heartbeat_timeout_s, send_timeout_s=send_timeout_s)
        self._connect(endpoint, context or zmq.Context.instance(), server_key, client_keypair,
                      routing_id)

    def _reconnect(self) -> None:
        """Replace the lost connection: take what it delivered, open a new one, resume on it."""
        while self.socket.poll(0):
            # Arrived before the loss: accounted for now, so the resume starts after it
            # (a resend it would ask for is the resume's to cover).
            self._accept(self._decode(self.socket.recv(copy=False).buffer))
        first = self._replace_socket()  # (before self.socket is read: it is a new one)
        self.socket.send(self._encode(first))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ sending
    def send(self, request: Request) -> None:
        """Encode and send one request (on a new connection, after its resume, if the
        engine dropped the last one).

        Raises
        ------
        EngineUnavailableError
            The connection's queue stayed full for ``send_timeout_s``.
        """
        with self._unsent():
            if self._connection_lost():
                self._reconnect()
            opening = self._opening(request)
            if opening is not None:
                self.socket.send(self._encode(opening))
            self._before_callers(request)
            if self._due and not isinstance(request, (Heartbeat, ResendRequest)):
                self._send_due(block=True)  # (sent first: an order request goes after them)
            self._track(request)
            try:
                self.socket.send(self._encode(request))
            except BaseException:
                self._untrack(request)
                raise

    def _send_due(self, *, block: bool) -> None:
        """Send what waits to be sent again, in order; without ``block``, only what the
        connection's queue takes at once (the rest waits for the next call)."""
        while self._due:
            item, request = self._take_due()
            if request is None:
                return
            try:
                self.socket.send(self._encode(request), 0 if block else zmq.NOBLOCK)
            except BaseException as exc:
                self._not_sent_again(item, exc, block)
                return
            self._sent_again(item)

    def send_raw(self, data: bytes | Iterable[bytes]) -> None:
        """Send bytes as they are (one frame, or several from an iterable); for tests."""
        with self._unsent():
            if self._connection_lost():
                self._reconnect()
            if isinstance(data, (bytes, bytearray, memoryview)):
                self.socket.send(data)
            else:
                self.socket.send_multipart(list(data))

    def new_order(self, symbol: str, side, qty: str, price: str | None = None, *, account: str,
                  **fields) -> NewOrder:
        """Send a ``NewOrder`` (see ``build_new_order``); returns it."""
        order = self.build_new_order(symbol, side, qty, price, account=account, **fields)
        self.send(order)
        return order

    def cancel(self, orig_cl_ord_id: str, *, account: str, symbol: str | None = None,
               cl_ord_id: str | None = None) -> Cancel:
        """Send a ``Cancel`` of ``orig_cl_ord_id``; returns it."""
        request = Cancel(cl_ord_id=self._cl_ord_id(cl_ord_id), orig_cl_ord_id=orig_cl_ord_id,
                         account=account, symbol=symbol)
        self.send(request)
        return request

    def replace(self, orig_cl_ord_id: str, *, account: str, qty: str | None = None,
                price: str | None = None, symbol: str | None = None,
                cl_ord_id: str | None = None) -> Replace:
        """Send a ``Replace`` of ``orig_cl_ord_id``; returns it."""
        request = Replace(cl_ord_id=self._cl_ord_id(cl_ord_id), orig_cl_ord_id=orig_cl_ord_id,
                          account=account, qty=qty, price=price, symbol=symbol)
        self.send(request)
        return request

    def bulk(self, orders: list[NewOrder], *, batch_id: str | None = None) -> BulkNewOrders:
        """Send many orders in one ``BulkNewOrders``; returns it."""
        request = BulkNewOrders(orders=list(orders), batch_id=batch_id)
        self.send(request)
        return request

    def status(self, cl_ord_id: str, *, account: str) -> None:
        """Send an ``OrderStatusRequest``."""
        self.send(OrderStatusRequest(cl_ord_id=cl_ord_id, account=account))

    def history(self, account: str, start_time: int, end_time: int, *, symbol: str | None = None,
                req_id: str | None = None) -> str:
        """Send a ``TradeHistoryRequest``; returns its ``req_id``."""
        req_id = req_id or self.next_cl_ord_id()
        self.send(TradeHistoryRequest(req_id=req_id, account=account, start_time=start_time,
                                      end_time=end_time, symbol=symbol))
        return req_id

    def heartbeat(self, *, cancel_on_disconnect: bool | None = None,
                  test_req_id: str | None = None) -> None:
        """Send a ``Heartbeat`` (optionally opting in or out of cancel-on-disconnect)."""
        self.send(Heartbeat(test_req_id=test_req_id, cancel_on_disconnect=cancel_on_disconnect))

    def resend(self, begin_seq: int, end_seq: int = 0, *, session_id: str | None = None) -> None:
        """Send a ``ResendRequest``."""
        self.send(ResendRequest(begin_seq=begin_seq, end_seq=end_seq, session_id=session_id))

    def resume(self, session_id: str, last_seq: int) -> None:
        """Take over session ``session_id`` after a reconnect; replays everything after ``last_seq``.

        Call first on a new client; its seq tracking continues from ``last_seq``.
        """
        self.last_seq = last_seq
        self.session_id = session_id
        if self._connection_lost():
            self._reconnect()  # whose first message is this resume
            return
        self.resuming = True
        self._requested.append([last_seq + 1, 0])
        self.resend(last_seq + 1, session_id=session_id)

    # ------------------------------------------------------------ receiving
    def recv(self, timeout: float | None = 5.0) -> Response:
        """The next response not seen before.

        Raises
        ------
        TimeoutError
            Nothing arrived within ``timeout`` seconds (``None``: wait forever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg, wait_ms = self._next(deadline)
            if msg is not None:
                return msg
            if self._connection_lost():
                self._reconnect()  # the replay of what the old connection missed follows
                continue
            probe, wait_ms = self._liveness(wait_ms)
            if self._lost:
                continue  # (silent past the probe's timeout: replaced above)
            if probe is not None:
                with contextlib.suppress(zmq.Again):
                    self.socket.send(self._encode(probe), zmq.NOBLOCK)
                    self._probe_sent(probe)
            if self._due:
                self._send_due(block=False)
                wait_ms = self._due_wait(wait_ms)
            if self._poller is None:
                readable = self.socket.poll(wait_ms)
            else:  # (woken by a connection event too)
                readable = self.socket in dict(self._poller.poll(wait_ms))
            if not readable:
                self._timed_out(deadline, timeout)
                continue
            self._heard_from()
            resend = self._accept(self._decode(self.socket.recv(copy=False).buffer))
            if resend is not None:
                self.send(resend)
            if self._due:  # (a resume just closed: before the caller has the message)
                self._send_due(block=False)

    def recv_until(self, predicate, timeout: float | None = 5.0) -> list[Response]:
        """Receive until ``predicate(msg)`` is true; returns everything received, that one last.

        On a timeout (``TimeoutError``, ``None``: none) or any other exception,
        what it had received is kept for the next ``recv``, not lost.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        received = []
        with self._given_back(received):
            while not received or not predicate(received[-1]):
                received.append(self._recv_by(deadline, timeout))
        return received

    def _recv_by(self, deadline: float | None, timeout: float | None) -> Response:
        try:
            return self.recv(self._left(deadline))
        except TimeoutError:
            raise self._no_match(timeout) from None

    def drain(self, timeout: float = 0.1) -> list[Response]:
        """Everything that arrives until ``timeout`` seconds of silence (kept for the next
        ``recv`` if anything else than the silence ends it)."""
        received = []
        with self._given_back(received):
            while True:
                try:
                    received.append(self.recv(timeout))
                except TimeoutError:
                    return received


class AsyncClient(_Base):
    """asyncio client; the same API as :class:`Client` with ``await`` on I/O.

    Parameters are those of :class:`Client`; ``context`` is a
    ``zmq.asyncio.Context`` (the process-wide one by default). Reconnects
    are handled as by :class:`Client` (``auto_resume``).
    """

    _POLLER = zmq.asyncio.Poller

    def __init__(self, endpoint: str, *, server_key=None, client_keypair=None,
                 auto_resend: bool = True, context: zmq.asyncio.Context | None = None,
                 cl_ord_id_prefix: str | None = None, routing_id: bytes | None = None,
                 auto_resume: bool = True, heartbeat_s: float = HEARTBEAT_S,
                 heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
                 send_timeout_s: float | None = SEND_TIMEOUT_S):
        super().__init__(auto_resend=auto_resend, cl_ord_id_prefix=cl_ord_id_prefix,
                         auto_resume=auto_resume, heartbeat_s=heartbeat_s,
                         heartbeat_timeout_s=heartbeat_timeout_s, send_timeout_s=send_timeout_s)
        self._connect(endpoint, context or zmq.asyncio.Context.instance(), server_key,
                      client_keypair, routing_id)

    async def _reconnect(self) -> None:
        """Replace the lost connection (see ``Client._reconnect``)."""
        while True:
            try:
                frame = await self.socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._accept(self._decode(frame.buffer))
        first = self._replace_socket()  # (before self.socket is read: it is a new one)
        await self.socket.send(bytes(self._encode(first)))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    async def send(self, request: Request) -> None:
        """Encode and send one request (after a resume if the connection was lost);
        :class:`EngineUnavailableError` as for :meth:`Client.send`."""
        while True:
            socket = self.socket
            try:
                return await self._send_once(request)
            except asyncio.CancelledError:
                # Another task's recv found the connection lost and replaced the socket
                # while this send waited for room on it, which cancels the wait: the
                # request was not sent, and goes on the new connection. (A cancel of
                # this task itself is passed on; see recv.)
                if asyncio.current_task().cancelling():
                    raise
                self._check_open()
                if self.socket is socket:
                    raise

    async def _send_once(self, request: Request) -> None:
        with self._unsent():
            if self._connection_lost():
                await self._reconnect()
            opening = self._opening(request)
            if opening is not None:
                await self.socket.send(bytes(self._encode(opening)))
            self._before_callers(request)
            if self._due and not isinstance(request, (Heartbeat, ResendRequest)):
                await self._send_due(block=True)  # (see Client.send)
            self._track(request)
            try:
                # zmq.asyncio may queue the frame: hand it an immutable copy.
                await self.socket.send(bytes(self._encode(request)))
            except BaseException:
                self._untrack(request)
                raise

    async def _send_due(self, *, block: bool) -> None:
        """Send what waits to be sent again (see ``Client._send_due``)."""
        while self._due:
            item, request = self._take_due()
            if request is None:
                return
            connection = self._connection
            try:
                await self.socket.send(bytes(self._encode(request)), 0 if block else zmq.NOBLOCK)
            except BaseException as exc:
                if self._connection != connection:
                    raise  # (replaced by another task meanwhile: the new one has its own _due)
                self._not_sent_again(item, exc, block)
                return
            # (On the connection it went out on: if another task replaced that one while
            # this send waited, the item is the new connection's to send again.)
            self._sent_again(item, connection)

    async def send_raw(self, data: bytes | Iterable[bytes]) -> None:
        """Send bytes as they are (one frame, or several from an iterable); for tests."""
        with self._unsent():
            if self._connection_lost():
                await self._reconnect()
            if isinstance(data, (bytes, bytearray, memoryview)):
                await self.socket.send(data)
            else:
                await self.socket.send_multipart(list(data))

    async def new_order(self, symbol: str, side, qty: str, price: str | None = None, *,
                        account: str, **fields) -> NewOrder:
        """Send a ``NewOrder``; returns it."""
        order = self.build_new_order(symbol, side, qty, price, account=account, **fields)
        await self.send(order)
        return order

    async def cancel(self, orig_cl_ord_id: str, *, account: str, symbol: str | None = None,
                     cl_ord_id: str | None = None) -> Cancel:
        """Send a ``Cancel``; returns it."""
        request = Cancel(cl_ord_id=self._cl_ord_id(cl_ord_id), orig_cl_ord_id=orig_cl_ord_id,
                         account=account, symbol=symbol)
        await self.send(request)
        return request

    async def replace(self, orig_cl_ord_id: str, *, account: str, qty: str | None = None,
                      price: str | None = None, symbol: str | None = None,
                      cl_ord_id: str | None = None) -> Replace:
        """Send a ``Replace``; returns it."""
        request = Replace(cl_ord_id=self._cl_ord_id(cl_ord_id), orig_cl_ord_id=orig_cl_ord_id,
                          account=account, qty=qty, price=price, symbol=symbol)
        await self.send(request)
        return request

    async def bulk(self, orders: list[NewOrder], *, batch_id: str | None = None) -> BulkNewOrders:
        """Send a ``BulkNewOrders``; returns it."""
        request = BulkNewOrders(orders=list(orders), batch_id=batch_id)
        await self.send(request)
        return request

    async def status(self, cl_ord_id: str, *, account: str) -> None:
        """Send an ``OrderStatusRequest``."""
        await self.send(OrderStatusRequest(cl_ord_id=cl_ord_id, account=account))

    async def history(self, account: str, start_time: int, end_time: int, *,
                      symbol: str | None = None, req_id: str | None = None) -> str:
        """Send a ``TradeHistoryRequest``; returns its ``req_id``."""
        req_id = req_id or self.next_cl_ord_id()
        await self.send(TradeHistoryRequest(req_id=req_id, account=account, start_time=start_time,
                                            end_time=end_time, symbol=symbol))
        return req_id

    async def heartbeat(self, *, cancel_on_disconnect: bool | None = None,
                        test_req_id: str | None = None) -> None:
        """Send a ``Heartbeat``."""
        await self.send(Heartbeat(test_req_id=test_req_id, cancel_on_disconnect=cancel_on_disconnect))

    async def resend(self, begin_seq: int, end_seq: int = 0, *, session_id: str | None = None) -> None:
        """Send a ``ResendRequest``."""
        await self.send(ResendRequest(begin_seq=begin_seq, end_seq=end_seq, session_id=session_id))

    async def resume(self, session_id: str, last_seq: int) -> None:
        """Take over session ``session_id`` after a reconnect (see ``Client.resume``)."""
        self.last_seq = last_seq
        self.session_id = session_id
        if self._connection_lost():
            await self._reconnect()
            return
        self.resuming = True
        self._requested.append([last_seq + 1, 0])
        await self.resend(last_seq + 1, session_id=session_id)

    async def recv(self, timeout: float | None = 5.0) -> Response:
        """The next response not seen before; ``TimeoutError`` after ``timeout`` seconds
        (0: only what has already arrived)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg, wait_ms = self._next(deadline)
            if msg is not None:
                return msg
            if self._connection_lost():
                await self._reconnect()
                continue
            probe, wait_ms = self._liveness(wait_ms)
            if self._lost:
                continue  # (see Client.recv)
            if probe is not None:
                with contextlib.suppress(zmq.Again):
                    # Not through the asyncio socket: behind another task's send waiting
                    # for room it waits in turn, even with NOBLOCK, and the silence could
                    # not decide until that send timed out. (A Heartbeat may overtake it.)
                    zmq.Socket.shadow(self.socket.underlying).send(self._encode(probe),
                                                                   zmq.NOBLOCK)
                    self._probe_sent(probe)
            if self._due:
                await self._send_due(block=False)
                wait_ms = self._due_wait(wait_ms)
            # (poll, not wait_for(recv): a zero wait still takes a waiting message)
            socket = self.socket
            try:
                if self._poller is None:
                    readable = await socket.poll(wait_ms)
                else:
                    readable = socket in dict(await self._poller.poll(wait_ms))
                if readable:
                    frame = await socket.recv(copy=False)
            except asyncio.CancelledError:
                # Another task's send found the connection lost and replaced the
                # socket, which cancels a wait on the old one: wait on the new one.
                # (A cancel of this task itself is passed on.)
                if asyncio.current_task().cancelling():
                    raise
                self._check_open()  # (closed under it: that, not a cancellation)
                if self.socket is socket:
                    raise
                continue
            if not readable:
                self._timed_out(deadline, timeout)
                continue
            self._heard_from()
            resend = self._accept(self._decode(frame.buffer))
            if resend is not None:
                await self.send(resend)
            if self._due:  # (see Client.recv)
                await self._send_due(block=False)

    async def recv_until(self, predicate, timeout: float | None = 5.0) -> list[Response]:
        """Receive until ``predicate(msg)`` is true; returns everything received, that one
        last. On a timeout, a cancellation (``asyncio.wait_for``) or any other exception,
        what it had received is kept for the next ``recv``, not lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        received = []
        with self._given_back(received):
            while not received or not predicate(received[-1]):
                received.append(await self._recv_by(deadline, timeout))
        return received

    async def _recv_by(self, deadline: float | None, timeout: float | None) -> Response:
        try:
            return await self.recv(self._left(deadline))
        except TimeoutError:
            raise self._no_match(timeout) from None

    async def drain(self, timeout: float = 0.1) -> list[Response]:
        """Everything that arrives until ``timeout`` seconds of silence (kept for the next
        ``recv`` if anything else than the silence ends it, a cancellation included)."""
        received = []
        with self._given_back(received):
            while True:
                try:
                    received.append(await self.recv(timeout))
                except TimeoutError:
                    return received


def load_client_keys(secret_file: str | os.PathLike) -> tuple[bytes, bytes]:
    """``(public, secret)`` of a client certificate file written by ``generate_keypair``.

    Raises ``ValueError`` for a file every user may read or a user other than
    its owner may write, as the engine refuses its own (``key_file_problem``):
    that key is the client's accounts (OpenSSH's client refuses such a key too).
    """
    import zmq.auth

    from engine.config import key_file_problem

    problem = key_file_problem(secret_file, secret=True)
    if problem is not None:
        raise ValueError(problem)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key")
    return public, secret
