"""The order state machine: every client order's state, and every transition as an event.

Role in the pipeline: the pipeline moves each order through

    RECEIVED -> VALIDATED -> RISK_CHECKED -> ROUTED -> (PARTIALLY_FILLED ->) FILLED
                         \\-> REJECTED at any step before ROUTED
    ROUTED / PARTIALLY_FILLED -> CANCELED | EXPIRED

and this module is the only place that changes an order's stage. An illegal
transition is a bug in the engine, so it raises instead of being ignored.
Each order keeps its children (the child orders at venues) so that its state,
parents and children, can be queried at any time. Quantities and prices are
the core's integers (lots and ticks); decimal strings appear only when an
execution report is built.
"""
from __future__ import annotations

import collections
import enum
from collections.abc import Iterator

import msgspec

from engine.messages import (ExecType, ExecutionReport, OrdStatus, OrdType, TimeInForce, TradeFill,
                             reject_name)
from ext import orderstate as _orderstate
from ext.instrument import Instrument


class Stage(enum.IntEnum):
    """Where an order is in the pipeline."""

    RECEIVED = 0
    VALIDATED = 1
    RISK_CHECKED = 2
    ROUTED = 3
    PARTIALLY_FILLED = 4
    FILLED = 5
    CANCELED = 6
    REJECTED = 7
    EXPIRED = 8


TERMINAL = frozenset({Stage.FILLED, Stage.CANCELED, Stage.REJECTED, Stage.EXPIRED})
WORKING = frozenset({Stage.ROUTED, Stage.PARTIALLY_FILLED})

_ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.RECEIVED: frozenset({Stage.VALIDATED, Stage.REJECTED}),
    Stage.VALIDATED: frozenset({Stage.RISK_CHECKED, Stage.REJECTED}),
    Stage.RISK_CHECKED: frozenset({Stage.ROUTED, Stage.REJECTED}),
    Stage.ROUTED: frozenset({Stage.PARTIALLY_FILLED, Stage.FILLED, Stage.CANCELED,
                             Stage.EXPIRED}),
    Stage.PARTIALLY_FILLED: frozenset({Stage.PARTIALLY_FILLED, Stage.FILLED, Stage.CANCELED,
                                       Stage.EXPIRED}),
}

_STATUS = {
    Stage.RECEIVED: OrdStatus.NEW, Stage.VALIDATED: OrdStatus.NEW,
    Stage.RISK_CHECKED: OrdStatus.NEW, Stage.ROUTED: OrdStatus.NEW,
    Stage.PARTIALLY_FILLED: OrdStatus.PARTIALLY_FILLED, Stage.FILLED: OrdStatus.FILLED,
    Stage.CANCELED: OrdStatus.CANCELED, Stage.REJECTED: OrdStatus.REJECTED,
    Stage.EXPIRED: OrdStatus.EXPIRED,
}

# Bound once for the per-order methods below (engine.messages.members says why).
_IOC, _MARKET = int(TimeInForce.IOC), int(OrdType.MARKET)


class IllegalTransition(RuntimeError):
    """The engine tried a transition the state machine does not allow (a bug)."""


class Child(msgspec.Struct, gc=False, eq=False):
    """A child order at one venue, as the parent sees it.

    Not tracked by the garbage collector (``gc=False``: it holds only
    plain values), like :class:`Order`.
    """

    child_id: int
    venue: str
    price: int
    qty: int
    cum_qty: int = 0
    done: bool = False
    #: the venue acknowledged it (it rests or traded there); False while on its way, and for
    #: a child the venue refused
    acked: bool = False


