"""Event normalization: journal records in, flat ``GatewayEvent`` structs out.

This is the first step after the journal on the way out of the engine: every
gateway turns the records it reads into the same flat struct, so a fill looks
the same on ZeroMQ, on NATS and in PostgreSQL. Only ``EVENT`` records (the
engine's outbound messages, ``messages.JournalEvent``) become gateway events;
commands and bookkeeping records are read past.

Types
-----
``fill``
    An ``ExecutionReport`` with ``exec_type`` FILL or PARTIAL_FILL.
``execution_report``
    Any other ``ExecutionReport`` (NEW, CANCELED, REPLACED, REJECTED, EXPIRED).
``admin``
    An ``AdminReply``: a kill switch engaged or released, limits reloaded.
    The reply alone does not say what was asked; the request it answers is
    journaled just before it as a command (``KillSwitch`` or
    ``ReloadLimits``, same session and ``req_id``), and the event carries
    its ``action``, ``scope`` and ``target`` from there.
``reject``, ``order_status``, ``trade_history``, ``heartbeat_ack``
    Session traffic, not published unless asked for (``events = ["*"]``).
anything else
    An event type this version does not know (a newer engine): the class
    name in snake_case, with the common fields that could be read.

Each journal record becomes at most one event and keeps the record's
``seq``, so ``seq`` identifies an event everywhere: consumers de-duplicate by
it (see ``docs/gateways.md``).
"""
from __future__ import annotations

import enum
import logging
import re
import types
import typing
from typing import Iterable

import msgspec

from engine.journal import JournalError, JournalReader, Record, RecordKind
from engine.messages import (
    AdminReply, ExecType, ExecutionReport, HeartbeatAck, JournalCommand, JournalEvent, KillSwitch,
    OrderStatusReply, Reject, ReloadLimits, TradeHistoryReply,
)
from gateways.tail import JournalTail

log = logging.getLogger(__name__)

#: Event types published when a gateway's ``events`` key is left out.
DEFAULT_EVENT_TYPES = ("fill", "execution_report", "admin")
#: Every type this version produces by name (``"*"`` selects all, unknown ones included).
KNOWN_EVENT_TYPES = ("fill", "execution_report", "admin", "reject", "order_status",
                     "trade_history", "heartbeat_ack")


class GatewayEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One engine event as every gateway publishes it.

    Fields follow FIX naming like the protocol's ``ExecutionReport``; enum
    fields carry the same integer codes (``side`` 1 BUY, 2 SELL, 5
    SELL_SHORT; ``exec_type``/``ord_status`` as FIX tags 150/39), prices and
    quantities the same decimal strings. Fields that do not apply to an
    event are ``None`` (and left out of the msgpack map). New fields are
    added at the end with a default.

    Attributes
    ----------
    seq : int
        The journal sequence number: unique, increasing, the de-duplication key.
    ts_ns : int
        When the engine journaled the event (ns since the epoch).
    type : str
        ``fill``, ``execution_report``, ``admin``, ... (module docstring).
    session_id : str
        The client session the event was sent to.
    transact_time : int
        The event's own transaction time (ns), as the client saw it.
    action : str
        Admin events: what was asked, ``engage`` or ``release`` (a kill
        switch) or ``reload_limits``.
    scope, target : str
        Admin events of a kill switch: its ``scope`` (``global``,
        ``account``, ``symbol``) and ``target`` (the account or symbol; none
        for ``global``), as in the ``KillSwitch`` request.
    """

    seq: int
    ts_ns: int
    type: str
    session_id: str = ""
    transact_time: int = 0
    account: str | None = None
    symbol: str | None = None
    side: int | None = None
    cl_ord_id: str | None = None
    orig_cl_ord_id: str | None = None
    order_id: str | None = None
    exec_id: str | None = None
    exec_type: int | None = None
    ord_status: int | None = None
    ord_type: int | None = None
    price: str | None = None
    qty: str | None = None
    cum_qty: str | None = None
    leaves_qty: str | None = None
    avg_px: str | None = None
    last_qty: str | None = None
    last_px: str | None = None
    venue: str | None = None
    reject_reason: int = 0
    reject_name: str | None = None
    text: str | None = None
    req_id: str | None = None
    ok: bool | None = None
    action: str | None = None
    scope: str | None = None
    target: str | None = None


_FILL_EXEC_TYPES = (ExecType.FILL, ExecType.PARTIAL_FILL)
_FILL_CODES = frozenset(int(t) for t in _FILL_EXEC_TYPES)


def _plain_type(tp):
    """``tp`` without what the strict decode checks: constraints dropped, enums as ``int``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _plain_type(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_plain_type(a) for a in typing.get_args(tp))]
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return int
    return tp


