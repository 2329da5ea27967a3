# cython: language_level=3, binding=False
"""Pre-trade risk: the gate every order passes between intake and the router.

The engine resolves account, instrument and session names to small integers
once (``account_index`` ...), then calls :meth:`RiskEngine.check_new` per
order with C integers. A pass reserves the order's worst-case exposure at
once, so two orders in flight can never both spend the same limit; the engine
then reports what happens to it (``on_fill``, ``on_cancel``, ``on_reject``,
``on_replace``) and risk keeps its own exposure so that no check waits on a
lookup elsewhere. A denial is a ``RejectReason`` code; the text for the client
is built only on the reject path, by :meth:`RiskEngine.last_reject_text`.

All state changes come from method calls with explicit ``now_ns``, never from
a clock, so replaying the journal's calls rebuilds the state exactly
(:meth:`RiskEngine.snapshot` compares two rebuilds).

Money is an integer count of ``money_unit`` (firm config, default 0.0001);
an instrument's notional is ``price_ticks * lots * mult`` where ``mult`` is
``tick_size * lot_size / money_unit`` and must be a whole number. Products are
computed with overflow checks and saturate at INT64_MAX, which every limit
treats as exceeded: a value too large to hold is rejected, never wrapped.
Quantities and prices are bounded as the router bounds them (``MAX_QTY``
lots, ``MAX_PRICE`` ticks): an order, replace or fill outside 1 to the bound is
refused, and the sums of fills saturate (positions at +-INT64_MAX lots).
"""
import logging
from decimal import Decimal, InvalidOperation
from fractions import Fraction

cimport cython
from cpython.exc cimport PyErr_Clear
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset, memcpy

from ext.types cimport (BUY, SELL, SELL_SHORT, MARKET, LIMIT,
                        REJ_NONE, UNKNOWN_ORDER, INVALID_QTY, INVALID_PRICE,
                        BELOW_MIN_QTY, INVALID_SIDE, INVALID_ORD_TYPE, PRICE_REQUIRED,
                        REPLACE_QTY_NOT_ABOVE_FILLED,
                        UNKNOWN_INSTRUMENT, INSTRUMENT_HALTED, INSTRUMENT_RESTRICTED,
                        UNKNOWN_ACCOUNT, ACCOUNT_INACTIVE, NOT_ENTITLED, MAX_ORDER_QTY,
                        MAX_ORDER_NOTIONAL, PRICE_COLLAR, NO_REFERENCE_PRICE,
                        STALE_REFERENCE_PRICE, MAX_OPEN_ORDERS, MAX_GROSS_POSITION,
                        MAX_NET_POSITION, INSUFFICIENT_BUYING_POWER, INSUFFICIENT_POSITION,
                        SHORT_SELL_NOT_ALLOWED, LOCATE_REQUIRED, DAILY_NOTIONAL_LIMIT,
                        DAILY_LOSS_LIMIT, THROTTLED, DUPLICATE_CL_ORD_ID, DUPLICATIVE_ORDER,
                        KILL_SWITCH, UNKNOWN_SESSION, C_MAX_QTY, C_MAX_PRICE)
from ext.intarg cimport big_arg, small_arg
from ext.types import RejectReason
from ext.instrument import Instrument

cdef extern from *:
    """
    #include <stdint.h>
    /* Overflow-checked integer helpers of the risk core. Each saturates at
       the int64 range instead of wrapping, so an unrepresentable amount
       compares as "over every limit". */
    static inline int64_t kx_sat_add(int64_t a, int64_t b) {
        int64_t r;
        if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
        return r;
    }
    static inline int64_t kx_sat_sub(int64_t a, int64_t b) {
        int64_t r;
        if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN;
        return r;
    }
    /* a + b held within +-INT64_MAX: symmetric, so that the sum's negation is
       an int64 too (a short position's size, a realized loss). */
    static inline int64_t kx_sat_sym(int64_t a, int64_t b) {
        int64_t r;
        if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : -INT64_MAX;
        return r == INT64_MIN ? -INT64_MAX : r;
    }
    /* 1 if v is not in 1..hi (a quantity or price against its bound): one
       unsigned compare, as v - 1 of v <= 0 is at least 2^63 unsigned. */
    static inline int kx_outside(int64_t v, int64_t hi) {
        return (uint64_t)v - 1 >= (uint64_t)hi;
    }
    /* 1 if a + b does not fit an int64. */
    static inline int kx_add_ovf(int64_t a, int64_t b) {
        int64_t r;
        return __builtin_add_overflow(a, b, &r);
    }
    /* a * b * c for non-negative operands; *ovf set when it does not fit. */
    static inline int64_t kx_mul3(int64_t a, int64_t b, int64_t c, int *ovf) {
        int64_t r;
        if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r)) {
            *ovf = 1;
            return INT64_MAX;
        }
        return r;
    }
    /* floor(a * b / c) for a, b >= 0 and c > 0 with a 128-bit intermediate
       (only when a * b does not fit 64 bits: the 128-bit divide is slow). */
    static inline int64_t kx_muldiv(int64_t a, int64_t b, int64_t c) {
        int64_t r;
        if (!__builtin_mul_overflow(a, b, &r)) return r / c;
        __int128 v = (__int128)a * (__int128)b / (__int128)c;
        return v > (__int128)INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    static inline void kx_prefetch(const void *p) { __builtin_prefetch(p, 1, 3); }
    /* Argument conversion of the per-order entry points. Cython's generic
       conversion costs ~28 instructions per int argument; these take the
       exact-int fast paths inline (1 to 3 digits: small ints, prices,
       nanosecond times, 64-bit hashes) and leave anything else (int
       subclasses, __index__ objects, out-of-range values) to
       PyLong_AsLongLong. A failure sets *bad and leaves the exception set;
       the caller then names the argument (_check_new_arg_error, out of line). */
    static int64_t kx_arg_slow(PyObject *o, int *bad) {
        long long v = PyLong_AsLongLong(o);
        if (v == -1 && PyErr_Occurred()) *bad = 1;
        return (int64_t)v;
    }
    static inline int64_t kx_arg(PyObject *o, int *bad) {
        if (__builtin_expect(PyLong_CheckExact(o), 1)) {
    #if PY_VERSION_HEX < 0x030C0000
            const digit *d = ((PyLongObject *)o)->ob_digit;
            switch (Py_SIZE(o)) {
                case 0: return 0;
                case 1: return (int64_t)d[0];
                case -1: return -(int64_t)d[0];
    #if PyLong_SHIFT == 30
                case 2: return (int64_t)(((uint64_t)d[1] << 30) | d[0]);
                case -2: return -(int64_t)(((uint64_t)d[1] << 30) | d[0]);
                case 3:
                    if (d[2] < 8) return (int64_t)(((uint64_t)d[2] << 60) | ((uint64_t)d[1] << 30) | d[0]);
                    break;
                case -3:
                    if (d[2] < 8) return -(int64_t)(((uint64_t)d[2] << 60) | ((uint64_t)d[1] << 30) | d[0]);
                    break;
    #endif
            }
    #else
            if (PyUnstable_Long_IsCompact((PyLongObject *)o))
                return (int64_t)PyUnstable_Long_CompactValue((PyLongObject *)o);
    #endif
        }
        return kx_arg_slow(o, bad);
    }
    /* 1 if v does not fit an int32 (checked once for all such arguments). */
    static inline int kx_not_i32(int64_t v) { return (uint64_t)(v + 0x80000000LL) > 0xffffffffULL; }
    /* splitmix64 finaliser: spreads keys over an open-addressing table. */
    static inline uint64_t kx_mix(uint64_t x) {
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        return x;
    }
    """
    int64_t kx_sat_add(int64_t a, int64_t b) noexcept nogil
    int64_t kx_sat_sub(int64_t a, int64_t b) noexcept nogil
    int64_t kx_sat_sym(int64_t a, int64_t b) noexcept nogil
    bint kx_add_ovf(int64_t a, int64_t b) noexcept nogil
    bint kx_outside(int64_t v, int64_t hi) noexcept nogil
    int64_t kx_mul3(int64_t a, int64_t b, int64_t c, int* ovf) noexcept nogil
    int64_t kx_muldiv(int64_t a, int64_t b, int64_t c) noexcept nogil
    uint64_t kx_mix(uint64_t x) noexcept nogil
    void kx_prefetch(const void* p) noexcept nogil
    int64_t kx_arg(object o, int* bad) noexcept
    bint kx_not_i32(int64_t v) noexcept nogil

_log = logging.getLogger("kronos.risk")

#: Largest quantity (lots) and price (ticks) risk takes, the router's (``types.pxd``).
MAX_QTY = C_MAX_QTY
MAX_PRICE = C_MAX_PRICE

cdef int64_t NANO_TOKENS = 1000000000     # one order's worth of throttle tokens
cdef int64_t NS_PER_MS = 1000000
cdef int64_t UNLIMITED = INT64_MAX
cdef uint8_t HALT_CONFIG = 1              # InstrumentInfo.halted bits
cdef uint8_t HALT_RUNTIME = 2

#: Columns of the int64 array taken by :meth:`RiskEngine.check_new_batch`.
BATCH_COLUMNS = ("order_key", "session", "account", "instrument", "side", "ord_type",
                 "qty", "price", "flags", "cl_ord_hash", "now_ns")


class ConfigError(ValueError):
    """A risk configuration that cannot be applied; nothing was changed."""


# ================================================================= configuration
# Keys accepted per layer. An unknown key is an error: a typo in a risk limit
# must not silently leave the limit off.
_ORDER_LIMIT_KEYS = ("max_order_qty", "max_order_notional", "max_open_orders",
                     "max_gross_position", "max_net_position", "collar_bps", "collar_ticks")
_FIRM_KEYS = frozenset(_ORDER_LIMIT_KEYS + (
    "money_unit", "max_daily_notional", "max_daily_loss", "max_reference_age_ms",
    "duplicative_window_ms", "throttle_rate", "throttle_burst", "restricted"))
_INSTRUMENT_KEYS = frozenset(_ORDER_LIMIT_KEYS + (
    "tick_size", "lot_size", "min_qty", "halted", "max_reference_age_ms"))
_ACCOUNT_KEYS = frozenset(_ORDER_LIMIT_KEYS + (
    "active", "cash", "credit_limit", "allow_short", "entitlements", "restricted",
    "max_daily_notional", "max_daily_loss", "limits"))
_CELL_KEYS = frozenset(_ORDER_LIMIT_KEYS)
_SESSION_KEYS = frozenset(("throttle_rate", "throttle_burst"))

DEFAULT_MONEY_UNIT = "0.0001"
DEFAULT_MAX_REFERENCE_AGE_MS = 5000


cdef object _exact(object value, str field):
    """A config number as an exact Fraction; floats are refused (no binary money)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ConfigError(f"{field}: {value!r} must be an integer or a decimal string, not {type(value).__name__}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ConfigError(f"{field}: {value!r} is not a decimal number") from None
        if not number.is_finite():
            raise ConfigError(f"{field}: {value!r} is not a finite number")
        return Fraction(number)
    raise ConfigError(f"{field}: {value!r} must be an integer or a decimal string")


cdef object _nonneg(object value, str field):
    number = _exact(value, field)
    if number < 0:
        raise ConfigError(f"{field}: {value!r} must not be negative")
    return number


cdef int64_t _clamp(object number):
    """Floor of a non-negative Fraction, capped at INT64_MAX (= unlimited)."""
    whole = number.numerator // number.denominator
    return INT64_MAX if whole > INT64_MAX else whole


cdef int64_t _count(object value, str field) except? -1:
    number = _nonneg(value, field)
    if number.denominator != 1:
        raise ConfigError(f"{field}: {value!r} must be a whole number")
    return _clamp(number)


cdef int64_t _burst(object value, str field) except? -1:
    """A throttle bucket size: a whole number of orders, at least one."""
    cdef int64_t burst = _count(value, field)
    if burst < 1:
        # A bucket that cannot hold one order's token would throttle every order.
        raise ConfigError(f"{field}: {value!r} must be at least 1 (orders a client key may send at once); "
                          f"to turn the throttle off, set throttle_rate = 0")
    return burst


cdef int64_t _ms_to_ns(object value, str field) except? -1:
    """Milliseconds (whole or decimal) as nanoseconds, capped at INT64_MAX."""
    return _clamp(_nonneg(value, field) * NS_PER_MS)


cdef bint _flag(object value, str field) except -1:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: {value!r} must be true or false")
    return value


cdef list _symbols(object value, str field, dict known):
    """The symbols of a list, each one of ``known``'s (the instruments): a misspelt symbol
    would leave a restriction off (or an entitlement out) without a word."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigError(f"{field}: must be a list of symbols")
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{field}: {item!r} is not a symbol")
        if item not in known:
            raise ConfigError(f"{field}: {item!r}: no such instrument in this config "
                              f"(instruments: {', '.join(sorted(known)) or 'none'})")
    return list(value)


cdef dict _section(object value, str field, frozenset keys):
    if not isinstance(value, dict):
        raise ConfigError(f"{field}: must be a table")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ConfigError(f"{field}: unknown key(s) {', '.join(unknown)}")
    return value


cdef dict _order_limits(dict section, str where, object money_unit):
    """Normalise the per-order/position limits of one layer.

    Quantities stay exact Fractions (converted to lots per instrument later);
    money becomes money units (rounded down: a limit never grows by rounding).
    """
    out = {}
    for key in ("max_order_qty", "max_gross_position", "max_net_position"):
        if key in section:
            out[key] = _nonneg(section[key], f"{where}.{key}")
    if "max_order_notional" in section:
        out["max_order_notional"] = _clamp(_nonneg(section["max_order_notional"],
                                                    f"{where}.max_order_notional") / money_unit)
    for key in ("max_open_orders", "collar_bps", "collar_ticks"):
        if key in section:
            out[key] = _count(section[key], f"{where}.{key}")
    return out


cdef class _Plan:
    """A validated configuration, ready to be written into the C arrays."""
    cdef public object money_unit
    cdef public dict firm
    cdef public dict instruments      # symbol -> dict
    cdef public dict accounts         # name -> dict
    cdef public dict sessions         # name -> dict