class Order(msgspec.Struct, gc=False, eq=False):
    """One client order (the parent): identity, terms, fills and stage.

    Attributes
    ----------
    order_id : int
        Engine-assigned, unique for the engine's lifetime (journaled).
    qty : int
        Lots in force (changes on replace).
    cum_qty, notional_x2 : int
        Lots filled and the exact sum of ``last_px * last_qty`` in half-tick
        lots (a dark pool fills at the midpoint, which may fall between two
        ticks), so ``avg_px = notional_x2 / (2 * cum_qty)`` ticks, exactly.
    transitions : list of (Stage, int)
        Every stage the order went through, with its time (ns).
    renames : int
        How many times the order took a new ``cl_ord_id`` (each accepted
        replace, and a completed cancel). Its earlier ids are kept by the
        :class:`OrderTable` only, which maps each one to the order: the
        order itself keeps nothing per replace but its children.

    Notes
    -----
    The engine keeps every order of the day in memory, and the garbage
    collector's pauses land on whatever order is in flight: each young
    collection traverses every tracked object made since the last one. So an
    order is a struct the collector does not track (``gc=False``: it cannot
    be part of a reference cycle, as it references only strings, numbers,
    the untracked last report, its children and, until it is done, its
    table's calendar, which holds order ids, not orders), its stage path is a tuple
    of plain ints (which the collector stops tracking the first time it
    sees it), and its one tracked object is the dict of its children. Identity is the order itself
    (``eq=False``): two orders with equal fields are still two orders.
    """

    order_id: int
    cl_ord_id: str
    session_id: str
    account: str
    symbol: str
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int
    created_ns: int
    renames: int = 0
    cum_qty: int = 0
    notional_x2: int = 0
    stage: Stage = Stage.RECEIVED
    #: stage, time, stage, time, ... (see ``transitions``)
    path: tuple = ()
    #: child orders at venues, by child id
    children: dict = None
    reject_reason: int = 0
    text: str | None = None
    #: rests only: never takes liquidity, on arrival or when replaced or routed again
    post_only: bool = False
    #: the router's strategy (ext.router Strategy), kept for routing the remainder again
    strategy: int = 0
    #: self-trade prevention mode for its children (StpMode; -1: the venue's default)
    stp: int = -1
    #: a twap/vwap/pov order's window and parameters (pipeline.order_schedule), else None
    schedule: tuple | None = None
    #: the last ExecutionReport sent for this order (answers status requests)
    last_report: ExecutionReport | None = None
    #: the seq ``last_report`` went out with in the order's session (0: not sent on one);
    #: kept apart from the report so that sending it costs no copy (see Pipeline._status)
    report_seq: int = 0
    #: (reason, text) once the engine took the order down on its own account (kill switch,
    #: cancel-on-disconnect, self-trade prevention, its DAY's end at a trading-day roll): a
    #: Replace arriving after that is refused, never routes it again; journaled
    #: (JournalPulled) for recovery
    pulled: tuple | None = None
    #: why the engine cancels the order, when no request or router reason says it (the
    #: text of its CANCELED report)
    cancel_text: str | None = None
    #: a market buy under a collar: the band's upper edge (ticks), which risk valued it
    #: at; the router takes nothing above it (0: none)
    protect: int = 0
    #: the number of the day roll that ends the day the order was done in (-1: not done);
    #: the table forgets it ``keep_done_days`` rolls after that
    #: one (see :meth:`OrderTable.begin_roll`)
    done_roll: int = -1
    #: the table's current day while the order is not done (``OrderTable``): its end is
    #: booked there (``done_roll``, and the day's list of done orders); None once done
    calendar: object = None

    # A new order's path, (RECEIVED, created_ns), and its empty dict of children; in C
    # (ext/orderstate.pyx: msgspec calls it for every order made).
    __post_init__ = _orderstate.init_order

    def __reduce__(self):
        # Pickled (a checkpoint, engine.checkpoint): rebuilt with every field as it was,
        # by name; a plain Order(**fields) would start its path and children afresh
        # (__post_init__).
        return _unpickle_order, (msgspec.structs.asdict(self),)

    def pull(self, reason: int, text: str) -> None:
        """Mark the order taken down on the engine's own account (``pulled``), its
        CANCELED (or, its DAY over, EXPIRED) report saying ``text`` (live, and when
        recovery finishes it)."""
        self.pulled = (reason, text)
        self.cancel_text = text

    @property
    def transitions(self) -> list[tuple[Stage, int]]:
        """Every stage the order went through, with its time (ns), oldest first."""
        path = self.path
        return [(Stage(path[k]), path[k + 1]) for k in range(0, len(path), 2)]

    @property
    def immediate(self) -> bool:
        """IOC or MARKET: it trades on arrival, and what it cannot is canceled."""
        return self.tif == _IOC or self.ord_type == _MARKET

    @property
    def leaves_qty(self) -> int:
        """Lots still working (0 once the order is done)."""
        return 0 if self.stage in TERMINAL else self.qty - self.cum_qty

    @property
    def ord_status(self) -> OrdStatus:
        """FIX order status of the current stage."""
        return _STATUS[self.stage]

    @property
    def done(self) -> bool:
        """Filled, canceled, rejected or expired."""
        return self.stage in TERMINAL

    # advance(stage, now_ns): the move to ``stage``, or IllegalTransition; done, the order
    # is booked in its table's day (``calendar``), routed, among the working ones. In C
    # (ext/orderstate.pyx), set below.
    # fill(last_qty, last_px_x2, now_ns): a fill booked (price in half-ticks), the order
    # moved to PARTIALLY_FILLED or FILLED, or IllegalTransition if the fill is not positive
    # or the order neither working nor FILLED. A venue's fill is a fact: one past what is
    # left, or of an order already FILLED, is booked in full (``overfilled``). In C too.

    def reject(self, reason: int, text: str, now_ns: int) -> None:
        """Refuse the order before it was routed."""
        self.reject_reason, self.text = int(reason), text
        self.advance(Stage.REJECTED, now_ns)

    @property
    def overfilled(self) -> bool:
        """A venue filled more than the order's quantity (``cum_qty > qty``)."""
        return self.cum_qty > self.qty

