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

from engine.messages import ExecType, ExecutionReport, OrdStatus, OrdType, TimeInForce, reject_name
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

#: ``Order.done_roll`` of an order the table forgot (OrderTable.roll)
_FORGOTTEN = -2

# Bound once for the per-order methods below (engine.messages.members says why).
_RECEIVED, _FILLED, _PARTIALLY_FILLED = int(Stage.RECEIVED), Stage.FILLED, Stage.PARTIALLY_FILLED
_ROUTED = Stage.ROUTED
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
    the untracked last report and its children), its stage path is a tuple
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
    #: the number of the first day roll that found the order done (-1: none yet, -2: the
    #: table forgot it); the table forgets it ``keep_done_days`` rolls later
    #: (see :meth:`OrderTable.roll`)
    done_roll: int = -1

    def __post_init__(self) -> None:
        self.path = (_RECEIVED, self.created_ns)
        self.children = {}

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

    # advance(stage, now_ns): the move to ``stage``, or IllegalTransition; in C, set below.

    def reject(self, reason: int, text: str, now_ns: int) -> None:
        """Refuse the order before it was routed."""
        self.reject_reason, self.text = int(reason), text
        self.advance(Stage.REJECTED, now_ns)

    @property
    def overfilled(self) -> bool:
        """A venue filled more than the order's quantity (``cum_qty > qty``)."""
        return self.cum_qty > self.qty

    def fill(self, last_qty: int, last_px_x2: int, now_ns: int) -> None:
        """Book a fill (price in half-ticks) and move to PARTIALLY_FILLED or FILLED.

        A venue's fill is a fact: one past what is left is booked in full
        (the order is then FILLED and ``overfilled``), and so is one of an
        order already FILLED (a venue overfilling it further; it stays FILLED).

        Raises
        ------
        IllegalTransition
            If the fill is not positive, or the order is neither working nor FILLED.
        """
        if last_qty <= 0:
            raise IllegalTransition(f"order {self.order_id}: fill of {last_qty}")
        stage = self.stage
        # (Compared, not looked up: a Stage hashes in Python, and this runs per fill.)
        if stage != _ROUTED and stage != _PARTIALLY_FILLED and stage != _FILLED:
            raise IllegalTransition(f"order {self.order_id} ({self.cl_ord_id}): fill of "
                                    f"{last_qty} when {stage.name}")
        self.cum_qty += last_qty
        self.notional_x2 += last_qty * last_px_x2
        if stage != _FILLED:  # (a FILLED order a venue overfills further stays FILLED)
            self.advance(_FILLED if self.cum_qty >= self.qty else _PARTIALLY_FILLED, now_ns)


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
                      IllegalTransition)
execution_report = _orderstate.execution_report
Order.advance = _orderstate.advance


