"""Recovery: rebuild the engine's state from its journal before taking orders.

Role: the service calls :func:`recover` at start-up, after the journal writer
has dropped a torn last record and before intake opens. The journal holds
every command and every outcome; the outcomes (execution reports) are the
state's history, so replaying them rebuilds exactly what clients were told:
the order table (ids, client ids, quantities, fills, stages), the fills per
account for trade history, the risk engine's exposure (positions,
working orders, cash used, daily counters), and each client session's
sequence number with its last messages (the journal keeps every frame as
sent, seq included), so a client that reconnects after the restart resumes
its session with a ``ResendRequest`` and misses nothing.

Risk is rebuilt by replaying the same calls the pipeline made (``check_new``
for each accepted order, ``on_fill``, ``on_cancel``, ``on_replace``) under a
permissive copy of the limits (the original decisions are already made and
must not be taken again against today's reference prices), then the real
limits are reloaded, which keeps every running counter.

Orders that were working at the crash are routed again for what they have
left: the embedded simulator's venues do not outlive the process, so their
children are gone, exactly like a venue that cancels on disconnect (an IOC or
market order is canceled instead: it was for the market of its arrival). That is a
second step, :func:`resume_working`, which the service takes once intake has
restored the sessions: an order it cancels (a kill switch engaged before the
restart, or a remainder that can no longer be routed) is reported to its
session in its numbering, kept for resends like any other report. A Cancel or
Replace the journal holds with no answer yet (its venue had not confirmed the
children down) is taken up again first: the children are gone with the
venues, so the pipeline finishes it as it would have live, and the requester
gets its answer instead of the order going back to the market.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import io
import logging
import pickle
import time
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Callable, NamedTuple

import msgspec

from engine.intake import RESEND_MARK_EVERY
from engine.journal import JournalReader, Record, RecordKind, first_segment_header
from engine.messages import (
    AdminReply, BulkNewOrders, Cancel, ExecType, ExecutionReport, HeartbeatAck, JournalChildren,
    JournalCommand, JournalDayRoll, JournalEvent, JournalMeta, JournalPayload, JournalPulled,
    JournalSession, JournalSessionEnd, JournalUnits, KillSwitch, NewOrder, OrdStatus, OrdType, Reject,
    RejectReason, Replace, Side, TradeFill, clip_text, reject_name,
)
from engine.orders import Child, Stage
from engine.pipeline import (
    RISK_SCOPE, SessionRef, cl_ord_hash, kill_switch_scope, order_schedule, fill_ticks, risk_fill,
    risk_flags,
)
from ext.risk import RiskFlag

log = logging.getLogger(__name__)

#: Risk flags every replayed order carries: the duplicative check was taken when the order
#: arrived (under the window then in force); replayed, it must pass and be recorded again.
_REPLAYED = int(RiskFlag.FLAG_INTENDED_DUPLICATE)

_R = RejectReason
#: New-order refusals of the pipeline's validation, before risk saw the order. (Risk refuses
#: an order for an account or instrument a reload took out with the same codes; the journal
#: does not tell the two apart, and such an order reads as refused at validation.)
_REFUSED_UNVALIDATED = frozenset(map(int, (
    _R.UNKNOWN_INSTRUMENT, _R.UNKNOWN_ACCOUNT, _R.INVALID_TIF, _R.INVALID_FIELD, _R.INVALID_QTY,
    _R.INVALID_PRICE, _R.OFF_TICK, _R.OFF_LOT, _R.BELOW_MIN_QTY, _R.VALUE_OUT_OF_RANGE)))
#: Refusals of an order risk had passed: routing it (the router's codes are NO_ROUTE and up).
_REFUSED_ROUTING = frozenset(map(int, (_R.POST_ONLY_WOULD_CROSS, _R.INTERNAL_ERROR)))
#: Refusals of a replace by risk's own checks (``on_replace``), which record its cl_ord_id:
#: risk's codes, less THROTTLED (checked before the id is recorded) and KILL_SWITCH (a replace
#: refused for a kill switch was pulled by the pipeline before risk judged it).
_RISK_JUDGED_REPLACE = frozenset(range(_R.UNKNOWN_INSTRUMENT, _R.UNKNOWN_SESSION + 1)) \
    - {int(_R.THROTTLED), int(_R.KILL_SWITCH)}
#: The exec types that answer a Cancel or Replace (with ``orig_cl_ord_id`` set).
_ANSWERS = frozenset((ExecType.CANCELED, ExecType.REPLACED, ExecType.REJECTED))


class RecoveryError(RuntimeError):
    """The journal cannot be replayed into this configuration (the message says why)."""


class RecoveredSession(NamedTuple):
    """A client session as the journal left it: for ``IntakeServer.restore_session``."""

    session_id: str
    principal: str
    seq: int
    messages: list   # the last messages sent (oldest first), each with its seq
    #: the session's setting as its last HeartbeatAck told the client
    cancel_on_disconnect: bool = False
    #: (seq, journal record) of every RESEND_MARK_EVERY-th message sent: where a
    #: resend older than the ring reads the journal from (``Session.journal_mark``)
    marks: list = []


class Recovered(NamedTuple):
    """What recovery found."""

    records: int
    orders: int
    working: int
    fills: int
    sessions: list[RecoveredSession] = []
    #: the kill switches the journal leaves engaged: (scope, target) -> request
    kill_switches: dict = {}
    #: the Cancels and Replaces the journal leaves unanswered, oldest first:
    #: (session_id, request, what their order had filled when they arrived,
    #: the trading day they arrived in: OrderTable.rolls then)
    in_flight: list = []
    #: the grids the journal's last records count in (its last ``JournalUnits``:
    #: ``{"money_unit": ..., "instruments": {symbol: (tick, lot)}}``; None: it holds none)
    journal_units: dict | None = None

    def summary(self) -> dict:
        """The counts, for the log."""
        return {**self._asdict(), "sessions": len(self.sessions),
                "kill_switches": len(self.kill_switches), "in_flight": len(self.in_flight),
                "journal_units": self.journal_units is not None}


def check_whole(journal_dir, covered: int = 0) -> None:
    """Refuse a journal whose first segments are gone (archived or deleted from the front),
    unless a checkpoint loaded covers them (``covered``: the record it was taken after).

    The engine's state is the replay of the whole journal: from a later
    segment without a checkpoint it would miss orders, fills and positions,
    and take spent cl_ord_ids for free, without a word. A checkpoint holds the
    replay up to its record, which the journal still has (the checkpoint was
    only loaded if so): what went before it is not needed.
    """
    first = first_segment_header(journal_dir)
    if first is not None and first[1].first_seq != 1 and not covered:
        path, header = first
        raise RecoveryError(
            f"the journal begins at seq {header.first_seq} ({path.name}): its first segments "
            f"were archived or deleted, and no usable checkpoint holds the replay of what "
            f"they held (see the warnings above, engine.checkpoint); put them back "
            f"(journal verify and export still read what is left)")


def _decode_clipped(data: bytes) -> JournalPayload:
    """A record an older engine wrote with a ``text`` past ``MAX_TEXT``, its texts cut.

    Such an engine sent (and journaled) a refused reload's long reason whole;
    refusing the record would make the journal unrecoverable for a message's
    wording. Anything else the schema refuses is raised as before.
    """
    def clip(value):
        if isinstance(value, dict):
            return {k: clip_text(v) if k == "text" and isinstance(v, str) else clip(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [clip(v) for v in value]
        return value
    return msgspec.convert(clip(msgspec.msgpack.decode(data)), JournalPayload)


#: Replay's credit (currency): risk caps it at the int64 range of its money unit, so buying
#: power cannot refuse a replayed order (``_permissive``).
_UNLIMITED_CREDIT = str(2**63)


def _permissive(table: dict) -> dict:
    """The risk configuration with its limits taken out (grids and accounts kept).

    The duplicative-order window stays: replayed orders pass it (they carry the
    intended-duplicate flag, see :func:`_apply`) but are recorded under it, so each
    blocks its twins after the restart as it did before.

    Buying power is a limit like the others: the file read at the restart may give an
    account less cash or credit than it had when its orders were accepted (a
    ``ReloadLimits`` cutting it while they worked), and an order refused at the replay
    would be worked by the engine with no reservation, working count or position at
    risk. So every account replays with unlimited credit (``cash`` and ``credit_limit``
    are limits, not state: ``reload(live_config)`` puts the file's back at the end).
    """
    firm = {k: v for k, v in table.get("firm", {}).items()
            if k in ("money_unit", "duplicative_window_ms")}
    instruments = {sym: {k: v for k, v in entry.items() if k in ("tick_size", "lot_size", "min_qty")}
                   for sym, entry in table.get("instruments", {}).items()}
    accounts = {name: {"active": True, "allow_short": True, "entitlements": "*",
                       "credit_limit": _UNLIMITED_CREDIT}
                for name in table.get("accounts", {})}
    return {"firm": firm, "instruments": instruments, "accounts": accounts}


def _hold_market_buys(table, risk) -> None:
    """Hold every working collared market buy to the price risk values it at, as live.

    Live, such an order is held to the collar's upper edge (``Order.protect``, set by
    ``Pipeline._protect``) so that it fills nowhere above the price risk reserved it at.
    The journal keeps that price (its ``JournalValuation``, which the replay valued it
    at) and, since 2026-12-07, the hold (``JournalValuation.protect``, restored by the
    replay); here the hold moves to the value after the replay (a replace re-values
    it). A journal written before then has no such flag: whether a collar applies is
    then the configuration's at the restart (``risk`` has it loaded). Without the hold,
    a market order on a schedule working on after a restart swept the book past the
    collar and took buying power below zero.
    """
    for order in table.working():
        if order.ord_type != OrdType.MARKET or order.side != Side.BUY:
            continue
        # (One held already, as a checkpoint could give it, is held at its valuation
        # now: a replace the journal has after it re-valued it, and the hold follows.)
        if order.protect or risk.collared(risk.account_index(order.account),
                                          risk.instrument_index(order.symbol)):
            value = risk.value_price(order.order_id)
            if value > 0:
                order.protect = value


def _known_session(risk, principals: dict, session_id: str, principal: str,
                   client_name: Callable[[str], str] | None, in_risk: set | None = None) -> None:
    """Note a session's principal. Given ``in_risk`` (the sessions registered so far:
    a command of the session's is being read), register it with risk the first time,
    under its key's throttle bucket, not under a bucket of its own.

    Risk registers a session at its first command, or at the THROTTLED refusal of
    its first new order, as the pipeline does live (``Pipeline.handle``), not at
    its first frame (JournalSession): a released session's slot goes to the next
    one registered, so registering at the same points live and here gives each
    session, and each order, the same risk index after a restart.
    """
    if in_risk is not None and session_id not in in_risk:
        in_risk.add(session_id)
        if client_name is not None:
            risk.session_index(session_id, client_name(principal))
    principals[session_id] = principal


def _px_x2(inst, price: str) -> int:
    """A decimal price string as half-ticks, exactly."""
    value = Decimal(price) * 2 / Decimal(inst.tick_size)
    if value != value.to_integral_value():
        raise ValueError(f"price {price} is not on the half-tick grid of {inst.symbol}")
    return int(value)


class Replay:
    """The journal's replay into a pipeline, record by record: :func:`recover`'s work.

    Its state between two records is its own bookkeeping (the attributes
    named in :attr:`SAVED`) and what it built in the pipeline: the order
    table, the trade history, risk's state, the trading day and the
    journaled sessions. :mod:`engine.checkpoint` saves both after a record
    (:meth:`save`) and loads them into a fresh replay (:meth:`load`), so a
    restart replays only the journal after the checkpoint and reaches the
    state a replay of the whole journal reaches.

    Parameters
    ----------
    pipeline : engine.pipeline.Pipeline
        A pipeline as built at start-up, nothing routed yet; its risk engine
        runs under permissive limits until :meth:`finish` (``_permissive``).
    ring_size, client_name
        As for :func:`recover`.
    """

    #: The replay's own state a checkpoint keeps, beside the pipeline's.
    SAVED = ("seq", "hash", "records", "fills", "max_exec", "last_child", "last_roll_ns",
             "new_orders", "missing", "kill_requests", "engaged", "requests",
             "unanswered", "cancel_on_disconnect", "references", "valuations", "children",
             "principals", "sent", "marks", "ended", "in_risk", "expiring", "protected",
             "journal_units", "child_symbols")

    def __init__(self, pipeline, ring_size: int = 10_000,
                 client_name: Callable[[str], str] | None = None):
        self.pipeline = pipeline
        self.ring_size = ring_size
        self.client_name = client_name
        self.live_config = pipeline.risk.config
        pipeline.risk.reload(_permissive(self.live_config), 0, "recovery")
        # A fill trimmed from the trade history is noted at the record replayed, the
        # journal's position when the live engine trimmed it (finish puts the live one back).
        self._history_position = pipeline.history._position
        pipeline.history._position = lambda: self.seq
        self.seq = 0        # the last record replayed
        self.hash = b""     # its chain hash (a checkpoint is bound to it)
        self.records = self.fills = 0
        self.max_exec = 0
        self.last_child = 0  # the highest child id the journal names
        self.last_roll_ns = 0  # the time of the last JournalDayRoll (0: none yet)
        # The last new-order command's orders awaiting their first report, by
        # (account, cl_ord_id): see _awaiting_first_report.
        self.new_orders: dict[tuple[str, str], NewOrder] = {}
        self.missing: collections.Counter = collections.Counter()  # (kind, name) -> orders
        # Kill switches: requested (by session and req_id) until their AdminReply
        # (engaged or released if it says ok); engaged ones by (scope, target) until released.
        self.kill_requests: dict[tuple[str, str], KillSwitch] = {}
        self.engaged: dict[tuple[str, str | None], KillSwitch] = {}
        # Cancels and Replaces until their answer: by record number (journal
        # order), and the numbers under each (session, cl_ord_id) the answer names.
        # Each keeps what its order had filled when it arrived: fills journaled
        # after it raced it, and are judged as the pipeline judges them live
        # once the children are down (see _take_up).
        self.requests: dict[int, tuple[str, Cancel | Replace, int, int]] = {}
        self.unanswered: dict[tuple[str, str], collections.deque] = {}
        self.cancel_on_disconnect: dict[str, bool] = {}
        # The last price seen per instrument index (a limit, a fill): what a
        # market order is valued at when the journal holds no valuation of it.
        self.references: dict[int, int] = {}
        self.valuations: dict[int, int] = {}  # order id -> the value risk gave it (JournalValuation)
        self.children: dict = {}  # child id -> Child, until the journal says it is done
        self.principals: dict[str, str] = {}
        self.sent: dict[str, collections.deque] = {}
        self.marks: dict[str, list[tuple[int, int]]] = {}
        # Sessions intake dropped whose JournalSessionEnd is not final (an older engine's)
        self.ended: set[str] = set()
        self.in_risk: set[str] = set()  # sessions registered with risk, not yet released
        self.expiring: set[int] = set()  # orders whose last pull was a DAY's end
        # Market buys the live engine held to their valuation on arrival (Order.protect):
        # from their JournalValuation until their first report recreates them.
        self.protected: set[int] = set()
        # The grids the records read count in: the last JournalUnits (None: none read,
        # the configuration's assumed), and, while they are not the configuration's,
        # the conversion of their ticks and lots, and the symbol of each child made
        # under them (a child's fills and reprices name only the child).
        self.journal_units: dict | None = None
        self._regrid: _Regrid | None = None
        self.child_symbols: dict[int, str] = {}

    def run(self, records: Iterable[Record], until_seq: int | None = None) -> None:
        """Replay ``records``, the journal's from the one after :attr:`seq` on, through
        ``until_seq`` (None: all of them)."""
        pipeline, client_name = self.pipeline, self.client_name
        risk, table = pipeline.risk, pipeline.orders
        decoder = msgspec.msgpack.Decoder(JournalPayload)
        meta_decoder = msgspec.msgpack.Decoder(JournalMeta)
        new_orders, missing = self.new_orders, self.missing
        kill_requests, engaged = self.kill_requests, self.engaged
        requests, unanswered = self.requests, self.unanswered
        cancel_on_disconnect, references = self.cancel_on_disconnect, self.references
        valuations, children, principals = self.valuations, self.children, self.principals
        sent, marks, ended, in_risk = self.sent, self.marks, self.ended, self.in_risk
        expiring, ring_size, protected = self.expiring, self.ring_size, self.protected
        for rec in records:
            if until_seq is not None and rec.seq > until_seq:
                break
            self.seq, self.hash = rec.seq, rec.hash
            self.records = records_read = self.records + 1
            # The trading day as the live engine kept it: entered at the first record and
            # at each roll, and taken from the clock again where the clock went back.
            if records_read == 1:
                pipeline.day_started_at(rec.ts_ns)
            elif rec.ts_ns < pipeline._day_entered:
                pipeline.went_back(rec.ts_ns)
            if rec.kind == RecordKind.META:
                try:
                    known = rec.decode(meta_decoder)
                except msgspec.ValidationError:
                    continue  # another kind of bookkeeping
                if isinstance(known, JournalSession):
                    if known.session_id in ended:
                        # Its JournalSessionEnd is final: intake dropped it and nothing
                        # resumes it (an engine that handed a dropped session's frames
                        # on wrote this; Pipeline.handle now refuses them).
                        log.warning("recovery: journal record %d names session %s again "
                                    "after it ended; ignored", rec.seq, known.session_id)
                        continue
                    _known_session(risk, principals, known.session_id, known.principal,
                                   client_name)
                    pipeline.session_journaled(known.session_id)
                elif isinstance(known, JournalPulled):
                    for order_id in known.order_ids:
                        order = table.by_id.get(order_id)
                        if order is not None and not order.done:
                            order.pull(known.reason, known.text)
                            # (the last pull's word stands, as live: Pipeline._take_down)
                            if known.expire:
                                expiring.add(order_id)
                            else:
                                expiring.discard(order_id)
                elif isinstance(known, JournalSessionEnd):
                    # Intake dropped it: not restored (its orders' later reports
                    # are journaled unnumbered and fill no ring). What the replay
                    # keeps of it goes too, as the live engine let it go: a final
                    # end is the last record naming it (but for those reports),
                    # so nothing of it is needed again; only an older engine's end
                    # is remembered, to ignore the records it could write after it.
                    if known.final:
                        principals.pop(known.session_id, None)
                    else:
                        ended.add(known.session_id)
                    cancel_on_disconnect.pop(known.session_id, None)
                    sent.pop(known.session_id, None)
                    marks.pop(known.session_id, None)
                    # Its risk slot and its journal envelope go, as live
                    # (Pipeline.on_session_forgotten): else both grew with every
                    # session the journal ever held.
                    risk.release_session(known.session_id)
                    in_risk.discard(known.session_id)
                    pipeline.session_unjournaled(known.session_id)
                elif isinstance(known, JournalDayRoll):
                    self.last_roll_ns = rec.ts_ns
                    risk.reset_daily(rec.ts_ns, "recovery")
                    pipeline.day_started_at(rec.ts_ns, rolled=True)
                    _roll(table, known, children, valuations, protected)
                elif isinstance(known, JournalChildren):
                    self.last_child = max(self.last_child, _apply_children(
                        table, children, known, self._regrid, self.child_symbols, rec.seq))
                elif isinstance(known, JournalUnits):
                    self.journal_units = {"money_unit": known.money_unit,
                                          "instruments": dict(known.instruments)}
                    self._regrid = _Regrid.between(self.journal_units, _units(risk))
                else:
                    # (written under other grids: converted where its order's symbol is known)
                    valuations[known.order_id] = (
                        known.value_ticks if self._regrid is None
                        else (known.value_ticks, self._regrid, rec.seq))
                    if known.protect:
                        protected.add(known.order_id)
                continue
            if rec.kind not in (RecordKind.COMMAND, RecordKind.EVENT):
                continue
            try:
                payload = rec.decode(decoder)
            except msgspec.ValidationError:
                payload = _decode_clipped(rec.payload)
            if isinstance(payload, JournalCommand):
                _known_session(risk, principals, payload.session_id, payload.principal,
                               client_name, in_risk)
                req = payload.request
                if isinstance(req, KillSwitch):
                    kill_requests[(payload.session_id, req.req_id)] = req
                elif isinstance(req, (Cancel, Replace)):
                    named = table.find(req.account, req.orig_cl_ord_id)
                    requests[records_read] = (payload.session_id, req,
                                              named.cum_qty if named is not None else 0,
                                              table.rolls)
                    unanswered.setdefault((payload.session_id, req.cl_ord_id),
                                          collections.deque()).append(records_read)
                orders = req.orders if isinstance(req, BulkNewOrders) else \
                    (req,) if isinstance(req, NewOrder) else ()
                if orders:
                    _awaiting_first_report(new_orders, orders)
                continue
            report = payload.event if isinstance(payload, JournalEvent) else None
            if report is not None and report.seq and payload.session_id not in ended:
                ring = sent.get(payload.session_id)
                if ring is None:
                    ring = sent[payload.session_id] = collections.deque(maxlen=ring_size)
                ring.append(report)
                if report.seq % RESEND_MARK_EVERY == 1:
                    marks.setdefault(payload.session_id, []).append((report.seq, rec.seq))
            if isinstance(report, HeartbeatAck):
                cancel_on_disconnect[payload.session_id] = report.cancel_on_disconnect
            if isinstance(report, Reject):
                if report.reject_reason == _R.THROTTLED and payload.session_id not in in_risk \
                        and report.ref_type in ("NewOrder", "BulkNewOrders") \
                        and payload.session_id in principals:
                    # Live, the throttle check registered the session with risk, though
                    # the order was never journaled (Pipeline.handle, _admit).
                    _known_session(risk, principals, payload.session_id,
                                   principals[payload.session_id], client_name, in_risk)
                elif report.ref_type == "KillSwitch" and report.reject_reason == _R.INTERNAL_ERROR:
                    # The pipeline failed on it (intake's answer, which names no req_id:
                    # the session's KillSwitch handled last, as each is answered in its
                    # handling). Risk had flipped the switch before anything that can
                    # fail (a refusal is an AdminReply), so it stands as asked, as live.
                    _settle_kill(kill_requests, engaged, next(
                        (key for key in reversed(kill_requests) if key[0] == payload.session_id),
                        None), True)
            answered = _answered(report, payload.session_id, requests, unanswered)
            if answered is not None:
                _spend(pipeline, answered, report)
            if isinstance(report, AdminReply):
                _settle_kill(kill_requests, engaged, (payload.session_id, report.req_id),
                             report.ok)
            if not isinstance(report, ExecutionReport):
                continue
            try:
                self.fills += _apply(pipeline, payload.session_id, report, new_orders,
                                     rec.ts_ns, missing, references, valuations, protected)
            except ValueError as exc:  # (ext.instrument.ConversionError, _px_x2)
                # A price or quantity the journal holds that the configured grid cannot
                # take: the grid changed on this journal. One line, not a traceback.
                raise _grid_refusal(rec.seq, f"{report.symbol} order {report.order_id}",
                                    report.symbol, str(exc)) from exc
            if report.exec_id:
                self.max_exec = max(self.max_exec, int(report.exec_id.rpartition("-")[2] or 0))

    def finish(self) -> Recovered:
        """The replay is at the journal's end: hand the state over to the live engine (the
        real limits, the next ids) and say what was found."""
        pipeline = self.pipeline
        risk, table = pipeline.risk, pipeline.orders
        pipeline.history._position = self._history_position
        # A journal written before Pipeline.handle refused a dropped session's requests
        # can hold commands of a session after its JournalSessionEnd, which registered
        # it with risk again: let it go (freed with its last order), as nothing resumes it.
        for session_id in self.ended:
            risk.release_session(session_id)
        if self.missing:
            raise RecoveryError(
                "the journal holds accepted orders for "
                + ", ".join(f"{what} {name!r} ({n} orders)"
                            for (what, name), n in self.missing.items())
                + ", which the configuration no longer has. Starting without them would drop "
                  "their orders, fills and exposure and reuse their order ids: put them back in "
                  "the configuration (a new journal directory starts empty)")
        pipeline._exec_id = self.max_exec
        # Those still working end EXPIRED at resume_working (_finish_pulled), not CANCELED.
        # (One the table no longer holds was done.)
        pipeline._expiring.update(order_id for order_id in self.expiring
                                  if order_id in table.by_id and not table.by_id[order_id].done)
        # Every child the journal names is done: the venues did not outlive the
        # engine (working orders are routed again, under ids above every one the
        # journal names, forgotten orders' included: table.create keeps
        # next_order_id above every order id, and last_child counts children).
        for order in table.by_id.values():
            for child in order.children.values():
                child.done = True
        pipeline.router.skip_child_ids(self.last_child + 1)
        # The replay set the references its orders were valued at; from here on
        # only the market's quotes do, as in a live engine that has seen none yet
        # (NO_REFERENCE_PRICE until a two-sided quote, not a replayed limit price).
        risk.clear_reference_prices()
        risk.reload(self.live_config, time.time_ns(), "recovery")
        _hold_market_buys(table, risk)
        # A session whose key the journal does not name (written before sessions
        # were journaled) is not restored: guessing "plaintext" would hand a CURVE
        # client's session to whoever resumes it on the plaintext endpoint.
        sent, principals = self.sent, self.principals
        unknown = [sid for sid in sent if sid not in principals]
        if unknown:
            log.warning("recovery: %d sessions without a journaled key not restored (e.g. %s)",
                        len(unknown), unknown[0])
        sessions = [RecoveredSession(sid, principals[sid], ring[-1].seq, list(ring),
                                     self.cancel_on_disconnect.get(sid, False),
                                     self.marks.get(sid, []))
                    for sid, ring in sent.items() if sid in principals]
        return Recovered(self.records, len(table), len(table.working()), self.fills, sessions,
                         self.engaged, list(self.requests.values()), self.journal_units)

    def save(self) -> bytes:
        """The replay's state after record :attr:`seq`, as bytes for :meth:`load`.

        Pickled in one piece, so that what two structures share (a child in
        its order and in ``children``, an order under several ids) is still
        shared when loaded; each msgspec struct in it as its msgpack bytes
        (:class:`_StatePickler`).
        """
        with _collector_paused():
            return _dumps(self.state())

    def state(self) -> dict:
        """What :meth:`save` pickles: the replay's :attr:`SAVED` attributes and the
        pipeline's state they go with (the objects themselves, not copies)."""
        pipeline = self.pipeline
        return {
            "replay": {name: getattr(self, name) for name in self.SAVED},
            "orders": pipeline.orders.__dict__,
            "history": pipeline.history._accounts,
            "risk": pipeline.risk.snapshot(),
            "day": (pipeline._day_entered, pipeline._roll_taken, pipeline._next_roll),
            "trading_day": pipeline.trading_day.settings(),
            "sessions": list(pipeline._event_envelopes),
            "units": _units(pipeline.risk),
        }

    def load(self, data: bytes | memoryview) -> None:
        """Take up the state :meth:`save` gave, on a replay that has read nothing yet.

        Accounts and instruments added to the configuration since are taken in
        (risk's state is renumbered by name), and one removed that the state
        holds nothing of is left out.

        Raises
        ------
        ValueError
            The state cannot be taken up here, and nothing was changed: it
            does not unpickle (another version's), it holds orders or risk
            state of an account or instrument the configuration no longer has,
            or its replay had met accepted orders it could not take (a
            configuration without their account wrote it); a replay of the
            whole journal then decides whether the engine can start.
        RecoveryError
            Risk refused the state after all checks passed (a defect): the
            engine does not start on a half-loaded risk engine; moving the
            checkpoints away replays the whole journal.
        """
        if self.records:
            raise RuntimeError("a checkpoint loads into a replay that has read nothing")
        pipeline = self.pipeline
        risk = pipeline.risk
        blank = risk.snapshot()
        try:
            with _collector_paused():
                state = pickle.loads(data)
            replay, orders, history = state["replay"], state["orders"], state["history"]
            snap, instruments = _renumbered(state["risk"], blank)
            day, schedule, sessions = state["day"], state["trading_day"], state["sessions"]
            # (A checkpoint written before the units were kept holds none: not checked.)
            _check_units(state.get("units"), _units(risk))  # (risk: the configuration's)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever another version's pickle raises
            raise ValueError(f"its state cannot be read by this version ({type(exc).__name__}: "
                             f"{exc})") from None
        if replay["missing"]:
            (what, name), n = next(iter(replay["missing"].items()))
            raise ValueError(f"it was written by a replay that could not take {n} accepted "
                             f"orders of {what} {name!r} (a configuration without it)")
        configured = pipeline._venue_account
        for order in orders["by_id"].values():
            if order.stage != Stage.REJECTED and (order.account not in configured
                                                  or order.symbol not in pipeline.instruments):
                raise ValueError(f"it holds orders of account {order.account!r} or instrument "
                                 f"{order.symbol!r}, which the configuration no longer has")
        gone = sorted(orders["accounts_forgotten"] - set(configured))
        if gone:
            raise ValueError(f"it holds orders of account {gone[0]!r}, which the configuration "
                             f"no longer has")
        try:
            risk.restore(snap)
        except Exception as exc:
            raise RecoveryError(f"risk refused a checkpoint's state ({exc}); move the "
                                f"checkpoints directory away to replay the whole journal") from exc
        replay["references"] = {instruments[ix]: price for ix, price
                                in replay["references"].items() if instruments[ix] is not None}
        for name, value in replay.items():
            setattr(self, name, value)
        # (its records after it still count in the grids the journal last named)
        self._regrid = _Regrid.between(self.journal_units, _units(risk))
        if any(ring.maxlen != self.ring_size for ring in self.sent.values()):
            # (intake.resend_ring_size changed: the rings take the new size)
            self.sent = {sid: collections.deque(ring, maxlen=self.ring_size)
                         for sid, ring in self.sent.items()}
        pipeline.orders.__dict__.update(orders)
        pipeline.history._accounts = history
        pipeline.history.bound()  # (a checkpoint written under a larger bound)
        if self.client_name is not None:
            # A client key renamed since the checkpoint: its sessions draw on the
            # throttle of the name the configuration gives the key now, as a replay
            # of the whole journal registers them (risk's snapshot has the old name).
            principals = self.principals
            for session_id in self.in_risk:
                if session_id in principals:
                    risk.session_index(session_id, self.client_name(principals[session_id]))
        entered, taken, next_roll = day
        pipeline._day_entered, pipeline._roll_taken, pipeline._next_roll = entered, taken, next_roll
        if schedule != pipeline.trading_day.settings():
            # Another trading-day schedule: the roll instants are the new schedule's,
            # as a replay of the whole journal under it takes them.
            if self.last_roll_ns:
                pipeline._roll_taken = pipeline.trading_day.last_roll(self.last_roll_ns)
            pipeline._next_roll = pipeline.trading_day.next_roll(entered)
        for session_id in sessions:
            pipeline.session_journaled(session_id)


