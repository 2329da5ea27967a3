"""Pure-Python reference smart order router: the model ``ext.router.Router`` is held to.

Written the way a competent Python developer would write the same router,
not as a strawman: dicts for parents and children (insertion order gives
arrival and creation order), lists of ``(price, qty)`` per book side, and a
sweep that gathers every candidate level and sorts it by the routing key
(price, fee-adjusted price, latency, venue) instead of the Cython k-way merge.

It has the same Python API and the same rules as the Cython router (see
``docs/router.md``) and emits the same actions with the same child ids, so
the property tests compare the two after every call and the benchmark uses
it as its baseline.
"""
from __future__ import annotations

import itertools
import math
import operator

import numpy as np

from ext.router import (
    ACT_CANCEL, ACT_NEW, ACT_REPLACE, ACTION_DTYPE, BESTEX_DTYPE, CF_ISO, CF_MID_PEG,
    CF_POST_ONLY, DEFAULT_CONFIG, MAX_CBPS, MAX_FEE_PER_LOT, MAX_PRICE, MAX_QTY, MAX_VENUES,
    PH_DARK, PH_DONE, PH_POST, PH_SCHED, PH_SWEEP, ROLE_DARK, ROLE_POST, ROLE_SWEEP,
    STRAT_AUTO, STRAT_DARK_FIRST, STRAT_DEFAULT, STRAT_PASSIVE, STRAT_POV, STRAT_SWEEP, STRAT_TWAP,
    STRAT_VWAP, STRATEGY_NAMES, ChildRole, Phase, Strategy, VenueHealth,
)
from ext.types import OrdStatus, OrdType, RejectReason, Side, StpMode, TimeInForce
from tests.reference.book_reference import big_arg, small_arg

E6 = 1_000_000
BUY, SELL, SELL_SHORT = int(Side.BUY), int(Side.SELL), int(Side.SELL_SHORT)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
DAY, GTC, IOC = int(TimeInForce.DAY), int(TimeInForce.GTC), int(TimeInForce.IOC)
NEW, PARTIAL, FILLED = int(OrdStatus.NEW), int(OrdStatus.PARTIALLY_FILLED), int(OrdStatus.FILLED)
CANCELED, EXPIRED = int(OrdStatus.CANCELED), int(OrdStatus.EXPIRED)
R = {m.name: int(m) for m in RejectReason}
UP, DOWN = int(VenueHealth.HEALTH_UP), int(VenueHealth.HEALTH_DOWN)
CR_NONE, CR_USER, CR_EXPIRE = 0, 1, 2
CANCEL_OLDEST, CANCEL_BOTH = int(StpMode.CANCEL_OLDEST), int(StpMode.CANCEL_BOTH)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Fees:
    __slots__ = ("maker_fee", "taker_fee", "maker_cbps", "taker_cbps")

    def __init__(self):
        self.maker_fee = self.taker_fee = self.maker_cbps = self.taker_cbps = 0


class _Venue:
    __slots__ = ("dark", "open", "latency_ns", "health", "retry_at", "n_down", "passive_sent",
                 "passive_filled", "n_sent", "n_rejects", "n_timeouts", "n_fills_outside_limit",
                 "n_overfills")

    def __init__(self):
        self.dark, self.open = False, True
        self.latency_ns = 0
        self.health, self.retry_at, self.n_down = UP, 0, 0
        self.passive_sent = self.passive_filled = 0
        self.n_sent = self.n_rejects = self.n_timeouts = self.n_fills_outside_limit = 0
        self.n_overfills = 0


class _Child:
    __slots__ = ("child_id", "parent", "venue", "side", "role", "price", "pending_price", "qty",
                 "cum", "sent_ts", "acked", "cancel_sent", "book_seq", "pending_qty")

    def __init__(self, child_id, parent, venue, role, price, qty, now):
        self.child_id, self.parent, self.venue, self.side = child_id, parent, venue, parent.side
        self.role, self.price, self.pending_price, self.qty, self.cum = role, price, 0, qty, 0
        self.sent_ts, self.acked, self.cancel_sent = now, False, False
        self.book_seq = self.pending_qty = 0


class _Parent:
    __slots__ = ("parent_id", "instrument", "side", "qty", "limit_px", "tif", "strategy", "phase",
                 "status", "reason", "cum", "notional_x2", "fees", "working", "arrival_ts",
                 "done_ts", "arr", "start_ns", "end_ns", "n_slices", "cum_weight", "pov_ppm",
                 "vol_start", "last_target", "dark_min_qty", "post_residual", "last_reprice_ts",
                 "live", "n_children", "rounds", "dark_tried", "cancel_requested", "post_at_limit",
                 "stp_account", "stp", "v_sent", "v_filled", "v_fees", "v_children",
                 "sums_saturated", "n_amending", "n_draining")

    def __init__(self):
        self.live: dict[int, _Child] = {}
        self.n_draining = 0
        self.sums_saturated = False
        self.n_amending = 0
        self.v_sent, self.v_filled = [0] * MAX_VENUES, [0] * MAX_VENUES
        self.v_fees, self.v_children = [0] * MAX_VENUES, [0] * MAX_VENUES


