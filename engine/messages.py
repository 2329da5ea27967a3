"""The wire protocol: every message a client and the engine exchange.

This is where an order enters the pipeline as data. Intake decodes a frame
into one of the ``Request`` structs below (or answers with a ``Reject``), the
pipeline answers with ``Response`` structs, and the journal stores both as
msgpack. Nothing here touches a socket or the core: ``ext/`` never sees these
structs, only the ticks and lots that :func:`order_units` makes of them.

Rules of the protocol (details in ``docs/protocol.md``):

* msgpack on the wire, one message per ZeroMQ frame; each message is a map
  tagged by ``"type"`` (the class name) and carries the protocol version
  ``"v"``.
* Prices and quantities are decimal strings (``"101.25"``), never floats.
  Enum fields carry the integer codes of ``ext.types`` (FIX tag values).
* Requests are strict: an unknown field, a wrong type or an unknown enum
  value fails decoding, and :func:`classify_decode_error` turns the failure
  into a reject code; a bad decimal string, id or symbol is refused by
  :func:`check_request` right after decoding (checked in C by
  ``ext.textcheck``), with the same codes. Responses are lenient (unknown fields
  ignored) so that a newer engine can add fields without breaking clients.
* New fields go at the end with a default; a change that old peers cannot
  ignore bumps ``PROTOCOL_VERSION``.
"""
from __future__ import annotations

import enum
import re
import time
import types
import typing
from typing import Annotated, Literal, NamedTuple, Union

import msgspec
from msgspec import Meta

from ext import types as _core
from ext.textcheck import TextKind, first_bad_field

#: Version this engine speaks; a request with another ``v`` is rejected
#: with UNSUPPORTED_VERSION before anything else is looked at.
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})

RejectReason = _core.RejectReason


# ---------------------------------------------------------------- enums
def _closed(core_enum: type) -> type[enum.IntEnum]:
    """A closed ``IntEnum`` with the names and values of a core enum.

    Cython's ``cpdef enum`` classes accept any integer (C semantics:
    ``ext.types.Side(3)`` succeeds), so decoding into them would let
    ``side=3`` through. The twin rejects unknown values at decode time while
    comparing equal to the core enum (``Side.BUY == ext.types.Side.BUY``).
    """
    return enum.IntEnum(core_enum.__name__, {m.name: int(m) for m in core_enum},
                        module=__name__)


def members(enum_cls: type[enum.Enum]) -> types.ModuleType:
    """A namespace whose attributes are ``enum_cls``'s members, for per-order code.

    On Python 3.11 every ``Enum.MEMBER`` lookup goes through
    ``EnumType.__getattr__``'s slow attribute hook (about 0.2 µs, removed in
    3.12), and an order's path did 25 of them: 5% of its instructions
    (callgrind, ``benchmarks/profile_pipeline.py --intake``). The namespace is
    a module object, not a class: 3.11's interpreter specialises an attribute
    read on a module (a cached dict index), but not on a class (about 180
    instructions each, 60 on a module). The members are the same objects:
    ``members(Stage).ROUTED is Stage.ROUTED``.
    """
    namespace = types.ModuleType(enum_cls.__name__)
    namespace.__dict__.update(enum_cls.__members__)
    return namespace


Side = _closed(_core.Side)
OrdType = _closed(_core.OrdType)
TimeInForce = _closed(_core.TimeInForce)
StpMode = _closed(_core.StpMode)
OrdStatus = _closed(_core.OrdStatus)


class ExecType(enum.IntEnum):
    """Why an execution report was sent (FIX tag 150; 12 is FIX's ``C``)."""

    NEW = 0
    PARTIAL_FILL = 1
    FILL = 2
    CANCELED = 4
    REPLACED = 5
    REJECTED = 8
    EXPIRED = 12


# ---------------------------------------------------------------- field types
# The syntax of these text fields is checked by ext.textcheck after decoding
# (check_request), not by msgspec: a Meta(pattern=...) runs Python's re per
# field, 6% of a new order's whole path. The languages (ext.textcheck.PATTERNS):
# decimal strings are digits with an optional fraction, no sign, exponent or
# whitespace, so the text a client sends is the number the engine reads;
# requests need a positive value, reports may carry zero (cum_qty "0"). Ids
# and symbols are printable ASCII without spaces: they end up in logs, files
# and FIX gateways.
PositiveDecimalStr = Annotated[str, Meta(max_length=40,
                                      description="positive decimal string, e.g. \"101.25\"")]
DecimalStr = Annotated[str, Meta(max_length=40,
                              description="non-negative decimal string, e.g. \"0\"")]
ClOrdId = Annotated[str, Meta(description="client order id")]
Account = Annotated[str, Meta(description="account id")]
Symbol = Annotated[str, Meta(description="instrument symbol")]
_TEXT_KINDS = ((ClOrdId, TextKind.TEXT_ID), (Account, TextKind.TEXT_ID),
               (Symbol, TextKind.TEXT_SYMBOL), (PositiveDecimalStr, TextKind.TEXT_POSITIVE_DECIMAL),
               (DecimalStr, TextKind.TEXT_DECIMAL))
Label = Annotated[str, Meta(max_length=64)]
#: Longest ``text`` of any message (characters).
MAX_TEXT = 512
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
#: Largest integer a request may carry: the core's integers are int64, and a
#: larger one (msgpack has uint64) would pass decoding only to overflow
#: converting to C after risk took the order.
INT64_MAX = 2**63 - 1
Nanos = Annotated[int, Meta(ge=0, le=INT64_MAX, description="nanoseconds since the Unix epoch")]
Seq = Annotated[int, Meta(ge=0, le=INT64_MAX)]