def _units(risk) -> dict:
    """The units a replay's state is counted in: risk's money unit, and the tick and lot
    size (decimal text) of each of its instruments' grids, as risk read them."""
    from ext.risk import DEFAULT_MONEY_UNIT
    return {"money_unit": str(risk.config.get("firm", {}).get("money_unit", DEFAULT_MONEY_UNIT)),
            "instruments": {symbol: (risk.instrument(symbol).tick_size,
                                     risk.instrument(symbol).lot_size)
                            for symbol in risk.instruments}}


def _check_units(saved: dict | None, now: dict) -> None:
    """Raise ValueError unless a checkpoint's units (``saved``; None: a checkpoint written
    before they were kept) are the configuration's, for every instrument both know.

    Prices are held in ticks, quantities in lots and money in the money unit
    (order terms, risk's books, reservations): a checkpoint taken under another
    tick or lot size or money unit would load prices, quantities and cash
    counted in the old units and read them in the new ones (an order at
    50.10 in ticks of 0.01 routed again at 25.05 in ticks of 0.005), where a
    replay of the journal, whose messages hold decimals, converts them
    afresh. Such a checkpoint is skipped: the whole journal is replayed.
    """
    if saved is None:
        return
    if Decimal(saved["money_unit"]) != Decimal(now["money_unit"]):
        raise ValueError(f"it counts money in units of {saved['money_unit']}, and the "
                         f"configuration in units of {now['money_unit']} (firm.money_unit)")
    for symbol, (tick, lot) in saved["instruments"].items():
        current = now["instruments"].get(symbol)
        if current is None:
            continue  # (an instrument removed: risk's renumbering decides)
        for key, was, is_now in (("tick_size", tick, current[0]), ("lot_size", lot, current[1])):
            if Decimal(was) != Decimal(is_now):
                raise ValueError(f"it was taken with {symbol}'s {key} {was}, and the "
                                 f"configuration has {is_now}: its prices and quantities are "
                                 f"counted in the old units")


