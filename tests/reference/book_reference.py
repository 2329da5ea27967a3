"""Pure-Python reference order book: the model the Cython book is held to.

Written the way a competent Python developer writes a fast book, not as a
strawman: a dict of price levels per side with a sorted list of level keys
(``bisect``), a ``deque`` per level, a dict from order id to order, and lazy
deletion (a canceled order is marked dead and skipped when it reaches the
front of its queue), so cancel is O(1).

It has the same Python API and the same rules as ``ext.book.OrderBook``, and
emits the same fills and events with the same sequence numbers, so the
property tests can compare the two step by step and the benchmarks and the
simulator can plug it in as the baseline.
"""
from __future__ import annotations

import operator
from bisect import bisect_left, insort
from collections import deque

import numpy as np

from ext.book import (
    DEPTH_DTYPE, EVENT_DTYPE, FILL_DTYPE, FLAG_POST_ONLY, OP_ADD, OP_CANCEL, OP_REPLACE,
    SNAPSHOT_DTYPE, STP_DEFAULT,
)
from ext.types import CancelReason, EventKind, OrdType, RejectReason, Side, StpMode
from ext.types import TimeInForce as T

BUY, SELL, SELL_SHORT = int(Side.BUY), int(Side.SELL), int(Side.SELL_SHORT)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
STP_NONE, NEWEST, OLDEST, BOTH = (int(StpMode.STP_NONE), int(StpMode.CANCEL_NEWEST),
                                  int(StpMode.CANCEL_OLDEST), int(StpMode.CANCEL_BOTH))
VALID_TIF = {int(T.DAY), int(T.GTC), int(T.IOC), int(T.FOK)}
INT64_MAX = (1 << 63) - 1
IOC, FOK, DAY = int(T.IOC), int(T.FOK), int(T.DAY)

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN = -(1 << 63)

_NO_FILLS = np.zeros(0, dtype=FILL_DTYPE)
_NO_FILLS.flags.writeable = False
_NO_EVENTS = np.zeros(0, dtype=EVENT_DTYPE)
_NO_EVENTS.flags.writeable = False


