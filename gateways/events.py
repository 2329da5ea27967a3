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

import logging
import re
from typing import Iterable

import msgspec

from engine.journal import Record, RecordKind
from engine.messages import (
    AdminReply, ExecType, ExecutionReport, HeartbeatAck, JournalEvent, OrderStatusReply, Reject,
    TradeHistoryReply,
)

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


_FILL_EXEC_TYPES = (ExecType.FILL, ExecType.PARTIAL_FILL)
_FIXED_TYPES: dict[type, str] = {Reject: "reject", OrderStatusReply: "order_status",
                                 TradeHistoryReply: "trade_history", HeartbeatAck: "heartbeat_ack"}
# The fields of an unknown event type that are copied when they have the right type.
_LOOSE_STR = ("account", "symbol", "cl_ord_id", "order_id", "req_id", "reject_name", "text")
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """``ExecutionReport`` -> ``execution_report``."""
    return _SNAKE.sub("_", name).lower()


class Normalizer:
    """Turns journal records into ``GatewayEvent`` structs, keeping selected types.

    One per reading thread (it holds a reused decoder).

    Parameters
    ----------
    event_types : iterable of str
        Types to keep; ``"*"`` keeps every type, unknown ones included.

    Attributes
    ----------
    undecodable : int
        Event records that could not be decoded at all (logged, skipped).
    unknown : int
        Events of a type this version does not know.
    """

    def __init__(self, event_types: Iterable[str] = DEFAULT_EVENT_TYPES):
        types = frozenset(event_types)
        self.all_types = "*" in types
        self.event_types = types - {"*"}
        self._decoder = msgspec.msgpack.Decoder(JournalEvent)
        self._raw = msgspec.msgpack.Decoder()
        self.undecodable = 0
        self.unknown = 0

    def wants(self, event_type: str) -> bool:
        """Whether events of ``event_type`` are kept."""
        return self.all_types or event_type in self.event_types

    def normalize(self, records: Iterable[Record]) -> list[GatewayEvent]:
        """The kept events among ``records``, in journal order."""
        out = []
        for record in records:
            if record.kind != RecordKind.EVENT:
                continue
            event = self.event(record)
            if event is not None and self.wants(event.type):
                out.append(event)
        return out

    def event(self, record: Record) -> GatewayEvent | None:
        """The event of one ``EVENT`` record (``None`` if it does not decode)."""
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
                return GatewayEvent(
                    seq=record.seq, ts_ns=record.ts_ns, type="admin", session_id=envelope.session_id,
                    transact_time=message.transact_time, req_id=message.req_id, ok=message.ok,
                    reject_reason=message.reject_reason, reject_name=message.reject_name,
                    text=message.text)
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


def topic_of(event: GatewayEvent) -> str:
    """``<type>.<symbol>`` (``fill.AAPL``), or the bare type for events without a symbol."""
    return event.type if event.symbol is None else f"{event.type}.{event.symbol}"