def _dumps(state) -> bytes:
    """``state`` pickled by :class:`_StatePickler` (what :meth:`Replay.save` returns)."""
    out = io.BytesIO()
    _StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return out.getvalue()


class _StatePickler(pickle.Pickler):
    """A pickler that writes each msgspec struct of the replay's state as its msgpack
    bytes, to be decoded by its type's ``msgspec.msgpack.Decoder`` (plain
    ``pickle.loads`` reads the result).

    Why: msgspec pickles a struct as its class and a dict of its fields, which
    pickle writes and reads back one field at a time. The state holds a report
    per order (``last_report``, 24 fields), the sessions' resend rings, the
    trade history's fills and the requests: those dicts were about half of
    pickling and unpickling it. msgspec's encoder and decoder do that work in
    C. Each packed struct is pickled as a call of its type's decoder's bound
    ``decode`` method, the same method object for every struct of the type:
    pickle writes it once (the decoder as ``Decoder(type)``) and refers to it
    after, and loading calls it with no Python function in between (a Python
    rebuilding function cost most of what the packing saved on loading:
    ``benchmarks/bench_recovery.py``).

    Left to pickle: a struct whose class pickles its own way (defines
    ``__reduce__``: :class:`~engine.orders.Order`, whose fields are pickled
    by name, its report among them packed) or has a ``__post_init__``
    (decoding runs it; unpickling does not). Sharing is kept: pickle's memo
    writes a struct referenced twice (a child in its order and in
    ``Replay.children``) once, as it does any object. A struct inside a
    packed one is packed with it and comes back a copy of its own; the
    state's packed structs hold none that is shared elsewhere
    (``tests/integration/test_checkpoint.py`` holds the state's every struct
    type to an exact round trip).
    """

    def reducer_override(self, obj):
        """A msgspec struct's packed form, a decoder's (``Decoder(type)``);
        ``NotImplemented`` (pickle's own way) for anything else."""
        cls = type(obj)
        decode = _DECODES.get(cls)
        if decode is None:
            packs = (issubclass(cls, msgspec.Struct) and cls.__reduce__ is msgspec.Struct.__reduce__
                     and not hasattr(cls, "__post_init__"))
            decode = _DECODES[cls] = msgspec.msgpack.Decoder(cls).decode if packs else False
        if decode:
            return decode, (_ENCODER.encode(obj),)
        if cls is msgspec.msgpack.Decoder:
            return msgspec.msgpack.Decoder, (obj.type,)
        return NotImplemented


