# cython: language_level=3
"""Shared C types and enums of the core: the one place they are defined.

Every value here is also visible from Python (``from ext.types import Side``)
because the enums are ``cpdef``. Values of Side, OrdType, TimeInForce and
OrdStatus follow FIX tags 54, 40, 59 and 39 so that the wire protocol and the
core agree without a translation table.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t

# ---------------------------------------------------------------- value bounds
# The largest quantity (lots) and price (ticks) the core takes, shared by the
# router and risk: the router's fee-adjusted comparison ``price * (1e6 + cbps)``
# stays exact in int64 up to these, and a risk sum of fills of at most 2^40
# lots needs 2^23 of them to reach int64's bound (where it saturates). Python
# sees them as ``ext.router.MAX_QTY``/``MAX_PRICE`` and ``ext.risk.MAX_QTY``/
# ``MAX_PRICE``. C macros, not module variables, so that a check against them
# compiles to a compare with a constant.
cdef extern from *:
    """
    #ifndef KRONOS_MAX_QTY
    #define KRONOS_MAX_QTY ((int64_t)1 << 40)
    #define KRONOS_MAX_PRICE ((int64_t)1 << 40)
    #endif
    """
    const int64_t C_MAX_QTY "KRONOS_MAX_QTY"
    const int64_t C_MAX_PRICE "KRONOS_MAX_PRICE"

# ---------------------------------------------------------------- order fields
cpdef enum Side:
    BUY = 1
    SELL = 2
    SELL_SHORT = 5

cpdef enum OrdType:
    MARKET = 1
    LIMIT = 2

cpdef enum TimeInForce:
    DAY = 0
    GTC = 1
    IOC = 3
    FOK = 4

cpdef enum StpMode:
    STP_NONE = 0
    CANCEL_NEWEST = 1
    CANCEL_OLDEST = 2
    CANCEL_BOTH = 3

cpdef enum OrdStatus:
    NEW = 0
    PARTIALLY_FILLED = 1
    FILLED = 2
    CANCELED = 4
    REPLACED = 5
    REJECTED = 8
    EXPIRED = 12

# ---------------------------------------------------------------- book events
cpdef enum EventKind:
    EV_ACCEPTED = 1
    EV_REJECTED = 2
    EV_CANCELED = 3
    EV_EXPIRED = 4
    EV_REPLACED = 5

cpdef enum CancelReason:
    CXL_NONE = 0
    CXL_USER = 1             # cancel request
    CXL_IOC_REMAINDER = 2    # IOC or MARKET order: what did not fill at once
    CXL_FOK_UNFILLABLE = 3   # FOK order that could not fill in full
    CXL_SELF_TRADE = 4       # self-trade prevention
    CXL_END_OF_DAY = 5       # DAY order expired
    CXL_KILL_SWITCH = 6      # mass cancel by risk
    CXL_MASS_CANCEL = 7      # mass cancel by session or account
    CXL_REPLACE_PARTNER = 8  # amend could not keep the order alive
    CXL_MIN_QTY_UNFILLABLE = 9  # IOC with a minimum quantity: less than that could fill

# ---------------------------------------------------------------- reject reasons
# One code space for the whole pipeline: 1-31 order validation and the book,
# 32-63 pre-trade risk, 64-95 engine and protocol, 96-127 routing and venues.
cpdef enum RejectReason:
    REJ_NONE = 0
    UNKNOWN_ORDER = 1
    DUPLICATE_ORDER_ID = 2
    INVALID_QTY = 3
    INVALID_PRICE = 4
    OFF_TICK = 5
    OFF_LOT = 6
    BELOW_MIN_QTY = 7
    INVALID_SIDE = 8
    INVALID_ORD_TYPE = 9
    INVALID_TIF = 10
    POST_ONLY_WOULD_CROSS = 11
    REPLACE_QTY_NOT_ABOVE_FILLED = 12
    VALUE_OUT_OF_RANGE = 13
    PRICE_REQUIRED = 14
    INVALID_STP_MODE = 15
    ORDER_NOT_REPLACEABLE = 16
    INVALID_ORDER_ID = 17
    BOOK_CAPACITY = 18

    UNKNOWN_INSTRUMENT = 32
    INSTRUMENT_HALTED = 33
    INSTRUMENT_RESTRICTED = 34
    UNKNOWN_ACCOUNT = 35
    ACCOUNT_INACTIVE = 36
    NOT_ENTITLED = 37
    MAX_ORDER_QTY = 38
    MAX_ORDER_NOTIONAL = 39
    PRICE_COLLAR = 40
    NO_REFERENCE_PRICE = 41
    STALE_REFERENCE_PRICE = 42
    MAX_OPEN_ORDERS = 43
    MAX_GROSS_POSITION = 44
    MAX_NET_POSITION = 45
    INSUFFICIENT_BUYING_POWER = 46
    INSUFFICIENT_POSITION = 47
    SHORT_SELL_NOT_ALLOWED = 48
    LOCATE_REQUIRED = 49
    DAILY_NOTIONAL_LIMIT = 50
    DAILY_LOSS_LIMIT = 51
    THROTTLED = 52
    DUPLICATE_CL_ORD_ID = 53
    DUPLICATIVE_ORDER = 54
    KILL_SWITCH = 55
    UNKNOWN_SESSION = 56     # session index never registered with risk

    MALFORMED_MESSAGE = 64
    UNKNOWN_MESSAGE_TYPE = 65
    UNSUPPORTED_VERSION = 66
    MESSAGE_TOO_LARGE = 67
    INVALID_FIELD = 68
    NOT_AUTHORIZED = 69
    ENGINE_SHUTTING_DOWN = 70
    UNKNOWN_CL_ORD_ID = 71
    RESEND_UNAVAILABLE = 72  # resend asked for messages no longer kept
    RESUME_REFUSED = 73      # resume of a session that does not exist or is not yours
    INTERNAL_ERROR = 74      # the engine failed on this request; query its state
    TOO_LATE_TO_CANCEL = 75  # cancel/replace of an order that is done or already changing
    ORDER_CAPACITY = 76      # the engine holds [orders] max_orders orders: no new ones

    NO_ROUTE = 96
    VENUE_REJECT = 97
    VENUE_UNAVAILABLE = 98
    VENUE_CLOSED = 99
    NO_LIQUIDITY = 100       # router: nothing routable within the limit; the rest is canceled
    REROUTE_LIMIT = 101      # router: max_reroutes routing rounds without a fill
    INVALID_STRATEGY = 102   # router: unknown strategy, or one the order cannot use
    INVALID_SCHEDULE = 103   # router: TWAP/VWAP/POV parameters missing or inconsistent