def _unpickle_order(fields: dict) -> Order:
    """An :class:`Order` with ``fields`` as pickled (``Order.__reduce__``)."""
    order = Order(**fields)
    order.path, order.children = fields["path"], fields["children"]
    return order


def half_ticks_to_price(inst: Instrument, price_x2: int) -> str:
    """A price in half-ticks as an exact decimal string (``Instrument.half_ticks_to_price``)."""
    return inst.half_ticks_to_price(price_x2)


def avg_px(inst: Instrument, notional_x2: int, cum_qty: int) -> str | None:
    """Exact average price as a decimal string (up to 6 digits past the tick), or None
    (``Instrument.avg_px``: integer arithmetic only, rounded half to even)."""
    return inst.avg_px(notional_x2, cum_qty)


# Built in C (ext/orderstate.pyx, which says why); tests/reference/report_reference.py
# keeps it in Python, and the tests compare the two.
_orderstate.configure(ExecutionReport, Order, tuple(_STATUS[stage] for stage in Stage),
                      tuple(stage in TERMINAL for stage in Stage), reject_name,
                      {int(a): frozenset(int(b) for b in to) for a, to in _ALLOWED.items()},
                      IllegalTransition, int(Stage.ROUTED), tuple(Stage),
                      int(Stage.PARTIALLY_FILLED), int(Stage.FILLED), int(Stage.RECEIVED), Child,
                      TradeFill)
execution_report = _orderstate.execution_report
#: execution_report, also kept as the order's last_report (the slot written in C)
order_report = _orderstate.order_report
Order.advance = _orderstate.advance
Order.fill = _orderstate.fill
#: advance_path(order, stages, now_ns): Order.advance to each of ``stages`` in turn, in
#: one call (a new order passes three stages at one instant)
advance_path = _orderstate.advance_path
#: fill_child(order, child_id, last_qty, last_px_x2, now_ns): Order.fill, and the fill
#: booked to the child too (its cum_qty, acked); returns the child or None
fill_child = _orderstate.fill_child
#: end_child(order, child_id): the child marked done; whether the order lists it
end_child = _orderstate.end_child
#: fill_report(order, inst, exec_type, last_qty, last_px_x2, venue, exec_id): a fill's
#: report (kept as last_report) and its TradeFill for the trade history, as (report, fill)
fill_report = _orderstate.fill_report


class _Day:
    """One trading day of an :class:`OrderTable`: the number of the roll that ends it, the
    orders done in it, and the client ids requests spent in it (``{account: [id, ...]}``).

    A spent id maps to its day in the table (it names no order), so whether it is
    forgotten is one comparison of the day's ``roll``, as an order's ``done_roll`` is.
    """

    __slots__ = ("roll", "done", "spent")

    def __init__(self, roll: int):
        self.roll = roll
        self.done: list[Order] = []
        self.spent: dict[str, list[str]] = {}


class _Calendar:
    """What an order that is not done holds of its table: the current day, which the
    order's end books it in, and the ids of the working orders, which it joins when
    routed and leaves when done (``Order.advance``). Done, the order lets go of it,
    and it holds order ids, not orders: orders are not tracked by the garbage
    collector, so a cycle through one would never be collected."""

    __slots__ = ("today", "working")

    def __init__(self, today: _Day):
        self.today = today
        self.working: dict[int, None] = {}