class ReferenceRouter:
    """Same API and rules as ``ext.router.Router``, in plain Python."""

    def __init__(self, n_venues, n_instruments=1, max_levels=10, config=None):
        n_venues = small_arg(n_venues, "n_venues")
        n_instruments = small_arg(n_instruments, "n_instruments")
        max_levels = small_arg(max_levels, "max_levels")
        if not 1 <= n_venues <= MAX_VENUES:
            raise ValueError(f"n_venues must be 1 to {MAX_VENUES}")
        unknown = set(config or {}) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown router config keys: {sorted(unknown)}")
        cfg = dict(DEFAULT_CONFIG, **(config or {}))
        strategy = cfg["strategy"]
        self.default_strategy = STRATEGY_NAMES[strategy] if isinstance(strategy, str) else strategy
        self.config = cfg
        self.n_venues, self.n_instruments, self.max_levels = n_venues, n_instruments, max_levels
        self.venues = [_Venue() for _ in range(n_venues)]
        self.books = {(i, v): ([], []) for i in range(n_instruments) for v in range(n_venues)}
        self.fees = {(i, v): _Fees() for i in range(n_instruments) for v in range(n_venues)}
        self.stale: set[tuple[int, int]] = set()
        self.res_live: dict[tuple[int, int, int], int] = {}
        self.res_filled: dict[tuple[int, int, int], int] = {}
        self.book_seq: dict[tuple[int, int, int], int] = {}
        self.volume = [0] * n_instruments
        self.parents: dict[int, _Parent] = {}
        self.active: dict[int, _Parent] = {}
        self.finished: list[_Parent] = []
        self.children: dict[int, _Child] = {}
        self.draining: dict[int, _Child] = {}  # done here, still worked at the venue
        self.actions: list[tuple] = []
        self.next_child_id = cfg["child_id_base"]

    # ------------------------------------------------------------ market view
    def set_venue(self, venue, *, dark=None, maker_fee=None, taker_fee=None, maker_cbps=None,
                  taker_cbps=None, latency_ns=None, open=None):
        venue = small_arg(venue, "venue")
        vn = self.venues[venue]
        if latency_ns is not None:
            latency_ns = big_arg(latency_ns, "latency_ns")
        for i in range(self.n_instruments):
            self.set_fees(i, venue, maker_fee=maker_fee, taker_fee=taker_fee,
                          maker_cbps=maker_cbps, taker_cbps=taker_cbps)
        if dark is not None:
            vn.dark = bool(dark)
        if latency_ns is not None:
            vn.latency_ns = latency_ns
        if open is not None:
            vn.open = bool(open)

    def set_fees(self, instrument, venue, *, maker_fee=None, taker_fee=None, maker_cbps=None,
                 taker_cbps=None):
        f = self.fees[small_arg(instrument, "instrument"), small_arg(venue, "venue")]
        for name, value, bound in (("maker_fee", maker_fee, MAX_FEE_PER_LOT),
                                   ("taker_fee", taker_fee, MAX_FEE_PER_LOT),
                                   ("maker_cbps", maker_cbps, MAX_CBPS),
                                   ("taker_cbps", taker_cbps, MAX_CBPS)):
            if value is not None:
                if not -bound <= big_arg(value, name) <= bound:
                    raise ValueError(f"{name} must be within +-{bound}")
                setattr(f, name, value)

    def get_fees(self, instrument, venue):
        f = self.fees[small_arg(instrument, "instrument"), small_arg(venue, "venue")]
        return {"maker_fee": f.maker_fee, "taker_fee": f.taker_fee, "maker_cbps": f.maker_cbps,
                "taker_cbps": f.taker_cbps}

    def set_open(self, venue, is_open):
        self.venues[small_arg(venue, "venue")].open = bool(is_open)

    def shift_clock(self, delta):
        """The caller's clock stepped by ``delta`` ns: the router's own deadlines move with it."""
        for vn in self.venues:
            vn.retry_at += delta
        for p in self.active.values():
            p.last_reprice_ts += delta
            for c in p.live.values():
                c.sent_ts += delta

    def set_latency(self, venue, latency_ns):
        self.set_venue(venue, latency_ns=latency_ns)

    @staticmethod
    def _as_levels(side):
        if side is None:
            return []
        arr = np.asarray(side)
        if arr.dtype.names is not None:
            return list(zip(arr["price"].tolist(), arr["qty"].tolist()))
        return [tuple(x) for x in np.asarray(side, dtype=np.int64).reshape(-1, 2).tolist()]

    def _valid(self, levels, is_bid):
        for k, (px, qty) in enumerate(levels[:self.max_levels]):
            if not 0 < px <= MAX_PRICE:
                return R["INVALID_PRICE"]
            if qty <= 0:
                return R["INVALID_QTY"]
            if k and (px >= levels[k - 1][0] if is_bid else px <= levels[k - 1][0]):
                return R["INVALID_PRICE"]
        return 0

    def update_book(self, instrument, venue, bids=None, asks=None):
        instrument, venue = small_arg(instrument, "instrument"), small_arg(venue, "venue")
        bids, asks = self._as_levels(bids), self._as_levels(asks)
        code = self._valid(bids, True) or self._valid(asks, False)
        if code:
            return code
        # A level beyond MAX_QTY is held as MAX_QTY lots.
        self.books[instrument, venue] = tuple(
            [(px, min(qty, MAX_QTY)) for px, qty in side[:self.max_levels]]
            for side in (bids, asks))
        self.stale.discard((instrument, venue))
        for s in (0, 1):
            # Children sent before an update claim nothing on it (it may
            # already show what they took).
            key = (instrument, venue, s)
            self.book_seq[key] = self.book_seq.get(key, 0) + 1
            self.res_live[key] = self.res_filled[key] = 0
        return 0

    def depth(self, instrument, venue):
        bids, asks = self.books[small_arg(instrument, "instrument"), small_arg(venue, "venue")]
        return list(bids), list(asks)

    def book_state(self, instrument, venue):
        instrument, venue = small_arg(instrument, "instrument"), small_arg(venue, "venue")
        res = [self.res_live.get((instrument, venue, s), 0)
               + self.res_filled.get((instrument, venue, s), 0) for s in (0, 1)]
        return {"stale": (instrument, venue) in self.stale, "reserved_bids": res[0],
                "reserved_asks": res[1]}

    def nbbo(self, instrument):
        instrument = small_arg(instrument, "instrument")
        bid = bid_qty = ask = ask_qty = 0
        for v, vn in enumerate(self.venues):
            if vn.dark or not vn.open:
                continue
            bids, asks = self.books[instrument, v]
            if bids:
                px, q = bids[0]
                if px > bid:
                    bid, bid_qty = px, q
                elif px == bid:
                    bid_qty += q
            if asks:
                px, q = asks[0]
                if ask == 0 or px < ask:
                    ask, ask_qty = px, q
                elif px == ask:
                    ask_qty += q
        return bid, bid_qty, ask, ask_qty

    def on_market_volume(self, instrument, qty):
        self.volume[small_arg(instrument, "instrument")] += big_arg(qty, "qty")

    # ------------------------------------------------------------ venue health
    def _routable(self, v, now):
        vn = self.venues[v]
        return vn.open and (vn.health == UP or now >= vn.retry_at)

    def _heard_from(self, c, now):
        vn = self.venues[c.venue]
        if not c.acked and now - c.sent_ts < self.config["ack_timeout_ns"]:
            vn.n_down = 0                   # answered in time: the backoff starts over
        elif vn.health == DOWN and now < vn.retry_at:
            return                          # a late answer: avoided until its retry
        vn.health = UP

    def _mark_down(self, v, now):
        vn = self.venues[v]
        if vn.health == DOWN and now < vn.retry_at:
            return
        vn.n_down += 1
        vn.health = DOWN
        delay = min(self.config["recovery_ns"] << min(vn.n_down - 1, 62),
                    self.config["recovery_max_ns"])
        vn.retry_at = now + delay

    def _fill_rate_ppm(self, vn):
        prior_lots = self.config["fill_rate_prior_lots"]
        return ((vn.passive_filled * E6 + self.config["fill_rate_prior_ppm"] * prior_lots)
                // (vn.passive_sent + prior_lots))

    def venue_state(self, venue, now=0):
        venue, now = small_arg(venue, "venue"), big_arg(now, "now")
        vn = self.venues[venue]
        return {"dark": vn.dark, "open": vn.open, "health": VenueHealth(vn.health),
                "routable": bool(self._routable(venue, now)), "retry_at": vn.retry_at,
                "consecutive_timeouts": vn.n_down, "latency_ns": vn.latency_ns,
                "children_sent": vn.n_sent, "rejects": vn.n_rejects, "timeouts": vn.n_timeouts,
                "fills_outside_limit": vn.n_fills_outside_limit, "overfills": vn.n_overfills,
                "passive_sent": vn.passive_sent, "passive_filled": vn.passive_filled,
                "fill_rate_ppm": self._fill_rate_ppm(vn)}

    def _fee(self, instrument, v, maker, px_x2, qty):
        f = self.fees[instrument, v]
        per, cbps = (f.maker_fee, f.maker_cbps) if maker else (f.taker_fee, f.taker_cbps)
        rate = px_x2 * qty * cbps      # rounded half away from zero, as the simulator does
        return per * qty + ((rate + 100) // 200 if rate >= 0 else -((-rate + 100) // 200))

    # ------------------------------------------------------------ children
    def _emit(self, kind, c, price, qty, min_qty, ord_type, tif, flags, now):
        self.actions.append((c.child_id, c.parent.parent_id, price, qty, min_qty, now, c.venue,
                             c.parent.instrument, kind, c.side, ord_type, tif, flags, c.role,
                             b""))

    def _new_child(self, p, v, role, price, qty, min_qty, ord_type, tif, flags, now):
        c = _Child(self.next_child_id, p, v, role, price, qty, now)
        self.next_child_id += 1
        p.live[c.child_id] = c
        self.children[c.child_id] = c
        p.n_children += 1
        p.working += qty
        p.v_sent[v] += qty
        p.v_children[v] += 1
        self.venues[v].n_sent += 1
        if role == ROLE_SWEEP:
            key = (p.instrument, v, 1 if p.side == BUY else 0)
            c.book_seq = self.book_seq.get(key, 0)
            self.res_live[key] = self.res_live.get(key, 0) + qty
        self._emit(ACT_NEW, c, price, qty, min_qty, ord_type, tif, flags, now)
        return c

    def _confirm_resting(self, c):
        """A passive child confirmed at its price: only a later update of its side shows it."""
        if c.role == ROLE_POST:
            c.book_seq = self.book_seq.get(
                (c.parent.instrument, c.venue, 0 if c.side == BUY else 1), 0)

    def _own_resting(self, p, s):
        """{(venue, price): lots} of our resting children ``p``'s sweep cannot take (see the
        Cython): passive, same ``stp_account``, confirmed before the venue's last update."""
        own = {}
        for q in self.active.values():
            if q.stp_account != p.stp_account or q.instrument != p.instrument:
                continue
            for c in q.live.values():
                key = (p.instrument, c.venue, s)
                if (c.role == ROLE_POST and c.acked and not c.pending_price
                        and (0 if c.side == BUY else 1) == s
                        and self.book_seq.get(key, 0) > c.book_seq):
                    own[c.venue, c.price] = own.get((c.venue, c.price), 0) + c.qty - c.cum
        return own

    def _sweep_claim(self, c):
        """The book side key a sweep child's lots count against, or None (see the Cython)."""
        if c.role != ROLE_SWEEP:
            return None
        key = (c.parent.instrument, c.venue, 1 if c.side == BUY else 0)
        return key if c.book_seq == self.book_seq.get(key, 0) else None

    def _child_done(self, c):
        self._child_off(c)
        del self.children[c.child_id]

    def _ended_short(self, c):
        """A sweep child its venue ended short, not by our cancel: its book is stale."""
        if c.role == ROLE_SWEEP and not c.cancel_sent and c.cum < c.qty:
            self.stale.add((c.parent.instrument, c.venue))

    def _child_off(self, c):
        """Take a child off its parent's live children (see the Cython)."""
        p = c.parent
        leaves = c.qty - c.cum
        p.working -= leaves
        if c.pending_qty:
            # (its amend's lots are at no venue now: they go, as in reduce_parent)
            p.qty -= c.qty - max(c.pending_qty, c.cum)
            c.pending_qty = 0
            p.n_amending -= 1
        key = self._sweep_claim(c)
        if key is not None:
            self.res_live[key] -= leaves
        elif c.role == ROLE_POST:
            self.venues[c.venue].passive_sent += c.qty
            self.venues[c.venue].passive_filled += c.cum
        del p.live[c.child_id]

    def _drain(self, c, now):
        """A live child its venue still works once its fills reached its quantity: draining
        (see the Cython); its venue is asked once to cancel the rest."""
        if not c.cancel_sent:
            c.cancel_sent = True
            self._emit(ACT_CANCEL, c, c.price, c.qty, 0, 0, 0, 0, now)
        self._child_off(c)
        del self.children[c.child_id]
        self.draining[c.child_id] = c
        c.parent.n_draining += 1

    def _drained(self, c, now):
        del self.draining[c.child_id]
        c.parent.n_draining -= 1
        self._advance(c.parent, now)

    def _drain_report(self, child_id, ended, now):
        c = self.draining.get(child_id)
        if c is None:
            return R["UNKNOWN_ORDER"]
        self._heard_from(c, now)
        if ended:
            self._drained(c, now)
        return 0

    # ------------------------------------------------------------ strategies
    def _sweep(self, p, want, now):
        buy = p.side == BUY
        s = 1 if buy else 0
        better = (lambda a, b: a < b) if buy else (lambda a, b: a > b)
        # Under CANCEL_OLDEST the venue cancels our own resting orders in the
        # parent's scope instead of trading: skipped where the venue's child
        # goes past them; a level of ours the sweep reaches but its venue's
        # child would not counts as before (see the Cython).
        own = self._own_resting(p, s) if p.stp == CANCEL_OLDEST else {}
        while True:
            levels = []  # (rank price, fee-adjusted key, latency, venue, index, price, lots)
            mine = {}    # hidden venue -> prices of the levels where lots of ours are skipped
            for v, vn in enumerate(self.venues):
                if vn.dark or not self._routable(v, now) or (p.instrument, v) in self.stale:
                    continue
                skip = (self.res_live.get((p.instrument, v, s), 0)
                        + self.res_filled.get((p.instrument, v, s), 0))
                for k, (px, qty) in enumerate(self.books[p.instrument, v][s]):
                    if skip >= qty:
                        skip -= qty
                        continue
                    # Claims took our own lots first: hide only what can still be ours.
                    hide = own.get((v, px), 0) - skip
                    avail, skip = qty - skip, 0
                    if p.limit_px and better(p.limit_px, px):
                        break
                    if hide > 0:
                        mine.setdefault(v, []).append(px)
                        avail -= min(hide, avail)
                    if not avail:
                        continue
                    f = self.fees[p.instrument, v]
                    levels.append((px if buy else -px, f.taker_fee * 100 + px * f.taker_cbps,
                                   vn.latency_ns, v, k, px, avail))
            levels.sort()
            remaining = want
            alloc: dict[int, list] = {}    # venue -> [lots, worst price]; insertion = first
            last_px = 0
            for _, _, _, v, _, px, avail in levels:
                if remaining == 0:
                    break
                take = min(avail, remaining)
                entry = alloc.setdefault(v, [0, px])
                entry[0] += take
                entry[1] = last_px = px
                remaining -= take
            # Each skipped level of ours the sweep reaches must lie on its venue's
            # child's way; the first per venue that does not counts from now on.
            settled = True
            for v in sorted(mine):
                for px in mine[v]:
                    if remaining == 0 and better(last_px, px):
                        break
                    if v not in alloc or better(alloc[v][1], px) or (
                            alloc[v][1] == px and (remaining > 0 or better(px, last_px))):
                        del own[v, px]
                        settled = False
                        break
            if settled:
                break
        first_px = levels[0][5] if levels else 0
        for v, (lots, worst) in alloc.items():
            self._new_child(p, v, ROLE_SWEEP, worst, lots, 0, LIMIT, IOC,
                            CF_ISO if worst != first_px else 0, now)
        return want - remaining

    def _ping_dark(self, p, now):
        bid, _, ask, _ = self.nbbo(p.instrument)
        if not bid or not ask:
            return False
        mid2 = bid + ask
        if p.limit_px and (mid2 > 2 * p.limit_px if p.side == BUY else mid2 < 2 * p.limit_px):
            return False
        free = p.qty - p.cum - p.working
        if free <= 0 or free < p.dark_min_qty:
            return False
        fees = [self.fees[p.instrument, v] for v in range(self.n_venues)]
        candidates = [(fees[v].taker_fee * 200 + mid2 * fees[v].taker_cbps, vn.latency_ns, v)
                      for v, vn in enumerate(self.venues)
                      if vn.dark and not (p.dark_tried >> v) & 1 and self._routable(v, now)]
        if not candidates:
            return False
        v = min(candidates)[2]
        p.dark_tried |= 1 << v
        self._new_child(p, v, ROLE_DARK, p.limit_px, free, p.dark_min_qty,
                        LIMIT if p.limit_px else MARKET, IOC, CF_MID_PEG, now)
        return True

    def _passive_price(self, p):
        bid, _, ask, _ = self.nbbo(p.instrument)
        px = p.limit_px
        if p.side == BUY:
            if not p.post_at_limit and 0 < bid < px:
                px = bid
            if ask > 0 and px >= ask:
                px = ask - 1
        else:
            if not p.post_at_limit and ask > px:
                px = ask
            if bid > 0 and px <= bid:
                px = bid + 1
        return px if 0 < px <= MAX_PRICE else 0

    def _choose_post_venue(self, p, px, now):
        s = 0 if p.side == BUY else 1
        qref, value = self.config["queue_ref_lots"], self.config["passive_value"]
        best = None
        for v, vn in enumerate(self.venues):
            if vn.dark or not self._routable(v, now) or (p.instrument, v) in self.stale:
                continue
            ahead = next((q for lpx, q in self.books[p.instrument, v][s] if lpx == px), 0)
            pfill = self._fill_rate_ppm(vn) * qref // (qref + ahead)
            f = self.fees[p.instrument, v]
            edge = max(value * 100 - (f.maker_fee * 100 + px * f.maker_cbps), 1)
            key = (-pfill * edge, vn.latency_ns, v)
            if best is None or key < best:
                best = key
        return -1 if best is None else best[2]

    def _post(self, p, now):
        free = p.qty - p.cum - p.working
        if free <= 0:
            return False
        px = self._passive_price(p)
        if px <= 0:
            return False
        v = self._choose_post_venue(p, px, now)
        if v < 0:
            return False
        p.last_reprice_ts = now
        self._new_child(p, v, ROLE_POST, px, free, 0, LIMIT, p.tif, CF_POST_ONLY, now)
        return True

    def _reprice(self, p, now):
        if not p.live:
            return
        c = next(iter(p.live.values()))
        if (c.role != ROLE_POST or not c.acked or c.pending_price or c.pending_qty
                or c.cancel_sent or now - p.last_reprice_ts < self.config["reprice_interval_ns"]):
            return
        px = self._passive_price(p)
        if px <= 0:
            return
        moved = px - c.price if p.side == BUY else c.price - px
        if moved < self.config["reprice_ticks"]:
            return
        c.pending_price = px
        p.last_reprice_ts = now
        self._emit(ACT_REPLACE, c, px, c.qty, 0, LIMIT, p.tif, CF_POST_ONLY, now)

    def _target(self, p, now):
        if p.strategy == STRAT_POV:
            if now <= p.start_ns:  # volume counts from the start
                p.vol_start = self.volume[p.instrument]
                return 0
            return min((self.volume[p.instrument] - p.vol_start) * p.pov_ppm // E6, p.qty)
        if now < p.start_ns:
            return 0
        n = p.n_slices
        k = min((now - p.start_ns) * n // (p.end_ns - p.start_ns) + 1, n)
        if p.strategy == STRAT_TWAP:
            return p.qty * k // n
        return p.qty * p.cum_weight[k - 1] // p.cum_weight[-1]

    # ------------------------------------------------------------ the parent's state machine
    def _advance(self, p, now):
        max_reroutes = self.config["max_reroutes"]
        if p.phase == PH_DONE:
            return
        if p.cum >= p.qty:              # before the cancel: a too-late cancel still FILLED
            if p.live:                  # a venue overfilled a child: the rest come down
                self._cancel_children(p, now)
            else:
                self._end(p, FILLED, 0, now)
            return
        if p.cancel_requested:
            if not p.live:
                self._end(p, CANCELED if p.cancel_requested == CR_USER else EXPIRED, 0, now)
            return
        if p.phase == PH_DARK:
            if p.live or self._ping_dark(p, now):
                return
            p.phase, p.rounds = PH_SWEEP, 0
        if p.phase == PH_SWEEP:
            free = p.qty - p.cum - p.working
            if free > 0 and p.rounds <= max_reroutes and self._sweep(p, free, now) > 0:
                p.rounds += 1
                return
            if p.live:
                return
            if p.post_residual and p.limit_px and p.tif in (DAY, GTC):
                p.phase, p.post_at_limit, p.rounds = PH_POST, True, 0
            else:
                if p.rounds > max_reroutes:
                    reason = R["REROUTE_LIMIT"]
                elif any(not vn.dark and self._routable(v, now)
                         for v, vn in enumerate(self.venues)):
                    reason = R["NO_LIQUIDITY"]
                else:
                    reason = R["NO_ROUTE"]
                self._end(p, CANCELED, reason, now)
                return
        if p.phase == PH_POST:
            if p.live:
                self._reprice(p, now)
                return
            if p.rounds > max_reroutes:
                self._end(p, CANCELED, R["REROUTE_LIMIT"], now)
                return
            if self._post(p, now):
                p.rounds += 1
            elif p.tif == DAY and not any(not vn.dark and vn.open for vn in self.venues):
                self._end(p, EXPIRED, R["VENUE_CLOSED"], now)
            return
        if p.phase == PH_SCHED:
            if p.end_ns > 0 and now >= p.end_ns:  # the window is over: nothing new is sent
                if not p.live:
                    self._end(p, EXPIRED, 0, now)
                return
            target = self._target(p, now)
            if target > p.last_target:
                p.last_target, p.rounds = target, 0
            free = target - p.cum - p.working
            if (free > 0 and (free >= self.config["slice_min_qty"] or target == p.qty)
                    and p.rounds <= max_reroutes and self._sweep(p, free, now) > 0):
                p.rounds += 1
                return

    def _end(self, p, status, reason, now):
        """Finish ``p`` unless a child of it is draining (see the Cython)."""
        if not p.n_draining:
            self._finish(p, status, reason, now)

    def _finish(self, p, status, reason, now):
        p.phase, p.status, p.reason, p.done_ts = PH_DONE, status, reason, now
        del self.active[p.parent_id]
        self.finished.append(p)

    # ------------------------------------------------------------ orders
    def route(self, parent_id, instrument, side, qty, limit_px=0, now=0, strategy=STRAT_DEFAULT,
              tif=DAY, *, start_ns=-1, end_ns=-1, slices=-1, profile=None, pov_ppm=-1,
              dark_min_qty=-1, post_residual=None, stp_account=0, stp=-1):
        # (As the Cython router: a float quantity, price or enum is refused, never truncated.)
        parent_id, qty, limit_px, now = map(operator.index, (parent_id, qty, limit_px, now))
        instrument, side = small_arg(instrument, "instrument"), small_arg(side, "side")
        strategy, tif = small_arg(strategy, "strategy"), small_arg(tif, "tif")
        stp = operator.index(stp)
        if parent_id <= 0:
            return R["INVALID_ORDER_ID"]
        if parent_id in self.parents:
            return R["DUPLICATE_ORDER_ID"]
        if not 0 <= instrument < self.n_instruments:
            return R["UNKNOWN_INSTRUMENT"]
        if side not in (BUY, SELL, SELL_SHORT):
            return R["INVALID_SIDE"]
        if not 0 < qty <= MAX_QTY:
            return R["INVALID_QTY"]
        if not 0 <= limit_px <= MAX_PRICE:
            return R["INVALID_PRICE"]
        if tif not in (DAY, GTC, IOC):
            return R["INVALID_TIF"]
        if strategy == STRAT_DEFAULT:
            strategy = self.default_strategy
        if not STRAT_AUTO <= strategy <= STRAT_POV:
            return R["INVALID_STRATEGY"]
        bid, bid_qty, ask, ask_qty = self.nbbo(instrument)
        at_limit = False
        if strategy == STRAT_AUTO:
            marketable = limit_px == 0 or (ask > 0 and limit_px >= ask if side == BUY
                                           else bid > 0 and limit_px <= bid)
            strategy = STRAT_SWEEP if marketable or tif == IOC else STRAT_PASSIVE
            at_limit = True
        if strategy == STRAT_PASSIVE and (limit_px == 0 or tif == IOC):
            return R["INVALID_STRATEGY"]
        start = start_ns if start_ns >= 0 else now
        end = end_ns if end_ns >= 0 else 0
        n_slices = slices if slices >= 0 else 0
        pov = pov_ppm if pov_ppm >= 0 else 0
        dark_min = dark_min_qty if dark_min_qty >= 0 else self.config["dark_min_qty"]
        post = self.config["post_residual"] if post_residual is None else bool(post_residual)
        weights = [] if profile is None else [int(w) for w in profile]
        if not -1 <= stp <= CANCEL_BOTH:
            return R["INVALID_STP_MODE"]
        if strategy in (STRAT_TWAP, STRAT_VWAP):
            if end <= start:
                return R["INVALID_SCHEDULE"]
            if strategy == STRAT_TWAP:
                n_slices = n_slices or self.config["twap_slices"]
                if n_slices > 1_000_000:
                    return R["INVALID_SCHEDULE"]
            else:
                if not 1 <= len(weights) <= 1_000_000 or any(
                        w < 0 or w > MAX_QTY * 1024 for w in weights) or sum(weights) <= 0:
                    return R["INVALID_SCHEDULE"]
                n_slices = len(weights)
        elif strategy == STRAT_POV:
            if not 1 <= pov <= E6 or (end != 0 and end <= start):
                return R["INVALID_SCHEDULE"]
        if dark_min > MAX_QTY:
            return R["INVALID_QTY"]
        if not any(self._routable(v, now) for v in range(self.n_venues)):
            return R["NO_ROUTE"]
        p = _Parent()
        p.parent_id, p.instrument, p.side = parent_id, instrument, side
        p.qty, p.limit_px = qty, limit_px
        p.tif, p.strategy, p.status, p.reason = tif, strategy, NEW, 0
        p.cum = p.notional_x2 = p.fees = p.working = 0
        p.arrival_ts, p.done_ts, p.arr = now, 0, (bid, bid_qty, ask, ask_qty)
        p.start_ns, p.end_ns, p.n_slices, p.pov_ppm = start, end, n_slices, pov
        p.cum_weight = None
        if strategy == STRAT_VWAP:
            p.cum_weight = list(itertools.accumulate(weights))
        p.vol_start, p.last_target = self.volume[instrument], 0
        p.dark_min_qty, p.post_residual, p.last_reprice_ts = dark_min, post, 0
        p.post_at_limit = at_limit
        p.stp_account, p.stp = stp_account, stp
        p.n_children = p.rounds = p.dark_tried = 0
        p.cancel_requested = CR_NONE
        p.phase = {STRAT_DARK_FIRST: PH_DARK, STRAT_SWEEP: PH_SWEEP,
                   STRAT_PASSIVE: PH_POST}.get(strategy, PH_SCHED)
        self.parents[parent_id] = p
        self.active[parent_id] = p
        self._advance(p, now)
        return 0

    def route_batch(self, orders, now=0):
        return np.array([self.route(int(o["parent_id"]), int(o["instrument"]), int(o["side"]),
                                    int(o["qty"]), int(o["limit_px"]), now, int(o["strategy"]),
                                    int(o["tif"])) for o in orders], dtype=np.uint16)

    def cancel_parent(self, parent_id, now=0):
        p = self.parents.get(parent_id)
        if p is None or p.phase == PH_DONE:
            return None
        p.cancel_requested = CR_USER
        ids = self._cancel_children(p, now)
        self._advance(p, now)
        return np.array(ids, dtype=np.int64)

    def _cancel_children(self, p, now):
        """Queue an ACT_CANCEL for each live child not already canceling; their ids."""
        ids = []
        for c in list(p.live.values()):
            if not c.cancel_sent:
                c.cancel_sent = True
                self._emit(ACT_CANCEL, c, c.price, c.qty, 0, 0, 0, 0, now)
                ids.append(c.child_id)
        return ids

    def reduce_parent(self, parent_id, cut, now=0):
        cut = operator.index(cut)
        p = self.parents.get(parent_id)
        if p is None or p.phase == PH_DONE:
            return R["UNKNOWN_ORDER"]
        if (not 0 < cut < p.qty - p.cum or p.cancel_requested != CR_NONE or p.n_amending
                or p.n_draining or p.strategy in (STRAT_TWAP, STRAT_VWAP, STRAT_POV)):
            return R["ORDER_NOT_REPLACEABLE"]
        if any(c.role != ROLE_POST or not c.acked or c.cancel_sent or c.pending_price
               or c.pending_qty or not self.venues[c.venue].open for c in p.live.values()):
            return R["ORDER_NOT_REPLACEABLE"]
        rest = max(cut - max(p.qty - p.cum - p.working, 0), 0)
        if rest:
            c = list(p.live.values())[-1]                # the newest
            if rest >= c.qty - c.cum:
                return R["ORDER_NOT_REPLACEABLE"]     # it would be cut to nothing
            c.pending_qty = c.qty - rest
            p.n_amending += 1
            self._emit(ACT_REPLACE, c, c.price, c.pending_qty, 0, LIMIT, p.tif, CF_POST_ONLY, now)
        p.qty -= cut - rest
        return 0

    def tick(self, now):
        n0 = len(self.actions)
        timeout = self.config["ack_timeout_ns"]
        for p in list(self.active.values()):
            for c in list(p.live.values()):
                if not c.acked and not c.cancel_sent and now - c.sent_ts >= timeout:
                    self.venues[c.venue].n_timeouts += 1
                    self._mark_down(c.venue, now)
                    c.cancel_sent = True
                    self._emit(ACT_CANCEL, c, c.price, c.qty, 0, 0, 0, 0, now)
        for p in list(self.active.values()):
            self._advance(p, now)
        return len(self.actions) - n0

    def next_wakeup(self, now):
        times = []
        for p in self.active.values():
            times += [c.sent_ts + self.config["ack_timeout_ns"] for c in p.live.values()
                      if not c.acked and not c.cancel_sent]
            if p.phase == PH_SCHED and now < p.start_ns:
                times.append(p.start_ns)
            elif p.phase == PH_SCHED and p.strategy != STRAT_POV:
                if now < p.end_ns:
                    d = p.end_ns - p.start_ns
                    k = (now - p.start_ns) * p.n_slices // d + 1
                    times.append(p.start_ns + _ceil_div(k * d, p.n_slices) if k < p.n_slices
                                 else p.end_ns)
            elif p.phase == PH_SCHED:
                times.append(p.end_ns)
            elif p.phase == PH_POST and p.live:
                times.append(p.last_reprice_ts + self.config["reprice_interval_ns"])
        times = [t for t in times if t > now]
        return min(times) if times else -1

    # ------------------------------------------------------------ reports
    def on_ack(self, child_id, now=0):
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, False, now)
        self._heard_from(c, now)
        c.acked = True
        self._confirm_resting(c)
        self._advance(c.parent, now)
        return 0

    def on_fill(self, child_id, last_qty, last_px_x2, now=0, fee=None, leaves=-1):
        last_qty, last_px_x2 = operator.index(last_qty), operator.index(last_px_x2)
        fee = None if fee is None else operator.index(fee)
        leaves = operator.index(leaves)
        c = self.children.get(child_id)
        draining = c is None
        if draining:
            c = self.draining.get(child_id)
            if c is None:
                return R["UNKNOWN_ORDER"]
        if not (0 < last_qty <= MAX_QTY and 0 < last_px_x2 <= 2 * MAX_PRICE):
            if leaves == 0:  # (the venue works nothing more of it: ended as by a cancel)
                self.on_canceled(child_id, now)
            return R["INVALID_QTY"] if not 0 < last_qty <= MAX_QTY else R["INVALID_PRICE"]
        p = c.parent
        if fee is None:
            fee = self._fee(p.instrument, c.venue, c.role == ROLE_POST, last_px_x2, last_qty)
        if c.price > 0:
            buy = c.side == BUY
            limits = [c.price] + ([c.pending_price] if c.pending_price else [])
            bound = max(limits) if buy else min(limits)     # a replace in flight: the looser
            if (last_px_x2 > 2 * bound) if buy else (last_px_x2 < 2 * bound):
                self.venues[c.venue].n_fills_outside_limit += 1
        # A venue's overfill is booked in full (the lots were traded); the
        # child ends with its leaves.
        booked = min(last_qty, c.qty - c.cum)
        if booked < last_qty:
            self.venues[c.venue].n_overfills += 1
        self._heard_from(c, now)
        if not c.acked:
            self._confirm_resting(c)
        c.acked = True
        c.cum += booked
        p.cum += last_qty
        p.working -= booked
        # The lots are booked whatever the sums: int64 money saturates.
        limit = (1 << 63) - 1
        sums = (p.notional_x2 + last_qty * last_px_x2, p.fees + fee, p.v_fees[c.venue] + fee)
        if any(not -limit <= x <= limit for x in sums):
            p.sums_saturated = True
        p.notional_x2, p.fees, p.v_fees[c.venue] = (max(-limit, min(limit, x)) for x in sums)
        p.v_filled[c.venue] += last_qty
        p.rounds = 0
        if p.status == NEW:
            p.status = PARTIAL
        key = self._sweep_claim(c)
        if key is not None:
            # every lot filled left the book, an overfill's and a draining child's too
            self.res_live[key] -= booked
            self.res_filled[key] = self.res_filled.get(key, 0) + last_qty
        if c.cum == c.qty:
            if leaves > 0:
                if not draining:
                    self._drain(c, now)
            elif draining:
                self._drained(c, now)
                return 0
            else:
                self._child_done(c)
        elif leaves == 0:
            # the venue works nothing more of it, short: done, as a cancel ends it
            self._ended_short(c)
            self._child_done(c)
        self._advance(p, now)
        return 0

    def on_reject(self, child_id, reason, now=0):
        reason = small_arg(reason, "reason")
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, True, now)
        vn = self.venues[c.venue]
        vn.n_rejects += 1
        if reason == R["VENUE_UNAVAILABLE"]:
            self._mark_down(c.venue, now)
        elif reason == R["VENUE_CLOSED"]:
            vn.open = False
        else:
            self._heard_from(c, now)
            if c.role == ROLE_SWEEP or reason == R["POST_ONLY_WOULD_CROSS"]:
                self.stale.add((c.parent.instrument, c.venue))
        self._child_done(c)
        self._advance(c.parent, now)
        return 0

    def on_canceled(self, child_id, now=0):
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, True, now)
        self._heard_from(c, now)
        self._ended_short(c)
        self._child_done(c)
        self._advance(c.parent, now)
        return 0

    def on_expired(self, child_id, now=0):
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, True, now)
        self._heard_from(c, now)
        self._child_done(c)
        p = c.parent
        if p.phase != PH_DONE and p.cancel_requested == CR_NONE:
            p.cancel_requested = CR_EXPIRE
            self._cancel_children(p, now)
        self._advance(p, now)
        return 0

    def on_replaced(self, child_id, now=0):
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, False, now)
        self._heard_from(c, now)
        c.acked = True
        if c.pending_price:
            c.price, c.pending_price = c.pending_price, 0
        if c.pending_qty:
            p = c.parent
            c.pending_qty = max(c.pending_qty, c.cum)   # (never below what it filled)
            p.qty -= c.qty - c.pending_qty
            p.working -= c.qty - c.pending_qty
            c.qty, c.pending_qty = c.pending_qty, 0
            p.n_amending -= 1
            if c.cum == c.qty:
                self._child_done(c)
                self._advance(p, now)
                return 0
        self._confirm_resting(c)
        self._advance(c.parent, now)
        return 0

    def on_replace_rejected(self, child_id, now=0):
        c = self.children.get(child_id)
        if c is None:
            return self._drain_report(child_id, False, now)
        self._heard_from(c, now)
        c.pending_price = 0
        if c.pending_qty:
            c.pending_qty = 0
            c.parent.n_amending -= 1
        self._advance(c.parent, now)
        return 0

    # ------------------------------------------------------------ output
    def drain_actions(self):
        out = np.array(self.actions, dtype=ACTION_DTYPE)
        self.actions = []
        return out

    def drain_into(self, out, start=0):
        n = min(len(self.actions), len(out) - start)
        if n:
            out[start:start + n] = self.actions[:n]
            del self.actions[:n]
        return n

    @property
    def pending_actions(self):
        return len(self.actions)

    @property
    def n_active(self):
        return len(self.active)

    @property
    def pending_finished(self):
        return len(self.finished)

    @staticmethod
    def _avg_px(p):
        if p.sums_saturated:
            return None
        if not p.cum:
            return (0, 1)
        g = math.gcd(p.notional_x2, 2 * p.cum)
        return (p.notional_x2 // g, 2 * p.cum // g)

    def parent(self, parent_id):
        p = self.parents[parent_id]
        return {"parent_id": p.parent_id, "status": p.status, "phase": Phase(p.phase),
                "strategy": Strategy(p.strategy), "qty": p.qty, "cum_qty": p.cum,
                "leaves_qty": max(p.qty - p.cum, 0), "working_qty": p.working,
                "avg_px": self._avg_px(p),
                "notional_x2": p.notional_x2, "fees": p.fees, "live_children": len(p.live),
                "children": p.n_children, "rounds": p.rounds, "reason": p.reason,
                "done": p.phase == PH_DONE, "sums_saturated": p.sums_saturated,
                "overfilled": p.cum > p.qty,
                "amending": p.n_amending, "draining": p.n_draining}

    def live_children(self, parent_id):
        return [{"child_id": c.child_id, "venue": c.venue, "role": ChildRole(c.role),
                 "price": c.price, "pending_price": c.pending_price,
                 "pending_qty": c.pending_qty, "qty": c.qty,
                 "cum_qty": c.cum, "acked": c.acked, "cancel_sent": c.cancel_sent,
                 "sent_ts": c.sent_ts} for c in self.parents[parent_id].live.values()]

    def _bestex(self, p):
        buy = p.side == BUY
        num, den = self._avg_px(p) or (0, 0)
        bid, bid_qty, ask, ask_qty = p.arr
        ref = ask if buy else bid
        exact = p.cum > 0 and not p.sums_saturated
        if ref > 0 and exact:
            pi_x2 = 2 * ref * p.cum - p.notional_x2 if buy else p.notional_x2 - 2 * ref * p.cum
            pi_bps = pi_x2 / (2 * ref * p.cum) * 1e4
        else:
            pi_x2, pi_bps = 0, math.nan
        if bid > 0 and ask > 0 and exact:
            mid_x2 = bid + ask
            edge = mid_x2 * p.cum - p.notional_x2 if buy else p.notional_x2 - mid_x2 * p.cum
            vs_mid_bps = edge / (mid_x2 * p.cum) * 1e4
        else:
            vs_mid_bps = math.nan
        return {
            "parent_id": p.parent_id, "instrument": p.instrument, "side": p.side,
            "strategy": p.strategy, "status": p.status, "tif": p.tif, "reason": p.reason,
            "qty": p.qty, "limit_px": p.limit_px, "cum_qty": p.cum, "leaves_qty": max(p.qty - p.cum, 0),
            "avg_px_num": num, "avg_px_den": den, "notional_x2": p.notional_x2, "fees": p.fees,
            "arrival_ts": p.arrival_ts, "done_ts": p.done_ts, "arr_bid_px": bid,
            "arr_bid_qty": bid_qty, "arr_ask_px": ask, "arr_ask_qty": ask_qty, "pi_x2": pi_x2,
            "pi_bps": pi_bps, "vs_mid_bps": vs_mid_bps, "n_children": p.n_children,
            "venues_used": sum(1 << v for v in range(MAX_VENUES) if p.v_children[v]),
            "venue_children": list(p.v_children), "venue_sent": list(p.v_sent),
            "venue_filled": list(p.v_filled), "venue_fees": list(p.v_fees),
            "venue_fill_rate": [f / s if s else math.nan for f, s in zip(p.v_filled, p.v_sent)],
        }

    def bestex(self, parent_id):
        return self._bestex(self.parents[parent_id])

    def drain_finished(self):
        out = np.zeros(len(self.finished), dtype=BESTEX_DTYPE)
        for k, p in enumerate(self.finished):
            rec = self._bestex(p)
            out[k] = tuple(rec[name] for name in BESTEX_DTYPE.names)
            del self.parents[p.parent_id]
        self.finished = []
        return out
