"""The pipeline: validated -> risk-checked -> routed -> filled, for every order.

Role: intake hands each decoded request here (``Pipeline.handle``); this
module journals it, moves the order through the state machine
(``engine.orders``), asks the Cython core (``ext.risk``, ``ext.router``)
what to do, sends the router's child orders to the venues, turns venue
reports back into parent fills, and answers the client with execution
reports. Everything runs on the event loop's thread; nothing here blocks.

Durability: every inbound command is appended to the journal before it is
acted on, and every outbound message before it is sent, so the journal holds
each acknowledgement before the client can see it (see docs/engine.md).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from typing import Callable, NamedTuple

import msgspec

from engine.intake import Handler, HeldReject, Session, in_bulk_order, send_held
from engine.journal import JournalReader, JournalWriter, RecordKind
from engine.messages import (
    MAX_TEXT, SCHEDULE_FIELDS, AdminReply, BulkNewOrders, Cancel, ChildState, ExecType, JournalChildren,
    JournalCommand, JournalDayRoll, JournalEvent, JournalPulled, JournalSession,
    JournalSessionEnd, JournalValuation, KillSwitch, NewOrder, OrderStatusReply,
    OrderStatusRequest, OrdType, ReloadLimits, Replace, Request, StageTime, TradeFill,
    TradeHistoryReply, TradeHistoryRequest, clip_text, event_envelope, make_reject, members,
    participation_ppm, reject_name, seq_of,
)
from engine.history import HistoryAnswer, TradeHistory, TradeStore
from engine.orders import (TERMINAL, Child, Order, OrderTable, Stage, advance_path, end_child,
                           execution_report, fill_child, fill_report, order_report)
from engine.tradingday import TradingDay
from ext.instrument import ConversionError, Instrument
from ext.risk import RiskFlag, cl_ord_hash
from ext.router import (ACT_CANCEL, ACT_NEW, ACT_REPLACE, CF_MID_PEG, CF_POST_ONLY, STRAT_AUTO,
                        STRAT_DARK_FIRST, STRAT_DEFAULT, STRAT_PASSIVE, STRAT_POV, STRAT_SWEEP,
                        STRAT_TWAP, STRAT_VWAP)
from ext.router import MAX_PRICE as ROUTER_MAX_PRICE, MAX_QTY as ROUTER_MAX_QTY
from ext.simloop import ReportKind
from ext.textcheck import TextKind, matches
from ext.types import CancelReason, OrdStatus, RejectReason, Side, TimeInForce

log = logging.getLogger(__name__)
#: The highest fill price a venue can report (half-ticks): the router's and risk's bound.
_MAX_PX_X2 = 2 * ROUTER_MAX_PRICE

# Per-order code reads enum members through plain-class copies: on Python 3.11
# an Enum class attribute lookup is slow (see engine.messages.members).
_Stage, _ExecType, _RecordKind, _ReportKind = map(members, (Stage, ExecType, RecordKind, ReportKind))
_OrdStatus, _Side, _TimeInForce, _OrdType, _RejectReason = map(
    members, (OrdStatus, Side, TimeInForce, OrdType, RejectReason))
_CXL_SELF_TRADE = int(CancelReason.CXL_SELF_TRADE)
#: What makes an order immediate (``Order.immediate``), as the plain ints its fields hold.
_IOC, _MARKET = int(TimeInForce.IOC), int(OrdType.MARKET)
#: The venue reports that end a child whatever it filled.
_CHILD_ENDS = frozenset({ReportKind.RPT_REJECTED, ReportKind.RPT_CANCELED, ReportKind.RPT_EXPIRED})
# The stages a new order passes at its arrival's instant: up to a refusal by the router's
# step (checked), or to routed (advance_path).
_VALIDATED = (Stage.VALIDATED,)
_CHECKED = (Stage.VALIDATED, Stage.RISK_CHECKED)
_ROUTED = (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED)

_TEXT_DECIMAL = int(TextKind.TEXT_DECIMAL)


def price_sent(price: str | None) -> str | None:
    """The price text of a new order refused before it became ticks, for its report.

    The client sees the price it sent (the ``text`` names it too, but a
    client matching reports to orders reads fields, not prose). It is echoed
    whole, never clipped: a clipped number is another number. Intake let it
    through as a positive decimal string, which a report's ``price`` takes;
    anything else (a request that did not come through intake) is not
    echoed, as a report a client cannot decode would be worse than none.
    """
    return price if price is not None and matches(price, _TEXT_DECIMAL) else None


#: NewOrder.strategy label -> router strategy. Only an order naming none takes
#: ``[router] strategy`` (STRAT_DEFAULT); one naming "auto" is routed by auto.
STRATEGIES = {None: STRAT_DEFAULT, "auto": STRAT_AUTO, "sweep": STRAT_SWEEP,
              "dark_first": STRAT_DARK_FIRST, "passive": STRAT_PASSIVE, "twap": STRAT_TWAP,
              "vwap": STRAT_VWAP, "pov": STRAT_POV}

_LOCATE, _INTENDED_DUPLICATE = int(RiskFlag.FLAG_LOCATE), int(RiskFlag.FLAG_INTENDED_DUPLICATE)
_ADMITTED = int(RiskFlag.FLAG_ADMITTED)  # the throttle was judged before the order was taken


def order_schedule(req: NewOrder) -> tuple | None:
    """A scheduled order's window and parameters as the router takes them, or None.

    ``(start_ns, end_ns, slices, profile, pov_ppm)``, -1 (or None for the
    profile) where the order leaves the router's default. The fields were
    checked at intake (``messages.check_new_order``).
    """
    if req.strategy not in SCHEDULE_FIELDS:
        return None
    return (-1 if req.start_time is None else req.start_time,
            -1 if req.end_time is None else req.end_time,
            -1 if req.slices is None else req.slices,
            None if req.profile is None else tuple(req.profile),
            -1 if req.participation is None else participation_ppm(req.participation))


def _beyond_router(inst: Instrument, qty: int, price: int) -> str | None:
    """Why the router could not take ``qty`` lots at ``price`` ticks (its 2^40 bound,
    which keeps its fee-adjusted price comparisons exact), or None. Judged with the
    other checks of the values, so that such an order is refused VALUE_OUT_OF_RANGE
    saying so, and a Replace to such terms is refused before its order comes down."""
    if qty > ROUTER_MAX_QTY:
        return (f"qty {inst.lots_to_qty(qty)} is above the largest the router takes, "
                f"{inst.lots_to_qty(ROUTER_MAX_QTY)} (2^40 lots of {inst.lot_size})")
    if price > ROUTER_MAX_PRICE:
        return (f"price {inst.ticks_to_price(price)} is above the largest the router takes, "
                f"{inst.ticks_to_price(ROUTER_MAX_PRICE)} (2^40 ticks of {inst.tick_size})")
    return None


def _remaining_schedule(order: Order, now: int, twap_slices: int) -> dict:
    """The router's schedule for what is left of ``order`` (after a replace or a restart).

    On the order's own slice grid: the slice under way has had its share
    sent (the router sends a slice's share as it begins), so what is left
    starts at the next slice's start, in the slices it has left (of
    ``twap_slices``, the router's default, when it named none), or a VWAP on
    the profile's buckets after the current one. Spread from ``now`` instead,
    a new first slice was due at once on top of the current one's share: a
    TWAP whose price was replaced four times in its first slice had bought
    four slices' worth. In the last slice (or with no weight left after the
    current bucket) all that is left is due now. A POV goes on at the same
    rate. A window already over leaves nothing to schedule (the router
    refuses it).
    """
    start, end, slices, profile, ppm = order.schedule
    if slices < 0 and order.strategy == STRAT_TWAP:
        slices = twap_slices  # (left as -1, the router would start a full set again)
    # (No start_time, or one already past when it arrived: its arrival, as routed.)
    start = max(start, order.created_ns)
    buckets = len(profile) if profile else slices
    if not (end > start and now > start and buckets > 0):
        return {"start_ns": max(start, now), "end_ns": end, "slices": slices,
                "profile": profile, "pov_ppm": ppm}
    current = min(buckets - 1, (now - start) * buckets // (end - start))
    rest = profile[current + 1:] if profile else None
    if current + 1 < buckets and (rest is None or any(rest)):
        # Slice k begins at start + ceil(k * duration / n), as the router counts.
        following = start - (-(current + 1) * (end - start) // buckets)
        return {"start_ns": max(following, now), "end_ns": end,
                "slices": slices - current - 1 if slices > 0 else -1,
                "profile": rest, "pov_ppm": ppm}
    return {"start_ns": now, "end_ns": end, "slices": 1 if slices > 0 else -1,
            "profile": (1,) if profile else None, "pov_ppm": ppm}


#: One new order in this many is timed stage by stage (kronos_stage_latency_seconds).
STAGE_SAMPLE = 16

#: KillSwitch.scope (the protocol's words) -> the risk engine's scope names.
RISK_SCOPE = {"global": "global", "account": "account", "symbol": "instrument"}


def kill_switch_scope(scope: str, target: str | None) -> str:
    """How texts name a kill switch's scope: ``global``, ``account DEMO1``, ``symbol AAA``.

    A global switch has no target, and no space is left for one: ``(global)``,
    not ``(global )``.

    Parameters
    ----------
    scope : str
        ``KillSwitch.scope``.
    target : str or None
        ``KillSwitch.target``.
    """
    return f"{scope} {target}" if target and scope != "global" else scope


#: Venue-side account id of the engine's first client account.
VENUE_ACCOUNT_BASE = 1_000_000

#: Largest number of fills in one TradeHistoryReply part.
HISTORY_PART = 500


def fill_ticks(side: int, px_x2: int) -> int:
    """The whole ticks risk books a fill at ``px_x2`` half-ticks at, live and in recovery.

    A midpoint fill between two ticks is booked against the account: up for
    a buy, down for a sell, but not to 0 (a sell at half a tick; risk takes
    no price below 1 tick, and refused, the fill would be the order's and
    the router's but not risk's).
    """
    return (px_x2 + 1) >> 1 if side == _Side.BUY else (px_x2 >> 1) or 1


def risk_fill(risk, order: Order, qty: int, px: int) -> None:
    """Book in ``risk`` a fill of ``qty`` lots at ``px`` ticks that ``order`` has just booked.

    Against the order while risk holds it (``on_fill``, an overfill
    included); once the order had FILLED before this fill (a venue
    overfilling it further) risk has let it go, and the account's position
    moves all the same (``on_fill_done``). Live and in recovery's replay
    alike; the live path calls ``on_fill`` itself for a fill within the
    order's quantity (per fill: one call less).
    """
    if order.cum_qty - qty < order.qty:
        risk.on_fill(order.order_id, qty, px)
    else:
        risk.on_fill_done(risk.account_index(order.account),
                          risk.instrument_index(order.symbol), order.side, qty, px)


def risk_flags(req: NewOrder) -> int:
    """The risk engine's flag bits of a new order."""
    return (_LOCATE if req.locate else 0) | (_INTENDED_DUPLICATE if req.intended_duplicate else 0)


#: A clock set back past the roll instant the last roll took brings that roll round
#: again only from this far before it (Pipeline.went_back): less is a clock that ran fast
#: and was corrected, and the roll stands; more undoes a step forward that rolled early.
ROLL_RETAKE_NS = 3_600 * 10**9
#: A difference between the wall and monotonic clocks' advance between two looks at the
#: clock beyond this is a step of the wall clock, not its slewing (ppm): the router's
#: deadlines move with it (Pipeline.watch_clock).
CLOCK_STEP_NS = 100_000_000


class SessionRef(NamedTuple):
    """A client session by its id alone: one intake no longer holds (or recovery did not
    restore). What is sent to it is journaled all the same (see ``Pipeline._send``), so
    its requests have their answers in the journal."""

    session_id: str


class _Pending:
    """A cancel or replace waiting for the router to take the children down.

    A replace also carries its new terms (lots, ticks). Risk judges them only
    once the children are down: until then the old terms are what can still
    fill, so they stay in force at risk. ``cancel`` is set when the order must
    come out of the market instead (a kill switch, cancel-on-disconnect, a
    client's Cancel): the replace is then refused with ``cancel``'s reason
    and the order canceled. ``canceler`` is that Cancel and its session: the
    CANCELED report answers it.

    ``amend``: a replace to fewer lots at the same price whose children are
    being amended where they rest (keeping their queue places) instead of
    taken down; see ``Pipeline._amend_settled``.
    """

    __slots__ = ("session_id", "request", "new_qty", "new_price", "cancel", "canceler",
                 "amend", "amend_children")

    def __init__(self, session_id: str, request: Cancel | Replace, new_qty: int = 0,
                 new_price: int = 0):
        self.session_id, self.request = session_id, request
        self.new_qty, self.new_price = new_qty, new_price
        self.cancel: tuple[int, str] | None = None
        self.canceler: tuple[str, Cancel] | None = None
        self.amend = False
        self.amend_children = 0


class _NoMetric:
    """Stands in for a metric series when the pipeline runs without metrics."""

    def observe(self, amount: float) -> None:
        pass

    def inc(self, amount: float = 1) -> None:
        pass