class OrderTable:
    """Every order the engine knows, by engine id and by (account, cl_ord_id).

    The client ids are held per account (``account -> cl_ord_id -> order``),
    so that each id costs its string and a slot, and no (account, id) pair:
    an order that is replaced all day holds one id per replace (every one
    stays spent and finds the order), and nothing else on its account.
    The table also holds the ids that name no order but are spent all the
    same (mapped to the day they were spent in): the ``cl_ord_id`` of every
    Cancel and Replace the pipeline took, from the moment it arrives (while it
    is in flight its id is the order's name to be, and a refused one's is not
    handed out again until it is forgotten with its day's, below). So one
    lookup tells whether an id is free (:meth:`used`), and :meth:`find` finds
    no order under a spent id.

    What is done leaves at the day rolls (:meth:`roll`): an order done, and
    an id spent by a request, during a trading day are forgotten at the
    ``keep_done_days``-th roll after that day's end (the engine's config
    allows 1 and up: see ``OrdersConfig.keep_done_days``). So the
    table holds the working orders and the last days' done ones, not every
    order since the journal began; a forgotten order is unknown to status
    requests, cancels and replaces, and its ``cl_ord_id`` can be used again.
    Engine order ids are never reused: ``next_order_id`` only grows.

    Forgetting is instant and taking out is not: a roll (:meth:`begin_roll`)
    moves :attr:`forgotten_through`, after which every lookup (:meth:`find`,
    :meth:`used`, :meth:`reserve`, ``len``) treats what it covers as gone,
    in constant time; the entries themselves leave the dicts in bounded
    steps (:meth:`forget_some`), which the live engine runs on its tick so
    that no roll holds its event loop for long. :meth:`roll` does both at
    once (recovery's replay, tests).
    """

    def __init__(self, first_order_id: int = 1):
        self.next_order_id = first_order_id
        self.by_id: dict[int, Order] = {}
        self._by_account: dict[str, dict[str, Order | _Day]] = {}
        #: day rolls since the journal began (live and in recovery's replay alike)
        self.rolls = 0
        # The current day (the roll that ends it is rolls + 1), held by every
        # order that is not done (Order.calendar).
        self._calendar = _Calendar(_Day(1))
        # The ended days whose done orders and spent ids are not forgotten yet,
        # oldest first.
        self._days: collections.deque[_Day] = collections.deque()
        #: the days ended by this roll number and before are forgotten (their done
        #: orders and spent ids), whether or not their entries have left yet
        self.forgotten_through = 0
        # Forgotten days whose entries are still to be taken out, and how many
        # of their orders by_id still holds (len() leaves them out).
        self._leaving: collections.deque[_Day] = collections.deque()
        self._leaving_orders = 0
        #: accounts with an accepted order the table forgot: the journal still
        #: holds it, and a restart replays it under its account
        self.accounts_forgotten: set[str] = set()

    def _ids(self, account: str) -> dict[str, Order | _Day]:
        """The client ids of ``account``, made on its first."""
        ids = self._by_account.get(account)
        if ids is None:
            ids = self._by_account[account] = {}
        return ids

    def _gone(self, held: Order | _Day) -> bool:
        """Whether an entry of the id table is forgotten (it may not have left yet)."""
        if type(held) is _Day:
            return held.roll <= self.forgotten_through
        return 0 < held.done_roll <= self.forgotten_through

    def create(self, cl_ord_id: str, session_id: str, account: str, symbol: str, side: int,
               ord_type: int, tif: int, price: int, qty: int, now_ns: int,
               order_id: int | None = None, strategy: int = 0,
               unless_used: bool = False) -> Order | None:
        """A new order in stage RECEIVED, with the next engine order id (or ``order_id``,
        when recovery recreates an order under the id it had), routed by ``strategy``
        (``Order.strategy``: set here, it costs no write of the field afterwards).

        ``unless_used``: None, and no order, when ``cl_ord_id`` is :meth:`used` on
        ``account`` (a new order's one look at its id, not a call of :meth:`used` first).
        """
        ids = self._by_account.get(account)
        if unless_used and ids is not None:
            held = ids.get(cl_ord_id)
            if held is not None and not self._gone(held):  # (used)
                return None
        if order_id is None:
            order_id = self.next_order_id
        order = Order(order_id, cl_ord_id, session_id, account, symbol, side,
                      ord_type, tif, price, qty, now_ns, strategy=strategy,
                      calendar=self._calendar)
        self.next_order_id = max(self.next_order_id, order_id + 1)
        self.by_id[order.order_id] = order
        if ids is None:  # (the account's first id)
            ids = self._ids(account)
        ids[cl_ord_id] = order
        return order

    def reserve(self, account: str, cl_ord_id: str, spent_in: int | None = None) -> bool:
        """Spend ``cl_ord_id`` on ``account`` (a Cancel's or Replace's own id).

        ``spent_in``: the day (the value of :attr:`rolls` then) the request
        arrived in, when that was before now (recovery spends an id when the
        request is answered); the id is forgotten as if spent then, and not
        spent at all if that day's ids are forgotten already.

        Returns
        -------
        bool
            True if the id was free; False if it already named an order or
            was spent (it is left as it was).
        """
        day = self._calendar.today
        if spent_in is not None and spent_in != self.rolls:
            day = self._ended_day(spent_in + 1)
            if day is None or day.roll <= self.forgotten_through:
                return True  # (its day's ids are forgotten: as if spent, then forgotten)
        ids = self._ids(account)
        held = ids.get(cl_ord_id)
        if held is not None and not self._gone(held):
            return False
        ids[cl_ord_id] = day
        of_account = day.spent.get(account)
        if of_account is None:
            of_account = day.spent[account] = []
        of_account.append(cl_ord_id)
        return True

    def alias(self, order: Order, new_cl_ord_id: str) -> None:
        """After a cancel or replace the order answers to its new ``cl_ord_id`` too.

        The id is normally one :meth:`reserve` spent for the request. It never
        re-points an id that names another order: that order would become
        unreachable by its client id (a journal written before ids in flight
        were reserved may hold such a pair; the earlier holder keeps it).
        Its earlier ids keep finding it here; the order only counts them
        (``renames``), in constant time and memory however often it is replaced.
        """
        ids = self._ids(order.account)
        # Each id the order had goes on a list of spent ids, which is how its entry
        # is found to take out once the order is forgotten (forget_some): a spent
        # one is on its day's already, the order's first and an unspent one go on
        # today's.
        today = self._calendar.today.spent
        if order.renames == 0:
            today.setdefault(order.account, []).append(order.cl_ord_id)
        order.renames += 1
        order.cl_ord_id = new_cl_ord_id
        held = ids.get(new_cl_ord_id)
        if held is None or type(held) is not _Day and self._gone(held):
            ids[new_cl_ord_id] = order
            today.setdefault(order.account, []).append(new_cl_ord_id)
        elif type(held) is _Day:
            ids[new_cl_ord_id] = order

    def used(self, account: str, cl_ord_id: str) -> bool:
        """Whether ``cl_ord_id`` names an order of ``account`` or was spent by a request."""
        ids = self._by_account.get(account)
        if ids is None:
            return False
        held = ids.get(cl_ord_id)
        return held is not None and not self._gone(held)

    def find(self, account: str, cl_ord_id: str) -> Order | None:
        """The order an account knows as ``cl_ord_id`` (current or earlier id); None for an
        id no order has (a spent one included)."""
        ids = self._by_account.get(account)
        if ids is None:
            return None
        held = ids.get(cl_ord_id)
        if held is None or type(held) is _Day or 0 < held.done_roll <= self.forgotten_through:
            return None
        return held

    def orders_of(self, account: str) -> Iterator[Order]:
        """The orders of ``account``, from its client ids (one that was replaced comes once
        per id it had), forgotten ones that have not left yet included: the cost is the
        account's, not the table's."""
        return (o for o in self._by_account.get(account, {}).values() if type(o) is Order)

    def ids_held(self) -> int:
        """How many client ids the table holds: the orders' (current and earlier) and the
        spent ones, all accounts together (forgotten ones that have not left yet too)."""
        return sum(map(len, self._by_account.values()))

    def roll(self, keep_done_days: int | None) -> list[Order]:
        """A trading day ended: :meth:`begin_roll`, then take out at once what it forgot
        (:meth:`forget_some`). Returns the orders forgotten."""
        self.begin_roll(keep_done_days)  # (the entries of an earlier roll leave first)
        forgotten = [o for day in self._leaving for o in day.done]
        self.forget_some()
        return forgotten

    def begin_roll(self, keep_done_days: int | None) -> int:
        """A trading day ended: forget what was done ``keep_done_days`` rolls ago.

        Each order is marked with the roll that ends the day it was done in
        (``Order.done_roll``, set when it is done); those marked
        ``keep_done_days`` rolls ago are forgotten with every client id that
        names them, and so are the ids requests spent in the day that ended
        then. ``None`` (a roll journaled before done orders were forgotten)
        forgets nothing; a later roll counts from the marks. Returns how many
        orders it forgot.

        The live engine and recovery's replay call it at the same record of
        the journal (``JournalDayRoll``, which carries ``keep_done_days``), so
        a restart forgets exactly what the live engine forgot. The forgetting
        is done in constant time (:attr:`forgotten_through`); the entries
        leave in :meth:`forget_some`'s steps. A roll that comes while entries
        of an earlier one are still leaving takes them all out first.
        """
        self.forget_some()
        self.rolls = roll = self.rolls + 1
        calendar = self._calendar
        self._days.append(calendar.today)
        calendar.today = _Day(roll + 1)
        if keep_done_days is None or roll - keep_done_days <= self.forgotten_through:
            return 0
        self.forgotten_through = through = roll - keep_done_days
        days, forgotten = self._days, 0
        while days and days[0].roll <= through:
            day = days.popleft()
            self._leaving.append(day)
            forgotten += len(day.done)
        self._leaving_orders += forgotten
        return forgotten

    def _ended_day(self, roll: int) -> _Day | None:
        """The ended day the roll numbered ``roll`` ended, if the table holds it still: found
        by its place, not a scan (``_days`` holds one day per roll, oldest first, and
        ``keep_done_days`` may keep thousands, which a removal step would scan per id)."""
        days = self._days
        at = roll - days[0].roll if days else -1
        return days[at] if 0 <= at < len(days) else None

    def _day(self, roll: int) -> _Day:
        """The day the roll numbered ``roll`` ends (not forgotten); today for any other."""
        return self._ended_day(roll) or self._calendar.today

    @property
    def leaving(self) -> bool:
        """Whether entries the table forgot are still to be taken out (:meth:`forget_some`)."""
        return bool(self._leaving)

    def forget_some(self, budget: int | None = None) -> bool:
        """Take out entries of forgotten orders and ids, oldest day first, looking at
        ``budget`` orders and listed ids at most (None: all; an order leaves ``by_id``
        and its account's ids); returns whether some are left.

        An order leaves ``by_id`` and its account's ids with its current
        ``cl_ord_id``; its earlier ids are on the lists of spent ids (:meth:`alias`
        puts them there), which leave after the day's orders. An id on such a
        list that names an order not forgotten (a replaced order still
        working, or kept) goes on today's list, to be looked at again when
        today is forgotten.
        """
        leaving = self._leaving
        by_id, accounts = self.by_id, self._by_account
        left = budget if budget is not None else -1
        while leaving and left != 0:
            day = leaving[0]
            done = day.done
            while done and left != 0:
                order = done.pop()
                left -= 1
                self._leaving_orders -= 1
                del by_id[order.order_id]
                ids = accounts[order.account]
                if ids.get(order.cl_ord_id) is order:
                    del ids[order.cl_ord_id]
                if order.stage != Stage.REJECTED:
                    self.accounts_forgotten.add(order.account)
            spent = day.spent
            while not done and spent and left != 0:
                account, cl_ord_ids = next(iter(spent.items()))
                ids = accounts[account]
                while cl_ord_ids and left != 0:
                    cl_ord_id = cl_ord_ids.pop()
                    left -= 1
                    held = ids.get(cl_ord_id)
                    if held is None:
                        continue
                    if self._gone(held):
                        del ids[cl_ord_id]
                    elif type(held) is Order:
                        # An earlier id of an order not forgotten: it goes on the list of
                        # the day the order was done in, to leave with it (today's while
                        # it is not done, to be looked at again).
                        self._day(held.done_roll).spent.setdefault(account, []).append(
                            cl_ord_id)
                if not cl_ord_ids:
                    del spent[account]
            if not done and not spent:
                leaving.popleft()
        return bool(leaving)

    def working(self) -> list[Order]:
        """Orders that are routed and not done, oldest first: the cost is theirs, not the
        table's (a walk of the table, at each day roll, took half a second a million
        orders)."""
        by_id = self.by_id
        return [by_id[order_id] for order_id in sorted(self._calendar.working)]

    def __len__(self) -> int:
        """Orders held, forgotten ones that have not left yet excluded."""
        return len(self.by_id) - self._leaving_orders