class OrderTable:
    """Every order the engine knows, by engine id and by (account, cl_ord_id).

    The client ids are held per account (``account -> cl_ord_id -> order``),
    so that each id costs its string and a slot, and no (account, id) pair:
    an order that is replaced all day holds one id per replace (every one
    stays spent and finds the order), and nothing else on its account.
    The table also holds the ids that name no order but are spent all the
    same (mapped to None): the ``cl_ord_id`` of every Cancel and Replace the
    pipeline took, from the moment it arrives (while it is in flight its id
    is the order's name to be, and a refused one's is not handed out again
    until it is forgotten with its day's, below). So one lookup tells whether
    an id is free (:meth:`used`), and :meth:`find` finds no order under a
    spent id.

    What is done leaves at the day rolls (:meth:`roll`): an order done, and
    an id spent by a request, during a trading day are forgotten at the
    ``keep_done_days``-th roll after that day's end (the engine's config
    allows 1 and up: see ``OrdersConfig.keep_done_days``). So the
    table holds the working orders and the last days' done ones, not every
    order since the journal began; a forgotten order is unknown to status
    requests, cancels and replaces, and its ``cl_ord_id`` can be used again.
    Engine order ids are never reused: ``next_order_id`` only grows.
    """

    def __init__(self, first_order_id: int = 1):
        self.next_order_id = first_order_id
        self.by_id: dict[int, Order] = {}
        self._by_account: dict[str, dict[str, Order | None]] = {}
        #: day rolls since the journal began (live and in recovery's replay alike)
        self.rolls = 0
        # The ids requests spent, by the roll that ended the day they were spent
        # in: (roll number, {account: [cl_ord_id, ...]}), oldest first, then the
        # current day's (per account: a spent id costs a list slot, no tuple).
        # Forgotten like done orders (see roll).
        self._spent_days: collections.deque[tuple[int, dict[str, list[str]]]] = \
            collections.deque()
        self._spent_today: dict[str, list[str]] = {}
        #: accounts with an accepted order the table forgot: the journal still
        #: holds it, and a restart replays it under its account
        self.accounts_forgotten: set[str] = set()

    def _ids(self, account: str) -> dict[str, Order | None]:
        """The client ids of ``account``, made on its first."""
        ids = self._by_account.get(account)
        if ids is None:
            ids = self._by_account[account] = {}
        return ids

    def create(self, cl_ord_id: str, session_id: str, account: str, symbol: str, side: int,
               ord_type: int, tif: int, price: int, qty: int, now_ns: int,
               order_id: int | None = None) -> Order:
        """A new order in stage RECEIVED, with the next engine order id (or ``order_id``,
        when recovery recreates an order under the id it had)."""
        if order_id is None:
            order_id = self.next_order_id
        order = Order(order_id, cl_ord_id, session_id, account, symbol, side,
                      ord_type, tif, price, qty, now_ns)
        self.next_order_id = max(self.next_order_id, order_id + 1)
        self.by_id[order.order_id] = order
        self._ids(account)[cl_ord_id] = order
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
        if spent_in is None or spent_in == self.rolls:
            spent = self._spent_today
        else:
            spent = next((ids for ended, ids in self._spent_days if ended == spent_in + 1), None)
            if spent is None:
                return True  # (its day's ids are forgotten: as if spent, then forgotten)
        ids = self._ids(account)
        if cl_ord_id in ids:
            return False
        ids[cl_ord_id] = None
        of_account = spent.get(account)
        if of_account is None:
            of_account = spent[account] = []
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
        order.renames += 1
        order.cl_ord_id = new_cl_ord_id
        ids = self._ids(order.account)
        if ids.get(new_cl_ord_id) is None:
            ids[new_cl_ord_id] = order

    def used(self, account: str, cl_ord_id: str) -> bool:
        """Whether ``cl_ord_id`` names an order of ``account`` or was spent by a request."""
        ids = self._by_account.get(account)
        return ids is not None and cl_ord_id in ids

    def find(self, account: str, cl_ord_id: str) -> Order | None:
        """The order an account knows as ``cl_ord_id`` (current or earlier id); None for an
        id no order has (a spent one included)."""
        ids = self._by_account.get(account)
        return ids.get(cl_ord_id) if ids is not None else None

    def orders_of(self, account: str) -> Iterator[Order]:
        """The orders of ``account``, from its client ids (one that was replaced comes once
        per id it had): the cost is the account's, not the table's."""
        return (o for o in self._by_account.get(account, {}).values() if o is not None)

    def ids_held(self) -> int:
        """How many client ids the table holds: the orders' (current and earlier) and the
        spent ones, all accounts together."""
        return sum(map(len, self._by_account.values()))

    def roll(self, keep_done_days: int | None) -> list[Order]:
        """A trading day ended: forget what was done ``keep_done_days`` rolls ago.

        Each order done now and not before is marked with this roll; those
        marked ``keep_done_days`` rolls ago leave the table
        with every client id that names them, and so do the ids requests
        spent in the day that ended then. ``None`` (a roll journaled before
        done orders were forgotten) marks the orders but forgets nothing; a
        later roll counts from those marks. Returns the orders forgotten.

        The live engine and recovery's replay call it at the same record of
        the journal (``JournalDayRoll``, which carries ``keep_done_days``), so
        a restart forgets exactly what the live engine forgot. It walks the
        table once: about a second at millions of orders, once a day.
        """
        self.rolls = roll = self.rolls + 1
        self._spent_days.append((roll, self._spent_today))
        self._spent_today = {}
        forgotten = []
        for order in self.by_id.values():
            if order.stage in TERMINAL:
                if order.done_roll < 0:
                    order.done_roll = roll
                if keep_done_days is not None and roll - order.done_roll >= keep_done_days:
                    forgotten.append(order)
        if keep_done_days is None:
            return forgotten
        self._forget(forgotten)
        spent_days = self._spent_days
        while spent_days and roll - spent_days[0][0] >= keep_done_days:
            for account, spent in spent_days.popleft()[1].items():
                ids = self._by_account[account]
                for cl_ord_id in spent:
                    # (One a replace made an order's name leaves with the order.)
                    if cl_ord_id in ids and ids[cl_ord_id] is None:
                        del ids[cl_ord_id]
        return forgotten

    def _forget(self, forgotten: list[Order]) -> None:
        """Take ``forgotten`` out of the table, with every client id that names them."""
        by_id = self.by_id
        for order in forgotten:
            order.done_roll = _FORGOTTEN
        # In place (a caller up the stack may hold the dict: a roll can come from a
        # venue report the simulator delivers while an order is being routed).
        if len(forgotten) * 2 > len(by_id):
            # (Most go: copying the rest out and back is cheaper than deleting them.)
            kept = {i: o for i, o in by_id.items() if o.done_roll != _FORGOTTEN}
            by_id.clear()
            by_id.update(kept)
        else:
            for order in forgotten:
                del by_id[order.order_id]
        accounts = set()
        for order in forgotten:
            accounts.add(order.account)
            if order.stage != Stage.REJECTED:
                self.accounts_forgotten.add(order.account)
        for account in accounts:
            # Its current id and every id it had before a replace name it.
            ids = self._by_account[account]
            kept = {cl_ord_id: o for cl_ord_id, o in ids.items()
                    if o is None or o.done_roll != _FORGOTTEN}
            ids.clear()
            ids.update(kept)

    def working(self) -> list[Order]:
        """Orders that are routed and not done."""
        return [o for o in self.by_id.values() if o.stage in WORKING]

    def __len__(self) -> int:
        return len(self.by_id)