# An ``ExecutionReport`` as the journal holds it, read with plain types.
#
# The gateways' fast path: most records are execution reports, and decoding
# them into ``messages.ExecutionReport`` checks every decimal string and id
# against its pattern and makes each enum code an ``IntEnum`` (about 3 µs of
# a gateway's CPU per event, most of what normalising cost). The engine built
# and journaled these reports (each record's CRC and hash chain are checked on
# the way in), so the gateway republishes their values as they are: the types
# are still checked, and a record that does not fit this shape (a missing
# field, a wrong type) goes the strict way, ``messages.JournalEvent``. Made
# from ``ExecutionReport``'s own fields, so the two cannot drift apart; ``v``
# and the session's ``seq`` are not needed.
_PlainReport = msgspec.defstruct(
    "_PlainReport",
    [(f.name, _plain_type(f.type)) if f.required else
     (f.name, _plain_type(f.type), f.default)
     for f in msgspec.structs.fields(ExecutionReport) if f.name not in ("v", "seq")],
    kw_only=True, frozen=True, gc=False, tag="ExecutionReport", module=__name__)


class _PlainReportEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="JournalEvent"):
    """A ``messages.JournalEvent`` holding an execution report (see ``_PlainReport``)."""

    session_id: str
    event: _PlainReport
_FIXED_TYPES: dict[type, str] = {Reject: "reject", OrderStatusReply: "order_status",
                                 TradeHistoryReply: "trade_history", HeartbeatAck: "heartbeat_ack"}
# The fields of an unknown event type that are copied when they have the right type.
_LOOSE_STR = ("account", "symbol", "cl_ord_id", "order_id", "req_id", "reject_name", "text")
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
#: Admin requests kept while their reply is awaited (it follows at once; the
#: bound only matters for requests that were never answered).
ADMIN_PENDING_MAX = 1024
#: How many records before an admin reply its request is looked for, when it
#: was not read on the way (see ``Normalizer``).
ADMIN_LOOKBACK = 100_000
# Bytes every admin command's payload holds (its type tag): a command without
# them is not decoded at all, which keeps order commands cheap to read past.
_ADMIN_TAGS = (b"KillSwitch", b"ReloadLimits")


def snake_case(name: str) -> str:
    """``ExecutionReport`` -> ``execution_report``."""
    return _SNAKE.sub("_", name).lower()


