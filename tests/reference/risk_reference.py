"""Pure-Python reference model of the pre-trade risk engine (``ext/risk.pyx``).

Written the way a competent Python developer would write it without Cython:
dicts keyed by ints and tuples, a small dataclass per order, Python ints,
limits resolved per account and instrument once per (re)load. Where the core
saturates a sum or a product at the int64 range (money, positions) the model
clamps the exact value the same way (``_sat``, ``_sat_sym``, ``_mul``), so
the two agree at the bounds too. It takes the same config and the same calls as
``ext.risk.RiskEngine`` and must return the same reason for every call, in
the same check order (documented in ``docs/risk.md``). The property tests
hold the Cython core to it and ``benchmarks/bench_risk.py`` uses it as the
baseline.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ext.instrument import Instrument
from ext.risk import MAX_PRICE, MAX_QTY
from ext.types import OrdType, RejectReason as R, Side

INT64_MAX = 2**63 - 1
INT64_MIN = -2**63
NANO = 10**9
MS = 10**6
FLAG_LOCATE = 1
FLAG_INTENDED_DUPLICATE = 2
FLAG_ADMITTED = 4
FIRM, ACCOUNT, INSTRUMENT, ACCOUNT_INSTRUMENT, SESSION = 1, 2, 3, 4, 5
QTY_KEYS = ("max_order_qty", "max_gross_position", "max_net_position")


def _number(value) -> Fraction:
    if isinstance(value, (bool, float)):
        raise ValueError(f"{value!r}: floats are not accepted")
    return Fraction(value) if isinstance(value, int) else Fraction(Decimal(value))


def _floor(value: Fraction) -> int:
    return min(INT64_MAX, value.numerator // value.denominator)


def _sat(value: int) -> int:
    """A money sum as the core keeps it: saturated at the int64 range."""
    return max(INT64_MIN, min(INT64_MAX, value))


def _sat_sym(value: int) -> int:
    """A position or realized P&L as the core keeps it: within +-INT64_MAX (symmetric)."""
    return max(-INT64_MAX, min(INT64_MAX, value))


def _mul(*factors: int) -> int:
    """A product of non-negative factors, INT64_MAX when it does not fit (as kx_mul3)."""
    product = 1
    for factor in factors:
        product *= factor
    return min(INT64_MAX, product)


def _tightest(candidates):
    """Smallest value; ties go to the later (more specific) layer."""
    best, layer = INT64_MAX, 0
    for value, lay in candidates:
        if value is not None and value <= best:
            best, layer = value, lay
    return best, layer


@dataclass
class Order:
    key: int
    session: int
    account: int
    instrument: int
    side: int
    ord_type: int
    qty: int
    leaves: int
    price: int
    value_price: int
    flags: int


@dataclass
class Cell:
    position: int = 0
    open_buy: int = 0
    open_sell: int = 0
    cost: int = 0
    open_orders: int = 0


@dataclass
class AccountState:
    cash_flow: int = 0
    reserved: int = 0
    short_basis: int = 0
    open_notional: int = 0
    open_orders: int = 0
    traded_notional: int = 0
    realized_pnl: int = 0


@dataclass
class Bucket:
    """A profile's throttle: every session of the profile draws on it."""
    rate: int = 0
    capacity: int = NANO
    tokens: int = NANO
    last_ns: int = 0


@dataclass
class SessionState:
    open_orders: int = 0