cdef _Plan _plan(dict config):
    """Check and normalise a whole config before anything is changed."""
    cdef _Plan plan = _Plan()
    unknown = sorted(set(config) - {"firm", "instruments", "accounts", "sessions"})
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}")
    firm = _section(config.get("firm", {}), "firm", _FIRM_KEYS)
    money_unit = _exact(firm.get("money_unit", DEFAULT_MONEY_UNIT), "firm.money_unit")
    if money_unit <= 0:
        raise ConfigError("firm.money_unit must be positive")
    plan.money_unit = money_unit

    f = _order_limits(firm, "firm", money_unit)
    for key in ("max_daily_notional", "max_daily_loss"):
        if key in firm:
            f[key] = _clamp(_nonneg(firm[key], f"firm.{key}") / money_unit)
    f["max_reference_age_ns"] = _ms_to_ns(firm.get("max_reference_age_ms", DEFAULT_MAX_REFERENCE_AGE_MS),
                                          "firm.max_reference_age_ms")
    f["duplicative_window_ns"] = _ms_to_ns(firm.get("duplicative_window_ms", 0), "firm.duplicative_window_ms")
    f["throttle_rate"] = _count(firm.get("throttle_rate", 0), "firm.throttle_rate")
    f["throttle_burst"] = _burst(firm.get("throttle_burst", f["throttle_rate"] or 1), "firm.throttle_burst")
    plan.firm = f

    plan.instruments = {}
    instruments = config.get("instruments", {})
    if not isinstance(instruments, dict):
        raise ConfigError("instruments: must be a table")
    for symbol, raw in instruments.items():
        where = f"instruments.{symbol}"
        section = _section(raw, where, _INSTRUMENT_KEYS)
        try:
            grid = Instrument(symbol, str(section.get("tick_size", "0.01")),
                              str(section.get("lot_size", "1")),
                              None if "min_qty" not in section else str(section["min_qty"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        mult = Fraction(Decimal(grid.tick_size)) * Fraction(Decimal(grid.lot_size)) / money_unit
        if mult.denominator != 1:
            raise ConfigError(f"{where}: tick_size x lot_size ({grid.tick_size} x {grid.lot_size}) "
                              f"is not a whole number of firm.money_unit")
        entry = _order_limits(section, where, money_unit)
        entry["grid"] = grid
        entry["mult"] = int(mult)
        entry["halted"] = _flag(section.get("halted", False), f"{where}.halted")
        if "max_reference_age_ms" in section:
            entry["max_reference_age_ns"] = _ms_to_ns(section["max_reference_age_ms"],
                                                      f"{where}.max_reference_age_ms")
        plan.instruments[symbol] = entry
    f["restricted"] = set(_symbols(firm.get("restricted", []), "firm.restricted", plan.instruments))

    plan.accounts = {}
    accounts = config.get("accounts", {})
    if not isinstance(accounts, dict):
        raise ConfigError("accounts: must be a table")
    for name, raw in accounts.items():
        where = f"accounts.{name}"
        section = _section(raw, where, _ACCOUNT_KEYS)
        entry = _order_limits(section, where, money_unit)
        entry["active"] = _flag(section.get("active", True), f"{where}.active")
        entry["allow_short"] = _flag(section.get("allow_short", False), f"{where}.allow_short")
        entry["cash"] = _clamp(_nonneg(section.get("cash", 0), f"{where}.cash") / money_unit)
        entry["credit"] = _clamp(_nonneg(section.get("credit_limit", 0), f"{where}.credit_limit") / money_unit)
        for key in ("max_daily_notional", "max_daily_loss"):
            if key in section:
                entry[key] = _clamp(_nonneg(section[key], f"{where}.{key}") / money_unit)
        ent = section.get("entitlements", "*")
        # ["*"] as security.clients' accounts write "all" (it matched no symbol: no entitlement)
        entry["entitlements"] = None if ent == "*" or (isinstance(ent, list) and ent == ["*"]) \
            else set(_symbols(ent, f"{where}.entitlements", plan.instruments))
        entry["restricted"] = set(_symbols(section.get("restricted", []), f"{where}.restricted",
                                           plan.instruments))
        cells = {}
        limits = section.get("limits", {})
        if not isinstance(limits, dict):
            raise ConfigError(f"{where}.limits: must be a table")
        for symbol, cell in limits.items():
            if symbol not in plan.instruments:
                # (A misspelt symbol would leave the limit meant for another off.)
                raise ConfigError(f"{where}.limits.{symbol}: no such instrument in this config "
                                  f"(instruments: {', '.join(sorted(plan.instruments)) or 'none'})")
            cells[symbol] = _order_limits(_section(cell, f"{where}.limits.{symbol}", _CELL_KEYS),
                                          f"{where}.limits.{symbol}", money_unit)
        entry["cells"] = cells
        plan.accounts[name] = entry

    plan.sessions = {}
    sessions = config.get("sessions", {})
    if not isinstance(sessions, dict):
        raise ConfigError("sessions: must be a table")
    for name, raw in sessions.items():
        section = _section(raw, f"sessions.{name}", _SESSION_KEYS)
        rate = _count(section.get("throttle_rate", f["throttle_rate"]), f"sessions.{name}.throttle_rate")
        if "throttle_burst" in section:
            burst = _burst(section["throttle_burst"], f"sessions.{name}.throttle_burst")
        else:
            burst = (rate or 1) if "throttle_rate" in section else f["throttle_burst"]
        plan.sessions[name] = {"throttle_rate": rate, "throttle_burst": burst}
    return plan


cdef tuple _tightest(list candidates):
    """``(value, layer)`` of the smallest limit; a tie goes to the most specific
    layer, the one an operator would edit. ``candidates`` run general to specific."""
    best = INT64_MAX
    layer = 0
    for value, lay in candidates:
        if value is not None and value <= best:
            best = value
            layer = lay
    return best, layer


cdef object _lots(object qty, object grid):
    """A quantity limit (exact units) as whole lots of ``grid``, rounded down."""
    if qty is None:
        return None
    return _clamp(qty / Fraction(Decimal(grid.lot_size)))


#: ``RiskEngine.audit_log`` keeps at most this many of the latest entries.
AUDIT_LOG_KEEP = 10_000

# ================================================================= reason text
_LAYER_NAMES = {1: "firm", 2: "account", 3: "instrument", 4: "account-instrument", 5: "session"}

_REASON_TEXT = {
    UNKNOWN_SESSION: "session is not registered with risk",
    THROTTLED: ("order rate above the throttle of {profile} ({limit} orders per second, burst {value}), "
                "one bucket for all its sessions; slow down and resend"),
    DUPLICATE_CL_ORD_ID: "cl_ord_id already used in this session today; send a new cl_ord_id",
    UNKNOWN_INSTRUMENT: "instrument is not configured for trading",
    UNKNOWN_ACCOUNT: "account is not configured for trading",
    KILL_SWITCH: "kill switch engaged ({layer}); no new orders until risk releases it",
    ACCOUNT_INACTIVE: "account is inactive; contact risk to reactivate",
    INSTRUMENT_HALTED: "instrument is halted; resend when trading resumes",
    INSTRUMENT_RESTRICTED: "instrument is on the {layer} restricted list",
    NOT_ENTITLED: "account is not entitled to trade this instrument",
    INVALID_SIDE: "side must be BUY, SELL or SELL_SHORT",
    INVALID_ORD_TYPE: "ord_type must be MARKET or LIMIT",
    INVALID_QTY: "quantity must be positive and at most {limit}",
    BELOW_MIN_QTY: "quantity {value} is below the minimum {limit}",
    PRICE_REQUIRED: "a LIMIT order needs a price",
    INVALID_PRICE: "price must be positive and at most {limit}",
    SHORT_SELL_NOT_ALLOWED: "account may not sell short",
    LOCATE_REQUIRED: "SELL_SHORT needs a locate; mark the order with the locate flag",
    DAILY_LOSS_LIMIT: "realized loss today {value} exceeds the {layer} max_daily_loss {limit}",
    MAX_ORDER_QTY: "quantity {value} exceeds the {layer} max_order_qty {limit}",
    NO_REFERENCE_PRICE: "no reference price for the instrument yet; send a LIMIT order or wait for market data",
    STALE_REFERENCE_PRICE: "reference price is {value} old, above the {layer} max_reference_age {limit}",
    PRICE_COLLAR: "price is {value} from the reference price, outside the {layer} collar of {limit}",
    MAX_ORDER_NOTIONAL: "order notional {value} exceeds the {layer} max_order_notional {limit}",
    DUPLICATIVE_ORDER: "same account, instrument, side, qty and price as an order inside the duplicative "
                       "window ({limit}; {value} left); resend with the intended-duplicate flag if it is meant",
    MAX_OPEN_ORDERS: "{value} working orders would exceed the {layer} max_open_orders {limit}",
    INSUFFICIENT_POSITION: "sell quantity {value} exceeds the position available to sell {limit} "
                           "(position net of working sells); use SELL_SHORT with a locate to sell short",
    MAX_GROSS_POSITION: "worst-case gross position {value} would exceed the {layer} max_gross_position {limit}",
    MAX_NET_POSITION: "worst-case net position {value} would exceed the {layer} max_net_position {limit}",
    INSUFFICIENT_BUYING_POWER: "order cost {value} exceeds the buying power {limit}",
    DAILY_NOTIONAL_LIMIT: "traded plus working notional {value} would exceed the {layer} max_daily_notional {limit}",
    REPLACE_QTY_NOT_ABOVE_FILLED: "new quantity must be above the filled quantity {limit}",
}


# ================================================================= the engine
cdef class RiskEngine:
    """Pre-trade risk checks and the exposure state behind them.

    Parameters
    ----------
    config : dict
        The ``risk`` configuration (parsed TOML); see ``docs/risk.md``.
    capacity_hint : int, optional
        Expected working orders and cl_ord_ids in a day; tables are sized
        for it up front (they grow past it, at a pause on that order).
    log_events : bool, optional
        Whether audit events (``audit_log``) also go to the ``kronos.risk``
        logger, whose lines are the record. Default true; false for an
        engine built only to check a configuration, whose ``init`` is no
        event of the running engine's.

    Raises
    ------
    ConfigError
        If the configuration is invalid.

    Examples
    --------
    >>> risk = RiskEngine({"instruments": {"AAPL": {}}, "accounts": {"A1": {"cash": 100000}}})
    >>> s, a, i = risk.session_index("S1"), risk.account_index("A1"), risk.instrument_index("AAPL")
    >>> risk.check_new(1, s, a, i, 1, 2, 10, 18925, 0, 77, 0)   # BUY LIMIT 10 @ 189.25
    0
    """

    def __cinit__(self):
        self.orders_free = -1
        self.market_gen = 1
        self.audit_log = []
        self._account_ix = {}
        self._instrument_ix = {}
        self._session_ix = {}
        self._account_names = []
        self._instrument_names = []
        self._session_names = []
        self._bucket_ix = {}
        self._bucket_names = []
        self._instruments = {}
        self._grids = {}
        self._config = {}

    def __init__(self, dict config=None, Py_ssize_t capacity_hint=0, *, bint log_events=True):
        self._log_events = log_events
        # Tables are sized (and their pages touched) here for the expected
        # working orders and cl_ord_ids of a day, so that the order path
        # rarely grows one; they still grow when the hint is exceeded.
        cdef int64_t size = 1024
        while size < capacity_hint:
            size *= 2
        self._grow_orders(<int32_t>min(size, 1 << 30))
        self._set_order_index(2 * size)
        self._set_clord(2 * size)
        self._set_dup(2048)
        self._apply(config or {}, 0, "init", "startup")

    def __dealloc__(self):
        cdef int kind
        PyMem_Free(self.acct_limits)
        PyMem_Free(self.acct_state)
        PyMem_Free(self.inst)
        PyMem_Free(self.cell_limits)
        PyMem_Free(self.cell_state)
        PyMem_Free(self.sessions)
        PyMem_Free(self.buckets)
        PyMem_Free(self.free_sessions)
        PyMem_Free(self.orders)
        PyMem_Free(self.oindex)
        PyMem_Free(self.clord)
        PyMem_Free(self.dup)
        for kind in range(3):
            PyMem_Free(self.scope_lists[kind])

    # ------------------------------------------------------------ storage
    cdef int _ensure_dims(self, int32_t n_acc, int32_t n_ins, int32_t n_ses) except -1:
        """Grow the account, instrument and session arrays; state is kept."""
        cdef int32_t cap_a = max(self.cap_accounts, 4)
        cdef int32_t cap_i = max(self.cap_instruments, 4)
        cdef int32_t cap_s = max(self.cap_sessions, 4)
        cdef int32_t a
        while cap_a < n_acc:
            cap_a *= 2
        while cap_i < n_ins:
            cap_i *= 2
        while cap_s < n_ses:
            cap_s *= 2
        if cap_s != self.cap_sessions:
            self.sessions = <SessionState*>_grow(self.sessions, self.cap_sessions, cap_s, sizeof(SessionState))
            self.free_sessions = <int32_t*>_grow(self.free_sessions, self.cap_sessions, cap_s, sizeof(int32_t))
            self._grow_scope_lists(SCOPE_SESSION, self.cap_sessions, cap_s)
            self.cap_sessions = cap_s
        if cap_a == self.cap_accounts and cap_i == self.cap_instruments:
            return 0
        if cap_a != self.cap_accounts:
            self._grow_scope_lists(SCOPE_ACCOUNT, self.cap_accounts, cap_a)
        if cap_i != self.cap_instruments:
            self._grow_scope_lists(SCOPE_INSTRUMENT, self.cap_instruments, cap_i)
        self.acct_limits = <AccountLimits*>_grow(self.acct_limits, self.cap_accounts, cap_a, sizeof(AccountLimits))
        self.acct_state = <AccountState*>_grow(self.acct_state, self.cap_accounts, cap_a, sizeof(AccountState))
        self.inst = <InstrumentInfo*>_grow(self.inst, self.cap_instruments, cap_i, sizeof(InstrumentInfo))
        # Cells are [account][instrument]: a wider row means a fresh layout.
        cdef CellLimits* new_limits = <CellLimits*>_grow(NULL, 0, cap_a * cap_i, sizeof(CellLimits))
        cdef CellState* new_state = <CellState*>_grow(NULL, 0, cap_a * cap_i, sizeof(CellState))
        for a in range(self.cap_accounts):
            if self.cap_instruments:
                memcpy(&new_limits[a * cap_i], &self.cell_limits[a * self.cap_instruments],
                       self.cap_instruments * sizeof(CellLimits))
                memcpy(&new_state[a * cap_i], &self.cell_state[a * self.cap_instruments],
                       self.cap_instruments * sizeof(CellState))
        PyMem_Free(self.cell_limits)
        PyMem_Free(self.cell_state)
        self.cell_limits = new_limits
        self.cell_state = new_state
        self.cap_accounts = cap_a
        self.cap_instruments = cap_i
        return 0

    cdef int _grow_orders(self, int32_t cap) except -1:
        cdef int32_t k
        self.orders = <WorkingOrder*>_grow(self.orders, self.orders_cap, cap, sizeof(WorkingOrder))
        # Thread the new slots onto the free list, lowest slot first.
        for k in range(cap - 1, self.orders_cap - 1, -1):
            self.orders[k].next_free = self.orders_free
            self.orders_free = k
        self.orders_cap = cap
        return 0

    cdef int _grow_scope_lists(self, int kind, int32_t old_cap, int32_t cap) except -1:
        """Grow one scope's list ends from ``old_cap`` to ``cap`` entries, the new ones empty."""
        cdef int32_t k
        cdef ScopeList* lists = <ScopeList*>_grow(self.scope_lists[kind], old_cap, cap, sizeof(ScopeList))
        for k in range(old_cap, cap):
            lists[k].head = -1
            lists[k].tail = -1
        self.scope_lists[kind] = lists
        return 0

    cdef int _set_order_index(self, int64_t size) except -1:
        """(Re)build the key -> slot index with ``size`` buckets (a power of two, at most 2**32)."""
        cdef IndexEntry* table = <IndexEntry*>PyMem_Malloc(size * sizeof(IndexEntry))
        if table == NULL:
            raise MemoryError()
        memset(table, 0xff, size * sizeof(IndexEntry))      # slot -1: empty bucket
        cdef int64_t mask = size - 1, j, h
        for j in range(self.omask + 1 if self.oindex != NULL else 0):
            if self.oindex[j].slot >= 0:
                h = self.oindex[j].hash & mask              # no rehash: the entry holds it
                while table[h].slot >= 0:
                    h = (h + 1) & mask
                table[h] = self.oindex[j]
        PyMem_Free(self.oindex)
        self.oindex = table
        self.omask = mask
        return 0

    cdef int64_t _index_probe(self, int64_t key, uint32_t hash) noexcept:
        """The bucket holding ``key`` (``hash`` is its ``_index_hash``), or, when
        it is not working, ``-1 - b`` for the empty bucket ``b`` where it would go."""
        cdef int64_t h = hash & self.omask
        cdef int32_t slot
        while True:
            slot = self.oindex[h].slot
            if slot < 0:
                return -1 - h
            # The pool is read only on a hash match: almost always the key itself.
            if self.oindex[h].hash == hash and self.orders[slot].key == key:
                return h
            h = (h + 1) & self.omask

    cdef int32_t _find(self, int64_t key) noexcept:
        """Pool slot of a working order, or -1."""
        cdef int64_t h = self._index_probe(key, _index_hash(key))
        return self.oindex[h].slot if h >= 0 else -1

    cdef int _index_insert(self, int64_t key, int32_t slot) noexcept:
        cdef uint32_t hash = _index_hash(key)
        cdef int64_t h = hash & self.omask
        while self.oindex[h].slot >= 0:
            h = (h + 1) & self.omask
        self.oindex[h].hash = hash
        self.oindex[h].slot = slot
        return 0

    cdef int _index_remove(self, int64_t key) noexcept:
        """Delete ``key`` by backward shift, so probes never need tombstones."""
        cdef int64_t mask = self.omask
        cdef int64_t h = self._index_probe(key, _index_hash(key))
        cdef int64_t j, home
        if h < 0:
            return 0
        j = h
        while True:
            j = (j + 1) & mask
            if self.oindex[j].slot < 0:
                break
            home = self.oindex[j].hash & mask
            # Move j back into the hole at h unless its home lies cyclically in (h, j].
            if ((j - home) & mask) >= ((j - h) & mask):
                self.oindex[h] = self.oindex[j]
                h = j
        self.oindex[h].slot = -1
        return 0

    cdef int _set_clord(self, int64_t size) except -1:
        """(Re)build the cl_ord_id table with ``size`` buckets (a power of two)."""
        cdef uint64_t* table = <uint64_t*>_grow(NULL, 0, size, sizeof(uint64_t))
        cdef int64_t mask = size - 1, j, h
        for j in range(self.clord_mask + 1 if self.clord != NULL else 0):
            if self.clord[j]:
                h = <int64_t>(self.clord[j] & <uint64_t>mask)
                while table[h]:
                    h = (h + 1) & mask
                table[h] = self.clord[j]
        PyMem_Free(self.clord)
        self.clord = table
        self.clord_mask = mask
        return 0

    cdef int _clord_add(self, uint64_t key) except -1:
        """Record a (session, cl_ord_id) pair by its ``_clord_key``; 1 if it was
        already used today."""
        cdef int64_t h = <int64_t>(key & <uint64_t>self.clord_mask)
        if key == 0:
            if self.clord_zero:
                return 1
            self.clord_zero = True
            return 0
        while self.clord[h]:
            if self.clord[h] == key:
                return 1
            h = (h + 1) & self.clord_mask
        self.clord[h] = key
        self.clord_used += 1
        if self.clord_used * 2 > self.clord_mask:
            self._set_clord((self.clord_mask + 1) * 2)
        return 0

    cdef int _set_dup(self, int64_t size) except -1:
        """Rehash the duplicative-order table into ``size`` buckets (a power of two).

        The table is purged in place when it is half full (``dup_purge_at``)
        and only grows when, after a purge, more than a quarter is still live;
        both depend only on the calls made, so a replay keeps the same entries.
        """
        cdef DupEntry* table = <DupEntry*>_grow(NULL, 0, size, sizeof(DupEntry))
        cdef int64_t mask = size - 1, j, h
        cdef DupEntry* e
        for j in range(self.dup_mask + 1 if self.dup != NULL else 0):
            e = &self.dup[j]
            if e.used:
                h = e.hash & mask
                while table[h].used:
                    h = (h + 1) & mask
                table[h] = e[0]
        PyMem_Free(self.dup)
        self.dup = table
        self.dup_mask = mask
        self.dup_purge_at = size // 2
        return 0

    cdef DupEntry* _dup_find(self, int32_t account, int32_t instrument, int side,
                             int64_t qty, int64_t price, int64_t now_ns, uint32_t hash) noexcept:
        """The entry of this order (of ``_dup_hash`` ``hash``), or the empty bucket
        where it would go.

        Also notes in ``dup_reuse`` the first expired entry on the way: a new
        entry may take that bucket instead (it lies on the same probe path),
        which keeps most inserts from growing the table.
        """
        cdef DupEntry* e
        cdef int64_t h = hash & self.dup_mask
        self.dup_reuse = NULL
        while self.dup[h].used:
            e = &self.dup[h]
            if (e.hash == hash and e.qty == qty and e.price == price and e.account == account
                    and e.instrument == instrument and e.side == side):
                return e
            if self.dup_reuse == NULL and now_ns >= e.expires_ns:
                self.dup_reuse = e
            h = (h + 1) & self.dup_mask
        return &self.dup[h]

    cdef int _dup_record(self, int32_t account, int32_t instrument, int side,
                         int64_t qty, int64_t price, int64_t now_ns, uint32_t hash,
                         DupEntry* found, int64_t owner) except -1:
        """Note order ``owner``'s pass (of ``_dup_hash`` ``hash``); ``found`` is its bucket
        if the check just looked it up (``dup_reuse`` then still belongs to that lookup)."""
        cdef DupEntry* e = found if found != NULL else self._dup_find(account, instrument, side, qty,
                                                                      price, now_ns, hash)
        if not e.used:
            if self.dup_reuse != NULL:
                e = self.dup_reuse      # an expired entry gives way; the count is unchanged
            else:
                e.used = 1
                self.dup_used += 1
            e.account = account
            e.instrument = instrument
            e.side = <uint8_t>side
            e.qty = qty
            e.price = price
            e.hash = hash
            e.prev_expires_ns = INT64_MIN
        else:
            e.prev_expires_ns = e.expires_ns
        e.owner = owner
        # Each order blocks its twins for the window in force when it passed.
        e.expires_ns = kx_sat_add(now_ns, self.dup_window_ns)
        if self.dup_used >= self.dup_purge_at:
            self._dup_purge(now_ns)
            if self.dup_used * 4 > self.dup_mask + 1:
                self._set_dup((self.dup_mask + 1) * 2)
        return 0

    cdef int _dup_undo(self, WorkingOrder* o) noexcept:
        """Take back ``o``'s pass from the duplicative check: refused downstream, it never
        worked, so its twins are judged as if it had not come.

        Only while its pass is the entry's last (a later twin's, with the
        intended flag, stands); the entry expires as it would have without it.
        """
        cdef uint32_t hash
        cdef DupEntry* e
        if self.dup == NULL or self.dup_used == 0:
            return 0
        hash = _dup_hash(o.account, o.instrument, o.side, o.qty, o.price)
        e = self._dup_find(o.account, o.instrument, o.side, o.qty, o.price, INT64_MIN, hash)
        if e.used and e.owner == o.key:
            e.expires_ns = e.prev_expires_ns
            e.owner = 0
        return 0

    cdef int _dup_purge(self, int64_t now_ns) noexcept:
        """Delete expired entries in place (no allocation on the order path).

        The walk starts just after an empty bucket, so no probe run wraps past
        its start; a backward-shift delete only moves entries from later in
        the run into the bucket being looked at, which is then looked at again.
        """
        cdef int64_t mask = self.dup_mask, start = 0, j, steps = 0
        while self.dup[start].used:
            start += 1
        j = (start + 1) & mask
        while steps <= mask:
            if self.dup[j].used and now_ns >= self.dup[j].expires_ns:
                self._dup_delete(j)
                self.dup_used -= 1
            else:
                j = (j + 1) & mask
                steps += 1
        return 0

    cdef int _dup_delete(self, int64_t h) noexcept:
        cdef int64_t mask = self.dup_mask, j = h, home
        cdef DupEntry* e
        while True:
            j = (j + 1) & mask
            e = &self.dup[j]
            if not e.used:
                break
            home = e.hash & mask
            # Move j back into the hole at h unless its home lies cyclically in (h, j].
            if ((j - home) & mask) >= ((j - h) & mask):
                self.dup[h] = e[0]
                h = j
        self.dup[h].used = 0
        return 0

    # ------------------------------------------------------------ hot path
    cdef int _reject(self, int reason, int layer, int measure, int64_t limit,
                            int64_t value) noexcept:
        self.detail.reason = <uint16_t>reason
        self.detail.account = self.cur_account
        self.detail.instrument = self.cur_instrument
        self.detail.session = self.cur_session
        self.detail.layer = <uint8_t>layer
        self.detail.measure = <uint8_t>measure
        self.detail.limit = limit
        self.detail.value = value
        return reason

    cdef int _throttle(self, int32_t session, int64_t now_ns) noexcept:
        """Token bucket in nano-tokens, the session's profile's: ``rate`` tokens a second
        up to ``capacity``."""
        cdef ThrottleBucket* b = &self.buckets[self.sessions[session].bucket]
        cdef int64_t refill
        cdef int ovf = 0
        if b.rate == 0:
            return 0
        if now_ns > b.last_ns:
            # An overflowing refill is a full bucket (no division on this path).
            refill = kx_mul3(now_ns - b.last_ns, b.rate, 1, &ovf)
            if ovf or refill >= b.capacity - b.tokens:
                b.tokens = b.capacity
            else:
                b.tokens += refill
            b.last_ns = now_ns
        elif now_ns < b.last_ns:
            # The wall clock stepped back: refill from here. Waiting for it to
            # catch up would refuse every order for as long as the step.
            b.last_ns = now_ns
        if b.tokens < NANO_TOKENS:
            return self._reject(THROTTLED, LAYER_SESSION, M_ORDERS, b.rate, b.capacity // NANO_TOKENS)
        b.tokens -= NANO_TOKENS
        return 0

    cdef int64_t _ref_ns(self, const InstrumentInfo* ins) noexcept:
        """The time an instrument's reference price is as of, for its age.

        A market reference (``set_market_reference``) set before the last
        ``market_checked`` is as of that check; one set since, as of its own
        time: whichever was stamped last, as one stamp per instrument at
        each check gave. (The generations' wrap is taken care of by
        ``market_checked``.)
        """
        if ins.ref_gen != 0 and ins.ref_gen != self.market_gen:
            return self.market_checked_ns
        return ins.ref_ns

    cdef int _evaluate(self, int32_t account, int32_t instrument, int side, int ord_type,
                       int64_t qty, int64_t leaves, int64_t price, int flags, int64_t now_ns,
                       bint is_new, int64_t* value_price, int64_t* leaves_notional) noexcept:
        """Every check that does not concern the session, in documented order."""
        cdef InstrumentInfo* ins
        cdef AccountLimits* al
        cdef AccountState* ast
        cdef CellLimits* cl
        cdef CellState* cs
        cdef int64_t cell, ref, band, dev, notional, avail, worst, age, loss, long_worst, short_worst
        cdef int band_layer, ovf = 0
        cdef bint wrap
        cdef DupEntry* dup
        self.cur_account = account
        self.cur_instrument = instrument
        if instrument < 0 or instrument >= self.n_instruments or not self.inst[instrument].known:
            return self._reject(UNKNOWN_INSTRUMENT, LAYER_NONE, M_NONE, 0, 0)
        if account < 0 or account >= self.n_accounts or not self.acct_limits[account].known:
            return self._reject(UNKNOWN_ACCOUNT, LAYER_NONE, M_NONE, 0, 0)
        ins = &self.inst[instrument]
        al = &self.acct_limits[account]
        ast = &self.acct_state[account]
        cell = <int64_t>account * self.cap_instruments + instrument
        cl = &self.cell_limits[cell]
        cs = &self.cell_state[cell]

        # ---- kill switches and tradability
        if self.firm.killed:
            return self._reject(KILL_SWITCH, LAYER_FIRM, M_NONE, 0, 0)
        if al.killed:
            return self._reject(KILL_SWITCH, LAYER_ACCOUNT, M_NONE, 0, 0)
        if ins.killed:
            return self._reject(KILL_SWITCH, LAYER_INSTRUMENT, M_NONE, 0, 0)
        if not al.active:
            return self._reject(ACCOUNT_INACTIVE, LAYER_ACCOUNT, M_NONE, 0, 0)
        if ins.halted:
            return self._reject(INSTRUMENT_HALTED, LAYER_INSTRUMENT, M_NONE, 0, 0)
        if cl.restricted:
            return self._reject(INSTRUMENT_RESTRICTED, cl.restricted, M_NONE, 0, 0)
        if not cl.entitled:
            return self._reject(NOT_ENTITLED, LAYER_ACCOUNT, M_NONE, 0, 0)

        # ---- the order's own fields (lot and tick grids were enforced at intake)
        if side != BUY and side != SELL and side != SELL_SHORT:
            return self._reject(INVALID_SIDE, LAYER_NONE, M_NONE, 0, side)
        if ord_type != LIMIT and ord_type != MARKET:
            return self._reject(INVALID_ORD_TYPE, LAYER_NONE, M_NONE, 0, ord_type)
        # (leaves is at least 1: qty for a new order, above what filled for a replace.)
        if kx_outside(qty, C_MAX_QTY):
            return self._reject(INVALID_QTY, LAYER_NONE, M_LOTS, C_MAX_QTY, qty)
        if qty < ins.min_lots:
            return self._reject(BELOW_MIN_QTY, LAYER_INSTRUMENT, M_LOTS, ins.min_lots, qty)
        if ord_type == LIMIT:
            if price == 0:
                return self._reject(PRICE_REQUIRED, LAYER_NONE, M_TICKS, 0, price)
            if kx_outside(price, C_MAX_PRICE):      # (0 was PRICE_REQUIRED above)
                return self._reject(INVALID_PRICE, LAYER_NONE, M_TICKS, C_MAX_PRICE, price)
        if side == SELL_SHORT:
            if not al.allow_short:
                return self._reject(SHORT_SELL_NOT_ALLOWED, LAYER_ACCOUNT, M_NONE, 0, 0)
            if not (flags & FLAG_LOCATE):
                return self._reject(LOCATE_REQUIRED, LAYER_NONE, M_NONE, 0, 0)

        # ---- daily loss gate: state only, no order arithmetic needed
        # (Realized P&L saturates symmetrically: its negation cannot wrap to a gain.)
        loss = -ast.realized_pnl if ast.realized_pnl < 0 else 0
        if loss > al.max_daily_loss:
            return self._reject(DAILY_LOSS_LIMIT, LAYER_ACCOUNT, M_MONEY, al.max_daily_loss, loss)
        loss = -self.firm.realized_pnl if self.firm.realized_pnl < 0 else 0
        if loss > self.firm.max_daily_loss:
            return self._reject(DAILY_LOSS_LIMIT, LAYER_FIRM, M_MONEY, self.firm.max_daily_loss, loss)

        # ---- fat finger: quantity
        if qty > cl.max_order_qty:
            return self._reject(MAX_ORDER_QTY, cl.layer_qty, M_LOTS, cl.max_order_qty, qty)

        # ---- reference price, collar, valuation price
        value_price[0] = price
        if ord_type == MARKET or cl.collar_bps >= 0 or cl.collar_ticks >= 0:
            ref = ins.ref_price
            if ref <= 0:
                return self._reject(NO_REFERENCE_PRICE, LAYER_INSTRUMENT, M_NONE, 0, 0)
            age = kx_sat_sub(now_ns, self._ref_ns(ins))
            if age > ins.max_ref_age_ns:
                return self._reject(STALE_REFERENCE_PRICE, ins.layer_ref_age, M_NS, ins.max_ref_age_ns, age)
            band = INT64_MAX
            band_layer = LAYER_NONE
            if cl.collar_bps >= 0:
                band = kx_muldiv(ref, cl.collar_bps, 10000)
                band_layer = cl.layer_bps
            if cl.collar_ticks >= 0 and cl.collar_ticks <= band:
                band = cl.collar_ticks
                band_layer = cl.layer_ticks
            if ord_type == LIMIT:
                dev = price - ref if price > ref else ref - price
                if dev > band:
                    return self._reject(PRICE_COLLAR, band_layer, M_TICKS, band, dev)
            elif band_layer == LAYER_NONE:
                band = 0
            # Valued at the highest price it may fill at while the venue honours
            # the band: the worst case of every check, a buy's cost as much as a
            # sell's notional and a short sale's proceeds, which are held twice
            # (valued lower, a better fill would take buying power below zero).
            # A buy limit never fills above its limit; a sell limit may fill
            # above it, up to the band's upper edge, which the collar check just
            # proved is not below the limit.
            if ord_type == MARKET or side != BUY:
                value_price[0] = kx_sat_add(ref, band)
        elif side != BUY and ins.ref_price > price:
            # Nothing bounds an uncollared sell limit's fill price; a marketable
            # one fills at the bids, at or below a mid reference. Any age will
            # do: the reference can only raise the valuation above the limit.
            value_price[0] = ins.ref_price

        # ---- fat finger: notional (checked in full; an overflow is over the limit)
        notional = kx_mul3(qty, value_price[0], ins.mult, &ovf)
        if ovf or notional > cl.max_order_notional:
            return self._reject(MAX_ORDER_NOTIONAL, cl.layer_notional, M_MONEY, cl.max_order_notional, notional)
        leaves_notional[0] = kx_mul3(leaves, value_price[0], ins.mult, &ovf)

        # ---- duplicative order, open orders: only a new order adds one
        if is_new:
            # (Also with the window now 0: earlier passes keep their own windows.)
            if ((self.dup_window_ns > 0 or self.dup_used > 0)
                    and not (flags & FLAG_INTENDED_DUPLICATE)):
                # check_new_c hashed the order already (for its prefetch).
                dup = self._dup_find(account, instrument, side, qty, price, now_ns, self.dup_hash)
                self.dup_hit = dup          # check_new_c records into this bucket on a pass
                if dup.used and now_ns < dup.expires_ns:
                    return self._reject(DUPLICATIVE_ORDER, LAYER_FIRM, M_NS, self.dup_window_ns,
                                        dup.expires_ns - now_ns)
            # Most specific first: that is the limit the account's owner acts on.
            if cs.open_orders >= cl.max_open:
                return self._reject(MAX_OPEN_ORDERS, LAYER_ACCOUNT_INSTRUMENT, M_ORDERS, cl.max_open,
                                    cs.open_orders + 1)
            if ins.open_orders >= ins.max_open:
                return self._reject(MAX_OPEN_ORDERS, LAYER_INSTRUMENT, M_ORDERS, ins.max_open,
                                    ins.open_orders + 1)
            if ast.open_orders >= al.max_open:
                return self._reject(MAX_OPEN_ORDERS, LAYER_ACCOUNT, M_ORDERS, al.max_open,
                                    ast.open_orders + 1)
            if self.firm.open_orders >= self.firm.max_open:
                return self._reject(MAX_OPEN_ORDERS, LAYER_FIRM, M_ORDERS, self.firm.max_open,
                                    self.firm.open_orders + 1)

        # ---- position, counting every working order as filled
        if side == SELL:
            avail = kx_sat_sub(cs.position, cs.open_sell)
            if leaves > avail:
                return self._reject(INSUFFICIENT_POSITION, LAYER_ACCOUNT, M_LOTS, avail if avail > 0 else 0,
                                    leaves)
        # The largest long position (every working buy filled) and the largest
        # short one (every working sell filled), this order included.
        long_worst = kx_sat_add(cs.position, cs.open_buy)
        short_worst = kx_sat_sub(cs.open_sell, cs.position)
        # The side's working lots are an exact sum (a release takes its lots back
        # out): an order that would take it past int64 is refused, not saturated.
        # Only an unlimited net limit and a short position let it come this far.
        if side == BUY:
            wrap = kx_add_ovf(cs.open_buy, leaves)
            long_worst = kx_sat_add(long_worst, leaves)
        else:
            wrap = kx_add_ovf(cs.open_sell, leaves)
            short_worst = kx_sat_add(short_worst, leaves)
        if wrap:
            return self._reject(MAX_NET_POSITION, cl.layer_net, M_LOTS, cl.max_net, INT64_MAX)
        # Gross adds the two sides, so a working order that can only reduce
        # the position (a sell of a long, a buy of a short) adds nothing: an
        # account at its gross limit can still close out.
        worst = kx_sat_add(long_worst if long_worst > 0 else 0, short_worst if short_worst > 0 else 0)
        if worst > cl.max_gross:
            return self._reject(MAX_GROSS_POSITION, cl.layer_gross, M_LOTS, cl.max_gross, worst)
        worst = long_worst if side == BUY else short_worst
        if worst > cl.max_net:
            return self._reject(MAX_NET_POSITION, cl.layer_net, M_LOTS, cl.max_net, worst)

        # ---- buying power: buys and short sales spend it
        if side != SELL:
            avail = kx_sat_add(kx_sat_add(al.cash, ast.cash_flow), al.credit)
            avail = kx_sat_sub(kx_sat_sub(avail, ast.reserved), kx_sat_add(ast.short_basis, ast.short_basis))
            if leaves_notional[0] > avail:
                return self._reject(INSUFFICIENT_BUYING_POWER, LAYER_ACCOUNT, M_MONEY, avail, leaves_notional[0])

        # ---- daily traded notional, working orders counted as traded
        worst = kx_sat_add(kx_sat_add(ast.traded_notional, ast.open_notional), leaves_notional[0])
        if worst > al.max_daily_notional:
            return self._reject(DAILY_NOTIONAL_LIMIT, LAYER_ACCOUNT, M_MONEY, al.max_daily_notional, worst)
        worst = kx_sat_add(kx_sat_add(self.firm.traded_notional, self.firm.open_notional), leaves_notional[0])
        if worst > self.firm.max_daily_notional:
            return self._reject(DAILY_NOTIONAL_LIMIT, LAYER_FIRM, M_MONEY, self.firm.max_daily_notional, worst)
        return 0

    cdef void _reserve(self, WorkingOrder* o, int64_t leaves_notional, bint count) noexcept:
        """Add a working order's worst case to every exposure it counts in."""
        cdef CellState* cs = &self.cell_state[<int64_t>o.account * self.cap_instruments + o.instrument]
        cdef AccountState* ast = &self.acct_state[o.account]
        if o.side == BUY:
            cs.open_buy += o.leaves
        else:
            cs.open_sell += o.leaves
        if o.side != SELL:
            ast.reserved = kx_sat_add(ast.reserved, leaves_notional)
        ast.open_notional = kx_sat_add(ast.open_notional, leaves_notional)
        self.firm.open_notional = kx_sat_add(self.firm.open_notional, leaves_notional)
        if count:
            cs.open_orders += 1
            ast.open_orders += 1
            self.inst[o.instrument].open_orders += 1
            self.sessions[o.session].open_orders += 1
            self.firm.open_orders += 1

    cdef void _release(self, WorkingOrder* o, int64_t lots, bint count) noexcept:
        """Take ``lots`` of a working order's reservation back out."""
        cdef CellState* cs = &self.cell_state[<int64_t>o.account * self.cap_instruments + o.instrument]
        cdef AccountState* ast = &self.acct_state[o.account]
        cdef int ovf = 0
        cdef int64_t part = kx_mul3(lots, o.value_price, self.inst[o.instrument].mult, &ovf)
        if o.side == BUY:
            cs.open_buy -= lots
        else:
            cs.open_sell -= lots
        if o.side != SELL:
            ast.reserved = kx_sat_sub(ast.reserved, part)
        ast.open_notional = kx_sat_sub(ast.open_notional, part)
        self.firm.open_notional = kx_sat_sub(self.firm.open_notional, part)
        if count:
            cs.open_orders -= 1
            ast.open_orders -= 1
            self.inst[o.instrument].open_orders -= 1
            self.sessions[o.session].open_orders -= 1
            self.firm.open_orders -= 1
            if self.sessions[o.session].releasing and not self.sessions[o.session].open_orders:
                # Its session was released while this order worked (release_session).
                self._free_session(o.session)

    cdef int check_new_c(self, int64_t order_key, int32_t session, int32_t account,
                         int32_t instrument, int side, int ord_type, int64_t qty,
                         int64_t price, int flags, int64_t cl_ord_hash,
                         int64_t now_ns) except -1:
        cdef int reason
        cdef int64_t value_price = 0, leaves_notional = 0
        cdef int32_t slot
        cdef int64_t bucket
        cdef uint64_t clord_key
        cdef uint32_t order_hash
        cdef WorkingOrder* o
        self.cur_session = session
        self.cur_account = account
        self.cur_instrument = instrument
        if session < 0 or session >= self.n_sessions or not self.sessions[session].known:
            return self._reject(UNKNOWN_SESSION, LAYER_SESSION, M_NONE, 0, 0)
        # The three hash tables are large and probed at random: ask for their
        # buckets now, so the misses overlap each other and the checks below.
        # Each home bucket is hashed once here and handed to its probe below.
        clord_key = _clord_key(cl_ord_hash, session, self.sessions[session].generation)
        order_hash = _index_hash(order_key)
        kx_prefetch(&self.clord[clord_key & <uint64_t>self.clord_mask])
        kx_prefetch(&self.oindex[order_hash & self.omask])
        if self.orders_free >= 0:
            # The pool slot a pass will take: 88 bytes, so most straddle two cache lines.
            kx_prefetch(&self.orders[self.orders_free])
            kx_prefetch(&self.orders[self.orders_free].used)
        if self.dup_window_ns > 0 or self.dup_used > 0:
            self.dup_hash = _dup_hash(account, instrument, side, qty, price)
            kx_prefetch(&self.dup[self.dup_hash & self.dup_mask])
        # Throttle and cl_ord_id come first and apply to every message, even
        # one rejected further down: they guard the intake, not the exposure.
        # (The engine judges the throttle before it takes the order at all.)
        if not (flags & FLAG_ADMITTED):
            reason = self._throttle(session, now_ns)
            if reason:
                return reason
        # _evaluate changes no state, so it may run before the cl_ord_id probe
        # (hiding that probe's latency); a duplicate id still wins.
        reason = self._evaluate(account, instrument, side, ord_type, qty, qty, price, flags, now_ns,
                                True, &value_price, &leaves_notional)
        if self._clord_add(clord_key):
            return self._reject(DUPLICATE_CL_ORD_ID, LAYER_SESSION, M_NONE, 0, 0)
        if reason:
            return reason
        if (self.n_orders + 1) * 2 > self.omask:
            self._set_order_index((self.omask + 1) * 2)
        # One probe both proves the key is not working and finds its bucket.
        bucket = self._index_probe(order_key, order_hash)
        if bucket >= 0:
            raise ValueError(f"order_key {order_key} is already working")
        bucket = -1 - bucket
        # Passed: the order is working from now on.
        if self.dup_window_ns > 0:
            self._dup_record(account, instrument, side, qty, price, now_ns, self.dup_hash,
                             self.dup_hit if not (flags & FLAG_INTENDED_DUPLICATE) else NULL,
                             order_key)
        if self.orders_free < 0:
            self._grow_orders(self.orders_cap * 2)
        slot = self.orders_free
        o = &self.orders[slot]
        self.orders_free = o.next_free
        o.key = order_key
        o.qty = qty
        o.leaves = qty
        o.price = price
        o.value_price = value_price
        o.session = session
        o.account = account
        o.instrument = instrument
        o.side = <uint8_t>side
        o.ord_type = <uint8_t>ord_type
        # Only what a later replace re-judges is kept: the intended-duplicate flag
        # counts once, on arrival (journal replay sets it on every order).
        o.flags = <uint8_t>(flags & ~(FLAG_INTENDED_DUPLICATE | FLAG_ADMITTED))
        o.used = 1
        o.next_free = -1
        self.oindex[bucket].hash = order_hash
        self.oindex[bucket].slot = slot
        self.n_orders += 1
        self._link(slot)
        self._reserve(o, leaves_notional, True)
        return 0

    cdef ScopeList* _ends(self, WorkingOrder* o, int kind) noexcept:
        """The ends of the ``kind`` list ``o`` is on: its session's, account's or instrument's."""
        return &self.scope_lists[kind][o.session if kind == SCOPE_SESSION else
                                       o.account if kind == SCOPE_ACCOUNT else o.instrument]

    cdef int32_t _scope_count(self, int kind) noexcept:
        """How many sessions, accounts or instruments (``kind``) have lists; -1: no such kind."""
        return (self.n_sessions if kind == SCOPE_SESSION else
                self.n_accounts if kind == SCOPE_ACCOUNT else
                self.n_instruments if kind == SCOPE_INSTRUMENT else -1)

    cdef void _link(self, int32_t slot) noexcept:
        """Append the order in ``slot`` to its session's, account's and instrument's lists.

        Its session, account and instrument never change while it works (a
        replace keeps them), so it stays on these three lists until ``_remove``.
        """
        cdef WorkingOrder* o = &self.orders[slot]
        cdef ScopeList* ends
        cdef int kind
        for kind in range(3):
            ends = self._ends(o, kind)
            o.link[kind].prev = ends.tail
            o.link[kind].next = -1
            if ends.tail >= 0:
                self.orders[ends.tail].link[kind].next = slot
            else:
                ends.head = slot
            ends.tail = slot

    cdef void _unlink(self, int32_t slot) noexcept:
        """Take the order in ``slot`` off its three scope lists."""
        cdef WorkingOrder* o = &self.orders[slot]
        cdef int32_t prev, nxt
        cdef ScopeList* ends
        cdef int kind
        for kind in range(3):
            ends = self._ends(o, kind)
            prev = o.link[kind].prev
            nxt = o.link[kind].next
            if prev >= 0:
                self.orders[prev].link[kind].next = nxt
            else:
                ends.head = nxt
            if nxt >= 0:
                self.orders[nxt].link[kind].prev = prev
            else:
                ends.tail = prev

    cdef int _remove(self, int32_t slot) noexcept:
        cdef WorkingOrder* o = &self.orders[slot]
        self._index_remove(o.key)
        self._unlink(slot)
        o.used = 0
        o.next_free = self.orders_free
        self.orders_free = slot
        self.n_orders -= 1
        return 0

    cdef int on_fill_c(self, int64_t order_key, int64_t qty, int64_t price) except -1:
        cdef int32_t slot = self._find(order_key)
        cdef WorkingOrder* o
        cdef int64_t taken
        if slot < 0:
            return UNKNOWN_ORDER
        o = &self.orders[slot]
        if kx_outside(qty, C_MAX_QTY):
            return INVALID_QTY
        if kx_outside(price, C_MAX_PRICE):
            return INVALID_PRICE
        # A venue may fill past what is left (an overfill): the lots were
        # traded, so all of them move the position, and only what was left
        # comes off the reservation.
        taken = qty if qty <= o.leaves else o.leaves
        self._release(o, taken, False)
        o.leaves -= taken
        self._book_fill(o.account, o.instrument, o.side, qty, price)
        if o.leaves == 0:
            self._release(o, 0, True)
            self._remove(slot)
        return 0

    cdef int _book_fill(self, int32_t account, int32_t instrument, int side, int64_t qty,
                        int64_t price) except -1:
        """Move the account's position, cash flow, traded notional and P&L by a fill."""
        cdef CellState* cs = &self.cell_state[<int64_t>account * self.cap_instruments + instrument]
        cdef AccountState* ast = &self.acct_state[account]
        cdef int64_t value, pnl, short_before
        cdef int ovf = 0
        value = kx_mul3(qty, price, self.inst[instrument].mult, &ovf)
        ast.traded_notional = kx_sat_add(ast.traded_notional, value)
        self.firm.traded_notional = kx_sat_add(self.firm.traded_notional, value)
        short_before = cs.cost if cs.position < 0 else 0
        pnl = 0
        if side == BUY:
            ast.cash_flow = kx_sat_sub(ast.cash_flow, value)
            if cs.position >= 0:
                cs.cost = kx_sat_add(cs.cost, value)
                cs.position = kx_sat_sym(cs.position, qty)
            else:
                pnl = self._close(cs, qty, price, self.inst[instrument].mult, -1)
        else:
            ast.cash_flow = kx_sat_add(ast.cash_flow, value)
            if cs.position <= 0:
                cs.cost = kx_sat_add(cs.cost, value)
                cs.position = kx_sat_sym(cs.position, -qty)
            else:
                pnl = self._close(cs, qty, price, self.inst[instrument].mult, 1)
        ast.realized_pnl = kx_sat_sym(ast.realized_pnl, pnl)
        self.firm.realized_pnl = kx_sat_sym(self.firm.realized_pnl, pnl)
        ast.short_basis = kx_sat_add(kx_sat_sub(ast.short_basis, short_before),
                                     cs.cost if cs.position < 0 else 0)
        return 0

    cdef int64_t _close(self, CellState* cs, int64_t qty, int64_t price, int64_t mult,
                        int long_side) noexcept:
        """Reduce a position against a fill; the realized P&L of the closed part.

        ``long_side`` is 1 when a sell closes a long, -1 when a buy closes a
        short. The closed part takes its share of the cost, rounded down;
        whatever is left over flips the position at the fill price.
        """
        cdef int64_t size = cs.position if cs.position > 0 else -cs.position
        cdef int64_t closed = qty if qty < size else size
        cdef int64_t portion = kx_muldiv(cs.cost, closed, size) if closed < size else cs.cost
        cdef int ovf = 0
        cdef int64_t value = kx_mul3(closed, price, mult, &ovf)
        cdef int64_t pnl = kx_sat_sub(value, portion) if long_side > 0 else kx_sat_sub(portion, value)
        cs.cost -= portion
        cs.position -= long_side * closed
        if qty > closed:
            cs.cost = kx_mul3(qty - closed, price, mult, &ovf)
            cs.position = -long_side * (qty - closed)
        return pnl

    cdef int on_done_c(self, int64_t order_key) except -1:
        cdef int32_t slot = self._find(order_key)
        if slot < 0:
            return UNKNOWN_ORDER
        self._release(&self.orders[slot], self.orders[slot].leaves, True)
        self._remove(slot)
        return 0

    cdef int32_t _replace_slot(self, int64_t order_key) noexcept:
        """The pool slot of the order a replace names, its names taken for a reject; -1
        (``UNKNOWN_ORDER`` in the detail) when risk does not hold it."""
        cdef int32_t slot = self._find(order_key)
        cdef WorkingOrder* o
        if slot < 0:
            self.cur_account = self.cur_instrument = self.cur_session = -1
            self._reject(UNKNOWN_ORDER, LAYER_NONE, M_NONE, 0, 0)
            return -1
        o = &self.orders[slot]
        self.cur_session = o.session
        self.cur_account = o.account
        self.cur_instrument = o.instrument
        return slot

    cdef int admit_replace_c(self, int64_t order_key, int64_t now_ns, int32_t session) noexcept:
        cdef int32_t slot = self._replace_slot(order_key)
        if slot < 0:
            return UNKNOWN_ORDER
        if session < 0:
            session = self.orders[slot].session
        elif session >= self.n_sessions or not self.sessions[session].known:
            self.cur_session = session
            return self._reject(UNKNOWN_SESSION, LAYER_SESSION, M_NONE, 0, 0)
        self.cur_session = session
        return self._throttle(session, now_ns)

    cdef int on_replace_c(self, int64_t order_key, int64_t new_qty, int64_t new_price,
                          int64_t cl_ord_hash, int64_t now_ns, bint admitted) except -1:
        cdef int32_t slot = self._replace_slot(order_key)
        cdef WorkingOrder* o
        cdef int reason = 0
        cdef int64_t cum, leaves, value_price = 0, leaves_notional = 0, old_leaves, old_notional
        cdef int ovf = 0
        if slot < 0:
            return UNKNOWN_ORDER
        o = &self.orders[slot]
        if not admitted:
            reason = self._throttle(o.session, now_ns)
        if reason == 0 and self._clord_add(_clord_key(cl_ord_hash, o.session,
                                                      self.sessions[o.session].generation)):
            reason = self._reject(DUPLICATE_CL_ORD_ID, LAYER_SESSION, M_NONE, 0, 0)
        if reason:
            return reason
        cum = o.qty - o.leaves
        if new_qty <= cum:      # (compared, not subtracted: new_qty may be near INT64_MIN)
            return self._reject(REPLACE_QTY_NOT_ABOVE_FILLED, LAYER_NONE, M_LOTS, cum, new_qty)
        leaves = new_qty - cum
        if leaves <= o.leaves and (o.ord_type != LIMIT or new_price == o.price):
            # Reduce-only (fewer lots, same terms) takes risk away and is never
            # judged: a trader must be able to cut an order that limits
            # tightened, a loss gate or a halt have left above what a new
            # order could be, as a cancel could. Its reservation shrinks at
            # the valuation it was made with, exactly.
            self._release(o, o.leaves - leaves, False)
            o.qty = new_qty
            o.leaves = leaves
            return 0
        # Judge the new order against exposure without the old one in it.
        old_leaves = o.leaves
        old_notional = kx_mul3(old_leaves, o.value_price, self.inst[o.instrument].mult, &ovf)
        self._release(o, old_leaves, False)
        reason = self._evaluate(o.account, o.instrument, o.side, o.ord_type, new_qty, leaves,
                                new_price if o.ord_type == LIMIT else o.price, o.flags, now_ns,
                                False, &value_price, &leaves_notional)
        if reason:
            self._reserve(o, old_notional, False)
            return reason
        o.qty = new_qty
        o.leaves = leaves
        if o.ord_type == LIMIT:
            o.price = new_price
        o.value_price = value_price
        self._reserve(o, leaves_notional, False)
        return 0

    # ------------------------------------------------------------ engine API
    def check_new(self, order_key, session, account, instrument, side, ord_type, qty, price,
                  flags, cl_ord_hash, now_ns, /):
        """Run every pre-trade check on a new order; on a pass it becomes working.

        Parameters
        ----------
        order_key : int
            The engine's unique id for the order (used by ``on_fill`` etc.).
        session, account, instrument : int
            Indices from ``session_index``, ``account_index``, ``instrument_index``.
        side : int
            ``Side`` (BUY, SELL, SELL_SHORT).
        ord_type : int
            ``OrdType`` (MARKET, LIMIT).
        qty : int
            Order quantity in lots.
        price : int
            Limit price in ticks (ignored for MARKET).
        flags : int
            ``RiskFlag`` bits (FLAG_LOCATE, FLAG_INTENDED_DUPLICATE).
        cl_ord_hash : int
            64-bit hash of the client's cl_ord_id (duplicate check per session).
        now_ns : int
            Time of the order, nanoseconds.

        Returns
        -------
        int
            0 on a pass, else a ``RejectReason``; ``last_reject_text()`` then
            explains it.

        Raises
        ------
        TypeError
            If an argument is not an integer (a float, a Decimal), naming it; nothing
            changed.
        ValueError
            If an argument is beyond its C type (int32 for ``session``, ``account``,
            ``instrument``, ``side``, ``ord_type`` and ``flags``, int64 for the others),
            naming it; or if ``order_key`` is already working (an engine bug, not a
            denial).

        Notes
        -----
        Arguments are positional only: keyword parsing would cost more than
        half of the checks themselves. The engine's own per-order call is
        :meth:`SessionGate.check_new` (``session_gate``), the same check with
        the session bound once.
        """
        cdef int bad = 0
        cdef int64_t s = kx_arg(session, &bad)
        if bad:
            return _check_new_arg_error(session, order_key, account, instrument, side, ord_type,
                                        qty, price, flags, cl_ord_hash, now_ns)
        return _check_new_args(self, s, order_key, account, instrument, side, ord_type, qty, price,
                               flags, cl_ord_hash, now_ns)

    def check_new_batch(self, const int64_t[:, ::1] orders not None, uint16_t[::1] out not None):
        """``check_new`` over rows of an int64 array (columns ``BATCH_COLUMNS``).

        For journal replay and benchmarks: the whole loop runs in C. Writes
        each row's reason into ``out`` and returns how many passed.
        """
        cdef Py_ssize_t n = orders.shape[0], k
        cdef Py_ssize_t passed = 0
        if orders.shape[1] != 11 or out.shape[0] < n:
            raise ValueError("orders must be (n, 11) int64 and out at least n long")
        for k in range(n):
            out[k] = <uint16_t>self.check_new_c(orders[k, 0], <int32_t>orders[k, 1], <int32_t>orders[k, 2],
                                                <int32_t>orders[k, 3], <int>orders[k, 4], <int>orders[k, 5],
                                                orders[k, 6], orders[k, 7], <int>orders[k, 8],
                                                orders[k, 9], orders[k, 10])
            passed += out[k] == 0
        return passed

    # The Python API's 64-bit numbers are Py_ssize_t (int64 here): Cython converts those
    # with operator.index, which refuses a float or a Decimal (TypeError), where an
    # int64_t parameter would truncate 2.5 lots to 2 in silence. (check_new's kx_arg
    # does the same.)
    def on_fill(self, Py_ssize_t order_key, Py_ssize_t qty, Py_ssize_t price, /):
        """Apply a fill (``qty`` lots at ``price`` ticks) of a working order.

        A fill above the order's leaves (a venue's overfill) is booked in
        full: the position moves by ``qty``, the reservation is released by
        the leaves, and the order is done.

        Returns
        -------
        int
            0, or ``UNKNOWN_ORDER`` / ``INVALID_QTY`` (not 1 to ``MAX_QTY``) /
            ``INVALID_PRICE`` (not 1 to ``MAX_PRICE``), in which case nothing
            changed. The position saturates at +-INT64_MAX lots (docs/risk.md).
        """
        return self.on_fill_c(order_key, qty, price)

    def on_fill_done(self, Py_ssize_t account, Py_ssize_t instrument, Py_ssize_t side,
                     Py_ssize_t qty, Py_ssize_t price, /):
        """Book a fill of an order risk no longer holds (a venue's overfill of a filled order).

        The account's position, cash flow, traded notional and P&L move as
        for any fill; there is no reservation left to release.

        Returns
        -------
        int
            0, or ``INVALID_QTY`` / ``INVALID_PRICE`` (not 1 to ``MAX_QTY`` /
            ``MAX_PRICE``), or ``INVALID_SIDE``, in which case nothing changed.

        Raises
        ------
        IndexError
            For an account or instrument index risk does not have.
        """
        if kx_outside(qty, C_MAX_QTY):
            return INVALID_QTY
        if kx_outside(price, C_MAX_PRICE):
            return INVALID_PRICE
        if side != BUY and side != SELL and side != SELL_SHORT:
            return INVALID_SIDE
        if not 0 <= account < self.n_accounts or not 0 <= instrument < self.n_instruments:
            raise IndexError("no such account or instrument")
        return self._book_fill(account, instrument, side, qty, price)

    def on_cancel(self, Py_ssize_t order_key, /):
        """The order is canceled (or expired): its remaining exposure is released.

        Returns 0 or ``UNKNOWN_ORDER``.
        """
        return self.on_done_c(order_key)

    def on_reject(self, Py_ssize_t order_key, /):
        """A downstream reject (router, venue) of an order risk had passed.

        Its exposure is released and its pass taken back from the
        duplicative check (the order never worked: a corrected resend is no
        duplicate of it). Returns 0 or ``UNKNOWN_ORDER``.
        """
        cdef int32_t slot = self._find(order_key)
        if slot >= 0:
            self._dup_undo(&self.orders[slot])
        return self.on_done_c(order_key)

    def on_replace(self, Py_ssize_t order_key, Py_ssize_t new_qty, Py_ssize_t new_price,
                   Py_ssize_t cl_ord_hash, Py_ssize_t now_ns, /, bint admitted=False):
        """Check and apply a cancel/replace of a working order.

        Parameters
        ----------
        new_qty : int
            The new order quantity (cum + leaves, as in FIX), lots.
        new_price : int
            The new limit price (ignored for MARKET orders).
        cl_ord_hash : int
            Hash of the replace request's new cl_ord_id.
        admitted : bool
            The replace passed :meth:`admit_replace` when it arrived: the
            throttle is not checked again.

        Returns
        -------
        int
            0 when the replace passed and is applied; else a reason and the
            order keeps its old quantity and price.
        """
        return self.on_replace_c(order_key, new_qty, new_price, cl_ord_hash, now_ns, admitted)

    def admit_replace(self, Py_ssize_t order_key, Py_ssize_t now_ns, /, session=-1):
        """The throttle of a replace of ``order_key``, judged when it arrives.

        The engine takes an order's children down before :meth:`on_replace`
        judges the new terms; the throttle does not depend on them, so it is
        asked first and a throttled replace leaves the order where it works.
        A pass uses a token; then call ``on_replace(..., admitted=True)``.

        ``session``: the index of the session that sent the replace, whose
        profile's bucket pays the token (any session of the account may
        replace an order; the engine passes the sender's). -1, the default:
        the session that placed the order.

        Returns
        -------
        int
            0, ``THROTTLED``, ``UNKNOWN_SESSION`` or ``UNKNOWN_ORDER``
            (``last_reject()`` has the detail).

        Raises
        ------
        TypeError, ValueError
            If ``session`` is not an integer within a C int, naming it (an ``int32_t``
            parameter took ``session=1.5`` as session 1).
        """
        return self.admit_replace_c(order_key, now_ns, small_arg(session, "session"))

    def record_cl_ord_id(self, session, Py_ssize_t cl_ord_hash, /):
        """Record that ``session`` used a cl_ord_id today, as ``check_new`` and ``on_replace`` do.

        For journal replay: a request that passed the throttle spent its
        cl_ord_id even though a later check refused it, and replaying only
        the accepted requests would hand that id out again.

        Parameters
        ----------
        session : int
            Index from ``session_index`` (for a replace, the order's session).
        cl_ord_hash : int
            Hash of the request's cl_ord_id.

        Returns
        -------
        bool
            True if the pair was already recorded today.

        Raises
        ------
        TypeError, ValueError
            If ``session`` is not an integer within a C int, naming it.
        IndexError
            If ``session`` was never registered.
        """
        cdef int32_t si = small_arg(session, "session")
        if si < 0 or si >= self.n_sessions or not self.sessions[si].known:
            raise IndexError(f"session index {si} out of range")
        return self._clord_add(_clord_key(cl_ord_hash, si, self.sessions[si].generation)) == 1

    def set_reference_price(self, instrument, Py_ssize_t price, Py_ssize_t now_ns):
        """Market data: last trade or mid, in ticks, as of ``now_ns``.

        It ages from ``now_ns`` whatever ``market_checked`` says later (see
        ``set_market_reference`` for a quote the market keeps up).
        ``instrument`` passes small_arg: an ``int32_t`` parameter took 0.9 as instrument 0.
        """
        cdef InstrumentInfo* ins = self._ref_slot(instrument)
        _check_ref_price(price)
        ins.ref_price = price
        ins.ref_ns = now_ns
        ins.ref_gen = 0

    def set_market_reference(self, instrument, Py_ssize_t price, Py_ssize_t now_ns):
        """The market quotes ``price`` (ticks, its two-sided mid) as of ``now_ns``.

        As ``set_reference_price``, and the reference stays as fresh as the
        last ``market_checked`` until ``market_reference_lost`` or another
        price is set: a quote that has not moved is still current, and the
        caller need not stamp each instrument at each look at the market.
        """
        cdef InstrumentInfo* ins = self._ref_slot(instrument)
        _check_ref_price(price)
        ins.ref_price = price
        ins.ref_ns = now_ns
        ins.ref_gen = self.market_gen

    def market_reference_lost(self, instrument):
        """The market no longer quotes the instrument two-sided: its reference ages from now on.

        It stays as of the last time the market quoted it (its own time or
        the last ``market_checked``, whichever came last), as a reference the
        caller stopped stamping would. Nothing changes for a reference that
        is not the market's.
        """
        cdef InstrumentInfo* ins = self._ref_slot(instrument)
        if ins.ref_gen != 0:
            ins.ref_ns = self._ref_ns(ins)
            ins.ref_gen = 0

    def market_checked(self, Py_ssize_t now_ns):
        """Every market reference is still the market's quote as of ``now_ns``.

        The caller has looked at the market: each instrument whose quote
        changed since the last check it has given its new reference
        (``set_market_reference``) or taken off the market
        (``market_reference_lost``); every other market reference is as
        fresh as ``now_ns`` from here on. One call, whatever the number of
        instruments.
        """
        cdef int32_t i
        self.market_checked_ns = now_ns
        self.market_gen += 1
        if self.market_gen == 0:
            # The generations wrapped (2^32 - 1 checks: 50 days of 1 ms ticks). After
            # this check every market reference is as of it, so each is given one
            # generation and the check the next: no reference set long ago can meet
            # the count again and be judged by its own, older, time.
            for i in range(self.n_instruments):
                if self.inst[i].ref_gen != 0:
                    self.inst[i].ref_gen = 1
            self.market_gen = 2     # (0 marks a reference that is not the market's)

    cdef InstrumentInfo* _ref_slot(self, object instrument) except NULL:
        """The state of the instrument whose reference is set, its index checked."""
        cdef int32_t i = small_arg(instrument, "instrument")
        if i < 0 or i >= self.n_instruments:
            raise IndexError(f"instrument index {i} out of range")
        return &self.inst[i]

    def clear_reference_prices(self):
        """Forget every instrument's reference price, as before any market data.

        Recovery values replayed orders at the references they had live; the
        market must then set them afresh, or an order would be checked
        against a price the market no longer quotes (or never did).
        """
        cdef int32_t i
        for i in range(self.n_instruments):
            self.inst[i].ref_price = 0
            self.inst[i].ref_ns = 0
            self.inst[i].ref_gen = 0

    def last_reject(self):
        """The last reject as a dict: reason, layer, limit, value and names."""
        cdef RejectDetail d = self.detail
        return {
            "reason": RejectReason(d.reason) if d.reason else RejectReason.REJ_NONE,
            "layer": LimitLayer(d.layer),
            "limit": d.limit,
            "value": d.value,
            "account": self._name(self._account_names, d.account),
            "instrument": self._name(self._instrument_names, d.instrument),
            "session": self._name(self._session_names, d.session),
        }

    def last_reject_text(self):
        """Human-actionable text for the last reject (built only when asked)."""
        return self.reject_text(self.detail.reason)

    def reject_text(self, reason):
        """Text for ``reason`` using the detail of the last reject.

        ``reason`` is an integer (``small_arg``): an ``int`` parameter took 38.9
        as ``MAX_ORDER_QTY`` (38); a float is now a ``TypeError``.
        """
        cdef RejectDetail d = self.detail
        reason = small_arg(reason, "reason")
        try:
            name = RejectReason(reason).name
        except ValueError:
            name = str(reason)
        template = _REASON_TEXT.get(reason, "rejected")
        if reason == MAX_ORDER_NOTIONAL and d.value == INT64_MAX:
            template = "price x quantity is too large to represent; check the price and quantity"
        elif reason == MAX_NET_POSITION and d.value == INT64_MAX:
            # (No limit may be set at all: the sum itself is what cannot be held.)
            template = ("worst-case net position, working orders included, is too large to "
                        "represent (2^63 lots or more)"
                        + (", above the {layer} max_net_position {limit}" if d.layer else ""))
        account = self._name(self._account_names, d.account)
        symbol = self._name(self._instrument_names, d.instrument)
        session = self._name(self._session_names, d.session)
        if reason == KILL_SWITCH:  # named as KillSwitch names it, to release it by
            layer = {LAYER_FIRM: "global", LAYER_ACCOUNT: f"account {account}",
                     LAYER_INSTRUMENT: f"symbol {symbol}"}.get(d.layer, "")
        else:
            layer = {LAYER_FIRM: "firm",
                     LAYER_ACCOUNT: f"account {account}",
                     LAYER_INSTRUMENT: f"instrument {symbol}",
                     LAYER_ACCOUNT_INSTRUMENT: f"account {account} in {symbol}",
                     LAYER_SESSION: f"session {session}"}.get(d.layer, "")
        profile = self._profile(d.session) if 0 <= d.session < self.n_sessions else f"#{d.session}"
        text = template.format(layer=layer, limit=self._show(d.measure, d.limit, symbol),
                               value=self._show(d.measure, d.value, symbol), profile=profile)
        names = ", ".join(f"{what} {who}" for what, index, who in (
            ("account", d.account, account), ("instrument", d.instrument, symbol),
            ("session", d.session, session)) if index >= 0)
        return f"{name}: {text} [{names}]"

    cdef str _name(self, list names, int32_t index):
        name = names[index] if 0 <= index < len(names) else None
        return f"#{index}" if name is None else name  # (None: a released session's slot)

    cdef str _show(self, int measure, int64_t value, str symbol):
        if value == INT64_MAX:
            return "(out of range)"
        if measure == M_MONEY:
            return f"{(Decimal(value) * Decimal(self._money_unit_text())).normalize():f}"
        if measure == M_LOTS:
            grid = self._instruments.get(symbol)
            return f"{value} lots" if grid is None else f"{grid.lots_to_qty(value)} ({value} lots)"
        if measure == M_TICKS:
            return f"{value} ticks"
        if measure == M_NS:
            return f"{Decimal(value) / 1000000} ms"
        return str(value)

    cdef str _money_unit_text(self):
        return str(self._config.get("firm", {}).get("money_unit", DEFAULT_MONEY_UNIT))

    # ------------------------------------------------------------ names and indices
    def account_index(self, str name):
        """Index of a configured account (stable for the engine's lifetime).

        Raises
        ------
        KeyError
            If the account was never configured.
        """
        return self._account_ix[name]

    def instrument_index(self, str symbol):
        """Index of a configured instrument; raises KeyError if unknown."""
        return self._instrument_ix[symbol]

    def session_gate(self, str name, str profile=None):
        """The per-order entry point of one client session (registered on first use).

        ``profile``: see :meth:`session_index`.

        ``gate.check_new(order_key, account, instrument, side, ord_type, qty,
        price, flags, cl_ord_hash, now_ns)`` is ``check_new`` with this
        session's index bound: the engine makes one gate per session when it
        connects and calls it per order, without resolving the session name
        each time. Every check runs as in :meth:`check_new`.
        """
        cdef int32_t ix = self.session_index(name, profile)
        return SessionGate.new(self, ix, name)

    def session_index(self, str name, str profile=None):
        """Index of a client session, registering it on first use.

        A session draws on the throttle bucket of its ``profile`` (default:
        ``name``; the engine passes the client key's name, as its sessions are
        named by random ids): every session of one profile shares one bucket,
        sized by ``sessions.<profile>`` or the firm defaults, so a client
        cannot raise its rate by opening more sessions. A profile given for a
        session known under another one (journal replay registers sessions
        before it knows their keys) takes over: the session draws on that
        profile's bucket from then on. Its index does not change until it is
        released (:meth:`release_session`); a new session may then take the
        index, the last released first, with nothing of the old session's.
        """
        cdef int32_t ix
        if name in self._session_ix:
            ix = self._session_ix[name]
            if profile is not None and profile != self._profile(ix):
                self.sessions[ix].bucket = self._bucket_of(profile)
            return ix
        return self._take_session_slot(name, name if profile is None else profile)

    cdef int32_t _take_session_slot(self, str name, str profile) except -1:
        """A slot for a new session ``name`` (None: a released slot that ``restore`` lays
        out): the last released one if any, else a new one."""
        cdef int32_t ix
        cdef uint32_t generation = 0
        if name is not None and self.n_free_sessions:
            self.n_free_sessions -= 1
            ix = self.free_sessions[self.n_free_sessions]
            # Kept across the reuse: the new session's cl_ord_id keys differ from
            # the old one's, which stay in the table until the day rolls.
            generation = self.sessions[ix].generation
            self._session_names[ix] = name
        else:
            ix = self.n_sessions
            self._ensure_dims(self.n_accounts, self.n_instruments, ix + 1)
            self._session_names.append(name)
            self.n_sessions = ix + 1
        memset(&self.sessions[ix], 0, sizeof(SessionState))
        self.sessions[ix].generation = generation
        self.sessions[ix].known = name is not None
        self.sessions[ix].bucket = self._bucket_of(profile)
        if name is not None:
            self._session_ix[name] = ix
        return ix

    def release_session(self, str name):
        """Let a session go for good: its slot is freed for the next new session.

        The engine calls it when intake drops a session (and recovery when it
        replays that). A session with working orders keeps its slot (its
        orders are still checked, replaced, filled and canceled as its) until
        the last of them is done, and is freed then. Either way its name is
        unknown from now on (``session_index`` of it registers a new session).
        Its throttle bucket belongs to its profile and stays; the day's
        (session, cl_ord_id) pairs it spent are not inherited by the slot's
        next session (see ``SessionState.generation``).

        Parameters
        ----------
        name : str
            The session's name, as given to :meth:`session_index`.

        Returns
        -------
        bool
            True if the slot was freed now; False if the session has working
            orders (freed with the last) or was not registered.
        """
        cdef int32_t ix = self._session_ix.pop(name, -1)
        if ix < 0:
            return False
        self._session_names[ix] = None
        if self.sessions[ix].open_orders:
            self.sessions[ix].releasing = 1
            return False
        self._free_session(ix)
        return True

    cdef void _free_session(self, int32_t s) noexcept:
        """Put session slot ``s`` (no working orders, name already let go) on the free list."""
        self.sessions[s].known = 0
        self.sessions[s].releasing = 0
        self.sessions[s].generation += 1
        self.free_sessions[self.n_free_sessions] = s
        self.n_free_sessions += 1

    cdef str _profile(self, int32_t s):
        """Session ``s``'s profile: the name of the throttle bucket it draws on."""
        return self._bucket_names[self.sessions[s].bucket]

    cdef int32_t _bucket_of(self, str profile) except -1:
        """The throttle bucket of ``profile``, made full on its first use."""
        cdef int32_t b = self._bucket_ix.get(profile, -1)
        cdef int32_t cap
        if b >= 0:
            return b
        b = self.n_buckets
        if b == self.cap_buckets:
            cap = max(4, 2 * self.cap_buckets)
            self.buckets = <ThrottleBucket*>_grow(self.buckets, self.cap_buckets, cap, sizeof(ThrottleBucket))
            self.cap_buckets = cap
        memset(&self.buckets[b], 0, sizeof(ThrottleBucket))
        self._bucket_ix[profile] = b
        self._bucket_names.append(profile)
        self.n_buckets = b + 1
        self._set_throttle(b, self._plan_cache, True)
        return b

    def instrument(self, str symbol):
        """The ``ext.instrument.Instrument`` grid of a configured symbol."""
        return self._instruments[symbol]

    @property
    def accounts(self):
        return list(self._account_names)

    @property
    def instruments(self):
        return list(self._instrument_names)

    @property
    def session_names(self):
        return list(self._session_names)

    @property
    def n_working(self):
        """Number of working orders risk holds."""
        return self.n_orders

    # ------------------------------------------------------------ configuration
    def reload(self, dict config, Py_ssize_t now_ns=0, str actor="admin"):
        """Replace the whole configuration at run time.

        Counters, positions, working orders, kill switches and sessions are
        kept. Accounts and instruments new to the config are added; ones left
        out keep their state but are rejected as unknown. The new config is
        checked in full before anything changes.

        Raises
        ------
        ConfigError
            If the new configuration is invalid, or changes ``firm.money_unit``
            or a known instrument's ``tick_size`` or ``lot_size`` (the kept
            state is counted in those units); nothing is changed.
        """
        self._apply(config, now_ns, "reload", actor)

    def update(self, dict changes, Py_ssize_t now_ns=0, str actor="admin"):
        """Merge ``changes`` (same shape as the config) into the current config.

        The admin-message form of :meth:`reload`: e.g.
        ``{"accounts": {"A1": {"max_order_qty": 500}}}``.
        """
        self._apply(_merge(self._config, changes), now_ns, "update", actor)

    @property
    def config(self):
        """The configuration in force (a deep copy)."""
        return _merge({}, self._config)

    cdef int _apply(self, dict config, int64_t now_ns, str action, str actor) except -1:
        cdef _Plan plan = _plan(config)
        cdef int32_t a, i, b
        cdef InstrumentInfo* ins
        cdef AccountLimits* al
        self._check_units(plan, config)
        for symbol in plan.instruments:
            if symbol not in self._instrument_ix:
                self._instrument_ix[symbol] = len(self._instrument_names)
                self._instrument_names.append(symbol)
        for name in plan.accounts:
            if name not in self._account_ix:
                self._account_ix[name] = len(self._account_names)
                self._account_names.append(name)
        self._ensure_dims(len(self._account_names), len(self._instrument_names), self.n_sessions)
        self.n_accounts = len(self._account_names)
        self.n_instruments = len(self._instrument_names)
        self._config = _merge({}, config)
        self._plan_cache = plan
        self._instruments = {sym: entry["grid"] for sym, entry in plan.instruments.items()}
        self._grids.update(self._instruments)
        f = plan.firm

        self.firm.max_open = f.get("max_open_orders", UNLIMITED)
        self.firm.max_daily_notional = f.get("max_daily_notional", UNLIMITED)
        self.firm.max_daily_loss = f.get("max_daily_loss", UNLIMITED)
        self.dup_window_ns = f["duplicative_window_ns"]

        for i, symbol in enumerate(self._instrument_names):
            e = plan.instruments.get(symbol)
            ins = &self.inst[i]
            ins.known = e is not None
            if e is None:
                continue
            ins.min_lots = e["grid"].min_lots
            ins.mult = e["mult"]
            ins.max_open = e.get("max_open_orders", UNLIMITED)
            ins.halted = (ins.halted & HALT_RUNTIME) | (HALT_CONFIG if e["halted"] else 0)
            ins.max_ref_age_ns, ins.layer_ref_age = _tightest([
                (f["max_reference_age_ns"], LAYER_FIRM),
                (e.get("max_reference_age_ns"), LAYER_INSTRUMENT)])

        for a, name in enumerate(self._account_names):
            e = plan.accounts.get(name)
            al = &self.acct_limits[a]
            al.known = e is not None
            if e is None:
                continue
            al.active = e["active"]
            al.allow_short = e["allow_short"]
            al.cash = e["cash"]
            al.credit = e["credit"]
            al.max_open = e.get("max_open_orders", UNLIMITED)
            al.max_daily_notional = e.get("max_daily_notional", UNLIMITED)
            al.max_daily_loss = e.get("max_daily_loss", UNLIMITED)
            for i, symbol in enumerate(self._instrument_names):
                ie = plan.instruments.get(symbol)
                if ie is None:
                    continue
                self._set_cell(a, i, symbol, f, e, ie, e["cells"].get(symbol, {}))

        for b in range(self.n_buckets):
            self._set_throttle(b, plan, False)

        self._audit(now_ns, action, "config", None, actor, "",
                    {"accounts": len(plan.accounts), "instruments": len(plan.instruments)})
        return 0

    cdef int _check_units(self, object plan, dict config) except -1:
        """Refuse a new money unit or price/quantity grid at run time.

        Counters, positions, working orders, reference prices and the
        duplicative history are integers of the units they were counted in;
        read in new units they would be wrong (a money unit 100 times coarser
        makes every amount 100 times larger), and not every amount converts
        exactly. A symbol keeps its grid even while it is left out of the
        config, as it keeps its state.
        """
        restart = "; to change it, restart the engine on a new journal (at a day boundary)"
        if self._plan_cache is not None and plan.money_unit != self._plan_cache.money_unit:
            new_unit = config.get("firm", {}).get("money_unit", DEFAULT_MONEY_UNIT)
            raise ConfigError(
                f"firm.money_unit: cannot change from {self._money_unit_text()} to {new_unit} while "
                f"running: cash flow, reservations, traded notional and P&L are counted in the old unit"
                + restart)
        for symbol, entry in plan.instruments.items():
            old = self._grids.get(symbol)
            if old is None:
                continue
            new = entry["grid"]
            for key, unit in (("tick_size", "prices and reference prices are in the old ticks"),
                              ("lot_size", "positions and working quantities are in the old lots")):
                if Decimal(getattr(new, key)) != Decimal(getattr(old, key)):
                    raise ConfigError(
                        f"instruments.{symbol}.{key}: cannot change from {getattr(old, key)} to "
                        f"{getattr(new, key)} while running: {unit}" + restart)
        return 0

    cdef int _set_cell(self, int32_t a, int32_t i, str symbol, dict f, dict acct, dict ins,
                       dict cell) except -1:
        cdef CellLimits* cl = &self.cell_limits[<int64_t>a * self.cap_instruments + i]
        grid = ins["grid"]
        layers = ((f, LAYER_FIRM), (acct, LAYER_ACCOUNT), (ins, LAYER_INSTRUMENT),
                  (cell, LAYER_ACCOUNT_INSTRUMENT))
        cl.max_order_qty, cl.layer_qty = _tightest([(_lots(d.get("max_order_qty"), grid), l) for d, l in layers])
        cl.max_gross, cl.layer_gross = _tightest([(_lots(d.get("max_gross_position"), grid), l) for d, l in layers])
        cl.max_net, cl.layer_net = _tightest([(_lots(d.get("max_net_position"), grid), l) for d, l in layers])
        cl.max_order_notional, cl.layer_notional = _tightest([(d.get("max_order_notional"), l) for d, l in layers])
        # max_open_orders at firm, account and instrument layers counts each
        # layer's own orders; only the account-instrument value is per cell.
        cl.max_open, cl.layer_open = _tightest([(cell.get("max_open_orders"), LAYER_ACCOUNT_INSTRUMENT)])
        bps, cl.layer_bps = _tightest([(d.get("collar_bps"), l) for d, l in layers])
        cl.collar_bps = -1 if cl.layer_bps == LAYER_NONE else bps
        ticks, cl.layer_ticks = _tightest([(d.get("collar_ticks"), l) for d, l in layers])
        cl.collar_ticks = -1 if cl.layer_ticks == LAYER_NONE else ticks
        ent = acct["entitlements"]
        cl.entitled = ent is None or symbol in ent
        cl.restricted = (LAYER_ACCOUNT if symbol in acct["restricted"] else
                         LAYER_FIRM if symbol in f["restricted"] else LAYER_NONE)
        return 0

    cdef int _set_throttle(self, int32_t b, object plan, bint fresh) except -1:
        cdef ThrottleBucket* bucket = &self.buckets[b]
        e = plan.sessions.get(self._bucket_names[b])
        rate = plan.firm["throttle_rate"] if e is None else e["throttle_rate"]
        burst = plan.firm["throttle_burst"] if e is None else e["throttle_burst"]
        bucket.rate = rate
        bucket.capacity = NANO_TOKENS * min(burst, INT64_MAX // NANO_TOKENS)
        if fresh or bucket.tokens > bucket.capacity:
            bucket.tokens = bucket.capacity
        return 0

    # ------------------------------------------------------------ admin
    def set_halted(self, str symbol, bint halted, Py_ssize_t now_ns, str actor="admin", str reason=""):
        """Halt or resume an instrument at run time (kept across reloads)."""
        cdef int32_t i = self._instrument_ix[symbol]
        if halted:
            self.inst[i].halted |= HALT_RUNTIME
        else:
            self.inst[i].halted &= ~HALT_RUNTIME
        self._audit(now_ns, "halt" if halted else "resume", "instrument", symbol, actor, reason, {})

    def engage_kill_switch(self, str scope, str target=None, *, Py_ssize_t now_ns, str actor, str reason=""):
        """Stop new orders for the firm, an account or an instrument.

        Parameters
        ----------
        scope : {"global", "account", "instrument"}
        target : str
            Account name or symbol (not used for ``"global"``).
        now_ns : int
        actor : str
            Who pulled it (recorded in the audit log).
        reason : str

        Returns
        -------
        list of int
            Keys of the working orders in scope, for the engine to cancel
            (their exposure stays until each ``on_cancel``).
        """
        keys = self._kill(scope, target, True)
        self._audit(now_ns, "kill_switch_engage", scope, target, actor, reason, {"orders": len(keys)})
        return keys

    def release_kill_switch(self, str scope, str target=None, *, Py_ssize_t now_ns, str actor, str reason=""):
        """Allow new orders again in ``scope``; logged and audited."""
        self._kill(scope, target, False)
        self._audit(now_ns, "kill_switch_release", scope, target, actor, reason, {})

    cdef list _kill(self, str scope, object target, bint engage):
        cdef int32_t ix = -1            # with SCOPE_ACCOUNT: every account, the whole firm
        cdef int kind
        if scope == "global":
            kind = SCOPE_ACCOUNT
            self.firm.killed = engage
        elif scope == "account":
            kind = SCOPE_ACCOUNT
            ix = self._account_ix[target]
            self.acct_limits[ix].killed = engage
        elif scope == "instrument":
            kind = SCOPE_INSTRUMENT
            ix = self._instrument_ix[target]
            self.inst[ix].killed = engage
        else:
            raise ValueError(f"scope must be 'global', 'account' or 'instrument', not {scope!r}")
        return self._working_keys(kind, ix) if engage else []

    def kill_switches(self):
        """What is engaged now: ``{"global": bool, "accounts": [...], "instruments": [...]}``."""
        return {"global": bool(self.firm.killed),
                "accounts": [n for a, n in enumerate(self._account_names) if self.acct_limits[a].killed],
                "instruments": [s for i, s in enumerate(self._instrument_names) if self.inst[i].killed]}

    def cancel_on_disconnect(self, str session, Py_ssize_t now_ns=0):
        """Keys of the working orders of ``session``, to mass-cancel on disconnect.

        Logged and audited; exposure is released as the engine reports each
        cancel with ``on_cancel``.
        """
        ix = self._session_ix.get(session)
        if ix is None:  # never placed an order: nothing to cancel (it may still have opted in)
            self.scope_visits = 0
            return []
        keys = self._working_keys(SCOPE_SESSION, ix)
        self._audit(now_ns, "cancel_on_disconnect", "session", session, "engine", "", {"orders": len(keys)})
        return keys

    cdef list _working_keys(self, int kind, int32_t ix):
        """Keys of the working orders of one session, account or instrument (``kind`` a
        ``Scope``, ``ix`` its index), ascending; ``ix`` -1: of every one of that kind.

        Walks the scope's list, so the cost is the orders in scope (plus one
        list end per account for the whole firm), not the pool, which keeps
        the size of the day's peak.
        """
        cdef list keys = []
        cdef int32_t k
        self.scope_visits = 0
        if ix >= 0:
            self._walk_scope(keys, kind, ix)
        else:
            for k in range(self._scope_count(kind)):
                self._walk_scope(keys, kind, k)
        # The lists run in admission order, which need not be key order (recovery
        # replays, engines that number orders otherwise); one ascending order keeps
        # callers' cancels and journal records deterministic. An ascending run sorts
        # in one pass.
        keys.sort()
        return keys

    cdef int _walk_scope(self, list keys, int kind, int32_t ix) except -1:
        """Append the keys on list ``ix`` of scope ``kind`` to ``keys``, in list order."""
        cdef int32_t slot = self.scope_lists[kind][ix].head
        while slot >= 0:
            keys.append(self.orders[slot].key)
            self.scope_visits += 1
            slot = self.orders[slot].link[kind].next
        return 0

    def reset_daily(self, Py_ssize_t now_ns, str actor="engine"):
        """Start a new trading day.

        Zeroes traded notional and realized P&L (account and firm), and
        forgets the day's cl_ord_ids and duplicative-order history. Positions,
        cost basis, cash and working orders carry over.
        """
        cdef int32_t a
        for a in range(self.n_accounts):
            self.acct_state[a].traded_notional = 0
            self.acct_state[a].realized_pnl = 0
        self.firm.traded_notional = 0
        self.firm.realized_pnl = 0
        # Emptied in place: the tables keep the size the day needed.
        memset(self.clord, 0, (self.clord_mask + 1) * sizeof(uint64_t))
        self.clord_used = 0
        self.clord_zero = False
        memset(self.dup, 0, (self.dup_mask + 1) * sizeof(DupEntry))
        self.dup_used = 0
        self._audit(now_ns, "reset_daily", "global", None, actor, "", {})

    cdef int _audit(self, int64_t now_ns, str action, str scope, object target, str actor,
                    str reason, dict extra) except -1:
        entry = {"ts_ns": now_ns, "action": action, "scope": scope, "target": target,
                 "actor": actor, "reason": reason}
        entry.update(extra)
        self.audit_log.append(entry)
        if len(self.audit_log) > AUDIT_LOG_KEEP:
            # The log lines are the record; the list is for inspection, and one
            # entry per cancel-on-disconnect would grow it for the process's life.
            del self.audit_log[:len(self.audit_log) - AUDIT_LOG_KEEP // 2]
        # Kill switches and halts are what an operator must see; config and
        # day rolls are routine.
        if self._log_events:
            level = logging.WARNING if action.startswith(("kill", "halt", "cancel")) else logging.INFO
            _log.log(level, "risk %s %s%s", action, scope, f" {target}" if target else "",
                     extra={"risk_event": entry})
        return 0

    # ------------------------------------------------------------ inspection
    def exposure(self, account, instrument):
        """Exposure of one account in one instrument (lots and money units)."""
        cdef int32_t a = small_arg(account, "account"), i = small_arg(instrument, "instrument")
        if not (0 <= a < self.n_accounts and 0 <= i < self.n_instruments):
            raise IndexError("account or instrument index out of range")
        cdef CellState* cs = &self.cell_state[<int64_t>a * self.cap_instruments + i]
        return {"position": cs.position, "open_buy": cs.open_buy, "open_sell": cs.open_sell,
                "cost": cs.cost, "open_orders": cs.open_orders}

    def account_state(self, account):
        """Money and counters of one account (money units)."""
        cdef int32_t a = small_arg(account, "account")
        if not 0 <= a < self.n_accounts:
            raise IndexError("account index out of range")
        cdef AccountState* s = &self.acct_state[a]
        cdef AccountLimits* l = &self.acct_limits[a]
        return {"cash_flow": s.cash_flow, "reserved": s.reserved, "short_basis": s.short_basis,
                "open_notional": s.open_notional, "open_orders": s.open_orders,
                "traded_notional": s.traded_notional, "realized_pnl": s.realized_pnl,
                "buying_power": kx_sat_sub(kx_sat_sub(kx_sat_add(kx_sat_add(l.cash, s.cash_flow), l.credit),
                                                      s.reserved), kx_sat_add(s.short_basis, s.short_basis))}

    def value_price(self, Py_ssize_t order_key):
        """The price (ticks) a working order is valued at, or -1 if it is not working.

        The engine journals it when it is not the order's own limit (a
        market order, a sell under a collar): recovery replays the order's
        exposure at it. (``working_order`` has it too, in a dict per call.)
        """
        cdef int32_t slot = self._find(order_key)
        return self.orders[slot].value_price if slot >= 0 else -1

    def collared(self, account, instrument):
        """Whether a price collar (``collar_bps`` or ``collar_ticks``, on any layer) applies
        to ``account`` trading ``instrument`` (indices).

        A band can round down to no tick (20 bps of a 4.01 reference): a market buy is
        then valued at the reference itself, as one with no collar is, and only this
        tells the engine to hold it there.
        """
        cdef int32_t a = small_arg(account, "account"), i = small_arg(instrument, "instrument")
        if not (0 <= a < self.n_accounts and 0 <= i < self.n_instruments):
            raise IndexError("account or instrument index out of range")
        cdef CellLimits* cl = &self.cell_limits[<int64_t>a * self.cap_instruments + i]
        return cl.collar_bps >= 0 or cl.collar_ticks >= 0

    def working_order(self, Py_ssize_t order_key):
        """A working order as a dict, or None."""
        cdef int32_t slot = self._find(order_key)
        if slot < 0:
            return None
        cdef WorkingOrder* o = &self.orders[slot]
        return {"key": o.key, "session": o.session, "account": o.account, "instrument": o.instrument,
                "side": o.side, "ord_type": o.ord_type, "qty": o.qty, "leaves": o.leaves,
                "price": o.price, "value_price": o.value_price, "flags": o.flags}

    def debug_scope(self, kind, index):
        """One scope list behind the mass cancels, walked both ways: for tests, not the engine.

        Every working order is on its session's, account's and instrument's
        list (``Scope``), in admission order; ``cancel_on_disconnect`` and
        ``engage_kill_switch`` walk these instead of the whole order pool.

        Parameters
        ----------
        kind : Scope
            ``SCOPE_SESSION``, ``SCOPE_ACCOUNT`` or ``SCOPE_INSTRUMENT``.
        index : int
            The session's, account's or instrument's index.

        Returns
        -------
        dict
            ``keys``: the order keys from head to tail; ``reverse``: the keys
            from tail to head by the backward links (``keys`` reversed while
            the list is sound); ``visits``: how many orders the last mass
            cancel's walk looked at (its cost; the orders in scope).

        Raises
        ------
        IndexError
            If ``kind`` or ``index`` is out of range.
        RuntimeError
            If a walk takes more steps than there are working orders (a cycle).
        """
        cdef int k = small_arg(kind, "kind")
        cdef int32_t ix = small_arg(index, "index")
        cdef int32_t n = self._scope_count(k), slot
        cdef int64_t steps
        if n < 0:
            raise IndexError(f"scope kind {k} out of range")
        if not 0 <= ix < n:
            raise IndexError(f"{Scope(k).name} index {ix} out of range")
        walks = []
        for backward in (False, True):
            keys = []
            steps = 0
            slot = self.scope_lists[k][ix].tail if backward else self.scope_lists[k][ix].head
            while slot >= 0:
                steps += 1
                if steps > self.n_orders:
                    raise RuntimeError(f"{Scope(k).name} list {ix} is longer than the "
                                       f"{self.n_orders} working orders")
                keys.append(self.orders[slot].key)
                slot = self.orders[slot].link[k].prev if backward else self.orders[slot].link[k].next
            walks.append(keys)
        return {"keys": walks[0], "reverse": walks[1], "visits": self.scope_visits}

    # ------------------------------------------------------------ snapshot
    def snapshot(self):
        """Every piece of mutable state as plain Python values, canonically ordered.

        Two engines built from the same config and the same calls give equal
        snapshots; ``restore`` loads one into an engine with the same config.
        """
        cdef int32_t a, i, s
        cdef int64_t j
        cdef CellState* cs
        cdef WorkingOrder* o
        cdef AccountState* st
        cells = []
        for a in range(self.n_accounts):
            for i in range(self.n_instruments):
                cs = &self.cell_state[<int64_t>a * self.cap_instruments + i]
                if cs.position or cs.open_buy or cs.open_sell or cs.cost or cs.open_orders:
                    cells.append([a, i, cs.position, cs.open_buy, cs.open_sell, cs.cost, cs.open_orders])
        orders = []
        for j in range(self.orders_cap):
            if self.orders[j].used:
                o = &self.orders[j]
                orders.append([o.key, o.session, o.account, o.instrument, o.side, o.ord_type,
                               o.qty, o.leaves, o.price, o.value_price, o.flags])
        orders.sort()
        account_state = []
        for a in range(self.n_accounts):
            st = &self.acct_state[a]
            account_state.append([st.cash_flow, st.reserved, st.short_basis, st.open_notional,
                                  st.open_orders, st.traded_notional, st.realized_pnl])
        # Keys, not (session, hash) pairs: a key is all the table holds (_clord_key).
        clord = sorted([self.clord[j] for j in range(self.clord_mask + 1) if self.clord[j]]
                       + ([0] if self.clord_zero else []))
        dup = sorted([self.dup[j].account, self.dup[j].instrument, self.dup[j].side,
                      self.dup[j].qty, self.dup[j].price, self.dup[j].expires_ns,
                      self.dup[j].owner, self.dup[j].prev_expires_ns]
                     for j in range(self.dup_mask + 1) if self.dup[j].used)
        return {
            "accounts": list(self._account_names),
            "instruments": list(self._instrument_names),
            "sessions": list(self._session_names),
            "firm": [self.firm.open_orders, self.firm.open_notional, self.firm.traded_notional,
                     self.firm.realized_pnl, int(self.firm.killed)],
            "account_state": account_state,
            "account_killed": [int(self.acct_limits[a].killed) for a in range(self.n_accounts)],
            "instrument_state": [[self.inst[i].ref_price, self._ref_ns(&self.inst[i]), self.inst[i].open_orders,
                                  int(self.inst[i].halted & HALT_RUNTIME), int(self.inst[i].killed)]
                                 for i in range(self.n_instruments)],
            "session_profiles": [self._profile(s) for s in range(self.n_sessions)],
            "session_state": [self.sessions[s].open_orders for s in range(self.n_sessions)],
            # Released slots: name None above; [known, releasing, generation] each,
            # and the free list in the order session_index takes from it (last first).
            "session_slots": [[self.sessions[s].known, self.sessions[s].releasing,
                               self.sessions[s].generation] for s in range(self.n_sessions)],
            "free_sessions": [self.free_sessions[j] for j in range(self.n_free_sessions)],
            "throttle": [[self._bucket_names[b], self.buckets[b].tokens, self.buckets[b].last_ns]
                         for b in range(self.n_buckets)],
            "cells": cells,
            "orders": orders,
            "cl_ord_ids": clord,
            "duplicative": dup,
            "duplicative_purge_at": self.dup_purge_at,
        }

    def restore(self, dict snap):
        """Load a ``snapshot()`` into this engine (same config), replacing its state.

        Raises
        ------
        ValueError
            If the snapshot's accounts or instruments are not this engine's.
        """
        cdef int32_t a, i, s, b, slot, cap
        cdef int kind
        cdef uint32_t hash
        cdef int64_t h
        cdef AccountState* st
        cdef InstrumentInfo* ins
        cdef CellState* cs
        cdef WorkingOrder* o
        cdef DupEntry* e
        if snap["accounts"] != self._account_names or snap["instruments"] != self._instrument_names:
            raise ValueError("snapshot was taken with other accounts or instruments")
        # Buckets first, in the snapshot's order, so that a fresh engine numbers
        # them alike (a bucket outlives the sessions that moved to another).
        for name, _, _ in snap["throttle"]:
            self._bucket_of(name)
        # Slots in the snapshot's order, released ones as placeholders (name None),
        # none taken from a free list: the snapshot's free list replaces it below.
        self.n_free_sessions = 0
        for name, profile in zip(snap["sessions"], snap["session_profiles"]):
            if name is None:
                self._take_session_slot(None, profile)
            else:
                self.session_index(name, profile)
        if snap["sessions"] != self._session_names or \
                snap["session_profiles"] != [self._profile(s) for s in range(self.n_sessions)]:
            raise ValueError("snapshot sessions do not match this engine's")
        (self.firm.open_orders, self.firm.open_notional, self.firm.traded_notional,
         self.firm.realized_pnl, self.firm.killed) = snap["firm"]
        for a, row in enumerate(snap["account_state"]):
            st = &self.acct_state[a]
            (st.cash_flow, st.reserved, st.short_basis, st.open_notional, st.open_orders,
             st.traded_notional, st.realized_pnl) = row
            self.acct_limits[a].killed = snap["account_killed"][a]
        for i, row in enumerate(snap["instrument_state"]):
            ins = &self.inst[i]
            ins.ref_price, ins.ref_ns, ins.open_orders = row[0], row[1], row[2]
            ins.ref_gen = 0     # (as of its time: the market must quote it afresh)
            ins.halted = (ins.halted & HALT_CONFIG) | (HALT_RUNTIME if row[3] else 0)
            ins.killed = row[4]
        for s, open_orders in enumerate(snap["session_state"]):
            self.sessions[s].open_orders = open_orders
        # (A snapshot from before releases has neither key: every slot known, gen 0.)
        for s, (known, releasing, generation) in enumerate(snap.get("session_slots", ())):
            self.sessions[s].known, self.sessions[s].releasing = known, releasing
            self.sessions[s].generation = generation
        for j, s in enumerate(snap.get("free_sessions", ())):
            self.free_sessions[j] = s
        self.n_free_sessions = len(snap.get("free_sessions", ()))
        for name, tokens, last_ns in snap["throttle"]:
            b = self._bucket_ix[name]
            self.buckets[b].tokens, self.buckets[b].last_ns = tokens, last_ns
        memset(self.cell_state, 0, <size_t>self.cap_accounts * self.cap_instruments * sizeof(CellState))
        for row in snap["cells"]:
            cs = &self.cell_state[<int64_t>row[0] * self.cap_instruments + row[1]]
            cs.position, cs.open_buy, cs.open_sell, cs.cost, cs.open_orders = row[2:]
        # Orders: rebuild pool and index from scratch.
        PyMem_Free(self.orders)
        self.orders = NULL
        self.orders_cap = 0
        self.orders_free = -1
        self.n_orders = 0
        size = 1024
        while size < len(snap["orders"]) + 1:
            size *= 2
        self._grow_orders(size)
        PyMem_Free(self.oindex)
        self.oindex = NULL
        self.omask = 0
        self._set_order_index(size * 2)
        for kind, cap in ((SCOPE_SESSION, self.cap_sessions), (SCOPE_ACCOUNT, self.cap_accounts),
                          (SCOPE_INSTRUMENT, self.cap_instruments)):
            self._grow_scope_lists(kind, 0, cap)        # every list empty again
        for row in snap["orders"]:
            slot = self.orders_free
            o = &self.orders[slot]
            self.orders_free = o.next_free
            (o.key, o.session, o.account, o.instrument, o.side, o.ord_type, o.qty, o.leaves,
             o.price, o.value_price, o.flags) = row
            o.used = 1
            o.next_free = -1
            self._index_insert(o.key, slot)
            self._link(slot)
            self.n_orders += 1
        PyMem_Free(self.clord)
        self.clord = NULL
        self.clord_used = 0
        self.clord_zero = False
        self._set_clord(2048)
        for key in snap["cl_ord_ids"]:
            self._clord_add(key)
        PyMem_Free(self.dup)
        self.dup = NULL
        self.dup_used = 0
        # The table size is part of the state: it decides when entries are purged.
        self._set_dup(2 * snap["duplicative_purge_at"])
        for row in snap["duplicative"]:
            hash = _dup_hash(row[0], row[1], row[2], row[3], row[4])
            e = self._dup_find(row[0], row[1], row[2], row[3], row[4], INT64_MIN, hash)
            e.used = 1
            e.account, e.instrument, e.side, e.qty, e.price, e.expires_ns, e.owner, \
                e.prev_expires_ns = row
            e.hash = hash
            self.dup_used += 1


# ================================================================= per-order entry points
cdef int _check_new_arg_error(object session, object order_key, object account,
                              object instrument, object side, object ord_type, object qty,
                              object price, object flags, object cl_ord_hash,
                              object now_ns) except -1:
    """Raise the error of ``check_new``'s first bad argument, naming it.

    Only called once the inline conversion or its one int32 range test has
    failed, so the checks here (small_arg and big_arg, in argument order) cost
    nothing on the per-order path. kx_arg's own exception (Cython's or
    CPython's ``OverflowError``/``TypeError``) named no argument.
    """
    PyErr_Clear()
    big_arg(order_key, "order_key")
    small_arg(session, "session")
    small_arg(account, "account")
    small_arg(instrument, "instrument")
    small_arg(side, "side")
    small_arg(ord_type, "ord_type")
    big_arg(qty, "qty")
    big_arg(price, "price")
    small_arg(flags, "flags")
    big_arg(cl_ord_hash, "cl_ord_hash")
    big_arg(now_ns, "now_ns")
    # Unreachable: kx_arg and these checks take the same integers.
    raise SystemError("check_new: an argument failed to convert but passes its check")


cdef inline object _check_new_args(RiskEngine risk, int64_t session, object order_key, object account,
                                   object instrument, object side, object ord_type, object qty,
                                   object price, object flags, object cl_ord_hash, object now_ns):
    """Convert the Python ints of one new order and run ``check_new_c``."""
    cdef int bad = 0
    cdef int64_t key = kx_arg(order_key, &bad)
    cdef int64_t acc = kx_arg(account, &bad)
    cdef int64_t ins = kx_arg(instrument, &bad)
    cdef int64_t sd = kx_arg(side, &bad)
    cdef int64_t ot = kx_arg(ord_type, &bad)
    cdef int64_t q = kx_arg(qty, &bad)
    cdef int64_t px = kx_arg(price, &bad)
    cdef int64_t fl = kx_arg(flags, &bad)
    cdef int64_t cl = kx_arg(cl_ord_hash, &bad)
    cdef int64_t now = kx_arg(now_ns, &bad)
    # One branch for every narrow argument (session, indices, enums, flags); either failure
    # takes the out-of-line path that names the argument.
    if bad or (kx_not_i32(session) | kx_not_i32(acc) | kx_not_i32(ins) | kx_not_i32(sd)
               | kx_not_i32(ot) | kx_not_i32(fl)):
        return _check_new_arg_error(session, order_key, account, instrument, side, ord_type,
                                    qty, price, flags, cl_ord_hash, now_ns)
    return risk.check_new_c(key, <int32_t>session, <int32_t>acc, <int32_t>ins, <int>sd, <int>ot,
                            q, px, <int>fl, cl, now)




cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL


def cl_ord_hash(str cl_ord_id, str account=None):
    """The 64-bit key of a client order id for the duplicate checks (FNV-1a over its UTF-8).

    With ``account`` the key is of the id in that account (FNV-1a over the
    account's UTF-8, a 0xFF byte, which UTF-8 never holds, then the id): ids
    are unique per account (docs/protocol.md), so one session may use the same
    id for two accounts, and the engine passes it. Stable across processes
    and restarts (recovery recomputes it from the journal); a 64-bit
    collision, the only way two ids could be taken for one, is about 1 in
    10^19 per pair. In C: the engine calls it per order.
    """
    cdef Py_ssize_t n, k
    cdef const unsigned char* p
    cdef uint64_t h = 14695981039346656037ULL
    if account is not None:
        p = <const unsigned char*>PyUnicode_AsUTF8AndSize(account, &n)
        for k in range(n):
            h = (h ^ p[k]) * 1099511628211ULL
        h = (h ^ 0xFF) * 1099511628211ULL
    p = <const unsigned char*>PyUnicode_AsUTF8AndSize(cl_ord_id, &n)
    for k in range(n):
        h = (h ^ p[k]) * 1099511628211ULL
    return <int64_t>h


@cython.final
cdef class SessionGate:
    """One client session's per-order entry point into a :class:`RiskEngine`.

    Made by ``RiskEngine.session_gate(name)``, never directly. The engine
    keeps one per connected session and calls :meth:`check_new` for each new
    order. It holds the session index, so each call passes ten values instead
    of eleven and the engine skips the ``session_index`` lookup per order.
    """

    def __init__(self):
        raise TypeError("SessionGate is made by RiskEngine.session_gate(name)")

    @staticmethod
    cdef SessionGate new(RiskEngine risk, int32_t session, str name):
        cdef SessionGate gate = SessionGate.__new__(SessionGate)
        gate.risk = risk
        gate.session = session
        gate.name = name
        return gate

    def check_new(self, order_key, account, instrument, side, ord_type, qty, price, flags,
                  cl_ord_hash, now_ns, /):
        """Run every pre-trade check on a new order of this session.

        Exactly ``risk.check_new(order_key, session, account, instrument,
        side, ord_type, qty, price, flags, cl_ord_hash, now_ns)`` with this
        gate's session: same checks in the same order, same reservation on a
        pass, same reasons and ``last_reject()``.

        Parameters
        ----------
        order_key, account, instrument, side, ord_type, qty, price, flags, cl_ord_hash, now_ns : int
            As for :meth:`RiskEngine.check_new`.

        Returns
        -------
        int
            0 on a pass, else a ``RejectReason``.

        Raises
        ------
        TypeError, ValueError
            As for :meth:`RiskEngine.check_new`.
        """
        return _check_new_args(self.risk, self.session, order_key, account, instrument, side,
                               ord_type, qty, price, flags, cl_ord_hash, now_ns)

    def admit(self, Py_ssize_t now_ns, /):
        """The throttle of one new order of this session, judged before the order is taken.

        The engine asks it before it creates or journals the order, so a
        throttled order leaves nothing behind (no order, no spent
        ``cl_ord_id``); a pass uses a token, and the order's ``check_new``
        then carries ``FLAG_ADMITTED`` so as not to use a second one.

        Returns
        -------
        int
            0, or ``THROTTLED`` (``last_reject_text()`` names the key and its
            sizes; no account or instrument, as none was looked at).
        """
        cdef RiskEngine risk = self.risk
        risk.cur_session = self.session
        risk.cur_account = -1
        risk.cur_instrument = -1
        return risk._throttle(self.session, now_ns)

    def __repr__(self):
        return f"<SessionGate {self.name!r} (session {self.session})>"


# ================================================================= C helpers
cdef int _check_ref_price(Py_ssize_t price) except -1:
    if price <= 0:
        raise ValueError("reference price must be positive")
    return 0


cdef void* _grow(void* ptr, Py_ssize_t old_n, Py_ssize_t new_n, size_t item) except NULL:
    """Realloc an array to ``new_n`` items, zeroing the new tail."""
    cdef void* out = PyMem_Realloc(ptr, max(new_n, 1) * item)
    if out == NULL:
        raise MemoryError()
    if new_n > old_n:
        memset(<char*>out + old_n * item, 0, (new_n - old_n) * item)
    return out


cdef inline uint32_t _index_hash(int64_t order_key) noexcept nogil:
    # Low bits are the home bucket (tables stay under 2**32 buckets), all 32 the filter.
    return <uint32_t>kx_mix(<uint64_t>order_key)


cdef inline uint64_t _clord_key(int64_t cl_ord_hash, int32_t session,
                                uint32_t generation) noexcept nogil:
    # One 8-byte key per (session, cl_ord_id) pair. For a given session it is a
    # bijection of the hash (xor, then the invertible finaliser), so one
    # session's ids are told apart exactly; ids of two sessions s1, s2 share a
    # key only if hash1 ^ hash2 == (s1 * G) ^ (s2 * G) for the constant G below,
    # a 2**-64 chance per pair for hashed ids (as for two ids of one session
    # colliding in cl_ord_hash itself), and then the later order is rejected as
    # a duplicate: it fails closed, never passes.
    #
    # ``generation`` (how many sessions held the slot before) goes in the high
    # half of the session's number, so a released slot's next session is another
    # session to this table; for generation 0 the key is what it always was.
    return kx_mix(<uint64_t>cl_ord_hash ^ (((<uint64_t>generation << 32) | <uint32_t>session)
                                           * <uint64_t>0x9E3779B97F4A7C15))


cdef inline uint32_t _dup_hash(int32_t account, int32_t instrument, int side, int64_t qty,
                               int64_t price) noexcept nogil:
    # One finaliser over the fields folded together (the multiply keeps qty and
    # price apart); low bits are the home bucket, all 32 the entry's filter.
    return <uint32_t>kx_mix((<uint64_t>qty * <uint64_t>0x9E3779B97F4A7C15) ^ <uint64_t>price
                            ^ (<uint64_t>account << 40) ^ (<uint64_t>instrument << 16) ^ <uint64_t>side)


cdef dict _merge(dict base, dict changes):
    """Deep copy of ``base`` with ``changes`` merged in (tables merge, values replace)."""
    out = {}
    for key, value in base.items():
        out[key] = _merge({}, value) if isinstance(value, dict) else (list(value) if isinstance(value, list) else value)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = _merge({}, value)
        else:
            out[key] = list(value) if isinstance(value, list) else value
    return out