class Normalizer:
    """Turns journal records into ``GatewayEvent`` structs, keeping selected types.

    One per reading thread (it holds a reused decoder). Feed it every record
    in journal order, commands included: an admin reply takes its
    ``action``, ``scope`` and ``target`` from the request journaled before it.

    Parameters
    ----------
    event_types : iterable of str
        Types to keep; ``"*"`` keeps every type, unknown ones included.
    journal : JournalReader, optional
        The journal the records come from. An admin reply whose request was
        not fed (reading started between the two: a gateway resuming from
        its cursor, a replay) is completed by looking the request up there,
        in the records before the first one fed, at most
        :data:`ADMIN_LOOKBACK` records back from the reply; without it, or
        if the request is not found, those fields stay empty.

    Attributes
    ----------
    undecodable : int
        Event records that could not be decoded at all (logged, skipped).
    unknown : int
        Events of a type this version does not know.
    """

    def __init__(self, event_types: Iterable[str] = DEFAULT_EVENT_TYPES, *,
                 journal: JournalReader | None = None):
        types = frozenset(event_types)
        self.all_types = "*" in types
        self.event_types = types - {"*"}
        self.journal = journal
        self._decoder = msgspec.msgpack.Decoder(JournalEvent)
        self._report_decoder = msgspec.msgpack.Decoder(_PlainReportEvent)
        self._command_decoder = msgspec.msgpack.Decoder(JournalCommand)
        self._raw = msgspec.msgpack.Decoder()
        # (session_id, req_id) -> admin request, until its reply is normalised.
        self._admin_requests: dict[tuple[str, str], KillSwitch | ReloadLimits] = {}
        # The unbroken run of seqs fed so far: a request inside it was seen.
        self._fed_first = self._fed_last = 0
        self.undecodable = 0
        self.unknown = 0

    def reset(self) -> None:
        """Forget what was fed: the next record starts a new run (a replay of another range).

        An admin request fed in one range and left unanswered there must not
        answer for a reply in another: a later request under the same
        ``req_id`` (an engage, then its release) would lend that reply its
        action, scope and target.
        """
        self._admin_requests.clear()
        self._fed_first = self._fed_last = 0

    def wants(self, event_type: str) -> bool:
        """Whether events of ``event_type`` are kept."""
        return self.all_types or event_type in self.event_types

    def normalize(self, records: Iterable[Record]) -> list[GatewayEvent]:
        """The kept events among ``records``, in journal order."""
        out = []
        for record in records:
            if record.kind != RecordKind.EVENT:
                self.note(record)
                continue
            event = self.event(record)
            if event is not None and self.wants(event.type):
                out.append(event)
        return out

    def _fed(self, seq: int) -> None:
        if seq != self._fed_last + 1:
            self._fed_first = seq
        self._fed_last = seq

    def note(self, record: Record) -> None:
        """Feed a record that is not an event: an admin request is kept until its reply."""
        self._fed(record.seq)
        if record.kind != RecordKind.COMMAND:
            return
        found = _admin_request(self._command_decoder, record)
        if found is not None:
            pending = self._admin_requests
            pending[found[0]] = found[1]
            if len(pending) > ADMIN_PENDING_MAX:
                # A request the engine never answered; the oldest goes first.
                del pending[next(iter(pending))]

    def event(self, record: Record) -> GatewayEvent | None:
        """The event of one ``EVENT`` record (``None`` if it does not decode)."""
        self._fed(record.seq)
        try:
            envelope = self._report_decoder.decode(record.payload)
        except msgspec.DecodeError:
            # Not an execution report (an admin reply, session traffic, a
            # type this version does not know) or not well formed: the strict
            # path below sorts it out. ValidationError is a DecodeError.
            pass
        else:
            message = envelope.event
            return GatewayEvent(
                seq=record.seq, ts_ns=record.ts_ns,
                type="fill" if message.exec_type in _FILL_CODES else "execution_report",
                session_id=envelope.session_id, transact_time=message.transact_time,
                account=message.account, symbol=message.symbol, side=message.side,
                cl_ord_id=message.cl_ord_id, orig_cl_ord_id=message.orig_cl_ord_id,
                order_id=message.order_id, exec_id=message.exec_id,
                exec_type=message.exec_type, ord_status=message.ord_status,
                ord_type=message.ord_type, price=message.price, qty=message.qty,
                cum_qty=message.cum_qty, leaves_qty=message.leaves_qty, avg_px=message.avg_px,
                last_qty=message.last_qty, last_px=message.last_px, venue=message.venue,
                reject_reason=message.reject_reason, reject_name=message.reject_name,
                text=message.text)
        try:
            envelope = self._decoder.decode(record.payload)
        except msgspec.ValidationError:
            # A message type a newer engine added: keep what can be read
            # rather than stall the gateway on it.
            return self._loose(record)
        except msgspec.DecodeError as exc:
            self._bad(record, exc)
            return None
        message = envelope.event
        match message:
            case ExecutionReport():
                return GatewayEvent(
                    seq=record.seq, ts_ns=record.ts_ns,
                    type="fill" if message.exec_type in _FILL_EXEC_TYPES else "execution_report",
                    session_id=envelope.session_id, transact_time=message.transact_time,
                    account=message.account, symbol=message.symbol, side=int(message.side),
                    cl_ord_id=message.cl_ord_id, orig_cl_ord_id=message.orig_cl_ord_id,
                    order_id=message.order_id, exec_id=message.exec_id,
                    exec_type=int(message.exec_type), ord_status=int(message.ord_status),
                    ord_type=None if message.ord_type is None else int(message.ord_type),
                    price=message.price, qty=message.qty, cum_qty=message.cum_qty,
                    leaves_qty=message.leaves_qty, avg_px=message.avg_px,
                    last_qty=message.last_qty, last_px=message.last_px, venue=message.venue,
                    reject_reason=message.reject_reason, reject_name=message.reject_name,
                    text=message.text)
            case AdminReply():
                request = self._admin_requests.pop((envelope.session_id, message.req_id), None)
                if request is None and self.journal is not None and \
                        record.seq - self._fed_first < ADMIN_LOOKBACK:
                    request = self._look_back(envelope.session_id, message.req_id, record.seq)
                match request:
                    case KillSwitch():
                        action, scope, target = request.action, request.scope, request.target
                    case ReloadLimits():
                        action, scope, target = "reload_limits", None, None
                    case _:
                        action = scope = target = None
                return GatewayEvent(
                    seq=record.seq, ts_ns=record.ts_ns, type="admin", session_id=envelope.session_id,
                    transact_time=message.transact_time, req_id=message.req_id, ok=message.ok,
                    reject_reason=message.reject_reason, reject_name=message.reject_name,
                    text=message.text, action=action, scope=scope, target=target)
            case _:
                kind = _FIXED_TYPES.get(type(message)) or snake_case(type(message).__name__)
                return GatewayEvent(
                    seq=record.seq, ts_ns=record.ts_ns, type=kind, session_id=envelope.session_id,
                    transact_time=message.transact_time,
                    account=getattr(message, "account", None),
                    cl_ord_id=getattr(message, "cl_ord_id", None),
                    req_id=getattr(message, "req_id", None),
                    reject_reason=getattr(message, "reject_reason", 0) or 0,
                    reject_name=getattr(message, "reject_name", None),
                    text=getattr(message, "text", None))

    def _look_back(self, session_id: str, req_id: str, before_seq: int) -> KillSwitch | ReloadLimits | None:
        """The request an admin reply at ``before_seq`` answers, read back from the journal.

        Only records before the run fed so far are read (a request inside
        it would have been seen). The engine journals the request right
        before handling it, so it is normally the record just before the
        reply (or before the cancels a kill switch causes): windows of
        growing size are read backwards, newest first.
        """
        key = (session_id, req_id)
        tail = JournalTail(self.journal)
        last, window = self._fed_first - 1, 256
        try:
            while last >= 1 and before_seq - last <= ADMIN_LOOKBACK:
                first = max(1, last - window + 1)
                tail.seek(first - 1)
                found, seq = None, first - 1
                while seq < last and (records := tail.read(min(4096, last - seq))):
                    for record in records:
                        seq = record.seq
                        if seq > last:
                            break
                        if record.kind == RecordKind.COMMAND:
                            admin = _admin_request(self._command_decoder, record)
                            if admin is not None and admin[0] == key:
                                found = admin[1]  # the latest one before the reply wins
                if found is not None:
                    return found
                last, window = first - 1, window * 4
        except JournalError as exc:
            log.warning("gateway: the request of admin reply %d was not read back: %s", before_seq, exc)
        finally:
            tail.close()
        return None

    def _loose(self, record: Record) -> GatewayEvent | None:
        try:
            raw = self._raw.decode(record.payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            self._bad(record, exc)
            return None
        inner = raw.get("event") if isinstance(raw, dict) else None
        if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
            self._bad(record, ValueError("not a JournalEvent envelope"))
            return None
        self.unknown += 1
        fields = {key: inner[key] for key in _LOOSE_STR if isinstance(inner.get(key), str)}
        session_id = raw.get("session_id")
        transact_time = inner.get("transact_time")
        return GatewayEvent(seq=record.seq, ts_ns=record.ts_ns, type=snake_case(inner["type"]),
                            session_id=session_id if isinstance(session_id, str) else "",
                            transact_time=transact_time if type(transact_time) is int else 0,
                            **fields)

    def _bad(self, record: Record, exc: Exception) -> None:
        # A record the engine wrote that cannot be read is a bug to look at,
        # not a reason to stop every downstream consumer: count, log, go on.
        self.undecodable += 1
        log.error("gateway: journal record %d does not decode, skipped: %s", record.seq, exc)


def _admin_request(decoder: msgspec.msgpack.Decoder, record: Record
                   ) -> tuple[tuple[str, str], KillSwitch | ReloadLimits] | None:
    """``((session_id, req_id), request)`` of an admin ``COMMAND`` record, else ``None``."""
    payload = record.payload
    if _ADMIN_TAGS[0] not in payload and _ADMIN_TAGS[1] not in payload:
        return None
    try:
        envelope = decoder.decode(payload)
    except msgspec.DecodeError:
        return None  # not ours to judge: commands are the engine's record, not published
    request = envelope.request
    if isinstance(request, (KillSwitch, ReloadLimits)):
        return (envelope.session_id, request.req_id), request
    return None


def topic_of(event: GatewayEvent) -> str:
    """``<type>.<symbol>`` (``fill.AAPL``), or the bare type for events without a symbol."""
    return event.type if event.symbol is None else f"{event.type}.{event.symbol}"