def _integer(value, field):
    """``value`` as ``ext/intarg.pxd``'s ``_integer`` takes it: what ``operator.index``
    gives, a ``TypeError`` naming ``field`` for anything else (a float)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{field} must be an integer, not {type(value).__name__} "
                        f"({value!r})") from None


def small_arg(value, field):
    """``value`` as ``ext/intarg.pxd``'s ``small_arg`` takes it: an integer within a C int.

    A float raises ``TypeError`` and a value beyond a C int ``ValueError``, both naming
    ``field``; within a C int an unknown enum value is the caller's reject code.
    """
    value = _integer(value, field)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{field} {value} is out of range (not a valid {field})")
    return value


def big_arg(value, field):
    """``value`` as ``ext/intarg.pxd``'s ``big_arg`` takes it: an integer within int64.

    A float raises ``TypeError`` and a value beyond int64 ``ValueError``, both naming
    ``field``; whether the value is in range for its use is the caller's rule.
    """
    value = _integer(value, field)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{field} {value} is out of range (beyond a 64-bit integer)")
    return value


class _Ints:
    """An enum's members as plain ints: attribute access on an IntEnum class
    costs far more than a constant, and a fast Python book avoids it."""

    def __init__(self, enum):
        for member in enum:
            setattr(self, member.name, int(member))


E, C, R = _Ints(EventKind), _Ints(CancelReason), _Ints(RejectReason)


class _Order:
    __slots__ = ("id", "account", "side", "price", "qty", "leaves", "ts", "tif", "flags",
                 "stp", "live")

    def __init__(self, order_id, account, side, price, qty, leaves, ts, tif, flags, stp):
        self.id, self.account, self.side, self.price = order_id, account, side, price
        self.qty, self.leaves, self.ts = qty, leaves, ts
        self.tif, self.flags, self.stp, self.live = tif, flags, stp, True


class _Level:
    __slots__ = ("price", "queue", "qty", "count")

    def __init__(self, price):
        self.price, self.queue, self.qty, self.count = price, deque(), 0, 0


class _Side:
    """One side of the book: levels by key, keys ascending so the best is last."""

    __slots__ = ("is_bid", "levels", "keys")

    def __init__(self, is_bid):
        self.is_bid, self.levels, self.keys = is_bid, {}, []

    def key(self, price):
        return price if self.is_bid else -price

    def best(self):
        return self.levels[self.keys[-1]] if self.keys else None

    def level_for(self, price):
        key = self.key(price)
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = _Level(price)
            insort(self.keys, key)
        return level

    def drop(self, level):
        key = self.key(level.price)
        del self.levels[key]
        del self.keys[bisect_left(self.keys, key)]

    def ordered_levels(self, best_first):
        keys = reversed(self.keys) if best_first else self.keys
        return [self.levels[k] for k in keys]


class ReferenceBook:
    """Pure-Python twin of ``ext.book.OrderBook`` (same API, same output)."""

    def __init__(self, symbol="", capacity=1024, stp=NEWEST):
        stp = small_arg(stp, "stp")
        if not STP_NONE <= stp <= BOTH:
            raise ValueError(f"unknown self-trade prevention mode {stp}")
        self.symbol, self.default_stp, self.seq = symbol, stp, 0
        self.orders: dict[int, _Order] = {}
        self.bids, self.asks = _Side(True), _Side(False)
        self.fills: list[tuple] = []
        self.events: list[tuple] = []
        self.record_events = True

    # ---------------------------------------------------------------- output
    def _event(self, kind, order_id, account, side, price, qty, leaves, cum, reason, ts):
        self.seq += 1
        if self.record_events:
            self.events.append((self.seq, ts, order_id, account, price, qty, leaves, cum,
                                kind, side, reason))

    def _fill(self, maker, taker_id, taker_account, taker_side, qty, taker_leaves, ts):
        self.seq += 1
        self.fills.append((self.seq, ts, maker.id, taker_id, maker.account, taker_account,
                           maker.price, qty, maker.leaves, taker_leaves, taker_side))

    def drain_fills(self):
        """Fills since the last drain, as a ``FILL_DTYPE`` array (read-only when empty)."""
        if not self.fills:
            # (One shared empty array: the simulator drains after every call, and
            # allocating two empty arrays each time was most of a baseline run's time.)
            return _NO_FILLS
        out = np.zeros(len(self.fills), dtype=FILL_DTYPE)
        for name, col in zip(FILL_DTYPE.names[:-1], zip(*self.fills)):
            out[name] = col
        self.fills = []
        return out

    def drain_events(self):
        """Order events since the last drain, as an ``EVENT_DTYPE`` array (read-only when
        empty)."""
        if not self.events:
            return _NO_EVENTS
        out = np.zeros(len(self.events), dtype=EVENT_DTYPE)
        for name, col in zip(EVENT_DTYPE.names[:-1], zip(*self.events)):
            out[name] = col
        self.events = []
        return out

    # ---------------------------------------------------------------- helpers
    def _side(self, side):
        return self.bids if side == BUY else self.asks

    def _opposite(self, side):
        return self.asks if side == BUY else self.bids

    @staticmethod
    def _crosses(is_buy, limit, level_price):
        return level_price <= limit if is_buy else level_price >= limit

    def _remove(self, order):
        """Take a resting order out of the book (lazy: it stays in its deque, dead)."""
        order.live = False
        del self.orders[order.id]
        side = self._side(order.side)
        level = side.levels[side.key(order.price)]
        level.qty -= order.leaves
        level.count -= 1
        if level.count == 0:
            side.drop(level)

    def _rest(self, order):
        self.orders[order.id] = order
        level = self._side(order.side).level_for(order.price)
        level.queue.append(order)
        level.qty += order.leaves
        level.count += 1

    def _level_qty(self, side, price):
        level = self._side(side).levels.get(self._side(side).key(price))
        return level.qty if level is not None else 0

    def _fok_fillable(self, is_buy, is_market, limit, qty, account, stp):
        avail = 0
        for level in self._opposite(BUY if is_buy else SELL).ordered_levels(True):
            if not is_market and not self._crosses(is_buy, limit, level.price):
                return False
            if stp == STP_NONE:
                avail += level.qty
            else:
                for o in level.queue:
                    if not o.live:
                        continue
                    if o.account == account:
                        if stp != OLDEST:
                            return avail >= qty
                    else:
                        avail += o.leaves
                        if avail >= qty:
                            return True
            if avail >= qty:
                return True
        return avail >= qty

    def _match(self, taker_id, account, side, is_market, limit, qty, leaves, stp, ts):
        """Returns (leaves, stp_canceled)."""
        is_buy = side == BUY
        opp = self._opposite(side)
        while leaves > 0:
            level = opp.best()
            if level is None or (not is_market and not self._crosses(is_buy, limit, level.price)):
                break
            queue = level.queue
            while queue and leaves > 0:
                maker = queue[0]
                if not maker.live:
                    queue.popleft()
                    continue
                if stp != STP_NONE and maker.account == account:
                    if stp in (OLDEST, BOTH):
                        self._event(E.EV_CANCELED, maker.id, maker.account, maker.side,
                                    maker.price, maker.qty, 0, maker.qty - maker.leaves,
                                    C.CXL_SELF_TRADE, ts)
                        queue.popleft()
                        self._remove(maker)
                    if stp in (NEWEST, BOTH):
                        self._event(E.EV_CANCELED, taker_id, account, side, limit, qty, 0,
                                    qty - leaves, C.CXL_SELF_TRADE, ts)
                        return leaves, True
                    if level.count == 0:
                        break
                    continue
                q = min(maker.leaves, leaves)
                maker.leaves -= q
                level.qty -= q
                leaves -= q
                self._fill(maker, taker_id, account, side, q, leaves, ts)
                if maker.leaves == 0:
                    queue.popleft()
                    maker.live = False
                    del self.orders[maker.id]
                    level.count -= 1
                    if level.count == 0:
                        opp.drop(level)
                        break
        return leaves, False

    # ---------------------------------------------------------------- API
    def add(self, order_id, side, price, qty, account=0, ord_type=LIMIT, tif=int(T.GTC),
            post_only=False, stp=-1, ts=0):
        """Same contract as ``OrderBook.add``."""
        order_id, price, qty, account, ts = map(
            operator.index, (order_id, price, qty, account, ts))
        side, ord_type = small_arg(side, "side"), small_arg(ord_type, "ord_type")
        tif, stp = small_arg(tif, "tif"), small_arg(stp, "stp")
        return self._add(order_id, side, price, qty, account, ord_type, tif,
                         FLAG_POST_ONLY if post_only else 0, stp, ts)

    def _add(self, order_id, side, price, qty, account, ord_type, tif, flags, stp, ts):
        if stp == -1:
            stp = self.default_stp
        is_buy = side == BUY
        is_market = ord_type == MARKET
        reason = 0
        if order_id <= 0:
            reason = R.INVALID_ORDER_ID
        elif order_id in self.orders:
            reason = R.DUPLICATE_ORDER_ID
        elif side not in (BUY, SELL, SELL_SHORT):
            reason = R.INVALID_SIDE
        elif qty <= 0:
            reason = R.INVALID_QTY
        elif ord_type not in (LIMIT, MARKET):
            reason = R.INVALID_ORD_TYPE
        elif flags & ~FLAG_POST_ONLY:
            reason = R.INVALID_ORD_TYPE     # an unknown flag bit (batch API)
        elif not is_market and price <= 0:
            reason = R.INVALID_PRICE
        elif tif not in VALID_TIF:
            reason = R.INVALID_TIF
        elif not STP_NONE <= stp <= BOTH:
            reason = R.INVALID_STP_MODE
        elif flags & FLAG_POST_ONLY:
            if is_market:
                reason = R.INVALID_ORD_TYPE
            elif tif in (IOC, FOK):
                reason = R.INVALID_TIF
            else:
                best = self._opposite(side).best()
                if best is not None and self._crosses(is_buy, price, best.price):
                    reason = R.POST_ONLY_WOULD_CROSS
        if not reason and not is_market and tif in (int(T.DAY), int(T.GTC)) \
                and self._level_qty(side, price) + qty > INT64_MAX:
            reason = R.VALUE_OUT_OF_RANGE       # resting in full would overflow the level
        if reason:
            self._event(E.EV_REJECTED, order_id, account, side, price, qty, 0, 0, reason, ts)
            return reason
        if is_market:
            price = 0
        self._event(E.EV_ACCEPTED, order_id, account, side, price, qty, qty, 0, 0, ts)
        if tif == FOK and not self._fok_fillable(is_buy, is_market, price, qty, account, stp):
            self._event(E.EV_CANCELED, order_id, account, side, price, qty, 0, 0,
                        C.CXL_FOK_UNFILLABLE, ts)
            return 0
        leaves, stp_canceled = self._match(order_id, account, side, is_market, price, qty, qty,
                                           stp, ts)
        if stp_canceled or leaves == 0:
            return 0
        if is_market or tif in (IOC, FOK):
            self._event(E.EV_CANCELED, order_id, account, side, price, qty, 0, qty - leaves,
                        C.CXL_IOC_REMAINDER, ts)
        else:
            self._rest(_Order(order_id, account, side, price, qty, leaves, ts, tif, flags, stp))
        return 0

    def cancel(self, order_id, ts=0, reason=C.CXL_USER):
        """Same contract as ``OrderBook.cancel``."""
        o = self.orders.get(operator.index(order_id))
        if o is None:
            return R.UNKNOWN_ORDER
        kind = E.EV_EXPIRED if reason == C.CXL_END_OF_DAY else E.EV_CANCELED
        self._event(kind, o.id, o.account, o.side, o.price, o.qty, 0, o.qty - o.leaves, reason, ts)
        self._remove(o)
        return 0

    def replace(self, order_id, price, qty, ts=0):
        """Same contract as ``OrderBook.replace``."""
        order_id, price, qty = operator.index(order_id), operator.index(price), operator.index(qty)
        o = self.orders.get(order_id)
        if o is None:
            return R.UNKNOWN_ORDER
        if price <= 0:
            return R.INVALID_PRICE
        if qty <= 0:
            return R.INVALID_QTY
        cum = o.qty - o.leaves
        if qty <= cum:
            return R.REPLACE_QTY_NOT_ABOVE_FILLED
        side = self._side(o.side)
        if price == o.price and qty <= o.qty:
            level = side.levels[side.key(price)]
            level.qty -= o.qty - qty
            o.leaves -= o.qty - qty
            o.qty = qty
            self._event(E.EV_REPLACED, o.id, o.account, o.side, price, qty, o.leaves, cum, 0, ts)
            return 0
        if o.flags & FLAG_POST_ONLY:
            best = self._opposite(o.side).best()
            if best is not None and self._crosses(o.side == BUY, price, best.price):
                return R.POST_ONLY_WOULD_CROSS
        own = o.leaves if price == o.price else 0
        if self._level_qty(o.side, price) - own + qty - cum > INT64_MAX:
            return R.VALUE_OUT_OF_RANGE
        self._remove(o)
        leaves = qty - cum
        self._event(E.EV_REPLACED, order_id, o.account, o.side, price, qty, leaves, cum, 0, ts)
        leaves, stp_canceled = self._match(order_id, o.account, o.side, False, price, qty, leaves,
                                           o.stp, ts)
        if not stp_canceled and leaves > 0:
            self._rest(_Order(order_id, o.account, o.side, price, qty, leaves, ts, o.tif, o.flags,
                              o.stp))
        return 0

    def _cancel_where(self, predicate, reason, ts):
        ids = [o.id for side in (self.bids, self.asks) for level in side.ordered_levels(False)
               for o in level.queue if o.live and predicate(o)]
        for order_id in ids:
            self.cancel(order_id, ts, reason)
        return len(ids)

    def expire_day(self, ts=0):
        """Same contract as ``OrderBook.expire_day``."""
        return self._cancel_where(lambda o: o.tif == DAY, C.CXL_END_OF_DAY, operator.index(ts))

    def cancel_account(self, account, ts=0):
        """Same contract as ``OrderBook.cancel_account``."""
        account = operator.index(account)
        return self._cancel_where(lambda o: o.account == account, C.CXL_MASS_CANCEL,
                                  operator.index(ts))

    def apply(self, ops, results=None, keep_events=False):
        """Same contract as ``OrderBook.apply``."""
        recording, self.record_events = self.record_events, keep_events
        try:
            for i, (op, side, ord_type, tif, flags, stp, order_id, account, price, qty, ts) in \
                    enumerate(ops[["op", "side", "ord_type", "tif", "flags", "stp", "order_id",
                                   "account", "price", "qty", "ts"]].tolist()):
                if op == OP_ADD:
                    r = self._add(order_id, side, price, qty, account, ord_type, tif, flags,
                                  -1 if stp == STP_DEFAULT else stp, ts)
                elif op == OP_CANCEL:
                    r = self.cancel(order_id, ts)
                elif op == OP_REPLACE:
                    r = self.replace(order_id, price, qty, ts)
                else:
                    r = int(R.INVALID_ORD_TYPE)
                if results is not None:
                    results[i] = r
        finally:
            self.record_events = recording
        return self.drain_fills()

    # ---------------------------------------------------------------- market data
    def bbo(self):
        """``(bid_px, bid_qty, ask_px, ask_qty)``, 0 where empty."""
        b, a = self.bids.best(), self.asks.best()
        return (b.price if b else 0, b.qty if b else 0, a.price if a else 0, a.qty if a else 0)

    def depth(self, n=10):
        """``(bids, asks)`` as ``DEPTH_DTYPE`` arrays, best first."""
        n = big_arg(n, "n")
        out = []
        for side in (self.bids, self.asks):
            levels = side.ordered_levels(True)[:max(n, 0)]
            out.append(np.array([(lv.price, lv.qty, lv.count) for lv in levels], dtype=DEPTH_DTYPE))
        return tuple(out)

    def snapshot(self):
        """L3 snapshot in priority order (``SNAPSHOT_DTYPE``)."""
        rows = [(o.id, o.account, o.side, o.tif, o.flags, o.stp, o.price, o.qty, o.leaves, o.ts)
                for side in (self.bids, self.asks) for level in side.ordered_levels(True)
                for o in level.queue if o.live]
        return np.array(rows, dtype=SNAPSHOT_DTYPE)

    def order(self, order_id):
        """Resting order state as a dict, or None."""
        o = self.orders.get(order_id)
        if o is None:
            return None
        return {"order_id": o.id, "account": o.account, "side": o.side, "price": o.price,
                "qty": o.qty, "leaves_qty": o.leaves, "cum_qty": o.qty - o.leaves, "tif": o.tif,
                "post_only": bool(o.flags & FLAG_POST_ONLY), "stp": o.stp, "ts": o.ts}

    def __len__(self):
        return len(self.orders)

    def __contains__(self, order_id):
        return order_id in self.orders