class RiskReference:
    """Same API and semantics as ``ext.risk.RiskEngine``, in plain Python."""

    def __init__(self, config: dict | None = None):
        self.accounts: dict[str, int] = {}
        self.instruments: dict[str, int] = {}
        self.sessions: dict[str, int] = {}
        self.account_names: list[str] = []
        self.instrument_names: list[str] = []
        self.session_names: list[str] = []
        self.session_profiles: list[str] = []  # the [sessions.<name>] each takes its limits from
        self.session_state: dict[int, SessionState] = {}  # registered (and releasing) only
        # Released slots, the next session_index takes the last; per slot, how many
        # sessions held it before (its cl_ord_id pairs are (slot, generation, hash));
        # slots released with working orders, freed with their last.
        self.free_sessions: list[int] = []
        self.generation: dict[int, int] = {}
        self.releasing: set[int] = set()
        self.buckets: dict[str, Bucket] = {}        # profile -> its throttle
        self.cells: dict[tuple[int, int], Cell] = {}
        self.acct: dict[int, AccountState] = {}
        self.orders: dict[int, Order] = {}
        self.cl_ord_ids: set[tuple[int, int, int]] = set()
        self.recent: dict[tuple, int] = {}          # duplicative check: key -> expiry ns
        self.recent_owner: dict[tuple, tuple] = {}  # key -> (last passed order, expiry before)
        self.ref: dict[int, tuple[int, int]] = {}   # instrument -> (price, ns)
        self.market_refs: set[int] = set()           # instruments whose reference the market keeps
        self.killed_firm = False
        self.killed_accounts: set[int] = set()
        self.killed_instruments: set[int] = set()
        self.runtime_halted: set[int] = set()
        self.firm_open_orders = 0
        self.firm_open_notional = 0
        self.firm_traded = 0
        self.firm_realized = 0
        self.instrument_open_orders: dict[int, int] = {}
        self.detail: dict = {}
        self.money_unit: Fraction | None = None
        self.units: dict[str, tuple[Fraction, Fraction]] = {}   # symbol -> (tick, lot), ever configured
        self.reload(config or {})

    # ------------------------------------------------------------ config
    def reload(self, config: dict, now_ns: int = 0, actor: str = "admin") -> None:
        firm = config.get("firm", {})
        unit = _number(firm.get("money_unit", "0.0001"))
        # Counters are in the units they were counted in: the units never change.
        if self.money_unit is not None and unit != self.money_unit:
            raise ValueError("firm.money_unit: cannot change while running")
        units = {symbol: (_number(str(section.get("tick_size", "0.01"))),
                          _number(str(section.get("lot_size", "1"))))
                 for symbol, section in config.get("instruments", {}).items()}
        for symbol, grid in units.items():
            if self.units.get(symbol, grid) != grid:
                raise ValueError(f"instruments.{symbol}: tick_size and lot_size cannot change while running")
        self.money_unit = unit
        self.units.update(units)
        self.config = config
        def money(value, default=None):
            return default if value is None else _floor(_number(value) / unit)

        def count(value, default=None):
            return default if value is None else _floor(_number(value))

        def order_limits(section):
            out = {k: _number(section[k]) for k in QTY_KEYS if k in section}
            out["max_order_notional"] = money(section.get("max_order_notional"))
            for key in ("max_open_orders", "collar_bps", "collar_ticks"):
                out[key] = count(section.get(key))
            return out

        self.firm = order_limits(firm)
        self.firm_max_daily_loss = money(firm.get("max_daily_loss"), INT64_MAX)
        self.firm_max_daily_notional = money(firm.get("max_daily_notional"), INT64_MAX)
        self.firm_max_open = count(firm.get("max_open_orders"), INT64_MAX)
        firm_age = count(firm.get("max_reference_age_ms", 5000)) * MS
        self.dup_window = count(firm.get("duplicative_window_ms", 0)) * MS
        self.firm_rate = count(firm.get("throttle_rate", 0))
        self.firm_burst = count(firm.get("throttle_burst", self.firm_rate or 1))
        if self.firm_burst < 1:
            raise ValueError("firm.throttle_burst: must be at least 1")
        firm_restricted = set(firm.get("restricted", []))

        self.grid: dict[int, Instrument] = {}
        self.mult: dict[int, int] = {}
        self.halted: set[int] = set()
        self.instrument_max_open: dict[int, int] = {}
        self.max_ref_age: dict[int, tuple[int, int]] = {}
        inst_limits = {}
        for symbol, section in config.get("instruments", {}).items():
            i = self.instruments.setdefault(symbol, len(self.instrument_names))
            if i == len(self.instrument_names):
                self.instrument_names.append(symbol)
            grid = Instrument(symbol, str(section.get("tick_size", "0.01")), str(section.get("lot_size", "1")),
                              None if "min_qty" not in section else str(section["min_qty"]))
            self.grid[i] = grid
            self.mult[i] = int(Fraction(Decimal(grid.tick_size)) * Fraction(Decimal(grid.lot_size)) / unit)
            if section.get("halted", False):
                self.halted.add(i)
            self.instrument_max_open[i] = count(section.get("max_open_orders"), INT64_MAX)
            age = section.get("max_reference_age_ms")
            self.max_ref_age[i] = _tightest([(firm_age, FIRM), (None if age is None else count(age) * MS,
                                                                INSTRUMENT)])
            inst_limits[i] = order_limits(section)

        self.account_cfg: dict[int, dict] = {}
        self.limits: dict[tuple[int, int], dict] = {}
        for name, section in config.get("accounts", {}).items():
            a = self.accounts.setdefault(name, len(self.account_names))
            if a == len(self.account_names):
                self.account_names.append(name)
            ent = section.get("entitlements", "*")
            self.account_cfg[a] = {
                "active": section.get("active", True),
                "allow_short": section.get("allow_short", False),
                "cash": money(section.get("cash", 0)),
                "credit": money(section.get("credit_limit", 0)),
                "max_open": count(section.get("max_open_orders"), INT64_MAX),
                "max_daily_notional": money(section.get("max_daily_notional"), INT64_MAX),
                "max_daily_loss": money(section.get("max_daily_loss"), INT64_MAX),
            }
            acct = order_limits(section)
            for i, ins in inst_limits.items():
                symbol = self.instrument_names[i]
                cell = order_limits(section.get("limits", {}).get(symbol, {}))
                lot = Fraction(Decimal(self.grid[i].lot_size))
                layers = ((self.firm, FIRM), (acct, ACCOUNT), (ins, INSTRUMENT), (cell, ACCOUNT_INSTRUMENT))
                eff = {}
                for key in QTY_KEYS:
                    eff[key] = _tightest([(None if key not in d else _floor(d[key] / lot), lay)
                                          for d, lay in layers])
                for key in ("max_order_notional", "collar_bps", "collar_ticks"):
                    eff[key] = _tightest([(d[key], lay) for d, lay in layers])
                eff["max_open_orders"] = _tightest([(cell["max_open_orders"], ACCOUNT_INSTRUMENT)])
                eff["entitled"] = ent == "*" or ent == ["*"] or symbol in ent
                eff["restricted"] = (ACCOUNT if symbol in section.get("restricted", []) else
                                     FIRM if symbol in firm_restricted else 0)
                self.limits[(a, i)] = eff
        self.session_cfg = config.get("sessions", {})
        for profile in self.buckets:
            self._set_throttle(profile, fresh=False)

    def update(self, changes: dict, now_ns: int = 0, actor: str = "admin") -> None:
        """Merge an admin message into the current config and reload."""
        def merge(base, extra):
            out = dict(base)
            for key, value in extra.items():
                out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
            return out
        self.reload(merge(self.config, changes), now_ns, actor)

    def _set_throttle(self, profile: str, fresh: bool) -> None:
        cfg = self.session_cfg.get(profile)
        state = self.buckets[profile]
        if cfg is None:
            rate, burst = self.firm_rate, self.firm_burst
        else:
            rate = int(cfg.get("throttle_rate", self.firm_rate))
            burst = int(cfg.get("throttle_burst", cfg.get("throttle_rate", self.firm_burst) or 1))
        state.rate = rate
        state.capacity = NANO * min(burst, INT64_MAX // NANO)
        if fresh or state.tokens > state.capacity:
            state.tokens = state.capacity

    # ------------------------------------------------------------ names
    def account_index(self, name: str) -> int:
        return self.accounts[name]

    def instrument_index(self, symbol: str) -> int:
        return self.instruments[symbol]

    def session_index(self, name: str, profile: str | None = None) -> int:
        if name not in self.sessions:
            if self.free_sessions:
                ix = self.sessions[name] = self.free_sessions.pop()
                self.session_names[ix] = name
                self.session_profiles[ix] = name if profile is None else profile
            else:
                self.sessions[name] = len(self.session_names)
                self.session_names.append(name)
                self.session_profiles.append(name if profile is None else profile)
            self.session_state[self.sessions[name]] = SessionState()
        elif profile is not None and profile != self.session_profiles[self.sessions[name]]:
            self.session_profiles[self.sessions[name]] = profile
        profile = self.session_profiles[self.sessions[name]]
        if profile not in self.buckets:
            self.buckets[profile] = Bucket()
            self._set_throttle(profile, fresh=True)
        return self.sessions[name]

    def release_session(self, name: str) -> bool:
        """Let the session go: its slot is free now, or once its last working order is done."""
        ix = self.sessions.pop(name, None)
        if ix is None:
            return False
        self.session_names[ix] = None
        if self.session_state[ix].open_orders:
            self.releasing.add(ix)
            return False
        self._free_session(ix)
        return True

    def _free_session(self, ix: int) -> None:
        del self.session_state[ix]
        self.releasing.discard(ix)
        self.generation[ix] = self.generation.get(ix, 0) + 1
        self.free_sessions.append(ix)

    def _clord(self, session: int, cl_ord_hash: int) -> tuple[int, int, int]:
        """A (session, cl_ord_id) pair: a reused slot's next session is another session."""
        return session, self.generation.get(session, 0), cl_ord_hash

    def session_gate(self, name: str, profile: str | None = None) -> "SessionGate":
        return SessionGate(self, self.session_index(name, profile), name)

    # ------------------------------------------------------------ checks
    def _reject(self, reason, layer=0, limit=0, value=0):
        self.detail = {"reason": reason, "layer": layer, "limit": limit, "value": value}
        return int(reason)

    def _throttle(self, session: int, now_ns: int) -> int:
        s = self.buckets[self.session_profiles[session]]
        if s.rate == 0:
            return 0
        if now_ns > s.last_ns:
            s.tokens = min(s.capacity, s.tokens + (now_ns - s.last_ns) * s.rate)
            s.last_ns = now_ns
        elif now_ns < s.last_ns:        # the clock stepped back: refill from here
            s.last_ns = now_ns
        if s.tokens < NANO:
            return self._reject(R.THROTTLED, SESSION, s.rate, s.capacity // NANO)
        s.tokens -= NANO
        return 0

    def record_cl_ord_id(self, session, cl_ord_hash):
        """Record a cl_ord_id the session used (journal replay); True if already recorded."""
        if session not in self.session_state:
            raise IndexError(f"session index {session} out of range")
        key = self._clord(session, cl_ord_hash)
        known = key in self.cl_ord_ids
        self.cl_ord_ids.add(key)
        return known

    def check_new(self, order_key, session, account, instrument, side, ord_type, qty, price, flags,
                  cl_ord_hash, now_ns):
        state = self.session_state.get(session)
        if state is None:
            return self._reject(R.UNKNOWN_SESSION, SESSION)
        reason = 0 if flags & FLAG_ADMITTED else self._throttle(session, now_ns)
        if reason:
            return reason
        if self._clord(session, cl_ord_hash) in self.cl_ord_ids:
            return self._reject(R.DUPLICATE_CL_ORD_ID, SESSION)
        self.cl_ord_ids.add(self._clord(session, cl_ord_hash))
        if order_key in self.orders:
            raise ValueError(f"order_key {order_key} is already working")
        reason, value_price, notional = self._evaluate(account, instrument, side, ord_type, qty, qty, price,
                                                       flags, now_ns, True)
        if reason:
            return reason
        if self.dup_window > 0:
            key = (account, instrument, side, qty, price)
            # (owner, what the expiry was before its pass): a downstream reject undoes it
            self.recent_owner[key] = (order_key, self.recent.get(key))
            self.recent[key] = min(INT64_MAX, now_ns + self.dup_window)
        # The intended-duplicate flag counts on arrival only; the order keeps the rest.
        order = Order(order_key, session, account, instrument, side, ord_type, qty, qty, price, value_price,
                      flags & ~(FLAG_INTENDED_DUPLICATE | FLAG_ADMITTED))
        self.orders[order_key] = order
        self._reserve(order, notional, True)
        return 0

    def _evaluate(self, account, instrument, side, ord_type, qty, leaves, price, flags, now_ns, is_new):
        fail = lambda *args: (self._reject(*args), 0, 0)  # noqa: E731
        if instrument not in self.grid:
            return fail(R.UNKNOWN_INSTRUMENT)
        if account not in self.account_cfg:
            return fail(R.UNKNOWN_ACCOUNT)
        acfg = self.account_cfg[account]
        lim = self.limits[(account, instrument)]
        cell = self.cells.setdefault((account, instrument), Cell())
        ast = self.acct.setdefault(account, AccountState())
        if self.killed_firm:
            return fail(R.KILL_SWITCH, FIRM)
        if account in self.killed_accounts:
            return fail(R.KILL_SWITCH, ACCOUNT)
        if instrument in self.killed_instruments:
            return fail(R.KILL_SWITCH, INSTRUMENT)
        if not acfg["active"]:
            return fail(R.ACCOUNT_INACTIVE, ACCOUNT)
        if instrument in self.halted or instrument in self.runtime_halted:
            return fail(R.INSTRUMENT_HALTED, INSTRUMENT)
        if lim["restricted"]:
            return fail(R.INSTRUMENT_RESTRICTED, lim["restricted"])
        if not lim["entitled"]:
            return fail(R.NOT_ENTITLED, ACCOUNT)
        if side not in (Side.BUY, Side.SELL, Side.SELL_SHORT):
            return fail(R.INVALID_SIDE, 0, 0, side)
        if ord_type not in (OrdType.LIMIT, OrdType.MARKET):
            return fail(R.INVALID_ORD_TYPE, 0, 0, ord_type)
        if not 0 < qty <= MAX_QTY:      # (leaves is at least 1 where this is called)
            return fail(R.INVALID_QTY, 0, MAX_QTY, qty)
        min_lots = self.grid[instrument].min_lots
        if qty < min_lots:
            return fail(R.BELOW_MIN_QTY, INSTRUMENT, min_lots, qty)
        if ord_type == OrdType.LIMIT:
            if price == 0:
                return fail(R.PRICE_REQUIRED)
            if price < 0 or price > MAX_PRICE:
                return fail(R.INVALID_PRICE, 0, MAX_PRICE, price)
        if side == Side.SELL_SHORT:
            if not acfg["allow_short"]:
                return fail(R.SHORT_SELL_NOT_ALLOWED, ACCOUNT)
            if not flags & FLAG_LOCATE:
                return fail(R.LOCATE_REQUIRED)
        loss = max(0, -ast.realized_pnl)
        if loss > acfg["max_daily_loss"]:
            return fail(R.DAILY_LOSS_LIMIT, ACCOUNT, acfg["max_daily_loss"], loss)
        loss = max(0, -self.firm_realized)
        if loss > self.firm_max_daily_loss:
            return fail(R.DAILY_LOSS_LIMIT, FIRM, self.firm_max_daily_loss, loss)
        limit, layer = lim["max_order_qty"]
        if qty > limit:
            return fail(R.MAX_ORDER_QTY, layer, limit, qty)

        value_price = price
        bps, bps_layer = lim["collar_bps"]
        ticks, ticks_layer = lim["collar_ticks"]
        if ord_type == OrdType.MARKET or bps_layer or ticks_layer:
            ref, ref_ns = self.ref.get(instrument, (0, 0))
            if ref <= 0:
                return fail(R.NO_REFERENCE_PRICE, INSTRUMENT)
            max_age, age_layer = self.max_ref_age[instrument]
            if now_ns - ref_ns > max_age:
                return fail(R.STALE_REFERENCE_PRICE, age_layer, max_age, now_ns - ref_ns)
            band, band_layer = INT64_MAX, 0
            if bps_layer:
                band, band_layer = min(INT64_MAX, ref * bps // 10000), bps_layer
            if ticks_layer and ticks <= band:
                band, band_layer = ticks, ticks_layer
            if ord_type == OrdType.LIMIT:
                if abs(price - ref) > band:
                    return fail(R.PRICE_COLLAR, band_layer, band, abs(price - ref))
            elif not band_layer:
                band = 0
            # the highest price it may fill at: a buy limit's is its limit, a
            # sell limit's the band's upper edge (not below the limit, as it passed)
            if ord_type == OrdType.MARKET or side != Side.BUY:
                value_price = _sat(ref + band)
        elif side != Side.BUY:
            # an uncollared sell limit: at least the reference, if there is one (any age)
            value_price = max(price, self.ref.get(instrument, (0, 0))[0])

        mult = self.mult[instrument]
        notional = _mul(qty, value_price, mult)
        limit, layer = lim["max_order_notional"]
        if notional > limit or notional == INT64_MAX:      # (the core: not representable)
            return fail(R.MAX_ORDER_NOTIONAL, layer, limit, notional)
        leaves_notional = _mul(leaves, value_price, mult)

        if is_new:
            if not flags & FLAG_INTENDED_DUPLICATE:     # (earlier passes keep their windows)
                expires = self.recent.get((account, instrument, side, qty, price))
                if expires is not None and now_ns < expires:
                    return fail(R.DUPLICATIVE_ORDER, FIRM, self.dup_window, expires - now_ns)
            limit, layer = lim["max_open_orders"]
            if cell.open_orders >= limit:
                return fail(R.MAX_OPEN_ORDERS, ACCOUNT_INSTRUMENT, limit, cell.open_orders + 1)
            count = self.instrument_open_orders.get(instrument, 0)
            if count >= self.instrument_max_open[instrument]:
                return fail(R.MAX_OPEN_ORDERS, INSTRUMENT, self.instrument_max_open[instrument], count + 1)
            if ast.open_orders >= acfg["max_open"]:
                return fail(R.MAX_OPEN_ORDERS, ACCOUNT, acfg["max_open"], ast.open_orders + 1)
            if self.firm_open_orders >= self.firm_max_open:
                return fail(R.MAX_OPEN_ORDERS, FIRM, self.firm_max_open, self.firm_open_orders + 1)

        if side == Side.SELL:
            avail = cell.position - cell.open_sell
            if leaves > avail:
                return fail(R.INSUFFICIENT_POSITION, ACCOUNT, max(avail, 0), leaves)
        # the side's working lots are an exact sum: refused rather than past int64
        if leaves + (cell.open_buy if side == Side.BUY else cell.open_sell) > INT64_MAX:
            limit, layer = lim["max_net_position"]
            return fail(R.MAX_NET_POSITION, layer, limit, INT64_MAX)
        # largest long (every working buy filled) plus largest short (every working sell
        # filled), saturated as the core adds them
        longest = _sat(_sat(cell.position + cell.open_buy) + (leaves if side == Side.BUY else 0))
        shortest = _sat(_sat(cell.open_sell - cell.position) + (leaves if side != Side.BUY else 0))
        gross = _sat(max(0, longest) + max(0, shortest))
        limit, layer = lim["max_gross_position"]
        if gross > limit:
            return fail(R.MAX_GROSS_POSITION, layer, limit, gross)
        net = longest if side == Side.BUY else shortest
        limit, layer = lim["max_net_position"]
        if net > limit:
            return fail(R.MAX_NET_POSITION, layer, limit, net)

        if side != Side.SELL:
            power = self._buying_power(acfg, ast)
            if leaves_notional > power:
                return fail(R.INSUFFICIENT_BUYING_POWER, ACCOUNT, power, leaves_notional)
        total = _sat(_sat(ast.traded_notional + ast.open_notional) + leaves_notional)
        if total > acfg["max_daily_notional"]:
            return fail(R.DAILY_NOTIONAL_LIMIT, ACCOUNT, acfg["max_daily_notional"], total)
        total = _sat(_sat(self.firm_traded + self.firm_open_notional) + leaves_notional)
        if total > self.firm_max_daily_notional:
            return fail(R.DAILY_NOTIONAL_LIMIT, FIRM, self.firm_max_daily_notional, total)
        return 0, value_price, leaves_notional

    @staticmethod
    def _buying_power(acfg: dict, ast: AccountState) -> int:
        """Cash + cash flow + credit - reserved - 2 x short basis, saturated step by step."""
        power = _sat(_sat(acfg["cash"] + ast.cash_flow) + acfg["credit"])
        return _sat(_sat(power - ast.reserved) - _sat(2 * ast.short_basis))

    # ------------------------------------------------------------ exposure
    def _reserve(self, order: Order, notional: int, count: bool) -> None:
        cell = self.cells.setdefault((order.account, order.instrument), Cell())
        ast = self.acct.setdefault(order.account, AccountState())
        if order.side == Side.BUY:
            cell.open_buy += order.leaves
        else:
            cell.open_sell += order.leaves
        if order.side != Side.SELL:
            ast.reserved = _sat(ast.reserved + notional)
        ast.open_notional = _sat(ast.open_notional + notional)
        self.firm_open_notional = _sat(self.firm_open_notional + notional)
        if count:
            cell.open_orders += 1
            ast.open_orders += 1
            self.instrument_open_orders[order.instrument] = self.instrument_open_orders.get(order.instrument, 0) + 1
            self.session_state[order.session].open_orders += 1
            self.firm_open_orders += 1

    def _release(self, order: Order, lots: int, count: bool) -> None:
        cell = self.cells[(order.account, order.instrument)]
        ast = self.acct[order.account]
        part = _mul(lots, order.value_price, self.mult[order.instrument])
        if order.side == Side.BUY:
            cell.open_buy -= lots
        else:
            cell.open_sell -= lots
        if order.side != Side.SELL:
            ast.reserved = _sat(ast.reserved - part)
        ast.open_notional = _sat(ast.open_notional - part)
        self.firm_open_notional = _sat(self.firm_open_notional - part)
        if count:
            cell.open_orders -= 1
            ast.open_orders -= 1
            self.instrument_open_orders[order.instrument] -= 1
            self.session_state[order.session].open_orders -= 1
            self.firm_open_orders -= 1
            if order.session in self.releasing and not self.session_state[order.session].open_orders:
                self._free_session(order.session)

    def on_fill(self, order_key, qty, price):
        qty, price = operator.index(qty), operator.index(price)  # (floats refused, as in Cython)
        order = self.orders.get(order_key)
        if order is None:
            return int(R.UNKNOWN_ORDER)
        if not 0 < qty <= MAX_QTY:
            return int(R.INVALID_QTY)
        if not 0 < price <= MAX_PRICE:
            return int(R.INVALID_PRICE)
        taken = min(qty, order.leaves)      # an overfill moves the position by all of it
        self._release(order, taken, False)
        order.leaves -= taken
        self._book_fill(order.account, order.instrument, order.side, qty, price)
        if order.leaves == 0:
            self._release(order, 0, True)
            del self.orders[order_key]
        return 0

    def on_fill_done(self, account, instrument, side, qty, price):
        qty, price = operator.index(qty), operator.index(price)
        if not 0 < qty <= MAX_QTY:
            return int(R.INVALID_QTY)
        if not 0 < price <= MAX_PRICE:
            return int(R.INVALID_PRICE)
        if side not in (Side.BUY, Side.SELL, Side.SELL_SHORT):
            return int(R.INVALID_SIDE)
        self._book_fill(account, instrument, side, qty, price)
        return 0

    def _book_fill(self, account, instrument, side, qty, price):
        cell = self.cells.setdefault((account, instrument), Cell())
        ast = self.acct.setdefault(account, AccountState())
        mult = self.mult[instrument]
        value = _mul(qty, price, mult)
        ast.traded_notional = _sat(ast.traded_notional + value)
        self.firm_traded = _sat(self.firm_traded + value)
        short_before = cell.cost if cell.position < 0 else 0
        signed = qty if side == Side.BUY else -qty
        ast.cash_flow = _sat(ast.cash_flow + (-value if side == Side.BUY else value))
        pnl = 0
        if cell.position == 0 or (cell.position > 0) == (signed > 0):
            cell.cost = _sat(cell.cost + value)
            cell.position = _sat_sym(cell.position + signed)
        else:
            size = abs(cell.position)
            closed = min(qty, size)
            portion = cell.cost * closed // size
            closed_value = _mul(closed, price, mult)
            pnl = _sat(closed_value - portion if cell.position > 0 else portion - closed_value)
            cell.cost -= portion
            cell.position += closed if signed > 0 else -closed
            if qty > closed:
                cell.cost = _mul(qty - closed, price, mult)
                cell.position = (qty - closed) if signed > 0 else -(qty - closed)
        ast.realized_pnl = _sat_sym(ast.realized_pnl + pnl)
        self.firm_realized = _sat_sym(self.firm_realized + pnl)
        ast.short_basis = _sat(_sat(ast.short_basis - short_before)
                               + (cell.cost if cell.position < 0 else 0))

    def on_cancel(self, order_key):
        order = self.orders.pop(order_key, None)
        if order is None:
            return int(R.UNKNOWN_ORDER)
        self._release(order, order.leaves, True)
        return 0

    def on_reject(self, order_key):
        order = self.orders.get(order_key)
        if order is not None:
            key = (order.account, order.instrument, order.side, order.qty, order.price)
            owner, before = self.recent_owner.get(key, (None, None))
            if owner == order_key:
                del self.recent_owner[key]
                if before is None:
                    del self.recent[key]
                else:
                    self.recent[key] = before
        return self.on_cancel(order_key)

    def admit_replace(self, order_key, now_ns, session=None):
        order = self.orders.get(order_key)
        if order is None:
            return self._reject(R.UNKNOWN_ORDER)
        return self._throttle(order.session if session is None else session, now_ns)

    def on_replace(self, order_key, new_qty, new_price, cl_ord_hash, now_ns, admitted=False):
        new_qty, new_price = operator.index(new_qty), operator.index(new_price)
        order = self.orders.get(order_key)
        if order is None:
            return self._reject(R.UNKNOWN_ORDER)
        reason = 0 if admitted else self._throttle(order.session, now_ns)
        if reason:
            return reason
        if self._clord(order.session, cl_ord_hash) in self.cl_ord_ids:
            return self._reject(R.DUPLICATE_CL_ORD_ID, SESSION)
        self.cl_ord_ids.add(self._clord(order.session, cl_ord_hash))
        cum = order.qty - order.leaves
        leaves = new_qty - cum
        if leaves <= 0:
            return self._reject(R.REPLACE_QTY_NOT_ABOVE_FILLED, 0, cum, new_qty)
        if leaves <= order.leaves and (order.ord_type != OrdType.LIMIT or new_price == order.price):
            # reduce-only: never judged, the reservation shrinks at its valuation
            self._release(order, order.leaves - leaves, False)
            order.qty, order.leaves = new_qty, leaves
            return 0
        mult = self.mult[order.instrument]
        old_notional = order.leaves * order.value_price * mult
        self._release(order, order.leaves, False)
        price = new_price if order.ord_type == OrdType.LIMIT else order.price
        reason, value_price, notional = self._evaluate(order.account, order.instrument, order.side,
                                                       order.ord_type, new_qty, leaves, price, order.flags,
                                                       now_ns, False)
        if reason:
            self._reserve(order, old_notional, False)
            return reason
        order.qty, order.leaves, order.price, order.value_price = new_qty, leaves, price, value_price
        self._reserve(order, notional, False)
        return 0

    # ------------------------------------------------------------ market data, admin
    def set_reference_price(self, instrument, price, now_ns):
        _check_ref_price(price)
        self.ref[instrument] = (price, now_ns)
        self.market_refs.discard(instrument)

    def set_market_reference(self, instrument, price, now_ns):
        _check_ref_price(price)
        self.ref[instrument] = (price, now_ns)
        self.market_refs.add(instrument)

    def clear_reference_prices(self):
        self.ref.clear()
        self.market_refs.clear()

    def market_reference_lost(self, instrument):
        self.market_refs.discard(instrument)

    def market_checked(self, now_ns):
        # What the core does with one stamp: every market reference stamped afresh.
        for instrument in self.market_refs:
            self.ref[instrument] = (self.ref[instrument][0], now_ns)

    def set_halted(self, symbol, halted, now_ns, actor="admin", reason=""):
        (self.runtime_halted.add if halted else self.runtime_halted.discard)(self.instruments[symbol])

    def _keys(self, match) -> list[int]:
        return sorted(key for key, order in self.orders.items() if match(order))

    def engage_kill_switch(self, scope, target=None, *, now_ns, actor, reason=""):
        if scope == "global":
            self.killed_firm = True
            return self._keys(lambda o: True)
        if scope == "account":
            a = self.accounts[target]
            self.killed_accounts.add(a)
            return self._keys(lambda o: o.account == a)
        i = self.instruments[target]
        self.killed_instruments.add(i)
        return self._keys(lambda o: o.instrument == i)

    def release_kill_switch(self, scope, target=None, *, now_ns, actor, reason=""):
        if scope == "global":
            self.killed_firm = False
        elif scope == "account":
            self.killed_accounts.discard(self.accounts[target])
        else:
            self.killed_instruments.discard(self.instruments[target])

    def cancel_on_disconnect(self, session, now_ns=0):
        s = self.sessions.get(session)
        return [] if s is None else self._keys(lambda o: o.session == s)

    def reset_daily(self, now_ns, actor="engine"):
        for state in self.acct.values():
            state.traded_notional = 0
            state.realized_pnl = 0
        self.firm_traded = 0
        self.firm_realized = 0
        self.cl_ord_ids.clear()
        self.recent.clear()
        self.recent_owner.clear()

    # ------------------------------------------------------------ inspection
    def exposure(self, account, instrument) -> dict:
        cell = self.cells.get((account, instrument), Cell())
        return {"position": cell.position, "open_buy": cell.open_buy, "open_sell": cell.open_sell,
                "cost": cell.cost, "open_orders": cell.open_orders}

    def account_state(self, account) -> dict:
        s = self.acct.get(account, AccountState())
        cfg = self.account_cfg[account]
        return {"cash_flow": s.cash_flow, "reserved": s.reserved, "short_basis": s.short_basis,
                "open_notional": s.open_notional, "open_orders": s.open_orders,
                "traded_notional": s.traded_notional, "realized_pnl": s.realized_pnl,
                "buying_power": self._buying_power(cfg, s)}

    def last_reject(self) -> dict:
        return dict(self.detail)

    def collared(self, account, instrument):
        lim = self.limits[(account, instrument)]
        return bool(lim["collar_bps"][1] or lim["collar_ticks"][1])

    def value_price(self, order_key):
        o = self.orders.get(order_key)
        return -1 if o is None else o.value_price

    def working_order(self, order_key):
        o = self.orders.get(order_key)
        if o is None:
            return None
        return {"key": o.key, "session": o.session, "account": o.account, "instrument": o.instrument,
                "side": o.side, "ord_type": o.ord_type, "qty": o.qty, "leaves": o.leaves,
                "price": o.price, "value_price": o.value_price, "flags": o.flags}

    @property
    def n_working(self) -> int:
        return len(self.orders)

    def working_keys(self) -> list[int]:
        return sorted(self.orders)


class SessionGate:
    """``RiskEngine.session_gate``: ``check_new`` with the session bound."""

    def __init__(self, risk: RiskReference, session: int, name: str):
        self.risk, self.session, self.name = risk, session, name

    def check_new(self, order_key, account, instrument, side, ord_type, qty, price, flags,
                  cl_ord_hash, now_ns):
        return self.risk.check_new(order_key, self.session, account, instrument, side, ord_type,
                                   qty, price, flags, cl_ord_hash, now_ns)


def _check_ref_price(price: int) -> None:
    if price <= 0:
        raise ValueError("reference price must be positive")