class Pipeline(Handler):
    """Order handling from intake to venues and back.

    Parameters
    ----------
    instruments : dict of str to Instrument
        Tradable instruments, by symbol; their order is the core's index.
    risk : ext.risk.RiskEngine
        Pre-trade checks and exposure state (configured with the same
        instruments and the accounts).
    router : ext.router.Router
        Smart order router sized for the venues and instruments.
    venues : sim.realtime.RealtimeVenues
        The venues (the embedded simulator by default): ``submit``,
        ``cancel``, ``replace``, ``depth``, ``venue_table`` and ``market``.
    journal : JournalWriter
        Where every command and event goes first.
    metrics : engine.metrics.Metrics, optional
    reload_limits : callable, optional
        Returns the new ``[risk]`` table for ``ReloadLimits``.
    trading_day : engine.tradingday.TradingDay, optional
        When the daily risk counters start afresh (default: midnight UTC).
    max_orders : int, optional
        Orders the table holds at most (``[orders] max_orders``); new orders
        beyond it are refused ``ORDER_CAPACITY``.
    max_replaces_per_order : int, optional
        Replaces one order takes at most (``[orders] max_replaces_per_order``);
        a Replace beyond it is refused ``ORDER_NOT_REPLACEABLE``.
    """

    # Slots, as JournalWriter's: on Python 3.11 an instance with more than 30
    # attributes has its dict built for good, and then no call of one of its
    # methods is specialised by the interpreter (a few hundred instructions
    # more per call, dozens of calls per order). The instance dict (Handler has
    # no slots) takes an attribute not listed here (set by a test, or added
    # without listing it): it works, only slower.
    __slots__ = ("_book_seqs", "_book_marks", "_capacity_check_at", "_capacity_logged", "_child_acked",
                 "_child_done", "_child_fills", "_child_new", "_child_parent",
                 "_child_repriced", "_child_to_sim", "_clock_hi", "_clock_lo", "_day_entered",
                 "_default_rests", "_event_envelopes", "_exec_id", "_expiring", "_fills_count", "_flush_soon",
                 "_flushed_seq", "_gates", "_lit_books", "_market_ix", "_market_to_ix",
                 "_mono_seen", "_nbbo", "_next_roll", "_on_report", "_orders_seen", "_pending",
                 "_post_only_default", "_pump_scheduled", "_recopy", "_references",
                 "_roll_taken",
                 "_sim_to_child", "_time_journal", "_time_risk", "_time_route", "_time_validate",
                 "_venue_account", "_volume_seen", "_wall_seen", "history", "instruments",
                 "journal", "keep_done_days", "last_roll_seq", "max_orders",
                 "max_replaces_per_order", "metrics", "orders", "reload_limits", "risk",
                 "router", "sessions", "symbols", "trade_store", "trading_day", "venue_names",
                 "venues")

    def __init__(self, *, instruments: dict[str, Instrument], risk, router, venues,
                 journal: JournalWriter, metrics=None, history: TradeHistory | None = None,
                 reload_limits: Callable[[], dict] | None = None,
                 trading_day: TradingDay | None = None, max_orders: int = 4_000_000,
                 max_replaces_per_order: int = 10_000, keep_done_days: int = 1):
        self.instruments = instruments
        self.symbols = list(instruments)
        self.risk, self.router, self.venues = risk, router, venues
        # A post-only order naming no strategy must rest: it takes the
        # default only when that one rests (passive), else auto.
        self._post_only_default = STRAT_PASSIVE if router.default_strategy == STRAT_PASSIVE \
            else STRAT_AUTO
        # An IOC or MARKET order naming no strategy cannot rest: under a passive
        # default (which the router refuses for it) it is routed by auto instead.
        self._default_rests = router.default_strategy == STRAT_PASSIVE
        self.journal, self.metrics = journal, metrics
        # kronos_fills' one series, moved in place per fill (as intake counts its messages:
        # LoopFamily.inc and LoopCounter.inc were two Python calls a fill).
        self._fills_count = metrics.fills.labels() if metrics is not None else None
        self.reload_limits = reload_limits
        self.orders = OrderTable()
        self.max_orders = max_orders
        # Done orders leave the table this many day rolls after their day (roll_day).
        self.keep_done_days = keep_done_days
        # Has the journal flushed soon (intake's, see attach); none without intake.
        self._flush_soon: Callable[[], None] = lambda: None
        # Each accepted replace leaves its id spent and, routed again, its
        # done child listed (both promised by the protocol), which max_orders
        # does not count: this bounds them per order.
        self.max_replaces_per_order = max_replaces_per_order
        # From 90% of max_orders on, each new order looks at the table's filling
        # (_capacity_refuses); 1 once the 90% line was logged, 2 once "full" was.
        self._capacity_check_at = max(1, max_orders * 9 // 10)
        self._capacity_logged = 0
        self.sessions: dict[str, Session] = {}
        # Sessions whose key the journal holds (a JournalSession record), each
        # with the encoded start of its JournalEvent records (see record_sent).
        self._event_envelopes: dict[str, bytes] = {}
        self._gates: dict = {}  # session id -> its ext.risk.SessionGate
        #: fills per account, bounded (answers TradeHistoryRequest)
        self.history = history if history is not None else TradeHistory()
        #: where fills beyond memory are fetched from ([history] store), or None
        self.trade_store: TradeStore | None = None
        self.venue_names = [v.name for v in venues.venues]
        self._sim_to_child: dict[int, int] = {}
        self._child_to_sim: dict[int, int] = {}
        self._child_parent: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        # Orders taken down because their DAY ended (_expire_day_orders): they end EXPIRED,
        # not CANCELED, once their children are down. An id stays until its order ends
        # EXPIRED (expire_working), or until the next roll for an order that ended another
        # way meanwhile (filled, or a client's Cancel answered by its CANCELED).
        self._expiring: set[int] = set()
        self._pump_scheduled = False
        # What happened to children since the last flush, journaled then in
        # one JournalChildren record (see journal_children).
        self._child_new: list[tuple] = []
        self._child_acked: list[int] = []
        self._child_fills: list[tuple] = []
        self._child_repriced: list[tuple] = []
        self._child_done: list[int] = []
        market = venues.market
        self._lit_books = [[(v, market.loop.book(market.book_index(v, symbol)))
                            for v in range(len(self.venue_names)) if not market.venues[v].dark]
                           for symbol in self.symbols]
        self._book_seqs = [[-1] * len(self.venue_names) for _ in self.symbols]
        # By the market's book index: (the marks of its instrument, its venue, the
        # instrument), for the lit books the router is given; None for the others.
        self._book_marks: list[tuple | None] = [None] * market.loop.n_books
        for ix, symbol in enumerate(self.symbols):
            for v, _ in self._lit_books[ix]:
                self._book_marks[market.book_index(v, symbol)] = (self._book_seqs[ix], v, ix)
        # Instruments with a book to read again at the next tick (``_read_again``).
        self._recopy: set[int] = set()
        self._references = [0] * len(self.symbols)  # the reference price risk was last given
        # The core's NBBO by the market's own instrument index (no symbol lookup per order).
        self._nbbo = market.loop.nbbo
        self._flushed_seq = 0
        self.trading_day = trading_day or TradingDay(dt.time(0, 0))
        # The roll instant the last roll took (0: none yet): never taken twice (went_back).
        self._roll_taken = 0
        #: the journal record of this engine's last roll (0: none since it started); the
        #: service checkpoints the journal there (engine.checkpoint)
        self.last_roll_seq = 0
        self.day_started_at(time.time_ns())
        self.watch_clock(time.time_ns(), first=True)
        # The market's traded lots per instrument as last reported to the router (for POV).
        self._volume_seen = [market.market_volume(symbol)[0] for symbol in self.symbols]
        self._orders_seen = 0
        # Per-stage time of a new order (intake times its own stage), as bound methods.
        (self._time_validate, self._time_risk, self._time_route, self._time_journal) = (
            (metrics.stage_latency.labels(stage) if metrics else _NoMetric()).observe
            for stage in ("validate", "risk", "route", "journal"))
        self._market_ix = [market.instrument_index(symbol) for symbol in self.symbols]
        self._market_to_ix = [-1] * market.loop.n_instruments
        for ix, k in enumerate(self._market_ix):
            self._market_to_ix[k] = ix
        # One number per instrument in the risk engine, the router and here
        # (engine.config.risk_config builds risk's in this order): the order's
        # instrument is looked up once, in risk, and used for all three.
        numbered = [risk.instrument_index(symbol) for symbol in self.symbols]
        if numbered != list(range(len(self.symbols))):
            raise ValueError(f"the risk engine numbers the instruments {numbered}, not in the "
                             f"venues' order {self.symbols}")
        # Children carry their client account to the venue, so that venue
        # self-trade prevention stops an account trading with itself and
        # nothing else (all children under one id would block every cross).
        # (Ids above the simulator's own: its background flow trades as 1-4.)
        self._venue_account = {name: VENUE_ACCOUNT_BASE + ix for ix, name in enumerate(risk.accounts)}
        self._exec_id = 0
        self._on_report = self._venue_report  # one bound method, made once
        self._configure_router()

    # ------------------------------------------------------------ set-up

    def _configure_router(self) -> None:
        """Tell the router each venue's kind, latency and fees (the simulator's units).

        Fee units depend on an instrument's tick and lot, so fees are set per
        instrument and venue.
        """
        for ix, symbol in enumerate(self.symbols):
            for row in self.venues.venue_table(symbol):
                v = row["index"]
                if ix == 0:
                    self.router.set_venue(v, dark=row["dark"],
                                          latency_ns=int(row["latency_us"] * 1000),
                                          open=row["open"])
                self.router.set_fees(ix, v, maker_fee=row["maker_per_lot"],
                                     taker_fee=row["taker_per_lot"],
                                     maker_cbps=row["maker_cbps"], taker_cbps=row["taker_cbps"])

    def refresh_market(self, ix: int, now: int) -> None:
        """Give the router and risk the latest view of one instrument.

        A venue's depth is copied only when its book changed since the last
        copy (its sequence number moved), or a venue confirmed a child resting
        there since (``_read_again``), so a burst of orders, or a quiet venue,
        costs no copies. A two-sided quote is risk's reference as of
        ``now``, and risk keeps it fresh at each tick's ``market_checked``
        until the quote changes (a quote that has not moved is still
        current); a quote that is not two-sided leaves the reference to age.
        """
        marks = self._book_seqs[ix]
        for v, book in self._lit_books[ix]:
            if book.seq != marks[v]:
                marks[v] = book.seq
                code = self.router.update_book_from(ix, v, book)
                if code:  # (a price beyond the router's MAX_PRICE)
                    log.warning("router refused %s's book of %s (%s): its view of that venue "
                                "is stale", self.venue_names[v], self.symbols[ix],
                                reject_name(code))
        bid, ask = self._nbbo(self._market_ix[ix])
        if bid and ask:
            self._references[ix] = reference = (bid + ask) // 2
            self.risk.set_market_reference(ix, reference, now)
        else:
            self.risk.market_reference_lost(ix)

    def _refresh_venues(self) -> None:
        """Venue sessions open and close: tell the router (from the clock, not per order)."""
        market = self.venues.market
        for v in range(len(self.venue_names)):
            self.router.set_open(v, market.is_open(v))

    # ------------------------------------------------------------ journal and send

    def _journal_command(self, session: Session, request: Request, now: int,
                         encoded: bytes | None = None) -> None:
        # The record of JournalCommand(session_id, principal, received_ns=now, request),
        # written from its field values: the struct was made only to be encoded, and its
        # making and freeing cost about as much as its writing. ``encoded``: the request's
        # msgpack as the encoder writes it (see Handler.handle), copied, not written again.
        self.journal.append_as(_RecordKind.COMMAND, JournalCommand, (
            session.session_id, session.principal, now,
            request if encoded is None else msgspec.Raw(encoded)))

    def _send(self, session_id: str, msg) -> int:
        """Send an outbound message; it is journaled as sent (see :meth:`record_sent`).

        The session stamps its sequence number and holds the frame until
        intake's flush, which calls :meth:`flush` first: the record is in the
        journal before the client can see the message. A message for a
        session intake no longer has is journaled all the same (the order
        state it reports is answered by ``OrderStatusRequest``). Returns the
        seq the message went out with, 0 for such a session.
        """
        session = self.sessions.get(session_id)
        if session is not None:
            return session.send(msg)
        self.journal.append_msg(_RecordKind.EVENT, JournalEvent(session_id=session_id, event=msg))
        # Nothing goes out for it, so nothing else would flush it: a fill
        # waiting for the next client message is lost to a kill -9 meanwhile.
        self._flush_soon()
        return 0

    def attach(self, flush_soon: Callable[[], None]) -> None:
        """Intake's ``flush_soon`` (see ``Handler.attach``)."""
        self._flush_soon = flush_soon

    def record_sent(self, session: Session, frame: bytes) -> int:
        """Journal the exact frame a session sends (its seq included); returns its record's seq.

        A session's first frame is preceded by a ``JournalSession`` record
        naming its key: recovery must restore it on the same kind of
        endpoint, for the same key, even when it never sent a command.
        The record is ``JournalEvent(session_id, event=frame)``; its encoding
        is the session's fixed envelope followed by the frame, so the
        envelope is encoded once per session, not once per message.
        """
        return self.journal.append_parts(_RecordKind.EVENT, self._envelope_of(session), frame)

    def sent_recorder(self, session: Session) -> Callable[[bytes], int]:
        """:meth:`record_sent` for ``session``: the journal's append bound to the session's
        envelope (its ``JournalSession`` record written first if the journal lacks it).
        Intake calls it per message sent, a compiled call with no Python frame of ours."""
        return functools.partial(self.journal.append_parts, _RecordKind.EVENT,
                                 self._envelope_of(session))

    def _envelope_of(self, session: Session) -> bytes:
        """The session's ``JournalEvent`` envelope; a session's first asks write its
        ``JournalSession`` record (see :meth:`record_sent`)."""
        envelope = self._event_envelopes.get(session.session_id)
        if envelope is None:
            self.journal.append_msg(_RecordKind.META, JournalSession(
                session_id=session.session_id, principal=session.principal))
            envelope = self.session_journaled(session.session_id)
        return envelope

    def sent_frames(self, session_id: str, from_record: int, begin_seq: int,
                    end_seq: int) -> list[bytes]:
        """The frames a session was sent, read back from the journal (see
        ``engine.intake.Handler.sent_frames``): the records :meth:`record_sent` wrote, the
        session's envelope stripped. Runs on a worker thread: it only reads the journal's
        files, as any reader may while the engine writes them."""
        envelope = event_envelope(session_id)
        cut, frames, expected = len(envelope), [], begin_seq
        reader = JournalReader(self.journal.data_dir, check_chain=False)
        for record in reader.records(from_record):
            if record.kind != _RecordKind.EVENT or not record.payload.startswith(envelope):
                continue
            frame = record.payload[cut:]
            seq = seq_of(frame)
            if seq < expected:
                continue  # before the range, or journaled unnumbered (seq 0)
            if seq != expected:
                break  # (one missing: the caller says from where)
            frames.append(frame)
            if seq == end_seq:
                break
            expected += 1
        return frames

    def session_journaled(self, session_id: str) -> bytes:
        """Note that the journal names ``session_id``'s key (recovery calls it for the
        sessions it read); returns the session's JournalEvent envelope."""
        envelope = self._event_envelopes[session_id] = event_envelope(session_id)
        return envelope

    def session_unjournaled(self, session_id: str) -> bool:
        """Drop ``session_id``'s envelope: intake let the session go (a JournalSessionEnd
        follows, or recovery read one). Returns whether it had one."""
        return self._event_envelopes.pop(session_id, None) is not None

    def flush(self, release: Callable[[], None]) -> None:
        """Write this wake-up's journal records, then let intake send (see ``Handler.flush``).

        One ``write`` for the batch; under ``fsync = "always"`` one
        ``fdatasync``; under ``group`` the frames wait for the committer's
        sync of the batch's last record (in order: every release goes
        through the loop, behind the ones already waiting).
        """
        started = time.perf_counter_ns()
        self.journal_children()
        try:
            seq = self.journal.flush()
        except OSError as exc:  # (not a JournalError: that one has failed the journal already)
            # A full disk: the journal would keep the batch for a retry, but
            # this wake-up's commands were acted on (orders sent to venues),
            # and the next ones would be too, none of it durable or answered.
            # Fail stop rather than trade on (EngineService._journal_failed).
            raise self.journal.fail(exc, "cannot write this wake-up's records") from exc
        if seq != self._flushed_seq:  # the wake-up's journal write (and sync, under "always")
            self._flushed_seq = seq
            self._time_journal((time.perf_counter_ns() - started) / 1e9)
        if self.journal.fsync != "group":
            release()
            return
        loop = asyncio.get_running_loop()
        self.journal.call_when_durable(seq, lambda: loop.call_soon_threadsafe(release))

    def journal_children(self) -> None:
        """One ``JournalChildren`` record for what the children did since the last one, if
        anything (:meth:`flush` calls it; the service too, before its last journal write).

        Not a record per child: the journal gains one record per wake-up.
        Written with the wake-up's other records, before intake sends the
        reports that follow from them.
        """
        if not (self._child_new or self._child_acked or self._child_fills or self._child_done or
                self._child_repriced):
            return
        self.journal.append_msg(_RecordKind.META, JournalChildren(
            new=self._child_new, acked=self._child_acked, fills=self._child_fills,
            repriced=self._child_repriced, done=self._child_done))
        self._child_new, self._child_acked, self._child_fills, self._child_repriced, \
            self._child_done = [], [], [], [], []

    def _instrument(self, symbol: str) -> Instrument:
        # An order for an unknown symbol is still answered; its quantities
        # are 0 and need no grid, so any grid formats them.
        return self.instruments.get(symbol) or Instrument(symbol or "?", "1", "1")

    def _report(self, order: Order, exec_type: ExecType, requester: str | None = None,
                text: str | None = None, orig_cl_ord_id: str | None = None, reason: int = 0,
                price_sent: str | None = None) -> None:
        """Report the order's state to its session, and to ``requester`` (the session of
        the cancel or replace this answers) when that is another one; ``text``,
        ``orig_cl_ord_id``, ``reason`` and ``price_sent`` are the report's (see
        ``engine.orders.execution_report``)."""
        # (An order's symbol is nearly always one of the instruments: a dict lookup, not a
        # call of _instrument, which makes one up for an unknown symbol.)
        inst = self.instruments.get(order.symbol) or self._instrument(order.symbol)
        # (Kept as order.last_report. Named parameters, not ``**kw``: a ``**kw`` function
        # makes a dict at every call, and one passed on through two calls cost a canceled
        # order about 3k instructions. ``text`` goes positionally, as a NEW or CANCELED
        # report has nothing else: each keyword costs the compiled call its parsing.)
        report = order_report(order, inst, exec_type, text) \
            if orig_cl_ord_id is None and not reason and price_sent is None \
            else order_report(order, inst, exec_type, text, orig_cl_ord_id=orig_cl_ord_id,
                              reason=reason, price_sent=price_sent)
        # (The session's send called here, not through _send: a frame less per report.)
        session_id = order.session_id
        session = self.sessions.get(session_id)
        order.report_seq = session.send(report) if session is not None \
            else self._send(session_id, report)
        if requester is not None and requester != session_id:
            self._send(requester, report)

    def _reject_order(self, order: Order, reason: int, text: str, now: int,
                      stage: str, sent_price: str | None = None, passed: tuple = ()) -> None:
        """Refuse a new order; ``sent_price`` is its report's price while the order holds
        none (see ``price_sent``); ``passed``, the stages it passed first, at ``now``
        (``_new_order`` moves an order through them once it knows how far it got)."""
        if passed:
            advance_path(order, passed, now)
        order.reject(reason, text, now)
        self._count_reject(reason, stage)
        self._report(order, _ExecType.REJECTED, reason=reason, text=text,
                     price_sent=sent_price)

    def _count_reject(self, reason: int, stage: str) -> None:
        """Count a refusal the pipeline sends (kronos_rejects_total; intake counts its own)."""
        if self.metrics is not None:
            self.metrics.rejects.labels(reject_name(reason), stage).inc()

    def _refuse(self, session: Session, reason: int, text: str, stage: str, **kw) -> None:
        """Send a ``Reject`` for a request that names no order it could be reported on."""
        self._count_reject(reason, stage)
        self._send(session.session_id, make_reject(reason, text, **kw))

    # ------------------------------------------------------------ intake handler

    def handle(self, session: Session, request: Request,
               positions: tuple[int, ...] | None = None,
               held: tuple[HeldReject, ...] = (), encoded: bytes | None = None) -> None:
        """Journal a request, then process it (see ``engine.intake.Handler``).

        A request of a session intake has dropped (``session.dropped``) is not
        taken: see :meth:`_refuse_dropped`.
        """
        if session.dropped:
            return self._refuse_dropped(session, request)
        now = time.time_ns()
        if not self._clock_lo <= now < self._clock_hi:
            self.watch_clock(now)
        if now >= self._next_roll:
            self.roll_day(now)
        self.sessions[session.session_id] = session
        if type(request) is BulkNewOrders:
            return self._bulk(session, request, positions, held, now)
        if len(self.orders.by_id) >= self._capacity_check_at and \
                type(request) is NewOrder and self._capacity_refuses():
            return self._refuse_capacity(session, request)
        # The client key's throttle, before the command is journaled (see _admit).
        gate = None  # (a new order's, handed on to _new_order)
        if type(request) is NewOrder:
            gate = self._gates.get(session.session_id) or self._gate(session)
            if gate.admit(now) and not self.orders.used(request.account, request.cl_ord_id):
                return self._refuse_throttled(session, request, "NewOrder",
                                              self.risk.last_reject_text())
        elif type(request) is Cancel or type(request) is Replace:
            order = self.orders.find(request.account, request.orig_cl_ord_id)
            live = order is not None and not order.done \
                and request.orig_cl_ord_id == order.cl_ord_id
            spent = live and type(request) is Replace and self._replaces_spent(order)
            if (not live or spent) and not self.orders.used(request.account, request.cl_ord_id):
                # It names no order it could act on (none, a done one, one by
                # the id it had before a replace, or, for a Replace, one that
                # took all the replaces it may): refused as it would be, but
                # not journaled and its id not spent. Spent, such requests (which
                # nothing throttles) would grow the id table and the journal
                # for good, past [orders] max_orders.
                if spent:
                    self._refuse_replaces_spent(session, order, request)
                else:
                    self._lookup(session, request, now, spend=False)
                return
        if type(request) is not NewOrder and session.session_id not in self._gates:
            # Risk numbers sessions where recovery does: at the session's first
            # command, or at the throttle check of its first new order (above, and
            # _admit for a bulk), which a THROTTLED reject leaves in the journal.
            # With slots reused (release_session), a restart then gives each
            # session, and so each order, the risk index it had.
            self._gate(session)
        self._journal_command(session, request, now, encoded)
        match request:
            case NewOrder():
                self._new_order(session, request, now, gate=gate)
            case Cancel():
                self._cancel(session, request, now)
            case Replace():
                self._replace(session, request, now)
            case OrderStatusRequest():
                self._status(session, request)
            case TradeHistoryRequest():
                self._history(session, request)
            case KillSwitch():
                self._kill_switch(session, request, now)
            case ReloadLimits():
                self._reload(session, request, now)
        self._pump(now)

    def _refuse_dropped(self, session: Session, request: Request) -> None:
        """Take nothing of a session intake has let go, and send it nothing.

        Its JournalSessionEnd is written and its risk slot released: taken, the
        request would put it back in :attr:`sessions` and in risk (never released
        again), journal it anew under a session the journal has ended, and send
        its answers to nobody (nothing can resume it). Intake routes no frame to
        such a session: a connection it dropped a session from is answered there,
        outside any session (``RESUME_REFUSED``, saying why:
        ``IntakeServer._refuse_route``), and its client opens a new session when it
        reconnects. This guards a path intake does not take, with nothing to answer
        with: the session's routing id went with it, and an answer through the
        session would be numbered and journaled under a session whose end the
        journal holds as final.
        """
        log.warning("%s of session %s not taken: intake has dropped the session",
                    type(request).__name__, session.session_id)

    def on_session_forgotten(self, session: Session) -> None:
        """Intake let the session go: drop it (and its resend ring) from the sessions reports
        are sent to. Its orders' reports are journaled, as for any session intake no longer
        has (see :meth:`_send`); without this the table grew with every connection."""
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        self._gates.pop(session.session_id, None)
        # Its risk slot goes to the next session, now or once its working orders
        # are done (recovery does the same at its JournalSessionEnd): without
        # this risk kept every session of the engine's life.
        self.risk.release_session(session.session_id)
        if self.session_unjournaled(session.session_id):
            # The journal names it: a restart would restore it (see JournalSessionEnd).
            self.journal.append_msg(_RecordKind.META,
                                    JournalSessionEnd(session_id=session.session_id,
                                                      final=True))

    def on_session_timeout(self, session: Session) -> None:
        """Cancel the session's working orders if it asked for cancel-on-disconnect."""
        if not session.cancel_on_disconnect:
            return
        now = time.time_ns()
        keys = self.risk.cancel_on_disconnect(session.session_id, now)
        log.warning("session %s silent: canceling %d working orders", session.session_id,
                    len(keys))
        self._pull(keys, now, _RejectReason.ORDER_NOT_REPLACEABLE,
                   "canceled: its session went silent (cancel_on_disconnect)")
        self._pump(now)

    def _pull(self, order_ids, now: int, reason: int, text: str, expire: bool = False) -> None:
        """Take orders out of the market on the engine's own account (kill switch, disconnect,
        the end of a DAY order's trading day).

        An order with a replace in flight is already coming down; the replace
        must not send it back, so it is marked to end canceled instead. A
        replace that arrives while the order comes down is refused with the
        same reason (``Order.pulled``). Journaled (``JournalPulled``): a
        restart before the venues' cancels come back cancels the orders
        rather than routing them again. ``expire``: they end EXPIRED, not
        CANCELED (see :meth:`_expire_day_orders`).
        """
        order_ids = [int(order_id) for order_id in order_ids]
        if order_ids:
            self.journal.append_msg(_RecordKind.META, JournalPulled(
                order_ids=order_ids, reason=int(reason), text=text, expire=expire))
        by_id = self.orders.by_id
        for order_id in order_ids:
            self._take_down(order_id, by_id.get(order_id), now, reason, text, expire)

    def _take_down(self, order_id: int, order: Order | None, now: int, reason: int,
                   text: str, expire: bool = False) -> None:
        """Cancel one order at its venues for good: a replace in flight ends canceled (or,
        ``expire``, expired), not routed again, and one arriving is refused with ``reason``
        (``Order.pulled``)."""
        if order is not None:
            order.pull(reason, text)
        # The last pull's word stands: a kill switch engaged while a DAY order's
        # expiry comes down ends it CANCELED with the switch's text, as recovery
        # replays the two JournalPulled records.
        if expire:
            self._expiring.add(order_id)
        elif self._expiring:
            self._expiring.discard(order_id)
        pending = self._pending.get(order_id)
        if pending is not None and isinstance(pending.request, Replace):
            pending.cancel = (reason, text)  # (an amend the venue applied first still stands)
        self.router.cancel_parent(order_id, now)

    # ------------------------------------------------------------ new orders

    def _new_order(self, session: Session, req: NewOrder, now: int,
                   ref_type: str = "NewOrder", index: int = -1, gate=None) -> None:
        # (intake counts orders in: kronos_orders_in_total)
        # A cl_ord_id names one order for as long as the engine holds it
        # (restarts included; forgotten keep_done_days after its day): a client
        # resending after a lost ack or a restart gets a reject, never a second
        # order. An id a Cancel or Replace spent is
        # refused the same way (see OrderTable). ``ref_type``: the message
        # the order came in (a bulk's orders are refused as intake's are,
        # ``index`` naming which: two orders of one bulk may share a cl_ord_id).
        # ``gate``: the session's risk gate, when the caller has it at hand.
        # One new order in STAGE_SAMPLE is timed stage by stage: timing each
        # would cost it about 3 µs (clock reads, histogram updates).
        self._orders_seen = seen = self._orders_seen + 1
        timed = seen % STAGE_SAMPLE == 1  # (the first order is timed: the 1st, 17th, ...)
        started = time.perf_counter_ns() if timed else 0
        inst = self.instruments.get(req.symbol)
        # The order is made with its terms in lots and ticks and its strategy (each field
        # set afterwards would cost a write through msgspec's generic __setattr__, 130
        # instructions or more): converted first, and refused below with what converted
        # (none, or the quantity alone) when they do not.
        qty = price = 0
        problem = None
        if inst is not None:
            try:
                qty = inst.qty_to_lots(req.qty)
                price = inst.price_to_ticks(req.price) if req.price is not None else 0
            except ConversionError as exc:
                problem = exc
        # (strategy_of's first step inline, every order's path: it decides only where the
        # router's default could be overridden.)
        strategy = STRATEGIES.get(req.strategy)
        if strategy == STRAT_DEFAULT and (req.post_only or self._default_rests):
            strategy = self.strategy_of(req)
        order = self.orders.create(req.cl_ord_id, session.session_id, req.account, req.symbol,
                                   int(req.side), int(req.ord_type), int(req.time_in_force),
                                   price, qty, now,
                                   strategy=strategy if strategy is not None else 0,
                                   unless_used=True)
        if order is None:  # (its cl_ord_id is used: nothing above had an effect)
            return self._refuse_duplicate(session, req, ref_type, index)
        # -- validated: instrument, decimal strings, core indices
        # Refused before the price is ticks (no instrument, a price or quantity that does
        # not convert), the report carries the client's price text rather than none.
        if inst is None:
            return self._reject_order(order, _RejectReason.UNKNOWN_INSTRUMENT,
                                      f"unknown symbol {req.symbol!r}", now, "validate",
                                      price_sent(req.price))
        if problem is not None:
            return self._reject_order(order, problem.reason, str(problem), now, "validate",
                                      price_sent(req.price))
        if qty > ROUTER_MAX_QTY or price > ROUTER_MAX_PRICE:  # (no call per order)
            return self._reject_order(order, _RejectReason.VALUE_OUT_OF_RANGE,
                                      _beyond_router(inst, qty, price), now, "validate")
        if req.time_in_force == _TimeInForce.FOK:
            return self._reject_order(order, _RejectReason.INVALID_TIF,
                                      "FOK is not supported: it cannot hold across venues",
                                      now, "validate")
        try:
            account_ix = self.risk.account_index(req.account)
        except KeyError:
            return self._reject_order(order, _RejectReason.UNKNOWN_ACCOUNT,
                                      f"unknown account {req.account!r}", now, "validate")
        inst_ix = self.risk.instrument_index(req.symbol)
        # (Validated. Its stages, VALIDATED, RISK_CHECKED and ROUTED, all at ``now``, are
        # taken in one call once it is routed, or up to the one it is refused after:
        # nothing on the way reads the stage.)
        if timed:
            validated = time.perf_counter_ns()
            self._time_validate((validated - started) / 1e9)
        # -- risk-checked
        self.refresh_market(inst_ix, now)
        if gate is None:
            gate = self._gates.get(session.session_id) or self._gate(session)
        reason = gate.check_new(order.order_id, account_ix, inst_ix, order.side, order.ord_type,
                                qty, price, risk_flags(req) | _ADMITTED,
                                cl_ord_hash(req.cl_ord_id, req.account), now)
        if reason:
            if reason == _RejectReason.STALE_REFERENCE_PRICE and not self.venues.open_count():
                # Prices went stale because the venues closed: the router's answer
                # then, and what /healthz promises, is NO_ROUTE.
                return self._reject_order(order, _RejectReason.NO_ROUTE,
                                          "the venues are closed: no venue to route to",
                                          now, "route", passed=_VALIDATED)
            return self._reject_order(order, reason, self.risk.last_reject_text(), now, "risk",
                                      passed=_VALIDATED)
        # (A buy limit is valued at its limit, and journals nothing: _journal_valuation's
        # first case, without its call on the usual path.)
        value = price if order.side == _Side.BUY and order.ord_type != _OrdType.MARKET \
            else self._journal_valuation(order, inst_ix, account_ix)
        if timed:
            checked = time.perf_counter_ns()
            self._time_risk((checked - validated) / 1e9)
        # -- routed
        if strategy is None:
            self.risk.on_reject(order.order_id)
            return self._reject_order(order, _RejectReason.INVALID_STRATEGY,
                                      f"unknown strategy {req.strategy!r}; one of "
                                      f"{', '.join(k for k in STRATEGIES if k)}", now, "route",
                                      passed=_CHECKED)
        if req.post_only:
            order.post_only = True
            if strategy not in (STRAT_AUTO, STRAT_PASSIVE):
                self.risk.on_reject(order.order_id)
                return self._reject_order(order, _RejectReason.INVALID_STRATEGY,
                                          f"post_only rests on the book: strategy auto or "
                                          f"passive, not {req.strategy!r}", now, "route",
                                          passed=_CHECKED)
            text = self._post_only_cross(order, inst_ix, price)
            if text:
                self.risk.on_reject(order.order_id)
                return self._reject_order(order, _RejectReason.POST_ONLY_WOULD_CROSS, text, now,
                                          "route", passed=_CHECKED)
        if req.stp is not None:
            order.stp = int(req.stp)
        # (order_schedule's own first look, without its call for an order with none.)
        schedule = order_schedule(req) if req.strategy in SCHEDULE_FIELDS else None
        try:
            if schedule is None:
                reason = self._route(order, inst_ix, qty, now)
            else:
                order.schedule = schedule
                start, end, slices, profile, ppm = schedule
                if 0 <= end <= now:  # (trading it all at once is not what a schedule asks)
                    self.risk.on_reject(order.order_id)
                    return self._reject_order(order, _RejectReason.INVALID_SCHEDULE,
                                              f"end_time {end} is not in the future (now {now})",
                                              now, "route", passed=_CHECKED)
                # A start_time already past is the order's arrival: the slices
                # it names would otherwise all be due at once, one sweep.
                reason = self._route(order, inst_ix, qty, now, {
                    "start_ns": max(start, now) if start >= 0 else -1, "end_ns": end,
                    "slices": slices, "profile": profile, "pov_ppm": ppm})
        except Exception as exc:  # noqa: BLE001 - an engine bug must not strand the order
            # Risk has taken the order: left half-made, it would hold buying
            # power with nothing at the venues and no answer to a Cancel.
            log.exception("router failed on order %s (%s)", order.order_id, req.cl_ord_id)
            self.risk.on_reject(order.order_id)
            return self._reject_order(order, _RejectReason.INTERNAL_ERROR,
                                      f"the engine failed to route the order "
                                      f"({type(exc).__name__}); it was not sent", now, "route",
                                      passed=_CHECKED)
        if reason:
            self.risk.on_reject(order.order_id)
            return self._reject_order(order, reason, f"router: {reject_name(reason)}", now,
                                      "route", passed=_CHECKED)
        advance_path(order, _ROUTED, now)
        if timed:
            self._time_route((time.perf_counter_ns() - checked) / 1e9)
        self._report(order, _ExecType.NEW)

    def strategy_of(self, req: NewOrder) -> int | None:
        """The router strategy of a new order; None for a name the router does not know.

        The one it names (``"auto"`` included); ``STRAT_DEFAULT`` (the
        router's ``[router] strategy``) for an order naming none, except a
        post-only one, which must rest: it takes the default only when that
        is ``passive``, else ``auto``; and an IOC or MARKET one, which cannot
        rest: under a ``passive`` default (which the router refuses for it,
        ``INVALID_STRATEGY``) it is ``auto``.
        """
        strategy = STRATEGIES.get(req.strategy)
        if strategy == STRAT_DEFAULT:
            if req.post_only:
                return self._post_only_default
            if self._default_rests and (req.time_in_force == _TimeInForce.IOC
                                        or req.ord_type == _OrdType.MARKET):
                return STRAT_AUTO
        return strategy

    def _bulk(self, session: Session, request: BulkNewOrders,
              positions: tuple[int, ...] | None, held: tuple[HeldReject, ...], now: int) -> None:
        """Take a bulk's orders, answering them, intake's refusals included, in the bulk's order.

        Each order's first answer (its ``NEW`` or ``REJECTED`` report, or a
        ``Reject``) leaves in the order of the bulk as sent; the rejects intake
        held back (``held``) and the throttled orders' go out between the
        others, in place, and go out even if taking an order fails.
        """
        held = list(held)
        try:
            if len(self.orders.by_id) >= self._capacity_check_at and self._capacity_refuses():
                in_bulk_order(request, positions, held, functools.partial(
                    self._refuse_capacity, session, request))
                return
            request, positions = self._admit(session, request, positions, held, now)
            if request is None:
                return
            self._journal_command(session, request, now)
            in_bulk_order(request, positions, held, functools.partial(
                self._new_order, session, now=now, ref_type="BulkNewOrders"))
        finally:
            send_held(held)  # the ones after the last order taken
        self._pump(now)

    def _refuse_capacity(self, session: Session, request: NewOrder | BulkNewOrders,
                         order: NewOrder | None = None, index: int = -1) -> None:
        """Refuse a new order (a bulk's order at ``index``) for a full order table.

        Checked once per message, before the command is journaled: the
        journal holds no trace of it but the ``Reject`` frames, so its
        ``cl_ord_id`` stays free (for after a restart with a larger bound) and
        recovery has nothing to undo. A bulk that arrives before the table is
        full is taken whole, so the table can pass ``max_orders`` by less than
        one bulk.
        """
        ref_type = type(request).__name__
        order = order or request
        if self.orders.used(order.account, order.cl_ord_id):
            # A resend of an order the engine has: the client must learn that it has it.
            return self._refuse_duplicate(session, order, ref_type, index)
        where = f"{ref_type} orders[{index}]" if index >= 0 else ref_type
        self._refuse(session, _RejectReason.ORDER_CAPACITY,
                     f"{where}: the engine holds {len(self.orders)} orders, its [orders] "
                     f"max_orders is {self.max_orders}: no new orders until a day roll forgets "
                     f"done ones or it restarts with a larger bound", "validate",
                     ref_type=ref_type, cl_ord_id=order.cl_ord_id)

    def _admit(self, session: Session, request: BulkNewOrders,
               positions: tuple[int, ...] | None, held: list[HeldReject], now: int
               ) -> tuple[BulkNewOrders | None, tuple[int, ...] | None]:
        """Judge the client key's throttle on each order of a bulk, before it is journaled.

        A throttled order is answered ``Reject`` ``THROTTLED`` and leaves no
        trace but that frame: no order (it would hold a place in the order
        table, ``max_orders``, for the engine's life), no spent ``cl_ord_id``
        (the client resends it when it has slowed down), nothing for
        recovery. An order whose ``cl_ord_id`` its account has used goes on
        to be refused as a duplicate whatever the throttle says: the client
        must learn the engine has it. Returns the bulk to take (None: nothing
        left) and its kept orders' places as sent (see ``Handler.handle``);
        the throttled orders' rejects are added to ``held``, to go out in the
        bulk's order. (A single ``NewOrder`` is judged the same way inline, in
        :meth:`handle`.)
        """
        gate = self._gates.get(session.session_id) or self._gate(session)
        used = self.orders.used
        kept, places = [], []
        for i, order in enumerate(request.orders):
            place = i if positions is None else positions[i]
            if gate.admit(now) and not used(order.account, order.cl_ord_id):
                # (Its text now: the kept orders' risk checks, run before the
                # held rejects go out, overwrite risk's last reject.)
                held.append(HeldReject(place, functools.partial(
                    self._refuse_throttled, session, order, "BulkNewOrders",
                    self.risk.last_reject_text(), place)))
            else:
                kept.append(order)
                places.append(place)
        if not kept:
            return None, None
        if len(kept) == len(request.orders):
            return request, positions
        return msgspec.structs.replace(request, orders=kept), tuple(places)

    def _refuse_throttled(self, session: Session, order: NewOrder, ref_type: str, text: str,
                          index: int = -1) -> None:
        """Answer a new order over its key's throttle (not taken: see :meth:`_admit`) with
        ``text``, risk's words for it when it was judged."""
        self._refuse(session, _RejectReason.THROTTLED,
                     text if index < 0 else f"BulkNewOrders orders[{index}]: {text}", "risk",
                     ref_type=ref_type, cl_ord_id=order.cl_ord_id)

    def _refuse_duplicate(self, session: Session, req: NewOrder, ref_type: str,
                          index: int = -1) -> None:
        """Refuse a new order whose ``cl_ord_id`` its account has already used (``index``:
        its place in a bulk, named as intake names a bulk's orders: ``orders[i]``)."""
        where = f"{ref_type} orders[{index}]" if index >= 0 else ref_type
        self._refuse(session, _RejectReason.DUPLICATE_CL_ORD_ID,
                     f"{where}: cl_ord_id {req.cl_ord_id!r} was already used by account "
                     f"{req.account}", "validate", ref_type=ref_type, cl_ord_id=req.cl_ord_id)

    @property
    def order_table_full(self) -> bool:
        """Whether the order table holds ``max_orders`` (new orders are refused)."""
        return len(self.orders) >= self.max_orders

    def _capacity_refuses(self) -> bool:
        """Whether the order table is full; logs its filling once at 90% and once when full.

        Called once ``by_id`` holds 90% of ``max_orders``: it holds at least
        as many as the table counts (forgotten orders may not have left yet),
        so the cheap look at it misses no filling."""
        held = len(self.orders)
        full = self.order_table_full
        level = 2 if full else 1
        if level > self._capacity_logged:
            self._capacity_logged = level
            if full:
                log.error("order table full: %d orders, [orders] max_orders = %d; new orders "
                          "are refused ORDER_CAPACITY", held, self.max_orders)
            else:
                log.warning("order table 90%% full: %d orders of [orders] max_orders = %d",
                            held, self.max_orders)
        return full

    def _journal_valuation(self, order: Order, arrival_ix: int = -1, account_ix: int = -1) -> int:
        """Journal the price risk valued ``order`` at, when it is not the order's own limit;
        returns that price (ticks).

        Risk values a buy limit at its limit, but a market order or a sell at
        the highest price it may fill at, from the market's reference price
        and the collar: neither is in the journal otherwise, and recovery
        replays the order's exposure at exactly this value. On an order's
        arrival (``arrival_ix``, ``account_ix``: its instrument's and account's
        indexes; -1 after a replace, where ``_take_terms`` moves the hold) a
        market buy is held to that value here (:meth:`_protect`), and the
        record says so: recovery holds it again (a restarted engine routed a
        scheduled market buy's remainder up the book, past the collar).
        """
        if order.side == _Side.BUY and order.ord_type != _OrdType.MARKET:
            return order.price  # (valued at its own limit: no call into risk on the usual path)
        value = self.risk.value_price(order.order_id)
        protect = False
        if arrival_ix >= 0 and order.ord_type == _OrdType.MARKET and order.side == _Side.BUY:
            self._protect(order, account_ix, arrival_ix, value)
            protect = order.protect != 0
        if value != order.price:
            # (JournalValuation(order_id, value_ticks, protect), not made: see _journal_command)
            self.journal.append_as(_RecordKind.META, JournalValuation,
                                   (order.order_id, value, protect))
        return value

    def _protect(self, order: Order, account_ix: int, ix: int, value: int) -> None:
        """Hold a market buy under a collar to the band's upper edge (``Order.protect``):
        ``value``, the price risk valued it at.

        Risk valued it there, assuming fills inside the band; a sweep up the
        book past it would spend more than risk reserved and take buying
        power below zero. So the router takes nothing above it, and what it
        cannot fill within the band is canceled, as a market order's
        remainder is. Without a collar risk values it at the reference
        itself, and it is not held (it would never fill); a collar whose band
        rounds down to no tick values it there too, and it is held there.
        """
        if value > self._references[ix] or self.risk.collared(account_ix, ix):
            order.protect = value

    def _post_only_cross(self, order: Order, inst_ix: int, price: int) -> str | None:
        """Why a post-only order at ``price`` (ticks) would take liquidity now, or None.

        The lit venues' national best decides, as the router sees it. (The
        router would otherwise route a marketable limit as a sweep, and its
        passive placement slides a crossing price below the far touch: both
        are what a post-only order refuses.) The venue still enforces the
        flag on each child, for a market that moves in flight.
        """
        bid, ask = self._nbbo(self._market_ix[inst_ix])
        buy = order.side == _Side.BUY
        touch = ask if buy else bid
        if touch and (price >= touch if buy else price <= touch):
            inst = self.instruments[order.symbol]
            return (f"post_only {'buy' if buy else 'sell'} at {inst.ticks_to_price(price)} would "
                    f"take the {'offer' if buy else 'bid'} at {inst.ticks_to_price(touch)}")
        return None

    # ------------------------------------------------------------ cancel and replace

    def _lookup(self, session: Session, req: Cancel | Replace, now: int,
                spend: bool = True, spent_in: int | None = None) -> Order | None:
        """The order a Cancel or Replace may act on, or None once the request is refused.

        Whatever the outcome, the request's own cl_ord_id is spent on the
        account from here on (unless ``spend`` is false: one that names no
        order it could act on, refused before it is journaled): it is the
        order's name to be while the request is in flight, and no later
        request or order may take it (recovery spends it again from the
        journaled command). ``spent_in``: the trading day (``OrderTable.rolls``) it
        arrived in, for one recovery takes up again: its id is forgotten with that day's,
        as a replay of the journal does.
        """
        fresh = self.orders.reserve(req.account, req.cl_ord_id, spent_in) if spend else \
            not self.orders.used(req.account, req.cl_ord_id)
        order = self.orders.find(req.account, req.orig_cl_ord_id)
        kind = type(req).__name__
        if order is None:
            self._refuse(session, _RejectReason.UNKNOWN_CL_ORD_ID,
                         f"no order {req.orig_cl_ord_id!r} for account {req.account}",
                         kind.lower(), ref_type=kind, cl_ord_id=req.cl_ord_id)
            return None
        # The request's own cl_ord_id becomes the order's alias when it goes
        # through; one already naming an order (this one or another, live or
        # done) or spent by another request would re-point that name and
        # strand the order it named. (A Reject, not an ExecutionReport: a
        # report under that cl_ord_id would read as news of the order it
        # already names; so before any check that answers with one.)
        if not fresh:
            self._refuse(session, _RejectReason.DUPLICATE_CL_ORD_ID,
                         f"cl_ord_id {req.cl_ord_id!r} was already used by account {req.account}",
                         kind.lower(), ref_type=kind, cl_ord_id=req.cl_ord_id)
            return None
        if order.done:
            # Done is final whichever of its ids the request names (a completed
            # Cancel also gave the order a new id, without any replace): FIX's
            # "too late", with the order's state, not an unknown id.
            now_named = "" if req.orig_cl_ord_id == order.cl_ord_id else \
                f" (its cl_ord_id is now {order.cl_ord_id!r})"
            self._cancel_reject(session, order, req, _RejectReason.TOO_LATE_TO_CANCEL,
                                f"order {req.orig_cl_ord_id!r} is done{now_named}")
            return None
        if req.orig_cl_ord_id != order.cl_ord_id:
            # An id the order answered to before a replace (status requests still take
            # it): acting on it would act on terms the sender has not seen replaced
            # (a Replace from that view overwrote the newer quantity). FIX refuses it.
            self._refuse(session, _RejectReason.UNKNOWN_CL_ORD_ID,
                         f"{req.orig_cl_ord_id!r} is no longer the cl_ord_id of its order of "
                         f"account {req.account}: it was replaced, and is now "
                         f"{order.cl_ord_id!r}", kind.lower(), ref_type=kind,
                         cl_ord_id=req.cl_ord_id)
            return None
        pending = self._pending.get(order.order_id)
        # (A Cancel may follow a Replace in flight: see _cancel.)
        if pending is not None and not (
                type(req) is Cancel and isinstance(pending.request, Replace)
                and pending.canceler is None):
            self._cancel_reject(session, order, req, _RejectReason.TOO_LATE_TO_CANCEL,
                                f"order {req.orig_cl_ord_id!r} has a cancel or replace in "
                                f"progress")
            return None
        if req.symbol is not None and req.symbol != order.symbol:
            self._cancel_reject(session, order, req, _RejectReason.INVALID_FIELD,
                                f"symbol {req.symbol!r} is not the order's ({order.symbol})")
            return None
        return order

    def _refuse_replaces_spent(self, session: Session, order: Order, req: Replace) -> None:
        """Refuse a Replace of an order that took all its replaces. Final, as for a done
        order: its later replaces are refused the same way, so a client that keeps sending
        them grows nothing."""
        self._cancel_reject(session, order, req, _RejectReason.ORDER_NOT_REPLACEABLE,
                            f"order {req.orig_cl_ord_id!r} was replaced {order.renames} times, "
                            f"the most one order takes ([orders] max_replaces_per_order): "
                            f"cancel it and send a new order")

    def _replaces_spent(self, order: Order) -> bool:
        """Whether ``order`` took all the replaces one order may (``max_replaces_per_order``).

        Counted by its renames: a live order took a new ``cl_ord_id`` only
        by accepted replaces (a completed cancel renames it too, but leaves
        it done). Recovery renames it as live, so the count survives a
        restart.
        """
        return order.renames >= self.max_replaces_per_order

    def _refuse_pending(self, pending: _Pending, order: Order, reason: int, text: str, *,
                        queued: bool = True) -> None:
        """Refuse a cancel or replace that was in flight, and (``queued``) a Cancel queued
        behind it (their sessions may be gone by now)."""
        refused = [(pending.session_id, pending.request)]
        if queued and pending.canceler is not None:
            refused.append(pending.canceler)
        for session_id, req in refused:
            # A session intake let go meanwhile is answered in the journal all the
            # same (see _send): else the request stayed unanswered there, and every
            # restart took it up again.
            self._cancel_reject(self.sessions.get(session_id) or SessionRef(session_id),
                                order, req, reason, text)

    def _cancel_replaced(self, order: Order, pending: _Pending, now: int, text: str) -> None:
        """Cancel an order whose replace was refused (or expire it, when its DAY ended while
        the replace was in flight); a Cancel queued behind it is answered."""
        if pending.canceler is None:
            if order.order_id in self._expiring:
                return self.expire_working(order, now, text)
            # (To the Replace's session too: it was told the order would come down.)
            return self.cancel_working(order, now, pending.session_id, text=text)
        session_id, cancel = pending.canceler
        orig = order.cl_ord_id
        self.orders.alias(order, cancel.cl_ord_id)
        self.cancel_working(order, now, session_id, orig_cl_ord_id=orig)

    def _cancel_reject(self, session: Session, order: Order, req: Cancel | Replace, reason: int,
                       text: str) -> None:
        # As FIX's OrderCancelReject: cl_ord_id names the refused request (two
        # cancels of one order are told apart), orig_cl_ord_id the order as
        # it stands; the rest is the order's unchanged state.
        self._count_reject(reason, type(req).__name__.lower())
        report = execution_report(order, self.instruments[order.symbol], _ExecType.REJECTED,
                                  reason=reason, text=text, cl_ord_id=req.cl_ord_id,
                                  orig_cl_ord_id=order.cl_ord_id)
        self._send(session.session_id, report)

    def _cancel(self, session: Session, req: Cancel, now: int,
                spent_in: int | None = None) -> None:
        order = self._lookup(session, req, now, spent_in=spent_in)
        if order is None:
            return
        pending = self._pending.get(order.order_id)
        if pending is not None:
            # A replace is taking the children down: the order stays down,
            # the replace is refused, and the CANCELED answers this request.
            pending.canceler = (session.session_id, req)
            if pending.cancel is None:
                pending.cancel = (_RejectReason.ORDER_NOT_REPLACEABLE,
                                  f"canceled by {req.cl_ord_id!r} before the replace completed")
            if pending.amend:
                # Its children were being amended, not taken down: down they
                # come now. An amend a venue applied first still stands
                # (_amend_settled): the Cancel then follows the replace.
                self.router.cancel_parent(order.order_id, now)
            return
        self._pending[order.order_id] = _Pending(session.session_id, req)
        self.router.cancel_parent(order.order_id, now)

    def _gate(self, session: Session):
        """The session's risk gate, made at its first new order's throttle check (before the
        order is journaled, whether or not it is refused) or at its first other command:
        registers it with risk under its client key's throttle bucket."""
        gate = self._gates[session.session_id] = self.risk.session_gate(
            session.session_id, session.client_name)
        return gate

    def _replace(self, session: Session, req: Replace, now: int, admitted: bool = False,
                 filled_at_arrival: int | None = None, spent_in: int | None = None) -> None:
        """Take a Replace: checks, the throttle (unless ``admitted``: recovery takes up one
        that passed it before a restart), then the children come down.
        ``filled_at_arrival``: what the order had filled when the Replace arrived
        (recovery's, from the journal; None: now); ``spent_in``: see :meth:`_lookup`."""
        order = self._lookup(session, req, now, spent_in=spent_in)
        if order is None:
            return
        if self._replaces_spent(order) and not admitted:
            # (One taken up again at recovery passed this before the restart,
            # whatever the bound is now.)
            return self._refuse_replaces_spent(session, order, req)
        inst = self.instruments[order.symbol]
        try:
            new_qty = inst.qty_to_lots(req.qty) if req.qty is not None else order.qty
            new_price = inst.price_to_ticks(req.price) if req.price is not None else order.price
        except ConversionError as exc:
            return self._cancel_reject(session, order, req, exc.reason, str(exc))
        beyond = _beyond_router(inst, new_qty, new_price)
        if beyond:
            return self._cancel_reject(session, order, req, _RejectReason.VALUE_OUT_OF_RANGE,
                                       beyond)
        if order.ord_type == _OrdType.MARKET and req.price is not None:
            return self._cancel_reject(session, order, req, _RejectReason.INVALID_PRICE,
                                       "a MARKET order has no price to replace")
        if order.pulled is not None:
            # Coming down on the engine's own account: routed again with new
            # terms (or, refused, with its old ones) it would trade on.
            return self._cancel_reject(session, order, req, *order.pulled)
        if not self.venues.open_count():
            # Its children would come down and the new terms could go nowhere:
            # the order would be canceled for a replace. It keeps its terms.
            return self._cancel_reject(session, order, req, _RejectReason.NO_ROUTE,
                                       "the venues are closed: the order keeps its terms")
        if order.immediate and order.schedule is None:
            # It trades on arrival and its remainder is canceled: routed
            # again with new terms, it would trade a second time.
            return self._cancel_reject(session, order, req, _RejectReason.ORDER_NOT_REPLACEABLE,
                                       "an IOC or MARKET order trades on arrival: it cannot be "
                                       "replaced")
        if order.post_only and new_price != order.price:
            text = self._post_only_cross(order, self.risk.instrument_index(order.symbol),
                                         new_price)
            if text:
                return self._cancel_reject(session, order, req,
                                           _RejectReason.POST_ONLY_WOULD_CROSS, text)
        if new_qty <= (order.cum_qty if filled_at_arrival is None else filled_at_arrival):
            return self._cancel_reject(session, order, req,
                                       _RejectReason.REPLACE_QTY_NOT_ABOVE_FILLED,
                                       f"new qty {req.qty} is not above the filled "
                                       f"{inst.lots_to_qty(order.cum_qty)}")
        # The throttle does not depend on the new terms: judged now, a replace
        # over the client's rate leaves the order working where it is. The
        # sender's key pays, whichever session placed the order.
        if not admitted:
            gate = self._gates.get(session.session_id) or self._gate(session)
            reason = self.risk.admit_replace(order.order_id, now, gate.session)
            if reason:
                return self._cancel_reject(session, order, req, reason,
                                           self.risk.last_reject_text())
        pending = self._pending[order.order_id] = _Pending(session.session_id, req, new_qty,
                                                           new_price)
        # Fewer lots at the same price: the resting children are amended where
        # they are and keep their queue places, when the router can do it.
        # (Not at recovery: the venues there are new, the order is routed afresh.)
        if (new_price == order.price and new_qty < order.qty and filled_at_arrival is None
                and order.schedule is None and not order.protect
                and self.router.reduce_parent(order.order_id, order.qty - new_qty, now) == 0):
            pending.amend = True
            # (how many children the parent has had: one more when settled means a
            # child ended before its amend landed and the rest went out anew)
            pending.amend_children = self.router.parent(order.order_id)["children"]
            return self._amend_settled(order.order_id, now)
        # Otherwise the children come down first; risk then judges the new
        # terms and the remainder is routed again with them (_finish_replace).
        self.router.cancel_parent(order.order_id, now)

    def _amend_settled(self, order_id: int, now: int) -> None:
        """Finish a replace done by amends (``_Pending.amend``) once the venues have answered
        them all.

        Risk held the old terms until now, since the children could fill
        their old sizes. If every amend took (the router's leaves are the new
        quantity's), what filled meanwhile is below the new quantity and risk
        takes the new terms, the order is replaced where it rests. Anything
        else (a fill that raced an amend, a venue that refused one, risk's
        refusal) goes the usual way: the children come down and
        ``_finish_replace`` judges the replace as it does every other.

        A Cancel (or a kill switch) that came meanwhile has its children
        coming down already. An amend the venues applied before it is a
        fact: the replace is reported, and the Cancel then goes on as one of
        the order with its new terms (FILLED and refused too late, if the
        fills complete it). One that did not take leaves the replace refused
        by ``_finish_replace``, the Cancel winning, as documented.
        """
        pending = self._pending.get(order_id)
        if pending is None or not pending.amend:
            return
        try:
            state = self.router.parent(order_id)
        except KeyError:
            return
        if state["amending"] or state["done"]:
            return  # (done: the parent ended; _parent_finished takes the replace from there)
        pending.amend = False
        order = self.orders.by_id[order_id]
        new_qty = pending.new_qty
        if (new_qty > order.cum_qty and state["leaves_qty"] == new_qty - order.cum_qty
                and not self._judge_replace(order, pending, now)):
            self._replaced(order, pending, self._take_terms(order, pending),
                           "in_place" if state["children"] == pending.amend_children
                           else "routed_again")
            if pending.canceler is not None:
                self._pending[order_id] = _Pending(*pending.canceler)
            else:
                del self._pending[order_id]  # (a kill switch's pull goes on: Order.pulled)
            return
        if pending.cancel is None:  # (else they are coming down already)
            self.router.cancel_parent(order_id, now)

    # ------------------------------------------------------------ venues

    def _execute(self, now: int) -> None:
        """Send the router's queued actions to the venues."""
        venues = self.venues
        for kind, child_id, parent_id, venue, instrument, side, price, qty, ord_type, tif, \
                flags, min_qty in self.router.take_actions():
            if kind == ACT_NEW:
                order = self.orders.by_id.get(parent_id)
                account, stp = (self._venue_account.get(order.account, 0), order.stp) \
                    if order is not None else (0, -1)
                sim_id = venues.submit(venue, self.symbols[instrument], side, qty, price,
                                       ord_type, tif, bool(flags & CF_POST_ONLY), account, stp,
                                       on_report=self._on_report, min_qty=min_qty)
                self._sim_to_child[sim_id] = child_id
                self._child_to_sim[child_id] = sim_id
                self._child_parent[child_id] = parent_id
                if order is not None:
                    # A midpoint peg's price is only its protective limit: it
                    # trades at the venue's midpoint, so it shows none (0).
                    shown = 0 if flags & CF_MID_PEG else price
                    name = self.venue_names[venue]
                    order.children[child_id] = Child(child_id, name, shown, qty)
                    self._child_new.append((child_id, parent_id, name, shown, qty))
            elif kind == ACT_CANCEL:
                sim_id = self._child_to_sim.get(child_id)
                if sim_id is not None:
                    venues.cancel(sim_id)
            elif kind == ACT_REPLACE:
                sim_id = self._child_to_sim.get(child_id)
                if sim_id is not None:
                    venues.replace(sim_id, price, qty)

    def _venue_report(self, report) -> None:
        """A venue's report about a child order (runs on the loop, from the venues' task)."""
        now = time.time_ns()
        if not self._clock_lo <= now < self._clock_hi:
            self.watch_clock(now)
        if now >= self._next_roll:
            self.roll_day(now)
        sim_id = report.child_id
        child_id = self._sim_to_child.get(sim_id)
        if child_id is None:
            return
        router = self.router
        kind = report.kind
        # (Read before the report may forget the child: an amend may settle.)
        amended = self._child_parent.get(child_id) if self._pending else None
        # A fill with leaves 0 ends the child whether it filled all it was sent or
        # not (the venue cut it, or dropped an IOC's rest unreported): the router
        # ends it there too, so a report of it that follows is no one's.
        ends = kind in _CHILD_ENDS
        if kind == _ReportKind.RPT_FILL:
            # (The report's fields read once each: every read of one makes an int.)
            qty, px_x2, leaves = report.last_qty, report.price_x2, report.leaves_qty
            # (fee, leaves: positional, keywords cost the call their parsing)
            router.on_fill(child_id, qty, px_x2, now, report.fee, leaves)
            self._parent_fill(child_id, report.venue, qty, px_x2, leaves, now)
            ends = leaves == 0
            if not ends:  # (a fill before the ack confirms the child resting too)
                self._read_again(report.book)
        elif kind == _ReportKind.RPT_ACCEPTED:
            router.on_ack(child_id, now)
            self._read_again(report.book)
            self._child_accepted(child_id)
        elif kind == _ReportKind.RPT_REJECTED:
            router.on_reject(child_id, report.reason, now)
        elif kind == _ReportKind.RPT_CANCELED:
            if report.reason == _CXL_SELF_TRADE:
                self._self_trade(child_id, now)  # (first: the router must not post it again)
            router.on_canceled(child_id, now)
        elif kind == _ReportKind.RPT_EXPIRED:
            router.on_expired(child_id, now)
        elif kind == _ReportKind.RPT_REPLACED:
            router.on_replaced(child_id, now)
            self._read_again(report.book)
            self._child_replaced(child_id, report)
        elif kind == _ReportKind.RPT_CANCEL_REJECTED:
            router.on_replace_rejected(child_id, now)
        if ends:  # (the child is forgotten: here, not a call per report)
            self._sim_to_child.pop(sim_id, None)
            self._child_to_sim.pop(child_id, None)
            order = self.orders.by_id.get(self._child_parent.pop(child_id, None))
            if order is not None and end_child(order, child_id):  # (the child is done)
                self._child_done.append(child_id)
        if amended is not None:
            self._amend_settled(amended, now)
        # This runs inside the venues' own event processing, which must not
        # be re-entered: what the router wants sent goes out right after it.
        if not self._pump_scheduled and (router.pending_actions or router.pending_finished):
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._deferred_pump)

    def _read_again(self, book: int) -> None:
        """Have the next ``refresh_market`` read the market's ``book`` (its index) into the
        router even if it has not changed since it was last read.

        The venue just confirmed a child resting there (an ack, a replace, a fill before
        the ack). The router hides such a child from its account's CANCEL_OLDEST sweeps
        only in a depth read after that confirmation: one read before may predate the
        child. The book changed when the child reached the venue, but a read between
        then and the report (a tick's) took that change, and a quiet book changed no
        more: read only on a change, the router never got a depth after the ack, and
        the sweep priced at the order's own lots, which STP then took while a third
        party's, inside the limit, stayed untouched. The read is only marked due here:
        the report runs inside the venues' own processing, and a book that changes
        before the next read is read once either way.
        """
        mark = self._book_marks[book]
        if mark is not None:  # (a dark pool's: the router holds no depth of it)
            marks, v, ix = mark
            marks[v] = -1
            self._recopy.add(ix)

    def _self_trade(self, child_id: int, now: int) -> None:
        """A venue canceled a child by self-trade prevention: cancel its order.

        The venue applied the order's ``stp`` mode (the resting order under
        CANCEL_OLDEST, the incoming one under CANCEL_NEWEST, both under
        CANCEL_BOTH); to the router it was an ordinary cancel, and a resting
        order's child was posted again, at once, where it would meet the same
        order of its own account. The order is canceled instead, saying why.
        """
        order = self.orders.by_id.get(self._child_parent.get(child_id))
        if order is None or order.done or order.pulled is not None:
            return
        venue = order.children[child_id].venue if child_id in order.children else "a venue"
        # (A replace in flight must not send it back to meet its own account again.)
        self._pull((order.order_id,), now, _RejectReason.ORDER_NOT_REPLACEABLE,
                   f"canceled by self-trade prevention at {venue}: it met an order "
                   f"of its own account")

    def _child(self, child_id: int) -> Child | None:
        """A child still at its venue, as its order lists it (None once it is forgotten)."""
        order = self.orders.by_id.get(self._child_parent.get(child_id))
        return order.children.get(child_id) if order is not None else None

    def _child_replaced(self, child_id: int, report) -> None:
        """The venue repriced a child (the router's ACT_REPLACE): its new terms, as the venue
        confirms them, are what status requests show."""
        child = self._child(child_id)
        if child is not None:
            if child.price:  # (a market or midpoint child keeps none)
                child.price = report.price_x2 // 2
            child.qty = report.order_qty
            self._child_repriced.append((child_id, child.price, child.qty))

    def _child_accepted(self, child_id: int) -> None:
        """The venue acknowledged a child: status requests show it at the venue, no longer
        on its way."""
        child = self._child(child_id)
        if child is not None and not child.acked:
            child.acked = True
            self._child_acked.append(child_id)

    def _deferred_pump(self) -> None:
        self._pump_scheduled = False
        self._pump(time.time_ns())

    def _parent_fill(self, child_id: int, venue_ix: int, qty: int, px_x2: int, leaves: int,
                     now: int) -> None:
        """Book a venue's fill of ``qty`` lots at ``px_x2`` half-ticks of a child (the
        venue ``venue_ix`` still works ``leaves`` of it) in its order, risk and the fill
        history, and report it."""
        order = self.orders.by_id.get(self._child_parent.get(child_id))
        # (A FILLED order still takes fills: a venue overfilling it, below.)
        if order is None:
            return
        venue = self.venue_names[venue_ix]
        # (``order.stage in TERMINAL`` is ``order.done``, without the property's Python
        # frame: here and in _parent_finished, once or twice an order.)
        stage = order.stage
        if stage in TERMINAL and stage != _Stage.FILLED:
            # Only a venue at fault fills a child after its order ended (the engine ends
            # an order once its children are down, draining ones included: the router
            # waits for them); not booked (docs/protocol.md).
            log.error("venue %s filled %d lots of child %d of order %s, which is %s: "
                      "not booked", venue, qty, child_id, order.order_id,
                      order.stage.name)
            return
        if not (0 < qty <= ROUTER_MAX_QTY and 0 < px_x2 <= _MAX_PX_X2):
            # Not a trade but a venue adapter's fault, which the router and risk
            # refuse too: booked here alone, the order would disagree with both.
            log.error("venue %s reported a fill of %d lots at %d half-ticks for child %d: "
                      "refused (not from 1 to %d lots, or not from 1 to %d half-ticks)",
                      venue, qty, px_x2, child_id, ROUTER_MAX_QTY, _MAX_PX_X2)
            return
        # (The child's cum_qty and acked too: a venue may send a fill without an ack.)
        child = fill_child(order, child_id, qty, px_x2, now)
        if child is not None:
            self._child_fills.append((child_id, qty))
            if child.cum_qty > child.qty:
                self._child_overfilled(child, qty)
            if child.cum_qty - qty < child.qty <= child.cum_qty and leaves > 0:
                # The fill that completed the child left the venue working more of
                # it: the router drains it (cancels the rest there, once, and books
                # what it fills until the venue is done with it). Said once a child.
                log.warning("venue %s still works %d lots of child %d, which has filled "
                            "%d of %d: canceling them there", venue, leaves,
                            child_id, child.cum_qty, child.qty)
        px = fill_ticks(order.side, px_x2)  # (risk books whole ticks)
        if order.cum_qty <= order.qty:
            self.risk.on_fill(order.order_id, qty, px)
        else:
            self._overfill(order, child_id, venue, qty, px)
        self._exec_id += 1
        exec_id = f"{order.order_id}-{self._exec_id}"
        fills = self._fills_count
        if fills is not None:
            fills.value += 1  # (LoopCounter.inc's addition, without its calls)
        # The report (_report's steps, inline: one positional call makes it and the fill)
        # and the fill as the report gives it (time included), as recovery and the
        # trade store have it.
        inst = self.instruments.get(order.symbol) or self._instrument(order.symbol)
        report, trade_fill = fill_report(
            order, inst, _ExecType.FILL if order.stage == _Stage.FILLED else _ExecType.PARTIAL_FILL,
            qty, px_x2, venue, exec_id)
        session_id = order.session_id
        session = self.sessions.get(session_id)
        order.report_seq = session.send(report) if session is not None \
            else self._send(session_id, report)
        self.history.add(order.account, trade_fill)

    def _overfill(self, order: Order, child_id: int, venue: str, qty: int, px: int) -> None:
        """Book in risk a fill that took ``order`` past its quantity: a venue's fault, but a fact.

        Every lot is booked (the order has them already; the router too, and
        routes none again; risk by :func:`risk_fill`). The order says
        ``overfilled`` (``OrderStatusReply``), and a WARNING says so (the venue at
        fault is counted by :meth:`_child_overfilled`).
        """
        risk_fill(self.risk, order, qty, px)
        log.warning("venue %s overfilled order %s (%s): %d lots filled of %d "
                    "(child %s, fill of %d); booked in full", venue, order.order_id,
                    order.cl_ord_id, order.cum_qty, order.qty, child_id, qty)

    def _child_overfilled(self, child: Child, qty: int) -> None:
        """A venue filled ``child`` past what was sent to it: its fault, counted against it
        (``kronos_overfills``) and logged. Judged per child, not per order: the fill that
        takes the order past its quantity may be another venue's honest one."""
        log.warning("venue %s filled child %d past its quantity: %d lots of %d (fill of %d)",
                    child.venue, child.child_id, child.cum_qty, child.qty, qty)
        if self.metrics is not None:
            self.metrics.overfills.labels(child.venue).inc()

    def _pump(self, now: int) -> None:
        """Send what the router queued and close the parents it finished."""
        router = self.router
        while router.pending_actions or router.pending_finished:
            self._execute(now)
            if router.pending_finished:
                for parent_id, status, reason in router.take_finished():
                    self._parent_finished(parent_id, status, reason, now)

    def _parent_finished(self, order_id: int, status: int, reason: int, now: int) -> None:
        order = self.orders.by_id.get(order_id)
        if order is None:
            return
        pending = self._pending.pop(order_id, None)
        done = order.stage in TERMINAL  # (order.done, without the property's frame)
        if pending is not None and isinstance(pending.request, Replace) \
                and not done and status != _OrdStatus.EXPIRED:
            return self._finish_replace(order, pending, now)
        if done:  # filled in full while its last children reported in
            if pending is not None:
                self._refuse_pending(pending, order, _RejectReason.TOO_LATE_TO_CANCEL,
                                     "order is filled")
            return
        if status == _OrdStatus.EXPIRED:
            self.expire_working(order, now, (
                # (its day ended at the roll while a venue expired its last child:
                # the engine's reason is the one the client can act on)
                order.cancel_text if order_id in self._expiring
                else "its schedule's window ended" if order.schedule is not None
                # (a child the venue expired at its close finishes the order with
                # no reason of the router's: the venues' state tells)
                else "the venues closed: its day is over"
                if reason == _RejectReason.VENUE_CLOSED or not self.venues.open_count()
                else "its time in force ran out"))
            if pending is not None:  # (its time in force ran out first)
                self._refuse_pending(pending, order, _RejectReason.TOO_LATE_TO_CANCEL,
                                     "order expired")
        elif pending is None and order_id in self._expiring:
            # Its DAY ended at the roll and its children are down (_expire_day_orders).
            self.expire_working(order, now, order.cancel_text)
        else:
            # (The report's text or orig_cl_ord_id as plain values, not a dict of keywords
            # passed on through two ``**kw`` calls: about one order in two ends here.)
            text = orig = None
            if pending is not None:
                # The report answers the cancel: its cl_ord_id, the order's as orig.
                orig = order.cl_ord_id
                self.orders.alias(order, pending.request.cl_ord_id)
            elif order.cancel_text is not None:
                text = order.cancel_text
            elif order.protect:
                text = (f"unfilled remainder of a market order: nothing more at or below "
                        f"{self._instrument(order.symbol).ticks_to_price(order.protect)}, "
                        f"the collar's upper edge")
            elif reason:
                text = f"canceled by the router: {reject_name(reason)}"
            elif order.tif == _IOC or order.ord_type == _MARKET:  # (order.immediate, inline)
                text = "unfilled remainder of an immediate order"
            self.cancel_working(order, now, pending.session_id if pending is not None else None,
                                text, orig)

    def _finish_replace(self, order: Order, pending: _Pending, now: int) -> None:
        """The replaced order's children are down: apply the new terms, or say why not.

        Until now risk held the old terms, which is what the children could
        still fill, so fills that raced the replace were booked exactly. Now:

        * an order pulled meanwhile (kill switch, cancel-on-disconnect) is
          canceled, and the replace refused with that reason;
        * if what filled meanwhile reaches the new quantity, the replace is
          refused and the rest canceled: buying more would pass the client's
          new total;
        * risk judges the new terms; if it refuses them, the replace is
          refused and the order goes on with its old terms, routed again;
        * else the order takes the new terms and is routed again with them.
        """
        req = pending.request
        inst = self.instruments[order.symbol]
        new_qty, new_price = pending.new_qty, pending.new_price
        if pending.cancel is not None:
            reason, text = pending.cancel
            # (A queued Cancel is answered by the CANCELED report, not refused.)
            self._refuse_pending(pending, order, reason, text, queued=False)
            return self._cancel_replaced(order, pending, now, text)
        if new_qty <= order.cum_qty:
            filled = inst.lots_to_qty(order.cum_qty)
            self._refuse_pending(pending, order, _RejectReason.REPLACE_QTY_NOT_ABOVE_FILLED,
                                 f"{filled} filled while the replace was in flight; new qty "
                                 f"{req.qty} is not above it")
            # (The CANCELED goes to the Replace's session too: its request ended the order.)
            return self.cancel_working(
                order, now, pending.session_id,
                text=f"replace to {req.qty} came after {filled} had filled: the rest is canceled")
        ix = self.risk.instrument_index(order.symbol)
        self.refresh_market(ix, now)
        # The market may have moved onto a post-only order's new price while
        # the children came down: that refuses the replace, not the order.
        cross = self._post_only_cross(order, ix, new_price) if order.post_only else None
        if cross:
            reason, why = _RejectReason.POST_ONLY_WOULD_CROSS, cross
        else:
            reason = self._judge_replace(order, pending, now)
            why = self.risk.last_reject_text() if reason else None
        if reason:
            self._refuse_pending(pending, order, reason, why)
            code, why = self.route_remainder(order, ix, now)
            if code:
                self.cancel_working(order, now, pending.session_id,
                                    text=f"could not be routed again after its replace was "
                                         f"refused: {why}")
            return
        orig = self._take_terms(order, pending)
        reason, _ = self.route_remainder(order, ix, now)
        if reason:
            return self.cancel_working(
                order, now, pending.session_id, orig_cl_ord_id=orig,
                text=f"replaced order could not be routed: {reject_name(reason)}")
        self._replaced(order, pending, orig, "routed_again")

    def _judge_replace(self, order: Order, pending: _Pending, now: int) -> int:
        """Risk's judgement of a replace's new terms (its throttle was judged when it
        arrived); 0 when risk takes them, else the reason, the old terms kept."""
        return self.risk.on_replace(order.order_id, pending.new_qty, pending.new_price,
                                    cl_ord_hash(pending.request.cl_ord_id, order.account), now,
                                    admitted=True)

    def _take_terms(self, order: Order, pending: _Pending) -> str:
        """The order takes a replace's terms and its cl_ord_id; returns the id it had."""
        orig = order.cl_ord_id
        self.orders.alias(order, pending.request.cl_ord_id)
        order.qty, order.price = pending.new_qty, pending.new_price
        value = self._journal_valuation(order)  # (risk valued the new terms)
        if order.protect:
            # A collared market buy is held where risk values it (_protect): a replace
            # that added lots was valued at the reference + band of now, and held at the
            # arrival's edge it could fill above that, past what risk reserved.
            order.protect = value
        return orig

    def _replaced(self, order: Order, pending: _Pending, orig: str, path: str) -> None:
        """Report a replace done (``path``: ``in_place`` or ``routed_again``, the metric's)."""
        self._report(order, _ExecType.REPLACED, pending.session_id, orig_cl_ord_id=orig)
        if self.metrics is not None:
            self.metrics.replaces.labels(path).inc()

    def route_remainder(self, order: Order, ix: int, now: int) -> tuple[int, str | None]:
        """Route what is left of a working order again (after a replace, or at recovery).

        Returns ``(0, None)``, or the reject code and why when it cannot go:
        the router refuses it, or it is post-only and the market has moved
        onto its price (routing it would take liquidity).
        """
        if order.post_only:
            cross = self._post_only_cross(order, ix, order.price)
            if cross:
                return _RejectReason.POST_ONLY_WOULD_CROSS, cross
        schedule = None if order.schedule is None else \
            _remaining_schedule(order, now, self.router.config["twap_slices"])
        reason = self._route(order, ix, order.qty - order.cum_qty, now, schedule)
        return reason, reject_name(reason) if reason else None

    def _route(self, order: Order, ix: int, qty: int, now: int,
               schedule: dict | None = None) -> int:
        """Hand ``qty`` lots of the order to the router on its terms (strategy, limit,
        time in force, ``schedule``: the router's schedule keywords, None for an order
        without one) and its account's self-trade scope; returns the router's reject code,
        0 when routed."""
        # (A dict, not ``**schedule``: a ``**`` function makes a dict at every call, and
        # nearly every order has no schedule.)
        if order.strategy == STRAT_POV:
            # What printed before now is not the order's to take part in: the
            # router hears of it here, not at the next tick, after the arrival.
            self._report_volume(ix)
        price, tif = order.price, order.tif
        if order.protect:
            # Swept up to it, and no further: a market order never rests
            # (a schedule's slices are sweeps already).
            price, tif = order.protect, (tif if order.schedule is not None else _TimeInForce.IOC)
        account = self._venue_account.get(order.account, 0)
        if schedule:
            return self.router.route(order.order_id, ix, order.side, qty, price, now,
                                     order.strategy, tif, **schedule, stp_account=account,
                                     stp=order.stp)
        # (The usual order, none: the call takes its keywords as such, with no dict of
        # them built and merged for it.)
        return self.router.route(order.order_id, ix, order.side, qty, price, now,
                                 order.strategy, tif, stp_account=account, stp=order.stp)

    def cancel_working(self, order: Order, now: int, requester: str | None = None,
                       text: str | None = None, orig_cl_ord_id: str | None = None) -> None:
        """Cancel a working order the engine takes out of the market itself, and report
        it (to ``requester`` too: see :meth:`_report`) with ``text`` and ``orig_cl_ord_id``."""
        self.risk.on_cancel(order.order_id)
        order.advance(_Stage.CANCELED, now)
        self._report(order, _ExecType.CANCELED, requester, text, orig_cl_ord_id)

    def expire_working(self, order: Order, now: int, text: str) -> None:
        """End a working order ``EXPIRED`` (its time in force or schedule ran out), release
        it at risk and report it to its session with ``text``.

        Parameters
        ----------
        order : Order
            A working order whose children are down (or that recovery finishes: the
            venues' children did not outlive the engine).
        now : int
            ns since the epoch.
        text : str
            Why, for the report's ``text``.
        """
        self._expiring.discard(order.order_id)
        self.risk.on_cancel(order.order_id)
        order.advance(_Stage.EXPIRED, now)
        self._report(order, _ExecType.EXPIRED, None, text)

    # ------------------------------------------------------------ queries and admin

    def _status(self, session: Session, req: OrderStatusRequest) -> None:
        order = self.orders.find(req.account, req.cl_ord_id)
        if order is None:
            reason = _RejectReason.UNKNOWN_CL_ORD_ID
            msg = OrderStatusReply(cl_ord_id=req.cl_ord_id, account=req.account, found=False,
                                   reject_reason=int(reason), reject_name=reject_name(reason),
                                   text=f"no order {req.cl_ord_id!r} for account {req.account}",
                                   transact_time=time.time_ns())
        else:
            inst = self._instrument(order.symbol)
            report = order.last_report
            if order.report_seq and report.seq != order.report_seq:
                # The report as its session got it (the order keeps the
                # unstamped one: stamping a copy per report would cost every
                # report; recovery keeps the journaled, stamped frame).
                report = msgspec.structs.replace(report, seq=order.report_seq)
            msg = OrderStatusReply(
                cl_ord_id=req.cl_ord_id, account=req.account, found=True,
                report=report, transact_time=time.time_ns(), overfilled=order.overfilled,
                stages=[StageTime(stage=stage.name, time=t) for stage, t in order.transitions],
                children=[ChildState(child_id=str(c.child_id), venue=c.venue,
                                     price=inst.ticks_to_price(c.price) if c.price else None,
                                     qty=inst.lots_to_qty(c.qty),
                                     cum_qty=inst.lots_to_qty(c.cum_qty), done=c.done,
                                     acked=c.acked)
                          for c in order.children.values()])
        self._send(session.session_id, msg)

    def _history(self, session: Session, req: TradeHistoryRequest) -> None:
        answer = self.history.query(req.account, req.start_time, req.end_time, req.symbol)
        store = self.trade_store
        if answer.complete or store is None:
            return self._history_reply(session.session_id, req, answer.fills, answer, None)
        # What memory dropped comes from the trade store, off the loop (a
        # database round trip); the answer goes out when it is back.
        end = min(req.end_time, answer.complete_from_ns)

        def fetch() -> list[TradeFill] | str:
            if store.delivered_position() < answer.store_position:
                return "the trade store has not caught up with the fills memory dropped"
            return store.fills(req.account, req.start_time, end, req.symbol)

        def done(future: asyncio.Future) -> None:
            try:
                older = future.result()
            except Exception as exc:  # noqa: BLE001 - the store's failure is the client's answer
                older = clip_text(f"the trade store failed: {type(exc).__name__}: {exc}")
            if isinstance(older, str):
                return self._history_reply(session.session_id, req, answer.fills, answer, older)
            self._history_reply(session.session_id, req, TradeHistory.merge(older, answer.fills),
                                None, None)

        asyncio.get_running_loop().run_in_executor(None, fetch).add_done_callback(done)

    def _history_reply(self, session_id: str, req: TradeHistoryRequest, fills: list[TradeFill],
                       incomplete: HistoryAnswer | None, why: str | None) -> None:
        """Send ``fills`` in parts; ``incomplete``: the memory answer they fall short as."""
        text = None
        if incomplete is not None and not incomplete.complete:
            head = (f"fills before {incomplete.complete_from_ns} ns are no longer held in "
                    f"memory (history.max_fills_per_account = "
                    f"{self.history.max_fills_per_account}); ")
            tail = "the trade store (postgres gateway) and the journal have them"
            if why:
                # ``why`` may be a store's failure of up to MAX_TEXT characters itself:
                # cut to what the sentence leaves (the client refuses a longer text).
                head += f"{clip_text(why, MAX_TEXT - len(head) - len(tail) - 2)}; "
            text = head + tail
        complete = incomplete is None or incomplete.complete
        # One request is answered with a bounded page (every part sent is kept in the
        # session's ring and journaled): the rest is asked for from next_start.
        fills, next_start = self.history.page(fills)
        parts = [fills[i:i + HISTORY_PART] for i in range(0, len(fills), HISTORY_PART)] or [[]]
        for k, part in enumerate(parts):
            self._send(session_id, TradeHistoryReply(
                req_id=req.req_id, account=req.account, fills=part, last=k == len(parts) - 1,
                transact_time=time.time_ns(), complete=complete,
                complete_from=0 if complete else incomplete.complete_from_ns, text=text,
                next_start_time=next_start))

    def _kill_switch(self, session: Session, req: KillSwitch, now: int) -> None:
        actor = f"{session.client_name} ({session.session_id})"
        scope = RISK_SCOPE[req.scope]
        named = kill_switch_scope(req.scope, req.target)
        engaged = self.risk.kill_switches()
        was_engaged = engaged["global"] if scope == "global" else \
            req.target in engaged["accounts" if scope == "account" else "instruments"]
        try:
            if req.action == "engage":
                keys = self.risk.engage_kill_switch(scope, req.target, now_ns=now, actor=actor,
                                                    reason=req.text or "")
                self._pull(keys, now, _RejectReason.KILL_SWITCH,
                           f"canceled: kill switch engaged ({named})")
                text = f"kill switch engaged ({named}); {len(keys)} working orders canceled" + \
                    ("; it was engaged already" if was_engaged else "")
            else:
                self.risk.release_kill_switch(scope, req.target, now_ns=now, actor=actor,
                                              reason=req.text or "")
                text = f"kill switch released ({named})" + \
                    ("" if was_engaged else "; it was not engaged")
        except (KeyError, ValueError) as exc:
            reason = _RejectReason.INVALID_FIELD
            why = clip_text(f"unknown {req.scope} {req.target!r}" if isinstance(exc, KeyError)
                            else str(exc))
            self._count_reject(reason, "admin")
            return self._send(session.session_id, AdminReply(
                req_id=req.req_id, ok=False, reject_reason=int(reason),
                reject_name=reject_name(reason), text=why, transact_time=now))
        log.warning("%s by %s: %s", "kill switch", actor, text)
        self._send(session.session_id, AdminReply(req_id=req.req_id, ok=True, text=text,
                                                  transact_time=now))

    def _reload(self, session: Session, req: ReloadLimits, now: int) -> None:
        if self.reload_limits is None:
            ok, text = False, "this engine has no configuration file to reload"
        else:
            try:
                config = self.reload_limits()
                self._check_reload(config)
                self.risk.reload(config, now, f"{session.client_name} ({session.session_id})")
                ok, text = True, "risk limits reloaded; running counters kept"
            except Exception as exc:  # a bad file leaves the running limits in force
                ok, text = False, clip_text(f"reload refused, limits unchanged: {exc}")
        reason = 0 if ok else _RejectReason.INVALID_FIELD
        if reason:
            self._count_reject(reason, "admin")
        self._send(session.session_id, AdminReply(
            req_id=req.req_id, ok=ok, text=text, reject_reason=int(reason),
            reject_name=reject_name(reason) if reason else None, transact_time=now))

    def _check_reload(self, config: dict) -> None:
        """Refuse a reload that takes out an account the engine cannot do without.

        Risk keeps an account left out of the file (its orders refused
        UNKNOWN_ACCOUNT), but the next start replays the journal under the
        file: an account with accepted orders in it would stop the engine from
        starting, and one with a kill switch engaged would come back without
        it. ``active = false`` stops an account's trading and keeps both.
        (Only the orders of an account the file leaves out are read.)
        """
        kept = config.get("accounts", {})
        dropped = {name for name in self.risk.accounts if name not in kept}
        if not dropped:
            return
        killed = sorted(dropped & set(self.risk.kill_switches()["accounts"]))
        if killed:
            raise ValueError(f"account {killed[0]!r} is left out of [risk.accounts] with its "
                             f"kill switch engaged: release it first, or keep the account with "
                             f"active = false")
        for account in sorted(dropped):
            if account in self.orders.accounts_forgotten or \
                    any(o.stage != _Stage.REJECTED for o in self.orders.orders_of(account)):
                raise ValueError(f"account {account!r} is left out of [risk.accounts] "
                                 f"but has orders in the journal, which a restart replays "
                                 f"under it: keep it, with active = false to stop its trading")

    # ------------------------------------------------------------ time

    def roll_day(self, now: int) -> None:
        """A trading day ended: reset risk's daily counters, forget the orders done
        ``keep_done_days`` rolls ago (``OrderTable.begin_roll``: at once for every lookup,
        their entries leaving in steps, ``EngineService._forget_step``), expire the working
        DAY orders (:meth:`_expire_day_orders`), and journal where it happened.

        Checked before anything that moves risk (a request, a venue report,
        the router's tick), so every fill counts in the day it happened, and
        recovery resets and forgets at the same point of the journal.
        """
        day = self.trading_day.day_of(now)
        self.risk.reset_daily(now, "engine")
        self.last_roll_seq = self.journal.append_msg(_RecordKind.META, JournalDayRoll(
            day=day.isoformat(), keep_done_days=self.keep_done_days), ts_ns=now)
        self.day_started_at(now, rolled=True)
        forgotten = self.orders.begin_roll(self.keep_done_days)
        if len(self.orders) < self._capacity_check_at:
            self._capacity_logged = 0  # (the next filling is logged again)
        log.info("trading day %s begins: daily risk counters reset; %d done orders forgotten, "
                 "%d held", day, forgotten, len(self.orders))
        self._expire_day_orders(now)

    def watch_clock(self, now: int, first: bool = False) -> None:
        """Look at the wall clock, which reads ``now``, against the monotonic clock since the
        last look: a step (more than ``CLOCK_STEP_NS`` apart) is :meth:`clock_stepped`.

        The service's tick looks every 50 ms at most. A request or a venue report
        looks only when its ``now`` is more than ``CLOCK_STEP_NS`` from the last look
        (one comparison otherwise): without it, a report between a step and the next
        tick was judged against the router's unshifted deadlines, and a child sent
        then took its send time from the stepped clock and was shifted once more by
        the tick.
        """
        mono = time.monotonic_ns()
        if not first:
            step = (now - self._wall_seen) - (mono - self._mono_seen)
            if abs(step) > CLOCK_STEP_NS:
                self.clock_stepped(step)
        self._wall_seen, self._mono_seen = now, mono
        self._clock_lo, self._clock_hi = now - CLOCK_STEP_NS, now + CLOCK_STEP_NS

    def clock_stepped(self, step: int) -> None:
        """The wall clock was set ``step`` ns forward or back (the service saw it against
        the monotonic clock): the router's deadlines move with it, so a step forward does
        not time out children that were answered in time, nor a step back hide a venue
        that stopped answering."""
        log.warning("the wall clock stepped %+.3f s; the router's deadlines move with it",
                    step / 1e9)
        self.router.shift_clock(step)

    def _clock_went_back(self, now: int) -> None:
        """The wall clock stepped back past the moment the current trading day began
        (seen by the router's tick): :meth:`went_back`, logged."""
        log.warning("the wall clock went back %.3f s past the start of the trading day; the "
                    "next roll is taken from the clock again, unless it is the one just taken",
                    (self._day_entered - now) / 1e9)
        self.went_back(now)

    def went_back(self, ns: int) -> None:
        """The clock reads ``ns``, before the moment the current trading day began: the next
        roll is the clock's again, unless the clock is less than ``ROLL_RETAKE_NS`` before
        the roll instant the last roll took.

        A step forward may have rolled the day early and put the next roll a
        day too far: kept, the real roll would be skipped and the daily
        limits would run on for two days. But a step back of a few seconds
        just after a roll (a clock that ran fast, corrected) must not bring
        that roll round again: rolled twice, the engine would forget the done
        orders it keeps for the new day and expire the DAY orders placed in
        it. Recovery applies the same rule to the journal's timestamps, so a
        restart rolls where the live engine would have.
        """
        next_roll = self.trading_day.next_roll(ns)
        if next_roll == self._roll_taken and ns > next_roll - ROLL_RETAKE_NS:
            next_roll = self.trading_day.next_roll(next_roll)
        self._next_roll = next_roll
        self._day_entered = ns

    def day_started_at(self, ns: int, rolled: bool = False) -> None:
        """The current trading day is the one ``ns`` belongs to (start, a roll, recovery: the
        journal's first record and each roll); a roll is due at once if it has ended
        since. ``_day_entered``: when the clock entered it (a clock going back before that
        takes the next roll from the clock again, see :meth:`went_back`). ``rolled``: a roll
        happened at ``ns``, taking the roll instant before it."""
        if rolled:
            self._roll_taken = self.trading_day.last_roll(ns)
        self._next_roll = self.trading_day.next_roll(ns)
        self._day_entered = ns

    def _expire_day_orders(self, now: int) -> None:
        """Take down every working DAY order at a trading-day roll: they end ``EXPIRED``.

        A DAY order means the day: one still working at the roll (parked in
        the router, waiting for a schedule's slice, resting at a venue that
        does not close, a schedule whose window runs past the roll) would
        otherwise trade on into the next day. Its children are canceled at
        the venues, and once they are down the order is reported ``EXPIRED``
        with a text naming the day (:meth:`_parent_finished`); risk releases
        it then, as for any end. GTC orders carry over.

        The pull is journaled (``JournalPulled``, ``expire``, written at
        once), so an engine stopped before the venues confirm the cancels
        finishes these orders EXPIRED at its restart instead of routing them
        again (``recovery._finish_pulled``); stopped before the record is
        written, it finds the roll due and expires them at its start
        (``recovery.resume_working``).

        Left alone: an order the engine is pulling already (a kill switch: it
        ends CANCELED as its admin was told) and one a client's Cancel is
        taking down (its CANCELED answers the Cancel). A Replace in flight is
        refused ``TOO_LATE_TO_CANCEL`` with the expiry's text and the order
        expires, as a Replace arriving while the children come down is.
        Nothing is sent here: each caller of ``roll_day`` pumps the router
        (a venue report's pump comes right after the venues' own processing).

        Parameters
        ----------
        now : int
            The roll's time, ns since the epoch.
        """
        # Ids that ended another way while being expired at an earlier roll.
        # (An order the table forgot since is done too.)
        by_id = self.orders.by_id
        self._expiring = {order_id for order_id in self._expiring
                          if order_id in by_id and not by_id[order_id].done}
        by_day: dict[dt.date, list[int]] = {}
        pending = self._pending
        day_of = self.trading_day.day_of
        for order in self.orders.working():
            if order.tif != _TimeInForce.DAY or order.pulled is not None:
                continue
            waiting = pending.get(order.order_id)
            if waiting is not None and (type(waiting.request) is Cancel
                                        or waiting.canceler is not None):
                continue
            # Named by the trading day it was placed in: an engine down across
            # several rolls expires its orders for the day they belonged to.
            by_day.setdefault(day_of(order.created_ns), []).append(order.order_id)
        for day, order_ids in sorted(by_day.items()):
            log.info("trading day %s ended: %d DAY orders expire", day, len(order_ids))
            self._pull(order_ids, now, _RejectReason.TOO_LATE_TO_CANCEL,
                       f"DAY order expired at the end of trading day {day.isoformat()}",
                       expire=True)
        # A roll on the router's tick sends nothing to any client, so nothing
        # else would write its records (the roll, the pulls) until the next
        # message: killed meanwhile, the engine would lose them.
        self._flush_soon()

    def _report_volume(self, ix: int) -> None:
        """Tell the router what the market printed in instrument ``ix`` since it was last told."""
        printed = self.venues.market.market_volume(self.symbols[ix])[0]
        seen = self._volume_seen
        if printed > seen[ix]:
            self.router.on_market_volume(ix, printed - seen[ix])
            seen[ix] = printed

    def _changed(self) -> list[int]:
        """The engine's instruments whose market moved since the last call (the simulator's
        ``take_changed``: quotes, venue hours, printed volume), by the engine's index."""
        to_ix = self._market_to_ix
        return [ix for ix in (to_ix[k] for k in self.venues.market.loop.take_changed())
                if ix >= 0]

    def tick(self, now: int) -> int:
        """Drive the router's clock (schedules, ack timeouts, reprices); returns its next wake-up.

        The market's printed volume since the last tick is reported too: a
        POV order trades a share of it. Each tick looks at the instruments
        whose market changed since the last (all of them at the first), so
        a quiet market costs nothing per instrument.

        The venues are caught up to the clock before the router judges
        anything: after the loop was held (a long callback, a collector pause)
        the pacer and this tick are due together, and a tick that ran first
        judged acknowledgements that had arrived meanwhile as missing: its ack
        timeout marked a healthy venue down and canceled the child. That comes
        after the day's checks, which a report taken in (its own roll, at its
        own time, later than ``now``) must not make look like a clock going
        back. An error in a report's handling is logged and the tick goes on:
        raised, it would stop the router's clock for every order.
        """
        if now >= self._next_roll:
            self.roll_day(now)
        elif now < self._day_entered:
            self._clock_went_back(now)
        try:
            self.venues.catch_up()
        except Exception:  # noqa: BLE001 - an engine bug in one report; the clock goes on
            log.exception("tick: taking in the venues' reports failed; the router's clock "
                          "goes on")
        self._refresh_venues()
        # Only the instruments whose market moved since the last tick (the simulator
        # lists every one at its first take_changed, so the first tick looks at all,
        # risk having no market reference yet): the quotes of the others are as they
        # were, and one market_checked keeps their references fresh.
        changed = self._changed()
        if self._recopy:
            # (and those a venue's confirmation left to read again: the router's own
            # sweeps at this tick, a schedule's slices, hide the confirmed children)
            changed = sorted(self._recopy.union(changed))
            self._recopy.clear()
        for ix in changed:
            self.refresh_market(ix, now)
            self._report_volume(ix)
        self.risk.market_checked(now)
        self.router.tick(now)
        self._pump(now)
        return self.router.next_wakeup(now)