# ---------------------------------------------------------------- requests
class _Request(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    """Fields every client-to-engine message carries."""

    v: int = PROTOCOL_VERSION


class NewOrder(_Request, gc=False):
    """Enter one order.

    ``price`` is required for LIMIT orders and must be absent for MARKET.
    ``intended_duplicate`` tells risk's duplicative-order check that an
    identical order to a recent one is deliberate; ``locate`` asserts a
    borrow was located for a SELL_SHORT; ``strategy`` names the router's
    strategy; ``route_hint`` (a preferred venue or routing style) is
    journaled but not acted on yet; ``stp`` None leaves self-trade
    prevention to each venue's default. A scheduled strategy takes its
    window from ``start_time`` (default: on arrival) and ``end_time``
    (required by ``twap`` and ``vwap``), ``twap`` its ``slices``, ``vwap``
    its volume ``profile`` (weights of equal buckets) and ``pov`` its
    ``participation`` (a fraction of the market's volume, e.g. "0.1").
    """

    cl_ord_id: ClOrdId
    account: Account
    symbol: Symbol
    side: Side
    qty: PositiveDecimalStr
    ord_type: OrdType = OrdType.LIMIT
    price: PositiveDecimalStr | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    post_only: bool = False
    stp: StpMode | None = None
    intended_duplicate: bool = False
    locate: bool = False
    strategy: Label | None = None
    route_hint: Label | None = None
    #: the schedule of a ``twap``, ``vwap`` or ``pov`` order (see check_new_order)
    start_time: Nanos | None = None
    end_time: Nanos | None = None
    slices: Annotated[int, Meta(ge=1, le=1000)] | None = None
    profile: Annotated[list[Annotated[int, Meta(ge=0, le=1_000_000)]],
                       Meta(min_length=1, max_length=1000)] | None = None
    #: (a non-negative decimal: "0" is well-formed, and refused INVALID_SCHEDULE as out of
    #: range by check_new_order, as any rate outside (0, 1] is)
    participation: DecimalStr | None = None


class Cancel(_Request, gc=False):
    """Cancel the working order ``orig_cl_ord_id``; ``cl_ord_id`` names this request."""

    cl_ord_id: ClOrdId
    orig_cl_ord_id: ClOrdId
    account: Account
    symbol: Symbol | None = None


class Replace(_Request, gc=False):
    """Cancel/replace: change the quantity and/or price of a working order.

    ``qty`` is the new total order quantity (filled part included); a field
    left out keeps its value. At least one of ``qty`` and ``price`` is given.
    """

    cl_ord_id: ClOrdId
    orig_cl_ord_id: ClOrdId
    account: Account
    symbol: Symbol | None = None
    qty: PositiveDecimalStr | None = None
    price: PositiveDecimalStr | None = None


class BulkNewOrders(_Request):
    """Many orders in one message; each order is answered on its own.

    A message that does not decode is rejected whole (the ``Reject`` text
    names the failing order, e.g. ``$.orders[3].price``); once decoded, every
    order gets its own ``Reject`` or execution reports.
    """

    orders: Annotated[list[NewOrder], Meta(min_length=1)]
    batch_id: Label | None = None


class OrderStatusRequest(_Request, gc=False):
    """Ask for the current state of an order by ``cl_ord_id``."""

    cl_ord_id: ClOrdId
    account: Account


class TradeHistoryRequest(_Request, gc=False):
    """Fills of ``account`` with ``start_time <= transact_time < end_time``."""

    req_id: Label
    account: Account
    start_time: Nanos
    end_time: Nanos
    symbol: Symbol | None = None


class Heartbeat(_Request, gc=False):
    """Keep the session alive; also the place to opt in to cancel-on-disconnect.

    ``cancel_on_disconnect`` left out keeps the session's current setting.
    ``test_req_id`` is echoed in the ``HeartbeatAck``.
    """

    test_req_id: Label | None = None
    cancel_on_disconnect: bool | None = None


class ResendRequest(_Request, gc=False):
    """Ask for outbound messages ``begin_seq..end_seq`` again (``end_seq`` 0: up to the latest).

    A client that reconnected names its old session with ``session_id`` (from
    the ``HeartbeatAck``) as the first message on the new connection; the
    session then continues on the new connection with its sequence intact.
    """

    begin_seq: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    end_seq: Seq = 0
    session_id: Label | None = None


class KillSwitch(_Request, gc=False):
    """Engage or release a kill switch (admin keys only).

    ``scope`` ``"global"`` needs no ``target``; ``"account"`` and ``"symbol"``
    name the account or symbol in ``target``.
    """

    req_id: Label
    action: Literal["engage", "release"]
    scope: Literal["global", "account", "symbol"]
    target: Label | None = None
    text: Text | None = None


class ReloadLimits(_Request, gc=False):
    """Re-read the risk limits (admin keys only)."""

    req_id: Label


Request = Union[NewOrder, Cancel, Replace, BulkNewOrders, OrderStatusRequest,
                TradeHistoryRequest, Heartbeat, ResendRequest, KillSwitch, ReloadLimits]
AdminRequest = (KillSwitch, ReloadLimits)
#: Requests that name an account, checked against the session's entitlements.
AccountRequest = (NewOrder, Cancel, Replace, OrderStatusRequest, TradeHistoryRequest)
REQUEST_TYPES: dict[str, type] = {cls.__name__: cls for cls in Request.__args__}


def _text_fields(cls: type) -> tuple[tuple[str, int], ...]:
    """``(field, TextKind)`` for each of ``cls``'s fields typed with a text alias above."""
    hints = typing.get_type_hints(cls, include_extras=True)
    spec = []
    for name in cls.__struct_fields__:
        hint = hints[name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
        kinds = [kind for alias, kind in _TEXT_KINDS for option in options if option == alias]
        if kinds:
            spec.append((name, int(kinds[0])))
    return tuple(spec)


# Which fields of each request ext.textcheck checks, worked out once.
_TEXT_FIELDS: dict[type, tuple[tuple[str, int], ...]] = {cls: _text_fields(cls) for cls in Request.__args__}


# ---------------------------------------------------------------- responses
class _Response(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Fields every engine-to-client message carries.

    ``seq`` is stamped by ``Session.send`` (1, 2, 3, ... per session); a
    message built by a handler leaves it 0.
    """

    v: int = PROTOCOL_VERSION
    seq: Seq = 0
    transact_time: Nanos = 0


class ExecutionReport(_Response, gc=False):
    """The state of one order after something happened to it.

    ``qty`` is the order's quantity in force, so that
    ``qty == cum_qty + leaves_qty`` holds in every report: the ordered
    quantity while the order works, the new quantity after a replace, and
    the filled quantity once the order is done (after a cancel or expiry the
    unfilled remainder is no longer in force; a rejected new order has
    ``qty`` "0"). A rejected cancel or replace reports the unchanged state
    of the original order with ``exec_type`` REJECTED and the reason.
    ``last_qty``/``last_px`` are set on fills only.

    The engine builds reports from integer lots, so these invariants hold by
    construction; ``check_report`` verifies them, and ``engine.client`` runs
    it on every report it receives (not in ``__post_init__``: that would
    cost every report a check on the engine's hot path).
    """

    order_id: Label
    cl_ord_id: ClOrdId
    account: Account
    symbol: Symbol
    side: Side
    exec_type: ExecType
    ord_status: OrdStatus
    qty: DecimalStr
    cum_qty: DecimalStr
    leaves_qty: DecimalStr
    orig_cl_ord_id: ClOrdId | None = None
    exec_id: Label | None = None
    ord_type: OrdType | None = None
    price: DecimalStr | None = None
    avg_px: DecimalStr | None = None
    last_qty: DecimalStr | None = None
    last_px: DecimalStr | None = None
    venue: Label | None = None
    reject_reason: int = 0
    reject_name: str | None = None
    text: Text | None = None


class StageTime(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One step of an order through the pipeline (``OrderStatusReply.stages``)."""

    stage: str     # RECEIVED, VALIDATED, RISK_CHECKED, ROUTED, PARTIALLY_FILLED, FILLED, ...
    time: Nanos


class ChildState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One child order the engine sent to a venue for a client order."""

    child_id: Label
    venue: Label
    price: DecimalStr | None   # None: market or midpoint peg
    qty: DecimalStr
    cum_qty: DecimalStr
    done: bool
    #: the venue acknowledged it: false while it is on its way there (the venue's latency),
    #: and for a child the venue refused
    acked: bool = False


class OrderStatusReply(_Response):
    """Answer to ``OrderStatusRequest``: the order's latest report, if known.

    With it, the order's way through the pipeline (``stages``, each with its
    time) and its child orders at the venues (``children``, oldest first).
    ``found`` false comes with ``reject_reason`` UNKNOWN_CL_ORD_ID.
    """

    cl_ord_id: ClOrdId
    account: Account
    found: bool
    report: ExecutionReport | None = None
    stages: list[StageTime] = []
    children: list[ChildState] = []
    reject_reason: int = 0
    reject_name: str | None = None
    text: Text | None = None
    #: a venue filled more than the order's quantity: ``report.cum_qty`` says how much
    #: (booked in full, as every fill; the report's ``qty`` is then what filled)
    overfilled: bool = False


class TradeFill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One fill in a ``TradeHistoryReply``."""

    exec_id: Label
    order_id: Label
    cl_ord_id: ClOrdId
    symbol: Symbol
    side: Side
    last_qty: DecimalStr
    last_px: DecimalStr
    transact_time: Nanos
    venue: Label | None = None


class TradeHistoryReply(_Response):
    """Answer to ``TradeHistoryRequest``; long answers come in several parts.

    ``last`` is true on the final part; parts of one answer share ``req_id``.
    ``complete`` is false when fills of the range are no longer held in the
    engine's memory (its bound per account); the answer is then complete
    from ``complete_from`` (ns) on, and ``text`` says where the rest is.
    An answer holds at most ``[history] max_fills_per_request`` fills, the
    oldest of the range: ``next_start_time`` (0: none left out) is where the
    next request for the rest starts.
    """

    req_id: Label
    account: Account
    fills: list[TradeFill]
    last: bool = True
    reject_reason: int = 0
    reject_name: str | None = None
    text: Text | None = None
    complete: bool = True
    complete_from: Nanos = 0
    #: 0: the answer holds every fill of the range (that is held, see ``complete``);
    #: else it stopped at ``[history] max_fills_per_request`` fills, and the fills from
    #: this time (ns) on were left out: ask again with it as ``start_time``
    next_start_time: Nanos = 0


class HeartbeatAck(_Response, gc=False):
    """Answer to ``Heartbeat``: the session's id and its timing rules.

    Also closes the answer to a ``ResendRequest``: then ``resend_begin_seq``
    and ``resend_end_seq`` give the range asked for, and every message of
    that range the engine still kept has been sent again before this ack.
    """

    session_id: str
    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int
    cancel_on_disconnect: bool
    test_req_id: Label | None = None
    resend_begin_seq: int | None = None
    resend_end_seq: int | None = None


class Reject(_Response, gc=False):
    """A request refused before it reached the pipeline.

    Sent for a frame that could not be parsed (``ref_type`` then is ``None``
    if even the type was unreadable) and for requests that fail intake's
    checks (entitlement, cross-field rules). ``cl_ord_id`` is filled in when
    the request had one, and ``req_id`` when it had one (``TradeHistoryRequest``,
    ``KillSwitch``, ``ReloadLimits``) and was decoded: a client with several
    such requests in flight knows which one was refused.
    """

    reject_reason: int
    reject_name: str
    text: Text
    ref_type: str | None = None
    cl_ord_id: str | None = None
    req_id: str | None = None


class AdminReply(_Response, gc=False):
    """Answer to ``KillSwitch`` and ``ReloadLimits``."""

    req_id: Label
    ok: bool
    reject_reason: int = 0
    reject_name: str | None = None
    text: Text | None = None


Response = Union[ExecutionReport, OrderStatusReply, TradeHistoryReply, HeartbeatAck,
                 Reject, AdminReply]
RESPONSE_TYPES: dict[str, type] = {cls.__name__: cls for cls in Response.__args__}


# ---------------------------------------------------------------- journal envelopes
class JournalCommand(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An inbound request as the journal stores it: who sent it, and when."""

    session_id: str
    principal: str
    received_ns: Nanos
    request: Request


class JournalEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An outbound message as the journal stores it, with the session it went to."""

    session_id: str
    event: Response


JournalPayload = Union[JournalCommand, JournalEvent]


class _SeqOnly(msgspec.Struct):
    """An outbound message's ``seq``, its other fields left unread."""

    seq: int = 0


_SEQ_ONLY = msgspec.msgpack.Decoder(_SeqOnly)


def seq_of(frame: bytes) -> int:
    """The ``seq`` of an encoded outbound message (0: sent outside any session)."""
    return _SEQ_ONLY.decode(frame).seq


def event_envelope(session_id: str) -> bytes:
    """The msgpack of ``JournalEvent(session_id, event=...)`` up to the event itself.

    ``event_envelope(sid) + frame`` is exactly the encoding of
    ``JournalEvent(session_id=sid, event=msgspec.Raw(frame))``: msgspec
    writes the tag and the fields in definition order, and the event is the
    last field (tested).
    """
    return msgspec.msgpack.encode(JournalEvent(session_id=session_id, event=msgspec.Raw(b"")))


class JournalSession(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """Whose a client session is, as the journal stores it (a ``META`` record).

    Written before the first message the engine sends on a session, so that
    recovery restores every session with the key that owns it, including a
    session that never sent a command (only heartbeats, or only bad input).
    ``principal`` is the client's CURVE public key (Z85), empty for plaintext.
    """

    session_id: str
    principal: str


class JournalValuation(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """The price risk valued an order at, as the journal stores it (a ``META`` record).

    Written when that is not the order's own limit (a market order, a sell
    under a collar: valued from the market's reference), on arrival and
    after a replace, as the journal would not otherwise hold it. Recovery
    replays the order's exposure at this same value.

    ``protect``: the router holds the order to this value (``Order.protect``: a
    market buy under a collar, on arrival), and a restarted engine routes its
    remainder (a schedule's next slices) no further. Absent in journals written
    before 2026-12-07 (decoded False): their market buys come back unheld.
    """

    order_id: int
    value_ticks: int
    protect: bool = False


class JournalDayRoll(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """A trading day ended here (a ``META`` record): the daily risk counters start afresh.

    ``day`` is the trading day that begins (ISO date). Recovery resets the
    counters at the same point of the journal, so a replay counts each fill
    in the day it counted in live.

    ``keep_done_days``: the engine's ``[orders] keep_done_days`` at the roll;
    the order table forgets what was done that many rolls before
    (``OrderTable.roll``), in the replay as it did live, whatever the
    configuration says at the restart. None in a journal written before done
    orders were forgotten: nothing was.
    """

    day: str
    keep_done_days: int | None = None


class JournalChildren(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False,
                      omit_defaults=True):
    """What happened to child orders at the venues since the last one (a ``META`` record).

    Written once per journal flush that has any (not once per child: the
    hot path pays one record per wake-up), so that an order's children stay
    queryable (``OrderStatusReply.children``) after a restart, and the
    journal holds where each order was routed. ``new``: (child_id,
    parent order id, venue, price in ticks (0: market or midpoint peg),
    qty in lots); ``acked``: child ids their venue acknowledged;
    ``fills``: (child_id, lots); ``repriced``: (child_id, price, qty) as
    the venue confirmed them; ``done``: child ids finished at their venue.
    """

    new: list[tuple[int, int, str, int, int]] = []
    acked: list[int] = []
    fills: list[tuple[int, int]] = []
    repriced: list[tuple[int, int, int]] = []
    done: list[int] = []


class JournalSessionEnd(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """Intake let a session go here (a ``META`` record): evicted to make room under
    ``max_sessions`` or ``max_sessions_per_key``, or silent past
    ``session_retention_s``. Recovery does not restore it: a session the engine had
    dropped stays dropped across a restart, and its resend ring is not held again.

    ``final``: its writer names the session in no later record but its orders'
    unnumbered reports, so recovery forgets the session here. An engine that
    handed a dropped session's frames on could name it again (a ``JournalSession``,
    numbered reports) and wrote none (decoded False): recovery remembers such an
    end to the journal's end, to ignore what follows it."""

    session_id: str
    final: bool = False


class JournalPulled(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """Orders the engine took out of the market on its own account (a ``META`` record):
    a kill switch, cancel-on-disconnect, self-trade prevention, the end of a DAY order's
    trading day. Their venue cancels may still be on their way when the engine stops:
    recovery ends these orders, with ``reason`` and ``text``, instead of routing them
    again: ``EXPIRED`` when ``expire`` is set (DAY orders taken down at a trading-day
    roll), else ``CANCELED``. (``expire`` came later: a record written without it
    decodes as False, as every record before it meant.)"""

    order_ids: list[int]
    reason: int
    text: str
    expire: bool = False


class JournalUnits(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """The grids the records after it count in (a ``META`` record).

    Written by the engine at start-up, before anything else of the run, when the
    journal holds none yet or the last one differs from the configuration: the
    records that hold ticks and lots rather than decimals (``JournalValuation``,
    ``JournalChildren``) mean nothing without their grid. A replay under another
    ``tick_size`` or ``lot_size`` converts them from the grid written here, and
    refuses to start where a value does not fall on the configured one.
    ``instruments``: symbol -> (tick_size, lot_size) as decimal text.
    """

    money_unit: str
    instruments: dict[str, tuple[str, str]]


JournalMeta = Union[JournalSession, JournalValuation, JournalDayRoll, JournalChildren,
                    JournalSessionEnd, JournalPulled, JournalUnits]


# ---------------------------------------------------------------- codecs
def request_decoder() -> msgspec.msgpack.Decoder:
    """A decoder for client-to-engine frames; make one per socket and reuse it."""
    return msgspec.msgpack.Decoder(Request)


def response_decoder() -> msgspec.msgpack.Decoder:
    """A decoder for engine-to-client frames; make one per socket and reuse it."""
    return msgspec.msgpack.Decoder(Response)


def encoder() -> msgspec.msgpack.Encoder:
    """The msgpack encoder; make one per socket and reuse it with ``encode_into``."""
    return msgspec.msgpack.Encoder()


# ---------------------------------------------------------------- reject helpers
class Problem(NamedTuple):
    """Why a request is refused: the code, the offending field and a sentence."""

    reason: int
    field: str | None
    text: str


_REJECT_NAMES = {int(m): m.name for m in RejectReason}


def reject_name(code: int) -> str:
    """The ``RejectReason`` name of ``code``, or ``"UNKNOWN_<code>"``."""
    # A dict, not RejectReason(code): half the orders of a run of IOCs ask
    # (their unfilled remainder), and an enum call costs a microsecond.
    return _REJECT_NAMES.get(code) or f"UNKNOWN_{code}"


def clip_text(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """``text`` within ``limit`` characters (the wire's :data:`MAX_TEXT`, or what a
    sentence around it leaves of them), cut with a final "…".

    For a text the engine composes from something unbounded (an exception,
    a configuration's errors): msgspec does not check lengths when a struct
    is built, and a longer text would reach the client (which refuses it) and
    the journal (whose recovery reads it with the same schema).
    """
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def make_reject(reason: int, text: str, *, ref_type: str | None = None,
                cl_ord_id: str | None = None, req_id: str | None = None) -> Reject:
    """A ``Reject`` with its name and ``transact_time`` filled in."""
    return Reject(reject_reason=int(reason), reject_name=reject_name(reason), text=clip_text(text),
                  ref_type=ref_type, cl_ord_id=cl_ord_id, req_id=req_id,
                  transact_time=time.time_ns())


def reject_refs(request, fault: str | None = None) -> dict:
    """What a ``Reject`` of ``request`` echoes of it, so that its sender can tell which
    request was refused: its ``cl_ord_id`` and ``req_id`` (None where it has none), as
    keywords of :func:`make_reject`. ``fault``: a field that is itself the fault is not
    echoed (it may be any text)."""
    return {name: None if name == fault else getattr(request, name, None)
            for name in ("cl_ord_id", "req_id")}


# The last path component of a msgspec error decides the code, so that a bad
# price is INVALID_PRICE wherever it sits (``$.price``, ``$.orders[3].price``).
_FIELD_REASON = {
    "price": RejectReason.INVALID_PRICE,
    "qty": RejectReason.INVALID_QTY,
    "side": RejectReason.INVALID_SIDE,
    "ord_type": RejectReason.INVALID_ORD_TYPE,
    "time_in_force": RejectReason.INVALID_TIF,
    "stp": RejectReason.INVALID_STP_MODE,
    "cl_ord_id": RejectReason.INVALID_ORDER_ID,
    "orig_cl_ord_id": RejectReason.INVALID_ORDER_ID,
}
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_ORDER_INDEX = re.compile(r"\$\.orders\[(\d+)\]")
_FIELD_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
_FRIENDLY = {
    TextKind.TEXT_POSITIVE_DECIMAL: "a positive decimal string such as \"101.25\" (no sign, exponent or spaces)",
    TextKind.TEXT_DECIMAL: "a decimal string such as \"0\"",
    TextKind.TEXT_ID: "1 to 64 printable ASCII characters without spaces",
    TextKind.TEXT_SYMBOL: "1 to 32 printable ASCII characters without spaces",
}
_raw_decoder = msgspec.msgpack.Decoder()


def classify_decode_error(data: bytes | memoryview, exc: Exception) -> tuple[Problem, str | None, str | None]:
    """Turn a failed request decode into a reject.

    Only called on the error path, so it may decode the frame a second time
    (schemaless) to find out how far the message got.

    Parameters
    ----------
    data : bytes or memoryview
        The frame that failed to decode.
    exc : Exception
        What the typed decoder raised: a ``msgspec.MsgspecError``, or a
        ``UnicodeDecodeError`` for a msgpack string that is not UTF-8.

    Returns
    -------
    (Problem, ref_type, cl_ord_id)
        The reject code with the offending field and a sentence, the message
        type if it could be read, and the client order id if there was one.
    """
    # ValidationError subclasses DecodeError: anything else is broken msgpack.
    if not isinstance(exc, msgspec.ValidationError):
        detail = str(exc) if isinstance(exc, msgspec.MsgspecError) else f"{type(exc).__name__}: {exc}"
        return Problem(RejectReason.MALFORMED_MESSAGE, None, f"frame is not valid msgpack: {detail}"), None, None
    try:
        raw = _raw_decoder.decode(data)
    except Exception as raw_exc:  # noqa: BLE001 - e.g. UnicodeDecodeError for a str that is not UTF-8
        # The typed decoder can fail on the shape before it reads a bad string
        # that the schemaless one then trips over.
        return Problem(RejectReason.MALFORMED_MESSAGE, None,
                       f"frame is not valid msgpack: {type(raw_exc).__name__}: {raw_exc}"), None, None
    if not isinstance(raw, dict):
        return Problem(RejectReason.MALFORMED_MESSAGE, None,
                       f"a message is a map with a \"type\" field, got {type(raw).__name__}"), None, None
    msg_type = raw.get("type")
    cl_ord_id = raw.get("cl_ord_id")
    cl_ord_id = cl_ord_id if isinstance(cl_ord_id, str) and 0 < len(cl_ord_id) <= 64 else None
    if msg_type is None:
        return Problem(RejectReason.MALFORMED_MESSAGE, "type",
                       "message has no \"type\" field"), None, cl_ord_id
    if not isinstance(msg_type, str) or msg_type not in REQUEST_TYPES:
        shown = repr(msg_type)[:40]
        return Problem(RejectReason.UNKNOWN_MESSAGE_TYPE, "type",
                       f"unknown message type {shown}; expected one of {', '.join(REQUEST_TYPES)}"), None, cl_ord_id
    problem = _version_problem(raw.get("v", PROTOCOL_VERSION))
    if problem is not None:
        return problem, msg_type, cl_ord_id
    message = str(exc)
    match = _PATH.search(message)
    path = match.group(1) if match else "$"
    detail = message[:match.start()] if match else message
    inner = _ORDER_INDEX.match(path) if msg_type == "BulkNewOrders" else None
    if inner is not None:
        # An order of a version the engine does not speak fails to decode on
        # whatever that version changed; its version is the fault to name.
        index = int(inner.group(1))
        orders = raw.get("orders")
        order = orders[index] if isinstance(orders, list) and index < len(orders) else None
        version = order.get("v", PROTOCOL_VERSION) if isinstance(order, dict) else PROTOCOL_VERSION
        problem = _version_problem(version, f"{msg_type}: ", f" at $.orders[{index}].v")
        if problem is not None:
            return problem, msg_type, cl_ord_id
    field = None
    if path != "$":
        field = re.split(r"[.\[]", path)[-1].rstrip("]")
    elif "unknown field" in detail or "missing required field" in detail:
        named = _FIELD_NAME.search(detail)
        field = named.group(1) if named else None
    # A missing or extra field is a structural fault whatever its name; a
    # field present with a bad value gets that field's own code.
    if "unknown field" in detail or "missing required field" in detail:
        reason = RejectReason.INVALID_FIELD
    else:
        reason = _FIELD_REASON.get(field, RejectReason.INVALID_FIELD)
    where = f" at {path}" if path != "$" else ""
    value = _string_at(raw, path)
    if value is not None and ", got " not in detail:
        # (A rule the schema checks, e.g. a decimal string's length: the text
        # names the value sent, as textcheck's refusals do.)
        detail = f"{detail}, got {_shown(value)}"
    return Problem(reason, field, f"{msg_type}: {detail}{where}"), msg_type, cl_ord_id


_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _string_at(raw: object, path: str) -> str | None:
    """The string at a decoder error's ``path`` (``$.orders[2].qty``) in the schemaless
    message ``raw``, or None where it holds no string."""
    node = raw
    for name, index in _PATH_STEP.findall(path):
        if name and isinstance(node, dict):
            node = node.get(name)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return node if isinstance(node, str) else None


def _shown(value: str) -> str:
    """A value for a reject's text: its repr, cut short with ``...`` past 48 characters."""
    shown = repr(value[:64])
    return shown if len(shown) <= 48 else shown[:45] + "..."


def check_request(request: Request, *, max_bulk_orders: int = 1000) -> Problem | None:
    """Cross-field rules that a schema cannot express.

    Parameters
    ----------
    request : Request
        A decoded request.
    max_bulk_orders : int
        Largest accepted ``BulkNewOrders``.

    Returns
    -------
    Problem or None
        The first rule broken, or ``None``: first the version, then the
        syntax of the text fields (ids, symbols, decimal strings; for
        ``BulkNewOrders``, of every order of a supported version, and one
        bad order refuses the whole message as a malformed one would be),
        then the rules between fields. For ``BulkNewOrders`` those rules are
        checked on the batch only; :func:`check_version` and
        :func:`check_new_order` check each order.
    """
    if request.v not in SUPPORTED_VERSIONS:  # (inline: every request passes here)
        return check_version(request)
    spec = _TEXT_FIELDS[type(request)]
    if spec:
        bad = first_bad_field(request, spec)
        if bad >= 0:
            return _text_problem(request, spec[bad], "$")
    match request:
        case NewOrder():
            return check_new_order(request)
        case Cancel() | Replace():
            if request.cl_ord_id == request.orig_cl_ord_id:
                # (Its field is orig_cl_ord_id: the id itself is well formed, and the
                # Reject carries it, as for any request that had one.)
                return Problem(RejectReason.INVALID_ORDER_ID, "orig_cl_ord_id",
                               "cl_ord_id must name this request, not repeat orig_cl_ord_id")
            if type(request) is Replace and request.qty is None and request.price is None:
                return Problem(RejectReason.INVALID_FIELD, "qty",
                               "Replace changes nothing: give qty and/or price")
        case BulkNewOrders():
            if len(request.orders) > max_bulk_orders:
                return Problem(RejectReason.INVALID_FIELD, "orders",
                               f"{len(request.orders)} orders exceed the limit of {max_bulk_orders} per message")
            spec = _TEXT_FIELDS[NewOrder]
            for index, order in enumerate(request.orders):
                if order.v not in SUPPORTED_VERSIONS:
                    # Refused on its own by check_version (intake's bulk
                    # screen); fields of a version not spoken are not judged.
                    continue
                bad = first_bad_field(order, spec)
                if bad >= 0:
                    return _text_problem(order, spec[bad], f"$.orders[{index}]")
        case TradeHistoryRequest():
            if request.end_time < request.start_time:
                return Problem(RejectReason.INVALID_FIELD, "end_time", "end_time is before start_time")
        case ResendRequest():
            if request.end_seq and request.end_seq < request.begin_seq:
                return Problem(RejectReason.INVALID_FIELD, "end_seq", "end_seq is before begin_seq")
        case KillSwitch():
            if request.scope != "global" and not request.target:
                return Problem(RejectReason.INVALID_FIELD, "target",
                               f"a {request.scope} kill switch needs a target")
            if request.scope == "global" and request.target:
                # Taken, it stopped every account while its texts named one.
                return Problem(RejectReason.INVALID_FIELD, "target",
                               "a global kill switch has no target")
    return None


def check_version(request: Request) -> Problem | None:
    """UNSUPPORTED_VERSION if ``request.v`` is not a version this engine speaks.

    Applies to a whole request and, in a ``BulkNewOrders``, to each order on
    its own: an order carries its own ``v``, and one the engine does not
    speak is refused whatever the envelope's version.
    """
    return _version_problem(request.v)


def _version_problem(version: object, before: str = "", after: str = "") -> Problem | None:
    """UNSUPPORTED_VERSION naming ``version`` (a decoded request's, or a raw frame's
    value of any type), or None if this engine speaks it."""
    if type(version) is int and version in SUPPORTED_VERSIONS:
        return None
    return Problem(RejectReason.UNSUPPORTED_VERSION, "v",
                   f"{before}protocol version {version!r} is not supported; this engine speaks "
                   f"{sorted(SUPPORTED_VERSIONS)}{after}")


_LIMIT, _MARKET = OrdType.LIMIT, OrdType.MARKET     # every new order compares (see members())


def _text_problem(msg: msgspec.Struct, field_kind: tuple[str, int], path: str) -> Problem:
    """The reject for a text field of ``msg`` that ext.textcheck refused."""
    field, kind = field_kind
    return Problem(_FIELD_REASON.get(field, RejectReason.INVALID_FIELD), field,
                   f"Expected {_FRIENDLY[kind]}, got {_shown(getattr(msg, field))} at {path}.{field}")


def check_new_order(order: NewOrder) -> Problem | None:
    """Rules between a new order's fields (price vs type, post-only vs TIF)."""
    ord_type = order.ord_type
    if ord_type == _LIMIT and order.price is None:
        return Problem(RejectReason.PRICE_REQUIRED, "price", "a LIMIT order needs a price")
    if ord_type == _MARKET and order.price is not None:
        return Problem(RejectReason.INVALID_PRICE, "price", "a MARKET order must not carry a price")
    if order.post_only:
        if order.ord_type != OrdType.LIMIT:
            return Problem(RejectReason.INVALID_ORD_TYPE, "ord_type", "post_only needs a LIMIT order")
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            return Problem(RejectReason.INVALID_TIF, "time_in_force",
                           "post_only cannot be IOC or FOK: it never takes liquidity")
    if order.strategy in SCHEDULE_FIELDS or order.start_time is not None or \
            order.end_time is not None or order.slices is not None or \
            order.profile is not None or order.participation is not None:
        return _schedule_problem(order)
    return None


#: The strategies that trade on a schedule, and the fields each may carry.
SCHEDULE_FIELDS = {"twap": ("start_time", "end_time", "slices"),
              "vwap": ("start_time", "end_time", "profile"),
              "pov": ("start_time", "end_time", "participation")}


def _schedule_problem(order: NewOrder) -> Problem | None:
    """A scheduled order's fields: each belongs to its strategy, and they agree."""
    allowed = SCHEDULE_FIELDS.get(order.strategy, ())
    for name in ("start_time", "end_time", "slices", "profile", "participation"):
        if getattr(order, name) is not None and name not in allowed:
            return Problem(RejectReason.INVALID_SCHEDULE, name,
                           f"{name} is not a parameter of strategy {order.strategy or 'auto'!r}")
    if order.strategy in ("twap", "vwap") and order.end_time is None:
        return Problem(RejectReason.INVALID_SCHEDULE, "end_time",
                       f"strategy {order.strategy!r} needs an end_time")
    if order.start_time is not None and order.end_time is not None and \
            order.end_time <= order.start_time:
        return Problem(RejectReason.INVALID_SCHEDULE, "end_time", "end_time is not after start_time")
    if order.strategy == "vwap" and order.profile is None:
        return Problem(RejectReason.INVALID_SCHEDULE, "profile",
                       "strategy 'vwap' needs a volume profile")
    if order.strategy == "vwap" and not any(order.profile):
        return Problem(RejectReason.INVALID_SCHEDULE, "profile", "the profile is all zeros")
    if order.strategy == "pov":
        if order.participation is None:
            return Problem(RejectReason.INVALID_SCHEDULE, "participation",
                           "strategy 'pov' needs a participation rate")
        if participation_ppm(order.participation) is None:
            return Problem(RejectReason.INVALID_SCHEDULE, "participation",
                           f"participation {order.participation!r} is not a fraction above 0 and "
                           f"at most 1 with at most 6 decimals")
    return None


def participation_ppm(text: str) -> int | None:
    """A participation rate ("0.1") in parts per million, exactly; None unless 0 < rate <= 1
    with at most six decimals."""
    mantissa, exponent = _units(text)
    if exponent > 6:
        return None
    ppm = mantissa * 10 ** (6 - exponent)
    return ppm if 0 < ppm <= 1_000_000 else None


# ---------------------------------------------------------------- invariants
def _units(text: str) -> tuple[int, int]:
    """A decimal string as ``(mantissa, exponent)``: exact, no float."""
    dot = text.find(".")
    if dot < 0:
        return int(text), 0
    return int(text[:dot] + text[dot + 1:]), len(text) - dot - 1


def decimal_sum_equals(total: str, *parts: str) -> bool:
    """``total == sum(parts)`` exactly, for decimal strings."""
    if "." not in total and not any("." in p for p in parts):  # whole lots: the usual case
        return int(total) == sum(int(p) for p in parts)
    values = [_units(total), *(_units(p) for p in parts)]
    scale = max(e for _, e in values)
    scaled = [m * 10 ** (scale - e) for m, e in values]
    return scaled[0] == sum(scaled[1:])


def _is_zero(text: str) -> bool:
    return text.strip("0.") == ""


_DONE = (OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.EXPIRED, OrdStatus.REJECTED)


def check_report(report: ExecutionReport) -> str | None:
    """The execution report invariants; ``None`` when they hold.

    * ``qty == cum_qty + leaves_qty``;
    * a done order (filled, canceled, expired, rejected) has ``leaves_qty`` 0;
    * a fill or partial fill carries ``last_qty`` > 0 and ``last_px``;
    * a rejected report carries a reject reason.
    """
    if not decimal_sum_equals(report.qty, report.cum_qty, report.leaves_qty):
        return (f"qty {report.qty} != cum_qty {report.cum_qty} + leaves_qty {report.leaves_qty} "
                f"(cl_ord_id {report.cl_ord_id})")
    if report.ord_status in _DONE and not _is_zero(report.leaves_qty):
        return f"ord_status {report.ord_status.name} with leaves_qty {report.leaves_qty}"
    if report.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL):
        if report.last_qty is None or report.last_px is None or _is_zero(report.last_qty):
            return f"exec_type {report.exec_type.name} without last_qty/last_px"
    if report.exec_type == ExecType.REJECTED and not report.reject_reason:
        return "exec_type REJECTED without reject_reason"
    return None


# ---------------------------------------------------------------- conversions
class OrderUnits(NamedTuple):
    """A new order's price and quantity as the core's integers (price 0: none)."""

    price_ticks: int
    qty_lots: int


def order_units(order: NewOrder | Replace, instrument) -> OrderUnits:
    """Convert an order's decimal strings to ticks and lots.

    Parameters
    ----------
    order : NewOrder or Replace
        A decoded order (for a ``Replace`` a missing field converts to 0).
    instrument : ext.instrument.Instrument
        The order's instrument.

    Raises
    ------
    ext.instrument.ConversionError
        With ``.reason`` (OFF_TICK, OFF_LOT, BELOW_MIN_QTY, ...) and ``.field``.
    """
    price = 0 if order.price is None else instrument.price_to_ticks(order.price)
    qty = 0 if order.qty is None else instrument.qty_to_lots(order.qty)
    return OrderUnits(price, qty)