_ENCODER = msgspec.msgpack.Encoder()
#: Per type: the bound ``decode`` of the decoder :class:`_StatePickler` packs it for (one
#: object per type, made at its first use), or False: not packed (the rule in its docstring).
_DECODES: dict[type, Callable | bool] = {}


@contextlib.contextmanager
def _collector_paused():
    """The cyclic garbage collector off for the block (back on after it, if it was on).

    Pickling or unpickling a checkpoint makes millions of objects and no
    reference cycle: the collections their allocations trigger find nothing,
    and doubled the time of both (``benchmarks/bench_recovery.py --gc``).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _renumbered(snap: dict, blank: dict) -> tuple[dict, list]:
    """Risk's ``snapshot()`` ``snap`` numbered as the engine whose fresh snapshot is
    ``blank``, and the instruments' new numbers (old index -> new index, None: gone).

    Risk numbers accounts and instruments in the configuration's order: an
    account or instrument added since moves the others. ``blank`` gives the
    engine's names, and the state of those ``snap`` does not have. One the
    configuration no longer has is left out if ``snap`` holds nothing of it
    (no order, position, cash flow, duplicative entry); if it does, ValueError.
    """
    numbering = []
    for kind in ("accounts", "instruments"):
        now = {name: ix for ix, name in enumerate(blank[kind])}
        numbering.append([now.get(name) for name in snap[kind]])
    acct, inst = numbering
    if snap["accounts"] == blank["accounts"] and snap["instruments"] == blank["instruments"]:
        return snap, inst
    used_acct = {row[0] for row in snap["cells"]} | {row[2] for row in snap["orders"]} \
        | {row[0] for row in snap["duplicative"]}
    used_inst = {row[1] for row in snap["cells"]} | {row[3] for row in snap["orders"]} \
        | {row[1] for row in snap["duplicative"]}
    for kind, mapping, used, state in (
            ("account", acct, used_acct, lambda a: any(snap["account_state"][a])
             or snap["account_killed"][a]),
            ("instrument", inst, used_inst, lambda i: any(snap["instrument_state"][i]))):
        for old, new in enumerate(mapping):
            if new is None and (old in used or state(old)):
                raise ValueError(f"it holds {kind} {snap[kind + 's'][old]!r}, which the "
                                 f"configuration no longer has")
    out = dict(snap, accounts=blank["accounts"], instruments=blank["instruments"])
    for key, mapping in (("account_state", acct), ("account_killed", acct),
                         ("instrument_state", inst)):
        rows = list(blank[key])
        for old, row in enumerate(snap[key]):
            if mapping[old] is not None:
                rows[mapping[old]] = row
        out[key] = rows
    out["cells"] = [[acct[row[0]], inst[row[1]], *row[2:]] for row in snap["cells"]]
    out["orders"] = sorted([*row[:2], acct[row[2]], inst[row[3]], *row[4:]]
                           for row in snap["orders"])
    out["duplicative"] = sorted([acct[row[0]], inst[row[1]], *row[2:]]
                                for row in snap["duplicative"])
    return out, inst


def recover(pipeline, journal_dir, ring_size: int = 10_000,
            client_name: Callable[[str], str] | None = None, *,
            checkpoints: bool = False) -> Recovered:
    """Replay the journal in ``journal_dir`` into ``pipeline``; returns a summary.

    ``ring_size``: how many of each session's last messages to keep for
    resends (intake's ``resend_ring_size``). ``client_name``: the client
    name of a principal, as intake gives it (``engine.intake.client_names``):
    each session is registered with risk under its key's throttle bucket, as
    live (None: under a bucket of its own, for tests of the replay alone).
    ``checkpoints``: start from the newest usable checkpoint of the journal
    (:mod:`engine.checkpoint`) and replay only what follows it.
    Nothing is sent to any client or venue: once the sessions are restored,
    :func:`resume_working` takes the working orders back to the market.
    """
    replay = Replay(pipeline, ring_size, client_name)
    loaded = None
    if checkpoints:
        from engine.checkpoint import load_newest  # (it builds on this module)
        loaded = load_newest(replay, journal_dir)
    check_whole(journal_dir, replay.seq)
    replay.run(loaded.records if loaded is not None else JournalReader(journal_dir).records(1))
    result = replay.finish()
    if replay.records:
        summary = result.summary()
        # Each count also as a field of its own, for a JSON log's readers.
        log.info("recovery: %s", ", ".join(f"{k} {v}" for k, v in summary.items()),
                 extra={f"recovered_{k}": v for k, v in summary.items()})
    return result


def _roll(table, record: JournalDayRoll, children: dict, valuations: dict,
          protected: set) -> None:
    """Replay a day roll into the order table, as ``Pipeline.roll_day`` did it live.

    The table forgets what the live engine forgot there (the record carries
    the ``keep_done_days`` then in force). Replay state that only forgotten
    orders could use goes too, so that the replay's memory follows the
    table's: their children's entries, and the valuations of orders refused after
    risk valued them (an accepted order's is taken when its report is replayed).
    """
    by_id = table.by_id
    for order_id in [i for i in valuations if i in by_id and by_id[i].done]:
        del valuations[order_id]
    protected.difference_update([i for i in protected if i in by_id and by_id[i].done])
    for order in table.roll(record.keep_done_days):
        for child_id in order.children:
            children.pop(child_id, None)


def _awaiting_first_report(new_orders: dict, orders: Iterable[NewOrder]) -> None:
    """Keep a new-order command's ``orders`` in ``new_orders`` for their first report
    (NEW or REJECTED, which recreates each in the table: :func:`_apply`), in place of
    whatever the last such command left there.

    The pipeline answers each order of a command in its handling, before it
    journals the next command: an order left over from an earlier command never
    gets a first report. It was refused as a duplicate (a ``Reject``, its only
    answer) or its report was lost with a torn write (its client, never
    acknowledged, may send the id again, with other terms). Kept, such an order
    would be recreated with its own terms for the next use of its id (once the
    id is forgotten, or sent again), whatever the replay's view of which ids are
    spent. Under an id a command names twice, its first order is the one the id
    names (the later one, a duplicate inside the same bulk, was refused).
    """
    new_orders.clear()
    for order in orders:
        new_orders.setdefault((order.account, order.cl_ord_id), order)


def _apply_children(table, children: dict, record: JournalChildren,
                    regrid: _Regrid | None = None, child_symbols: dict | None = None,
                    seq: int = 0) -> int:
    """Replay a ``JournalChildren`` record into the orders' children (``children``: every
    child so far by id, the ids the later records name). Returns the highest child id
    the record makes (0: none), whether or not its order is still held.

    ``regrid``: the record was written under other grids (``JournalUnits``): its
    prices and quantities are converted, the symbol of each child it makes kept in
    ``child_symbols`` for its later fills and reprices; ``seq``, its record."""
    by_id = table.by_id
    for child_id, parent_id, venue, price, qty in record.new:
        order = by_id.get(parent_id)
        if order is not None:
            if regrid is not None:
                child_symbols[child_id] = order.symbol
                price = regrid.ticks(order.symbol, price, seq)
                qty = regrid.lots(order.symbol, qty, seq)
            order.children[child_id] = children[child_id] = Child(child_id, venue, price, qty)
    for child_id in record.acked:
        child = children.get(child_id)
        if child is not None:
            child.acked = True
    for child_id, qty in record.fills:
        child = children.get(child_id)
        if child is not None:
            if regrid is not None and child_id in child_symbols:
                qty = regrid.lots(child_symbols[child_id], qty, seq)
            child.cum_qty += qty
            child.acked = True  # (as the pipeline books a fill)
    for child_id, price, qty in record.repriced:
        child = children.get(child_id)
        if child is not None:
            if regrid is not None and child_id in child_symbols:
                symbol = child_symbols[child_id]
                price, qty = regrid.ticks(symbol, price, seq), regrid.lots(symbol, qty, seq)
            child.price, child.qty = price, qty
    for child_id in record.done:
        child = children.pop(child_id, None)
        if child is not None:
            child.done = True
        if child_symbols:
            child_symbols.pop(child_id, None)
    return max((new[0] for new in record.new), default=0)


class _Regrid:
    """Converts the ticks and lots of journal records written under other grids (the
    journal's last ``JournalUnits``) to the configured ones, exactly.

    The journal's messages hold decimals, converted afresh by a replay under
    any grid; its ``JournalValuation`` and ``JournalChildren`` records hold
    integers of the grid they were written under. A value the configured grid
    cannot hold (51.97 under a tick of 0.05) stops the start, as a message's
    decimal would: the configuration's grid does not fit the journal.
    """

    __slots__ = ("factors",)

    def __init__(self, factors: dict):
        #: symbol -> (old tick / new tick, old lot / new lot), for the symbols whose grid differs
        self.factors = factors

    @classmethod
    def between(cls, written: dict | None, configured: dict) -> _Regrid | None:
        """The conversion from ``written`` (a JournalUnits' grids; None: none recorded,
        the configuration's assumed) to ``configured`` (:func:`_units`), or None when no
        instrument both know changed."""
        if written is None:
            return None
        factors = {}
        for symbol, (tick, lot) in written["instruments"].items():
            now = configured["instruments"].get(symbol)
            if now is not None and (Decimal(tick) != Decimal(now[0])
                                    or Decimal(lot) != Decimal(now[1])):
                factors[symbol] = (Fraction(Decimal(tick)) / Fraction(Decimal(now[0])),
                                   Fraction(Decimal(lot)) / Fraction(Decimal(now[1])))
        return cls(factors) if factors else None

    def ticks(self, symbol: str, value: int, seq: int) -> int:
        """``value`` ticks of ``symbol`` as written, in configured ticks."""
        return self._convert(symbol, value, 0, "price", seq)

    def lots(self, symbol: str, value: int, seq: int) -> int:
        """``value`` lots of ``symbol`` as written, in configured lots."""
        return self._convert(symbol, value, 1, "quantity", seq)

    def _convert(self, symbol: str, value: int, which: int, what: str, seq: int) -> int:
        factors = self.factors.get(symbol)
        if factors is None:
            return value
        converted = value * factors[which]
        if converted.denominator != 1:
            key = ("tick_size", "lot_size")[which]
            raise _grid_refusal(seq, symbol, symbol, f"a {what} of {value} of the journal's "
                                f"{key} is not a whole number of the configuration's {key}")
        return int(converted)


def _grid_refusal(seq: int, subject: str, symbol: str, detail: str) -> RecoveryError:
    """The refusal to start on a journal record (``seq``, about ``subject``) holding a
    value of ``symbol`` that the configured grid cannot take (``detail`` says which)."""
    return RecoveryError(
        f"journal record {seq} ({subject}): {detail}; the configuration's tick or lot size "
        f"of {symbol} does not fit what the journal holds (units cannot change on a "
        f"journal: put them back, or start a new journal directory)")


def record_units(pipeline, recovered: Recovered) -> bool:
    """Write a ``JournalUnits`` record of the configuration's grids unless the journal's
    last one says the same (a journal that has none gets one). Call it after
    :func:`recover` and before anything else of the run is journaled: the ticks and
    lots the run's records hold are then read in their own grid by a later replay,
    whatever its configuration. Returns whether a record was written."""
    configured = _units(pipeline.risk)
    if recovered.journal_units is not None and \
            _grid_key(recovered.journal_units) == _grid_key(configured):
        return False
    pipeline.journal.append_msg(RecordKind.META, JournalUnits(
        money_unit=configured["money_unit"], instruments=configured["instruments"]))
    return True


def _grid_key(units: dict) -> tuple:
    """``units`` (:func:`_units`' shape) with its decimals as numbers: "0.010" is 0.01."""
    return (Decimal(units["money_unit"]),
            sorted((symbol, Decimal(tick), Decimal(lot))
                   for symbol, (tick, lot) in units["instruments"].items()))


def resume_working(pipeline, recovered: Recovered) -> int:
    """Roll the trading day if it ended while the engine was down (its DAY orders expire),
    take up the unanswered Cancels and Replaces, engage the journal's kill switches again,
    then route the working orders again.

    Call it once the recovered sessions are in ``pipeline.sessions``: the
    reports it makes are then numbered in their sessions and kept for
    resends. Returns how many orders went back to the market.
    """
    now = time.time_ns()
    if now >= pipeline._next_roll:
        # Down across a roll: the engine rolls now, before anything goes back to
        # the market, so the DAY orders of the day that ended are expired (taken
        # down here, finished by _finish_pulled) rather than routed again, and a
        # Replace taken up for one is refused as it would be live.
        pipeline.roll_day(now)
    _take_up(pipeline, recovered.in_flight, now)
    _finish_pulled(pipeline, now)
    _restore_kill_switches(pipeline, recovered.kill_switches)
    rerouted = _reroute(pipeline)
    rerouted += _finish_in_flight(pipeline, now)
    if recovered.working:
        log.info("recovery: %d of %d working orders routed again", rerouted, recovered.working)
    return rerouted


def _answered(msg, session_id: str, requests: dict, unanswered: dict) -> tuple | None:
    """The journaled Cancel or Replace that ``msg``, sent to ``session_id``, answers (its
    entry of ``requests``: session, request, filled then, day), or None.

    An answer names the request's cl_ord_id: a ``Reject`` of it, or a report
    of its order with ``orig_cl_ord_id`` set (CANCELED, REPLACED, or REJECTED
    when refused). A ``Reject`` answers at once, so it answers the latest
    request under that id (a resent duplicate); a report, the first.
    """
    if isinstance(msg, Reject):
        if msg.ref_type not in ("Cancel", "Replace"):
            return None
    elif not (isinstance(msg, ExecutionReport) and msg.orig_cl_ord_id is not None
              and msg.exec_type in _ANSWERS):
        return None
    key = (session_id, msg.cl_ord_id)
    waiting = unanswered.get(key)
    if not waiting:
        return None
    number = waiting.pop() if isinstance(msg, Reject) else waiting.popleft()
    if not waiting:
        del unanswered[key]
    return requests.pop(number)


def _spend(pipeline, answered: tuple, answer) -> None:
    """Spend an answered request's cl_ord_id again, as the pipeline did on its arrival
    (``answered``: its entry of recovery's ``requests``, the day it arrived in last).

    In the order table (a duplicate's id was spent already, by its first
    use: one still in flight keeps it free until it is taken up again); and
    at risk for a replace refused by risk's own checks, which record the id
    even when they refuse (an accepted replace records it when replayed).
    """
    req, arrived_in = answered[1], answered[3]
    reason = answer.reject_reason
    if not (isinstance(answer, Reject) and reason == _R.DUPLICATE_CL_ORD_ID):
        pipeline.orders.reserve(req.account, req.cl_ord_id, spent_in=arrived_in)
    if isinstance(req, Replace) and isinstance(answer, ExecutionReport) \
            and answer.exec_type == ExecType.REJECTED and reason in _RISK_JUDGED_REPLACE:
        order = pipeline.orders.by_id.get(int(answer.order_id))
        working = pipeline.risk.working_order(order.order_id) if order is not None else None
        if working is not None:
            # Under the slot risk holds the order in, as on_replace records it live: by
            # the session's name, a session intake dropped since (its slot kept for
            # this order, the name let go) would be registered again in a new slot.
            pipeline.risk.record_cl_ord_id(working["session"],
                                           cl_ord_hash(req.cl_ord_id, order.account))


def _apply(pipeline, session_id: str, report: ExecutionReport, new_orders: dict,
           ts: int, missing: collections.Counter, references: dict, valuations: dict,
           protected: set) -> int:
    """Apply one journaled execution report; returns 1 for a fill.

    An accepted order whose instrument or account the configuration no
    longer has is counted in ``missing`` (recovery then refuses to start).
    """
    table, risk = pipeline.orders, pipeline.risk
    order = table.by_id.get(int(report.order_id))
    inst = pipeline.instruments.get(report.symbol)
    if order is None:
        # The first report of an order: NEW (accepted) or REJECTED (refused).
        req = new_orders.get((report.account, report.cl_ord_id))
        if req is None or report.orig_cl_ord_id is not None:
            return 0
        rejected = report.exec_type == ExecType.REJECTED
        if not rejected:
            # (A refused order keeps its id and needs neither: it may have been
            # refused for naming an unknown symbol or account.)
            if inst is None:
                missing["instrument", report.symbol] += 1
                return 0
            if report.account not in pipeline._venue_account:
                missing["account", report.account] += 1
                return 0
        # A refused order's price or quantity may be exactly why it was
        # refused (off tick, off lot): it is recreated with none. (Its journaled
        # report, kept as last_report below, still shows the price it was sent.)
        order = table.create(report.cl_ord_id, session_id, report.account, report.symbol,
                             int(req.side), int(req.ord_type), int(req.time_in_force),
                             inst.price_to_ticks(req.price) if req.price and not rejected else 0,
                             0 if rejected else inst.qty_to_lots(req.qty), ts,
                             order_id=int(report.order_id))
        # (Needed no more: a later report finds the order.)
        del new_orders[report.account, report.cl_ord_id]
        order.post_only = req.post_only
        strategy = pipeline.strategy_of(req)
        if strategy is not None:
            order.strategy = strategy
        order.schedule = order_schedule(req)
        if req.stp is not None:
            order.stp = int(req.stp)
        order.last_report = report
        if rejected:
            reason = report.reject_reason
            if reason not in _REFUSED_UNVALIDATED:
                # It reached risk, as its path shows, and spent its cl_ord_id
                # there even though refused (but for the throttle, risk's first
                # check: a THROTTLED order is in journals written before the
                # engine judged the throttle ahead of taking the order); a
                # refusal of routing it came after risk passed it.
                order.advance(Stage.VALIDATED, ts)
                if reason in _REFUSED_ROUTING or reason >= _R.NO_ROUTE:
                    order.advance(Stage.RISK_CHECKED, ts)
                if reason != _R.THROTTLED:
                    risk.record_cl_ord_id(risk.session_index(session_id),
                                          cl_ord_hash(report.cl_ord_id, report.account))
            order.reject(reason, report.text or "", ts)
            return 0
        for stage in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
            order.advance(stage, ts)
        # The decision was taken when the order arrived; with the limits
        # out, only the price risk values it at is needed.
        inst_ix = risk.instrument_index(order.symbol)
        if order.price:
            references[inst_ix] = order.price
        value = _valued_at(order, order.price, inst_ix, valuations, references)
        if order.order_id in protected:
            # Held to it on arrival, as live (Pipeline._protect): its remainder, routed
            # again after the restart, takes nothing above it.
            protected.discard(order.order_id)
            order.protect = value
        risk.set_reference_price(inst_ix, value, ts)
        code = risk.check_new(order.order_id, risk.session_index(session_id),
                              risk.account_index(order.account),
                              inst_ix, order.side, order.ord_type,
                              order.qty, order.price, risk_flags(req) | _REPLAYED,
                              cl_ord_hash(order.cl_ord_id, order.account), ts)
        if code:
            log.error("recovery: risk refused replaying order %s (%s)", order.order_id, code)
        return 0
    if report.exec_type == ExecType.REJECTED:
        # A refused cancel or replace: the order is as it was (and its last
        # report, which answers status requests, stays the one before).
        return 0
    if session_id == order.session_id:
        # (Status requests get the report as the order's session got it, seq
        # included; a requester in another session had its own copy.)
        order.last_report = report
    if report.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL):
        qty, px_x2 = inst.qty_to_lots(report.last_qty), _px_x2(inst, report.last_px)
        order.fill(qty, px_x2, ts)
        references[risk.instrument_index(order.symbol)] = px_x2 // 2
        risk_fill(risk, order, qty, fill_ticks(order.side, px_x2))
        # (side: the Side its type says, not the order's plain int, so that a checkpoint
        # gives back the same value: it decodes a TradeFill by its type, _StatePickler)
        pipeline.history.add(order.account, TradeFill(
            exec_id=report.exec_id or "", order_id=report.order_id, cl_ord_id=order.cl_ord_id,
            symbol=order.symbol, side=Side(order.side), last_qty=report.last_qty,
            last_px=report.last_px, transact_time=report.transact_time, venue=report.venue))
        return 1
    if report.exec_type in (ExecType.CANCELED, ExecType.EXPIRED) and not order.done:
        if report.cl_ord_id != order.cl_ord_id:
            table.alias(order, report.cl_ord_id)
        order.advance(Stage.CANCELED if report.exec_type == ExecType.CANCELED else Stage.EXPIRED,
                      ts)
        risk.on_cancel(order.order_id)
    elif report.exec_type == ExecType.REPLACED and not order.done \
            and report.cl_ord_id != order.cl_ord_id:  # (else the requester's copy: applied)
        new_qty = inst.qty_to_lots(report.qty)
        new_price = inst.price_to_ticks(report.price) if report.price else order.price
        # As at arrival: the new terms are valued at what risk gave them live.
        inst_ix = risk.instrument_index(order.symbol)
        risk.set_reference_price(inst_ix, _valued_at(order, new_price, inst_ix, valuations,
                                                     references), ts)
        risk.on_replace(order.order_id, new_qty, new_price,
                        cl_ord_hash(report.cl_ord_id, order.account), ts)
        table.alias(order, report.cl_ord_id)
        order.qty, order.price = new_qty, new_price
    return 0


def _settle_kill(kill_requests: dict, engaged: dict, key: tuple[str, str] | None,
                 taken: bool) -> None:
    """A journaled KillSwitch (``key``: its session and req_id in ``kill_requests``; None:
    none) was answered: either way the request is done with; ``taken``, its switch is
    engaged or released in ``engaged`` as it asked."""
    kill = kill_requests.pop(key, None) if key is not None else None
    if kill is not None and taken:
        scope = (kill.scope, kill.target if kill.scope != "global" else None)
        if kill.action == "engage":
            engaged[scope] = kill
        else:
            engaged.pop(scope, None)


def _valued_at(order, price: int, inst_ix: int, valuations: dict, references: dict) -> int:
    """The reference price at which risk, its limits out, values ``order`` (at ``price``) as live.

    With no collar risk values a market order at the reference, and a sell
    at the higher of its limit and the reference: so the value risk gave the
    order live (its JournalValuation, taken once), else its own limit, else
    (a market order in a journal written without valuations) the last price
    the journal shows for the instrument.
    """
    value = valuations.pop(order.order_id, None)
    if type(value) is tuple:  # (ticks, _Regrid, record): written under other grids
        value = value[1].ticks(order.symbol, value[0], value[2])
    value = value or price or references.get(inst_ix)
    if value is None:
        log.warning("recovery: market order %s has no earlier price of %s in the journal; "
                    "valued at one tick until the market gives one", order.order_id, order.symbol)
        value = 1
    return value


def _finish_pulled(pipeline, now: int) -> None:
    """Cancel the orders the engine had pulled (``JournalPulled``) whose venue cancels had
    not come back at the stop: a kill switch released since, or cancel-on-disconnect,
    had decided that they leave the market, and they are not routed again. DAY orders
    whose trading day had ended (``JournalPulled.expire``) end EXPIRED instead, as they
    would have live. One with a Cancel taken up again is left to it (its CANCELED
    answers the Cancel)."""
    for order in pipeline.orders.working():
        if order.pulled is not None and order.order_id not in pipeline._pending:
            if order.order_id in pipeline._expiring:
                pipeline.expire_working(order, now, order.pulled[1])
            else:
                pipeline.cancel_working(order, now, text=order.pulled[1])


def _restore_kill_switches(pipeline, engaged: dict) -> None:
    """Engage again the kill switches the journal leaves engaged.

    Before the working orders are routed again: an order in scope that was
    still working at the crash (its venue cancels had not come back) is
    canceled, not sent back to the market.
    """
    now = time.time_ns()
    for (scope, target), req in engaged.items():
        try:
            keys = pipeline.risk.engage_kill_switch(
                RISK_SCOPE[scope], target, now_ns=now, actor="recovery",
                reason=f"engaged before the restart by {req.req_id}"
                       + (f": {req.text}" if req.text else ""))
        except KeyError:  # a symbol or account the configuration no longer has
            log.warning("recovery: kill switch %s %s not restored: unknown %s", scope, target,
                        scope)
            continue
        text = f"kill switch ({kill_switch_scope(scope, target)}) engaged before the restart"
        for order_id in keys:
            order = pipeline.orders.by_id.get(int(order_id))
            if order is None or order.done:
                continue
            if order.order_id in pipeline._pending:
                # A Cancel or Replace is taking it down: as live, the Cancel's
                # CANCELED will answer it, a Replace is refused and it canceled.
                pipeline._pull((order.order_id,), now, _R.KILL_SWITCH, text)
            else:
                pipeline.cancel_working(order, now, text=text)


def _reroute(pipeline) -> int:
    """Send the working orders' remainders to the venues again.

    One that cannot go (the router refuses it, or a post-only order would
    now take liquidity) is canceled and its client told, rather than left
    working with nothing at any venue. An immediate one (IOC or market, not
    on a schedule) is canceled without trying: it was meant to trade at the market its sender
    saw when it arrived, not at whatever market there is after a restart.
    """
    now = time.time_ns()
    n = 0
    for order in pipeline.orders.working():
        if order.order_id in pipeline._pending:
            continue  # (a Cancel or Replace in flight decides: see _finish_in_flight)
        if order.immediate and order.schedule is None:  # (a schedule's slices are its own)
            log.warning("recovery: immediate order %s was in flight at the stop; canceled",
                        order.order_id)
            pipeline.cancel_working(order, now, text="canceled: the engine restarted while "
                                                     "this immediate order was in flight")
            continue
        if order.schedule is not None and 0 <= order.schedule[1] <= now:
            # Its window ended while the engine was down: nothing is left to
            # schedule, an expected end, not a routing failure: EXPIRED, as live
            # at its window's end (protocol.md).
            log.info("recovery: order %s's schedule ended while the engine was down; expired",
                     order.order_id)
            pipeline.expire_working(order, now, "its schedule's window ended while the "
                                                "engine was down")
            continue
        ix = pipeline.risk.instrument_index(order.symbol)
        pipeline.refresh_market(ix, now)
        code, why = pipeline.route_remainder(order, ix, now)
        if code:
            log.error("recovery: order %s could not be routed again (%s); canceled",
                      order.order_id, reject_name(code))
            pipeline.cancel_working(order, now,
                                    text=f"could not be routed again after a restart: {why}")
            continue
        n += 1
    pipeline._pump(now)
    return n


def _take_up(pipeline, in_flight: list, now: int) -> None:
    """Hand the Cancels and Replaces the journal leaves unanswered to the pipeline again.

    They arrived and were acted on, but their orders' children were not
    down yet when the engine stopped, so nobody was answered. The pipeline
    checks each again as on arrival, but for the throttle it passed then and
    with the filled quantity its order had then (one it refuses is answered
    now), and holds the rest in flight; they finish in
    :func:`_finish_in_flight`.
    Nothing reaches the router: it knows none of the orders yet.
    """
    for session_id, req, filled, arrived_in in in_flight:
        session = pipeline.sessions.get(session_id) or SessionRef(session_id)
        # (Its id is spent in the day it arrived in, as a replay of this journal spends it.)
        if isinstance(req, Cancel):
            pipeline._cancel(session, req, now, spent_in=arrived_in)
        else:
            # Its throttle token was paid when it arrived. Its quantity is
            # judged against what had filled then: a fill that came while its
            # children were coming down is _finish_replace's to judge (the
            # rest is canceled), not a refusal on arrival (the order would go
            # back to the market and could fill past the client's new total).
            pipeline._replace(session, req, now, admitted=True, filled_at_arrival=filled,
                              spent_in=arrived_in)


def _finish_in_flight(pipeline, now: int) -> int:
    """Finish the Cancels and Replaces taken up again; returns the orders routed again.

    Their children went down with the venues, which is what the router
    reports when it has canceled a parent: so the pipeline finishes each as
    then. A Cancel's order is canceled, answering it; a Replace's order
    takes the new terms (or is refused them, by risk say) and is routed
    again, unless something pulled it meanwhile.
    """
    order_ids = list(pipeline._pending)
    for order_id in order_ids:
        pipeline._parent_finished(order_id, OrdStatus.CANCELED, 0, now)
    pipeline._pump(now)
    return sum(not pipeline.orders.by_id[order_id].done for order_id in order_ids)
